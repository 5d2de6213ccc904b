"""Shared fixtures: the location of the offline test data."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
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


class ChromaServer:
    """A Chroma HTTP server (``chroma run``) on a free localhost port, for tests.

    ``stop()`` kills it and ``start()`` brings it back on the same port and data folder, so a
    test can take the server away in the middle of a write-back.
    """

    def __init__(self, exe: str, path: Path):
        self.exe, self.path, self.host = exe, path, "127.0.0.1"
        with socket.socket() as sock:
            sock.bind((self.host, 0))
            self.port = sock.getsockname()[1]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        import chromadb

        log = open(self.path / "server.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                self.exe,
                "run",
                "--path",
                str(self.path / "db"),
                "--host",
                self.host,
                "--port",
                str(self.port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                chromadb.HttpClient(host=self.host, port=self.port).heartbeat()
                return
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = (self.path / "server.log").read_text(errors="replace")[-2000:]
                    pytest.fail(f"chroma server did not start: {tail}")
                time.sleep(0.3)

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def client(self):
        import chromadb

        return chromadb.HttpClient(host=self.host, port=self.port)


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A running :class:`ChromaServer`, stopped at the end of the session."""
    pytest.importorskip("chromadb")
    exe = Path(sys.executable).with_name("chroma")
    exe = str(exe) if exe.exists() else shutil.which("chroma")
    if exe is None:
        pytest.skip("the chroma CLI (from the chromadb package) is not installed")
    server = ChromaServer(exe, tmp_path_factory.mktemp("chroma_server"))
    server.start()
    yield server
    server.stop()
