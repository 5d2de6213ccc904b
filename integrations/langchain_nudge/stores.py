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
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from langchain_nudge._compat import Document, Embeddings, VectorStore

logger = logging.getLogger(__name__)

__all__ = [
    "ChromaStore",
    "InMemoryStore",
    "QdrantStore",
    "ReAddStore",
    "register_store",
    "store_for",
]

STATE_FOLDER = "nudge_state"


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


# ====================================================================== Chroma
_CHROMA_SPACES = {"cosine": "cosine", "ip": "dot", "l2": "l2"}


class ChromaStore:
    """:class:`nudge_rag.EmbeddingStore` over a ``langchain_chroma.Chroma`` collection.

    Works the same with an embedded (``PersistentClient`` / ephemeral) and an HTTP client.
    Vectors are read with ``collection.get(ids=..., include=["embeddings"])`` and written
    with ``collection.update(ids=..., embeddings=...)``, an in-place update.

    ``distance`` comes from the collection's HNSW space (``configuration["hnsw"]["space"]``
    or ``metadata["hnsw:space"]``; Chroma's default is ``"l2"``); ``"ip"`` is reported as
    ``"dot"``.

    Args:
        vectorstore: a ``Chroma`` vector store.
        page_size: ids listed per ``collection.get`` call.
    """

    def __init__(self, vectorstore: Any, *, page_size: int = 5000):
        self.vectorstore = vectorstore
        self.collection = vectorstore._collection
        self.page_size = page_size
        self.distance = self._read_distance()

    def _read_distance(self) -> str:
        space = None
        try:
            config = self.collection.configuration
        except Exception:  # noqa: BLE001 - older clients have no configuration
            config = None
        if isinstance(config, dict):
            for index in ("hnsw", "spann"):
                section = config.get(index)
                if isinstance(section, dict) and section.get("space"):
                    space = section["space"]
                    break
        if space is None:
            space = (self.collection.metadata or {}).get("hnsw:space", "l2")
        space = getattr(space, "value", space)
        if space not in _CHROMA_SPACES:
            msg = f"Chroma collection {self.collection.name!r} uses unsupported space {space!r}"
            raise ValueError(msg)
        return _CHROMA_SPACES[space]

    def list_ids(self) -> list[str]:
        """All ids, in Chroma's storage order."""
        ids: list[str] = []
        offset = 0
        while True:
            page = self.collection.get(include=[], limit=self.page_size, offset=offset)["ids"]
            ids.extend(page)
            if len(page) < self.page_size:
                return ids
            offset += len(page)

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``ids``, ``(len(ids), dim)`` float32, in the order asked."""
        ids = list(ids)
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        got = self.collection.get(ids=ids, include=["embeddings"])
        vectors = got["embeddings"] if got["embeddings"] is not None else []
        by_id = dict(zip(got["ids"], vectors, strict=True))
        if len(by_id) != len(set(ids)):
            raise _missing(ids, by_id)
        return _as_rows([by_id[i] for i in ids], len(ids), "Chroma embeddings")

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Update the embeddings of existing ``ids`` in place; documents and metadata stay."""
        vectors = _check_write(ids, vectors)
        if ids:
            self.collection.update(ids=list(ids), embeddings=vectors)

    def default_state_dir(self) -> Path | None:
        """``<persist dir>/nudge_state/<collection>`` for a persistent client, else ``None``."""
        client = self.vectorstore._client
        try:
            settings = client.get_settings()
        except Exception:  # noqa: BLE001 - clients without settings keep state in memory
            return None
        if getattr(settings, "is_persistent", False) and settings.persist_directory:
            if type(client).__name__ != "HttpClient" and os.path.isdir(settings.persist_directory):
                return Path(settings.persist_directory) / STATE_FOLDER / self.collection.name
        return None


