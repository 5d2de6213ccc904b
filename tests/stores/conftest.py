"""Every contract test runs once per index configuration of its store kind."""

from __future__ import annotations

import pytest


def pytest_generate_tests(metafunc):
    if "config" in metafunc.fixturenames and metafunc.cls is not None:
        kind = getattr(metafunc.cls, "KIND", None)
        if kind is not None:
            metafunc.parametrize("config", kind.configs)


@pytest.fixture(scope="session")
def nfcorpus(nfcorpus_dir):
    """The nfcorpus ``nudge_split`` with precomputed all-MiniLM-L6-v2 vectors."""
    from nudge_rag._data import load_embedded

    return load_embedded(nfcorpus_dir.parent / "nfcorpus", "nudge_split", mmap=False)
