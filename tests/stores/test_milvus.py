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
        file = tmp_path / "milvus.db"
        made = self._open(docs.embeddings(), file)
        made.store.add_embeddings(
            docs.texts, docs.vectors.tolist(), docs.metadatas, ids=docs.ids, batch_size=2000
        )
        return made

    def reopen(self, made: Made) -> Made:
        """The wrapper on the file again (close the test's first: Milvus Lite serves one)."""
        return self._open(made.store.embeddings, made.uri.removeprefix("milvus:"))

    @staticmethod
    def _open(embeddings, file) -> Made:
        from langchain_milvus import Milvus

        store = Milvus(
            embeddings,
            collection_name="contract",
            connection_args={"uri": str(file), "db_name": "default"},
            index_params={"metric_type": "COSINE", "index_type": "FLAT", "params": {}},
        )

        def close() -> None:
            store.client.close()
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(str(file))

        return Made(store, "langchain", f"milvus:{file}", "contract", close)


class TestMilvus(StoreContract):
    KIND = MilvusKind
