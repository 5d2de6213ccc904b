"""Chroma through LangChain's ``Chroma``: a persistent folder (``hnsw``) and a Chroma server
(``http``, the session's ``chroma run``), HNSW at Chroma's defaults. ``ephemeral`` (the
process's in-memory client, LangChain's default) is made for the other suites, which also see
a store through LlamaIndex's ``ChromaVectorStore`` (:meth:`ChromaKind.wrapper`); ``fill``
makes a collection on a server a test runs itself, and ``open`` opens a store from its URI as
a new process does (LangChain's ``Chroma`` or LlamaIndex's ``ChromaVectorStore``: the fault
suite's child).

Chroma always searches an HNSW index (``hnsw:space`` cosine here; ``M`` 16,
``construction_ef`` 100, ``search_ef`` 100) and updates it in place on upsert.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .contract import StoreContract
from .harness import KILL_POINTS, Docs, Made, StoreKind


def _let_go() -> None:
    """Drop this process's Chroma clients: the next one reads the folder afresh."""
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient.clear_system_cache()


def _keep() -> None:
    """Nothing to let go of (a server's client)."""


class ChromaKind(StoreKind):
    name = "chroma"
    configs = ("hnsw", "http")
    approximate = frozenset({"hnsw", "http"})
    module_needed = "langchain_chroma"
    extra = "chroma"
    multi_process = False  # an embedded folder serves one process; a server any number
    nfcorpus_skip = {
        "http": "the same HNSW index as the folder configuration (measured there); the HTTP "
        "transport is covered by every other contract test"
    }
    restore_atol = 1e-7  # Chroma's write/read round trip moves some components by 1 ulp

    def make(self, tmp_path, docs, config, request) -> Made:
        if config == "http":
            # a server store has no folder of its own for the originals
            return self.fill(
                docs,
                server=request.getfixturevalue("chroma_server"),
                state_dir=tmp_path / "chroma_state",
            )
        if config == "ephemeral":  # other suites' (not run by the contract): in memory
            return self.fill(docs)
        return self.fill(docs, folder=tmp_path / "chroma")

    def fill(
        self,
        docs: Docs,
        *,
        folder: Path | None = None,
        server: Any = None,
        state_dir: Path | None = None,
    ) -> Made:
        """A cosine collection holding ``docs``, made through LangChain's ``Chroma``.

        Args:
            docs: what it holds.
            folder: a persistent client's folder (collection ``contract``).
            server: a running ``ChromaServer`` (``tests/conftest.py``: the session's
                ``chroma_server``, or a test's own): a new collection on it.
            state_dir: the CLI's ``--state-dir`` for a server's collection.

        Neither ``folder`` nor ``server``: a new collection of the process's in-memory client,
        deleted by :attr:`Made.close`.
        """
        from langchain_chroma import Chroma

        cli_args: tuple[str, ...] = ()
        if server is not None:
            name = f"contract_{uuid.uuid4().hex[:8]}"  # one server for the session
            where = {"client": server.client()}
            uri = f"chroma+http://{server.host}:{server.port}"
            if state_dir is not None:
                cli_args = ("--state-dir", str(state_dir))
            close = _keep  # the server's collection stays as it is
        elif folder is not None:
            name, where = "contract", {"persist_directory": str(folder)}
            uri, close = f"chroma:{folder}", _let_go
        else:
            name = f"c_{uuid.uuid4().hex[:10]}"  # one client per process: a new collection
            where, uri = {}, None

            def close() -> None:
                store.delete_collection()

        store = Chroma(
            collection_name=name,
            embedding_function=docs.embeddings(),
            collection_metadata={"hnsw:space": "cosine"},
            **where,
        )
        for s in range(0, len(docs.ids), 2000):
            store.add_texts(
                docs.texts[s : s + 2000],
                metadatas=docs.metadatas[s : s + 2000],
                ids=docs.ids[s : s + 2000],
            )
        return Made(store, "langchain", uri, name, close, cli_args, upserts=True)

    def wrapper(self, made: Made, framework: str) -> Made:
        """A new LangChain ``Chroma`` or LlamaIndex ``ChromaVectorStore`` on the client of
        ``made``'s ``Chroma``."""
        client = made.store._client  # the client LangChain's Chroma opened
        args = (made.uri, made.collection, made.store.embeddings, _keep, made.cli_args)
        return self._wrap(client, framework, *args)

    def reopen(self, made: Made) -> Made:
        """A new client of the folder (this process's cached one does not see other
        processes' writes); the server's collection as it is."""
        if not made.uri.startswith("chroma:"):
            return made
        return self.open(made.uri, made.collection, made.store.embeddings)

    def open(self, uri, collection, embeddings=None, framework="langchain") -> Made:
        """A new client of the folder (``chroma:PATH``; this process's cached one is let go
        first) or of the server (``chroma+http://HOST:PORT``), and the wrapper over it:
        LangChain's ``Chroma`` or LlamaIndex's ``ChromaVectorStore``."""
        import chromadb

        if uri.startswith("chroma+http://"):
            parts = urlsplit(uri)
            client = chromadb.HttpClient(host=parts.hostname, port=parts.port)
            close = _keep
        else:
            _let_go()
            client = chromadb.PersistentClient(path=uri.removeprefix("chroma:"))
            close = _let_go
        return self._wrap(client, framework, uri, collection, embeddings, close)

    @staticmethod
    def _wrap(client, framework, uri, collection, embeddings, close, cli_args=()) -> Made:
        """``framework``'s wrapper of ``collection`` on ``client``. LlamaIndex's ``add`` is
        Chroma's, which keeps the document an id already names: the user's update deletes it
        and adds it again."""
        if framework == "llama-index":
            from llama_index.vector_stores.chroma import ChromaVectorStore

            store = ChromaVectorStore(chroma_collection=client.get_collection(collection))
            return Made(store, framework, uri, collection, close, cli_args)
        from langchain_chroma import Chroma

        store = Chroma(collection_name=collection, client=client, embedding_function=embeddings)
        return Made(store, "langchain", uri, collection, close, cli_args, upserts=True)

    def kill_points(self, config: str) -> tuple[tuple[str, str], ...]:
        if config != "http":
            return ()
        return tuple(p for p in KILL_POINTS if p[1] in ("batch:3", "progress:2", "batch:2"))


class TestChroma(StoreContract):
    KIND = ChromaKind
