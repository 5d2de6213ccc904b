"""Fixtures for the LangChain integration tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings

DATA_DIR = Path(
    os.environ.get("NUDGE_RAG_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)


class LookupEmbeddings(Embeddings):
    """Test double serving *precomputed* vectors by exact text (never embeds anything)."""

    def __init__(self, vectors: Mapping[str, np.ndarray]):
        self.vectors = dict(vectors)
        self.document_calls = 0

    def _get(self, text: str) -> list[float]:
        try:
            return np.asarray(self.vectors[text], dtype=float).tolist()
        except KeyError:
            msg = f"no precomputed vector for text {text[:60]!r}"
            raise KeyError(msg) from None

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.document_calls += 1
        return [self._get(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._get(text)


def toy_vectors(texts: Sequence[str], dim: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Random unit vectors for ``texts`` (seeded)."""
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(len(texts), dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return dict(zip(texts, vecs, strict=True))


@pytest.fixture(scope="session")
def nfcorpus():
    """The nfcorpus ``nudge_split`` with precomputed all-MiniLM-L6-v2 vectors."""
    folder = DATA_DIR / "nfcorpus"
    if not (folder / "nudge_split" / "emb" / "all-MiniLM-L6-v2").is_dir():
        pytest.skip(f"nfcorpus data not found under {DATA_DIR} (set NUDGE_RAG_DATA)")
    from nudge_rag._data import load_embedded

    return load_embedded(folder, "nudge_split", mmap=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory) -> Iterator[tuple[str, int]]:
    """A Chroma HTTP server on a free localhost port (``chroma run``), stopped afterwards."""
    chromadb = pytest.importorskip("chromadb")
    exe = Path(sys.executable).with_name("chroma")
    if not exe.exists():
        exe = shutil.which("chroma")
    if exe is None:
        pytest.skip("the chroma CLI is not installed")
    port = _free_port()
    path = tmp_path_factory.mktemp("chroma_server")
    log = open(path.parent / "chroma_server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(exe), "run", "--path", str(path), "--port", str(port), "--host", "127.0.0.1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat()
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"chroma server did not start (exit code {proc.poll()})")
                time.sleep(0.3)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
