"""PostgreSQL + pgvector: a table's ``vector`` column, tuned in place, originals in the database.

Works on the tables the frameworks create and on any table of your own:

* LangChain's ``PGVector`` (langchain-postgres): ``langchain_pg_embedding``, one collection
  (``collection_id``), ids in ``id``; the wrapper's ``distance_strategy`` is the metric;
* LlamaIndex's ``PGVectorStore``: ``data_<table_name>`` in ``schema_name``, node ids in
  ``node_id`` (rows are reached through the ``id`` primary key); LlamaIndex always ranks by
  cosine distance;
* a plain connection URL and a table (:meth:`PgVectorBackend.from_url`, for the command line).

Reads go through the primary key in bounded batches (keyset pagination for the id listing),
with the vectors sent in pgvector's binary form (no re-embedding, no text parsing). Writes are
``UPDATE ... SET embedding = ... WHERE <key> = ...``, one transaction per batch: text, metadata
and every other column stay; after the last batch an HNSW / IVFFlat index is refreshed
(:meth:`PgVectorBackend.refresh_index`).

The write-back state (originals, pending plan, progress) lives in side tables of the same
database and schema (``nudge_originals``, ``nudge_pending``, ``nudge_plans``, keyed by
``<schema>.<table>[/<collection>]``), each step one transaction: the database's atomicity
instead of temp files and renames, and a ``restore()`` works from any process that can reach
the database. Each batch's transaction also copies its rows' originals and records its
progress (:meth:`PgVectorState.write_batch`), so a row is never tuned without its original.
:meth:`PgVectorBackend.writeback_state` hands the state to :class:`~nudge_rag.WriteBack`
whenever no ``state_dir`` is given.

``psycopg`` (3) is imported on first use only: ``pip install 'nudge-rag[postgres]'``.
"""

from __future__ import annotations

import logging
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, TypeVar

import numpy as np

from nudge_rag._errors import MetricUnknownError, WriteBackError
from nudge_rag._lock import AdvisoryLock
from nudge_rag._state import WriteBackState
from nudge_rag._store import BaseEmbeddingStore
from nudge_rag.backends._common import as_rows, unknown_ids
from nudge_rag.backends._spec import Scheme, StoreSpec, Wrapper
from nudge_rag.backends._uri import (
    OpenedStore,
    OpenOptions,
    StoreURIError,
    first_line,
    need,
    redact,
)

logger = logging.getLogger(__name__)

__all__ = ["PgVectorBackend", "PgVectorLock", "PgVectorState", "from_langchain", "from_llama_index"]

#: pgvector operator per distance, and how the operator's value becomes cosine similarity
#: (unit vectors): ``<=>`` is ``1 - cos``, ``<#>`` is ``-dot``, ``<->`` is euclidean.
_OPERATORS = {"cosine": "<=>", "dot": "<#>", "l2": "<->"}
_ALIASES = {
    "cosine": "cosine",
    "dot": "dot",
    "ip": "dot",
    "inner": "dot",
    "inner_product": "dot",
    "max_inner_product": "dot",
    "l2": "l2",
    "euclidean": "l2",
}
_OPCLASS_SUFFIX = {"_cosine_ops": "cosine", "_ip_ops": "dot", "_l2_ops": "l2"}
_LANGCHAIN_TABLE = "langchain_pg_embedding"
_LANGCHAIN_COLLECTIONS = "langchain_pg_collection"
_STATE_TABLES = (
    "nudge_originals",
    "nudge_pending",
    "nudge_applied",
    "nudge_plans",
    "nudge_meta",
    "nudge_locks",
)
_STATE_PAGE = 5000  # rows per statement when the state is read or written
#: State steps that only run while a plan is pending (a failure there: resume() goes on).
_PLAN_STEPS = frozenset(
    {
        "write a batch of the plan",
        "finish the write-back",
        "finish the restore",
    }
)
#: Whether the two-key advisory lock ``(classid, objid)`` is held (by the session ``pid``).
_LOCKED = (
    "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
    "classid = %s::int4::oid AND objid = %s::int4::oid AND objsubid = 2"
)
_HELD = _LOCKED + " AND pid = %s"
_MAX_EF_SEARCH = 1000  # pgvector's upper bound for hnsw.ef_search

T = TypeVar("T")


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as err:  # pragma: no cover - the extra is installed in tests
        msg = "the pgvector backend needs psycopg 3: pip install 'nudge-rag[postgres]'"
        raise ImportError(msg) from err
    return psycopg


def _libpq_url(url: Any) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://``, an ``URL`` object) as a libpq one."""
    if hasattr(url, "render_as_string"):
        url = url.render_as_string(hide_password=False)
    text = str(url)
    return re.sub(r"^postgres(?:ql)?\+[A-Za-z0-9_]+://", "postgresql://", text)


def _quoted(*names: str) -> str:
    """``"schema"."table"`` text for ``to_regclass``, each double quote doubled (exact names)."""
    return ".".join('"' + str(n).replace('"', '""') + '"' for n in names)


def _table_exists(conn: Any, schema: str, table: str) -> bool:
    """Whether ``schema.table`` exists, by exact name (no quoting involved)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s)",
        (schema, table),
    ).fetchone()
    return bool(row[0])


def _where(url: str) -> str:
    """``url`` without its password or secret parameters, for messages."""
    from nudge_rag._masking import mask_secrets

    return mask_secrets(url)


def _normalize_distance(distance: Any, what: str) -> str:
    name = str(getattr(distance, "value", distance)).lower()
    if name not in _ALIASES:
        msg = f"{what} must be one of 'cosine', 'dot' (inner product) or 'l2', got {distance!r}"
        raise ValueError(msg)
    return _ALIASES[name]


# ---------------------------------------------------------------------- binary vectors
def _vector_array(matrix: np.ndarray, vector_oid: int) -> bytes:
    """``matrix`` rows as one PostgreSQL ``vector[]`` in binary wire format (no row loop).

    An array is a header (ndim, flags, element type, length, lower bound) and per element a
    length and pgvector's ``vector_send`` form (int16 dim, int16 0, big-endian float32s).
    """
    header = struct.pack(">iiIii", 1, 0, vector_oid, matrix.shape[0], 1)
    return header + vector_fields(matrix).tobytes()


def vector_fields(matrix: np.ndarray) -> np.ndarray:
    """Each row as a length-prefixed binary ``vector`` value, ``(n, dim + 2)`` big-endian words.

    The byte length, then ``vector_send`` (int16 dim, int16 0, float32s): what a binary array
    element or a binary ``COPY`` field takes.
    """
    n, dim = matrix.shape
    fields = np.empty((n, dim + 2), dtype=">u4")
    fields[:, 0] = 4 + 4 * dim
    fields[:, 1] = dim << 16
    fields[:, 2:] = np.ascontiguousarray(matrix, dtype=">f4").view(">u4")
    return fields


def _parse_vectors(blob: bytes | None, n: int, where: str) -> np.ndarray:
    """``n`` concatenated ``vector_send`` values as an ``(n, dim)`` float32 array."""
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    data = bytes(blob or b"")
    dim = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else 0
    words = np.frombuffer(data, dtype=">u4")
    if dim == 0 or words.size != n * (dim + 1):
        msg = f"{where} holds vectors of different dimensions; nudge-rag needs one dimension"
        raise ValueError(msg)
    words = words.reshape(n, dim + 1)
    if np.any(words[:, 0] != np.uint32(dim << 16)):
        msg = f"{where} holds vectors of different dimensions; nudge-rag needs one dimension"
        raise ValueError(msg)
    return words[:, 1:].view(">f4").astype(np.float32)


class _VectorRows:
    """A ``(n, dim)`` matrix to send as one ``vector[]`` parameter (see ``_vector_array``)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data


