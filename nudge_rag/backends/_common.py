"""Small helpers every backend uses: id errors, row checks, score conversion."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from nudge_rag._errors import UnknownIdError

__all__ = ["STATE_FOLDER", "as_rows", "to_cosine", "unknown_ids"]

#: Name of the sidecar folder that holds originals next to a persisted store.
STATE_FOLDER = "nudge_state"


def unknown_ids(ids: Sequence[str], known: Collection[str], where: str) -> UnknownIdError:
    """The error naming the ids of ``ids`` that are not in ``known``."""
    unknown = list(dict.fromkeys(i for i in ids if i not in known))
    msg = f"{len(unknown)} id(s) are not in {where}, e.g. {unknown[:3]!r}"
    return UnknownIdError(msg, unknown)


def as_rows(ids: Sequence[str], vectors: Any) -> np.ndarray:
    """``vectors`` as a ``(len(ids), dim)`` float32 matrix, or a ``ValueError`` saying why not."""
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except ValueError as err:  # ragged rows
        msg = f"vectors for {len(ids)} ids are not a (n, dim) matrix of numbers: {err}"
        raise ValueError(msg) from err
    if matrix.ndim != 2 or matrix.shape[0] != len(ids):
        msg = (
            f"ids must be the same length as vectors. Got {len(ids)} ids and vectors of "
            f"shape {matrix.shape}."
        )
        raise ValueError(msg)
    return matrix


def to_cosine(scores: np.ndarray, distance: str, kind: str) -> np.ndarray:
    """Turn a store's raw scores or distances into cosine similarity (unit vectors).

    Args:
        scores: what the store returned.
        distance: the store's ``distance``.
        kind: ``"similarity"`` (higher is better: Qdrant, Milvus IP/COSINE) with ``l2`` as
            plain euclidean distance, or ``"distance"`` (Chroma: ``1 - similarity``, with
            ``l2`` as the *squared* distance).
    """
    if kind == "similarity":
        return scores if distance != "l2" else 1.0 - scores**2 / 2.0
    if distance == "l2":
        return 1.0 - scores / 2.0
    return 1.0 - scores
