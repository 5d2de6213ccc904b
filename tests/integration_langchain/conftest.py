"""Fixtures for the LangChain integration tests (helpers live in ``langchain_helpers``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

# Without the langchain extra every test module here skips (pytest.importorskip at its top)
# and these fixtures are never used: import the helpers only when the framework is there.
if importlib.util.find_spec("langchain_core") is not None:
    from langchain_helpers import DATA_DIR  # noqa: E402


@pytest.fixture(scope="session")
def nfcorpus():
    """The nfcorpus ``nudge_split`` with precomputed all-MiniLM-L6-v2 vectors."""
    folder = DATA_DIR / "nfcorpus"
    if not (folder / "nudge_split" / "emb" / "all-MiniLM-L6-v2").is_dir():
        pytest.skip(f"nfcorpus data not found under {DATA_DIR} (set NUDGE_RAG_DATA)")
    from nudge_rag._data import load_embedded

    return load_embedded(folder, "nudge_split", mmap=False)
