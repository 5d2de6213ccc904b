"""The one tuning flow: pairs in, checks, embeddings, solver, safe write-back.

:class:`StoreTuner` is what both framework integrations and the command line call: it takes
training pairs (text or already embedded), groups and deduplicates them, checks ids, metric
and dimensions before any embedding call is paid for, embeds the questions in batches, runs
the solver through :func:`tune_store`, and writes the moved rows back with
:class:`~nudge_rag.WriteBack`. :func:`tune_store` is the lower-level step for callers that
hold embedded queries and a ``WriteBack`` already.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, Literal

import numpy as np

from nudge_rag._errors import DimensionMismatchError, StateDirError, UnknownIdError
from nudge_rag._pairs import Pairs, group_pairs, normalize_pairs
from nudge_rag._query_adapter import DEFAULT_FOLDS as ADAPTER_FOLDS
from nudge_rag._query_adapter import QueryAdapter
from nudge_rag._queryset import QuerySet, row_index
from nudge_rag._solver import NudgeM, NudgeN
from nudge_rag._store import (
    EmbeddingStore,
    SearchableEmbeddingStore,
    StatefulEmbeddingStore,
    check_similarity,
    rows_unit_norm,
    supports,
)
from nudge_rag._validation import check_positive_int
from nudge_rag._writeback import WriteBack, WriteBackError, WriteBackStatus
from nudge_rag.backends import STATE_FOLDER, backend_for
from nudge_rag.backends._spec import metric_hints

logger = logging.getLogger(__name__)

__all__ = [
    "AUTO_MIN_GAIN",
    "QUERY_ADAPTER_MODES",
    "STORE_MODE_MIN_DOCS",
    "StoreTuner",
    "TuneResult",
    "make_solver",
    "resolve_state_dir",
    "tune_store",
]

#: ``state_dir`` value that keeps originals in memory on purpose (no warning).
MEMORY = "memory"
AUTO = "auto"
_N_SHOWN = 3

#: ``tune_store(passive="auto")`` asks the store's index instead of reading every vector from
#: this many stored documents on (reading 200k x 768 float32 is ~600 MB).
STORE_MODE_MIN_DOCS = 200_000

#: ``query_adapter`` values: ``"off"`` (NUDGE alone), ``"on"`` (always keep the adapter),
#: ``"auto"`` (keep it only when validation shows a gain of at least :data:`AUTO_MIN_GAIN`).
QueryAdapterMode = Literal["off", "on", "auto"]
QUERY_ADAPTER_MODES: tuple[str, ...] = ("off", "on", "auto")

#: ``query_adapter="auto"`` keeps the adapter when it gains at least this much nDCG@10 over
#: NUDGE alone on validation (or cross-validation): the best of 24 (lambda, blend) points
#: beats NUDGE alone by a little through noise alone.
AUTO_MIN_GAIN = 0.005


def check_query_adapter(value: Any) -> str:
    """``query_adapter``: one of :data:`QUERY_ADAPTER_MODES` (``True``/``False`` too)."""
    if value is True or value is False:
        return "on" if value else "off"
    if isinstance(value, str) and value.lower() in QUERY_ADAPTER_MODES:
        return value.lower()
    msg = f"query_adapter must be one of {QUERY_ADAPTER_MODES}, got {value!r}"
    raise ValueError(msg)


@dataclass
class TuneResult:
    """What a store tuning did.

    Attributes:
        solver: the fitted :class:`NudgeN` / :class:`NudgeM`.
        changed_ids: ids whose stored vector was replaced.
        gamma: the step size used.
        val_score: validation score at ``gamma`` (``None`` without validation).
        n_docs: documents read from the store.
        method: how gamma was chosen: ``"cv"`` (cross-validated on the training pairs),
            ``"val"`` (on validation pairs, or a held-out share with ``cv=None``) or
            ``"fixed"``.
        n_folds: folds of the cross-validation (0 when not cross-validated).
        n_train_queries: distinct training questions.
        n_val_queries: distinct validation questions (0 when none were given).
        timings: seconds per stage (``"embed"``, ``"read"``, ``"solve"``, ``"write"``).
        state_dir: where the originals are kept (``None``: in memory).
        drifted_ids: documents someone else changed since nudge-rag wrote them (edited, or
            deleted and re-added): their stale originals were dropped and their current
            vectors used as originals; those that changed while this fit ran were not tuned
            (they are not in ``changed_ids``).
        query_adapter: the :class:`~nudge_rag.QueryAdapter` saved with the vectors and
            applied to queries (``None``: NUDGE alone).
        query_adapter_mode: the ``query_adapter`` option (``"off"``, ``"on"``, ``"auto"``).
        query_adapter_reason: what was chosen and why, in one sentence.
        query_adapter_scores: validation nDCG@10 of NUDGE alone (``"nudge"``) and with the
            adapter (``"nudge+adapter"``), the chosen ``"lambda"`` and ``"blend"``, how they
            were chosen (``"chosen_by"``: ``"val"`` or ``"cv"``) and on how many queries
            (``"n_queries"``); ``None`` with ``"off"``.
    """

    solver: NudgeN | NudgeM
    changed_ids: list[str] = field(default_factory=list)
    gamma: float = 0.0
    val_score: float | None = None
    n_docs: int = 0
    method: str = ""
    n_folds: int = 0
    n_train_queries: int = 0
    n_val_queries: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    state_dir: Path | None = None
    drifted_ids: list[str] = field(default_factory=list)
    query_adapter: QueryAdapter | None = None
    query_adapter_mode: str = "off"
    query_adapter_reason: str = ""
    query_adapter_scores: dict[str, Any] | None = None

    @property
    def variant(self) -> str:
        """``"n"`` or ``"m"``."""
        return "m" if isinstance(self.solver, NudgeM) else "n"


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
    query_adapter: QueryAdapterMode = "off",
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
        query_adapter: ``"off"`` (default): NUDGE alone. ``"on"``: after NUDGE, fit a
            :class:`~nudge_rag.QueryAdapter` on the tuned documents (lambda and blend chosen
            on the validation queries, or cross-validated on the folds of gamma's
            cross-validation with NUDGE re-applied at the chosen gamma on each fold) and save
            it with the vectors. ``"auto"``: the same, kept only when it gains at least
            :data:`AUTO_MIN_GAIN` nDCG@10 over NUDGE alone on that validation. NUDGE-N
            (cosine) and ``passive="read"`` only.

    Returns:
        A :class:`TuneResult`.

    Raises:
        ValueError: empty store, dimension or metric mismatch, bad answers.
        KeyError: an answer id that is not in the store.
        WriteBackError: a pending interrupted write-back, or a failed write.
        StoreBusyError: (a ``WriteBackError``) another fit, restore or resume of this store
            is running (see ``WriteBack(lock_timeout=...)``).

    The store's writer lock is held from the read to the last write, so another writer
    cannot come between what the fit read and what it writes.
    """
    with writeback.locked("fit"):
        return _tune_store(
            writeback,
            solver,
            train_embeddings,
            train_answer_ids,
            val_embeddings,
            val_answer_ids,
            passive=passive,
            store_mode_min_docs=store_mode_min_docs,
            query_adapter=check_query_adapter(query_adapter),
        )


