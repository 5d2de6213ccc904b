"""A log of what a RAG app's users asked, were shown and marked: the pairs NUDGE learns from.

:class:`FeedbackLog` records two kinds of rows:

* a **query**: an id, the time, the store (or collection) it ran against, the question text
  (unless the app opts out with ``store_text=False``), the query vector the search used (so
  nothing is embedded again when tuning) and the ids shown, in order;
* a **feedback event**: the query id, a document id among those shown, positive or negative,
  a weight (default 1) and the time.

By default the log is a SQLite file (standard library; WAL mode and a busy timeout, so several
processes of one app can write at once). Give a ``postgresql://`` URL instead for apps that run
on several machines: the database a pgvector user already has (psycopg 3, imported only then).

:meth:`FeedbackLog.pairs` turns the log into training pairs, and :func:`tune_from_feedback`
feeds them to the one tuning flow (:meth:`nudge_rag.StoreTuner.tune_embedded`): gamma is
cross-validated, originals are kept, every re-tune starts from the originals. Feedback is never
consumed, so whatever arrives while a re-tune runs is used by the next one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from nudge_rag._errors import TuneInProgressError, UnknownIdError
from nudge_rag._lock import AdvisoryLock, FileLock, LockBusy, WriterLock, describe_holder
from nudge_rag._masking import mask_secrets

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MERGE_TOLERANCE",
    "FeedbackLog",
    "FeedbackPairs",
    "LogCounts",
    "LoggedQuery",
    "TuneInProgressError",
    "tune_from_feedback",
]

#: Questions whose unit-normalised vectors lie within this L2 distance are one question.
DEFAULT_MERGE_TOLERANCE = 1e-3
_N_SHOWN = 3
_CHUNK = 500  # ids per ``IN (...)`` (SQLite allows 999 variables in old builds)
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}\Z")


class LogCounts(NamedTuple):
    """Numbers of queries and feedback events (logged, imported or purged)."""

    queries: int
    events: int


@dataclass(frozen=True)
class LoggedQuery:
    """One logged query.

    Attributes:
        query_id: its id.
        time: Unix time (seconds) it was logged.
        store: the store or collection it ran against.
        text: the question, or ``None`` when the log stores no text.
        vector: ``(dim,)`` float32 query vector the search used.
        shown_ids: the document ids shown, in order.
    """

    query_id: str
    time: float
    store: str
    text: str | None
    vector: np.ndarray
    shown_ids: list[str]


@dataclass
class FeedbackPairs:
    """Training pairs built from a feedback log, ready for the tuning flow.

    Attributes:
        embeddings: ``(n, dim)`` float32: one row per question (near-duplicates merged: the
            mean of their vectors).
        answer_ids: per question, the ids of the documents marked relevant (net of negatives).
        texts: per question, the text of its first logged member (``None`` without text).
        query_ids: per question, the logged query ids merged into it.
        n_events: feedback events read (inside the time window).
        n_cancelled: (question, document) pairs with positive feedback that negatives or
            ``min_count`` left out.
    """

    embeddings: np.ndarray
    answer_ids: list[list[str]]
    texts: list[str | None] = field(default_factory=list)
    query_ids: list[list[str]] = field(default_factory=list)
    n_events: int = 0
    n_cancelled: int = 0

    def __len__(self) -> int:
        return len(self.answer_ids)

    @property
    def n_pairs(self) -> int:
        """Number of (question, document) pairs."""
        return sum(len(a) for a in self.answer_ids)

    def as_text_pairs(self) -> list[tuple[str, str]]:
        """``[(question, doc_id), ...]`` (for flows that embed text).

        Raises:
            ValueError: a question has no text (the log was opened with ``store_text=False``).
        """
        if any(t is None for t in self.texts):
            msg = "some questions have no text (logged with store_text=False); use embeddings"
            raise ValueError(msg)
        return [(t, d) for t, ids in zip(self.texts, self.answer_ids) for d in ids]


# ---------------------------------------------------------------------- time helpers
def _as_time(value: Any, name: str) -> float:
    """Unix seconds from a float, a datetime (naive = local time) or ``None`` (now)."""
    if value is None:
        return time.time()
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        msg = f"{name} must be Unix seconds or a datetime, got {type(value).__name__}"
        raise TypeError(msg)
    if not math.isfinite(float(value)):
        msg = f"{name} must be finite, got {value!r}"
        raise ValueError(msg)
    return float(value)


def _window_start(since: Any) -> float | None:
    """``since``: ``None``, a ``timedelta`` (that long ago), a datetime or Unix seconds."""
    if since is None:
        return None
    if isinstance(since, timedelta):
        return time.time() - since.total_seconds()
    return _as_time(since, "since")


# ---------------------------------------------------------------------- SQL backends
class _Sql:
    """Per-thread (and per-process) connections and transactions for one database."""

    kind = ""
    placeholder = "?"
    blob = "BLOB"
    real = "REAL"

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def connection(self) -> Any:
        if self._closed:
            msg = "this FeedbackLog is closed"
            raise RuntimeError(msg)
        got = getattr(self._local, "conn", None)
        if got is not None and got[0] == os.getpid():
            return got[1]
        conn = self._connect()  # a new thread, or a forked child: never share a connection
        self._local.conn = (os.getpid(), conn)
        pid, dead = os.getpid(), []
        with self._lock:
            kept = []
            for entry in self._all:  # close what threads that ended left (a thread per request)
                thread = entry[1]()
                if entry[0] == pid and (thread is None or not thread.is_alive()):
                    dead.append(entry[2])
                else:  # a parent's connection in a forked child is kept, never used or closed
                    kept.append(entry)
            kept.append((pid, weakref.ref(threading.current_thread()), conn))
            self._all = kept
        for old in dead:
            with contextlib.suppress(Exception):
                old.close()
        return conn

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
            self._closed = True
        for pid, _, conn in conns:
            if pid == os.getpid():
                with contextlib.suppress(Exception):
                    conn.close()

    def sql(self, statement: str) -> str:
        return statement if self.placeholder == "?" else statement.replace("?", self.placeholder)

    @contextlib.contextmanager
    def tune_lock(self, key: str) -> Iterator[None]:
        """Hold the re-tune lock of ``key``; another holder, even in this thread, refuses.

        A new lock each time (a lock file, or a PostgreSQL session), so two logs on one
        database in one process exclude each other too.
        """
        lock = self._tune_lock(key)
        try:
            lock.acquire("re-tune", timeout=0)
        except LockBusy as err:
            msg = (
                f"another re-tune of store {key!r} from the feedback log {self!r} is running "
                f"({describe_holder(err.holder)}); nothing was done: try again when it ends"
            )
            raise TuneInProgressError(msg) from None
        try:
            yield
        finally:
            lock.release()

    # Each dialect defines: _connect(), transaction(write) and _tune_lock(key).


class _Sqlite(_Sql):
    kind = "sqlite"

    def __init__(self, path: Path, busy_timeout: float, synchronous: str):
        super().__init__()
        self.path = path
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous

    def __repr__(self) -> str:
        return str(self.path)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        deadline = time.monotonic() + self.busy_timeout
        while True:  # switching to WAL needs a moment alone with the file
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        if str(mode).lower() != "wal":
            logger.warning(
                "SQLite feedback log %s is in journal mode %r, not WAL (a network file system?): "
                "writers from several processes will wait for each other",
                self.path,
                mode,
            )
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @contextlib.contextmanager
    def transaction(self, write: bool) -> Iterator[sqlite3.Cursor]:
        conn = self.connection()
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")  # a read is one WAL snapshot
        try:
            yield cur
        except BaseException:
            conn.rollback()
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()

    def _tune_lock(self, key: str) -> WriterLock:
        digest = hashlib.sha1(key.encode()).hexdigest()[:12]
        path = self.path.with_name(f"{self.path.name}.tune-{digest}.lock")
        return FileLock(path, f"re-tunes of store {key!r} from the feedback log {self.path}")


class _Postgres(_Sql):
    kind = "postgresql"
    placeholder = "%s"
    blob = "BYTEA"
    real = "DOUBLE PRECISION"

    def __init__(self, url: str):
        super().__init__()
        try:
            import psycopg
        except ImportError as err:
            msg = "a postgresql:// feedback log needs psycopg 3: pip install 'nudge-rag[postgres]'"
            raise ImportError(msg) from err
        self._psycopg = psycopg
        self.url = url

    def __repr__(self) -> str:
        return mask_secrets(self.url)  # no password, no secret parameters

    def _connect(self) -> Any:
        return self._psycopg.connect(self.url, autocommit=True)

    def _begin(self, write: bool) -> Any:
        """A connection inside a new transaction (a read: one snapshot for all statements)."""
        statement = "BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ"
        conn = self.connection()
        try:
            conn.execute(statement)
        except self._psycopg.OperationalError:
            if not conn.broken:
                raise
            # The server dropped this connection (a restart, an idle timeout) and nothing ran
            # on it yet: one new connection, once.
            logger.info("feedback log %r: reconnecting after a dropped connection", self)
            self._local.conn = None
            conn = self.connection()
            conn.execute(statement)
        return conn

    @contextlib.contextmanager
    def transaction(self, write: bool) -> Iterator[Any]:
        conn = self._begin(write)
        cur = conn.cursor()
        try:
            yield cur
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")
        finally:
            cur.close()

    def _tune_lock(self, key: str) -> WriterLock:
        lock_id = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big", signed=True)
        return AdvisoryLock(
            self._connect, (lock_id,), f"re-tunes of store {key!r} from the feedback log {self!r}"
        )


def _open_backend(location: Any, busy_timeout: float, synchronous: str) -> _Sql:
    if isinstance(location, str) and re.match(r"postgres(ql)?(\+\w+)?://", location):
        return _Postgres(re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", location))
    if isinstance(location, str) and location.startswith("sqlite:///"):
        location = location[len("sqlite:///") :]
    if not isinstance(location, (str, os.PathLike)):
        msg = (
            "location must be a file path (SQLite) or a postgresql:// URL, "
            f"got {type(location).__name__}"
        )
        raise TypeError(msg)
    if str(location) in ("", ":memory:"):
        msg = (
            f"location must name a file, got {str(location)!r}: the log is shared by threads "
            "and processes, which an in-memory SQLite database is not"
        )
        raise ValueError(msg)
    path = Path(location)
    if path.exists() and path.is_dir():
        msg = (
            f"location {path} is a folder; give the path of the log file (e.g. {path}/feedback.db)"
        )
        raise ValueError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _Sqlite(path, busy_timeout, synchronous)


# ---------------------------------------------------------------------- the log
class FeedbackLog:
    """What a RAG app's users asked, were shown and marked as relevant, on SQLite or PostgreSQL.

    Safe to share between threads and between processes of one app (each thread and process
    uses its own connection; SQLite runs in WAL mode with a busy timeout, PostgreSQL with
    transactions). It pickles as its settings (the unpickled object opens the same log) and
    copies as itself. Open it in each worker process rather than using it before a fork:
    a connection made before the fork is never used after it.

    Rows are only added by :meth:`log_query`, :meth:`feedback` and :meth:`import_jsonl`, and
    only removed by :meth:`purge`; tuning reads them and never consumes them.

    Args:
        location: a file path (SQLite, created with its folder if needed; ``sqlite:///path``
            too), or a ``postgresql://user:password@host:port/db`` URL (``postgres://`` and
            SQLAlchemy-style ``postgresql+psycopg://`` are accepted), which needs psycopg 3
            (``pip install 'nudge-rag[postgres]'``).
        store_text: keep the question text. ``False`` stores none (the vector and the shown
            ids are all tuning needs): for apps whose questions may hold personal data.
        table_prefix: prefix of the log's tables (``<prefix>queries``, ``<prefix>events``),
            e.g. to keep several logs in one PostgreSQL database.
        busy_timeout: SQLite: seconds a writer waits for another process's write.
        synchronous: SQLite's ``PRAGMA synchronous``. ``"NORMAL"`` (default): a committed
            event survives the app crashing or being killed, not a power cut (about 0.1 ms a
            write); ``"FULL"``: it survives a power cut too (an fsync per write, a few ms).

    Example:
        >>> log = FeedbackLog("feedback.db")                         # doctest: +SKIP
        >>> qid = log.log_query(query_vector, ["d3", "d7"], text="what is x?", store="docs")
        >>> log.feedback(qid, "d7", relevant=True)                   # a thumbs-up
        >>> pairs = log.pairs(store="docs")                          # FeedbackPairs
    """

    #: :meth:`pairs`' default ``merge_tolerance``.
    DEFAULT_MERGE_TOLERANCE = DEFAULT_MERGE_TOLERANCE

    def __init__(
        self,
        location: str | os.PathLike,
        *,
        store_text: bool = True,
        table_prefix: str = "nudge_",
        busy_timeout: float = 30.0,
        synchronous: str = "NORMAL",
    ):
        if not isinstance(table_prefix, str) or not _PREFIX.match(table_prefix):
            msg = (
                f"table_prefix must be a SQL identifier (letters, digits, _), got {table_prefix!r}"
            )
            raise ValueError(msg)
        if str(synchronous).upper() not in ("FULL", "NORMAL", "EXTRA"):
            msg = f"synchronous must be 'FULL', 'NORMAL' or 'EXTRA', got {synchronous!r}"
            raise ValueError(msg)
        if not (isinstance(busy_timeout, (int, float)) and busy_timeout > 0):
            msg = f"busy_timeout must be a positive number of seconds, got {busy_timeout!r}"
            raise ValueError(msg)
        self.store_text = bool(store_text)
        self.table_prefix = table_prefix
        self._queries = f"{table_prefix}queries"
        self._events = f"{table_prefix}events"
        self._db = _open_backend(location, float(busy_timeout), str(synchronous).upper())
        self._location = location
        self._options = {
            "store_text": self.store_text,
            "table_prefix": table_prefix,
            "busy_timeout": float(busy_timeout),
            "synchronous": str(synchronous).upper(),
        }
        try:
            self._create_schema()
        except sqlite3.DatabaseError as err:  # e.g. "file is not a database"
            self._db.close()
            msg = (
                f"location {location}: cannot use it as a SQLite feedback log ({err}); give a "
                "new file name, or the log file an earlier FeedbackLog created"
            )
            raise ValueError(msg) from err

    @property
    def kind(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._db.kind

    def __repr__(self) -> str:
        return f"FeedbackLog({self._db!r}, kind={self.kind!r}, store_text={self.store_text})"

    def __enter__(self) -> FeedbackLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection this object opened (in this process)."""
        self._db.close()

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles as its settings: unpickling opens the same log (new connections)."""
        return (_reopen, (self._location, self._options))

    def __copy__(self) -> FeedbackLog:
        return self  # a handle on one shared log, like a connection pool

    def __deepcopy__(self, memo: dict[int, Any]) -> FeedbackLog:
        return self

    # ------------------------------------------------------------------ schema
    def _create_schema(self) -> None:
        q, e, db = self._queries, self._events, self._db
        statements = [
            f"CREATE TABLE IF NOT EXISTS {q} (query_id TEXT PRIMARY KEY, created {db.real} "
            f"NOT NULL, store TEXT NOT NULL, text TEXT, dim INTEGER NOT NULL, vector {db.blob} "
            "NOT NULL, shown TEXT NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {q}_created ON {q} (created)",
            f"CREATE INDEX IF NOT EXISTS {q}_store ON {q} (store, created)",
            f"CREATE TABLE IF NOT EXISTS {e} (event_id TEXT PRIMARY KEY, query_id TEXT NOT NULL "
            f"REFERENCES {q} (query_id) ON DELETE CASCADE, doc_id TEXT NOT NULL, relevant "
            f"INTEGER NOT NULL, weight {db.real} NOT NULL, created {db.real} NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {e}_query ON {e} (query_id)",
            f"CREATE INDEX IF NOT EXISTS {e}_created ON {e} (created)",
        ]
        with self._db.transaction(write=True) as cur:
            if self.kind == "postgresql":  # concurrent CREATE IF NOT EXISTS can collide
                key = int.from_bytes(hashlib.sha1(q.encode()).digest()[:8], "big", signed=True)
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            for statement in statements:
                cur.execute(statement)
            # which embedding model wrote each query vector (added to logs made before it)
            if self.kind == "postgresql":
                cur.execute(f"ALTER TABLE {q} ADD COLUMN IF NOT EXISTS embedder TEXT")
            else:
                cur.execute(f"PRAGMA table_info({q})")
                if "embedder" not in {row[1] for row in cur.fetchall()}:
                    cur.execute(f"ALTER TABLE {q} ADD COLUMN embedder TEXT")

    # ------------------------------------------------------------------ writing
    def log_query(
        self,
        vector: Any,
        shown_ids: Sequence[str],
        *,
        text: str | None = None,
        store: str = "default",
        query_id: str | None = None,
        at: float | datetime | None = None,
        embedder: str | None = None,
    ) -> str:
        """Record one query and what it showed.

        Args:
            vector: ``(dim,)`` query vector the search used (any float array-like).
            shown_ids: the document ids shown, in rank order.
            text: the question (not stored when the log has ``store_text=False``).
            store: the store or collection searched (pairs are built per store).
            query_id: the id to use (e.g. the app's request id); default: a new UUID.
            at: when (Unix seconds or a datetime); default: now.
            embedder: the identity of the model that embedded ``vector``
                (:meth:`embedder_id`; the integrations give it), so that tuning never mixes
                vectors of two models.

        Returns:
            The query id (give it to :meth:`feedback`).

        Raises:
            ValueError: a vector that is not 1-D, finite and non-empty; an empty store name;
                a query id that is already logged.
        """
        vec = _query_vector(vector)
        shown = _id_list(shown_ids, "shown_ids")
        store = _name(store, "store")
        qid = uuid.uuid4().hex if query_id is None else _name(query_id, "query_id")
        if text is not None and not isinstance(text, str):
            msg = f"text must be a string or None, got {type(text).__name__}"
            raise TypeError(msg)
        if text is not None:
            text = _storable_text(text, "text")
        if embedder is not None:
            embedder = _name(embedder, "embedder")
        row = (
            qid,
            _as_time(at, "at"),
            store,
            text if self.store_text else None,
            vec.shape[0],
            vec.tobytes(),
            json.dumps(shown),
            embedder,
        )
        with self._db.transaction(write=True) as cur:
            cur.execute(
                self._db.sql(
                    f"INSERT INTO {self._queries} (query_id, created, store, text, dim, vector, "
                    "shown, embedder) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (query_id) DO NOTHING"
                ),
                row,
            )
            if cur.rowcount != 1:
                msg = f"query_id {qid!r} is already in the feedback log; query ids must be unique"
                raise ValueError(msg)
        return qid

    def feedback(
        self,
        query_id: str,
        doc_id: str,
        relevant: bool = True,
        *,
        weight: float = 1.0,
        at: float | datetime | None = None,
    ) -> str:
        """Record that a shown document answered (or did not answer) a logged query.

        Only documents the query showed can be marked: the log checks ``doc_id`` against the
        shown ids it recorded (the store is not asked; a document deleted from the store since
        is left out, with a warning, when tuning).

        Args:
            query_id: the id :meth:`log_query` returned.
            doc_id: a document id among that query's shown ids.
            relevant: ``True`` (thumbs-up, a click) or ``False`` (thumbs-down: it cancels
                a positive for the same question and document).
            weight: how much the event counts (``> 0``; a thumbs-up is 1).
            at: when (Unix seconds or a datetime); default: now.

        Returns:
            The event id.

        Raises:
            nudge_rag.UnknownIdError: (a ``ValueError`` and ``KeyError``) the query id is not
                in the log (never logged, or purged), or the document was not shown for it.
        """
        qid = _name(query_id, "query_id")
        doc = _name(doc_id, "doc_id")
        if not isinstance(relevant, (bool, np.bool_)):
            msg = f"relevant must be True or False, got {relevant!r}"
            raise TypeError(msg)
        weight = _weight(weight)
        event_id = uuid.uuid4().hex
        created = _as_time(at, "at")
        try:
            with self._db.transaction(write=True) as cur:
                cur.execute(
                    self._db.sql(f"SELECT shown FROM {self._queries} WHERE query_id = ?"), (qid,)
                )
                found = cur.fetchone()
                _check_shown(qid, doc, None if found is None else json.loads(found[0]))
                cur.execute(
                    self._db.sql(
                        f"INSERT INTO {self._events} (event_id, query_id, doc_id, relevant, "
                        "weight, created) VALUES (?, ?, ?, ?, ?, ?)"
                    ),
                    (event_id, qid, doc, int(bool(relevant)), weight, created),
                )
        except Exception as err:
            if not _foreign_key_violation(err):
                raise
            # purge() deleted the query between the check and the insert (PostgreSQL)
            _check_shown(qid, doc, None)
        return event_id

    # ------------------------------------------------------------------ reading
    def get_query(self, query_id: str) -> LoggedQuery:
        """The logged query ``query_id``.

        Raises:
            nudge_rag.UnknownIdError: it is not in the log.
        """
        qid = _name(query_id, "query_id")
        with self._db.transaction(write=False) as cur:
            cur.execute(
                self._db.sql(
                    f"SELECT query_id, created, store, text, dim, vector, shown FROM "
                    f"{self._queries} WHERE query_id = ?"
                ),
                (qid,),
            )
            row = cur.fetchone()
        if row is None:
            _check_shown(qid, "", None)
        return _logged(row)

    def counts(self, store: str | None = None) -> LogCounts:
        """How many queries and feedback events the log holds (for one store, or all)."""
        where, params = ("", ()) if store is None else (" WHERE q.store = ?", (store,))
        with self._db.transaction(write=False) as cur:
            cur.execute(self._db.sql(f"SELECT COUNT(*) FROM {self._queries} q{where}"), params)
            n_queries = int(cur.fetchone()[0])
            cur.execute(
                self._db.sql(
                    f"SELECT COUNT(*) FROM {self._events} e JOIN {self._queries} q "
                    f"ON q.query_id = e.query_id{where}"
                ),
                params,
            )
            n_events = int(cur.fetchone()[0])
        return LogCounts(n_queries, n_events)

    def stores(self) -> list[str]:
        """The store names queries were logged against."""
        with self._db.transaction(write=False) as cur:
            cur.execute(f"SELECT DISTINCT store FROM {self._queries} ORDER BY store")
            return [r[0] for r in cur.fetchall()]

    def pairs(
        self,
        *,
        store: str | None = None,
        since: float | datetime | timedelta | None = None,
        until: float | datetime | None = None,
        min_count: float = 1.0,
        merge_tolerance: float | None = DEFAULT_MERGE_TOLERANCE,
    ) -> FeedbackPairs:
        """Training pairs from the feedback, read in one consistent snapshot.

        For each question and document the events add up: a positive adds its weight, a
        negative subtracts it (a thumbs-down cancels a thumbs-up). Logged queries whose
        unit-normalised vectors lie within ``merge_tolerance`` (L2) of each other are one
        question (repeat askers, the same FAQ): their events add up together and its
        embedding is the mean of theirs. A (question, document) pair is kept when its net
        weight is at least ``min_count``.

        Args:
            store: only queries logged against this store (``None``: every store; their
                vectors must then have one dimension).
            since: only feedback from then on: a datetime, Unix seconds, or a ``timedelta``
                (that long ago, e.g. ``timedelta(days=90)``).
            until: only feedback before then.
            min_count: the net weight a pair needs (> 0; 2 = two thumbs-up net).
            merge_tolerance: merge distance; ``0`` merges exact duplicates only, ``None``
                merges nothing. Meant for near-duplicates: the default ``1e-3`` is a cosine
                above 0.9999995; values far above 0.01 make many more rows compare.

        Returns:
            :class:`FeedbackPairs` (possibly empty).
        """
        start, end = _window_start(since), None if until is None else _as_time(until, "until")
        if not (isinstance(min_count, (int, float)) and min_count > 0):
            msg = f"min_count must be a positive number, got {min_count!r}"
            raise ValueError(msg)
        if merge_tolerance is not None and not (
            isinstance(merge_tolerance, (int, float)) and merge_tolerance >= 0
        ):
            msg = f"merge_tolerance must be a number >= 0 or None, got {merge_tolerance!r}"
            raise ValueError(msg)
        conditions, params = [], []
        if store is not None:
            conditions.append("q.store = ?")
            params.append(store)
        if start is not None:
            conditions.append("e.created >= ?")
            params.append(start)
        if end is not None:
            conditions.append("e.created < ?")
            params.append(end)
        where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
        join = f"FROM {self._events} e JOIN {self._queries} q ON q.query_id = e.query_id{where}"
        with self._db.transaction(write=False) as cur:
            cur.execute(
                self._db.sql(f"SELECT e.query_id, e.doc_id, e.relevant, e.weight {join}"), params
            )
            events = cur.fetchall()
            cur.execute(
                self._db.sql(
                    f"SELECT q.query_id, q.text, q.dim, q.vector FROM {self._queries} q WHERE "
                    f"q.query_id IN (SELECT e.query_id {join}) ORDER BY q.created, q.query_id"
                ),
                params,
            )
            queries = cur.fetchall()
        return _build_pairs(events, queries, min_count, merge_tolerance)

    # ------------------------------------------------------------------ embedders
    #: The text every integration embeds to fingerprint its model (:meth:`embedder_id`).
    PROBE_TEXT = "nudge-rag embedder probe: which model wrote these query vectors?"

    @staticmethod
    def embedder_id(name: str, probe_vector: Any) -> str:
        """The identity of an embedding model: ``"<name>#<fingerprint>"``.

        The fingerprint is a hash of the model's embedding of :attr:`PROBE_TEXT` (unit
        length, rounded to 3 decimals so that the last bits of a GPU or a BLAS do not count),
        so two models with one name but other weights differ, and one model has one identity.

        Args:
            name: a readable name (class and model name).
            probe_vector: the model's embedding of :attr:`PROBE_TEXT`.
        """
        vec = _query_vector(probe_vector).astype(np.float64)
        norm = float(np.linalg.norm(vec))
        rounded = np.round(vec / (norm if norm > 0 else 1.0), 3) + 0.0  # no negative zero
        digest = hashlib.sha256(rounded.astype("<f8").tobytes()).hexdigest()[:12]
        return f"{_name(str(name), 'name')}#{digest}"

    def embedders(
        self, store: str | None = None, *, since: Any = None, until: Any = None
    ) -> dict[str | None, int]:
        """How many queries with feedback each embedding model wrote (``None``: not recorded).

        Args:
            store: only this store's queries.
            since: only queries with feedback from then on (as :meth:`pairs`).
            until: only queries with feedback before then.
        """
        start, end = _window_start(since), None if until is None else _as_time(until, "until")
        conditions, params = [], []
        for clause, value in (("q.store = ?", store), ("e.created >= ?", start),
                              ("e.created < ?", end)):  # fmt: skip
            if value is not None:
                conditions.append(clause)
                params.append(value)
        where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
        with self._db.transaction(write=False) as cur:
            cur.execute(
                self._db.sql(
                    f"SELECT q.embedder, COUNT(DISTINCT q.query_id) FROM {self._events} e JOIN "
                    f"{self._queries} q ON q.query_id = e.query_id{where} GROUP BY q.embedder"
                ),
                params,
            )
            return {row[0]: int(row[1]) for row in cur.fetchall()}

    # ------------------------------------------------------------------ export / import
    def export_jsonl(
        self, destination: str | os.PathLike | IO[str], *, store: str | None = None
    ) -> LogCounts:
        """Write the log as JSON lines: every query, then every feedback event, oldest first.

        Query lines: ``{"kind": "query", "query_id", "time", "store", "text", "vector",
        "shown_ids"}``; event lines: ``{"kind": "feedback", "event_id", "query_id", "doc_id",
        "relevant", "weight", "time"}``.

        Args:
            destination: a file path (written atomically) or an open text file.
            store: only this store's queries and their events.

        Returns:
            How many queries and events were written.
        """
        if isinstance(destination, (str, os.PathLike)):
            path = Path(destination)
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "w", encoding="utf-8") as fh:
                counts = self.export_jsonl(fh, store=store)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            return counts
        where, params = ("", ()) if store is None else (" WHERE q.store = ?", (store,))
        n_queries = n_events = 0
        with self._db.transaction(write=False) as cur:
            cur.execute(
                self._db.sql(
                    f"SELECT q.query_id, q.created, q.store, q.text, q.dim, q.vector, q.shown, "
                    f"q.embedder FROM {self._queries} q{where} ORDER BY q.created, q.query_id"
                ),
                params,
            )
            while rows := cur.fetchmany(1000):
                for full in rows:
                    got, embedder = _logged(full[:7]), full[7]
                    line = {
                        "kind": "query",
                        "query_id": got.query_id,
                        "time": got.time,
                        "store": got.store,
                        "text": got.text,
                        "vector": got.vector.tolist(),
                        "shown_ids": got.shown_ids,
                    }
                    if embedder is not None:
                        line["embedder"] = embedder
                    destination.write(json.dumps(line) + "\n")
                n_queries += len(rows)
            cur.execute(
                self._db.sql(
                    f"SELECT e.event_id, e.query_id, e.doc_id, e.relevant, e.weight, e.created "
                    f"FROM {self._events} e JOIN {self._queries} q ON q.query_id = e.query_id"
                    f"{where} ORDER BY e.created, e.event_id"
                ),
                params,
            )
            while rows := cur.fetchmany(1000):
                for event_id, qid, doc, relevant, weight, created in rows:
                    line = {
                        "kind": "feedback",
                        "event_id": event_id,
                        "query_id": qid,
                        "doc_id": doc,
                        "relevant": bool(relevant),
                        "weight": float(weight),
                        "time": float(created),
                    }
                    destination.write(json.dumps(line) + "\n")
                n_events += len(rows)
        return LogCounts(n_queries, n_events)

    def import_jsonl(self, source: str | os.PathLike | IO[str]) -> LogCounts:
        """Add the queries and events of a JSON-lines export (all of them, or none).

        Rows already in the log (same query or event id) are skipped, so importing a file
        twice adds nothing. Texts are dropped when this log has ``store_text=False``.

        Returns:
            How many queries and events were added.

        Raises:
            ValueError: a malformed line, or one that is not UTF-8 text (file and line
                named); nothing was added.
            nudge_rag.UnknownIdError: an event for a query that is neither in the file nor in
                the log, or for a document that query did not show (checked against the shown
                ids the log holds when the query was already there); ``file:line`` is named
                and nothing was added.
        """
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as fh:
                return self._import_lines(fh, str(source))
        return self._import_lines(source, str(getattr(source, "name", "<stream>")))

    def _import_lines(self, source: IO[Any], where: str) -> LogCounts:
        queries: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        lines_of: dict[str, int] = {}  # event id -> line number, for messages
        for number, raw in enumerate(source, start=1):
            if isinstance(raw, bytes):
                try:
                    raw = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    msg = (
                        f"{where}, line {number}: not UTF-8 text ({err.reason} at byte "
                        f"{err.start}); nothing was added"
                    )
                    raise ValueError(msg) from None
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                if not isinstance(line, dict):
                    msg = f"expected a JSON object, got {type(line).__name__}"
                    raise TypeError(msg)
                kind = line["kind"]
                if kind == "query":
                    vec = _query_vector(line["vector"])
                    shown = _id_list(line["shown_ids"], "shown_ids")
                    qid = _name(line["query_id"], "query_id")
                    text = line.get("text")
                    if text is not None:
                        if not isinstance(text, str):
                            msg = f"text must be a string or null, got {type(text).__name__}"
                            raise TypeError(msg)
                        text = _storable_text(text, "text")
                    embedder = line.get("embedder")
                    queries.append(
                        (
                            qid,
                            _as_time(line["time"], "time"),
                            _name(line["store"], "store"),
                            text if self.store_text else None,
                            vec.shape[0],
                            vec.tobytes(),
                            json.dumps(shown),
                            None if embedder is None else _name(embedder, "embedder"),
                        )
                    )
                elif kind == "feedback":
                    relevant = line["relevant"]
                    if not isinstance(relevant, bool):
                        msg = f"relevant must be true or false, got {relevant!r}"
                        raise TypeError(msg)
                    events.append(
                        (
                            _name(line["event_id"], "event_id"),
                            _name(line["query_id"], "query_id"),
                            _name(line["doc_id"], "doc_id"),
                            int(relevant),
                            _weight(line.get("weight", 1.0)),
                            _as_time(line["time"], "time"),
                        )
                    )
                    lines_of[events[-1][0]] = number
                else:
                    msg = f"unknown kind {kind!r} (expected 'query' or 'feedback')"
                    raise ValueError(msg)
            except (KeyError, TypeError, ValueError) as err:
                what = f"missing field {err}" if type(err) is KeyError else str(err)
                msg = f"{where}, line {number}: malformed JSON-lines import line: {what}"
                raise ValueError(msg) from err
        added_q = added_e = 0
        with self._db.transaction(write=True) as cur:
            for row in queries:
                cur.execute(
                    self._db.sql(
                        f"INSERT INTO {self._queries} (query_id, created, store, text, dim, "
                        "vector, shown, embedder) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (query_id) DO NOTHING"
                    ),
                    row,
                )
                added_q += max(cur.rowcount, 0)
            # The shown ids the log holds (a query line that reuses a stored query id was
            # skipped above: the stored row, not the file's, says what was shown).
            shown_of: dict[str, list[str]] = {}
            asked = sorted({e[1] for e in events})
            for s in range(0, len(asked), _CHUNK):
                chunk = asked[s : s + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                cur.execute(
                    self._db.sql(
                        f"SELECT query_id, shown FROM {self._queries} WHERE query_id IN ({marks})"
                    ),
                    chunk,
                )
                shown_of.update((qid, json.loads(shown)) for qid, shown in cur.fetchall())
            for row in events:
                try:
                    _check_shown(row[1], row[2], shown_of.get(row[1]))
                except UnknownIdError as err:
                    msg = f"{where}, line {lines_of[row[0]]}: {err}; nothing was added"
                    raise UnknownIdError(msg, err.ids) from None
                cur.execute(
                    self._db.sql(
                        f"INSERT INTO {self._events} (event_id, query_id, doc_id, relevant, "
                        "weight, created) VALUES (?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (event_id) DO NOTHING"
                    ),
                    row,
                )
                added_e += max(cur.rowcount, 0)
        return LogCounts(added_q, added_e)

    # ------------------------------------------------------------------ privacy
    def purge(
        self,
        *,
        older_than: timedelta | float | None = None,
        before: float | datetime | None = None,
        query_ids: Iterable[str] | None = None,
        store: str | None = None,
    ) -> LogCounts:
        """Delete queries, with all their feedback, by age or by id (e.g. a user's request).

        Give exactly one of ``older_than``, ``before`` and ``query_ids``. Feedback sent later
        for a purged query is refused (:class:`~nudge_rag.UnknownIdError`).

        Args:
            older_than: delete queries logged longer ago than this (a ``timedelta`` or
                seconds).
            before: delete queries logged before this time (Unix seconds or a datetime).
            query_ids: delete these queries (ids not in the log are ignored).
            store: only queries of this store.

        Returns:
            How many queries and feedback events were deleted.

        Raises:
            ValueError: not exactly one of the three; a negative or non-finite
                ``older_than``.
        """
        given = [n for n, v in (("older_than", older_than), ("before", before),
                                ("query_ids", query_ids)) if v is not None]  # fmt: skip
        if len(given) != 1:
            msg = f"give exactly one of older_than, before or query_ids; got {given or 'none'}"
            raise ValueError(msg)
        scope, scope_params = ("", []) if store is None else (" AND store = ?", [store])
        batches: list[tuple[str, list[Any]]] = []
        if query_ids is not None:
            if isinstance(query_ids, str):
                msg = "query_ids must be a list of ids, not one string"
                raise TypeError(msg)
            ids = sorted({_name(i, "query_ids") for i in query_ids})
            for s in range(0, len(ids), _CHUNK):
                chunk = ids[s : s + _CHUNK]
                batches.append((f"query_id IN ({', '.join('?' * len(chunk))})", chunk))
        else:
            if older_than is not None:
                seconds = (
                    older_than.total_seconds()
                    if isinstance(older_than, timedelta)
                    else _as_time(older_than, "older_than")
                )
                if not (math.isfinite(seconds) and seconds >= 0):
                    msg = (
                        f"older_than must be an age >= 0 (a timedelta or seconds), got "
                        f"{older_than!r}: a negative age would delete what was just logged"
                    )
                    raise ValueError(msg)
                cutoff = time.time() - seconds
            else:
                cutoff = _as_time(before, "before")
            batches.append(("created < ?", [cutoff]))
        n_queries = n_events = 0
        with self._db.transaction(write=True) as cur:
            for condition, params in batches:
                chosen = f"SELECT query_id FROM {self._queries} WHERE {condition}{scope}"
                cur.execute(
                    self._db.sql(f"DELETE FROM {self._events} WHERE query_id IN ({chosen})"),
                    params + scope_params,
                )
                n_events += max(cur.rowcount, 0)
                cur.execute(
                    self._db.sql(f"DELETE FROM {self._queries} WHERE {condition}{scope}"),
                    params + scope_params,
                )
                n_queries += max(cur.rowcount, 0)
        logger.info("purged %d queries and %d feedback events", n_queries, n_events)
        return LogCounts(n_queries, n_events)

    # ------------------------------------------------------------------ tuning
    def tune_lock(self, store: str = "default") -> contextlib.AbstractContextManager[None]:
        """A lock that one re-tune of ``store`` from this log holds while it runs.

        Taken across processes (and machines, on PostgreSQL); a second taker gets
        :class:`TuneInProgressError` at once rather than waiting.
        """
        return self._db.tune_lock(f"{self.table_prefix}:{store}")


def _reopen(location: Any, options: dict[str, Any]) -> FeedbackLog:
    return FeedbackLog(location, **options)


# ---------------------------------------------------------------------- checks
def _name(value: Any, name: str) -> str:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        msg = f"{name} must be a non-empty string, got {value!r}"
        raise ValueError(msg) if isinstance(value, str) else TypeError(msg)
    return _storable_text(value, name)


def _storable_text(value: str, name: str) -> str:
    """``value`` if both back ends store it exactly: no NUL, no lone surrogate."""
    if "\x00" in value:
        msg = (
            f"{name} {value!r} contains a NUL character, which PostgreSQL cannot store in text "
            "(and SQLite would not give back the same way); remove it"
        )
        raise ValueError(msg)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        msg = f"{name} {value!r} contains a lone surrogate: not valid Unicode text, not stored"
        raise ValueError(msg) from None
    return value


def _id_list(ids: Any, name: str) -> list[str]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        msg = f"{name} must be a list of document ids, got {type(ids).__name__}"
        raise TypeError(msg)
    return [_name(i, name) for i in ids]


def _weight(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.floating, np.integer))
        or not math.isfinite(float(value))
        or value <= 0
    ):
        msg = f"weight must be a finite number > 0, got {value!r}"
        raise ValueError(msg)
    return float(value)


def _query_vector(vector: Any) -> np.ndarray:
    try:
        vec = np.asarray(vector, dtype="<f4")
    except (TypeError, ValueError) as err:
        msg = f"vector must be a 1-D array of numbers, got {type(vector).__name__} ({err})"
        raise TypeError(msg) from err
    if vec.ndim == 2 and vec.shape[0] == 1:
        vec = vec[0]
    if vec.ndim != 1 or vec.shape[0] == 0:
        msg = f"vector must be a non-empty 1-D array, got shape {vec.shape}"
        raise ValueError(msg)
    if not np.isfinite(vec).all():
        msg = "vector holds NaN or inf"
        raise ValueError(msg)
    return np.ascontiguousarray(vec)


def _foreign_key_violation(err: BaseException) -> bool:
    """Whether ``err`` is a database's foreign-key violation (the query row is gone)."""
    if type(err).__name__ == "ForeignKeyViolation":  # psycopg.errors
        return True
    return isinstance(err, sqlite3.IntegrityError) and "FOREIGN KEY" in str(err).upper()


def _check_shown(query_id: str, doc_id: str, shown: list[str] | None) -> None:
    if shown is None:
        msg = (
            f"query id {query_id!r} is not in the feedback log (never logged here, or purged); "
            "use the id log_query() returned (LangChain: metadata['nudge_query_id'])"
        )
        raise UnknownIdError(msg, [query_id])
    if doc_id not in shown:
        msg = (
            f"document {doc_id!r} was not shown for query {query_id!r} (shown: "
            f"{shown[:10]!r}{' ...' if len(shown) > 10 else ''}); only shown documents can be "
            "marked"
        )
        raise UnknownIdError(msg, [doc_id])


def _logged(row: Sequence[Any]) -> LoggedQuery:
    qid, created, store, text, dim, blob, shown = row
    vec = np.frombuffer(bytes(blob), dtype="<f4").astype(np.float32)
    if vec.shape[0] != dim:  # pragma: no cover - a damaged row
        msg = f"query {qid!r} in the feedback log has a damaged vector ({vec.shape[0]} != {dim})"
        raise ValueError(msg)
    return LoggedQuery(qid, float(created), store, text, vec, json.loads(shown))


# ---------------------------------------------------------------------- pairs
def _build_pairs(
    events: Sequence[Sequence[Any]],
    queries: Sequence[Sequence[Any]],
    min_count: float,
    merge_tolerance: float | None,
) -> FeedbackPairs:
    if not events:
        return FeedbackPairs(np.zeros((0, 0), dtype=np.float32), [], [], [], 0, 0)
    query_ids = [q[0] for q in queries]
    dims = {int(q[2]) for q in queries}
    if len(dims) > 1:
        msg = (
            f"the selected queries have vectors of {len(dims)} dimensions {sorted(dims)}: "
            "pass store= to build pairs for one store (one embedding model) at a time"
        )
        raise ValueError(msg)
    dim = dims.pop()
    vectors = np.frombuffer(b"".join(bytes(q[3]) for q in queries), dtype="<f4")
    vectors = vectors.reshape(len(queries), dim).astype(np.float32)
    group = _merge_groups(vectors, merge_tolerance)  # per query row, in first-seen order
    row_of = {qid: r for r, qid in enumerate(query_ids)}
    ev_query = np.fromiter((row_of[e[0]] for e in events), dtype=np.int64, count=len(events))
    doc_names, ev_doc = np.unique(np.asarray([str(e[1]) for e in events]), return_inverse=True)
    positive = np.fromiter((e[2] for e in events), dtype=np.int64, count=len(events)) != 0
    weights = np.fromiter((e[3] for e in events), dtype=np.float64, count=len(events))
    signed = np.where(positive, weights, -weights)
    key = group[ev_query] * len(doc_names) + ev_doc.ravel()
    keys, inverse = np.unique(key, return_inverse=True)
    net = np.bincount(inverse.ravel(), weights=signed)
    had_positive = np.bincount(inverse.ravel(), weights=(signed > 0).astype(np.float64)) > 0
    keep = net >= min_count - 1e-9
    n_cancelled = int((had_positive & ~keep).sum())
    kept = keys[keep]
    pair_group, pair_doc = kept // len(doc_names), kept % len(doc_names)
    groups = np.unique(pair_group)  # sorted = first-seen order of the groups
    n = groups.shape[0]
    if n == 0:
        return FeedbackPairs(np.zeros((0, dim), dtype=np.float32), [], [], [], len(events),
                             n_cancelled)  # fmt: skip
    # Mean vector per kept group.
    member = np.isin(group, groups)
    slot = np.searchsorted(groups, group[member])
    by_slot = np.argsort(slot, kind="stable")
    sizes = np.bincount(slot, minlength=n)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    sums = np.add.reduceat(vectors[member][by_slot].astype(np.float64), starts, axis=0)
    embeddings = (sums / sizes[:, None]).astype(np.float32)
    cuts = np.searchsorted(pair_group, groups[1:])
    answer_ids = [doc_names[part].tolist() for part in np.split(pair_doc, cuts)]
    members: list[list[str]] = [[] for _ in range(n)]
    texts: list[str | None] = [None] * n
    for r, s in zip(np.flatnonzero(member).tolist(), slot.tolist()):  # per query, not per doc
        members[s].append(query_ids[r])
        if texts[s] is None:
            texts[s] = queries[r][1]
    return FeedbackPairs(embeddings, answer_ids, texts, members, len(events), n_cancelled)


def _merge_groups(vectors: np.ndarray, tolerance: float | None) -> np.ndarray:
    """A group number per row (numbered in first-seen order): rows within ``tolerance``.

    Rows are compared as unit vectors by L2 distance; groups are single-linkage (a chain of
    close rows is one group). Exact duplicates are found by sorting; near ones among the
    distinct rows by :func:`_near_pairs`.
    """
    n = vectors.shape[0]
    if tolerance is None or n == 0:
        return np.arange(n, dtype=np.int64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    uniq, inverse = np.unique(unit, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    labels = np.arange(uniq.shape[0])
    if tolerance > 0 and uniq.shape[0] > 1:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        r, c = _near_pairs(uniq, float(tolerance))
        if r.size:
            graph = coo_matrix((np.ones(r.size), (r, c)), shape=(uniq.shape[0],) * 2)
            _, labels = connected_components(graph, directed=False)
    # Renumber the groups by the first row that belongs to each.
    _, first_row, position = np.unique(labels[inverse], return_index=True, return_inverse=True)
    rank = np.empty(first_row.shape[0], dtype=np.int64)
    rank[np.argsort(first_row, kind="stable")] = np.arange(first_row.shape[0])
    return rank[position.ravel()]


_CELL_DIMS = 3
_MIN_CELL = 1e-6  # cells of at least this size keep every coordinate within 20 bits
_PAIR_CHUNK = 1 << 20


def _near_pairs(unit: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs ``i < j`` of ``unit`` (distinct unit rows) within ``tolerance`` (L2).

    The rows are projected on three fixed orthonormal directions and put in a grid of cells
    of side ``tolerance``: a projection never lengthens a difference, so two rows within
    ``tolerance`` lie in the same or adjacent cells on every axis. Only rows in the 27
    neighbouring cells are compared, in full, in bounded chunks.
    """
    n, dim = unit.shape
    m = min(_CELL_DIMS, dim)
    basis, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((dim, m)))
    side = max(tolerance, _MIN_CELL)
    cells = np.floor((unit @ basis) / side).astype(np.int64) + (1 << 20)  # all >= 0
    bits = 63 // m

    def encode(c: np.ndarray) -> np.ndarray:
        key = np.zeros(c.shape[0], dtype=np.int64)
        for axis in range(m):
            key = (key << bits) | c[:, axis]
        return key

    order = np.argsort(encode(cells), kind="stable")
    sorted_keys = encode(cells)[order]
    rows, cols = [], []
    for offset in np.array(np.meshgrid(*[[-1, 0, 1]] * m)).reshape(m, -1).T:
        target = encode(cells + offset)
        lo = np.searchsorted(sorted_keys, target, side="left")
        count = np.searchsorted(sorted_keys, target, side="right") - lo
        total = int(count.sum())
        if total == 0:
            continue
        i = np.repeat(np.arange(n), count)
        within = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
        j = order[np.repeat(lo, count) + within]
        keep = i < j
        i, j = i[keep], j[keep]
        for s in range(0, i.size, _PAIR_CHUNK):
            a, b = i[s : s + _PAIR_CHUNK], j[s : s + _PAIR_CHUNK]
            near = np.linalg.norm(unit[a] - unit[b], axis=1) <= tolerance
            rows.append(a[near])
            cols.append(b[near])
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(rows), np.concatenate(cols)


# ---------------------------------------------------------------------- tuning
def _check_embedders(
    log: FeedbackLog, store: str | None, since: Any, until: Any, embedder: str | None
) -> None:
    """Refuse to tune with query vectors of another embedding model (or of several)."""
    counts = log.embedders(store, since=since, until=until)
    known = {k: n for k, n in counts.items() if k is not None}
    other = {k: n for k, n in known.items() if k != embedder} if embedder is not None else {}
    mixed = embedder is None and len(known) > 1
    if other or mixed:
        where = f" of store {store!r}" if store is not None else ""
        seen = ", ".join(f"{k} ({n} queries)" for k, n in sorted(known.items()))
        now = f"the store's model is now {embedder}" if embedder else "one store needs one model"
        msg = (
            f"the feedback log{where} holds query vectors written by {seen}, but {now}: "
            "vectors of two models cannot tune one store. Re-embed the logged questions with "
            "the current model (log.pairs(...).as_text_pairs(), then tuner.tune(pairs, "
            "embed=...)), or start a new log (FeedbackLog('<new file>')), or purge the old "
            "queries (log.purge(before=<when the model changed>))"
        )
        raise ValueError(msg)
    if embedder is not None and counts.get(None):
        logger.warning(
            "%d logged queries do not record which model embedded them (logged before "
            "nudge-rag recorded it); they are assumed to be from %s",
            counts[None],
            embedder,
        )


def tune_from_feedback(
    tuner: Any,
    log: FeedbackLog,
    *,
    store: str | None = None,
    since: float | datetime | timedelta | None = None,
    until: float | datetime | None = None,
    min_count: float = 1.0,
    merge_tolerance: float | None = DEFAULT_MERGE_TOLERANCE,
    resume: bool = True,
    embedder: str | None = None,
) -> Any:
    """Re-tune a store from the feedback in ``log``, from its original vectors.

    The pairs (:meth:`FeedbackLog.pairs`) go to the one tuning flow,
    :meth:`nudge_rag.StoreTuner.tune_embedded`: no validation set, so gamma is chosen by the
    solver's default (cross-validated on the pairs), the originals are saved before the first
    write, and the store ends as *originals + this fit's changes* (never compounding on tuned
    vectors). The log's tune lock is held throughout, so two overlapping runs (two cron jobs)
    never write at once; queries and feedback keep being logged meanwhile and are used by the
    next run.

    Args:
        tuner: the :class:`~nudge_rag.StoreTuner` over the store.
        log: the feedback log.
        store: the store name the queries were logged with (``None``: every query).
        since: only feedback from then on (see :meth:`FeedbackLog.pairs`).
        until: only feedback before then.
        min_count: the net weight a pair needs.
        merge_tolerance: the distance within which questions are merged.
        resume: first finish a write-back an earlier run left pending (killed mid-write);
            ``False`` raises :class:`~nudge_rag.WriteBackError` instead.
        embedder: the identity (:meth:`FeedbackLog.embedder_id`) of the model the store's
            documents are embedded with now. Queries logged by another model are refused
            (their vectors live in another space); ``None`` refuses only a mix of models.

    Returns:
        The :class:`~nudge_rag.TuneResult`; its ``feedback_pairs`` attribute holds the pairs.

    Raises:
        TuneInProgressError: another re-tune of this store holds the lock.
        ValueError: no positive feedback to learn from (in the window).
        nudge_rag.WriteBackError: a pending write-back and ``resume=False``.
    """
    _check_embedders(log, store, since, until, embedder)
    lock_key = store if store is not None else "*"
    with log.tune_lock(lock_key):
        with tuner.writeback.locked("feedback"):  # a plan being written now is not pending
            pending = tuner.writeback.has_pending
        if pending:
            if not resume:
                from nudge_rag._writeback import WriteBackError

                msg = (
                    "an interrupted write-back is pending for this store: pass resume=True, or "
                    "call resume() / restore() first"
                )
                raise WriteBackError(msg)
            logger.warning("finishing a write-back an earlier run left pending, then re-tuning")
            tuner.resume()
        pairs = log.pairs(
            store=store,
            since=since,
            until=until,
            min_count=min_count,
            merge_tolerance=merge_tolerance,
        )
        known = set(tuner.store.list_ids())
        gone = sorted({d for ids in pairs.answer_ids for d in ids} - known)
        if gone:
            logger.warning(
                "%d document(s) with feedback are no longer in the store %r and are left out, "
                "e.g. %s",
                len(gone),
                tuner.store.name,
                gone[:_N_SHOWN],
            )
            keep_rows, answers = [], []
            for row, ids in enumerate(pairs.answer_ids):
                present = [d for d in ids if d in known]
                if present:
                    keep_rows.append(row)
                    answers.append(present)
            pairs = FeedbackPairs(
                pairs.embeddings[np.asarray(keep_rows, dtype=np.int64)],
                answers,
                [pairs.texts[r] for r in keep_rows],
                [pairs.query_ids[r] for r in keep_rows],
                pairs.n_events,
                pairs.n_cancelled,
            )
        if not len(pairs):
            where = "" if store is None else f" for store {store!r}"
            msg = (
                f"no positive feedback in the log{where} to learn from ({pairs.n_events} events "
                "read; check store=, since=, until= and min_count=)"
            )
            raise ValueError(msg)
        logger.info(
            "re-tuning from %d feedback pairs on %d questions (%d events read, %d cancelled)",
            pairs.n_pairs,
            len(pairs),
            pairs.n_events,
            pairs.n_cancelled,
        )
        result = tuner.tune_embedded(pairs.embeddings, pairs.answer_ids)
    result.feedback_pairs = pairs
    return result
