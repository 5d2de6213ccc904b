"""The store-access protocol: anything that holds vectors by id.

Both integrations implement :class:`EmbeddingStore` once per vector store (a few dozen lines
each); everything that must be safe — saving originals, batching, resume, restore — lives in
:class:`nudge_rag.WriteBack` and is written once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from nudge_rag._queryset import row_index
from nudge_rag._validation import check_matrix

logger = logging.getLogger(__name__)

__all__ = [
    "EmbeddingStore",
    "SearchableEmbeddingStore",
    "ArrayStore",
    "Distance",
    "check_similarity",
    "UNIT_NORM_TOL",
]

Distance = Literal["cosine", "dot", "l2"]
DISTANCES = ("cosine", "dot", "l2")
UNIT_NORM_TOL = 1e-3


@runtime_checkable
class EmbeddingStore(Protocol):
    """What the write-back needs from a vector store.

    Implementations read and write *stored* vectors by id; they never embed text.

    Attributes:
        distance: how the store scores: ``"cosine"``, ``"dot"`` (inner product) or ``"l2"``.
    """

    distance: str

    def list_ids(self) -> list[str]:
        """All ids in the store, in a stable order."""
        ...

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored vectors of ``ids`` as a ``(len(ids), dim)`` float32 array.

        Raises:
            KeyError: an id that is not in the store (the message names it).
        """
        ...

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Replace the vectors of existing ``ids`` in place (update/upsert, never delete-then-add).

        Text and metadata stay as they are. Must be idempotent: writing the same batch twice
        leaves the same state.
        """
        ...


@runtime_checkable
class SearchableEmbeddingStore(EmbeddingStore, Protocol):
    """An :class:`EmbeddingStore` that can also answer nearest-neighbour queries itself.

    Lets ``tune_store(..., passive="store")`` ask the store's own (possibly distributed,
    approximate) kNN index for each validation query's best scores instead of reading every
    stored vector.
    """

    def nearest(self, vectors: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """The ``k`` stored vectors most similar to each row of ``vectors``.

        Args:
            vectors: ``(n, dim)`` float32 query vectors.
            k: results per query.

        Returns:
            ``(ids, scores)``: per query a list of up to ``k`` ids, best first, and an
            ``(n, k)`` float32 array of their *cosine similarity* to the query (``-inf`` where
            fewer than ``k`` came back). Stores that score otherwise convert (e.g. cosine
            distance ``d`` to ``1 - d``).
        """
        ...


class ArrayStore:
    """An in-memory :class:`EmbeddingStore` over a numpy matrix, optionally saved as ``.npz``.

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

    def list_ids(self) -> list[str]:
        """All ids, in row order."""
        return list(self.ids)

    def _rows_of(self, ids: Sequence[str]) -> np.ndarray:
        try:
            return np.fromiter((self._rows[i] for i in ids), dtype=np.int64, count=len(ids))
        except KeyError as err:
            unknown = [i for i in ids if i not in self._rows]
            msg = f"{len(unknown)} id(s) are not in the store, e.g. {unknown[:3]!r}"
            raise KeyError(msg) from err

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

    def nearest(self, vectors: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """Exact cosine kNN over the stored vectors (see :class:`SearchableEmbeddingStore`)."""
        from nudge_rag._search import search

        scores, rows = search(vectors, self.vectors, k, similarity="cosine")
        ids = [[self.ids[r] for r in row if r >= 0] for row in rows.tolist()]
        return ids, scores.astype(np.float32)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``ids``, ``vectors`` and ``distance`` to an ``.npz`` file atomically."""
        from nudge_rag._writeback import atomic_save_npz

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


def check_similarity(similarity: str, distance: str, *, unit_norm: bool) -> None:
    """Refuse a solver/store pair whose scores would not agree.

    NUDGE-N (``similarity="cosine"``) writes unit-norm vectors, so it suits a cosine store, and
    an l2 or dot store whose stored vectors are all unit-norm (both then rank like cosine).
    NUDGE-M (``similarity="dot"``) writes vectors whose length carries meaning, so the store
    must score by inner product.

    Args:
        similarity: the solver's ``similarity`` attribute.
        distance: the store's ``distance``.
        unit_norm: whether every stored vector is unit-norm.

    Raises:
        ValueError: with the variant or store setting to use instead.
    """
    if distance not in DISTANCES:
        msg = f"store distance must be one of {DISTANCES}, got {distance!r}"
        raise ValueError(msg)
    if similarity == "dot":
        if distance != "dot":
            msg = (
                f"NUDGE-M writes non-normalized vectors that must be scored by dot product, but "
                f"the store scores by {distance}. Use NUDGE-N (variant='n' / NudgeN), or create "
                "the collection with inner product (Chroma: metadata={'hnsw:space': 'ip'} or "
                "configuration={'hnsw': {'space': 'ip'}}; Qdrant: Distance.DOT)."
            )
            raise ValueError(msg)
        return
    if similarity != "cosine":
        msg = f"similarity must be 'cosine' or 'dot', got {similarity!r}"
        raise ValueError(msg)
    if distance != "cosine" and not unit_norm:
        msg = (
            f"NUDGE-N writes unit-norm vectors, and the store scores by {distance}, which ranks "
            "like cosine only when every stored vector is unit-norm, but this store holds vectors "
            "that are not. Normalize the stored vectors, or use a cosine collection "
            "(Chroma: 'hnsw:space': 'cosine'; Qdrant: Distance.COSINE)."
        )
        raise ValueError(msg)


def rows_unit_norm(vectors: np.ndarray, tol: float = UNIT_NORM_TOL) -> bool:
    """Whether every row of ``vectors`` has norm 1 within ``tol``."""
    if vectors.shape[0] == 0:
        return True
    norms = np.linalg.norm(vectors, axis=1)
    return bool(np.all(np.abs(norms - 1.0) <= tol))