def _tune_store(
    writeback: WriteBack,
    solver: NudgeN | NudgeM,
    train_embeddings: np.ndarray,
    train_answer_ids: Sequence[Sequence[str]],
    val_embeddings: np.ndarray | None,
    val_answer_ids: Sequence[Sequence[str]] | None,
    *,
    passive: str,
    store_mode_min_docs: int,
    query_adapter: str = "off",
) -> TuneResult:
    if query_adapter != "off" and isinstance(solver, NudgeM):
        msg = (
            f"query_adapter={query_adapter!r} needs NUDGE-N (cosine stores); "
            "use query_adapter='off' with NUDGE-M"
        )
        raise ValueError(msg)
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
    searchable = supports(store, SearchableEmbeddingStore)
    if passive == "store" and not searchable:
        msg = f"passive='store' needs a store with nearest(); {type(store).__name__} has none"
        raise TypeError(msg)
    if passive == "auto":
        passive = "read"
        # The query adapter scores validation queries against every stored vector.
        if searchable and query_adapter == "off" and store.count() >= store_mode_min_docs:
            passive = "store"
    if passive == "store" and query_adapter != "off":
        msg = (
            f"query_adapter={query_adapter!r} scores validation queries against every "
            "stored vector, which passive='store' does not read: pass passive='read' or "
            "query_adapter='off'"
        )
        raise ValueError(msg)
    if passive == "store":
        return _tune_store_side(
            writeback, solver, train_embeddings, train_answer_ids, val_embeddings, val_answer_ids
        )
    timings: dict[str, float] = {}
    start = perf_counter()
    ids, corpus = writeback.read_corpus()
    timings["read"] = perf_counter() - start
    if not ids:
        msg = "the store is empty: add documents (with their embeddings) before tuning"
        raise ValueError(msg)
    check_similarity(
        solver.similarity,
        str(store.distance),
        unit_norm=rows_unit_norm(corpus),
        hints=metric_hints,
    )
    start = perf_counter()
    rows = row_index(ids)
    train = QuerySet.from_ids(train_embeddings, train_answer_ids, rows, name="train answer ids")
    val = None
    if val_embeddings is not None:
        val = QuerySet.from_ids(val_embeddings, val_answer_ids, rows, name="val answer ids")
    solver.fit(corpus, train, val)
    timings["solve"] = perf_counter() - start
    adapter = None
    if query_adapter != "off":
        start = perf_counter()
        adapter = _fit_adapter(solver, corpus, train, val, query_adapter)
        timings["adapter"] = perf_counter() - start
    return _write(writeback, solver, ids, timings, corpus, adapter)


