"""sqlite-vec through LangChain's ``SQLiteVec`` (langchain-community); ids are rowids.

vec0 searches by brute force: one configuration per metric users create (sqlite-vec's
default L2, which LangChain's wrapper uses, and ``distance_metric=cosine``).
"""

from __future__ import annotations

from .contract import StoreContract
from .harness import Made, StoreKind


class SqliteVecKind(StoreKind):
    name = "sqlite-vec"
    configs = ("l2", "cosine")
    module_needed = "sqlite_vec"
    extra = "sqlite-vec"
    odd_ids = False  # rowids
    restore_atol = 0.0

    def make(self, tmp_path, docs, config, request) -> Made:
        from langchain_community.vectorstores import SQLiteVec

        from nudge_rag.backends.sqlitevec import connect_sqlite_vec

        file = tmp_path / "store.db"
        connection = connect_sqlite_vec(file)
        if config == "cosine":  # created before the wrapper, which keeps an existing table
            dim = docs.vectors.shape[1]
            connection.execute(
                "CREATE TABLE docs (rowid INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT, "
                "metadata BLOB, text_embedding BLOB)"
            )
            connection.execute(
                "CREATE VIRTUAL TABLE docs_vec USING vec0(rowid INTEGER PRIMARY KEY, "
                f"text_embedding float[{dim}] distance_metric=cosine)"
            )
        lookup = docs.embeddings()
        store = SQLiteVec("docs", connection, lookup)
        for s in range(0, len(docs.ids), 2000):
            rowids = store.add_texts(docs.texts[s : s + 2000], docs.metadatas[s : s + 2000])
            assert rowids == list(range(s + 1, s + 1 + len(rowids)))
        docs.ids[:] = [str(k + 1) for k in range(len(docs.ids))]  # the store's ids

        def remove(rowid: str) -> None:  # the wrapper has no delete: users run SQL
            with connection:
                connection.execute("DELETE FROM docs WHERE rowid = ?", (int(rowid),))
                connection.execute("DELETE FROM docs_vec WHERE rowid = ?", (int(rowid),))

        return Made(
            store,
            "langchain",
            f"sqlite-vec:{file}",
            "docs",
            connection.close,
            remove=remove,
            lookup=lookup,
        )


class TestSqliteVec(StoreContract):
    KIND = SqliteVecKind
