"""Chroma through LangChain's ``Chroma``: a persistent folder (``hnsw``) and a Chroma server
(``http``, the session's ``chroma run``), HNSW at Chroma's defaults. ``ephemeral`` (the
process's in-memory client, LangChain's default) is made for the other suites, which also see
a store through LlamaIndex's ``ChromaVectorStore`` (:meth:`ChromaKind.wrapper`).

Chroma always searches an HNSW index (``hnsw:space`` cosine here; ``M`` 16,
``construction_ef`` 100, ``search_ef`` 100) and updates it in place on upsert.
"""

from __future__ import annotations

import uuid

from .contract import StoreContract
from .harness import KILL_POINTS, Made, StoreKind


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
        from langchain_chroma import Chroma

        if config == "ephemeral":  # other suites' (not run by the contract): in memory
            name = f"c_{uuid.uuid4().hex[:10]}"  # one client per process: a new collection
            where, uri, cli_args = {}, None, ()

            def close() -> None:
                store.delete_collection()

        elif config == "http":
            server = request.getfixturevalue("chroma_server")
            name = f"contract_{uuid.uuid4().hex[:8]}"  # one server for the session
            where = {"client": server.client()}
            uri = f"chroma+http://{server.host}:{server.port}"
            # a server store has no folder of its own for the originals
            cli_args: tuple[str, ...] = ("--state-dir", str(tmp_path / "chroma_state"))
            close = _keep  # the server's collection stays as it is
        else:
            name, folder = "contract", tmp_path / "chroma"
            where = {"persist_directory": str(folder)}
            uri, cli_args = f"chroma:{folder}", ()
            close = _let_go
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
        ``made``'s ``Chroma``. LlamaIndex's ``add`` is Chroma's, which keeps the document an id
        already names: the user's update deletes it and adds it again."""
        client = made.store._client  # the client LangChain's Chroma opened
        if framework == "langchain":
            from langchain_chroma import Chroma

            store = Chroma(
                collection_name=made.collection,
                client=client,
                embedding_function=made.store.embeddings,
            )
        else:
            from llama_index.vector_stores.chroma import ChromaVectorStore

            store = ChromaVectorStore(chroma_collection=client.get_collection(made.collection))
        upserts = framework == "langchain"
        return Made(
            store, framework, made.uri, made.collection, cli_args=made.cli_args, upserts=upserts
        )

    def reopen(self, made: Made) -> Made:
        """A new client of the folder (this process's cached one does not see other
        processes' writes); the server's collection as it is."""
        if not made.uri.startswith("chroma:"):
            return made
        from langchain_chroma import Chroma

        _let_go()
        store = Chroma(
            collection_name=made.collection,
            embedding_function=made.store.embeddings,
            persist_directory=made.uri.removeprefix("chroma:"),
        )
        return Made(store, "langchain", made.uri, made.collection, _let_go, upserts=True)

    def kill_points(self, config: str) -> tuple[tuple[str, str], ...]:
        if config != "http":
            return ()
        return tuple(p for p in KILL_POINTS if p[1] in ("batch:3", "progress:2", "batch:2"))


class TestChroma(StoreContract):
    KIND = ChromaKind