# ====================================================================== Qdrant
class QdrantStore:
    """:class:`nudge_rag.EmbeddingStore` over a ``langchain_qdrant.QdrantVectorStore``.

    Reads with ``client.retrieve(..., with_vectors=...)`` and writes with
    ``client.update_vectors`` (in place; payloads stay). Respects ``vector_name`` (``""``
    is the unnamed vector). ``distance`` is read from the collection's vector config:
    ``COSINE`` -> ``"cosine"``, ``DOT`` -> ``"dot"``, ``EUCLID`` -> ``"l2"``. Under
    ``COSINE`` Qdrant normalizes what it stores, which NUDGE-N output already is.

    Args:
        vectorstore: a ``QdrantVectorStore`` in dense or hybrid retrieval mode.
        page_size: points listed per ``scroll`` call.
    """

    def __init__(self, vectorstore: Any, *, page_size: int = 1000):
        self.vectorstore = vectorstore
        self.client = vectorstore.client
        self.collection_name = vectorstore.collection_name
        self.vector_name = vectorstore.vector_name
        self.page_size = page_size
        mode = getattr(getattr(vectorstore, "retrieval_mode", None), "value", "dense")
        if str(mode).lower() == "sparse":
            msg = (
                "QdrantVectorStore uses retrieval_mode=SPARSE; NUDGE tunes dense vectors. "
                "Use RetrievalMode.DENSE or HYBRID."
            )
            raise ValueError(msg)
        self.distance = self._read_distance()
        self._point_ids: dict[str, Any] = {}

    def _read_distance(self) -> str:
        vectors = self.client.get_collection(self.collection_name).config.params.vectors
        if isinstance(vectors, dict):
            if self.vector_name not in vectors:
                msg = (
                    f"Qdrant collection {self.collection_name!r} has no dense vector named "
                    f"{self.vector_name!r}; it has {sorted(vectors)}. Set vector_name."
                )
                raise ValueError(msg)
            params = vectors[self.vector_name]
        else:
            if self.vector_name:
                msg = (
                    f"Qdrant collection {self.collection_name!r} has one unnamed vector, but "
                    f"vector_name={self.vector_name!r}. Set vector_name=''."
                )
                raise ValueError(msg)
            params = vectors
        name = str(getattr(params.distance, "value", params.distance)).lower()
        mapping = {"cosine": "cosine", "dot": "dot", "euclid": "l2"}
        if name not in mapping:
            msg = f"Qdrant distance {params.distance} is not supported; use COSINE, DOT or EUCLID"
            raise ValueError(msg)
        return mapping[name]

    def _pid(self, doc_id: str) -> Any:
        pid = self._point_ids.get(doc_id)
        if pid is None:
            pid = int(doc_id) if doc_id.isdigit() else doc_id
        return pid

    def list_ids(self) -> list[str]:
        """All point ids as strings, in scroll order."""
        ids: list[str] = []
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.collection_name,
                limit=self.page_size,
                offset=offset,
                with_payload=False,
                with_vectors=False,
            )
            for point in points:
                self._point_ids[str(point.id)] = point.id
                ids.append(str(point.id))
            if offset is None:
                return ids

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``ids``, ``(len(ids), dim)`` float32, in the order asked."""
        ids = list(ids)
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        try:
            records = self.client.retrieve(
                self.collection_name,
                ids=[self._pid(i) for i in ids],
                with_payload=False,
                with_vectors=[self.vector_name] if self.vector_name else True,
            )
        except ValueError as err:  # malformed point id
            msg = f"ids not valid in Qdrant (UUID or unsigned int expected), e.g. {ids[:3]!r}"
            raise KeyError(msg) from err
        by_id = {}
        for record in records:
            vector = record.vector
            if isinstance(vector, dict):
                vector = vector[self.vector_name]
            by_id[str(record.id)] = vector
        if len(by_id) != len(set(ids)):
            raise _missing(ids, by_id)
        return _as_rows([by_id[i] for i in ids], len(ids), "Qdrant vectors")

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Replace the ``vector_name`` vector of existing points; payloads stay."""
        from qdrant_client import models

        vectors = _check_write(ids, vectors)
        if not ids:
            return
        points = [
            models.PointVectors(
                id=self._pid(i),
                vector={self.vector_name: v.tolist()} if self.vector_name else v.tolist(),
            )
            for i, v in zip(ids, vectors, strict=True)
        ]
        self.client.update_vectors(self.collection_name, points=points, wait=True)

    def default_state_dir(self) -> Path | None:
        """``<local path>/nudge_state/<collection>`` for local on-disk mode, else ``None``."""
        location = getattr(getattr(self.client, "_client", None), "location", None)
        if isinstance(location, str) and location != ":memory:" and os.path.isdir(location):
            return Path(location) / STATE_FOLDER / self.collection_name
        return None


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
