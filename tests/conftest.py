"""Shared fixtures: the location of the offline test data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder: ``$NUDGE_RAG_DATA``, else ``<repo>/../shared/data``."""
    folder = Path(os.environ.get("NUDGE_RAG_DATA", _DEFAULT_DATA))
    if not folder.is_dir():
        if os.environ.get("CI"):  # CI has ../shared: a missing folder is a broken checkout
            pytest.fail(f"test data folder {folder} not found in CI")
        pytest.skip(f"test data folder {folder} not found (set NUDGE_RAG_DATA)")
    return folder


@pytest.fixture(scope="session")
def nfcorpus_dir(data_dir: Path) -> Path:
    """The nfcorpus folder (``nudge_split/``, ``beir_split/``); skips when absent."""
    folder = data_dir / "nfcorpus"
    if not (folder / "nudge_split" / "emb").is_dir():
        pytest.skip(f"nfcorpus data not found at {folder} (set NUDGE_RAG_DATA)")
    return folder