@dataclass(frozen=True)
class _AdapterChoice:
    kept: QueryAdapter | None
    mode: str
    reason: str
    scores: dict[str, Any]


def _fit_adapter(
    solver: NudgeN | NudgeM,
    corpus: np.ndarray,
    train: QuerySet,
    val: QuerySet | None,
    mode: str,
) -> _AdapterChoice:
    """The adapter fitted after ``solver``, and whether ``mode`` keeps it."""
    tuned = solver.embeddings_
    if val is not None:
        if solver.refit_on_val:
            logger.warning(
                "refit_on_val: NUDGE was refitted on the validation pairs, so the query "
                "adapter's validation scores are optimistic (the documents moved toward them)"
            )
        adapter = QueryAdapter().fit(tuned, train, val)
    else:
        params = {**solver.get_params(), "gamma": solver.gamma_, "show_progress": False}

        def fold_docs(fold_train: QuerySet) -> np.ndarray:
            # The documents as NUDGE tunes them without the fold's held-out queries.
            return type(solver)(**params).fit(corpus, fold_train).embeddings_

        adapter = QueryAdapter(
            cv=solver.cv if solver.cv is not None else ADAPTER_FOLDS,
            random_state=solver.random_state,
            cv_max_queries=solver.cv_max_queries,
        ).fit(tuned, train, fold_docs=fold_docs)
    scores = {
        "nudge": adapter.base_score_,
        "nudge+adapter": adapter.val_score_,
        "lambda": adapter.lambda_,
        "blend": adapter.blend_,
        "chosen_by": adapter.chosen_by_,
        "n_queries": adapter.n_val_queries_,
    }
    where = (
        f"on {adapter.n_val_queries_} validation queries"
        if adapter.chosen_by_ == "val"
        else f"cross-validated over {adapter.n_folds_} folds of the training queries"
    )
    summary = (
        f"nDCG@10 {adapter.val_score_:.4f} with the adapter (lambda={adapter.lambda_:g}, "
        f"blend={adapter.blend_:g}) vs {adapter.base_score_:.4f} NUDGE alone, {where}"
    )
    if mode == "on":
        reason = f"query_adapter='on': kept; {summary}"
        kept: QueryAdapter | None = adapter
    elif adapter.gain_ >= AUTO_MIN_GAIN:
        reason = (
            f"query_adapter='auto': kept, gain {adapter.gain_:+.4f} >= {AUTO_MIN_GAIN}; {summary}"
        )
        kept = adapter
    else:
        reason = (
            f"query_adapter='auto': not kept, gain {adapter.gain_:+.4f} < {AUTO_MIN_GAIN}; "
            f"{summary}"
        )
        kept = None
    logger.info("%s", reason)
    return _AdapterChoice(kept, mode, reason, scores)


