"""DuckDB through LangChain's ``DuckDB`` (langchain-community) and LlamaIndex's ``DuckDBVectorStore``.

Both wrappers search with a full scan (``list_cosine_similarity`` /
``array_cosine_similarity``): one configuration each, exact.
"""

from __future__ import annotations

import pytest

from .contract import StoreContract
from .harness import Made, StoreKind


def _no_pandas_str_dtype() -> None:
    # langchain-community's DuckDB.add_texts registers a pandas frame; duckdb < 1.4 does not
    # know pandas 3's "str" dtype (an upstream incompatibility, not nudge-rag's).
    try:
        import pandas as pd
    except ImportError:
        return
    if int(pd.__version__.split(".")[0]) >= 3:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pd.options.future.infer_string = False


class DuckDBKind(StoreKind):
    name = "duckdb"
    configs = ("langchain", "llama-index")
    module_needed = "duckdb"
    extra = "duckdb"
    multi_process = False

    def make(self, tmp_path, docs, config, request) -> Made:
        import duckdb

        file = tmp_path / "store.duckdb"
        if config == "langchain":
            from langchain_community.vectorstores import DuckDB

            _no_pandas_str_dtype()
            connection = duckdb.connect(str(file))
            store = DuckDB(connection=connection, embedding=docs.embeddings())
            for s in range(0, len(docs.ids), 2000):
                store.add_texts(
                    docs.texts[s : s + 2000],
                    metadatas=docs.metadatas[s : s + 2000],
                    ids=docs.ids[s : s + 2000],
                )

            def remove(doc_id: str) -> None:  # the wrapper has no delete: users run SQL
                connection.execute("DELETE FROM embeddings WHERE id = ?", [doc_id])

            return Made(
                store, "langchain", f"duckdb:{file}", "embeddings", connection.close, remove=remove
            )
        pytest.importorskip(
            "llama_index.vector_stores.duckdb", reason="pip install 'nudge-rag[duckdb]'"
        )
        from llama_index.vector_stores.duckdb import DuckDBVectorStore

        from nudge_rag.backends.duckdb import install_extensions_from_wheels

        install_extensions_from_wheels()  # offline: LlamaIndex INSTALLs json and fts
        store = DuckDBVectorStore(
            database_name=file.name,
            table_name="documents",
            persist_dir=str(tmp_path),
            embed_dim=docs.vectors.shape[1],
        )
        nodes = docs.nodes()
        for s in range(0, len(nodes), 2000):
            store.add(nodes[s : s + 2000])
        return Made(store, "llama-index", f"duckdb:{file}", "documents")


class TestDuckDB(StoreContract):
    KIND = DuckDBKind
