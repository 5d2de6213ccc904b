"""LanceDB: the vector column of a table in a local LanceDB folder (or object storage).

Reads with a streamed scan of the id column and ``where("id IN (...)")`` for vectors, writes
with ``merge_insert(id).when_matched_update_all()`` of the id and vector columns only (the
other columns stay), searches with ``table.search``. ``lancedb`` is imported only by
:meth:`LanceDBBackend.from_uri`; ``pyarrow`` (a LanceDB dependency) when a table is used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nudge_rag._errors import UnknownIdError
from nudge_rag._store import DISTANCES, BaseEmbeddingStore
from nudge_rag.backends._common import STATE_FOLDER, as_rows, to_cosine, unknown_ids
from nudge_rag.backends._spec import Scheme, StoreSpec, Wrapper
from nudge_rag.backends._uri import (
    OpenedStore,
    OpenOptions,
    StoreURIError,
    choose,
    existing_path,
    first_line,
    need,
)

logger = logging.getLogger(__name__)

__all__ = ["LanceDBBackend"]

_LANCE_DISTANCES = {"cosine": "cosine", "dot": "dot", "l2": "l2"}
_SEARCH_BATCH = 64  # query vectors per search call
_LOCAL_SCHEMES = ("", "file")


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class LanceDBBackend(BaseEmbeddingStore):
    """:class:`~nudge_rag.SearchableEmbeddingStore` over the vector column of a LanceDB table.

    ``distance`` is what a search of the table ranks by: the distance type of the vector
    column's ANN index when it has one (``create_index(..., distance_type=...)``), otherwise
    ``"l2"``, LanceDB's default for flat (exact) search. The wrappers do not change that:
    LangChain's ``LanceDB(distance="cosine")`` only picks the function that turns distances
    into relevance scores, and LlamaIndex's ``LanceDBVectorStore`` has no metric setting, so a
    table without an index ranks by l2 in both. NUDGE-N is then accepted when every stored
    vector is unit-norm (l2 ranks like cosine), and NUDGE-M is refused: it needs a table whose
    searches rank by dot product (an index with ``distance_type="dot"``, or ``distance="dot"``
    here when every search sets ``.distance_type("dot")`` itself, e.g. LangChain's
    ``search_kwargs={"metrics": "dot"}``).

    Writing. Each batch is one ``merge_insert`` on the id column with only the id and vector
    columns: text, metadata and any other column stay as they are. Every write adds a table
    version (LanceDB keeps history): the tuned vectors are the newest version, and
    :meth:`~nudge_rag.WriteBack.restore` writes the originals back as a further version, so
    the older versions still hold the tuned vectors (and the tuned versions the originals)
    until you clean them up (``table.optimize(cleanup_older_than=...)`` or
    ``table.cleanup_old_versions()``). ``table.checkout(v)`` / ``table.restore(v)`` to a
    version before tuning is an alternative undo, but it also rolls back every other change
    made since (documents added, deleted or edited), which is why nudge-rag restores by
    writing the saved originals. A merge-insert rewrites the updated rows into new fragments
    (with deletion files for the old ones): after tuning, ``table.optimize()`` compacts them
    and brings an ANN index up to date (until then the updated rows are searched by a flat
    scan next to the index, so results stay correct).

    Searching (:meth:`nearest`): ``table.search`` with the backend's distance; exact (a flat
    scan) unless the column has an ANN index, then approximate with ``nprobes`` /
    ``refine_factor`` from ``search_params``. Scores become cosine similarity (l2 is LanceDB's
    squared distance, cosine ``1 - cos``, dot ``1 - dot``).

    Originals live next to the table: ``<LanceDB folder>/nudge_state/<table>``. A table on
    object storage or LanceDB Cloud is remote (:attr:`is_remote`): pass ``state_dir``.

    Args:
        table: a ``lancedb`` table (``LanceDB.get_table()`` in LangChain,
            ``LanceDBVectorStore.table`` in LlamaIndex).
        vector_column: the vector column.
        id_column: the column holding the ids (unique per row).
        distance: override what searches rank by (``"cosine"``, ``"dot"`` or ``"l2"``); only
            for applications whose every search sets that distance type itself.
        search_params: ``{"nprobes": int, "refine_factor": int}`` for :meth:`nearest` on an
            indexed column.
        page_size: ids per scan batch and per ``IN (...)`` lookup.

    Raises:
        ValueError: no such column, a column that is not a float vector, or an index with
            another distance type (hamming).
    """

    def __init__(
        self,
        table: Any,
        *,
        vector_column: str = "vector",
        id_column: str = "id",
        distance: str | None = None,
        search_params: dict[str, Any] | None = None,
        page_size: int = 1000,
    ):
        import pyarrow as pa

        self.table = table
        self.vector_column = str(vector_column)
        self.id_column = str(id_column)
        self.page_size = int(page_size)
        self.search_params = {k: v for k, v in (search_params or {}).items() if v is not None}
        schema = table.schema
        names = list(schema.names)
        for column, what in ((self.vector_column, "vector_column"), (self.id_column, "id_column")):
            if column not in names:
                msg = (
                    f"LanceDB table {self.name!r} has no column {column!r} ({what}); it has {names}"
                )
                raise ValueError(msg)
        vector_type = schema.field(self.vector_column).type
        value_type = getattr(vector_type, "value_type", None)
        if not (
            (pa.types.is_fixed_size_list(vector_type) or pa.types.is_list(vector_type))
            and value_type is not None
            and pa.types.is_floating(value_type)
        ):
            msg = (
                f"LanceDB column {self.vector_column!r} of {self.name!r} has type {vector_type}; "
                "NUDGE tunes float vector columns (fixed_size_list<float>)"
            )
            raise ValueError(msg)
        self._vector_type = vector_type
        self._id_type = schema.field(self.id_column).type
        self.dim = int(getattr(vector_type, "list_size", -1))
        self.index_name = self._vector_index()
        if distance is not None:
            if distance not in DISTANCES:
                msg = f"distance must be one of {DISTANCES}, got {distance!r}"
                raise ValueError(msg)
            self.distance = distance
        else:
            self.distance = self._read_distance()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_uri(cls, uri: str | os.PathLike, table_name: str, **kwargs: Any) -> LanceDBBackend:
        """Open a table without a framework.

        Args:
            uri: the LanceDB folder (or an object-storage uri).
            table_name: the table.
            **kwargs: passed to :class:`LanceDBBackend` (``vector_column``, ``id_column``, ...).
        """
        try:
            import lancedb
        except ImportError as err:  # pragma: no cover - depends on the environment
            msg = "LanceDB needs lancedb: pip install 'nudge-rag[lancedb]'"
            raise ImportError(msg) from err
        connection = lancedb.connect(os.fspath(uri))
        return cls(connection.open_table(table_name), **kwargs)

    def _vector_index(self) -> str | None:
        try:
            indices = self.table.list_indices()
        except Exception:  # noqa: BLE001 - tables without index listing
            return None
        for index in indices:
            columns = list(getattr(index, "columns", []) or [])
            kind = str(getattr(index, "index_type", "")).lower()
            if columns == [self.vector_column] and (kind.startswith("ivf") or "hnsw" in kind):
                return str(index.name)
        return None

    def _read_distance(self) -> str:
        if self.index_name is None:
            return "l2"  # LanceDB's flat search default
        stats = self.table.index_stats(self.index_name)
        kind = str(getattr(stats, "distance_type", "l2") or "l2").lower()
        if kind not in _LANCE_DISTANCES:
            msg = (
                f"LanceDB index {self.index_name!r} on {self.vector_column!r} uses distance "
                f"{kind}; NUDGE supports cosine, dot and l2 (recreate the index with one)"
            )
            raise ValueError(msg)
        return _LANCE_DISTANCES[kind]

    # ------------------------------------------------------------------ protocol
    @property
    def name(self) -> str:
        """The table's name."""
        return str(getattr(self.table, "name", "lancedb-table"))

    def _uri(self) -> str:
        return str(getattr(self.table, "uri", "") or "")

    @property
    def is_remote(self) -> bool:
        """Whether the table lives on object storage or LanceDB Cloud, not in a local folder."""
        if type(self.table).__name__ == "RemoteTable":
            return True
        scheme, sep, _ = self._uri().partition("://")
        return bool(sep) and scheme not in _LOCAL_SCHEMES

    def default_state_dir(self) -> Path | None:
        """``<LanceDB folder>/nudge_state/<table>`` for a local table, else ``None``."""
        uri = self._uri()
        if self.is_remote or not uri:
            return None
        path = Path(uri.removeprefix("file://"))
        return path.parent / STATE_FOLDER / self.name

    def _latest(self) -> None:
        """Read the table's latest version: another handle (or process) may have written.

        A LanceDB table handle keeps the version it was opened at; without this, a backend
        opened before a fit would go on reading the old vectors.
        """
        checkout = getattr(self.table, "checkout_latest", None)
        if callable(checkout):
            checkout()

    def count(self) -> int:
        """Number of rows."""
        self._latest()
        return int(self.table.count_rows())

    def list_ids(self) -> list[str]:
        """All ids as text, scanned ``page_size`` rows at a time, in storage order."""
        self._latest()
        reader = self.table.search().select([self.id_column]).limit(None).to_batches(self.page_size)
        ids: list[str] = []
        for batch in reader:
            ids.extend(str(i) for i in batch.column(self.id_column).to_pylist())
        return ids

    def _where(self, ids: Sequence[str]) -> str:
        if self._is_integer_id():
            values = ", ".join(str(int(i)) for i in ids)
        else:
            values = ", ".join(_quoted(str(i)) for i in ids)
        return f"`{self.id_column}` IN ({values})"

    def _is_integer_id(self) -> bool:
        import pyarrow as pa

        return bool(pa.types.is_integer(self._id_type))

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``ids``, ``(len(ids), dim)`` float32, in the order asked.

        Raises:
            KeyError: ids the table does not hold.
        """
        ids = [str(i) for i in ids]
        if not ids:
            return np.zeros((0, max(self.dim, 0)), dtype=np.float32)
        self._latest()
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(ids), self.page_size):
            block = ids[start : start + self.page_size]
            try:
                where = self._where(block)
            except ValueError as err:  # a non-integer id for an integer column
                raise unknown_ids(block, (), f"LanceDB table {self.name!r}") from err
            got = (
                self.table.search()
                .where(where)
                .select([self.id_column, self.vector_column])
                .limit(None)
                .to_arrow()
            )
            if got.num_rows:
                matrix = self._matrix(got.column(self.vector_column))
                found.update(zip((str(i) for i in got.column(self.id_column).to_pylist()), matrix))
        if len(found) != len(set(ids)):
            raise unknown_ids(ids, found, f"LanceDB table {self.name!r}")
        return as_rows(ids, np.stack([found[i] for i in ids]))

    def _matrix(self, column: Any) -> np.ndarray:
        import pyarrow as pa

        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if column.null_count:
            msg = f"LanceDB column {self.vector_column!r} of {self.name!r} has empty vectors"
            raise ValueError(msg)
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        return values.reshape(len(column), -1)

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """One ``merge_insert`` of the id and vector columns; other columns stay.

        Raises:
            UnknownIdError: ids the table does not hold (the others are written).
            ValueError: vectors of another dimension.
        """
        import pyarrow as pa

        ids = [str(i) for i in ids]
        matrix = as_rows(ids, vectors)
        if not ids:
            return
        if self.dim > 0 and matrix.shape[1] != self.dim:
            msg = (
                f"vectors have {matrix.shape[1]} dimensions, but LanceDB column "
                f"{self.vector_column!r} holds {self.dim}"
            )
            raise ValueError(msg)
        flat = pa.array(np.ascontiguousarray(matrix).ravel(), type=pa.float32())
        vector_array = pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])
        if vector_array.type != self._vector_type:
            vector_array = vector_array.cast(self._vector_type)
        keys = [int(i) for i in ids] if self._is_integer_id() else ids
        data = pa.table(
            {
                self.id_column: pa.array(keys).cast(self._id_type),
                self.vector_column: vector_array,
            }
        )
        result = self.table.merge_insert(self.id_column).when_matched_update_all().execute(data)
        updated = getattr(result, "num_updated_rows", None)
        if updated is not None and int(updated) < len(ids):
            self.get_vectors(ids)  # raises the error naming the missing ids
            msg = (
                f"LanceDB table {self.name!r}: {len(ids) - int(updated)} of {len(ids)} ids were "
                "not found, so their vectors were not written"
            )
            raise UnknownIdError(msg)

    def nearest(self, vectors: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """The table's own search: ids and cosine similarity per query row."""
        vectors = np.asarray(vectors, dtype=np.float32)
        out = np.full((vectors.shape[0], int(k)), -np.inf, dtype=np.float32)
        ids: list[list[str]] = [[] for _ in range(vectors.shape[0])]
        for start in range(0, vectors.shape[0], _SEARCH_BATCH):
            block = vectors[start : start + _SEARCH_BATCH]
            query = (
                self.table.search(list(block), vector_column_name=self.vector_column)
                .distance_type(self.distance)
                .limit(int(k))
                .select([self.id_column, "_distance"])
            )
            if self.index_name is not None:
                if "nprobes" in self.search_params:
                    query = query.nprobes(int(self.search_params["nprobes"]))
                if "refine_factor" in self.search_params:
                    query = query.refine_factor(int(self.search_params["refine_factor"]))
            got = query.to_arrow()
            if got.num_rows == 0:
                continue
            columns = got.column_names
            if "query_index" in columns:
                which = np.asarray(got.column("query_index").to_numpy(), dtype=np.int64)
            else:  # a single query vector
                which = np.zeros(got.num_rows, dtype=np.int64)
            distances = np.asarray(got.column("_distance").to_numpy(), dtype=np.float32)
            kind = "l2" if self.distance == "l2" else "cosine"  # dot distance is 1 - dot too
            scores = to_cosine(distances, kind, "distance")
            found = [str(i) for i in got.column(self.id_column).to_pylist()]
            # Rows come grouped by query, best first within each.
            order = np.argsort(which, kind="stable")
            for n in order:
                q = start + int(which[n])
                if len(ids[q]) < int(k):
                    out[q, len(ids[q])] = scores[n]
                    ids[q].append(found[n])
        return ids, out