def _register_vector_array(conn: Any, array_oid: int) -> None:
    psycopg = _psycopg()
    from psycopg.adapt import Dumper

    class VectorArrayDumper(Dumper):
        format = psycopg.pq.Format.BINARY
        oid = array_oid

        def dump(self, obj: _VectorRows) -> bytes:
            return obj.data

    conn.adapters.register_dumper(_VectorRows, VectorArrayDumper)


# ---------------------------------------------------------------------- the backend
class PgVectorBackend(BaseEmbeddingStore):
    """:class:`~nudge_rag.SearchableEmbeddingStore` over a pgvector column.

    Usually built by :func:`nudge_rag.backends.backend_for` from a LangChain ``PGVector`` or
    a LlamaIndex ``PGVectorStore``, or by :meth:`from_url` from a connection string.

    ``distance`` is the metric the framework ranks by: LangChain's ``distance_strategy``
    (``COSINE`` -> ``"cosine"``, ``MAX_INNER_PRODUCT`` -> ``"dot"``, ``EUCLIDEAN`` ->
    ``"l2"``), LlamaIndex's cosine, or, for a plain table, the operator class of its
    HNSW / IVFFlat index (``vector_cosine_ops``, ``vector_ip_ops``, ``vector_l2_ops``) unless
    ``distance`` is given. :func:`~nudge_rag.check_similarity` then refuses a solver whose
    output the store would score otherwise (NUDGE-M needs ``"dot"``) before anything is
    written. An ANN index whose operator class differs from ``distance`` is reported at
    WARNING: the framework's queries cannot use it.

    One backend holds one connection; threads sharing the backend take turns on it (a
    reader's :meth:`nearest` waits for a write-back batch's transaction, never runs in it).

    Args:
        url: a libpq connection string (``postgresql://user:pw@host:5432/db``, or
            ``postgresql://user@/db?host=/socket/dir``); ``postgresql+psycopg://`` is accepted.
        table: the table (``"schema.table"`` or a bare name found on the search path).
        id_column: the column holding document ids.
        key_column: the primary key rows are reached by (default: ``id_column``); LlamaIndex
            tables are keyed by ``id`` with node ids in ``node_id``.
        embedding_column: the ``vector`` column.
        collection: a LangChain collection name (filters ``langchain_pg_embedding``).
        distance: ``"cosine"``, ``"dot"`` or ``"l2"``; ``None`` reads the index's operator class.
        search_params: settings for :meth:`nearest`, e.g. ``{"hnsw.ef_search": 200}`` or
            ``{"ivfflat.probes": 10}`` (``hnsw.ef_search`` is raised to ``k`` at least).
        page_size: rows per page when listing ids.
        connect_timeout: seconds to wait for the server.

    Raises:
        ValueError: no such table, column or collection; a column that is not ``vector``;
            no ``distance`` and no index to read it from.
        ConnectionError: the server cannot be reached.
    """

    #: dead row versions (a share of all) above which :meth:`refresh_index` rebuilds an HNSW
    #: index before vacuuming, rather than letting the vacuum repair the graph row by row
    reindex_fraction: float = 0.02

    def __init__(
        self,
        url: Any,
        *,
        table: str,
        id_column: str = "id",
        key_column: str | None = None,
        embedding_column: str = "embedding",
        collection: str | None = None,
        distance: str | None = None,
        search_params: Mapping[str, Any] | None = None,
        page_size: int = 5000,
        connect_timeout: int = 10,
    ):
        self.url = _libpq_url(url)
        self.id_column = id_column
        self.key_column = key_column or id_column
        self.embedding_column = embedding_column
        self.collection = collection
        self.search_params = dict(search_params or {})
        self.page_size = int(page_size)
        self.connect_timeout = int(connect_timeout)
        self._conn: Any = None
        self._io_lock = threading.RLock()  # one thread at a time on the connection
        self._vector_oid = 0
        self._key_of: dict[str, Any] = {}  # id -> key, when ids are not the key
        self._more_keys: dict[str, list[Any]] = {}  # ids held by several rows
        self._describe(table)
        self.distance = self._read_distance(distance)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        table: str | None = None,
        collection: str | None = None,
        **kwargs: Any,
    ) -> PgVectorBackend:
        """The backend for a table given by connection string (the command line's way in).

        The layout is recognized: ``collection=`` alone means LangChain's
        ``langchain_pg_embedding``; a table with a ``node_id`` column is a LlamaIndex table
        (ids in ``node_id``, rows keyed by ``id``); any other table uses ``id_column``
        (default ``"id"``).

        Args:
            url: the connection string.
            table: the table (``data_<name>`` for LlamaIndex); default
                ``langchain_pg_embedding`` when ``collection`` is given.
            collection: the LangChain collection.
            **kwargs: the other arguments of :class:`PgVectorBackend`.
        """
        if table is None:
            if collection is None:
                msg = (
                    "from_url needs table= (a pgvector table, e.g. LlamaIndex's "
                    "'data_<table_name>') or collection= (a LangChain collection)"
                )
                raise ValueError(msg)
            table = _LANGCHAIN_TABLE
        if "id_column" not in kwargs and "key_column" not in kwargs:
            columns = _columns_of(_libpq_url(url), table, int(kwargs.get("connect_timeout", 10)))
            if "node_id" in columns and "id" in columns:
                kwargs.update(id_column="node_id", key_column="id")
        return cls(url, table=table, collection=collection, **kwargs)

    @property
    def name(self) -> str:
        """``schema.table``, with ``/collection`` for a LangChain collection."""
        return self.target

    @property
    def is_remote(self) -> bool:
        """``True``: the vectors live on a database server."""
        return True

    def __repr__(self) -> str:
        return f"PgVectorBackend({_where(self.url)!r}, {self.name!r}, distance={self.distance!r})"

    # ------------------------------------------------------------------ connection
    def _connect(self) -> Any:
        psycopg = _psycopg()
        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=self.connect_timeout)
        row = conn.execute(
            "SELECT t.oid, t.typarray FROM pg_type t WHERE t.oid = to_regtype('vector')"
        ).fetchone()
        if row is None:
            conn.close()
            msg = (
                f"the database at {_where(self.url)} has no pgvector 'vector' type on its "
                "search path: CREATE EXTENSION vector"
            )
            raise ValueError(msg)
        self._vector_oid = int(row[0])
        _register_vector_array(conn, int(row[1]))
        return conn

    def _connection(self) -> Any:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            self._conn = None
            self._conn = self._connect()
        return self._conn

    def _run(self, what: str, work: Callable[[Any], T]) -> T:
        """``work(connection)``, reconnecting once if the connection was lost.

        Every write here is idempotent (the same UPDATE, an INSERT that keeps existing rows,
        a DELETE), so running it again after a lost connection is safe.

        Raises:
            ConnectionError: the server cannot be reached (the message says what failed).
        """
        psycopg = _psycopg()
        for attempt in (1, 2):
            try:
                with self._io_lock:  # threads take turns: a transaction is not interleaved
                    return work(self._connection())
            except psycopg.OperationalError as err:
                if not (self._conn is None or self._conn.closed or self._conn.broken):
                    raise  # the server answered (e.g. a deadlock): not a lost connection
                if attempt == 1:
                    logger.info("PostgreSQL connection lost during %s; reconnecting", what)
                    continue
                msg = (
                    f"PostgreSQL at {_where(self.url)} could not {what} for {self.name}: "
                    f"{type(err).__name__}: {str(err).strip()}"
                )
                raise ConnectionError(msg) from err
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close the database connection (it reopens on the next call)."""
        with self._io_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> PgVectorBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ description
    def _describe(self, table: str) -> None:
        """Resolve the table, its columns and the collection; fail clearly on each."""
        from psycopg import sql

        def work(conn: Any) -> None:
            row = conn.execute(
                "SELECT c.oid, n.nspname, c.relname FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
                (table,),
            ).fetchone()
            if row is None:
                msg = f"table {table!r} does not exist in the database at {_where(self.url)}"
                raise ValueError(msg)
            self._table_oid, self.schema, self.table = int(row[0]), row[1], row[2]
            columns = dict(
                conn.execute(
                    "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                    "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped",
                    (self._table_oid,),
                ).fetchall()
            )
            for role, column in (
                ("id_column", self.id_column),
                ("key_column", self.key_column),
                ("embedding_column", self.embedding_column),
            ):
                if column not in columns:
                    msg = (
                        f"{role}: table {self.schema}.{self.table} has no column {column!r}; "
                        f"it has {sorted(columns)}"
                    )
                    raise ValueError(msg)
            kind = columns[self.embedding_column]
            if not kind.startswith("vector"):
                msg = (
                    f"column {self.embedding_column!r} of {self.schema}.{self.table} is {kind}; "
                    "nudge-rag writes full-precision pgvector 'vector' columns (halfvec, "
                    "sparsevec and bit are not supported)"
                )
                raise ValueError(msg)
            self._key_type = columns[self.key_column]
            self._filter = sql.SQL("TRUE")
            self._filter_params: dict[str, Any] = {}
            if self.collection is not None:
                self._filter_params["collection"] = self._collection_uuid(conn)
                self._filter = sql.SQL("t.collection_id = %(collection)s")

        self._run("read the table description", work)
        self.target = f"{self.schema}.{self.table}" + (
            f"/{self.collection}" if self.collection is not None else ""
        )
        self._ident = self._sql_ident()

    def _collection_uuid(self, conn: Any) -> Any:
        from psycopg import sql

        collections = sql.Identifier(self.schema, _LANGCHAIN_COLLECTIONS)
        try:
            rows = conn.execute(sql.SQL("SELECT name, uuid FROM {}").format(collections)).fetchall()
        except _psycopg().errors.UndefinedTable as err:
            msg = (
                f"collection={self.collection!r} needs LangChain's {_LANGCHAIN_COLLECTIONS} "
                f"table in schema {self.schema!r}, which does not exist"
            )
            raise ValueError(msg) from err
        by_name = dict(rows)
        if self.collection not in by_name:
            msg = (
                f"no LangChain collection {self.collection!r} in {self.schema}."
                f"{_LANGCHAIN_COLLECTIONS}; there are {sorted(by_name)}"
            )
            raise ValueError(msg)
        return by_name[self.collection]

    def _sql_ident(self) -> dict[str, Any]:
        from psycopg import sql

        return {
            "t": sql.Identifier(self.schema, self.table),
            "id": sql.Identifier(self.id_column),
            "key": sql.Identifier(self.key_column),
            "emb": sql.Identifier(self.embedding_column),
            "key_type": sql.SQL(self._key_type),
            "filter": self._filter,
        }

    def _sql(self, template: str, **extra: Any) -> Any:
        from psycopg import sql

        return sql.SQL(template).format(**self._ident, **extra)

    def ann_indexes(self) -> list[tuple[str, str, str]]:
        """``(index name, method, distance)`` of each HNSW / IVFFlat index on the column."""

        def work(conn: Any) -> list[tuple[str, str, str]]:
            rows = conn.execute(
                "SELECT ci.relname, am.amname, opc.opcname FROM pg_index i "
                "JOIN pg_class ci ON ci.oid = i.indexrelid "
                "JOIN pg_am am ON am.oid = ci.relam "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
                "JOIN pg_opclass opc ON opc.oid = i.indclass[0] "
                "WHERE i.indrelid = %s AND a.attname = %s AND am.amname IN ('hnsw', 'ivfflat')",
                (self._table_oid, self.embedding_column),
            ).fetchall()
            out = []
            for name, method, opclass in rows:
                metric = next(
                    (m for suffix, m in _OPCLASS_SUFFIX.items() if opclass.endswith(suffix)), ""
                )
                out.append((name, method, metric or opclass))
            return out

        return self._run("read the indexes", work)

    def refresh_index(self) -> None:
        """Make the table's HNSW / IVFFlat index serve the vectors just written.

        An in-place ``UPDATE`` leaves the old row version in the table and in its ANN index
        until a vacuum. An HNSW graph whose neighbours are dead rows returns fewer than ``k``
        live rows (nfcorpus: nDCG@10 32.2 before a fit, 23.7 after ``restore()``, some
        ``LIMIT 10`` searches with 0 rows) until autovacuum gets to the table.
        :class:`~nudge_rag.WriteBack` calls this after the last batch of a fit, a restore and
        a resume (:class:`~nudge_rag.IndexedEmbeddingStore`), so the index serves the new
        vectors at once:

        * ``VACUUM (ANALYZE)`` the table when it has an HNSW or IVFFlat index;
        * first, when more than :attr:`reindex_fraction` of the rows are dead versions,
          ``REINDEX INDEX CONCURRENTLY`` each HNSW index (reads and writes go on): vacuuming an
          HNSW index repairs the graph around every dead row, which is far slower than
          building it again (20k rows, 2k updated: VACUUM 125 s; REINDEX 12 s, then VACUUM
          0.1 s), as pgvector's documentation advises.

        Runs outside any transaction (neither statement can run in one). A failure is logged
        as a WARNING and leaves the vectors as written.
        """
        indexes = self.ann_indexes()
        if not indexes:
            return
        started = time.monotonic()
        hnsw = [name for name, method, _ in indexes if method == "hnsw"]

        def dead_fraction(conn: Any) -> float:
            row = conn.execute(
                "SELECT n_live_tup, n_dead_tup FROM pg_stat_user_tables WHERE relid = %s",
                (self._table_oid,),
            ).fetchone()
            live, dead = row or (0, 0)
            return float(dead) / max(float(live) + float(dead), 1.0)

        def work(conn: Any) -> str:
            from psycopg import sql

            done = []
            if hnsw and dead_fraction(conn) > self.reindex_fraction:
                for name in hnsw:
                    index = sql.Identifier(self.schema, name)
                    conn.execute(sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(index))
                done.append(f"REINDEX CONCURRENTLY of {', '.join(hnsw)}")
            conn.execute(self._sql("VACUUM (ANALYZE) {t}"))
            done.append("VACUUM (ANALYZE)")
            return " then ".join(done)

        try:
            done = self._run("refresh the table's index", work)
        except Exception as err:  # noqa: BLE001 - the vectors are written; only the index lags
            logger.warning(
                "%s: refreshing the ANN index after the write-back failed (%s: %s). The "
                "vectors are written, but the index may return fewer rows until the table is "
                "vacuumed: run VACUUM (ANALYZE) on it (REINDEX an HNSW index first).",
                self.name,
                type(err).__name__,
                err,
            )
            return
        logger.info("%s: %s in %.1f s", self.name, done, time.monotonic() - started)

    def _read_distance(self, distance: str | None) -> str:
        indexes = self.ann_indexes()
        self._has_hnsw = any(method == "hnsw" for _, method, _ in indexes)
        if distance is not None:
            distance = _normalize_distance(distance, "distance")
            for name, method, metric in indexes:
                if metric != distance:
                    logger.warning(
                        "%s: the %s index %s is built for %s, but the store ranks by %s, so "
                        "its queries cannot use the index (they scan every row). Create the "
                        "index with vector_%s_ops to use it.",
                        self.name,
                        method,
                        name,
                        metric,
                        distance,
                        {"cosine": "cosine", "dot": "ip", "l2": "l2"}[distance],
                    )
            return distance
        metrics = sorted({metric for _, _, metric in indexes})
        if len(metrics) == 1 and metrics[0] in _OPERATORS:
            return metrics[0]
        if not metrics:
            msg = (
                f"{self.name} has no HNSW or IVFFlat index to read the metric from: pass "
                "distance='cosine', 'dot' or 'l2' (how your queries rank: <=>, <#> or <->)"
            )
            raise MetricUnknownError(msg)
        else:
            msg = f"{self.name} has indexes for {metrics}: pass distance= to choose one"
        raise ValueError(msg)

    # ------------------------------------------------------------------ ids
    def count(self) -> int:
        """Number of distinct ids with a vector."""
        query = self._sql(
            "SELECT count(DISTINCT t.{id}) FROM {t} AS t WHERE {filter} AND t.{emb} IS NOT NULL"
        )
        return int(
            self._run("count rows", lambda c: c.execute(query, self._filter_params).fetchone()[0])
        )

    def _pages(self) -> Iterator[list[tuple[Any, str]]]:
        """``(key, id)`` pages in key order (keyset pagination: bounded, no long transaction)."""
        first = self._sql(
            "SELECT t.{key}, t.{id}::text FROM {t} AS t WHERE {filter} AND t.{emb} IS NOT NULL "
            "ORDER BY t.{key} LIMIT %(limit)s"
        )
        after = self._sql(
            "SELECT t.{key}, t.{id}::text FROM {t} AS t WHERE {filter} AND t.{emb} IS NOT NULL "
            "AND t.{key} > %(last)s ORDER BY t.{key} LIMIT %(limit)s"
        )
        params = {**self._filter_params, "limit": self.page_size}
        query = first
        while True:
            rows = self._run("list ids", lambda c, q=query: c.execute(q, params).fetchall())
            if rows:
                yield rows
            if len(rows) < self.page_size:
                return
            params["last"] = rows[-1][0]
            query = after

    def list_ids(self) -> list[str]:
        """All ids with a vector, in primary-key order (each once)."""
        if self.key_column == self.id_column:
            return [doc_id for page in self._pages() for _, doc_id in page]
        key_of: dict[str, Any] = {}
        more: dict[str, list[Any]] = {}
        for page in self._pages():
            for key, doc_id in page:
                if doc_id in key_of:
                    more.setdefault(doc_id, []).append(key_of[doc_id])
                key_of[doc_id] = key  # the newest row is the one read
        self._key_of, self._more_keys = key_of, more
        if more:
            logger.warning(
                "%s: %d node id(s) are stored in more than one row (e.g. %r); each is read "
                "from its newest row and written to all of them",
                self.name,
                len(more),
                next(iter(more)),
            )
        return list(key_of)

    def _keys(self, ids: list[str]) -> list[Any]:
        """The primary key of each id (ids themselves when they are the key)."""
        if self.key_column == self.id_column:
            return ids
        if any(i not in self._key_of for i in ids):
            self.list_ids()  # new rows since the last listing
        missing = [i for i in ids if i not in self._key_of]
        if missing:
            raise unknown_ids(missing, (), f"{self.name}")
        return [self._key_of[i] for i in ids]

    # ------------------------------------------------------------------ vectors
    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``ids``, ``(len(ids), dim)`` float32, in the order asked.

        One query per call (callers batch): the rows are joined through the primary key and
        their vectors come back as one binary value.

        Raises:
            KeyError: (:class:`~nudge_rag.UnknownIdError`) ids that are not in the table
                (or have no vector).
        """
        ids = [str(i) for i in ids]
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        query = self._sql(
            "SELECT array_agg(q.ord ORDER BY q.ord), array_agg(t.{id}::text ORDER BY q.ord), "
            "string_agg(vector_send(t.{emb}), ''::bytea ORDER BY q.ord) "
            "FROM unnest(%(keys)s::text[]) WITH ORDINALITY AS q(key, ord) "
            "JOIN {t} AS t ON t.{key} = q.key::{key_type} "
            "WHERE {filter} AND t.{emb} IS NOT NULL"
        )
        for attempt in (1, 2):
            keys = [str(k) for k in self._keys(ids)]
            params = {**self._filter_params, "keys": keys}
            found, got_ids, blob = self._run(
                "read vectors", lambda c, p=params: c.execute(query, p).fetchone()
            )
            found, got_ids = found or [], got_ids or []
            if len(found) == len(ids) and got_ids == ids:
                return _parse_vectors(blob, len(ids), self.name)
            if attempt == 1 and self.key_column != self.id_column:
                self._key_of = {}  # rows were deleted or re-added: list again
        ok = {ids[o - 1] for o, got in zip(found, got_ids) if got == ids[o - 1]}
        raise unknown_ids([i for i in ids if i not in ok], (), f"{self.name}")

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """``UPDATE ... SET embedding = ...`` of these rows, in one transaction.

        Nothing else in the rows changes. An id that is not in the table rolls the whole
        batch back and raises :class:`~nudge_rag.UnknownIdError`.
        """
        self._update(ids, vectors)

    def _update(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        also: Callable[[Any, dict[str, Any]], None] | None = None,
    ) -> None:
        """:meth:`set_vectors`, with ``also(conn, params)`` run first in the same transaction.

        ``params`` holds ``keys`` (the rows' primary keys as text, one per id first, in the
        order of ``ids``; then extra rows of ids held by several rows), ``ids`` and the
        collection filter's parameters.
        """
        ids = [str(i) for i in ids]
        matrix = as_rows(ids, vectors)
        if not ids and also is None:
            return
        if not np.isfinite(matrix).all():
            msg = f"vectors for {self.name} hold NaN or inf; nothing was written"
            raise ValueError(msg)
        query = self._sql(
            "UPDATE {t} AS t SET {emb} = q.e "
            "FROM unnest(%(keys)s::text[], %(vectors)b) AS q(key, e) "
            "WHERE t.{key} = q.key::{key_type} AND {filter} RETURNING t.{id}::text"
        )
        psycopg = _psycopg()
        for attempt in (1, 2):
            keys, rows = self._write_keys(ids)
            params = {
                **self._filter_params,
                "keys": [str(k) for k in keys],
                "ids": ids,
                "vectors": _VectorRows(_vector_array(matrix[rows], self._vector_oid)),
            }

            def work(conn: Any, params: dict[str, Any] = params, n: int = len(keys)) -> bool:
                with conn.transaction():
                    if also is not None:
                        also(conn, params)
                    done = conn.execute(query, params).fetchall() if n else []
                    if len(done) == n:
                        return True
                    raise psycopg.Rollback  # an unknown id: nothing of this batch is written
                return False

            if self._run("write vectors", work):
                return
            if attempt == 1 and self.key_column != self.id_column:
                self._key_of = {}  # rows were deleted or re-added: list again
                continue
            break
        current = set(self.list_ids())
        raise unknown_ids([i for i in ids if i not in current], (), f"{self.name}")

    def _write_keys(self, ids: list[str]) -> tuple[list[Any], np.ndarray]:
        """Keys to update and the matrix row of each (an id in several rows: all of them)."""
        keys = list(self._keys(ids))
        rows = list(range(len(ids)))
        for n, doc_id in enumerate(ids):
            for key in self._more_keys.get(doc_id, ()):
                keys.append(key)
                rows.append(n)
        return keys, np.asarray(rows, dtype=np.int64)

    # ------------------------------------------------------------------ search
    def nearest(self, vectors: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """The table's own kNN (``ORDER BY embedding <op> q LIMIT k``), cosine similarity.

        Exact without an index; with HNSW / IVFFlat as exact as the index's search
        (``hnsw.ef_search`` is raised to ``k``; ``search_params`` sets the rest). Queries go
        in batches through one ``LATERAL`` join, in one transaction each.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        k = int(k)
        out = np.full((vectors.shape[0], k), -np.inf, dtype=np.float32)
        ids: list[list[str]] = [[] for _ in range(vectors.shape[0])]
        if vectors.shape[0] == 0 or k == 0:
            return ids, out
        from psycopg import sql

        op = sql.SQL(_OPERATORS[self.distance])
        query = self._sql(
            "SELECT q.ord, r.id, r.d FROM unnest(%(queries)b) WITH ORDINALITY AS q(v, ord) "
            "CROSS JOIN LATERAL (SELECT t.{id}::text AS id, (t.{emb} {op} q.v)::float8 AS d "
            "FROM {t} AS t WHERE {filter} AND t.{emb} IS NOT NULL "
            "ORDER BY t.{emb} {op} q.v LIMIT %(k)s) AS r ORDER BY q.ord, r.d",
            op=op,
        )
        settings = dict(self.search_params)
        if self._has_hnsw or "hnsw.ef_search" in settings:
            wanted = max(int(settings.get("hnsw.ef_search", 40)), k)
            settings["hnsw.ef_search"] = min(wanted, _MAX_EF_SEARCH)
        batch = 256
        for start in range(0, vectors.shape[0], batch):
            block = vectors[start : start + batch]
            params = {
                **self._filter_params,
                "queries": _VectorRows(_vector_array(block, self._vector_oid)),
                "k": k,
            }

            def work(conn: Any, params: dict[str, Any] = params) -> list[tuple[int, str, float]]:
                with conn.transaction():
                    for name, value in settings.items():
                        conn.execute("SELECT set_config(%s, %s, true)", (name, str(value)))
                    return conn.execute(query, params).fetchall()

            rows = self._run("search", work)
            if not rows:
                continue
            ords = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)) - 1
            dist = np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows))
            counts = np.bincount(ords, minlength=block.shape[0])
            rank = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
            out[start + ords, rank] = self._to_cosine(dist)
            for n, doc_id, _ in rows:  # ordered by query, then distance
                ids[start + n - 1].append(doc_id)
        return ids, out

    def _to_cosine(self, value: np.ndarray) -> np.ndarray:
        if self.distance == "cosine":
            return (1.0 - value).astype(np.float32)
        if self.distance == "dot":
            return (-value).astype(np.float32)
        return (1.0 - value**2 / 2.0).astype(np.float32)

    # ------------------------------------------------------------------ write-back state
    def writeback_state(self) -> PgVectorState:
        """The write-back state kept in this database: originals, plan and progress.

        :class:`~nudge_rag.WriteBack` uses it whenever no ``state_dir`` is given.
        """
        return PgVectorState(self)


def _columns_of(url: str, table: str, timeout: int) -> set[str]:
    psycopg = _psycopg()
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=timeout) as conn:
            rows = conn.execute(
                "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) "
                "AND a.attnum > 0 AND NOT a.attisdropped",
                (table,),
            ).fetchall()
    except psycopg.OperationalError as err:
        msg = f"PostgreSQL at {_where(url)} cannot be reached: {str(err).strip()}"
        raise ConnectionError(msg) from err
    return {r[0] for r in rows}


# ---------------------------------------------------------------------- the state
class PgVectorState(WriteBackState):
    """The write-back state of one table (or collection), in side tables of its database.

    Implements what :class:`~nudge_rag.WriteBack` keeps (the methods of its file state), each
    method one transaction, so a crash leaves the old or the new state, never half of one:

    * ``nudge_originals(target, id, embedding)``: the original of every id a fit moved,
      copied from the row in the transaction that first tunes it (:meth:`write_batch`);
    * ``nudge_pending(target, pos, id, embedding)`` and ``nudge_plans(target, kind,
      batch_size, n_rows, batches_done, meta)``: the plan being written and how far it got
      (each batch's progress is committed with the batch);
    * ``nudge_applied(target, pos, id, embedding)``: the last completed plan, i.e. what this
      write-back put in the table (how documents changed by someone else are recognized);
      ``nudge_meta(target, meta)``: what the last fit was (variant, gamma, time);
    * ``nudge_locks(target, holder)``: who holds :attr:`lock` (a PostgreSQL advisory lock:
      one writer per table across processes and hosts, freed by the server when its holder's
      session ends, however it ends).

    ``target`` is ``<schema>.<table>[/<collection>]``. The tables are created in the table's
    schema by the first writer; reading a database without them finds no state. Every
    write checks, in its transaction, that this process's session still holds the lock.
    """

    def __init__(self, backend: PgVectorBackend):
        self.backend = backend
        self.target = backend.target
        from psycopg import sql

        self._names = {n: sql.Identifier(backend.schema, n) for n in _STATE_TABLES}
        self.lock = _lock_for(backend)

    def __repr__(self) -> str:
        return f"PgVectorState({self.target!r})"

    @contextmanager
    def _failure(self, what: str) -> Iterator[None]:
        try:
            yield
        except ConnectionError as err:
            if what in _PLAN_STEPS:  # a plan is pending: resume() finishes it
                then = "call resume() once the server is reachable."
            else:  # e.g. the originals or the plan could not be saved: maybe no plan yet
                then = (
                    "once the server is reachable, status() says what to do: resume() if a "
                    "write-back is pending, otherwise nothing was written: run the fit (or "
                    "restore()) again."
                )
            msg = (
                f"cannot {what} for {self.target} ({err}). The write-back state in the "
                "database is as it was before this step, and every id holds its original or "
                f"its new vector: {then}"
            )
            raise WriteBackError(msg) from err

    def _do(self, what: str, work: Callable[[Any], T]) -> T:
        with self._failure(what):
            return self.backend._run(what, work)

    def _sql(self, template: str) -> Any:
        from psycopg import sql

        return sql.SQL(template).format(**self._names)

    def _exists(self, conn: Any) -> bool:
        return _table_exists(conn, self.backend.schema, "nudge_locks")

    def create(self, conn: Any) -> None:
        """Create the state tables if they are missing (one transaction, serialized)."""
        if self._exists(conn):
            return
        rows = "target text NOT NULL, pos integer NOT NULL, id text NOT NULL, embedding vector NOT NULL, PRIMARY KEY (target, pos)"  # noqa: E501
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('nudge_rag.state'))")
                conn.execute(
                    self._sql(
                        "CREATE TABLE IF NOT EXISTS {nudge_originals} (target text NOT NULL, "
                        "id text NOT NULL, embedding vector NOT NULL, PRIMARY KEY (target, id));"
                        f"CREATE TABLE IF NOT EXISTS {{nudge_pending}} ({rows});"
                        f"CREATE TABLE IF NOT EXISTS {{nudge_applied}} ({rows});"
                        "CREATE TABLE IF NOT EXISTS {nudge_plans} (target text PRIMARY KEY, "
                        "kind text NOT NULL, batch_size integer NOT NULL, "
                        "n_rows integer NOT NULL, batches_done integer NOT NULL, meta jsonb);"
                        "CREATE TABLE IF NOT EXISTS {nudge_meta} (target text PRIMARY KEY, "
                        "meta jsonb NOT NULL);"
                        "CREATE TABLE IF NOT EXISTS {nudge_locks} (target text PRIMARY KEY, "
                        "holder jsonb)"
                    )
                )
        except _psycopg().errors.InsufficientPrivilege as err:
            msg = (
                f"cannot create the write-back tables {', '.join(_STATE_TABLES)} in schema "
                f"{self.backend.schema!r}: {str(err).strip()}. Grant CREATE on the schema, or "
                "pass state_dir=<folder> to keep the originals in files instead"
            )
            raise WriteBackError(msg) from err

    def _read_rows(self, conn: Any, table: str, order: str) -> tuple[list[str], np.ndarray]:
        """All ``(id, embedding)`` rows of this target, ``order``-ed, page by page."""
        query = self._sql(
            "SELECT array_agg(p.id ORDER BY p.o), array_agg(p.o ORDER BY p.o), "
            "string_agg(vector_send(p.embedding), ''::bytea ORDER BY p.o) FROM ("
            f"SELECT id, {order} AS o, embedding FROM {{{table}}} "
            f"WHERE target = %(target)s AND {order} > %(last)s ORDER BY {order} LIMIT %(limit)s"
            ") AS p"
        )
        ids: list[str] = []
        blocks: list[np.ndarray] = []
        last: Any = "" if order == "id" else -1
        while True:
            page_ids, orders, blob = conn.execute(
                query, {"target": self.target, "last": last, "limit": _STATE_PAGE}
            ).fetchone()
            if not page_ids:
                break
            ids.extend(page_ids)
            blocks.append(_parse_vectors(blob, len(page_ids), f"write-back state {table}"))
            if len(page_ids) < _STATE_PAGE:
                break
            last = orders[-1]
        if not blocks:
            return [], np.zeros((0, 0), dtype=np.float32)
        return ids, np.concatenate(blocks)

    def _replace_rows(self, conn: Any, table: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Make ``table`` hold exactly these rows for this target (inside a transaction)."""
        conn.execute(
            self._sql(f"DELETE FROM {{{table}}} WHERE target = %(target)s"),
            {"target": self.target},
        )
        if table == "nudge_originals":
            query = self._sql(
                "INSERT INTO {nudge_originals} (target, id, embedding) SELECT %(target)s, q.id, "
                "q.e FROM unnest(%(ids)s::text[], %(vectors)b) AS q(id, e)"
            )
        else:
            query = self._sql(
                f"INSERT INTO {{{table}}} (target, pos, id, embedding) "
                "SELECT %(target)s, q.ord + %(offset)s, q.id, q.e "
                "FROM unnest(%(ids)s::text[], %(vectors)b) WITH ORDINALITY AS q(id, e, ord)"
            )
        oid = self.backend._vector_oid
        for start in range(0, len(ids), _STATE_PAGE):
            block = np.asarray(vectors[start : start + _STATE_PAGE], dtype=np.float32)
            conn.execute(
                query,
                {
                    "target": self.target,
                    "offset": start - 1,
                    "ids": [str(i) for i in ids[start : start + _STATE_PAGE]],
                    "vectors": _VectorRows(_vector_array(block, oid)),
                },
            )

    def _load(self, what: str, table: str, order: str) -> tuple[list[str], np.ndarray] | None:
        def work(conn: Any) -> tuple[list[str], np.ndarray] | None:
            if not self._exists(conn):
                return None
            ids, vectors = self._read_rows(conn, table, order)
            return (ids, vectors) if ids else None

        return self._do(what, work)

    def _save(self, what: str, table: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        def work(conn: Any) -> None:
            self.create(conn)
            with conn.transaction():
                self.lock.check_held(conn)
                self._replace_rows(conn, table, ids, vectors)

        self._do(what, work)

    # originals ---------------------------------------------------------------
    def load_originals(self) -> tuple[list[str], np.ndarray] | None:
        """The saved originals ``(ids, (n, dim) float32)``, or ``None`` when there are none."""
        return self._load("read the saved originals", "nudge_originals", "id")

    def save_originals(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Make the saved originals exactly ``ids`` -> ``vectors`` (one transaction)."""
        self._save("save the originals", "nudge_originals", ids, vectors)

    def delete_originals(self) -> None:
        """Forget the originals."""
        self._save("delete the originals", "nudge_originals", [], np.zeros((0, 1), np.float32))

    # what the store holds after the last completed plan ------------------------
    def load_applied(self) -> tuple[list[str], np.ndarray] | None:
        """The last completed plan ``(ids, vectors)``, or ``None``."""
        return self._load("read the applied plan", "nudge_applied", "pos")

    def save_applied(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Replace the record of what the store holds."""
        self._save("save the applied plan", "nudge_applied", ids, vectors)

    def load_meta(self) -> dict[str, Any]:
        """What the last completed fit recorded (``{}`` if nothing)."""
        query = self._sql("SELECT meta FROM {nudge_meta} WHERE target = %(target)s")

        def work(conn: Any) -> dict[str, Any]:
            if not self._exists(conn):
                return {}
            row = conn.execute(query, {"target": self.target}).fetchone()
            return dict(row[0]) if row and isinstance(row[0], dict) else {}

        return self._do("read the fit record", work)

    def save_meta(self, meta: dict[str, Any]) -> None:
        """Replace the fit record."""
        from psycopg.types.json import Jsonb

        query = self._sql(
            "INSERT INTO {nudge_meta} (target, meta) VALUES (%(target)s, %(meta)s) "
            "ON CONFLICT (target) DO UPDATE SET meta = excluded.meta"
        )

        def work(conn: Any) -> None:
            self.create(conn)
            conn.execute(query, {"target": self.target, "meta": Jsonb(dict(meta))})

        self._do("save the fit record", work)

    # the query adapter saved with the tuned vectors ----------------------------
    @property
    def _adapter_target(self) -> str:
        """Its row in ``nudge_meta`` (no other table changes)."""
        return f"{self.target}#query_adapter"

    def load_query_adapter(self) -> dict[str, Any] | None:
        """The saved query adapter record, or ``None``."""
        query = self._sql("SELECT meta FROM {nudge_meta} WHERE target = %(target)s")

        def work(conn: Any) -> dict[str, Any] | None:
            if not self._exists(conn):
                return None
            row = conn.execute(query, {"target": self._adapter_target}).fetchone()
            return dict(row[0]) if row and isinstance(row[0], dict) else None

        return self._do("read the query adapter", work)

    def save_query_adapter(self, payload: dict[str, Any] | None) -> None:
        """Replace the saved query adapter record (``None``: remove it)."""
        from psycopg.types.json import Jsonb

        upsert = self._sql(
            "INSERT INTO {nudge_meta} (target, meta) VALUES (%(target)s, %(meta)s) "
            "ON CONFLICT (target) DO UPDATE SET meta = excluded.meta"
        )
        delete = self._sql("DELETE FROM {nudge_meta} WHERE target = %(target)s")

        def work(conn: Any) -> None:
            if payload is None:
                if self._exists(conn):
                    conn.execute(delete, {"target": self._adapter_target})
                return
            self.create(conn)
            conn.execute(upsert, {"target": self._adapter_target, "meta": Jsonb(dict(payload))})

        self._do("save the query adapter", work)

    # pending plan ------------------------------------------------------------
    def load_pending(self) -> tuple[str, list[str], np.ndarray, int, int] | None:
        """``(kind, ids, vectors, batch_size, batches_done)`` of the pending plan, or ``None``."""
        plan = self._sql(
            "SELECT kind, batch_size, n_rows, batches_done FROM {nudge_plans} "
            "WHERE target = %(target)s"
        )

        def work(conn: Any) -> tuple[str, list[str], np.ndarray, int, int] | None:
            if not self._exists(conn):
                return None
            with conn.transaction():  # one snapshot for the plan and its rows
                row = conn.execute(plan, {"target": self.target}).fetchone()
                if row is None:
                    return None
                kind, batch_size, n_rows, done = row
                ids, vectors = self._read_rows(conn, "nudge_pending", "pos")
            if len(ids) != n_rows:
                msg = (
                    f"the pending write-back plan of {self.target} has {len(ids)} of its "
                    f"{n_rows} rows in {self.backend.schema}.nudge_pending; the store was not "
                    "touched by this call"
                )
                raise WriteBackError(msg)
            return str(kind), ids, vectors, int(batch_size), int(done)

        return self._do("read the pending plan", work)

    def has_pending(self) -> bool:
        """Whether a plan is pending (without reading it)."""
        return self._plan_row() is not None

    def pending_summary(self) -> tuple[str, int, int] | None:
        """``(kind, n_ids, batch_size)`` of the pending plan, from its row (no vectors read)."""
        row = self._plan_row()
        return None if row is None else (str(row[0]), int(row[2]), int(row[1]))

    def pending_progress(self) -> int:
        """Batches of the pending plan written (``0`` without one), from its row."""
        row = self._plan_row()
        return 0 if row is None else int(row[3])

    def count_originals(self) -> int:
        """How many ids have a saved original (counted in the database, none read)."""
        query = self._sql("SELECT count(*) FROM {nudge_originals} WHERE target = %(target)s")

        def work(conn: Any) -> int:
            if not self._exists(conn):
                return 0
            return int(conn.execute(query, {"target": self.target}).fetchone()[0])

        return self._do("count the saved originals", work)

    def _plan_row(self) -> tuple[Any, ...] | None:
        """``(kind, batch_size, n_rows, batches_done)`` of the pending plan, or ``None``."""
        query = self._sql(
            "SELECT kind, batch_size, n_rows, batches_done FROM {nudge_plans} "
            "WHERE target = %(target)s"
        )

        def work(conn: Any) -> tuple[Any, ...] | None:
            if not self._exists(conn):
                return None
            return conn.execute(query, {"target": self.target}).fetchone()

        return self._do("read the pending plan", work)

    def pending_meta(self) -> dict[str, Any]:
        """What ``apply`` recorded about the fit whose plan is pending (``{}`` if nothing)."""
        query = self._sql("SELECT meta FROM {nudge_plans} WHERE target = %(target)s")

        def work(conn: Any) -> dict[str, Any]:
            if not self._exists(conn):
                return {}
            row = conn.execute(query, {"target": self.target}).fetchone()
            return dict(row[0]) if row and isinstance(row[0], dict) else {}

        return self._do("read the pending plan", work)

    def save_pending(
        self,
        kind: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        batch_size: int,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Replace the plan with ``ids`` -> ``vectors`` (progress 0), in one transaction."""
        from psycopg.types.json import Jsonb

        upsert = self._sql(
            "INSERT INTO {nudge_plans} (target, kind, batch_size, n_rows, batches_done, meta) "
            "VALUES (%(target)s, %(kind)s, %(batch_size)s, %(n)s, 0, %(meta)s) "
            "ON CONFLICT (target) DO UPDATE SET kind = excluded.kind, "
            "batch_size = excluded.batch_size, n_rows = excluded.n_rows, batches_done = 0, "
            "meta = excluded.meta"
        )
        params = {
            "target": self.target,
            "kind": kind,
            "batch_size": int(batch_size),
            "n": len(ids),
            "meta": Jsonb(dict(meta or {})),
        }

        def work(conn: Any) -> None:
            self.create(conn)
            with conn.transaction():
                self.lock.check_held(conn)
                self._replace_rows(conn, "nudge_pending", ids, vectors)
                conn.execute(upsert, params)

        self._do("save the write-back plan", work)

    def save_progress(self, batches_done: int) -> None:
        """Record how many batches of the plan are written.

        :meth:`write_batch` records it with each batch; this is for a caller that wrote one.
        """
        query = self._sql(
            "UPDATE {nudge_plans} SET batches_done = %(done)s WHERE target = %(target)s"
        )

        def work(conn: Any) -> None:
            with conn.transaction():
                self.lock.check_held(conn)
                conn.execute(query, {"target": self.target, "done": int(batches_done)})

        self._do("record the write-back progress", work)

    def write_batch(
        self, kind: str, batches_done: int, ids: Sequence[str], vectors: np.ndarray
    ) -> None:
        """Batch ``batches_done`` of the plan, in one transaction with what protects it.

        The transaction (a) checks that this process still holds the writer lock (a server
        restart frees it: then nothing is written and :class:`~nudge_rag.WriteBackError` says
        so), (b) for ``"apply"``, copies the stored vector of every row of the batch that has
        no saved original into ``nudge_originals`` (a row tuned earlier keeps its first
        original), (c) records the progress, and (d) updates the rows. A crash at any point
        leaves all of it or none of it: no row is ever tuned without its original saved, and
        no batch is written twice.
        """
        originals = self.backend._sql(
            "INSERT INTO {originals} (target, id, embedding) "
            "SELECT %(target)s, q.id, t.{emb} FROM unnest(%(keys)s::text[], %(ids)s::text[]) "
            "AS q(key, id) JOIN {t} AS t ON t.{key} = q.key::{key_type} WHERE {filter} "
            "ON CONFLICT (target, id) DO NOTHING",
            originals=self._names["nudge_originals"],
        )
        progress = self._sql(
            "UPDATE {nudge_plans} SET batches_done = %(done)s WHERE target = %(target)s"
        )
        n = len(ids)

        def protect(conn: Any, params: dict[str, Any]) -> None:
            self.lock.check_held(conn)
            if kind == "apply" and n:
                # the first len(ids) keys are the ids' own rows (extra rows of an id follow)
                conn.execute(
                    originals, {**params, "keys": params["keys"][:n], "target": self.target}
                )
            conn.execute(progress, {"target": self.target, "done": int(batches_done)})

        with self._failure("write a batch of the plan"):
            self.backend._update(ids, vectors, also=protect)

    def _delete_all(self, conn: Any, tables: Sequence[str]) -> None:
        for table in tables:
            conn.execute(
                self._sql(f"DELETE FROM {{{table}}} WHERE target = %(target)s"),
                {"target": self.target},
            )

    def clear_pending(self) -> None:
        """Forget the plan and its progress (one transaction)."""

        def work(conn: Any) -> None:
            if self._exists(conn):
                with conn.transaction():
                    self.lock.check_held(conn)
                    self._delete_all(conn, ("nudge_plans", "nudge_pending"))

        self._do("clear the write-back plan", work)

    def finish_apply(self, meta: dict[str, Any]) -> None:
        """The plan is written: it becomes the applied plan, with ``meta`` (one transaction)."""
        from psycopg.types.json import Jsonb

        record = {**meta, "applied_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        copy = self._sql(
            "INSERT INTO {nudge_applied} (target, pos, id, embedding) "
            "SELECT target, pos, id, embedding FROM {nudge_pending} WHERE target = %(target)s"
        )
        upsert = self._sql(
            "INSERT INTO {nudge_meta} (target, meta) VALUES (%(target)s, %(meta)s) "
            "ON CONFLICT (target) DO UPDATE SET meta = excluded.meta"
        )
        params = {"target": self.target, "meta": Jsonb(record)}

        def work(conn: Any) -> None:
            self.create(conn)
            with conn.transaction():
                self.lock.check_held(conn)
                self._delete_all(conn, ("nudge_applied",))
                conn.execute(copy, params)
                conn.execute(upsert, params)
                self._delete_all(conn, ("nudge_plans", "nudge_pending"))

        self._do("finish the write-back", work)

    def finish_restore(self) -> None:
        """Every original is back: forget this target's state (one transaction)."""

        def work(conn: Any) -> None:
            if self._exists(conn):
                with conn.transaction():
                    self.lock.check_held(conn)
                    self._delete_all(
                        conn,
                        ("nudge_originals", "nudge_applied", "nudge_meta")
                        + ("nudge_plans", "nudge_pending"),
                    )

        self._do("finish the restore", work)
        self.save_query_adapter(None)


class PgVectorLock(AdvisoryLock):
    """One writer per table: the :class:`~nudge_rag._lock.AdvisoryLock` of its target.

    Held on a connection of its own, so writers in other processes or hosts wait for it (up
    to their ``lock_timeout``), and the server frees it when the holder's session ends,
    however it ends (a server restart too). Who holds it is recorded in ``nudge_locks`` for
    the next writer's message, and every write of the state checks, in its transaction, that
    the lock is still held (:meth:`check_held`).
    """

    busy_hint = (
        "only one writer (fit, restore, resume) may work on a table at a time. Wait for it "
        "to finish, or pass lock_timeout=<seconds> to wait for it."
    )

    def __init__(self, backend: PgVectorBackend):
        super().__init__(
            self._open_session,
            (_hash32("nudge_rag"), _hash32(backend.target)),
            f"the write-back state of {backend.target}",
        )
        self.backend = backend

    def check_held(self, conn: Any) -> None:
        """Raise :class:`~nudge_rag.WriteBackError` unless this lock's session holds it now.

        Asked on ``conn`` (inside the caller's transaction), so a batch commits only while its
        writer holds the lock. The server frees an advisory lock when the session holding it
        ends, e.g. when the server restarts: the writer must stop then (another one may have
        started), not reconnect and go on.
        """
        pid = self._pid if self._conn is not None else None
        if pid is not None and conn.execute(_HELD, (*self._keys, pid)).fetchone():
            return
        msg = (
            f"the writer lock of {self.backend.target} was lost (its PostgreSQL session ended: "
            "the server restarted, or the session was terminated), so this writer stopped "
            "before writing more: another writer may have started. Every id holds its original "
            "or its new vector; once the server is reachable, call resume() (status() says "
            "what is pending)"
        )
        raise WriteBackError(msg)

    def holder_now(self) -> dict[str, Any] | None:
        """Who holds the lock now (``None``: free), without taking it.

        Asked on a short-lived connection of its own: the backend this lock was made for may
        have been closed since, or be writing in another thread.
        """
        if self.holder is not None:
            return dict(self.holder)
        psycopg = _psycopg()
        try:
            with self.backend._connect() as conn:
                if not conn.execute(_LOCKED, self._keys).fetchone():
                    return None
                return self._read_holder(conn) or {}
        except psycopg.OperationalError:
            return None

    # the AdvisoryLock hooks ------------------------------------------------------
    def _open_session(self) -> Any:
        backend = self.backend
        psycopg = _psycopg()
        try:
            conn = backend._connect()
        except psycopg.OperationalError as err:
            where = _where(backend.url)
            msg = f"PostgreSQL at {where} cannot be reached to lock {self.name}: {err}"
            raise WriteBackError(msg) from err
        try:
            PgVectorState(backend).create(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _try(self) -> bool:
        try:
            return super()._try()
        except _psycopg().OperationalError as err:
            where = _where(self.backend.url)
            msg = f"PostgreSQL at {where} failed while locking {self.name}: {err}"
            raise WriteBackError(msg) from err

    def _taken(self, holder: dict[str, Any]) -> None:
        from psycopg.types.json import Jsonb

        self._conn.execute(
            sql_format(
                self.backend.schema,
                "INSERT INTO {} (target, holder) VALUES (%s, %s) "
                "ON CONFLICT (target) DO UPDATE SET holder = excluded.holder",
            ),
            (self.backend.target, Jsonb(holder)),
        )

    def _release_record(self, conn: Any) -> None:
        conn.execute(
            sql_format(self.backend.schema, "UPDATE {} SET holder = NULL WHERE target = %s"),
            (self.backend.target,),
        )

    def _recorded(self) -> dict[str, Any] | None:
        return self._read_holder(self._conn) if self._conn is not None else None

    def _read_holder(self, conn: Any) -> dict[str, Any] | None:
        """Who holds the lock, as its holder recorded in ``nudge_locks`` (read on ``conn``)."""
        query = sql_format(self.backend.schema, "SELECT holder FROM {} WHERE target = %s")
        try:
            if not _table_exists(conn, self.backend.schema, "nudge_locks"):
                return None
            row = conn.execute(query, (self.backend.target,)).fetchone()
        except _psycopg().OperationalError:
            return None
        return dict(row[0]) if row and isinstance(row[0], dict) else None


def sql_format(schema: str, template: str) -> Any:
    """``template`` with ``{}`` as ``<schema>.nudge_locks``."""
    from psycopg import sql

    return sql.SQL(template).format(sql.Identifier(schema, "nudge_locks"))


def _hash32(text: str) -> int:
    """A stable signed 32-bit key for an advisory lock."""
    value = zlib.crc32(text.encode("utf-8"))
    return value - (1 << 32) if value >= (1 << 31) else value


_LOCKS: dict[tuple[str, str], PgVectorLock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(backend: PgVectorBackend) -> PgVectorLock:
    """The one lock of this process for a table (or collection) of one database."""
    key = (_where(backend.url), backend.target)
    with _LOCKS_GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = PgVectorLock(backend)
        return lock


# ---------------------------------------------------------------------- registry factories
def from_langchain(vectorstore: Any) -> PgVectorBackend:
    """Registry factory for ``langchain_postgres.PGVector``: its collection, its metric."""
    engine = getattr(vectorstore, "_engine", None) or getattr(vectorstore, "_async_engine", None)
    if engine is None:
        msg = "PGVector has no engine to read the connection from"
        raise ValueError(msg)
    strategy = getattr(vectorstore, "_distance_strategy", "cosine")
    return PgVectorBackend(
        engine.url,
        table=_LANGCHAIN_TABLE,
        collection=vectorstore.collection_name,
        distance=_normalize_distance(strategy, "PGVector distance_strategy"),
    )


def from_llama_index(vector_store: Any) -> PgVectorBackend:
    """Registry factory for LlamaIndex's ``PGVectorStore`` (table ``data_<table_name>``)."""
    if getattr(vector_store, "use_halfvec", False):
        msg = (
            "PGVectorStore(use_halfvec=True) stores half-precision vectors; nudge-rag writes "
            "full-precision 'vector' columns. Use use_halfvec=False."
        )
        raise ValueError(msg)
    engine = getattr(vector_store, "_engine", None)
    url: Any = engine.url if engine is not None else vector_store.connection_string
    if engine is None and ":***@" in str(url):
        msg = (
            "PGVectorStore keeps its connection string with the password hidden; build the "
            "backend with nudge_rag.backends.PgVectorBackend.from_url(url, table=...)"
        )
        raise ValueError(msg)
    table = _quoted(vector_store.schema_name, f"data_{vector_store.table_name}")
    # LlamaIndex ranks by cosine distance whatever index it built (hnsw_dist_method).
    return PgVectorBackend(
        url, table=table, id_column="node_id", key_column="id", distance="cosine"
    )


# ---------------------------------------------------------------------- command line
def _open_pgvector(
    uri: str, scheme: str, rest: str, collection: str | None, options: OpenOptions
) -> OpenedStore:
    """A pgvector table (``--collection data_<name>``) or LangChain collection (its name)."""
    need("psycopg", "postgres", uri)

    shown = redact(uri)
    if collection is None:
        msg = (
            f"--store {shown}: give --collection: a LangChain PGVector collection name or a "
            "table (LlamaIndex: data_<table_name>)"
        )
        raise StoreURIError(msg)
    unknown_metric = (
        f"--store {shown} --collection {collection}: the table has no HNSW or IVFFlat index "
        "to read the metric from; pass --distance cosine, dot or l2 (how your queries rank: "
        "<=>, <#> or <->)"
    )
    try:
        try:
            backend = PgVectorBackend.from_url(uri, table=collection, distance=options.distance)
        except MetricUnknownError as err:
            raise StoreURIError(unknown_metric) from err
        except ValueError as table_err:
            try:
                backend = PgVectorBackend.from_url(
                    uri, collection=collection, distance=options.distance
                )
            except MetricUnknownError as err:
                raise StoreURIError(unknown_metric) from err
            except ValueError as coll_err:
                msg = (
                    f"--store {shown}: {collection!r} is neither a table "
                    f"({first_line(table_err)}) nor a LangChain collection "
                    f"({first_line(coll_err)})"
                )
                raise StoreURIError(msg) from coll_err
    except StoreURIError:
        raise
    except Exception as err:  # noqa: BLE001 - connection errors of every kind
        msg = f"--store {shown}: cannot reach PostgreSQL: {first_line(err)}"
        raise StoreURIError(msg) from err
    close = getattr(backend, "close", None)
    return OpenedStore(backend, shown, "pgvector", collection, close if callable(close) else None)


SPEC = StoreSpec(
    name="pgvector",
    label="pgvector",
    extra="postgres",
    wrappers=(
        Wrapper("langchain_postgres.vectorstores.PGVector", "langchain", "from_langchain"),
        Wrapper(
            "llama_index.vector_stores.postgres.base.PGVectorStore",
            "llama-index",
            "from_llama_index",
        ),
    ),
    schemes=tuple(
        Scheme(
            scheme,
            f"{scheme}://USER@HOST:PORT/DB",
            "_open_pgvector",
            "a PostgreSQL database with pgvector (--collection: the table or LangChain collection)",
        )
        for scheme in ("postgresql", "postgres", "postgresql+psycopg")
    ),
    cosine_hint="cosine distance (<=>, an index with vector_cosine_ops)",
    dot_hint="inner-product distance (<#>, an index with vector_ip_ops)",
    after_writes="VACUUM (ANALYZE) after a fit and after a restore when an HNSW or IVFFlat "
    "index serves the column, so the index stops returning dead row versions",
    restore="bit-exact (float32); originals in side tables of the same database",
)
