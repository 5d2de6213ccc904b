"""DuckDB: a table of ids and ``FLOAT[]`` / ``FLOAT[n]`` vectors in a DuckDB database.

* LangChain ``DuckDB`` (langchain-community): table ``embeddings`` (``id``, ``text``,
  ``embedding FLOAT[]``, ``metadata``), ranked by ``list_cosine_similarity``;
* LlamaIndex ``DuckDBVectorStore``: table ``documents`` (``node_id``, ``text``,
  ``embedding FLOAT[n]``, ``metadata_``), ranked by ``array_cosine_similarity``;
* the command line: ``--store duckdb:FILE.duckdb --collection TABLE``.

Both wrappers search exactly (a full scan), so there is no index to keep up. Vectors are read
and written through Arrow in bounded batches; a batch is one ``UPDATE ... FROM`` in one
transaction, so text and metadata stay and a crash leaves each batch all or nothing. Originals
live next to the database file (``<folder>/nudge_state/<table>``); an in-memory database
keeps them in memory unless ``state_dir`` is given.

A DuckDB file is opened read-write by one process at a time, so the backend uses the
wrapper's own connection: tune from the process that serves the store (or stop it first).
LlamaIndex's wrapper installs DuckDB's ``json`` and ``fts`` extensions when it is created,
which needs the internet; offline, :func:`install_extensions_from_wheels` installs them from
the ``duckdb-extension-json`` / ``duckdb-extension-fts`` wheels (the ``duckdb`` extra).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nudge_rag._errors import MetricUnknownError
from nudge_rag._store import DISTANCES, BaseEmbeddingStore
from nudge_rag.backends._common import STATE_FOLDER, as_rows, to_cosine, unknown_ids
from nudge_rag.backends._spec import Scheme, StoreSpec, Wrapper
from nudge_rag.backends._uri import (
    OpenedStore,
    StoreURIError,
    choose,
    closing_on_error,
    existing_path,
    need,
)

__all__ = ["DuckDBBackend", "install_extensions_from_wheels"]

_BATCH = 4096  # ids per read or write statement
_SEARCH_BATCH = 64  # query vectors per nearest() statement
#: (id column, vector column) -> metric of the framework layouts the command line recognizes
_LAYOUTS = {("id", "embedding"): "cosine", ("node_id", "embedding"): "cosine"}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDBBackend(BaseEmbeddingStore):
    """The vectors of one DuckDB table, by id.

    Args:
        connection: a ``duckdb.DuckDBPyConnection`` (the wrapper's, so that one process
            holds the file).
        table: the table.
        id_column: the column with the document ids (``"id"``: LangChain; ``"node_id"``:
            LlamaIndex).
        vector_column: the ``FLOAT[]`` or ``FLOAT[n]`` column.
        distance: how the store ranks (``"cosine"`` for both frameworks' wrappers).

    Raises:
        ValueError: no such table or column, or a column that holds no float vectors.
    """

    def __init__(
        self,
        connection: Any,
        table: str,
        *,
        id_column: str = "id",
        vector_column: str = "embedding",
        distance: str = "cosine",
    ):
        if distance not in DISTANCES:
            msg = f"distance must be one of {DISTANCES}, got {distance!r}"
            raise ValueError(msg)
        self.connection = connection
        self.table = table
        self.id_column, self.vector_column = id_column, vector_column
        self.distance = distance
        columns = self._columns()
        for role, column in (("id_column", id_column), ("vector_column", vector_column)):
            if column not in columns:
                msg = f"{role}: table {table!r} has no column {column!r}; it has {sorted(columns)}"
                raise ValueError(msg)
        kind = columns[vector_column].upper()
        if not (kind.startswith("FLOAT[") or kind.startswith("DOUBLE[")):
            msg = (
                f"column {vector_column!r} of {table!r} is {kind}; nudge-rag reads and writes "
                "FLOAT[] or FLOAT[n] vector columns"
            )
            raise ValueError(msg)
        self._vector_type = columns[vector_column]
        self._t, self._id, self._vec = _quote(table), _quote(id_column), _quote(vector_column)

    def _columns(self) -> dict[str, str]:
        try:
            rows = self.connection.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = ? ORDER BY ordinal_position",
                [self.table],
            ).fetchall()
        except Exception as err:  # noqa: BLE001 - duckdb raises its own kinds
            msg = f"cannot read the columns of DuckDB table {self.table!r}: {err}"
            raise ValueError(msg) from err
        if not rows:
            msg = f"DuckDB table {self.table!r} does not exist; tables: {_tables(self.connection)}"
            raise ValueError(msg)
        return dict(rows)

    @property
    def name(self) -> str:
        """The table."""
        return self.table

    def __repr__(self) -> str:
        return f"DuckDBBackend({self.table!r}, distance={self.distance!r})"

    def database_file(self) -> Path | None:
        """The database file, or ``None`` for an in-memory database."""
        for _, name, file in self.connection.execute("PRAGMA database_list").fetchall():
            if name == self.connection.execute("SELECT current_database()").fetchone()[0]:
                return Path(file) if file else None
        return None

    def default_state_dir(self) -> Path | None:
        """``<folder of the database file>/nudge_state/<table>``; ``None`` in memory."""
        file = self.database_file()
        return None if file is None else file.parent / STATE_FOLDER / self.table

    # ------------------------------------------------------------------ reads
    def count(self) -> int:
        """Rows with a vector."""
        query = f"SELECT count(*) FROM {self._t} WHERE {self._vec} IS NOT NULL"
        return int(self.connection.execute(query).fetchone()[0])

    def list_ids(self) -> list[str]:
        """Every id with a vector, in id order."""
        query = f"SELECT {self._id} FROM {self._t} WHERE {self._vec} IS NOT NULL ORDER BY 1"
        return [str(r[0]) for r in self.connection.execute(query).fetchall()]

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of ``ids``, ``(len(ids), dim)`` float32, in the order given."""
        ids = [str(i) for i in ids]
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        parts = [self._read(ids[s : s + _BATCH]) for s in range(0, len(ids), _BATCH)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _read(self, ids: list[str]) -> np.ndarray:
        query = (
            f"SELECT q.pos, t.{self._vec} AS v FROM {self._t} t JOIN "
            f"(SELECT UNNEST($ids) AS id, generate_subscripts($ids, 1) AS pos) q "
            f"ON t.{self._id} = q.id WHERE t.{self._vec} IS NOT NULL ORDER BY q.pos"
        )
        got = self.connection.execute(query, {"ids": ids}).arrow()
        if got.num_rows != len(ids) or len(set(ids)) != len(ids):
            found = {ids[int(p) - 1] for p in got.column("pos").to_pylist()}
            missing = [i for i in ids if i not in found]
            if missing:
                raise unknown_ids(missing, found, f"DuckDB table {self.table!r}")
        return _matrix(got.column("v"), len(ids))

    # ------------------------------------------------------------------ writes
    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Write ``vectors`` in place (``UPDATE``: text and metadata stay), one batch a transaction.

        Raises:
            KeyError: an id that is not in the table (nothing of that batch is written).
        """
        ids = [str(i) for i in ids]
        matrix = as_rows(ids, vectors)
        for s in range(0, len(ids), _BATCH):
            self._write(ids[s : s + _BATCH], matrix[s : s + _BATCH])

    def _write(self, ids: list[str], matrix: np.ndarray) -> None:
        import pyarrow as pa

        values = pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(matrix, dtype=np.float32).ravel()), matrix.shape[1]
        )
        batch = pa.table({"id": pa.array(ids, pa.string()), "v": values})  # noqa: F841 - read by SQL
        con = self.connection
        con.execute("BEGIN TRANSACTION")
        try:
            con.register("_nudge_batch", batch)
            updated = con.execute(
                f"UPDATE {self._t} SET {self._vec} = CAST(b.v AS {self._vector_type}) "
                f"FROM _nudge_batch b WHERE {self._t}.{self._id} = b.id"
            ).fetchone()[0]
            if int(updated) != len(set(ids)):
                found = {
                    str(r[0])
                    for r in con.execute(
                        f"SELECT {self._id} FROM {self._t} WHERE {self._id} IN "
                        "(SELECT id FROM _nudge_batch)"
                    ).fetchall()
                }
                raise unknown_ids(ids, found, f"DuckDB table {self.table!r}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.unregister("_nudge_batch")

    # ------------------------------------------------------------------ search
    def nearest(self, vectors: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """The ``k`` stored vectors nearest each row of ``vectors``, scored by cosine."""
        import pyarrow as pa

        queries = np.asarray(vectors, dtype=np.float32)
        n, dim = queries.shape
        out_ids: list[list[str]] = [[] for _ in range(n)]
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        score = {
            "cosine": "list_cosine_similarity",
            "dot": "list_inner_product",
            "l2": "list_distance",
        }[self.distance]
        order = "ASC" if self.distance == "l2" else "DESC"
        for s in range(0, n, _SEARCH_BATCH):
            block = queries[s : s + _SEARCH_BATCH]
            values = pa.ListArray.from_arrays(
                pa.array(np.arange(0, block.size + 1, dim, dtype=np.int32)), pa.array(block.ravel())
            )
            qs = pa.table({"q": pa.array(np.arange(len(block))), "v": values})  # noqa: F841
            self.connection.register("_nudge_queries", qs)
            try:
                rows = self.connection.execute(
                    f"SELECT q.q, t.{self._id}, {score}(CAST(t.{self._vec} AS FLOAT[]), q.v) AS s "
                    f"FROM {self._t} t, _nudge_queries q WHERE t.{self._vec} IS NOT NULL "
                    f"QUALIFY row_number() OVER (PARTITION BY q.q ORDER BY s {order}) <= {int(k)} "
                    f"ORDER BY q.q, s {order}"
                ).fetchall()
            finally:
                self.connection.unregister("_nudge_queries")
            for q, doc_id, value in rows:
                row = s + int(q)
                scores[row, len(out_ids[row])] = value
                out_ids[row].append(str(doc_id))
        kind = "similarity"
        finite = np.isfinite(scores)
        scores[finite] = to_cosine(scores[finite], self.distance, kind)
        return out_ids, scores


def _matrix(column: Any, n: int) -> np.ndarray:
    """An Arrow list column of ``n`` equal-length float vectors as ``(n, dim)`` float32."""
    import pyarrow as pa

    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    flat = column.flatten()
    if flat.null_count:
        msg = "the vector column holds NULL components"
        raise ValueError(msg)
    matrix = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32)
    if matrix.size % n:
        msg = "the vector column holds vectors of different lengths"
        raise ValueError(msg)
    del pa
    return matrix.reshape(n, -1)


def _tables(connection: Any) -> list[str]:
    return sorted(r[0] for r in connection.execute("SHOW TABLES").fetchall())


def install_extensions_from_wheels(connection: Any = None) -> list[str]:
    """Install DuckDB's ``json`` and ``fts`` extensions from their pip wheels (offline).

    LlamaIndex's ``DuckDBVectorStore`` runs ``INSTALL json`` and ``INSTALL fts`` when it is
    created, which downloads them; once installed from the ``duckdb-extension-json`` and
    ``duckdb-extension-fts`` wheels (``pip install 'nudge-rag[duckdb]'``), that is a no-op.

    Returns:
        The extension files installed.
    """
    import duckdb

    con = connection or duckdb.connect()
    installed = []
    for module in ("duckdb_extension_json", "duckdb_extension_fts"):
        try:
            folder = Path(importlib.import_module(module).__file__).parent
        except ImportError:
            continue
        for file in sorted(folder.glob(f"extensions/v{duckdb.__version__}/*.duckdb_extension")):
            con.execute(f"INSTALL '{file}'")
            installed.append(str(file))
    return installed


def from_langchain(vectorstore: Any) -> DuckDBBackend:
    """The backend of a langchain-community ``DuckDB`` store (its connection and table)."""
    return DuckDBBackend(
        vectorstore._connection,
        vectorstore._table_name,
        id_column=vectorstore._id_key,
        vector_column=vectorstore._vector_key,
        distance="cosine",  # list_cosine_similarity
    )


def from_llama_index(vector_store: Any) -> DuckDBBackend:
    """The backend of a LlamaIndex ``DuckDBVectorStore`` (its connection and table)."""
    return DuckDBBackend(
        vector_store.client,
        vector_store.table_name,
        id_column="node_id",
        vector_column="embedding",
        distance="cosine",  # array_cosine_similarity / list_cosine_similarity
    )


def langchain_result_ids(vectorstore: Any) -> None:
    """Make a langchain-community ``DuckDB`` store's search results carry ``Document.id``.

    Its ``similarity_search`` builds Documents from text and metadata only. This wraps that
    method on this object (once) to select the id column too, with the same ranking.
    """
    if "similarity_search" in vars(vectorstore):
        return None
    # the Document class the wrapper's own module uses (nudge_rag imports no framework)
    Document = vars(importlib.import_module(type(vectorstore).__module__))["Document"]

    def similarity_search(query: str, k: int = 4, **kwargs: Any) -> list[Any]:
        return similarity_search_by_vector(vectorstore._embedding.embed_query(query), k)

    def similarity_search_by_vector(embedding: list[float], k: int = 4, **kwargs: Any) -> Any:
        t, i = _quote(vectorstore._table_name), _quote(vectorstore._id_key)
        text, vec = _quote(vectorstore._text_key), _quote(vectorstore._vector_key)
        rows = vectorstore._connection.execute(
            f"SELECT {i}, {text}, metadata, list_cosine_similarity({vec}, ?::FLOAT[]) AS s "
            f"FROM {t} ORDER BY s DESC LIMIT ?",
            [list(map(float, embedding)), int(k)],
        ).fetchall()
        import json

        return [
            Document(id=str(doc_id), page_content=body, metadata=json.loads(meta) if meta else {})
            for doc_id, body, meta, _ in rows
        ]

    vectorstore.similarity_search = similarity_search
    vectorstore.similarity_search_by_vector = similarity_search_by_vector
    return None


def _open(uri: str, scheme: str, rest: str, collection: str | None, options: Any) -> Any:
    """``duckdb:FILE.duckdb --collection TABLE`` (the command line's opener)."""
    path = existing_path(rest, uri, "DuckDB database file")
    duckdb = need("duckdb", "duckdb", uri)
    try:
        connection = duckdb.connect(os.fspath(path))
    except Exception as err:  # noqa: BLE001 - e.g. the file is held by another process
        msg = f"--store {uri}: cannot open the DuckDB file: {str(err).splitlines()[0]}"
        raise StoreURIError(msg) from err
    with closing_on_error(connection.close, uri):
        table = choose(_tables(connection), collection, uri, "table")
        columns = {r[0] for r in connection.execute(f"DESCRIBE {_quote(table)}").fetchall()}
        id_column = "node_id" if "node_id" in columns else "id"
        layout = _LAYOUTS.get((id_column, "embedding")) if "embedding" in columns else None
        distance = options.distance
        if distance is None and layout is None:
            msg = (
                f"table {table!r} is neither LangChain's nor LlamaIndex's layout, so how it "
                "ranks is not known"
            )
            raise MetricUnknownError(msg)
        backend = DuckDBBackend(
            connection, table, id_column=id_column, distance=distance or layout or "cosine"
        )
    return OpenedStore(backend, uri, "duckdb", table, connection.close)


SPEC = StoreSpec(
    name="duckdb",
    label="DuckDB",
    extra="duckdb",
    wrappers=(
        Wrapper(
            "langchain_community.vectorstores.duckdb.DuckDB",
            "langchain",
            "from_langchain",
            result_ids="langchain_result_ids",
        ),
        Wrapper(
            "llama_index.vector_stores.duckdb.base.DuckDBVectorStore",
            "llama-index",
            "from_llama_index",
        ),
    ),
    schemes=(Scheme("duckdb", "duckdb:FILE.duckdb", "_open", "a DuckDB database file"),),
    cosine_hint="both wrappers rank by cosine similarity",
    after_writes="nothing: both wrappers search with a full scan (no index)",
)
