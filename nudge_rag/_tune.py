"""``tune_store``: read a store's vectors, fit a solver, write the moved rows back safely.

Both framework integrations call this; they only supply an :class:`EmbeddingStore` and the
embedded training queries with the ids of the documents that answer them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nudge_rag._queryset import QuerySet, row_index
from nudge_rag._solver import NudgeM, NudgeN
from nudge_rag._store import check_similarity, rows_unit_norm
from nudge_rag._writeback import WriteBack, WriteBackError

logger = logging.getLogger(__name__)

__all__ = ["tune_store", "TuneResult", "make_solver"]


@dataclass
class TuneResult:
    """What a store tuning did.

    Attributes:
        solver: the fitted :class:`NudgeN` / :class:`NudgeM`.
        changed_ids: ids whose stored vector was replaced.
        gamma: the step size used.
        val_score: validation score at ``gamma`` (``None`` without validation).
        n_docs: documents read from the store.
    """

    solver: NudgeN | NudgeM
    changed_ids: list[str] = field(default_factory=list)
    gamma: float = 0.0
    val_score: float | None = None
    n_docs: int = 0


def make_solver(variant: str | NudgeN | NudgeM = "n", **params: object) -> NudgeN | NudgeM:
    """A solver from ``"n"`` / ``"m"`` (case-insensitive, ``"nudge-n"`` too) or an instance."""
    if isinstance(variant, (NudgeN, NudgeM)):
        return variant
    key = str(variant).lower().replace("nudge", "").strip("-_ ")
    if key == "n":
        return NudgeN(**params)
    if key == "m":
        return NudgeM(**params)
    msg = f"variant must be 'n' (NUDGE-N, cosine stores) or 'm' (NUDGE-M, dot-product stores), got {variant!r}"
    raise ValueError(msg)


def tune_store(
    writeback: WriteBack,
    solver: NudgeN | NudgeM,
    train_embeddings: np.ndarray,
    train_answer_ids: Sequence[Sequence[str]],
    val_embeddings: np.ndarray | None = None,
    val_answer_ids: Sequence[Sequence[str]] | None = None,
) -> TuneResult:
    """Fit ``solver`` on the store behind ``writeback`` and write the moved rows back.

    The corpus is read with saved originals in place of tuned vectors, so a second call
    starts from the originals; rows an earlier call moved and this one does not go back to
    their originals.

    Args:
        writeback: the store and where its originals live.
        solver: an unfitted (or re-usable) :class:`NudgeN` or :class:`NudgeM`.
        train_embeddings: ``(n_train, dim)`` float array of training query embeddings.
        train_answer_ids: for each training query, the store ids of its answers.
        val_embeddings: optional ``(n_val, dim)`` validation query embeddings.
        val_answer_ids: their answer ids.

    Returns:
        A :class:`TuneResult`.

    Raises:
        ValueError: empty store, dimension or metric mismatch, bad answers.
        KeyError: an answer id that is not in the store.
        WriteBackError: a pending interrupted write-back, or a failed write.
    """
    if writeback.has_pending:
        msg = (
            "an interrupted write-back is pending for this store: call resume() to finish it "
            "or restore() to undo it before tuning again"
        )
        raise WriteBackError(msg)
    if (val_embeddings is None) != (val_answer_ids is None):
        msg = "val_embeddings and val_answer_ids must be given together"
        raise ValueError(msg)
    ids, corpus = writeback.read_corpus()
    if not ids:
        msg = "the store is empty: add documents (with their embeddings) before tuning"
        raise ValueError(msg)
    check_similarity(
        solver.similarity, str(writeback.store.distance), unit_norm=rows_unit_norm(corpus)
    )
    rows = row_index(ids)
    train = QuerySet.from_ids(train_embeddings, train_answer_ids, rows, name="train answer ids")
    val = None
    if val_embeddings is not None:
        val = QuerySet.from_ids(val_embeddings, val_answer_ids, rows, name="val answer ids")
    solver.fit(corpus, train, val)
    changed = [ids[r] for r in solver.changed_rows_.tolist()]
    writeback.apply(changed, solver.changed_embeddings_)
    logger.info("tuned %d of %d stored vectors (gamma=%s)", len(changed), len(ids), solver.gamma_)
    return TuneResult(
        solver=solver,
        changed_ids=changed,
        gamma=solver.gamma_,
        val_score=solver.val_score_,
        n_docs=len(ids),
    )
