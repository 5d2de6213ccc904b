"""Qdrant through LangChain's ``QdrantVectorStore`` on a local folder (exact search).

The local client locks its folder: tests close the wrapper before the command line opens it.
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
        from langchain_qdrant import QdrantVectorStore
        from qdrant_client import QdrantClient

        client = QdrantClient(path=made.uri.removeprefix("qdrant:"))
        store = QdrantVectorStore(client, made.collection, embedding=made.store.embeddings)
        return Made(store, "langchain", made.uri, made.collection, client.close, upserts=True)


class TestQdrant(StoreContract):
    KIND = QdrantKind
