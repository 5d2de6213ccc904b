"""Chroma through LangChain's ``Chroma``: a persistent folder, HNSW at Chroma's defaults.

Chroma always searches an HNSW index (``hnsw:space`` cosine here; ``M`` 16,
``construction_ef`` 100, ``search_ef`` 100) and updates it in place on upsert.
"""

from __future__ import annotations

from .contract import StoreContract
from .harness import Made, StoreKind


class ChromaKind(StoreKind):
    name = "chroma"
    configs = ("hnsw",)
    approximate = frozenset({"hnsw"})
    module_needed = "langchain_chroma"
    extra = "chroma"
    multi_process = False
    restore_atol = 1e-7  # Chroma's write/read round trip moves some components by 1 ulp

    def make(self, tmp_path, docs, config, request) -> Made:
        from langchain_chroma import Chroma

        folder = tmp_path / "chroma"
        store = Chroma(
            collection_name="contract",
            embedding_function=docs.embeddings(),
            persist_directory=str(folder),
            collection_metadata={"hnsw:space": "cosine"},
        )
        for s in range(0, len(docs.ids), 2000):
            store.add_texts(
                docs.texts[s : s + 2000],
                metadatas=docs.metadatas[s : s + 2000],
                ids=docs.ids[s : s + 2000],
            )
        return Made(store, "langchain", f"chroma:{folder}", "contract")


class TestChroma(StoreContract):
    KIND = ChromaKind
