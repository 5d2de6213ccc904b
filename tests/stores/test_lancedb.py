"""LanceDB through LangChain's ``LanceDB``: no index (exact), and the IVF_PQ index users build
(``create_index(metric="cosine")``, LanceDB's default partitions and sub-vectors; tables under
256 rows cannot train one and stay exact)."""

from __future__ import annotations

from .contract import StoreContract
from .harness import Made, StoreKind


class LanceDBKind(StoreKind):
    name = "lancedb"
    configs = ("exact", "ivf_pq")
    approximate = frozenset({"ivf_pq"})
    module_needed = "lancedb"
    extra = "lancedb"

    def make(self, tmp_path, docs, config, request) -> Made:
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

    def ann_slack(self, config: str) -> float:
        return 0.02  # product quantization loses more than HNSW


class TestLanceDB(StoreContract):
    KIND = LanceDBKind
