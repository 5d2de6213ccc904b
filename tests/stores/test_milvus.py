"""Milvus Lite through LangChain's ``Milvus`` (COSINE).

Milvus Lite builds a FLAT index whatever index type it is asked for (its documentation
says so), so FLAT (exact) is the configuration its users run.

``llama-index`` (LlamaIndex's ``MilvusVectorStore``, FLAT COSINE, filled by a
``VectorStoreIndex``) is made for the LlamaIndex nfcorpus test, not run by the contract.
"""

from __future__ import annotations

import pytest

from .contract import StoreContract
from .harness import Made, StoreKind, llama_index_over


class MilvusKind(StoreKind):
    name = "milvus"
    configs = ("flat",)
    module_needed = "langchain_milvus"
    extra = "milvus"
    restore_atol = 0.0
    multi_process = False
    exclusive = True  # Milvus Lite serves its file to one client: the test closes it first

    def make(self, tmp_path, docs, config, request) -> Made:
        file = tmp_path / "milvus.db"
        if config == "llama-index":  # the LlamaIndex nfcorpus test's (not run by the contract)
            return self._llama_index(file, docs)
        made = self._open(docs.embeddings(), file)
        made.store.add_embeddings(
            docs.texts, docs.vectors.tolist(), docs.metadatas, ids=docs.ids, batch_size=2000
        )
        return made

    def reopen(self, made: Made) -> Made:
        """The wrapper on the file again (close the test's first: Milvus Lite serves one)."""
        return self._open(made.store.embeddings, made.uri.removeprefix("milvus:"))

    @staticmethod
    def _llama_index(file, docs) -> Made:
        """A ``MilvusVectorStore`` collection (FLAT, COSINE, the sync client) filled by a
        ``VectorStoreIndex`` (:attr:`Made.index`; the store inserts 2000 rows a batch)."""
        pytest.importorskip(
            "llama_index.vector_stores.milvus", reason="pip install 'nudge-rag[milvus]'"
        )
        pytest.importorskip("milvus_lite", reason="pip install 'nudge-rag[milvus]'")
        from llama_index.vector_stores.milvus import MilvusVectorStore

        store = MilvusVectorStore(
            uri=str(file),
            collection_name="contract",
            dim=docs.vectors.shape[1],
            similarity_metric="COSINE",
            index_config={"index_type": "FLAT"},
            use_async_client=False,
            db_name="default",  # milvus-lite 3.2.2
            batch_size=2000,
        )
        index = llama_index_over(store, docs)
        return Made(
            store, "llama-index", f"milvus:{file}", "contract", _closer(store, file), index=index
        )

    @staticmethod
    def _open(embeddings, file) -> Made:
        from langchain_milvus import Milvus

        store = Milvus(
            embeddings,
            collection_name="contract",
            connection_args={"uri": str(file), "db_name": "default"},
            index_params={"metric_type": "COSINE", "index_type": "FLAT", "params": {}},
        )
        return Made(store, "langchain", f"milvus:{file}", "contract", _closer(store, file))


def _closer(store, file):
    """Closes the wrapper's client and lets Milvus Lite's server of ``file`` go."""

    def close() -> None:
        store.client.close()
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(str(file))

    return close


class TestMilvus(StoreContract):
    KIND = MilvusKind
