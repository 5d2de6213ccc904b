"""LangChain's ``InMemoryVectorStore`` and LlamaIndex's ``SimpleVectorStore`` (exact cosine)."""

from __future__ import annotations

from .contract import StoreContract
from .harness import Made, StoreKind


class MemoryKind(StoreKind):
    name = "memory"
    configs = ("langchain", "llama-index")
    module_needed = "langchain_core"
    extra = "langchain"
    multi_process = False

    def make(self, tmp_path, docs, config, request) -> Made:
        if config == "langchain":
            from langchain_core.vectorstores import InMemoryVectorStore

            store = InMemoryVectorStore(docs.embeddings(as_arrays=True))  # arrays: faster search
            store.add_texts(docs.texts, metadatas=docs.metadatas, ids=docs.ids)
            return Made(store, "langchain", upserts=True)
        from llama_index.core.vector_stores import SimpleVectorStore

        store = SimpleVectorStore()
        store.add(docs.nodes())
        return Made(store, "llama-index", upserts=True)

    def wrapper(self, made: Made, framework: str) -> Made:
        """The same object: an in-memory store *is* its wrapper (no other framework's)."""
        if framework != made.framework:
            return super().wrapper(made, framework)
        return Made(made.store, made.framework, upserts=True)


class TestMemory(StoreContract):
    KIND = MemoryKind
