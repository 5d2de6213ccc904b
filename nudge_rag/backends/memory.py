"""In-process stores: numpy arrays, LangChain's and LlamaIndex's in-memory vector stores.

None of them has files of its own, so originals live in memory unless a ``state_dir`` is
given; that memory belongs to the store object (:attr:`state_owner`), so every retriever or
engine over the same store object sees the same originals.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from nudge_rag._files import atomic_save_npz
from nudge_rag._queryset import row_index
from nudge_rag._store import DISTANCES, BaseEmbeddingStore, Distance
from nudge_rag._validation import check_matrix
from nudge_rag.backends._common import as_rows, unknown_ids
from nudge_rag.backends._spec import StoreSpec, Wrapper

__all__ = ["ArrayStore", "InMemoryVectorStoreBackend", "SimpleVectorStoreBackend"]


class ArrayStore(BaseEmbeddingStore):
    """A store over a numpy matrix, optionally saved as ``.npz``.

    Used by the CLI and the tests, and handy for a corpus kept as arrays.

    Args:
        ids: the id of each row.
        vectors: ``(n_docs, dim)`` float array (copied to float32).
        distance: ``"cosine"``, ``"dot"`` or ``"l2"``.
    """

    def __init__(self, ids: Sequence[str], vectors: np.ndarray, distance: Distance = "cosine"):
        vectors = check_matrix(vectors, "vectors", allow_empty=True)
        if len(ids) != vectors.shape[0]:
            msg = (
                "ids must be the same length as vectors. "
                f"Got {len(ids)} ids and {vectors.shape[0]} vectors."
            )
            raise ValueError(msg)
        if distance not in DISTANCES:
            msg = f"distance must be one of {DISTANCES}, got {distance!r}"
            raise ValueError(msg)
        self.ids = [str(i) for i in ids]
        self.vectors = np.array(vectors, dtype=np.float32, copy=True)
        self.distance = distance
        self._rows = row_index(self.ids)

    @property
    def state_owner(self) -> object:
        """The object whose in-memory originals this is (the store itself)."""
        return self

    def count(self) -> int:
        """Number of rows."""
        return len(self.ids)

    def list_ids(self) -> list[str]:
        """All ids, in row order."""
        return list(self.ids)

    def _rows_of(self, ids: Sequence[str]) -> np.ndarray:
        try:
            return np.fromiter((self._rows[i] for i in ids), dtype=np.int64, count=len(ids))
        except KeyError:
            raise unknown_ids(ids, self._rows, "the store") from None

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``ids``, ``(len(ids), dim)`` float32."""
        return self.vectors[self._rows_of(ids)]

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Overwrite the rows of ``ids``."""
        vectors = check_matrix(vectors, "vectors", dim=self.vectors.shape[1], allow_empty=True)
        rows = self._rows_of(ids)
        if rows.size != vectors.shape[0]:
            msg = (
                "ids must be the same length as vectors. "
                f"Got {rows.size} ids and {vectors.shape[0]} vectors."
            )
            raise ValueError(msg)
        self.vectors[rows] = vectors

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Append rows with new ids (the store object, and so its saved originals, stay)."""
        ids = [str(i) for i in ids]
        dim = self.vectors.shape[1] if self.ids else None
        vectors = check_matrix(vectors, "vectors", dim=dim, allow_empty=True)
        if len(ids) != vectors.shape[0]:
            msg = (
                "ids must be the same length as vectors. "
                f"Got {len(ids)} ids and {vectors.shape[0]} vectors."
            )
            raise ValueError(msg)
        clash = [i for i in dict.fromkeys(ids) if i in self._rows]
        if clash or len(set(ids)) != len(ids):
            msg = f"ids to add must be new and unique; {len(clash)} exist, e.g. {clash[:3]!r}"
            raise ValueError(msg)
        base = self.vectors if self.ids else np.zeros((0, vectors.shape[1]), dtype=np.float32)
        self.vectors = np.concatenate([base, vectors.astype(np.float32, copy=False)])
        self._rows.update((i, len(self.ids) + k) for k, i in enumerate(ids))
        self.ids.extend(ids)

    def nearest(self, vectors: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """Exact cosine kNN over the stored vectors (see :class:`SearchableEmbeddingStore`)."""
        from nudge_rag._search import search

        scores, rows = search(vectors, self.vectors, k, similarity="cosine")
        ids = [[self.ids[r] for r in row if r >= 0] for row in rows.tolist()]
        return ids, scores.astype(np.float32)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``ids``, ``vectors`` and ``distance`` to an ``.npz`` file atomically."""
        atomic_save_npz(
            path,
            ids=np.asarray(self.ids, dtype=str),
            vectors=self.vectors,
            distance=np.asarray(self.distance),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> ArrayStore:
        """Read a store written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            return cls(data["ids"].tolist(), data["vectors"], str(data["distance"]))


class InMemoryVectorStoreBackend(BaseEmbeddingStore):
    """LangChain's ``InMemoryVectorStore`` (``langchain_core``), which scores by cosine.

    The store keeps ``{id: {"id", "vector", "text", "metadata"}}`` in its ``store`` dict. A
    write replaces each entry with a copy holding the new vector (one dict assignment per id),
    so a reader sees the old or the new entry, never none. The new vector has the type the
    entry held (a list of floats, or a numpy array).

    Args:
        vectorstore: an ``InMemoryVectorStore``.
    """

    distance = "cosine"

    def __init__(self, vectorstore: Any):
        self.vectorstore = vectorstore

    @property
    def name(self) -> str:
        """``"InMemoryVectorStore"``."""
        return type(self.vectorstore).__name__

    @property
    def state_owner(self) -> object:
        """The ``InMemoryVectorStore``: every retriever over it shares its originals."""
        return self.vectorstore

    def count(self) -> int:
        """Number of entries."""
        return len(self.vectorstore.store)

    def list_ids(self) -> list[str]:
        """All ids, in insertion order."""
        return [str(i) for i in self.vectorstore.store]

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``ids``, ``(len(ids), dim)`` float32."""
        entries = self.vectorstore.store
        try:
            rows = [entries[i]["vector"] for i in ids]
        except KeyError:
            raise unknown_ids(ids, entries, "the InMemoryVectorStore") from None
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return as_rows(ids, rows)

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Replace the vectors of existing ``ids``; text and metadata stay."""
        vectors = as_rows(ids, vectors)
        entries = self.vectorstore.store
        if any(i not in entries for i in ids):
            raise unknown_ids(ids, entries, "the InMemoryVectorStore")
        for doc_id, vector in zip(ids, vectors, strict=True):
            entry = entries[doc_id]
            if isinstance(entry.get("vector"), np.ndarray):  # keep the type the store holds
                value: Any = vector.astype(entry["vector"].dtype)
            else:
                value = vector.astype(float).tolist()
            entries[doc_id] = {**entry, "vector": value}


class SimpleVectorStoreBackend(BaseEmbeddingStore):
    """LlamaIndex's default in-memory ``SimpleVectorStore`` (``data.embedding_dict``).

    It ranks by cosine similarity in its default query mode, so ``distance`` is ``"cosine"``;
    NUDGE-M is refused there.

    Args:
        vector_store: the index's ``SimpleVectorStore`` (``index.vector_store``).
    """

    distance = "cosine"

    def __init__(self, vector_store: Any):
        self.vector_store = vector_store

    @property
    def name(self) -> str:
        """``"SimpleVectorStore"``."""
        return type(self.vector_store).__name__

    @property
    def state_owner(self) -> object:
        """The ``SimpleVectorStore``: every engine over it shares its originals."""
        return self.vector_store

    @property
    def _embeddings(self) -> dict[str, list[float]]:
        return self.vector_store.data.embedding_dict

    def count(self) -> int:
        """Number of stored embeddings."""
        return len(self._embeddings)

    def list_ids(self) -> list[str]:
        """Node ids in insertion order."""
        return list(self._embeddings)

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``ids``: ``(len(ids), dim)`` float32."""
        store = self._embeddings
        if any(i not in store for i in ids):
            raise unknown_ids(ids, store, "the SimpleVectorStore")
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        return as_rows(ids, [store[i] for i in ids])

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Replace ``data.embedding_dict[node_id]`` (text and metadata live elsewhere)."""
        matrix = as_rows(ids, vectors)
        store = self._embeddings
        if any(i not in store for i in ids):
            raise unknown_ids(ids, store, "the SimpleVectorStore")
        for node_id, row in zip(ids, matrix.tolist(), strict=True):
            store[node_id] = row


def from_langchain_in_memory(vectorstore: Any) -> InMemoryVectorStoreBackend:
    """Registry factory for ``langchain_core``'s ``InMemoryVectorStore``."""
    return InMemoryVectorStoreBackend(vectorstore)


def from_llama_index_simple(vector_store: Any) -> SimpleVectorStoreBackend:
    """Registry factory for LlamaIndex's ``SimpleVectorStore``."""
    return SimpleVectorStoreBackend(vector_store)


SPEC = StoreSpec(
    name="memory",
    label="In memory",
    extra="langchain",
    wrappers=(
        Wrapper(
            "langchain_core.vectorstores.in_memory.InMemoryVectorStore",
            "langchain",
            "from_langchain_in_memory",
        ),
        Wrapper(
            "llama_index.core.vector_stores.simple.SimpleVectorStore",
            "llama-index",
            "from_llama_index_simple",
            extra="llama-index",
        ),
    ),
    cosine_hint="InMemoryVectorStore and SimpleVectorStore rank by cosine",
    restore="bit-exact (float32); originals in memory unless state_dir= is given",
)
