"""LanceDB through LangChain's ``LanceDB``: no index (exact), and the IVF_PQ index users build
(``create_index(metric="cosine")``, LanceDB's default partitions and sub-vectors; tables under
256 rows cannot train one and stay exact).

``llama-index`` (LlamaIndex's ``LanceDBVectorStore``, no index: exact l2 search, filled by a
``VectorStoreIndex``) is made for the LlamaIndex nfcorpus test, not run by the contract."""

from __future__ import annotations

import pytest

from .contract import StoreContract
from .harness import Made, StoreKind, llama_index_over


class LanceDBKind(StoreKind):
    name = "lancedb"
    configs = ("exact", "ivf_pq")
    approximate = frozenset({"ivf_pq"})
    module_needed = "lancedb"
    extra = "lancedb"

    def make(self, tmp_path, docs, config, request) -> Made:
        if config == "llama-index":  # the LlamaIndex nfcorpus test's (not run by the contract)
            return self._llama_index(tmp_path / "lance", docs)
        import lancedb
        from langchain_community.vectorstores import LanceDB

        folder = tmp_path / "lance"
        connection = lancedb.connect(str(folder))
        store = LanceDB(
            connection=connection,
            embedding=docs.embeddings(),
            table_name="contract",
            distance="cosine",
            mode="append",  # the wrapper's default, "overwrite", keeps only the last batch
        )
        for s in range(0, len(docs.ids), 2000):
            store.add_texts(
                docs.texts[s : s + 2000],
                metadatas=docs.metadatas[s : s + 2000],
                ids=docs.ids[s : s + 2000],
            )
        if config == "ivf_pq" and len(docs.ids) >= 256:
            connection.open_table("contract").create_index(
                metric="cosine", vector_column_name="vector"
            )
        return Made(store, "langchain", f"lancedb:{folder}", "contract")

    @staticmethod
    def _llama_index(folder, docs) -> Made:
        """A ``LanceDBVectorStore`` table filled by a ``VectorStoreIndex`` in one
        ``create_table`` with every row (:attr:`Made.index`; its embed model is LlamaIndex's
        ``MockEmbedding``: the nodes carry their vectors, nothing is embedded)."""
        pytest.importorskip(
            "llama_index.vector_stores.lancedb", reason="pip install 'nudge-rag[lancedb]'"
        )
        from llama_index.vector_stores.lancedb import LanceDBVectorStore

        store = LanceDBVectorStore(uri=str(folder), table_name="contract")
        index = llama_index_over(store, docs, insert_batch_size=len(docs.ids))
        return Made(store, "llama-index", f"lancedb:{folder}", "contract", index=index)

    def ann_slack(self, config: str) -> float:
        return 0.02  # product quantization loses more than HNSW


class TestLanceDB(StoreContract):
    KIND = LanceDBKind