def _write(
    writeback: WriteBack,
    solver: NudgeN | NudgeM,
    ids: Sequence[str],
    timings: dict[str, float],
    corpus: np.ndarray | None = None,
    adapter: _AdapterChoice | None = None,
) -> TuneResult:
    start = perf_counter()
    changed = [ids[r] for r in solver.changed_rows_.tolist()]
    base = None if corpus is None else corpus[solver.changed_rows_]
    method = str(solver.gamma_chosen_by_)
    info = {
        "variant": "m" if isinstance(solver, NudgeM) else "n",
        "gamma": float(solver.gamma_),
        "method": method,
    }
    kept = None if adapter is None else adapter.kept
    if kept is not None:
        info["query_adapter"] = f"lambda={kept.lambda_:g}, blend={kept.blend_:g}"
    report = writeback.apply(
        changed, solver.changed_embeddings_, base=base, info=info, query_adapter=kept
    )
    if report.skipped_ids:
        skipped = set(report.skipped_ids)
        changed = [i for i in changed if i not in skipped]
    timings["write"] = perf_counter() - start
    logger.info("tuned %d of %d read vectors (gamma=%s)", len(changed), len(ids), solver.gamma_)
    return TuneResult(
        solver=solver,
        changed_ids=changed,
        gamma=solver.gamma_,
        val_score=solver.val_score_,
        n_docs=len(ids),
        method=method,
        n_folds=int(solver.n_folds_),
        n_train_queries=int(solver.n_train_queries_),
        n_val_queries=int(solver.n_val_queries_),
        timings=timings,
        state_dir=writeback.state_dir,
        drifted_ids=list(report.drifted_ids) + list(report.skipped_ids),
        query_adapter=kept,
        query_adapter_mode="off" if adapter is None else adapter.mode,
        query_adapter_reason="" if adapter is None else adapter.reason,
        query_adapter_scores=None if adapter is None else adapter.scores,
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
    cross_validate = val_embeddings is None and solver.gamma is None and solver.cv is not None
    if val_embeddings is None and solver.gamma is None and solver.cv is None:
        # Split here (as fit would) so that the store can be asked about the validation queries.
        n_queries = len(train_answer_ids)
        rng = np.random.default_rng(solver.random_state)
        order = rng.permutation(n_queries)
        n_val = min(max(1, round(solver.val_fraction * n_queries)), n_queries - 1)
        val_rows, train_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
        val_embeddings = train_embeddings[val_rows]
        val_answer_ids = [train_answer_ids[i] for i in val_rows]
        train_embeddings = train_embeddings[train_rows]
        train_answer_ids = [train_answer_ids[i] for i in train_rows]
    val_answer_ids = list(val_answer_ids or [])
    answer_ids = {d for answers in (*train_answer_ids, *val_answer_ids) for d in answers}
    active_ids = sorted(answer_ids | set(writeback.moved_ids()))
    if not active_ids:
        msg = "no answer ids: every training query needs at least one answer document"
        raise ValueError(msg)
    timings: dict[str, float] = {}
    start = perf_counter()
    ids, corpus = writeback.read_corpus(active_ids)  # KeyError names unknown ids
    check_similarity(
        solver.similarity,
        str(store.distance),
        unit_norm=rows_unit_norm(corpus),
        hints=metric_hints,
    )
    rows = row_index(ids)
    train = QuerySet.from_ids(train_embeddings, train_answer_ids, rows, name="train answer ids")
    val = passive = None
    k = solver.val_k if isinstance(solver, NudgeN) else 1
    if val_embeddings is not None:
        val_embeddings = np.asarray(val_embeddings, dtype=np.float32)
        val = QuerySet.from_ids(val_embeddings, val_answer_ids, rows, name="val answer ids")
        passive = _passive_scores_from_store(store, val_embeddings, k, set(ids))
    elif cross_validate:  # every training query may be held out by some fold
        passive = _passive_scores_from_store(store, train_embeddings, k, set(ids))
    timings["read"] = perf_counter() - start
    start = perf_counter()
    solver.fit(corpus, train, val, passive_scores=passive)
    timings["solve"] = perf_counter() - start
    return _write(writeback, solver, ids, timings, corpus)


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


# ---------------------------------------------------------------------- the one flow
#: What to pass when a store that lives in this process is saved to disk, per framework.
_MEMORY_HINTS = {
    "langchain": "If you save this store (InMemoryVectorStore.dump(path), "
    "FAISS.save_local(dir)), pass NudgeRetriever(state_dir=<folder>); state_dir='memory' "
    "silences this.",
    "llama-index": "If you persist this index (index.storage_context.persist(dir)), pass "
    "persist_dir=dir or state_dir=<folder>, and persist again after finetune(); "
    "state_dir='memory' silences this.",
    "": "If you save this store to disk, pass state_dir=<folder>; state_dir='memory' "
    "silences this.",
}


def resolve_state_dir(
    store: EmbeddingStore,
    state_dir: str | os.PathLike | None = AUTO,
    persist_dir: str | os.PathLike | None = None,
    framework: str | None = None,
    *,
    warn: bool = True,
) -> Path | None:
    """Where the originals of ``store`` are kept: one rule for every entry point.

    * a folder: that folder (created now; a path that is a file or cannot be written to is
      refused before any work is done);
    * ``"auto"`` (or ``None``): ``<persist_dir>/nudge_state`` when the folder the store or
      index is persisted to is known; else next to the store's own files
      (:meth:`~nudge_rag.EmbeddingStore.default_state_dir`: the Chroma or Qdrant folder, ...);
      else, for a store that lives only in this process, memory, with an INFO message
      (worded for ``framework``) saying what to pass if the store is saved to disk:
      originals kept in memory live as long as the store object, which is right for a store
      that lives only in this process, but a saved copy of the store could not be restored
      from another process;
    * ``"memory"``: memory on purpose (no message). The memory belongs to the store object,
      so every tuner over it shares it.

    A store that keeps its own state (``store.writeback_state()``: pgvector's side tables in
    its database) needs no folder: unless a folder is given, ``None`` is returned and
    :class:`~nudge_rag.WriteBack` keeps the originals there.

    Returns:
        The folder, or ``None`` for memory (or the store's own state).

    ``warn=False`` leaves out the in-memory warning (for readers that only look for a saved
    query adapter).

    Raises:
        StateDirError: a store on a server with no folder given (originals must outlive this
            process), or a folder that cannot be used.
    """
    if isinstance(state_dir, str) and state_dir == MEMORY:
        return None
    if state_dir is None or (isinstance(state_dir, str) and state_dir == AUTO):
        if supports(store, StatefulEmbeddingStore):
            return None  # the store's own state (e.g. tables in its database) outlives us
        if persist_dir is not None:
            return _usable_folder(Path(persist_dir) / STATE_FOLDER, "persist_dir")
        folder = store.default_state_dir()
        if folder is not None:
            return Path(folder)
        if store.is_remote:
            msg = (
                f"{store.name} lives on a server: pass state_dir=<folder> so that the original "
                "vectors outlive this process (or state_dir='memory' to keep them in memory)"
            )
            raise StateDirError(msg)
        if not warn:
            return None
        logger.info(
            "the original vectors of %s are kept in memory only, with the store object: a "
            "restore() from another process cannot find them. %s",
            store.name,
            _MEMORY_HINTS.get(framework or "", _MEMORY_HINTS[""]),
        )
        return None
    return _usable_folder(Path(state_dir), "state_dir")


def _usable_folder(folder: Path, name: str) -> Path:
    if folder.exists() and not folder.is_dir():
        msg = f"{name}: {folder} exists and is not a folder; originals need a folder"
        raise StateDirError(msg)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        msg = f"{name}: cannot create the state folder {folder}: {err.strerror or err}"
        raise StateDirError(msg) from err
    if not os.access(folder, os.W_OK | os.X_OK):
        msg = f"{name}: the state folder {folder} is not writable"
        raise StateDirError(msg)
    return folder


Embed = Callable[[list[str]], Any]
"""Embeds a batch of question texts: ``list[str] -> (len, dim)`` array-like of numbers."""


class StoreTuner:
    """Tune the vectors a store holds from training pairs: the flow every entry point shares.

    Each :meth:`tune` call starts from the original vectors (saved ones overlay tuned ones),
    and rows an earlier call moved that do not move now get their originals back, so the
    store always holds *originals + this fit's changes*.

    Args:
        store: an :class:`~nudge_rag.EmbeddingStore`, or a framework vector store that
            :func:`nudge_rag.backends.backend_for` knows.
        state_dir: where originals are kept (see :func:`resolve_state_dir`): ``"auto"``
            (default), a folder, or ``"memory"``.
        persist_dir: the folder the store or index is persisted to, used by ``"auto"``.
        variant: ``"n"`` (NUDGE-N) or ``"m"`` (NUDGE-M), or a solver instance.
        solver_params: keyword arguments of :class:`~nudge_rag.NudgeN` /
            :class:`~nudge_rag.NudgeM` (e.g. ``{"gamma": 0.1}``).
        batch_size: vectors per store read/write request.
        embed_batch_size: questions per ``embed`` call.
        passive: ``tune_store``'s ``passive`` (``"auto"``, ``"read"`` or ``"store"``).
        show_progress: tqdm bars while embedding and writing.
        explain_unknown: optional ``ids -> message`` hook for ids that are not in the store
            (LlamaIndex uses it to say a node is in the docstore but has no vector).
        framework: ``"langchain"`` / ``"llama-index"``, for the unsupported-store message.
        lock_timeout: seconds to wait for another fit, restore or resume of the same store
            (``0``: fail at once with :class:`~nudge_rag.StoreBusyError`; ``None``: wait).
        query_adapter: ``"off"`` (default), ``"on"`` or ``"auto"``: fit a query-side
            :class:`~nudge_rag.QueryAdapter` after NUDGE and save it with the vectors (see
            :func:`tune_store`); :meth:`adapt_queries` applies the saved one.

    Raises:
        UnsupportedStoreError: a store no backend can read and write.
        StateDirError: no usable place for the originals (checked here, before any work).
        ValueError: a bad variant or solver parameter.
    """

    def __init__(
        self,
        store: Any,
        *,
        state_dir: str | os.PathLike | None = AUTO,
        persist_dir: str | os.PathLike | None = None,
        variant: str | NudgeN | NudgeM = "n",
        solver_params: Mapping[str, Any] | None = None,
        batch_size: int = 512,
        embed_batch_size: int = 64,
        passive: str = "auto",
        show_progress: bool = False,
        explain_unknown: Callable[[list[str]], str | None] | None = None,
        framework: str | None = None,
        lock_timeout: float | None = 0.0,
        query_adapter: QueryAdapterMode = "off",
    ):
        self.store: EmbeddingStore = backend_for(store, framework)
        self.query_adapter = check_query_adapter(query_adapter)
        self.variant = variant
        self.solver_params = dict(solver_params or {})
        solver = make_solver(variant, **self.solver_params)  # fail now on a bad variant/param
        if self.query_adapter != "off" and isinstance(solver, NudgeM):
            msg = (
                f"query_adapter={self.query_adapter!r} needs NUDGE-N (variant='n', cosine "
                "stores); use query_adapter='off' with NUDGE-M"
            )
            raise ValueError(msg)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.embed_batch_size = check_positive_int(embed_batch_size, "embed_batch_size")
        if passive not in ("auto", "read", "store"):
            msg = f"passive must be 'auto', 'read' or 'store', got {passive!r}"
            raise ValueError(msg)
        self.passive = passive
        self.show_progress = show_progress
        self.explain_unknown = explain_unknown
        self.state_dir = resolve_state_dir(self.store, state_dir, persist_dir, framework)
        self.writeback = WriteBack(
            self.store,
            self.state_dir,
            batch_size=self.batch_size,
            show_progress=show_progress,
            lock_timeout=lock_timeout,
        )
        self._cache: dict[str, np.ndarray] = {}
        self.result_: TuneResult | None = None

    # ------------------------------------------------------------------ checks
    def new_solver(self) -> NudgeN | NudgeM:
        """A fresh solver with this tuner's variant and parameters."""
        if isinstance(self.variant, (NudgeN, NudgeM)):
            return type(self.variant)(**self.variant.get_params())
        return make_solver(self.variant, **self.solver_params)

    def preflight(self, solver: NudgeN | NudgeM | None = None) -> tuple[list[str], int]:
        """Every check that needs no embedding: pending write-back, metric, a non-empty store.

        Call it before paying for questions (an LLM, an embedding API). The pending check
        holds the writer lock: a plan another writer is writing right now is not an
        interrupted one (that writer is waited for, up to ``lock_timeout``, or this call
        raises :class:`~nudge_rag.StoreBusyError`).

        Returns:
            ``(ids, dim)``: the store's ids and the dimension of its vectors.

        Raises:
            StoreBusyError: another fit, restore or resume of this store is running.
            WriteBackError: an interrupted write-back is pending.
        """
        solver = self.new_solver() if solver is None else solver
        with self.writeback.locked("preflight"):
            self.writeback.check_state()
            pending = self.writeback.has_pending
        if pending:
            msg = (
                "an interrupted write-back is pending for this store: call resume() to finish "
                "it or restore() to undo it before tuning again"
            )
            raise WriteBackError(msg)
        # The metric that depends only on settings; tune_store checks unit norms on the vectors.
        check_similarity(
            solver.similarity, str(self.store.distance), unit_norm=True, hints=metric_hints
        )
        ids = self.store.list_ids()
        if not ids:
            msg = "the store is empty: add documents (with their embeddings) before tuning"
            raise ValueError(msg)
        dim = int(np.asarray(self.store.get_vectors(ids[:1])).shape[1])
        return ids, dim

    def _check_known(self, answers: Sequence[Sequence[str]], known: set[str], name: str) -> None:
        unknown = list(dict.fromkeys(d for ids in answers for d in ids if d not in known))
        if not unknown:
            return
        hint = self.explain_unknown(unknown) if self.explain_unknown is not None else None
        msg = hint or (
            f"{name} name {len(unknown)} document id(s) that are not in the store "
            f"{self.store.name!r}, e.g. {unknown[:_N_SHOWN]!r}"
        )
        raise UnknownIdError(msg, unknown)

    @staticmethod
    def _check_dim(embeddings: np.ndarray, dim: int, what: str) -> None:
        if embeddings.shape[0] and embeddings.shape[1] != dim:
            msg = (
                f"{what} have {embeddings.shape[1]} dimensions (shape {embeddings.shape}), but "
                f"the store holds {dim}-dimensional vectors: embed the questions with the model "
                "that embedded the documents"
            )
            raise DimensionMismatchError(msg)

    # ------------------------------------------------------------------ embedding
    def embed_questions(
        self, texts: Sequence[str], embed: Embed, dim: int | None = None
    ) -> np.ndarray:
        """Embed ``texts`` in batches of ``embed_batch_size`` (each text once, cached).

        The first batch is checked against ``dim`` before the others are paid for.

        Returns:
            ``(len(texts), dim)`` float32 array.

        Raises:
            DimensionMismatchError: the model's dimension differs from ``dim``.
            ValueError: ``embed`` returned something other than one finite vector per text.
        """
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        bar = _progress_bar(len(new), "embedding questions", self.show_progress)
        try:
            for start in range(0, len(new), self.embed_batch_size):
                batch = new[start : start + self.embed_batch_size]
                matrix = _embedding_matrix(embed(batch), len(batch))
                if dim is not None:
                    self._check_dim(matrix, dim, "the question embeddings")
                dim = matrix.shape[1]
                self._cache.update(zip(batch, matrix, strict=True))
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
        if not texts:
            return np.zeros((0, dim or 0), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    # ------------------------------------------------------------------ tuning
    def tune(self, train_pairs: Pairs, val_pairs: Pairs = None, *, embed: Embed) -> TuneResult:
        """Embed the questions of ``train_pairs`` (and ``val_pairs``), tune, write back.

        Everything that can be checked without embedding is checked first: a pending
        write-back, the metric, an empty store, unknown document ids.

        Args:
            train_pairs: training pairs in any form :func:`nudge_rag.pairs.normalize_pairs` accepts.
            val_pairs: optional validation pairs; without them gamma is cross-validated on
                the training pairs (see the solver).
            embed: embeds a batch of questions (``list[str] -> (n, dim)``), with the model
                that embedded the documents.

        Returns:
            The :class:`TuneResult` (also kept as ``result_``).

        Raises:
            UnknownIdError, DimensionMismatchError, MetricMismatchError: (all are
                ``ValueError``) nothing was written.
            WriteBackError: an interrupted write-back is pending, or a write failed
                (resumable).
        """
        train = normalize_pairs(train_pairs, "train_pairs")
        val = None if val_pairs is None else normalize_pairs(val_pairs, "val_pairs")
        solver = self.new_solver()
        ids, dim = self.preflight(solver)
        texts, answers = group_pairs(train, "train_pairs")
        val_texts, val_answers = group_pairs(val, "val_pairs") if val else ([], [])
        known = set(ids)
        self._check_known(answers, known, "train_pairs")
        self._check_known(val_answers, known, "val_pairs")
        start = perf_counter()
        embedded = self.embed_questions(texts + val_texts, embed, dim)
        embed_s = perf_counter() - start
        result = self._run(
            solver,
            embedded[: len(texts)],
            answers,
            embedded[len(texts) :] if val else None,
            val_answers if val else None,
        )
        result.timings = {"embed": embed_s, **result.timings}
        return result

    def tune_embedded(
        self,
        train_embeddings: np.ndarray,
        train_answer_ids: Sequence[Sequence[str]],
        val_embeddings: np.ndarray | None = None,
        val_answer_ids: Sequence[Sequence[str]] | None = None,
    ) -> TuneResult:
        """:meth:`tune` with the questions already embedded.

        Args:
            train_embeddings: ``(n_train, dim)`` float array of training questions.
            train_answer_ids: for each, the ids of the documents that answer it.
            val_embeddings: optional ``(n_val, dim)`` validation questions.
            val_answer_ids: their document ids.
        """
        if (val_embeddings is None) != (val_answer_ids is None):
            msg = "val_embeddings and val_answer_ids must be given together"
            raise ValueError(msg)
        solver = self.new_solver()
        ids, dim = self.preflight(solver)
        train_embeddings = _embedding_matrix(train_embeddings, len(train_answer_ids))
        self._check_dim(train_embeddings, dim, "train_embeddings")
        answers = [[str(d) for d in a] for a in train_answer_ids]
        known = set(ids)
        self._check_known(answers, known, "train_answer_ids")
        val_answers = None
        if val_embeddings is not None:
            val_embeddings = _embedding_matrix(val_embeddings, len(val_answer_ids))
            self._check_dim(val_embeddings, dim, "val_embeddings")
            val_answers = [[str(d) for d in a] for a in val_answer_ids]
            self._check_known(val_answers, known, "val_answer_ids")
        return self._run(solver, train_embeddings, answers, val_embeddings, val_answers)

    def _run(
        self,
        solver: NudgeN | NudgeM,
        train_embeddings: np.ndarray,
        answers: list[list[str]],
        val_embeddings: np.ndarray | None,
        val_answers: list[list[str]] | None,
    ) -> TuneResult:
        result = tune_store(
            self.writeback,
            solver,
            train_embeddings,
            answers,
            val_embeddings,
            val_answers,
            passive=self.passive,
            query_adapter=self.query_adapter,
        )
        logger.info(
            "NUDGE-%s: %d of %d stored vectors moved (gamma=%s, chosen by %s) from %d "
            "training questions",
            result.variant.upper(),
            len(result.changed_ids),
            result.n_docs,
            result.gamma,
            result.method or "validation",
            result.n_train_queries,
        )
        self.result_ = result
        return result

    def saved_query_adapter(self) -> QueryAdapter | None:
        """The query adapter saved with this store's tuned vectors (``None``: none)."""
        return self.writeback.query_adapter()

    def adapt_queries(self, query_embeddings: Any) -> np.ndarray:
        """Apply the saved query adapter, if any, to query embeddings.

        Args:
            query_embeddings: ``(n, dim)`` or ``(dim,)`` float array from the model.

        Returns:
            float32 array of the same shape: adapted (unit-norm) when an adapter is saved,
            else the input unchanged.
        """
        adapter = self.writeback.query_adapter()
        if adapter is None:
            return np.asarray(query_embeddings, dtype=np.float32)
        return adapter.transform(query_embeddings)

    def restore(self) -> int:
        """Write every original back and forget them (and any query adapter).

        Returns:
            How many vectors were restored.
        """
        self.result_ = None
        return self.writeback.restore()

    def resume(self) -> bool:
        """Finish a write-back interrupted by a crash or a failed request."""
        return self.writeback.resume()

    def discard_pending(self) -> bool:
        """Drop an interrupted plan that cannot finish; the originals stay saved.

        See :meth:`nudge_rag.WriteBack.discard_pending`; ``restore()`` still puts every
        original back afterwards.
        """
        return self.writeback.discard_pending()

    def status(self) -> WriteBackStatus:
        """Where the write-back of this store stands: :meth:`nudge_rag.WriteBack.status`."""
        return self.writeback.status()


def _embedding_matrix(vectors: Any, n: int) -> np.ndarray:
    """What an embed call returned, as an ``(n, dim)`` finite float32 matrix."""
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (ValueError, TypeError) as err:
        lengths = sorted({len(v) for v in vectors}) if isinstance(vectors, Sequence) else "?"
        msg = (
            f"the embedding model returned vectors of different lengths ({lengths}) or "
            f"non-numbers for {n} questions; expected {n} vectors of one dimension"
        )
        raise ValueError(msg) from err
    if matrix.ndim != 2 or matrix.shape[0] != n:
        msg = f"the embedding model returned shape {matrix.shape} for {n} questions"
        raise ValueError(msg)
    if not np.isfinite(matrix).all():
        msg = "the embedding model returned NaN or inf question embeddings"
        raise ValueError(msg)
    return matrix


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled or total <= 0:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        logger.warning("show_progress needs tqdm: pip install 'nudge-rag[progress]'")
        return None
    return tqdm(total=total, desc=desc, unit="question")
