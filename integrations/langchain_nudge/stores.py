"""Read and write the *stored* vectors of LangChain vector stores by id.

LangChain has no standard call to write precomputed vectors (langchain#5945), so each
supported store gets one small :class:`nudge_rag.EmbeddingStore` class here:

* :class:`InMemoryStore` for ``langchain_core.vectorstores.InMemoryVectorStore`` (cosine);
* :class:`ChromaStore` for ``langchain_chroma.Chroma`` (embedded or HTTP client);
* :class:`QdrantStore` for ``langchain_qdrant.QdrantVectorStore`` (any client, named or
  unnamed dense vector).

Each reads the vectors the store holds (documents are never re-embedded), reports the
store's ``distance``, and writes moved rows through the store's own in-place update path, so a
concurrent reader never sees a document missing. :func:`store_for` picks the class for a
vector store; :func:`register_store` adds one for another store type. :class:`ReAddStore` is
the fallback for a store we cannot update in place: it re-adds documents by id with their
tuned vectors, which some stores implement as delete-then-add.

The partner packages are never imported here: dispatch is by class path, and each adapter
only uses the objects the vector store already holds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from langchain_nudge._compat import Document, Embeddings, VectorStore
from nudge_rag.backends import ChromaCollectionStore, QdrantCollectionStore

logger = logging.getLogger(__name__)

__all__ = [
    "ChromaStore",
    "InMemoryStore",
    "QdrantStore",
    "ReAddStore",
    "register_store",
    "store_for",
]


def _missing(ids: Sequence[str], found: set[str] | dict[str, Any]) -> KeyError:
    unknown = [i for i in ids if i not in found]
    msg = f"{len(unknown)} id(s) are not in the store, e.g. {unknown[:3]!r}"
    return KeyError(msg)


def _as_rows(vectors: Any, n: int, what: str) -> np.ndarray:
    """``vectors`` as a ``(n, dim)`` float32 array (checked)."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != n:
        msg = f"{what}: expected {n} vectors as a (n, dim) array, got shape {arr.shape}"
        raise ValueError(msg)
    return arr


