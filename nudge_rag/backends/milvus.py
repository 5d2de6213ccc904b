"""Milvus: a collection's dense ``FLOAT_VECTOR`` field, in Milvus Lite or on a server.

Milvus Lite keeps a collection in a local ``.db`` file; a server is reached by uri; the same
``pymilvus.MilvusClient`` calls serve both.

Reads with ``client.query_iterator`` (ids) and ``client.query(ids=...)`` (vectors), writes with
``client.upsert`` of whole rows (every other field kept as read) followed by ``client.flush``,
searches with ``client.search``. ``pymilvus`` is imported only by :meth:`MilvusBackend.from_uri`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nudge_rag._errors import UnsupportedStoreError
from nudge_rag._store import BaseEmbeddingStore
from nudge_rag.backends._common import STATE_FOLDER, as_rows, to_cosine, unknown_ids
from nudge_rag.backends._spec import Scheme, StoreSpec, Wrapper
from nudge_rag.backends._uri import (
    OpenedStore,
    OpenOptions,
    StoreURIError,
    choose,
    closing_on_error,
    existing_path,
    first_line,
    need,
    split_vector,
)

logger = logging.getLogger(__name__)

__all__ = ["MilvusBackend"]

_MILVUS_METRICS = {"COSINE": "cosine", "IP": "dot", "L2": "l2"}
_FLOAT_VECTOR = "FLOAT_VECTOR"
_VECTOR_TYPES = ("FLOAT_VECTOR", "FLOAT16_VECTOR", "BFLOAT16_VECTOR", "BINARY_VECTOR",
                 "INT8_VECTOR", "SPARSE_FLOAT_VECTOR")  # fmt: skip
_SEARCH_BATCH = 256  # query vectors per search call
_LIST_PAGE = 16_384  # keys per query_iterator page: Milvus's largest query window
_REMOTE_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")


def _type_name(field: dict[str, Any]) -> str:
    kind = field.get("type")
    return str(getattr(kind, "name", kind)).upper()


class MilvusBackend(BaseEmbeddingStore):
    """:class:`~nudge_rag.SearchableEmbeddingStore` over a Milvus collection's vector field.

    One ``FLOAT_VECTOR`` field of a collection in Milvus Lite or on a server.

    ``distance`` is the metric of the field's index: ``COSINE`` -> ``"cosine"``, ``IP`` ->
    ``"dot"``, ``L2`` -> ``"l2"`` (Milvus needs an index to load a collection, so there always
    is one). For NUDGE-N create the index with ``metric_type="COSINE"`` (or keep ``L2``/``IP``
    with unit-norm vectors); NUDGE-M needs ``IP``. Milvus stores COSINE vectors as given (it
    normalizes at search time), so the stored rows are read back exactly.

    Writing. A batch is written as whole rows: the rows are read with every field
    (``output_fields=["*"]``, dynamic fields included), the vector is replaced, and the rows are
    upserted, then the collection is flushed. ``upsert(..., partial_update=True)`` would send
    only the vector, and it keeps the other fields on milvus-lite 3.2.2, but on milvus-lite
    2.5.1 (and servers without partial update) it is accepted and **silently empties them**; a
    whole-row upsert keeps them on every version that has ``upsert``. It costs one extra read of
    the written rows (their text and metadata too); ``partial_update=True`` opts into the
    cheaper write where the deployment is known to support it. Output fields of collection
    functions (e.g. a BM25 sparse vector computed from the text) are left out of the rows and
    recomputed by Milvus. After each upsert the returned primary keys are checked against the
    ones sent (a server that assigns new keys to upserted rows of an ``auto_id`` collection is
    refused), and the collection is flushed: unflushed rows search much slower (~15x measured on
    Milvus Lite) and are not yet durable, which the write-back's resume relies on.

    Searching (:meth:`nearest`) goes through ``client.search`` with the search parameters the
    framework wrapper uses (``search_params=``); it is exact for ``FLAT`` indexes and
    approximate for ``HNSW``/``IVF_*`` (state the ``ef``/``nprobe`` you use when quoting
    results). Scores are turned into cosine similarity (``L2`` is Milvus's squared distance).

    Originals live next to a Milvus Lite file: ``<folder of the .db>/nudge_state/<collection>``.
    A collection on a server is remote (:attr:`is_remote`): pass ``state_dir``.

    Refused before anything is written, with the setting to change: a field that is not
    ``FLOAT_VECTOR``, a metric other than COSINE/IP/L2, a collection with named partitions and
    no partition key (an upsert without a partition name would move rows to ``_default``).

    Args:
        client: a ``pymilvus.MilvusClient`` (``Milvus.client`` in LangChain,
            ``MilvusVectorStore.client`` in LlamaIndex).
        collection_name: the collection.
        vector_field: the dense vector field; ``None`` picks the collection's only
            ``FLOAT_VECTOR`` field.
        uri: the uri the client was opened with (a ``.db`` path for Milvus Lite); ``None`` reads
            it from the client's connection alias.
        search_params: ``search_params`` for :meth:`nearest` (e.g. ``{"params": {"ef": 400}}``);
            ``None`` uses the index's defaults.
        page_size: ids per ``query`` call when vectors or rows are read.
        partial_update: write with ``upsert(partial_update=True)`` instead of whole rows (only
            where the Milvus version keeps the other fields: milvus-lite >= 3, Milvus >= 2.6).

    Raises:
        ValueError: no such collection or field, a field that is not a float vector, an
            unsupported metric, or manual partitions.
    """

    def __init__(
        self,
        client: Any,
        collection_name: str,
        vector_field: str | None = None,
        *,
        uri: str | None = None,
        search_params: dict[str, Any] | None = None,
        page_size: int = 1000,
        partial_update: bool = False,
    ):
        self.client = client
        self.collection_name = str(collection_name)
        self.uri = str(uri) if uri is not None else self._uri_of(client)
        self.page_size = int(page_size)
        self.partial_update = bool(partial_update)
        if not client.has_collection(self.collection_name):
            msg = (
                f"Milvus collection {self.collection_name!r} does not exist (at {self.uri}): "
                "add documents before tuning"
            )
            raise ValueError(msg)
        info = client.describe_collection(self.collection_name)
        fields = info.get("fields", [])
        self.primary_field, self._int_ids = self._read_primary(fields)
        self.vector_field = self._pick_vector_field(fields, vector_field)
        self.dim = int(next(f for f in fields if f["name"] == self.vector_field)["params"]["dim"])
        functions = info.get("functions") or []
        self._function_outputs = {
            name for fn in functions for name in (fn.get("output_field_names") or [])
        }
        self._check_partitions(fields)
        self.distance = self._read_distance()
        self.search_params = dict(search_params or {})
        self.search_params.pop("metric_type", None)  # the index's metric is the one used
        self._ensure_loaded()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_uri(
        cls,
        uri: str | os.PathLike,
        collection_name: str,
        vector_field: str | None = None,
        *,
        token: str = "",
        db_name: str = "default",
        **kwargs: Any,
    ) -> MilvusBackend:
        """Open a collection without a framework: a Milvus Lite file or a server uri.

        Args:
            uri: ``"path/to/file.db"`` (Milvus Lite) or ``"http://host:19530"``.
            collection_name: the collection.
            vector_field: the dense vector field (``None``: the only ``FLOAT_VECTOR`` one).
            token: server credentials (``"user:password"`` or an API key).
            db_name: the database; milvus-lite 3.2.2 needs ``"default"`` spelled out.
            **kwargs: passed to :class:`MilvusBackend` (``search_params``, ``page_size``, ...).
        """
        try:
            from pymilvus import MilvusClient
        except ImportError as err:  # pragma: no cover - depends on the environment
            msg = "Milvus needs pymilvus: pip install 'nudge-rag[milvus]'"
            raise ImportError(msg) from err
        text = os.fspath(uri)
        client = MilvusClient(uri=text, token=token, db_name=db_name)
        return cls(client, collection_name, vector_field, uri=text, **kwargs)

    @staticmethod
    def _uri_of(client: Any) -> str:
        # MilvusClient's connection alias is "<uri>" or "<uri>-<auth hash>"; a Lite file is the
        # part up to ".db".
        alias = str(getattr(client, "_using", ""))
        head, dot_db, _ = alias.partition(".db")
        return head + dot_db if dot_db else alias

    def _read_primary(self, fields: list[dict[str, Any]]) -> tuple[str, bool]:
        for field in fields:
            if field.get("is_primary"):
                kind = _type_name(field)
                if kind not in ("VARCHAR", "INT64"):
                    msg = f"Milvus primary key {field['name']!r} has type {kind}"
                    raise ValueError(msg)
                return str(field["name"]), kind == "INT64"
        msg = f"Milvus collection {self.collection_name!r} has no primary key field"
        raise ValueError(msg)

    def _pick_vector_field(self, fields: list[dict[str, Any]], wanted: str | None) -> str:
        vectors = {f["name"]: _type_name(f) for f in fields if _type_name(f) in _VECTOR_TYPES}
        if wanted is None:
            dense = [name for name, kind in vectors.items() if kind == _FLOAT_VECTOR]
            if len(dense) != 1:
                msg = (
                    f"Milvus collection {self.collection_name!r} has {len(dense)} FLOAT_VECTOR "
                    f"fields ({dense}); pass vector_field= to choose the one to tune"
                )
                raise ValueError(msg)
            return dense[0]
        if wanted not in vectors:
            msg = (
                f"Milvus collection {self.collection_name!r} has no vector field {wanted!r}; "
                f"its vector fields are {sorted(vectors)}"
            )
            raise ValueError(msg)
        if vectors[wanted] != _FLOAT_VECTOR:
            msg = (
                f"Milvus field {wanted!r} is a {vectors[wanted]}; NUDGE tunes dense "
                "FLOAT_VECTOR fields (store the embeddings as DataType.FLOAT_VECTOR)"
            )
            raise ValueError(msg)
        return wanted

    def _check_partitions(self, fields: list[dict[str, Any]]) -> None:
        if any(f.get("is_partition_key") for f in fields):
            return  # Milvus routes every row by its key
        partitions = [p for p in self.client.list_partitions(self.collection_name)]
        if [p for p in partitions if p != "_default"]:
            msg = (
                f"Milvus collection {self.collection_name!r} has partitions {partitions}: an "
                "upsert without a partition name would move rows into '_default'. Use a "
                "partition key field (is_partition_key=True) instead of manual partitions"
            )
            raise ValueError(msg)

    def _read_distance(self) -> str:
        metric = None
        for index_name in self.client.list_indexes(
            self.collection_name, field_name=self.vector_field
        ):
            described = self.client.describe_index(self.collection_name, index_name)
            if described.get("field_name", self.vector_field) == self.vector_field:
                metric = str(described.get("metric_type", "")).upper()
                break
        if metric is None:
            msg = (
                f"Milvus field {self.vector_field!r} of {self.collection_name!r} has no index: "
                "create one (index_params.add_index(field_name=..., metric_type='COSINE'))"
            )
            raise ValueError(msg)
        if metric not in _MILVUS_METRICS:
            msg = (
                f"Milvus index on {self.vector_field!r} uses metric {metric}; NUDGE supports "
                "COSINE (NUDGE-N), IP (NUDGE-M) and L2 (NUDGE-N with unit-norm vectors)"
            )
            raise ValueError(msg)
        return _MILVUS_METRICS[metric]

    def _ensure_loaded(self) -> None:
        state = self.client.get_load_state(self.collection_name).get("state")
        if str(getattr(state, "name", state)) != "Loaded":
            logger.info("loading Milvus collection %r", self.collection_name)
            self.client.load_collection(self.collection_name)

    # ------------------------------------------------------------------ protocol
    @property
    def name(self) -> str:
        """The collection's name."""
        return self.collection_name

    @property
    def is_remote(self) -> bool:
        """Whether the collection lives on a Milvus server (not a Milvus Lite ``.db`` file)."""
        return not self.uri.endswith(".db") or self.uri.startswith(_REMOTE_SCHEMES)

    def default_state_dir(self) -> Path | None:
        """``<folder of the .db>/nudge_state/<collection>`` for Milvus Lite, else ``None``."""
        if self.is_remote:
            return None
        return Path(self.uri).resolve().parent / STATE_FOLDER / self.collection_name

    def _key(self, doc_id: str) -> int | str:
        if not self._int_ids:
            return str(doc_id)
        try:
            return int(doc_id)
        except ValueError as err:
            msg = f"{doc_id!r} is not an INT64 primary key of {self.collection_name!r}"
            raise KeyError(msg) from err

    def count(self) -> int:
        """Number of rows (``count(*)``)."""
        rows = self.client.query(self.collection_name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def list_ids(self) -> list[str]:
        """All primary keys as text, in primary-key order, in pages of 16,384 keys.

        Each page of ``query_iterator`` costs a pass over the collection's keys, so pages
        are as large as Milvus allows (its query window): listing 200,000 keys takes a tenth
        of the time it takes in pages of 1,000, and the cost grows with the corpus size.
        """
        iterator = self.client.query_iterator(
            self.collection_name, batch_size=_LIST_PAGE, output_fields=[self.primary_field]
        )
        ids: list[str] = []
        try:
            while True:
                page = iterator.next()
                if not page:
                    return ids
                ids.extend(str(row[self.primary_field]) for row in page)
        finally:
            iterator.close()

    def _query(self, ids: list[str], fields: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), self.page_size):
            keys = [self._key(i) for i in ids[start : start + self.page_size]]
            # the filter is written here: pymilvus's ids= does not escape "\" in string keys
            literals = ", ".join(
                json.dumps(k, ensure_ascii=False) if isinstance(k, str) else str(int(k))
                for k in keys
            )
            where = f"{self.primary_field} in [{literals}]"
            for row in self.client.query(self.collection_name, filter=where, output_fields=fields):
                found[str(row[self.primary_field])] = row
        if len(found) != len(set(ids)):
            raise unknown_ids(ids, found, f"Milvus collection {self.collection_name!r}")
        return found

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``ids``, ``(len(ids), dim)`` float32, in the order asked.

        Raises:
            KeyError: ids the collection does not hold.
        """
        ids = [str(i) for i in ids]
        if not ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        found = self._query(ids, [self.vector_field])
        return as_rows(ids, [found[i][self.vector_field] for i in ids])

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Upsert the vectors of existing ``ids`` (other fields kept), then flush.

        Raises:
            KeyError: ids the collection does not hold (nothing is written).
            ValueError: vectors of another dimension.
            RuntimeError: Milvus gave the upserted rows other primary keys.
        """
        ids = [str(i) for i in ids]
        matrix = as_rows(ids, vectors)
        if not ids:
            return
        if matrix.shape[1] != self.dim:
            msg = (
                f"vectors have {matrix.shape[1]} dimensions, but Milvus field "
                f"{self.vector_field!r} holds {self.dim}"
            )
            raise ValueError(msg)
        if self.partial_update:
            rows = [
                {self.primary_field: self._key(i), self.vector_field: row}
                for i, row in zip(ids, matrix)
            ]
            result = self.client.upsert(self.collection_name, rows, partial_update=True)
        else:
            found = self._query(ids, ["*"])
            rows = []
            for i, row in zip(ids, matrix):
                record = {k: v for k, v in found[i].items() if k not in self._function_outputs}
                record[self.vector_field] = row
                rows.append(record)
            result = self.client.upsert(self.collection_name, rows)
        returned = [str(k) for k in (result or {}).get("ids", [])]
        if returned and returned != [str(self._key(i)) for i in ids]:
            msg = (
                f"Milvus gave the upserted rows of {self.collection_name!r} new primary keys "
                f"(e.g. {returned[:2]} for {ids[:2]}): an auto_id collection on this Milvus "
                "version cannot be updated in place; create it with auto_id=False"
            )
            raise RuntimeError(msg)
        self.client.flush(self.collection_name)

    def nearest(self, vectors: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """The collection's own kNN (``client.search``): ids and cosine similarity per row."""
        vectors = np.asarray(vectors, dtype=np.float32)
        out = np.full((vectors.shape[0], int(k)), -np.inf, dtype=np.float32)
        ids: list[list[str]] = []
        for start in range(0, vectors.shape[0], _SEARCH_BATCH):
            block = vectors[start : start + _SEARCH_BATCH]
            hits = self.client.search(
                self.collection_name,
                data=list(block),
                limit=int(k),
                anns_field=self.vector_field,
                output_fields=[self.primary_field],
                search_params=self.search_params,
            )
            for n, row in enumerate(hits, start=start):
                ids.append([str(h[self.primary_field]) for h in row])
                scores = np.asarray([h["distance"] for h in row], dtype=np.float32)
                if self.distance == "l2":  # Milvus reports the squared euclidean distance
                    scores = to_cosine(scores, "l2", "distance")
                out[n, : scores.size] = scores
        return ids, out


def _search_params(params: Any) -> dict[str, Any] | None:
    if isinstance(params, list):
        params = params[0] if len(params) == 1 else None
    return dict(params) if isinstance(params, dict) else None


def from_langchain(vectorstore: Any) -> MilvusBackend:
    """Registry factory for ``langchain_milvus.Milvus`` (its one embedding vector field)."""
    dense = list(getattr(vectorstore, "_vector_fields_from_embedding", []) or [])
    if len(dense) != 1:
        msg = (
            f"this langchain_milvus.Milvus store has {len(dense)} embedding vector fields "
            f"({dense}); NUDGE tunes one dense field: pass embedding_store=nudge_rag.backends."
            "MilvusBackend(store.client, store.collection_name, vector_field=...)"
        )
        raise UnsupportedStoreError(msg)
    embeddings = getattr(vectorstore, "embedding_func", None)
    if type(embeddings).__name__.endswith("SparseEmbedding") or hasattr(
        embeddings, "embed_documents_sparse"
    ):
        msg = "this Milvus store holds sparse embeddings; NUDGE tunes dense FLOAT_VECTOR fields"
        raise UnsupportedStoreError(msg)
    uri = (getattr(vectorstore, "_connection_args", None) or {}).get("uri")
    return MilvusBackend(
        vectorstore.client,
        vectorstore.collection_name,
        dense[0],
        uri=uri,
        search_params=_search_params(getattr(vectorstore, "search_params", None)),
    )


def from_llama_index(vector_store: Any) -> MilvusBackend:
    """Registry factory for LlamaIndex's ``MilvusVectorStore`` (its dense ``embedding_field``)."""
    if not getattr(vector_store, "enable_dense", True):
        msg = (
            "this MilvusVectorStore has enable_dense=False; NUDGE tunes the dense embedding "
            "field (create the store with enable_dense=True)"
        )
        raise UnsupportedStoreError(msg)
    return MilvusBackend(
        vector_store.client,
        vector_store.collection_name,
        vector_store.embedding_field,
        # ``vector_store.uri`` keeps its default whatever the uri given, so the client's
        # connection alias tells where the data lives.
        uri=None,
        search_params=_search_params(getattr(vector_store, "search_config", None)),
    )


def langchain_result_ids(vectorstore: Any) -> Callable[[list[Any]], None]:
    """Set ``Document.id`` of langchain-milvus results from the primary-key field.

    langchain-milvus leaves ``Document.id`` empty and puts the key in
    ``metadata[<primary field>]`` (``"pk"`` by default).
    """
    key = getattr(vectorstore, "_primary_field", None) or "pk"

    def set_ids(docs: list[Any]) -> None:
        for doc in docs:
            if doc.id is None and doc.metadata.get(key) is not None:
                doc.id = str(doc.metadata[key])

    return set_ids


# ---------------------------------------------------------------------- command line
def _open_milvus(
    uri: str, scheme: str, rest: str, collection: str | None, options: OpenOptions
) -> OpenedStore:
    """A Milvus Lite ``.db`` file; ``--collection NAME`` or ``NAME:VECTOR_FIELD``."""
    path = existing_path(rest, uri, "Milvus Lite .db file")
    pymilvus = need("pymilvus", "milvus", uri)

    name, field = split_vector(collection)
    try:
        client = pymilvus.MilvusClient(uri=str(path), db_name="default")
    except Exception as err:  # noqa: BLE001 - milvus-lite raises many kinds
        msg = f"--store {uri}: cannot open the Milvus Lite file: {first_line(err)}"
        raise StoreURIError(msg) from err
    with closing_on_error(client.close, uri):
        name = choose([str(c) for c in client.list_collections()], name, uri)
        backend = MilvusBackend(client, name, field, uri=str(path))

    def close() -> None:
        client.close()
        try:  # milvus-lite keeps the file locked by an in-process server until released
            from milvus_lite.server_manager import server_manager_instance
        except ImportError:  # pragma: no cover - other milvus-lite versions
            return
        server_manager_instance.release_server(str(path))

    return OpenedStore(backend, uri, "milvus", name, close)


SPEC = StoreSpec(
    name="milvus",
    label="Milvus",
    extra="milvus",
    wrappers=(
        Wrapper(
            "langchain_milvus.vectorstores.milvus.Milvus",
            "langchain",
            "from_langchain",
            result_ids="langchain_result_ids",
        ),
        Wrapper(
            "llama_index.vector_stores.milvus.base.MilvusVectorStore",
            "llama-index",
            "from_llama_index",
        ),
    ),
    schemes=(
        Scheme(
            "milvus",
            "milvus:FILE.db",
            "_open_milvus",
            "a Milvus Lite file (--collection NAME or NAME:VECTOR_FIELD)",
        ),
    ),
    cosine_hint="metric_type='COSINE'",
    dot_hint="metric_type='IP'",
    after_writes="a flush after each batch of upserts",
)
