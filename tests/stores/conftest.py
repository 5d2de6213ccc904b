"""Every contract test runs once per index configuration of its store kind (the kill test once
per configuration and kill point)."""

from __future__ import annotations

import pytest


def pytest_generate_tests(metafunc):
    kind = getattr(metafunc.cls, "KIND", None) if metafunc.cls is not None else None
    if kind is None or "config" not in metafunc.fixturenames:
        return
    if "kill_point" in metafunc.fixturenames:  # the kill test: its points per configuration
        cases = [(c, p) for c in kind.configs for p in kind().kill_points(c)]
        ids = [f"{c}-{cmd}-{p.replace(':', '')}" for c, (cmd, p) in cases]
        metafunc.parametrize(("config", "kill_point"), cases, ids=ids)
    else:
        metafunc.parametrize("config", kind.configs)


@pytest.fixture(scope="session")
def nfcorpus(nfcorpus_dir):
    """The nfcorpus ``nudge_split`` with precomputed all-MiniLM-L6-v2 vectors."""
    from nudge_rag._data import load_embedded

    return load_embedded(nfcorpus_dir.parent / "nfcorpus", "nudge_split", mmap=False)
