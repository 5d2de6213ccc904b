"""Qdrant through LangChain's ``QdrantVectorStore`` on a local folder (exact search).

The local client locks its folder: tests close the wrapper before the command line opens it.
``memory`` (the same in ``QdrantClient(":memory:")``) and ``llama-index`` (a collection that
LlamaIndex's ``QdrantVectorStore`` makes in memory: the same unnamed vector, LlamaIndex's
payloads) are made for the other suites, which also see a store through the other framework's
wrapper (:meth:`QdrantKind.wrapper`); ``open`` opens the folder from its URI as a new process
does (LangChain's or LlamaIndex's ``QdrantVectorStore``: the fault suite's child).
"""

from __future__ import annotations

import uuid

from .contract import StoreContract
from .harness import Made, StoreKind


def _point_id(doc_id: str) -> str:
    """``doc_id`` where it is a UUID already, else the UUID it names (Qdrant point ids are
    UUIDs or unsigned integers)."""
    try:
        return str(uuid.UUID(doc_id))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, doc_id))


class QdrantKind(StoreKind):
    name = "qdrant"
    configs = ("local",)
    module_needed = "langchain_qdrant"
    extra = "qdrant"
    odd_ids = False  # Qdrant point ids are unsigned integers or UUIDs
    multi_process = False
    exclusive = True
    restore_atol = 1e-7  # a cosine collection normalizes what it is given: 1 ulp here and there

    def make(self, tmp_path, docs, config, request) -> Made:
        from langchain_qdrant import QdrantVectorStore
        from qdrant_client import QdrantClient, models

        if config == "local":
            folder = tmp_path / "qdrant"
            client, uri = QdrantClient(path=str(folder)), f"qdrant:{folder}"
        else:  # other suites' (not run by the contract): in memory
            client, uri = QdrantClient(":memory:"), None
        params = models.VectorParams(size=docs.vectors.shape[1], distance=models.Distance.COSINE)
        docs.ids[:] = [_point_id(i) for i in docs.ids]
        if config == "llama-index":
            return self._made_by_llama_index(client, params, docs)
        client.create_collection("contract", vectors_config=params)
        store = QdrantVectorStore(client, "contract", embedding=docs.embeddings())
        for s in range(0, len(docs.ids), 2000):
            store.add_texts(
                docs.texts[s : s + 2000],
                metadatas=docs.metadatas[s : s + 2000],
                ids=docs.ids[s : s + 2000],
            )
        return Made(store, "langchain", uri, "contract", client.close, upserts=True)

    @staticmethod
    def _made_by_llama_index(client, params, docs) -> Made:
        from llama_index.vector_stores.qdrant import QdrantVectorStore

        store = QdrantVectorStore(client=client, collection_name="contract", dense_config=params)
        store.add(docs.nodes())
        lookup = docs.embeddings()  # for a LangChain wrapper of it
        return Made(
            store, "llama-index", None, "contract", client.close, upserts=True, lookup=lookup
        )

    def wrapper(self, made: Made, framework: str) -> Made:
        """A new LangChain or LlamaIndex ``QdrantVectorStore`` on ``made``'s client (LlamaIndex
        reads the collection's vector layout; LangChain is given the vector's name). Their
        payloads differ: LlamaIndex's search fails on points LangChain wrote (no ``text``)."""
        from nudge_rag import backend_for

        lookup = made.lookup if made.lookup is not None else made.store.embeddings
        name = backend_for(made.store).vector_name
        made = self._wrap(made.store.client, framework, made.uri, made.collection, lookup, name)
        made.lookup = lookup
        return made

    def reopen(self, made: Made) -> Made:
        """A new client of the folder (close the test's first: it locks the folder)."""
        return self.open(made.uri, made.collection, made.store.embeddings)

    def open(self, uri, collection, embeddings=None, framework="langchain") -> Made:
        """A new local client of the folder (``qdrant:PATH``; no other may hold it) and the
        wrapper over it: LangChain's or LlamaIndex's ``QdrantVectorStore``."""
        from qdrant_client import QdrantClient

        client = QdrantClient(path=uri.removeprefix("qdrant:"))
        return self._wrap(client, framework, uri, collection, embeddings, close=client.close)

    @staticmethod
    def _wrap(
        client, framework, uri, collection, embeddings, vector_name: str = "", close=None
    ) -> Made:
        """``framework``'s ``QdrantVectorStore`` of ``collection`` on ``client``; ``close``
        (default: nothing, the client stays open) releases it."""
        if framework == "llama-index":
            from llama_index.vector_stores.qdrant import QdrantVectorStore

            store = QdrantVectorStore(client=client, collection_name=collection)
        else:
            from langchain_qdrant import QdrantVectorStore

            store = QdrantVectorStore(
                client, collection, embedding=embeddings, vector_name=vector_name
            )
        return Made(store, framework, uri, collection, close or (lambda: None), upserts=True)


class TestQdrant(StoreContract):
    KIND = QdrantKind
