"""Drop-in layer for users of the reference ``nudge-ft`` package.

``from nudge_rag.compat import NUDGEN, NUDGEM`` replaces ``from nudge import NUDGEN, NUDGEM``:
same ``finetune_embeddings`` call, same ``{"q_embs", "q_ans_indx"}`` dicts, same result, no
torch. Differences (all fixes): float64 input is accepted; a validation query without answers
is dropped with a warning instead of silently disabling NUDGE-N; a negative answer index is an
error instead of moving the last document; rows where the reference produced NaN (float32
cancellation) get their correct unit-norm value; ``gamma`` given as a list is searched (NUDGE-N).
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np

from nudge_rag._solver import NudgeM, NudgeN, fit_solver

__all__ = ["NUDGEN", "NUDGEM", "QueriesAnswersDict"]


class QueriesAnswersDict(TypedDict):
    """The reference's query set: ``q_embs`` ``(n, dim)`` and one answer-row list per query."""

    q_embs: np.ndarray
    q_ans_indx: list[list[int]]


class NUDGEN:
    """Reference-compatible NUDGE-N (``nudge.NUDGEN``).

    Args:
        device: accepted and ignored (the computation is numpy on the CPU).
    """

    def __init__(self, device: Any = None) -> None:
        self.device = device
        self.solver_: NudgeN | None = None

    def finetune_embeddings(
        self,
        embeddings: np.ndarray,
        train_set: QueriesAnswersDict,
        val_set: QueriesAnswersDict,
        nontrain_embeddings: np.ndarray | None = None,
        val_batch_size: int = 256,
        val_k: int = 1,
        gamma: float | list[float] | None = None,
    ) -> np.ndarray:
        """Return the fine-tuned ``embeddings`` (unit-norm rows, same shape).

        Args:
            embeddings: ``(n_docs, dim)`` document embeddings.
            train_set: ``{"q_embs": (n, dim), "q_ans_indx": [[row, ...], ...]}``.
            val_set: the same for validation.
            nontrain_embeddings: optional documents that answer no query; they only compete.
            val_batch_size: accepted for compatibility (blocks are sized automatically).
            val_k: gamma is chosen on validation recall@``val_k``.
            gamma: a fixed gamma, or a list of candidates to search; ``None`` for the default grid.
        """
        del val_batch_size
        if isinstance(gamma, (list, tuple, np.ndarray)):
            solver = NudgeN(gammas=list(gamma), val_k=val_k)
        else:
            solver = NudgeN(gamma=gamma, val_k=val_k)
        out = _fit_whole(solver, embeddings, train_set, val_set, nontrain_embeddings)
        self.solver_ = solver
        return out


class NUDGEM:
    """Reference-compatible NUDGE-M (``nudge.NUDGEM``); output needs dot-product scoring.

    Args:
        device: accepted and ignored.
    """

    def __init__(self, device: Any = None) -> None:
        self.device = device
        self.solver_: NudgeM | None = None

    def finetune_embeddings(
        self,
        embeddings: np.ndarray,
        train_set: QueriesAnswersDict,
        val_set: QueriesAnswersDict,
        nontrain_embeddings: np.ndarray | None = None,
        val_batch_size: int = 256,
        gamma: float | None = None,
    ) -> np.ndarray:
        """Return the fine-tuned ``embeddings`` (not normalised; score by dot product).

        Args:
            embeddings: ``(n_docs, dim)`` document embeddings.
            train_set: ``{"q_embs": (n, dim), "q_ans_indx": [[row, ...], ...]}``.
            val_set: the same for validation.
            nontrain_embeddings: optional documents that answer no query; they only compete.
            val_batch_size: accepted for compatibility.
            gamma: a fixed gamma; ``None`` finds it exactly on validation.
        """
        del val_batch_size
        solver = NudgeM(gamma=gamma)
        out = _fit_whole(solver, embeddings, train_set, val_set, nontrain_embeddings)
        self.solver_ = solver
        return out


def _fit_whole(
    solver: NudgeN | NudgeM,
    embeddings: np.ndarray,
    train_set: QueriesAnswersDict,
    val_set: QueriesAnswersDict,
    nontrain_embeddings: np.ndarray | None,
) -> np.ndarray:
    """Fit as the reference does and return the whole tuned matrix.

    The moved rows are written straight into that matrix (no separate copy of them), which
    is all the reference's ``finetune_embeddings`` returns.
    """
    fit_solver(
        solver,
        embeddings,
        train_set,
        val_set,
        nontrain_embeddings=nontrain_embeddings,
        dense_output=True,
    )
    return solver.embeddings_
