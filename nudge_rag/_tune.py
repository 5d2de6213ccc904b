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

__all__ = ["tune_store", "TuneResult", "make_solver", "STORE_MODE_MIN_DOCS"]

#: ``tune_store(passive="auto")`` asks the store's index instead of reading every vector from
#: this many stored documents on (reading 200k x 768 float32 is ~600 MB).
STORE_MODE_MIN_DOCS = 200_000


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
    msg = (
        "variant must be 'n' (NUDGE-N, cosine stores) or 'm' (NUDGE-M, dot-product stores), "
        f"got {variant!r}"
    )
    raise ValueError(msg)


def tune_store(
    writeback: WriteBack,
    solver: NudgeN | NudgeM,
    train_embeddings: np.ndarray,
    train_answer_ids: Sequence[Sequence[str]],
    val_embeddings: np.ndarray | None = None,
    val_answer_ids: Sequence[Sequence[str]] | None = None,
    *,
    passive: str = "auto",
    store_mode_min_docs: int = STORE_MODE_MIN_DOCS,
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
        passive: how documents that answer no query are accounted for. ``"read"`` reads every
            stored vector (exact). ``"store"`` reads only the answer documents (and any the
            write-back has originals of) and asks the store's own kNN index
            (:class:`SearchableEmbeddingStore.nearest`) for each validation query's best
            scores among the rest: memory and reads independent of the corpus size, exact up
            to the store's search (approximate for HNSW). ``"auto"`` uses ``"store"`` when the
            store can search and holds at least ``store_mode_min_docs`` documents.
        store_mode_min_docs: the ``"auto"`` threshold.

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
    if passive not in ("auto", "read", "store"):
        msg = f"passive must be 'auto', 'read' or 'store', got {passive!r}"
        raise ValueError(msg)
    store = writeback.store
    searchable = callable(getattr(store, "nearest", None))
    if passive == "store" and not searchable:
        msg = f"passive='store' needs a store with nearest(); {type(store).__name__} has none"
        raise TypeError(msg)
    if passive == "auto":
        passive = "read"
        if searchable:
            n_stored = (
                store.count() if callable(getattr(store, "count", None)) else len(store.list_ids())
            )
            if n_stored >= store_mode_min_docs:
                passive = "store"
    if passive == "store":
        return _tune_store_side(
            writeback, solver, train_embeddings, train_answer_ids, val_embeddings, val_answer_ids
        )
    ids, corpus = writeback.read_corpus()
    if not ids:
        msg = "the store is empty: add documents (with their embeddings) before tuning"
        raise ValueError(msg)
    check_similarity(solver.similarity, str(store.distance), unit_norm=rows_unit_norm(corpus))
    rows = row_index(ids)
    train = QuerySet.from_ids(train_embeddings, train_answer_ids, rows, name="train answer ids")
    val = None
    if val_embeddings is not None:
        val = QuerySet.from_ids(val_embeddings, val_answer_ids, rows, name="val answer ids")
    solver.fit(corpus, train, val)
    return _write(writeback, solver, ids)


def _write(writeback: WriteBack, solver: NudgeN | NudgeM, ids: Sequence[str]) -> TuneResult:
    changed = [ids[r] for r in solver.changed_rows_.tolist()]
    writeback.apply(changed, solver.changed_embeddings_)
    logger.info("tuned %d of %d read vectors (gamma=%s)", len(changed), len(ids), solver.gamma_)
    return TuneResult(
        solver=solver,
        changed_ids=changed,
        gamma=solver.gamma_,
        val_score=solver.val_score_,
        n_docs=len(ids),
    )


def _tune_store_side(
    writeback: WriteBack,
    solver: NudgeN | NudgeM,
    train_embeddings: np.ndarray,
    train_answer_ids: Sequence[Sequence[str]],
    val_embeddings: np.ndarray | None,
    val_answer_ids: Sequence[Sequence[str]] | None,
) -> TuneResult:
    """``passive="store"``: read the answer documents only; the store scores the rest."""
    store = writeback.store
    train_embeddings = np.asarray(train_embeddings, dtype=np.float32)
    if val_embeddings is None:
        # Split here (as fit would) so that the store can be asked about the validation queries.
        lengths = [len(a) for a in train_answer_ids]
        whole = QuerySet(train_embeddings, [[0] * n for n in lengths])
        rng = np.random.default_rng(solver.random_state)
        order = rng.permutation(whole.n_queries)
        n_val = min(max(1, round(solver.val_fraction * whole.n_queries)), whole.n_queries - 1)
        val_rows, train_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
        val_embeddings = train_embeddings[val_rows]
        val_answer_ids = [train_answer_ids[i] for i in val_rows]
        train_embeddings = train_embeddings[train_rows]
        train_answer_ids = [train_answer_ids[i] for i in train_rows]
    val_embeddings = np.asarray(val_embeddings, dtype=np.float32)
    answer_ids = {d for answers in (*train_answer_ids, *val_answer_ids) for d in answers}
    active_ids = sorted(answer_ids | set(writeback.moved_ids()))
    if not active_ids:
        msg = "no answer ids: every training query needs at least one answer document"
        raise ValueError(msg)
    ids, corpus = writeback.read_corpus(active_ids)  # KeyError names unknown ids
    check_similarity(solver.similarity, str(store.distance), unit_norm=rows_unit_norm(corpus))
    rows = row_index(ids)
    train = QuerySet.from_ids(train_embeddings, train_answer_ids, rows, name="train answer ids")
    val = QuerySet.from_ids(val_embeddings, val_answer_ids, rows, name="val answer ids")
    k = int(getattr(solver, "val_k", 1))
    passive = _passive_scores_from_store(store, val_embeddings, k, set(ids))
    solver.fit(corpus, train, val, passive_scores=passive)
    return _write(writeback, solver, ids)


def _passive_scores_from_store(
    store: object, queries: np.ndarray, k: int, exclude: set[str]
) -> np.ndarray:
    """``(n, k)`` best ``q . unit(d)`` over stored documents not in ``exclude``, from the store."""
    norms = np.linalg.norm(queries, axis=1)
    safe = np.where(norms > 0, norms, 1.0).astype(np.float32)
    unit = queries / safe[:, None]
    out = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
    todo = np.arange(queries.shape[0])
    ask = k + min(len(exclude), 32)
    while todo.size:
        found_ids, scores = store.nearest(unit[todo], ask)  # type: ignore[attr-defined]
        scores = np.asarray(scores, dtype=np.float32)
        again = []
        for n, (row_ids, row_scores) in enumerate(zip(found_ids, scores)):
            keep = [s for d, s in zip(row_ids, row_scores[: len(row_ids)]) if d not in exclude][:k]
            if len(keep) < k and len(row_ids) >= ask:
                again.append(todo[n])  # every result was an answer document: ask for more
                continue
            out[todo[n], : len(keep)] = keep
        todo = np.asarray(again, dtype=np.int64)
        ask *= 4
    logger.info("passive scores for %d validation queries from the store's index", queries.shape[0])
    scaled = out * norms[:, None].astype(np.float32)
    scaled[np.isneginf(out)] = -np.inf  # keep padding as -inf even for a zero query
    return scaled