def _check_write(ids: Sequence[str], vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(ids) != vectors.shape[0]:
        msg = (
            f"ids must be the same length as vectors. Got {len(ids)} ids and vectors of "
            f"shape {vectors.shape}."
        )
        raise ValueError(msg)
    return vectors


# ====================================================================== InMemoryVectorStore
class InMemoryStore:
    """:class:`nudge_rag.EmbeddingStore` over ``langchain_core``'s ``InMemoryVectorStore``.

    The store keeps ``{id: {"id", "vector", "text", "metadata"}}`` in its ``store`` dict and
    scores by cosine. A write replaces each entry with a copy holding the new vector (one
    dict assignment per id), so a reader sees the old or the new entry, never none. The new
    vector has the type the entry held (a list of floats, or a numpy array).

    Args:
        vectorstore: an ``InMemoryVectorStore``.
    """

    distance = "cosine"

    def __init__(self, vectorstore: Any):
        self.vectorstore = vectorstore

    def list_ids(self) -> list[str]:
        """All ids, in insertion order."""
        return [str(i) for i in self.vectorstore.store]

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``ids``, ``(len(ids), dim)`` float32."""
        entries = self.vectorstore.store
        try:
            rows = [entries[i]["vector"] for i in ids]
        except KeyError:
            raise _missing(ids, entries) from None
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return _as_rows(rows, len(ids), "InMemoryVectorStore vectors")

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Replace the vectors of existing ``ids``; text and metadata stay."""
        vectors = _check_write(ids, vectors)
        entries = self.vectorstore.store
        if any(i not in entries for i in ids):
            raise _missing(ids, entries)
        for doc_id, vector in zip(ids, vectors, strict=True):
            entry = entries[doc_id]
            if isinstance(entry.get("vector"), np.ndarray):  # keep the type the store holds
                value: Any = vector.astype(entry["vector"].dtype)
            else:
                value = vector.astype(float).tolist()
            entries[doc_id] = {**entry, "vector": value}

    def default_state_dir(self) -> Path | None:
        """``None``: an in-memory store keeps its originals in memory."""
        return None


# ====================================================================== Chroma / Qdrant
class ChromaStore(ChromaCollectionStore):
    """:class:`nudge_rag.EmbeddingStore` over a ``langchain_chroma.Chroma`` vector store.

    The core's :class:`~nudge_rag.backends.ChromaCollectionStore` over the store's collection
    (embedded or HTTP client): reads with ``collection.get``, writes with
    ``collection.update`` (in place), searches with ``collection.query``. ``distance`` is the
    collection's space (Chroma's default is ``"l2"``; ``"ip"`` is reported as ``"dot"``).

    Args:
        vectorstore: a ``Chroma`` vector store.
        page_size: ids listed per ``collection.get`` call.
    """

    def __init__(self, vectorstore: Any, *, page_size: int = 5000):
        super().__init__(vectorstore._collection, page_size=page_size)
        self.vectorstore = vectorstore


class QdrantStore(QdrantCollectionStore):
    """:class:`nudge_rag.EmbeddingStore` over a ``langchain_qdrant.QdrantVectorStore``.

    The core's :class:`~nudge_rag.backends.QdrantCollectionStore` over the store's client,
    collection and ``vector_name`` (``""`` is the unnamed vector): reads with
    ``client.retrieve``, writes with ``client.update_vectors`` (payloads stay). ``distance``
    comes from the collection (``COSINE``, ``DOT``, ``EUCLID``); under ``COSINE`` Qdrant
    normalizes what it stores, which NUDGE-N output already is.

    Args:
        vectorstore: a ``QdrantVectorStore`` in dense or hybrid retrieval mode.
        page_size: points listed per ``scroll`` call.
    """

    def __init__(self, vectorstore: Any, *, page_size: int = 1000):
        mode = getattr(getattr(vectorstore, "retrieval_mode", None), "value", "dense")
        if str(mode).lower() == "sparse":
            msg = (
                "QdrantVectorStore uses retrieval_mode=SPARSE; NUDGE tunes dense vectors. "
                "Use RetrievalMode.DENSE or HYBRID."
            )
            raise ValueError(msg)
        super().__init__(
            vectorstore.client,
            vectorstore.collection_name,
            vectorstore.vector_name,
            page_size=page_size,
        )
        self.vectorstore = vectorstore


# ====================================================================== fallback
class _ReplayEmbeddings(Embeddings):
    """Hands back given vectors for given texts, in order; embeds nothing."""

    def __init__(self, texts: Sequence[str], vectors: np.ndarray):
        self._texts = list(texts)
        self._vectors = vectors
        self._next = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        end = self._next + len(texts)
        if list(texts) != self._texts[self._next : end]:
            msg = "the vector store asked for vectors of texts other than the documents re-added"
            raise RuntimeError(msg)
        out = self._vectors[self._next : end].astype(float).tolist()
        self._next = end
        return out

    def embed_query(self, text: str) -> list[float]:
        msg = "_ReplayEmbeddings only serves documents being re-added"
        raise RuntimeError(msg)


class ReAddStore:
    """Fallback :class:`nudge_rag.EmbeddingStore`: re-add documents by id with tuned vectors.

    For a vector store with no adapter here. Reading needs ``get_vectors``, a callable that
    returns the stored vectors of given ids (LangChain has no standard way to read them).
    Writing calls ``vectorstore.add_documents(docs, ids=...)`` while the store's embeddings
    object is temporarily swapped for a shim that returns the tuned vectors. Stores that
    implement that call as delete-then-add leave a short window in which a concurrent reader
    may miss a document; a warning says so. Prefer a dedicated adapter
    (:func:`register_store`).

    Args:
        vectorstore: the LangChain vector store (must support ``get_by_ids`` and
            ``add_documents(..., ids=...)``).
        get_vectors: ``ids -> (len(ids), dim)`` float array of the stored vectors.
        ids: all document ids in the store.
        distance: how the store scores: ``"cosine"``, ``"dot"`` or ``"l2"``.
    """

    _lock = threading.Lock()

    def __init__(
        self,
        vectorstore: Any,
        get_vectors: Callable[[Sequence[str]], Any],
        ids: Sequence[str],
        distance: str,
    ):
        self.vectorstore = vectorstore
        self._get_vectors = get_vectors
        self._ids = [str(i) for i in ids]
        self.distance = distance
        self._attr = self._embeddings_attribute()

    def _embeddings_attribute(self) -> str:
        current = getattr(self.vectorstore, "embeddings", None)
        for name, value in vars(self.vectorstore).items():
            if current is not None and value is current:
                return name
        msg = (
            f"{type(self.vectorstore).__name__} does not expose its embeddings object as an "
            "attribute, so tuned vectors cannot be re-added; write an adapter and "
            "register it with register_store()"
        )
        raise TypeError(msg)

    def list_ids(self) -> list[str]:
        """The ids given at construction."""
        return list(self._ids)

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Vectors from the ``get_vectors`` callable, checked."""
        return _as_rows(self._get_vectors(list(ids)), len(ids), "get_vectors()")

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Re-add the documents of ``ids`` with ``vectors`` (may be delete-then-add)."""
        vectors = _check_write(ids, vectors)
        if not ids:
            return
        docs = self.vectorstore.get_by_ids(list(ids))
        by_id = {d.id: d for d in docs}
        if len(by_id) != len(set(ids)):
            raise _missing(ids, by_id)
        ordered = [by_id[i] for i in ids]
        logger.warning(
            "re-adding %d document(s) to %s through add_documents(ids=...): stores that "
            "implement this as delete-then-add leave a short window in which a concurrent "
            "reader may miss those documents",
            len(ordered),
            type(self.vectorstore).__name__,
        )
        shim = _ReplayEmbeddings([d.page_content for d in ordered], vectors)
        with self._lock:
            original = getattr(self.vectorstore, self._attr)
            setattr(self.vectorstore, self._attr, shim)
            try:
                self.vectorstore.add_documents(
                    [Document(page_content=d.page_content, metadata=d.metadata) for d in ordered],
                    ids=list(ids),
                )
            finally:
                setattr(self.vectorstore, self._attr, original)

    def default_state_dir(self) -> Path | None:
        """``None``: pass ``state_dir`` to keep originals on disk."""
        return None


# ====================================================================== registry
_REGISTRY: dict[str, Callable[[Any], Any]] = {
    "langchain_core.vectorstores.in_memory.InMemoryVectorStore": InMemoryStore,
    "langchain_chroma.vectorstores.Chroma": ChromaStore,
    "langchain_qdrant.qdrant.QdrantVectorStore": QdrantStore,
}


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_store(vectorstore_class: type | str, factory: Callable[[Any], Any]) -> None:
    """Use ``factory(vectorstore)`` to build the :class:`nudge_rag.EmbeddingStore` of a class.

    Args:
        vectorstore_class: the vector store class, or its ``"module.QualName"`` path.
        factory: called with the vector store; returns an ``EmbeddingStore``.
    """
    key = (
        vectorstore_class if isinstance(vectorstore_class, str) else _class_path(vectorstore_class)
    )
    _REGISTRY[key] = factory


def store_for(vectorstore: Any) -> Any:
    """The :class:`nudge_rag.EmbeddingStore` for a LangChain vector store.

    Subclasses of a supported class use its adapter.

    Args:
        vectorstore: an ``InMemoryVectorStore``, ``Chroma``, ``QdrantVectorStore``, or an
            instance of a class given to :func:`register_store`.

    Raises:
        TypeError: no adapter can read stored vectors from this type (the message lists
            the supported types and what to do).
    """
    for cls in type(vectorstore).__mro__:
        factory = _REGISTRY.get(_class_path(cls))
        if factory is not None:
            return factory(vectorstore)
    supported = ", ".join(sorted(k.rsplit(".", 1)[-1] for k in _REGISTRY))
    kind = "vector store" if isinstance(vectorstore, VectorStore) else "object"
    msg = (
        f"cannot read stored vectors from {type(vectorstore).__name__} (a {kind} with no "
        f"nudge adapter); supported: {supported}. Register an EmbeddingStore with "
        "langchain_nudge.register_store(), or pass embedding_store=ReAddStore(vectorstore, "
        "get_vectors=..., ids=..., distance=...)."
    )
    raise TypeError(msg)