def from_langchain(vectorstore: Any) -> LanceDBBackend:
    """Registry factory for ``langchain_community.vectorstores.LanceDB`` (its current table)."""
    try:
        table = vectorstore.get_table()
    except ValueError as err:
        table, cause = None, err
    else:
        cause = None
    if table is None:
        msg = (
            "this LangChain LanceDB store has no table yet (or it cannot be opened): add "
            "documents before tuning"
        )
        raise ValueError(msg) from cause
    return LanceDBBackend(
        table,
        vector_column=str(getattr(vectorstore, "_vector_key", "vector")),
        id_column=str(getattr(vectorstore, "_id_key", "id")),
    )


def from_llama_index(vector_store: Any) -> LanceDBBackend:
    """Registry factory for LlamaIndex's ``LanceDBVectorStore`` (``table``; ids in ``"id"``)."""
    table = getattr(vector_store, "_table", None)
    if table is None:
        msg = (
            "this LanceDBVectorStore has no table yet: add nodes (index.insert_nodes, "
            "VectorStoreIndex(nodes, storage_context=...)) before tuning"
        )
        raise ValueError(msg)
    return LanceDBBackend(
        table,
        vector_column=str(getattr(vector_store, "vector_column_name", "vector")),
        id_column="id",
        search_params={
            "nprobes": getattr(vector_store, "nprobes", None),
            "refine_factor": getattr(vector_store, "refine_factor", None),
        },
    )


