"""The store protocol: what every backend offers, and the similarity contract.

A backend reads and writes the vectors a vector store already holds, by id; it never embeds
text. Everything that must be safe (saving originals, batching, resume, restore) lives in
:class:`nudge_rag.WriteBack`, written once for every backend. :class:`BaseEmbeddingStore`
gives the optional members sensible defaults, so a new backend implements five methods.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from nudge_rag._errors import MetricMismatchError

logger = logging.getLogger(__name__)

__all__ = [
    "BaseEmbeddingStore",
    "DISTANCES",
    "Distance",
    "EmbeddingStore",
    "IndexedEmbeddingStore",
    "SearchableEmbeddingStore",
    "SharedStateEmbeddingStore",
    "StatefulEmbeddingStore",
    "UNIT_NORM_TOL",
    "check_similarity",
    "rows_unit_norm",
    "supports",
]

Distance = Literal["cosine", "dot", "l2"]
DISTANCES = ("cosine", "dot", "l2")
UNIT_NORM_TOL = 1e-3


@runtime_checkable
class EmbeddingStore(Protocol):
    """Everything nudge-rag needs from a vector store.

    Attributes:
        distance: how the store scores: ``"cosine"``, ``"dot"`` (inner product) or ``"l2"``.
        name: a short name for messages (the collection or table).
        is_remote: whether the data lives on a server (then originals cannot default to a
            folder next to the store, and the caller must give ``state_dir``).
    """

    distance: str

    @property
    def name(self) -> str:
        """A short name for messages: the collection, table or class."""
        ...

    @property
    def is_remote(self) -> bool:
        """Whether the vectors live on a server rather than in this process or a local file."""
        ...

    def count(self) -> int:
        """Number of stored vectors."""
        ...

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

    def default_state_dir(self) -> Path | None:
        """Where originals live when the caller does not say: next to the store's own files.

        ``None`` for a store without local files (in memory, or on a server).
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


@runtime_checkable
class IndexedEmbeddingStore(Protocol):
    """A store whose index needs work after in-place writes to keep serving well.

    :class:`~nudge_rag.WriteBack` calls :meth:`refresh_index` once a fit, a restore or a resume
    has written its last batch (pgvector: ``VACUUM (ANALYZE)``, so an HNSW or IVFFlat index
    stops returning dead row versions).
    """

    def refresh_index(self) -> None:
        """Bring the store's index up to date with the vectors just written."""
        ...


@runtime_checkable
class StatefulEmbeddingStore(Protocol):
    """A store that keeps its own write-back state: originals, plan and writer lock.

    :class:`~nudge_rag.WriteBack` without a ``state_dir`` then keeps everything in the store
    itself (pgvector: side tables and an advisory lock in the same database), so a new
    process finds it without a folder.
    """

    def writeback_state(self) -> Any:
        """The state, a :class:`~nudge_rag.backends.WriteBackState` (with its writer lock)."""
        ...


@runtime_checkable
class SharedStateEmbeddingStore(Protocol):
    """A store whose in-memory write-back state belongs to another object.

    ``state_owner`` is the object every backend over the same data shares (an in-memory
    store, a Chroma client and collection), so two retrievers over one store share its
    originals and lock.
    """

    @property
    def state_owner(self) -> object:
        """The object the in-memory state is kept with."""
        ...


class BaseEmbeddingStore:
    """Defaults for the optional members of :class:`EmbeddingStore`.

    Subclass it and implement ``distance``, ``list_ids``, ``get_vectors`` and ``set_vectors``
    (and ``nearest`` if the store can search): ``count`` lists the ids, ``name`` is the class
    name, the store is local and has no default state folder.
    """

    distance: str = "cosine"

    @property
    def name(self) -> str:
        """The class name."""
        return type(self).__name__

    @property
    def is_remote(self) -> bool:
        """``False``."""
        return False

    def count(self) -> int:
        """``len(list_ids())``."""
        return len(self.list_ids())

    def list_ids(self) -> list[str]:  # pragma: no cover - abstract
        """All ids, in a stable order."""
        raise NotImplementedError

    def default_state_dir(self) -> Path | None:
        """``None``: keep originals where the caller says."""
        return None


def supports(store: object, capability: type) -> bool:
    """Whether ``store`` offers the members of the Protocol ``capability``.

    ``isinstance`` alone is not enough for the wrappers nudge-rag and its users put around a
    backend: one that forwards members with ``__getattr__`` is invisible to Python 3.12+'s
    protocol check, and one whose property declines with ``AttributeError`` passes 3.11's.
    This looks the Protocol's own members up on the object, so both answer the same on every
    Python version.
    """
    names = [
        n
        for n, v in vars(capability).items()
        if not n.startswith("_") and (callable(v) or isinstance(v, property))
    ]
    try:
        return all(getattr(store, n) is not None for n in names)
    except AttributeError:
        return False


def check_similarity(
    similarity: str,
    distance: str,
    *,
    unit_norm: bool,
    hints: Callable[[Literal["cosine", "dot"]], str] | None = None,
) -> None:
    """Refuse a solver/store pair whose scores would not agree.

    NUDGE-N (``similarity="cosine"``) writes unit-norm vectors, so it suits a cosine store, and
    an l2 or dot store whose stored vectors are all unit-norm (both then rank like cosine).
    NUDGE-M (``similarity="dot"``) writes vectors whose length carries meaning, so the store
    must score by inner product.

    Args:
        similarity: the solver's ``similarity`` attribute.
        distance: the store's ``distance``.
        unit_norm: whether every stored vector is unit-norm.
        hints: ``kind -> "Chroma: ...; Qdrant: ..."``, how each store is made to score by
            cosine or inner product, for the message (the tuning flow passes the stores'
            specs' hints).

    Raises:
        MetricMismatchError: (a ``ValueError``) with the variant or store setting to use instead.
    """
    if distance not in DISTANCES:
        msg = f"store distance must be one of {DISTANCES}, got {distance!r}"
        raise MetricMismatchError(msg)
    if similarity == "dot":
        if distance != "dot":
            msg = (
                f"NUDGE-M writes non-normalized vectors that must be scored by dot product, but "
                f"the store scores by {distance}. Use NUDGE-N (variant='n' / NudgeN), or create "
                "the collection with inner product" + (f" ({hints('dot')})." if hints else ".")
            )
            raise MetricMismatchError(msg)
        return
    if similarity != "cosine":
        msg = f"similarity must be 'cosine' or 'dot', got {similarity!r}"
        raise ValueError(msg)
    if distance != "cosine" and not unit_norm:
        msg = (
            f"NUDGE-N writes unit-norm vectors, and the store scores by {distance}, which ranks "
            "like cosine only when every stored vector is unit-norm, but this store holds vectors "
            "that are not. Normalize the stored vectors, or use a cosine collection"
            + (f" ({hints('cosine')})." if hints else ".")
        )
        raise MetricMismatchError(msg)


def rows_unit_norm(vectors: np.ndarray, tol: float = UNIT_NORM_TOL) -> bool:
    """Whether every row of ``vectors`` has norm 1 within ``tol``."""
    if vectors.shape[0] == 0:
        return True
    norms = np.linalg.norm(vectors, axis=1)
    return bool(np.all(np.abs(norms - 1.0) <= tol))
