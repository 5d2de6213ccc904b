"""FAISS: a flat index (exact search) in this process, as LangChain and LlamaIndex hold it.

Reads and writes the rows of the index's own storage (``faiss.rev_swig_ptr(index.get_xb(),
ntotal * d)``): a write replaces the vector in place, so labels, the wrapper's id maps, the
docstore (text and metadata) and everything ``save_local`` / ``persist`` writes stay as they
are. Searches with ``index.search``. An ``IndexIVFFlat`` is updated with its own
``update_vectors``, which moves a rewritten vector to the list nearest to it (in memory
only). Index types whose search structure was built from the old vectors and cannot be
updated (HNSW graphs, PQ / scalar-quantized codes) are refused before anything is written.
The ``faiss`` package is imported only when a FAISS store is used.

Persistence. A FAISS index lives in memory; its saved form is a folder (LangChain's
``save_local(folder)``: ``index.faiss`` + ``index.pkl``; LlamaIndex's
``storage_context.persist(folder)``: ``default__vector_store.json``, which holds the faiss
index despite its name, + the docstore and index store). Two modes:

* **in memory** (the default, what the registry builds): writes change the index in memory
  only. Call ``save_local`` / ``persist`` again after ``fit``/``finetune`` to keep the tuned
  vectors (a WARNING says so on the first write). The wrapper objects do not remember the
  folder they were loaded from, so originals default to memory (with the core's warning):
  pass ``state_dir=<folder>/nudge_state`` to keep them next to the store. A crash before
  the next save loses the in-memory writes: the folder holds what was saved last, so use
  ``restore()`` (originals of every saved id back, harmless for rows never written), not
  ``resume()``, which would only finish the batches after the crash.
* **write-through** (``folder=`` given to a factory): the backend also writes each batch
  into the vector rows of the saved index file in place (memory-mapped, flushed to disk
  before ``set_vectors`` returns), after checking once that the file holds exactly the
  vectors of the index in memory. Originals default to ``<folder>/nudge_state``. The folder
  then follows the write-back's own guarantee: after a crash (SIGKILL) every row of the file
  holds its original or its tuned vector (only a row being copied at the instant of the kill
  can be torn; its batch was not recorded as done, so ``resume()`` rewrites it), ``resume()``
  in a new process finishes the plan, ``restore()`` writes the originals back. No full
  ``save_local`` is needed after ``fit``, and the cost per batch is the rows written.

Use (LangChain; the ``FAISS`` store itself is found through the registry)::

    store = FAISS.load_local(folder, embeddings, allow_dangerous_deserialization=True)
    retriever = NudgeRetriever(vectorstore=store, state_dir=Path(folder) / "nudge_state")
    retriever.fit(pairs)
    store.save_local(folder)                      # memory mode: save to keep the tuning
    # or write-through, originals in <folder>/nudge_state, no save needed:
    retriever = NudgeRetriever(
        vectorstore=store, embedding_store=from_langchain(store, folder=folder)
    )

Use (LlamaIndex; ``FaissVectorStore`` ids are positions, so give the index for node ids)::

    engine = NudgeFinetuneEngine(for_index(index), embed_model, pairs, persist_dir=folder)
    engine.finetune()
    index.storage_context.persist(folder)         # or for_index(index, folder=folder)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nudge_rag._errors import MetricMismatchError, UnsupportedStoreError
from nudge_rag._store import BaseEmbeddingStore
from nudge_rag.backends._common import STATE_FOLDER, as_rows, to_cosine, unknown_ids
from nudge_rag.backends._spec import Scheme, StoreSpec, Wrapper
from nudge_rag.backends._uri import (
    OpenedStore,
    OpenOptions,
    StoreURIError,
    existing_path,
    first_line,
    need,
)

logger = logging.getLogger(__name__)

__all__ = [
    "FaissBackend",
    "for_index",
    "from_langchain",
    "from_llama_index",
    "from_llama_index_map",
]

#: What LangChain's ``save_local`` and LlamaIndex's ``storage_context.persist`` name the index
#: file (LlamaIndex writes the faiss binary under a ``.json`` name).
LANGCHAIN_INDEX_FILE = "index.faiss"
LLAMA_INDEX_FILE = "default__vector_store.json"

_SUPPORTED = (
    "IndexFlatIP / IndexFlatL2 (IndexFlat with METRIC_INNER_PRODUCT or METRIC_L2), alone or "
    "inside IndexIDMap / IndexIDMap2 (exact search), and IndexIVFFlat (approximate: vectors "
    "moved between lists by update_vectors)"
)
_BLOCK = 65536  # rows compared per step when checking a saved file

IdsOfLabels = Mapping[int, str] | Callable[[], Mapping[int, str] | None] | None


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        msg = "the FAISS backend needs faiss-cpu: pip install 'nudge-rag[faiss]'"
        raise ImportError(msg) from err
    return faiss


class FaissBackend(BaseEmbeddingStore):
    """:class:`~nudge_rag.SearchableEmbeddingStore` over a flat (or IVF-Flat) FAISS index.

    ``distance`` comes from the index's metric: ``METRIC_INNER_PRODUCT`` is ``"dot"``
    (``"cosine"`` when the wrapper normalizes every vector, LangChain's
    ``normalize_L2=True``), ``METRIC_L2`` is ``"l2"``. NUDGE-M needs inner product without
    normalization (LangChain: ``distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT``;
    LlamaIndex: ``faiss.IndexFlatIP(dim)``); NUDGE-N accepts any of them while the stored
    vectors are unit-norm (sentence-transformers models normalize by default).

    See the module docstring for the two persistence modes; the factories
    (:func:`from_langchain`, :func:`from_llama_index`, :func:`for_index`) fill the arguments
    for each framework's wrapper.

    Args:
        index: the faiss index: a flat index, ``IndexIDMap`` / ``IndexIDMap2`` over one, or
            an ``IndexIVFFlat`` (a direct map is added if it has none).
        ids_of_labels: the store id of each label ``index.search`` returns (a position for a
            flat index, the user's id inside an ``IndexIDMap``): a mapping, or a callable
            returning the wrapper's current mapping (re-read whenever the index or the
            mapping changes size or is replaced). ``None``: the label as text.
        normalized: whether the wrapper normalizes every stored and query vector.
        folder: the folder the store is saved in: write-through mode (see above).
        index_file: the index file's name inside ``folder``.
        name: a short name for messages.
        owner: the object whose in-memory originals these are (the wrapper).

    Raises:
        UnsupportedStoreError: (a ``TypeError``) an index type that cannot be rewritten in
            place, or one whose vectors are a read-only view of a file (``IO_FLAG_MMAP``).
        MetricMismatchError: (a ``ValueError``) a metric other than inner product or L2.
        ValueError: ``folder`` whose index file is missing or differs from the index, or
            ``folder`` with an IVF index (write-through is for flat indexes).
    """

    def __init__(
        self,
        index: Any,
        ids_of_labels: IdsOfLabels = None,
        *,
        normalized: bool = False,
        folder: str | os.PathLike | None = None,
        index_file: str = LANGCHAIN_INDEX_FILE,
        name: str | None = None,
        owner: object | None = None,
    ):
        faiss = _faiss()
        self.index = faiss.downcast_index(index) if type(index) is faiss.Index else index
        self._flat, self._id_map, self._ivf = self._storage(self.index)
        self.normalized = bool(normalized)
        self.distance = self._read_distance()
        self._ids_of_labels = ids_of_labels
        self._name = name or f"FAISS {type(self.index).__name__}"
        self._owner = owner if owner is not None else self.index
        self._cache_key: tuple[Any, ...] | None = None
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._warned_memory = False
        self.folder = Path(folder) if folder is not None else None
        self.index_file = self.folder / index_file if self.folder is not None else None
        if self.index_file is not None and self._ivf is not None:
            msg = (
                "folder= (write-through) supports flat indexes only; for an IndexIVFFlat "
                "leave folder unset and save the store after tuning"
            )
            raise ValueError(msg)
        self._file_offset = self._check_file() if self.index_file is not None else None

    # ------------------------------------------------------------------ set-up
    def _storage(self, index: Any) -> tuple[Any, Any, Any]:
        """The flat index holding the rows, the id map, the IVF index (``None`` if absent)."""
        faiss = _faiss()
        if isinstance(index, faiss.IndexIVFFlat) and not isinstance(index, faiss.IndexIVFFlatDedup):
            return None, None, self._ivf_ready(index)
        id_map = None
        inner = index
        if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            id_map = index.id_map
            inner = faiss.downcast_index(index.index)
        if not isinstance(inner, faiss.IndexFlat) or isinstance(inner, faiss.IndexFlat1D):
            kind = type(inner).__name__
            if inner is not index:
                kind = f"{type(index).__name__} over {kind}"
            msg = (
                f"cannot tune a FAISS {kind} in place: nudge-rag rewrites flat storage and "
                "IVF-Flat lists only, and an index whose search structure (HNSW graph, PQ or "
                "quantized codes, a sorted permutation) was built from the original vectors "
                "would search a rewritten vector wrongly or store it lossily. "
                f"Supported: {_SUPPORTED}. Rebuild the store on faiss.IndexFlatIP(dim) "
                "(exact; LangChain: FAISS.from_embeddings(..., distance_strategy="
                "DistanceStrategy.MAX_INNER_PRODUCT)) to tune it."
            )
            raise UnsupportedStoreError(msg)
        if not getattr(inner.codes, "is_owned", True):  # faiss < 1.10 cannot map flat codes
            msg = (
                "the FAISS index was loaded with faiss.IO_FLAG_MMAP / IO_FLAG_MMAP_IFC: its "
                "vectors are a read-only view of the file, and writing them would crash. "
                "Load it without io_flags (FAISS.load_local(folder, embeddings, "
                "allow_dangerous_deserialization=True))."
            )
            raise UnsupportedStoreError(msg)
        return inner, id_map, None

    @staticmethod
    def _ivf_ready(index: Any) -> Any:
        """An ``IndexIVFFlat`` with a direct map (``update_vectors`` and ``reconstruct`` need it).

        ``update_vectors`` re-assigns a rewritten vector to its nearest list, so the lists
        stay right. A missing direct map is added (an array for ids 0..n-1, else a hash
        table: 8-16 bytes per vector, saved with the index).
        """
        faiss = _faiss()
        lists = type(faiss.downcast_InvertedLists(index.invlists)).__name__
        if lists != "ArrayInvertedLists":
            msg = (
                f"cannot tune an IndexIVFFlat whose inverted lists are {lists} (on disk or "
                "read-only): load it into memory (faiss.read_index without io_flags)"
            )
            raise UnsupportedStoreError(msg)
        if index.direct_map.type == faiss.DirectMap.NoMap:
            try:
                index.make_direct_map(True)
            except RuntimeError:  # ids are not 0..n-1
                index.set_direct_map_type(faiss.DirectMap.Hashtable)
            logger.info("added a direct map to the IndexIVFFlat (needed to update vectors)")
        return index

    def _read_distance(self) -> str:
        faiss = _faiss()
        metric = (self._flat if self._ivf is None else self._ivf).metric_type
        if metric == faiss.METRIC_INNER_PRODUCT:
            return "cosine" if self.normalized else "dot"
        if metric == faiss.METRIC_L2:
            return "l2"
        msg = (
            f"the FAISS index uses metric type {metric}; nudge-rag supports inner product "
            "(faiss.IndexFlatIP, NUDGE-N and NUDGE-M) and L2 (faiss.IndexFlatL2, NUDGE-N on "
            "unit vectors)"
        )
        raise MetricMismatchError(msg)

    @property
    def name(self) -> str:
        """A short name for messages."""
        return self._name

    @property
    def state_owner(self) -> object:
        """The wrapper (or index): every tuner over it shares its in-memory originals."""
        return self._owner

    def default_state_dir(self) -> Path | None:
        """``<folder>/nudge_state`` in write-through mode; else ``None`` (the folder is unknown)."""
        return self.folder / STATE_FOLDER if self.folder is not None else None

    # ------------------------------------------------------------------ rows
    def _xb(self) -> np.ndarray:
        """The flat storage as a writable ``(ntotal, d)`` float32 view (re-read: adds move it)."""
        flat = self._flat
        n, d = int(flat.ntotal), int(flat.d)
        if n == 0:
            return np.zeros((0, d), dtype=np.float32)
        return _faiss().rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)

    def _labels(self) -> np.ndarray:
        """The label of each storage row (positions, the id map's ids, IVF ids sorted)."""
        if self._ivf is not None:
            faiss, lists = _faiss(), self._ivf.invlists
            parts = [
                faiss.rev_swig_ptr(lists.get_ids(k), lists.list_size(k)).copy()
                for k in range(self._ivf.nlist)
                if lists.list_size(k)
            ]
            return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
        if self._id_map is None:
            return np.arange(int(self._flat.ntotal), dtype=np.int64)
        return _faiss().vector_to_array(self._id_map).astype(np.int64, copy=False)

    def _mapping(self) -> Mapping[int, str] | None:
        source = self._ids_of_labels
        return source() if callable(source) else source

    @property
    def _positional(self) -> bool:
        """Ids are the positions as text: no id map to hold (``"0"``, ``"1"``, ...)."""
        return self._ids_of_labels is None and self._id_map is None and self._ivf is None

    def _refresh(self) -> None:
        """Rebuild ``ids``/``rows`` when the index or the wrapper's map changed."""
        mapping = self._mapping()
        key = (
            int(self.index.ntotal),
            id(mapping),
            -1 if mapping is None else len(mapping),
        )
        if key == self._cache_key:
            return
        labels = self._labels().tolist()
        keys = labels if self._ivf is not None else range(len(labels))  # what _rows_of gives
        if mapping is None:
            rows = list(keys)
            ids = [str(label) for label in labels]
        else:
            pairs = [(r, mapping[lab]) for r, lab in zip(keys, labels) if lab in mapping]
            rows = [r for r, _ in pairs]
            ids = [str(i) for _, i in pairs]
        by_id = dict(zip(ids, rows))
        if len(by_id) != len(ids):
            msg = f"{self.name}: the id map gives the same store id to several stored vectors"
            raise ValueError(msg)
        self._ids, self._rows, self._cache_key = ids, by_id, key

    def _rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """Storage rows of ``ids`` (their IVF ids for an IVF index)."""
        if self._positional:  # parse, rather than hold a map of the whole corpus
            n = int(self._flat.ntotal)
            rows = np.fromiter(
                (int(i) if i.isascii() and i.isdigit() and str(int(i)) == i else -1 for i in ids),
                dtype=np.int64,
                count=len(ids),
            )
            bad = (rows < 0) | (rows >= n)
            if bad.any():
                where = f"the {self.name} store (ids are positions 0..{n - 1})"
                raise unknown_ids([ids[k] for k in np.flatnonzero(bad)], (), where)
            return rows
        self._refresh()
        rows_by_id = self._rows
        try:
            return np.fromiter((rows_by_id[i] for i in ids), dtype=np.int64, count=len(ids))
        except KeyError:
            raise unknown_ids(ids, rows_by_id, f"the {self.name} store") from None

    def count(self) -> int:
        """Number of stored vectors the wrapper can return."""
        if self._positional:
            return int(self._flat.ntotal)
        self._refresh()
        return len(self._ids)

    def list_ids(self) -> list[str]:
        """All store ids, in the index's storage order."""
        if self._positional:
            return [str(i) for i in range(int(self._flat.ntotal))]
        self._refresh()
        return list(self._ids)

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``ids``, ``(len(ids), dim)`` float32, in the order asked.

        Raises:
            KeyError: ids the store does not hold (the message names them).
        """
        ids = [str(i) for i in ids]
        rows = self._rows_of(ids)
        if self._ivf is not None:
            if not ids:
                return np.zeros((0, int(self._ivf.d)), dtype=np.float32)
            return np.asarray(self._ivf.reconstruct_batch(rows), dtype=np.float32)
        return self._xb()[rows]

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Overwrite the rows of ``ids`` in the index (and the saved file in write-through mode).

        Raises:
            KeyError: ids the store does not hold; nothing is written.
            ValueError: vectors of another dimension; nothing is written.
        """
        ids = [str(i) for i in ids]
        matrix = as_rows(ids, vectors)
        if not ids:
            return
        d = int(self.index.d)
        if matrix.shape[1] != d:
            msg = f"vectors have {matrix.shape[1]} dimensions, but the FAISS index holds {d}"
            raise ValueError(msg)
        rows = self._rows_of(ids)
        if self._ivf is not None:
            self._ivf.update_vectors(rows, np.ascontiguousarray(matrix))  # re-assigns lists
        else:
            if self.index_file is not None:
                self._write_file(rows, matrix)  # durable first: memory follows the file
            self._xb()[rows] = matrix
            self._sync_norms(rows, matrix)
        if self.index_file is None and not self._warned_memory:
            self._warned_memory = True
            logger.warning(
                "%s: the tuned vectors are written to the FAISS index in memory only; save "
                "the store again (LangChain: vectorstore.save_local(folder); LlamaIndex: "
                "index.storage_context.persist(folder)) to keep them, or pass folder= to "
                "nudge_rag.backends.faiss.from_langchain / from_llama_index to write through "
                "to the saved index file.",
                self.name,
            )

    def _sync_norms(self, rows: np.ndarray, matrix: np.ndarray) -> None:
        """Keep ``IndexFlatL2.cached_l2norms`` (set by ``sync_l2norms()``) true for new rows."""
        cached = getattr(self._flat, "cached_l2norms", None)
        n = int(self._flat.ntotal)
        if cached is None or n == 0 or cached.size() != n:
            return
        norms = _faiss().rev_swig_ptr(cached.data(), n)
        norms[rows] = np.einsum("ij,ij->i", matrix, matrix)

    # ------------------------------------------------------------------ search
    def nearest(self, vectors: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """Exact kNN with ``index.search``: ids and cosine similarity per query row.

        Inner-product scores are returned as they are (on unit queries and unit stored
        vectors they are cosine similarities); squared L2 distances ``s`` become ``1 - s/2``.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n = vectors.shape[0]
        out = np.full((n, int(k)), -np.inf, dtype=np.float32)
        if n == 0 or self.count() == 0:
            return [[] for _ in range(n)], out
        mapping = self._mapping()
        k_eff = min(int(k), int(self.index.ntotal))
        scores, labels = self.index.search(vectors, k_eff)
        converted = scores.astype(np.float32)
        if self.distance == "l2":  # faiss returns squared distances
            converted = to_cosine(converted, "l2", "distance")
        ids: list[list[str]] = []
        for q in range(n):
            row = labels[q]
            keep = row >= 0
            if mapping is not None:
                keep &= np.fromiter((int(x) in mapping for x in row), dtype=bool, count=len(row))
                found = [str(mapping[int(x)]) for x in row[keep]]
            else:
                found = [str(int(x)) for x in row[keep]]
            ids.append(found)
            out[q, : len(found)] = converted[q][keep]
        return ids, out

    # ------------------------------------------------------------------ write-through
    def _check_file(self) -> int:
        """Byte offset of the vector rows in the saved index file, checked against memory.

        The rows of a flat index are the last thing faiss writes for it (an ``IndexIDMap``
        writes its id map after them), so the offset follows from the file size; the file's
        rows must then equal the index's rows, else the folder is stale.
        """
        path = self.index_file
        assert path is not None
        if not path.is_file():
            msg = (
                f"folder: {path} does not exist; save the store there first "
                "(save_local(folder) / storage_context.persist(folder))"
            )
            raise ValueError(msg)
        n, d = int(self._flat.ntotal), int(self._flat.d)
        tail = 0 if self._id_map is None else 8 + 8 * n  # the id map: a length, then n int64
        offset = path.stat().st_size - tail - 4 * n * d
        stale = (
            f"folder: {path} does not hold the vectors of this FAISS index (saved before later "
            "changes, or another index): save the store there again before tuning with "
            "folder=, or leave folder unset and save after tuning"
        )
        if offset < 8:
            raise ValueError(stale)
        xb = self._xb()
        if n:
            rows = np.memmap(path, dtype=np.float32, mode="r", offset=offset, shape=(n, d))
            for start in range(0, n, _BLOCK):
                if not np.array_equal(rows[start : start + _BLOCK], xb[start : start + _BLOCK]):
                    raise ValueError(stale)
            del rows
        if self._id_map is not None:
            saved = np.fromfile(path, dtype=np.int64, count=n, offset=offset + 4 * n * d + 8)
            if not np.array_equal(saved, self._labels()):
                raise ValueError(stale)
        return offset

    def _write_file(self, rows: np.ndarray, matrix: np.ndarray) -> None:
        path = self.index_file
        assert path is not None and self._file_offset is not None
        n, d = int(self._flat.ntotal), int(self._flat.d)
        expected = self._file_offset + 4 * n * d + (0 if self._id_map is None else 8 + 8 * n)
        if path.stat().st_size != expected:
            msg = (
                f"{path} changed size since it was checked (the store was saved with other "
                "vectors, or vectors were added): nothing written. Build a new backend."
            )
            raise ValueError(msg)
        mapped = np.memmap(
            path, dtype=np.float32, mode="r+", offset=self._file_offset, shape=(n, d)
        )
        try:
            mapped[rows] = matrix
            mapped.flush()  # msync: the batch is on disk before it counts as done
        finally:
            del mapped


# ---------------------------------------------------------------------- factories
def from_langchain(
    vectorstore: Any, *, folder: str | os.PathLike | None = None, index_name: str = "index"
) -> FaissBackend:
    """Backend for ``langchain_community.vectorstores.FAISS`` (the registry's factory).

    Ids are the docstore ids (``index_to_docstore_id``); text and metadata stay in the
    docstore, untouched. ``normalize_L2=True`` makes an inner-product index ``"cosine"``.

    Args:
        vectorstore: the ``FAISS`` vector store.
        folder: the ``save_local`` / ``load_local`` folder, for write-through mode (the store
            object does not remember it).
        index_name: ``save_local``'s ``index_name`` (the file is ``<index_name>.faiss``).
    """
    return FaissBackend(
        vectorstore.index,
        lambda: vectorstore.index_to_docstore_id,
        normalized=bool(getattr(vectorstore, "_normalize_L2", False)),
        folder=folder,
        index_file=f"{index_name}.faiss",
        name="FAISS",
        owner=vectorstore,
    )


def from_llama_index(
    vector_store: Any,
    *,
    folder: str | os.PathLike | None = None,
    nodes_dict: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
) -> FaissBackend:
    """Backend for LlamaIndex's ``FaissVectorStore`` (the registry's factory).

    ``FaissVectorStore`` knows only positions: its ids are ``"0"``, ``"1"``, ... (what its
    ``query`` returns), and the ``VectorStoreIndex`` maps them to node ids
    (``index.index_struct.nodes_dict``). Pass that map as ``nodes_dict`` (or use
    :func:`for_index`) to tune by node id, as training pairs name nodes.

    Args:
        vector_store: the ``FaissVectorStore`` (``.client`` is the faiss index).
        folder: the ``storage_context.persist`` folder, for write-through mode.
        nodes_dict: ``{position as text: node id}``, or a callable returning it.
    """
    if hasattr(vector_store, "_faiss_id_to_node_id_map"):  # a FaissMapVectorStore
        return from_llama_index_map(vector_store, folder=folder)
    ids_of_labels: IdsOfLabels = None
    if nodes_dict is not None:
        source = nodes_dict
        cache: dict[str, Any] = {"key": None, "map": {}}

        def ids_of_labels() -> Mapping[int, str]:
            current = source() if callable(source) else source
            key = (id(current), len(current))
            if key != cache["key"]:
                cache["map"] = {int(k): v for k, v in current.items()}
                cache["key"] = key
            return cache["map"]

    return FaissBackend(
        vector_store.client,
        ids_of_labels,
        folder=folder,
        index_file=LLAMA_INDEX_FILE,
        name="FaissVectorStore",
        owner=vector_store,
    )


def from_llama_index_map(
    vector_store: Any, *, folder: str | os.PathLike | None = None
) -> FaissBackend:
    """Backend for LlamaIndex's ``FaissMapVectorStore`` (an ``IndexIDMap2``): node ids."""
    return FaissBackend(
        vector_store.client,
        lambda: vector_store._faiss_id_to_node_id_map,
        folder=folder,
        index_file=LLAMA_INDEX_FILE,
        name="FaissMapVectorStore",
        owner=vector_store,
    )


def for_index(index: Any, *, folder: str | os.PathLike | None = None) -> FaissBackend:
    """Backend for a LlamaIndex ``VectorStoreIndex`` over a FAISS store, by node id.

    Pass it to ``NudgeFinetuneEngine(for_index(index), embed_model, pairs, ...)``.

    Args:
        index: the ``VectorStoreIndex`` (its ``vector_store`` is a ``FaissVectorStore`` or
            ``FaissMapVectorStore``).
        folder: the ``storage_context.persist`` folder, for write-through mode.
    """
    vector_store = index.vector_store
    if hasattr(vector_store, "_faiss_id_to_node_id_map"):  # a FaissMapVectorStore
        return from_llama_index_map(vector_store, folder=folder)
    return from_llama_index(
        vector_store, folder=folder, nodes_dict=lambda: index.index_struct.nodes_dict
    )


# ---------------------------------------------------------------------- command line
def _open_faiss(
    uri: str, scheme: str, rest: str, collection: str | None, options: OpenOptions
) -> OpenedStore:
    """A LangChain ``FAISS.save_local`` folder (``<name>.faiss`` + ``<name>.pkl``).

    The backend writes through to the saved index file, so the folder itself is tuned
    (no second ``save_local`` needed); ``--collection`` is ``save_local``'s ``index_name``.
    ``<name>.pkl`` is a pickle: it is loaded only with ``trust_pickle=True``.
    """
    path = existing_path(rest, uri, "FAISS save_local folder")
    name = collection or "index"
    if not (path / f"{name}.faiss").is_file() or not (path / f"{name}.pkl").is_file():
        have = sorted(p.stem for p in path.glob("*.faiss")) if path.is_dir() else []
        msg = (
            f"--store {uri}: no {name}.faiss + {name}.pkl in {path} (a LangChain "
            f"FAISS.save_local folder); index names there: {', '.join(have) or 'none'}"
        )
        raise StoreURIError(msg)
    if not options.trust_pickle:
        msg = (
            f"--store {uri}: {path / (name + '.pkl')} is a Python pickle (LangChain's FAISS "
            "docstore), and loading a pickle runs whatever code it holds. Nothing was read. "
            "Add --trust-pickle (Python: open_store(..., trust_pickle=True)) only for a folder "
            "you made or whose maker you trust."
        )
        raise StoreURIError(msg)
    need("faiss", "faiss", uri)
    community = need("langchain_community.vectorstores", "faiss", uri)

    try:
        # index.pkl is a pickle (LangChain's format): the caller opted in (trust_pickle).
        store = community.FAISS.load_local(
            str(path), _NoEmbeddings(), index_name=name, allow_dangerous_deserialization=True
        )
        backend = from_langchain(store, folder=path, index_name=name)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise StoreURIError(f"--store {uri}: {first_line(err)}") from err
    return OpenedStore(backend, uri, "faiss", name)


class _NoEmbeddings:
    """Stands in for the model of a loaded ``FAISS`` store: nudge-rag never embeds through it."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError("the command line embeds questions with --embed")

    def embed_query(self, text: str) -> list[float]:
        raise NotImplementedError("the command line embeds questions with --embed")


SPEC = StoreSpec(
    name="faiss",
    label="FAISS",
    extra="faiss",
    wrappers=(
        Wrapper("langchain_community.vectorstores.faiss.FAISS", "langchain", "from_langchain"),
        Wrapper(
            "llama_index.vector_stores.faiss.base.FaissVectorStore",
            "llama-index",
            "from_llama_index",
            index_factory="for_index",  # its ids are positions; the index maps them
        ),
        Wrapper(
            "llama_index.vector_stores.faiss.map_store.FaissMapVectorStore",
            "llama-index",
            "from_llama_index_map",
        ),
    ),
    schemes=(
        Scheme(
            "faiss",
            "faiss:DIR",
            "_open_faiss",
            "a LangChain FAISS.save_local folder",
        ),
    ),
    cosine_hint="IndexFlatIP over normalized vectors (LangChain: normalize_L2=True)",
    dot_hint="IndexFlatIP, LangChain distance_strategy=MAX_INNER_PRODUCT without normalize_L2",
    after_writes=(
        "nothing for flat indexes; the saved files are rewritten atomically. An "
        "IndexIVFFlat gets a direct map, which update_vectors needs: with an array map "
        "(ids 0..n-1, as LangChain's) FAISS then refuses LangChain's FAISS.delete and leaves "
        "the index as it was (that delete renumbers its ids as a flat index does, which would "
        "mislabel an IVF index's documents): rebuild the index to delete documents"
    ),
)