def langchain_result_ids(vectorstore: Any) -> None:
    """Wrap a langchain-community ``LanceDB``'s ``results_to_docs`` to set ``Document.id``.

    That wrapper builds its Documents from the text and metadata columns only, although every
    search result holds the id column (``_id_key``). Only this object changes, once, and only
    documents without an id get one. Returns ``None``: the results then carry their ids.
    """
    if "results_to_docs" in vars(vectorstore):
        return None
    real = vectorstore.results_to_docs
    id_key = getattr(vectorstore, "_id_key", "id")

    def results_to_docs(results: Any, score: bool = False) -> Any:
        out = real(results, score=score)
        if id_key in results.schema.names:
            for item, doc_id in zip(out, results[id_key].to_pylist()):
                doc = item[0] if isinstance(item, tuple) else item
                if doc.id is None and doc_id is not None:
                    doc.id = str(doc_id)
        return out

    vectorstore.results_to_docs = results_to_docs
    return None


# ---------------------------------------------------------------------- command line
def _open_lancedb(
    uri: str, scheme: str, rest: str, collection: str | None, options: OpenOptions
) -> OpenedStore:
    """A LanceDB folder; ``--collection`` is the table."""
    path = existing_path(rest, uri, "LanceDB folder")
    lancedb = need("lancedb", "lancedb", uri)

    try:
        connection = lancedb.connect(str(path))
        listed = connection.table_names()
    except Exception as err:  # noqa: BLE001 - lancedb raises many kinds
        msg = f"--store {uri}: cannot open the LanceDB folder: {first_line(err)}"
        raise StoreURIError(msg) from err
    name = choose([str(t) for t in listed], collection, uri, "table")
    try:
        backend = LanceDBBackend(connection.open_table(name))
    except ValueError as err:
        raise StoreURIError(f"--store {uri}: {first_line(err)}") from err
    return OpenedStore(backend, uri, "lancedb", name)


SPEC = StoreSpec(
    name="lancedb",
    label="LanceDB",
    extra="lancedb",
    wrappers=(
        Wrapper(
            "langchain_community.vectorstores.lancedb.LanceDB",
            "langchain",
            "from_langchain",
            result_ids="langchain_result_ids",
        ),
        Wrapper(
            "llama_index.vector_stores.lancedb.base.LanceDBVectorStore",
            "llama-index",
            "from_llama_index",
        ),
    ),
    schemes=(
        Scheme(
            "lancedb",
            "lancedb:DIR",
            "_open_lancedb",
            "a LanceDB folder (--collection: the table)",
        ),
    ),
    cosine_hint="distance_type='cosine' (LangChain: distance='cosine')",
    dot_hint="distance_type='dot'",
    after_writes="each write is a new table version (old versions stay until cleaned up)",
)
