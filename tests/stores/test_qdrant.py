"""Qdrant through LangChain's ``QdrantVectorStore`` on a local folder (exact search).

The local client locks its folder: tests close the wrapper before the command line opens it.
``open`` opens the folder from its URI as a new process does (LangChain's or LlamaIndex's
``QdrantVectorStore``: the fault suite's child).
"""

from __future__ import annotations

from .contract import StoreContract
from .harness import Made, StoreKind


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
        import uuid

        from langchain_qdrant import QdrantVectorStore
        from qdrant_client import QdrantClient, models

        folder = tmp_path / "qdrant"
        client = QdrantClient(path=str(folder))
        client.create_collection(
            "contract",
            vectors_config=models.VectorParams(
                size=docs.vectors.shape[1], distance=models.Distance.COSINE
            ),
        )
        store = QdrantVectorStore(client, "contract", embedding=docs.embeddings())
        docs.ids[:] = [str(uuid.uuid5(uuid.NAMESPACE_URL, i)) for i in docs.ids]
        for s in range(0, len(docs.ids), 2000):
            store.add_texts(
                docs.texts[s : s + 2000],
                metadatas=docs.metadatas[s : s + 2000],
                ids=docs.ids[s : s + 2000],
            )
        return Made(store, "langchain", f"qdrant:{folder}", "contract", client.close, upserts=True)

    def reopen(self, made: Made) -> Made:
        """A new client of the folder (close the test's first: it locks the folder)."""
        return self.open(made.uri, made.collection, made.store.embeddings)

    def open(self, uri, collection, embeddings=None, framework="langchain") -> Made:
        """A new local client of the folder (``qdrant:PATH``; no other may hold it) and the
        wrapper over it: LangChain's or LlamaIndex's ``QdrantVectorStore``."""
        from qdrant_client import QdrantClient

        client = QdrantClient(path=uri.removeprefix("qdrant:"))
        if framework == "llama-index":
            from llama_index.vector_stores.qdrant import QdrantVectorStore

            store = QdrantVectorStore(client=client, collection_name=collection)
        else:
            from langchain_qdrant import QdrantVectorStore

            store = QdrantVectorStore(client, collection, embedding=embeddings)
        return Made(store, framework, uri, collection, client.close, upserts=True)


class TestQdrant(StoreContract):
    KIND = QdrantKind
