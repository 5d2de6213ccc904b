"""query_adapter through the one tuning flow: chosen, saved with the vectors, replaced, undone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose
from test_query_adapter import shifted_task

from nudge_rag import ArrayStore, NudgeN, QueryAdapter, StoreTuner, WriteBack, tune_store

REPO = Path(__file__).resolve().parents[1]


def store_task(seed=0, **kw):
    docs, train, val = shifted_task(seed, **kw)
    ids = [f"d{i}" for i in range(docs.shape[0])]
    answers = lambda qs: [[ids[r] for r in a] for a in qs.answer_lists()]  # noqa: E731
    return (
        ArrayStore(ids, docs.copy()),
        train.embeddings,
        answers(train),
        val.embeddings,
        answers(val),
    )


def test_on_keeps_saves_and_a_new_writeback_finds_it(tmp_path):
    store, tq, ta, vq, va = store_task()
    tuner = StoreTuner(store, state_dir=tmp_path, query_adapter="on")
    result = tuner.tune_embedded(tq, ta, vq, va)
    adapter = result.query_adapter
    assert isinstance(adapter, QueryAdapter) and result.query_adapter_mode == "on"
    assert "kept" in result.query_adapter_reason and "lambda=" in result.query_adapter_reason
    scores = result.query_adapter_scores
    assert scores["chosen_by"] == "val" and scores["n_queries"] == len(va)
    assert scores["nudge+adapter"] == adapter.val_score_ and scores["nudge"] == adapter.base_score_
    assert (tmp_path / "query_adapter.json").exists()
    status = tuner.status()
    assert status.query_adapter["lambda"] == adapter.lambda_
    assert status.query_adapter["blend"] == adapter.blend_
    assert "matrix" not in status.query_adapter
    assert "query adapter" in status.next_step
    # Another WriteBack over the same state (another retriever, the CLI) applies the same map.
    again = WriteBack(store, tmp_path).query_adapter()
    assert_allclose(again.matrix_, adapter.matrix_)
    assert_allclose(tuner.adapt_queries(vq), adapter.transform(vq), atol=1e-6)


def test_another_process_finds_the_adapter(tmp_path):
    store, tq, ta, vq, va = store_task()
    result = StoreTuner(store, state_dir=tmp_path, query_adapter="on").tune_embedded(tq, ta, vq, va)
    code = (
        "import sys, numpy as np; from nudge_rag import ArrayStore, WriteBack; "
        "a = WriteBack(ArrayStore(['x'], np.ones((1, 16), np.float32)), sys.argv[1]).query_adapter(); "
        "print(a.lambda_, a.blend_, float(a.matrix_.sum()))"
    )
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    lam, blend, total = out.stdout.split()
    adapter = result.query_adapter
    assert (float(lam), float(blend)) == (adapter.lambda_, adapter.blend_)
    assert float(total) == pytest.approx(float(adapter.matrix_.sum()), rel=1e-5)


def test_refit_replaces_and_off_removes_restore_undoes(tmp_path):
    store, tq, ta, vq, va = store_task()
    on = StoreTuner(store, state_dir=tmp_path, query_adapter="on")
    first = on.tune_embedded(tq, ta, vq, va).query_adapter
    second = on.tune_embedded(tq[:150], ta[:150], vq, va).query_adapter
    saved = on.saved_query_adapter()
    assert_allclose(saved.matrix_, second.matrix_)
    assert not np.allclose(saved.matrix_, first.matrix_)
    off = StoreTuner(store, state_dir=tmp_path)
    result = off.tune_embedded(tq, ta, vq, va)
    assert result.query_adapter is None and result.query_adapter_mode == "off"
    assert result.query_adapter_scores is None
    assert off.saved_query_adapter() is None and not (tmp_path / "query_adapter.json").exists()
    on.tune_embedded(tq, ta, vq, va)
    assert on.saved_query_adapter() is not None
    on.restore()
    assert on.saved_query_adapter() is None and on.status().query_adapter is None
    assert not (tmp_path / "query_adapter.json").exists()
    assert_allclose(on.adapt_queries(vq), vq)


def test_in_memory_state_is_shared_by_writebacks_of_one_store():
    store, tq, ta, vq, va = store_task()
    result = StoreTuner(store, state_dir="memory", query_adapter="on").tune_embedded(tq, ta)
    found = WriteBack(store).query_adapter()
    assert_allclose(found.matrix_, result.query_adapter.matrix_)
    assert WriteBack(ArrayStore(store.ids, store.vectors)).query_adapter() is None


def test_cross_validated_on_nudge_refitted_per_fold(monkeypatch):
    store, tq, ta, _, _ = store_task()
    fits = []
    real_fit = NudgeN.fit

    def counting_fit(self, docs, train, val=None, **kw):
        fits.append((self.gamma, train.n_queries, val is None))
        return real_fit(self, docs, train, val, **kw)

    monkeypatch.setattr(NudgeN, "fit", counting_fit)
    result = StoreTuner(store, state_dir="memory", query_adapter="on", solver_params={"cv": 4})
    result = result.tune_embedded(tq, ta)
    assert result.query_adapter_scores["chosen_by"] == "cv"
    assert fits[0][0] is None  # gamma cross-validated first, then one fit per adapter fold
    assert len(fits) == 5
    assert all(g == result.gamma and n < len(ta) and no_val for g, n, no_val in fits[1:])


def test_auto_keeps_only_a_gain():
    store, tq, ta, vq, va = store_task()
    kept = StoreTuner(store, state_dir="memory", query_adapter="auto").tune_embedded(tq, ta, vq, va)
    assert kept.query_adapter is not None
    assert "'auto': kept" in kept.query_adapter_reason
    # No distortion, queries near their answers: nothing for a map to gain.
    flat, tq, ta, vq, va = store_task(2, shift=0.0)
    plain = StoreTuner(flat, state_dir="memory", query_adapter="auto")
    result = plain.tune_embedded(tq, ta, vq, va)
    scores = result.query_adapter_scores
    assert scores["nudge+adapter"] - scores["nudge"] < 0.005
    assert result.query_adapter is None and "not kept" in result.query_adapter_reason
    assert plain.saved_query_adapter() is None
    assert json.dumps(scores)  # plain numbers


def test_bad_options():
    store, tq, ta, vq, va = store_task()
    with pytest.raises(ValueError, match="query_adapter must be one of"):
        StoreTuner(store, state_dir="memory", query_adapter="yes")
    with pytest.raises(ValueError, match="needs NUDGE-N"):
        StoreTuner(store, state_dir="memory", variant="m", query_adapter="on")
    with pytest.raises(ValueError, match="passive='read'"):
        tune_store(WriteBack(store), NudgeN(), tq, ta, vq, va, passive="store", query_adapter="on")


def test_apply_refuses_an_adapter_of_another_dimension_before_writing(tmp_path):
    store, *_ = store_task()
    before = store.vectors.copy()
    wrong = QueryAdapter.from_matrix(np.eye(3, dtype=np.float32))
    with pytest.raises(ValueError, match="query_adapter is 3-dimensional"):
        WriteBack(store, tmp_path).apply(["d0"], store.vectors[:1] * 0 + 1, query_adapter=wrong)
    np.testing.assert_array_equal(store.vectors, before)
    assert WriteBack(store, tmp_path).query_adapter() is None
