"""sqlite-vec: LangChain's ``SQLiteVec`` tables in a SQLite file with the ``vec0`` extension.

LangChain's ``SQLiteVec`` (langchain-community) keeps each document in a table ``T``
(``rowid``, ``text``, ``metadata``, ``text_embedding`` as a float32 blob) and its vector again
in the ``vec0`` virtual table ``T_vec`` that searches run on (brute force, no approximate
index). Document ids are the rowids. A write updates both copies in one transaction (a
savepoint), so text and metadata stay and a crash leaves each batch all or nothing. The
metric is read from ``T_vec``'s definition (``distance_metric=cosine``, else sqlite-vec's
default L2, which ranks like cosine on the unit-norm vectors NUDGE-N writes).

The command line opens ``--store sqlite-vec:FILE.db --collection T``. Python's ``sqlite3`` must
be able to load extensions; where it cannot (some builds, e.g. pyenv's default), the backend
uses ``pysqlite3`` (``pip install 'nudge-rag[sqlite-vec]'`` installs it on Linux), and a
LangChain user passes such a connection: ``SQLiteVec(table, connect_sqlite_vec(path), ...)``.
LlamaIndex has no maintained sqlite-vec store.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nudge_rag._errors import UnsupportedStoreError
from nudge_rag._store import BaseEmbeddingStore
from nudge_rag.backends._common import STATE_FOLDER, as_rows, unknown_ids
from nudge_rag.backends._spec import Scheme, StoreSpec, Wrapper
from nudge_rag.backends._uri import (
    OpenedStore,
    StoreURIError,
    choose,
    closing_on_error,
    existing_path,
    need,
)

__all__ = ["SqliteVecBackend", "connect_sqlite_vec"]

_CHUNK = 500  # ids per IN (...)
_METRICS = {"cosine": "cosine", "l2": "l2"}
_METRIC = re.compile(r"distance_metric\s*=\s*([A-Za-z0-9_]+)", re.IGNORECASE)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def connect_sqlite_vec(path: str | Path, **kwargs: Any) -> Any:
    """A SQLite connection with sqlite-vec loaded, rows as ``sqlite3.Row`` (as SQLiteVec wants).

    Uses the standard ``sqlite3`` where it can load extensions, ``pysqlite3`` otherwise.

    Raises:
        UnsupportedStoreError: neither can load extensions (with what to install).
    """
    import sqlite3

    import sqlite_vec

    module: Any = sqlite3
    if not hasattr(sqlite3.Connection, "enable_load_extension"):
        try:
            from pysqlite3 import dbapi2 as module
        except ImportError as err:
            msg = (
                "this Python's sqlite3 cannot load extensions, which sqlite-vec needs: "
                "pip install pysqlite3-binary (Linux), or use a Python built with "
                "--enable-loadable-sqlite-extensions"
            )
            raise UnsupportedStoreError(msg) from err
    connection = module.connect(str(path), **kwargs)
    connection.row_factory = module.Row
    connection.enable_load_extension(True)
    sqlite_vec.load(connection)
    connection.enable_load_extension(False)
    return connection


class SqliteVecBackend(BaseEmbeddingStore):
    """The vectors of a LangChain ``SQLiteVec`` table (``T`` and its ``vec0`` table ``T_vec``).

    Args:
        connection: a SQLite connection with sqlite-vec loaded (the wrapper's).
        table: ``T``.

    Raises:
        ValueError: no such tables, or a ``vec0`` metric nudge-rag cannot use (L1).
    """

    def __init__(self, connection: Any, table: str):
        self.connection, self.table = connection, table
        self._t, self._v = _quote(table), _quote(f"{table}_vec")
        ddl = self._ddl(f"{table}_vec")
        if ddl is None or self._ddl(table) is None:
            have = sorted(
                r[0]
                for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            )
            msg = (
                f"no SQLiteVec table {table!r} with its vec0 table {table + '_vec'!r}; "
                f"tables: {have}"
            )
            raise ValueError(msg)
        found = _METRIC.search(ddl)
        metric = found.group(1).lower() if found else "l2"
        if metric not in _METRICS:
            msg = (
                f"{table}_vec ranks by distance_metric={metric}; nudge-rag supports cosine "
                "and l2 vec0 tables"
            )
            raise ValueError(msg)
        self.distance = _METRICS[metric]

    def _ddl(self, name: str) -> str | None:
        row = self.connection.execute(
            "SELECT sql FROM sqlite_master WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else str(row[0])

    @property
    def name(self) -> str:
        """The table."""
        return self.table

    def __repr__(self) -> str:
        return f"SqliteVecBackend({self.table!r}, distance={self.distance!r})"

    def default_state_dir(self) -> Path | None:
        """``<folder of the database file>/nudge_state/<table>``; ``None`` in memory."""
        for row in self.connection.execute("PRAGMA database_list").fetchall():
            if row[1] == "main":
                return Path(row[2]).parent / STATE_FOLDER / self.table if row[2] else None
        return None

    # ------------------------------------------------------------------ reads
    def count(self) -> int:
        """Rows in the ``vec0`` table."""
        return int(self.connection.execute(f"SELECT count(*) FROM {self._v}").fetchone()[0])

    def list_ids(self) -> list[str]:
        """Every rowid, ascending, as text."""
        rows = self.connection.execute(f"SELECT rowid FROM {self._v} ORDER BY rowid")
        return [str(r[0]) for r in rows.fetchall()]

    def _keys(self, ids: Sequence[str]) -> list[int]:
        keys, bad = [], []
        for i in ids:
            text = str(i)
            if text.isascii() and text.lstrip("-").isdigit():
                keys.append(int(text))
            else:
                bad.append(text)
        if bad:
            raise unknown_ids(bad, set(), f"SQLiteVec table {self.table!r} (ids are rowids)")
        return keys

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The vectors ``T_vec`` searches on, ``(len(ids), dim)`` float32, in the order given."""
        ids = [str(i) for i in ids]
        keys = self._keys(ids)
        blobs: dict[int, bytes] = {}
        for s in range(0, len(keys), _CHUNK):
            chunk = keys[s : s + _CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT rowid, text_embedding FROM {self._v} WHERE rowid IN ({marks})"
            blobs.update((int(r[0]), bytes(r[1])) for r in self.connection.execute(query, chunk))
        missing = [i for i, k in zip(ids, keys) if k not in blobs]
        if missing:
            raise unknown_ids(missing, set(), f"SQLiteVec table {self.table!r}")
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.frombuffer(b"".join(blobs[k] for k in keys), dtype=np.float32).reshape(
            len(keys), -1
        )

    # ------------------------------------------------------------------ writes
    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Write ``vectors`` into ``T`` and ``T_vec`` in place, in one savepoint.

        Raises:
            KeyError: an id that is not a stored rowid (nothing is written).
        """
        ids = [str(i) for i in ids]
        matrix = np.ascontiguousarray(as_rows(ids, vectors), dtype=np.float32)
        keys = self._keys(ids)
        rows = [(matrix[r].tobytes(), key) for r, key in enumerate(keys)]
        con = self.connection
        con.execute("SAVEPOINT nudge_write")
        try:
            before = con.total_changes
            con.executemany(f"UPDATE {self._v} SET text_embedding = ? WHERE rowid = ?", rows)
            if con.total_changes - before != len(set(keys)):
                found = set(self.list_ids())
                raise unknown_ids(ids, found, f"SQLiteVec table {self.table!r}")
            con.executemany(f"UPDATE {self._t} SET text_embedding = ? WHERE rowid = ?", rows)
            con.execute("RELEASE nudge_write")
        except BaseException:
            con.execute("ROLLBACK TO nudge_write")
            con.execute("RELEASE nudge_write")
            raise
        if con.in_transaction:  # the legacy sqlite3 mode opened a transaction around it
            con.commit()

    # ------------------------------------------------------------------ search
    def nearest(self, vectors: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """The ``k`` nearest rows of each query by vec0's own KNN, scored by cosine."""
        queries = np.asarray(vectors, dtype=np.float32)
        out: list[list[str]] = []
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        query = (
            f"SELECT rowid, distance FROM {self._v} WHERE text_embedding MATCH ? AND k = ? "
            "ORDER BY distance"
        )
        for q, vector in enumerate(queries):  # vec0 answers one query vector per statement
            rows = self.connection.execute(query, (vector.tobytes(), int(k))).fetchall()
            out.append([str(r[0]) for r in rows])
            if rows:
                got = np.array([r[1] for r in rows], dtype=np.float32)
                # vec0: cosine distance 1 - cos, or plain euclidean distance
                scores[q, : len(rows)] = 1.0 - (got if self.distance == "cosine" else got**2 / 2)
        return out, scores


def from_langchain(vectorstore: Any) -> SqliteVecBackend:
    """The backend of a langchain-community ``SQLiteVec`` store (its connection and table)."""
    return SqliteVecBackend(vectorstore._connection, vectorstore._table)


def langchain_result_ids(vectorstore: Any) -> None:
    """Make a ``SQLiteVec`` store's search results carry ``Document.id`` (the rowid).

    Its search selects text, metadata and distance only. This wraps
    ``similarity_search_with_score_by_vector`` on this object (once) to select the rowid too,
    with the same query otherwise; the other search methods call it.
    """
    if "similarity_search_with_score_by_vector" in vars(vectorstore):
        return None
    import json

    # the Document class the wrapper's own module uses (nudge_rag imports no framework)
    Document = vars(importlib.import_module(type(vectorstore).__module__))["Document"]

    t, v = _quote(vectorstore._table), _quote(f"{vectorstore._table}_vec")

    def search(embedding: list[float], k: int = 4, **kwargs: Any) -> list[tuple[Any, float]]:
        rows = vectorstore._connection.execute(
            f"SELECT e.rowid, e.text, e.metadata, v.distance FROM {t} AS e "
            f"INNER JOIN {v} AS v ON v.rowid = e.rowid "
            "WHERE v.text_embedding MATCH ? AND k = ? ORDER BY v.distance",
            (np.asarray(embedding, dtype=np.float32).tobytes(), int(k)),
        ).fetchall()
        return [
            (
                Document(id=str(r[0]), page_content=r[1], metadata=json.loads(r[2]) or {}),
                float(r[3]),
            )
            for r in rows
        ]

    vectorstore.similarity_search_with_score_by_vector = search
    return None


def _open(uri: str, scheme: str, rest: str, collection: str | None, options: Any) -> Any:
    """``sqlite-vec:FILE.db --collection TABLE`` (the command line's opener)."""
    path = existing_path(rest, uri, "SQLite database file")
    need("sqlite_vec", "sqlite-vec", uri)
    try:
        connection = connect_sqlite_vec(path)
        tables = [
            str(r[0])[: -len("_vec")]
            for r in connection.execute(
                "SELECT name FROM sqlite_master WHERE sql LIKE '%USING vec0%'"
            ).fetchall()
        ]
    except Exception as err:  # noqa: BLE001 - sqlite raises many kinds
        msg = f"--store {uri}: cannot open the SQLite file: {str(err).splitlines()[0]}"
        raise StoreURIError(msg) from err
    with closing_on_error(connection.close, uri):
        table = choose(tables, collection, uri, "SQLiteVec table")
        backend = SqliteVecBackend(connection, table)
    return OpenedStore(backend, uri, "sqlite-vec", table, connection.close)


SPEC = StoreSpec(
    name="sqlite-vec",
    label="sqlite-vec",
    extra="sqlite-vec",
    wrappers=(
        Wrapper(
            "langchain_community.vectorstores.sqlitevec.SQLiteVec",
            "langchain",
            "from_langchain",
            result_ids="langchain_result_ids",
        ),
    ),
    schemes=(
        Scheme(
            "sqlite-vec",
            "sqlite-vec:FILE.db",
            "_open",
            "a SQLite file with LangChain SQLiteVec tables (--collection: the table)",
        ),
    ),
    cosine_hint="a vec0 column with distance_metric=cosine (or L2 over unit-norm vectors)",
    after_writes="nothing: vec0 searches by brute force",
)
