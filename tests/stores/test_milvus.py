"""Milvus Lite through LangChain's ``Milvus`` (COSINE).

Milvus Lite builds a FLAT index whatever index type it is asked for (its documentation
says so), so FLAT (exact) is the configuration its users run.
"""

from __future__ import annotations

from .contract import StoreContract
from .harness import Made, StoreKind


class MilvusKind(StoreKind):
    name = "milvus"
    configs = ("flat",)
    module_needed = "langchain_milvus"
    extra = "milvus"
    restore_atol = 0.0
    multi_process = False
    exclusive = True  # Milvus Lite serves its file to one client: the test closes it first

    def make(self, tmp_path, docs, config, request) -> Made:
        from langchain_milvus import Milvus

        file = tmp_path / "milvus.db"
        store = Milvus(
            docs.embeddings(),
            collection_name="contract",
            connection_args={"uri": str(file), "db_name": "default"},
            index_params={"metric_type": "COSINE", "index_type": "FLAT", "params": {}},
        )
        store.add_embeddings(
            docs.texts, docs.vectors.tolist(), docs.metadatas, ids=docs.ids, batch_size=2000
        )

        def close() -> None:
            store.client.close()
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(str(file))

        return Made(store, "langchain", f"milvus:{file}", "contract", close)


class TestMilvus(StoreContract):
    KIND = MilvusKind
