"""Before/after retrieval measured through a store's own search, and the tuning report.

:func:`evaluate_store` scores questions through the store's search (Chroma's
``collection.query``, Qdrant's ``query_points``, each backend's ``nearest``: the path an
app's retriever takes), so the numbers are what users of the store get.
:func:`write_report` turns a :class:`~nudge_rag.TuneResult` and those numbers into
``report.md``, ``report.json`` and ``report.png`` for a reader who has never heard of NUDGE.
matplotlib (the ``report`` extra) is imported only to draw the picture.
"""

from __future__ import annotations

import json
import logging
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from nudge_rag._metrics import evaluate
from nudge_rag._queryset import Relevance
from nudge_rag._search import search
from nudge_rag._store import SearchableEmbeddingStore, supports

logger = logging.getLogger(__name__)

__all__ = ["evaluate_store", "report_data", "write_report"]

_QUERY_BATCH = 256
_VARIANT_NAMES = {"n": "NUDGE-N", "m": "NUDGE-M"}
_METHOD_TEXT = {
    "cv": "cross-validation on the training questions",
    "val": "the validation questions",
    "split": "a held-out share of the training questions",
    "fixed": "fixed by the caller",
}


# ---------------------------------------------------------------------- evaluation
def ranked_ids(store: Any, queries: np.ndarray, k: int) -> tuple[list[list[str]], str]:
    """The top ``k`` ids per query through ``store``'s own search.

    Stores without a search of their own (``nearest``) are searched exactly over their
    vectors (:func:`nudge_rag.search` with the store's distance).

    Returns:
        ``(ids per query, how)`` where ``how`` is ``"store search"`` or ``"exact search"``.
    """
    queries = np.asarray(queries, dtype=np.float32)
    if supports(store, SearchableEmbeddingStore):
        nearest = store.nearest
        out: list[list[str]] = []
        for s in range(0, queries.shape[0], _QUERY_BATCH):
            ids, _ = nearest(queries[s : s + _QUERY_BATCH], k)
            out.extend([str(i) for i in row] for row in ids)
        return out, "store search"
    ids = list(store.list_ids())
    docs = np.concatenate(
        [np.asarray(store.get_vectors(ids[s : s + 4096])) for s in range(0, len(ids), 4096)]
    )
    similarity = {"l2": "l2", "dot": "dot"}.get(str(store.distance), "cosine")
    _, top = search(queries, docs, min(k, len(ids)), similarity=similarity)
    return [[ids[j] for j in row if j >= 0] for row in top.tolist()], "exact search"


def score_ranking(
    ranked: Sequence[Sequence[str]],
    answers: Sequence[Sequence[str]],
    grades: Sequence[Sequence[int]] | None,
    k: int,
) -> dict[str, float]:
    """``recall@k``, ``ndcg@k`` (graded), ``mrr@k`` and ``n_queries`` of ranked id lists."""
    rows: dict[str, int] = {}
    for ids in (*answers, *ranked):
        for d in ids:
            rows.setdefault(str(d), len(rows))
    top = np.full((len(ranked), k), -1, dtype=np.int64)
    for n, ids in enumerate(ranked):
        got = [rows[str(d)] for d in ids[:k]]
        top[n, : len(got)] = got
    relevance = Relevance.from_lists(
        [[rows[str(d)] for d in ids] for ids in answers],
        None if grades is None else [list(g) for g in grades],
    )
    scores = evaluate(top, relevance, k, metrics=("recall", "ndcg", "mrr"))
    return {**scores, "n_queries": len(answers)}


def evaluate_store(
    store: Any,
    query_embeddings: np.ndarray,
    answers: Sequence[Sequence[str]],
    grades: Sequence[Sequence[int]] | None = None,
    k: int = 10,
) -> dict[str, Any]:
    """Recall, nDCG and MRR at ``k`` of questions searched through the store itself.

    Args:
        store: an :class:`~nudge_rag.EmbeddingStore` (its ``nearest`` is used when it has one).
        query_embeddings: ``(n, dim)`` float32 array, one row per question.
        answers: for each question, the ids of the documents that answer it.
        grades: optional graded relevance (same nesting as ``answers``); 1 everywhere if
            ``None``.
        k: cut-off.

    Returns:
        ``{"recall@k", "ndcg@k", "mrr@k", "n_queries", "search"}``.
    """
    ranked, how = ranked_ids(store, query_embeddings, k)
    return {**score_ranking(ranked, answers, grades, k), "search": how}


# ---------------------------------------------------------------------- report data
def _curve(solver: Any) -> dict[str, Any] | None:
    """The validation curve over gamma the solver searched, with the fold spread if any."""
    gammas = getattr(solver, "cv_gammas_", None)
    if gammas is not None and getattr(solver, "cv_scores_", None) is not None:
        std = getattr(solver, "cv_std_", None)
        return {
            "gammas": [float(g) for g in gammas],
            "scores": [float(s) for s in solver.cv_scores_],
            "std": None if std is None else [float(s) for s in std],
            "source": "cross-validation",
        }
    table = getattr(solver, "gamma_scores_", None)
    if table:
        pairs = sorted(table.items())
        return {
            "gammas": [float(g) for g, _ in pairs],
            "scores": [float(s) for _, s in pairs],
            "std": None,
            "source": "validation",
        }
    return None


def _val_metric(solver: Any) -> str:
    if type(solver).__name__ == "NudgeM":
        return "hit@1"
    return f"recall@{int(getattr(solver, 'val_k', 1) or 1)}"


def report_data(
    result: Any,
    *,
    evaluations: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    k: int = 10,
    context: Mapping[str, Any] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Everything the report shows, as one JSON-ready dict.

    Args:
        result: the :class:`~nudge_rag.TuneResult`.
        evaluations: ``{set name: {"before": scores, "after": scores}}`` with scores as
            :func:`evaluate_store` returns them (e.g. ``"validation"``, ``"test"``).
        k: the cut-off of the scores.
        context: extra facts to show (store, collection, model, pair files).
        dry_run: the tuning was not written to the store.
    """
    solver = result.solver
    variant = getattr(result, "variant", "n")
    method = getattr(result, "method", "") or getattr(solver, "gamma_chosen_by_", "") or ""
    n_folds = int(getattr(result, "n_folds", 0) or getattr(solver, "n_folds_", 0) or 0)
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "variant": _VARIANT_NAMES.get(variant, str(variant)),
        "similarity": getattr(solver, "similarity", None),
        "gamma": float(result.gamma),
        "gamma_chosen_by": method,
        "n_folds": n_folds,
        "n_cv_repeats": int(getattr(solver, "n_cv_repeats_", 0) or 0),
        "val_metric": _val_metric(solver),
        "val_score": None if result.val_score is None else float(result.val_score),
        "curve": _curve(solver),
        "rows_moved": len(result.changed_ids),
        "n_docs": int(result.n_docs),
        "n_train_queries": int(result.n_train_queries),
        "n_val_queries": int(result.n_val_queries),
        "k": int(k),
        "metrics": {name: dict(v) for name, v in (evaluations or {}).items()},
        "timings": {name: float(s) for name, s in result.timings.items()},
        "state_dir": None if result.state_dir is None else str(result.state_dir),
        "dry_run": bool(dry_run),
        "context": dict(context or {}),
        "query_adapter": _adapter_data(result),
    }


def _adapter_data(result: Any) -> dict[str, Any] | None:
    """What ``query_adapter`` chose: NUDGE alone vs NUDGE + adapter on validation."""
    scores = getattr(result, "query_adapter_scores", None)
    if scores is None:
        return None
    return {
        "mode": result.query_adapter_mode,
        "kept": result.query_adapter is not None,
        "reason": result.query_adapter_reason,
        **{k: v for k, v in scores.items()},
    }


# ---------------------------------------------------------------------- writing
def write_report(
    result: Any,
    directory: str | os.PathLike[str],
    *,
    evaluations: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    k: int = 10,
    context: Mapping[str, Any] | None = None,
    dry_run: bool = False,
    picture: bool = True,
) -> dict[str, Path]:
    """Write ``report.md``, ``report.json`` and ``report.png`` about a store tuning.

    The picture shows the validation score over gamma (with the spread over the
    cross-validation folds), the chosen gamma, and recall@k / nDCG@k before and after on
    each evaluated set; the markdown and JSON hold the same numbers plus rows moved and the
    time per stage.

    Args:
        result: a :class:`~nudge_rag.TuneResult` (``StoreTuner.tune``'s return).
        directory: folder to write to (created).
        evaluations: ``{set name: {"before": scores, "after": scores}}`` as
            :func:`evaluate_store` returns them; without it the report has no before/after.
        k: the cut-off of those scores.
        context: facts to show (``{"store": ..., "model": ...}``).
        dry_run: say that nothing was written to the store.
        picture: draw ``report.png`` (needs matplotlib: ``pip install 'nudge-rag[report]'``).

    Returns:
        ``{"md": path, "json": path, "png": path}`` (no ``"png"`` without the picture).

    Raises:
        ImportError: ``picture=True`` without matplotlib (the markdown and JSON are written
            first).
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    data = report_data(result, evaluations=evaluations, k=k, context=context, dry_run=dry_run)
    paths = {"json": folder / "report.json", "md": folder / "report.md"}
    paths["json"].write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    png = folder / "report.png"
    if picture:
        draw_report(data, png)
        paths["png"] = png
    paths["md"].write_text(_markdown(data, "report.png" if picture else None), encoding="utf-8")
    logger.info("report written to %s", folder)
    return paths


def _pct(value: Any) -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{100 * value:.1f}"
    )


def _headline(data: Mapping[str, Any]) -> str | None:
    """The before -> after nDCG of the most telling set (test, else validation), or ``None``."""
    metrics = data["metrics"]
    for name in ("test", "validation", *metrics):
        got = metrics.get(name)
        if got and got.get("before") and got.get("after"):
            key = f"ndcg@{data['k']}"
            before, after = got["before"].get(key), got["after"].get(key)
            if before is not None and after is not None:
                return f"nDCG@{data['k']} on the {name} questions: {_pct(before)}% → {_pct(after)}%"
    return None


def _markdown(data: Mapping[str, Any], png: str | None) -> str:
    k = data["k"]
    lines = ["# Tuning report", ""]
    chosen_by = _METHOD_TEXT.get(data["gamma_chosen_by"], data["gamma_chosen_by"] or "validation")
    what = (
        f"{data['variant']} moved **{data['rows_moved']:,} of {data['n_docs']:,}** stored "
        f"document vectors toward the questions they answer (step size gamma = "
        f"**{data['gamma']:.4g}**, chosen by {chosen_by}"
        + (f", {data['n_folds']} folds" if data["n_folds"] else "")
        + (f" x {data['n_cv_repeats']} deals" if data.get("n_cv_repeats", 0) > 1 else "")
        + "). The embedding model is unchanged; only the vectors in the store moved."
    )
    if data["dry_run"]:
        what += " **Dry run: nothing was written to the store.**"
    lines += [what, ""]
    headline = _headline(data)
    if headline:
        lines += [f"**{headline}**", ""]
    if png:
        lines += [f"![validation curve and before/after retrieval]({png})", ""]
    if data["metrics"]:
        lines += [
            f"| questions | n | recall@{k} before | recall@{k} after | nDCG@{k} before | "
            f"nDCG@{k} after | MRR@{k} before | MRR@{k} after |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, got in data["metrics"].items():
            b, a = got.get("before") or {}, got.get("after") or {}
            n = a.get("n_queries", b.get("n_queries", ""))
            cells = [_pct(d.get(f"{m}@{k}")) for m in ("recall", "ndcg", "mrr") for d in (b, a)]
            lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
        search = next(
            (v.get("search") for got in data["metrics"].values() for v in got.values() if v),
            None,
        )
        how = "the store's own search" if search == "store search" else search or "search"
        lines += [
            "",
            f"Scores in %, measured through {how} (top {k}). recall@{k} = relevant documents "
            f"in the top {k} / min(#relevant, {k}) (the NUDGE paper's definition); nDCG@{k} "
            "uses the pairs' grades as gains.",
        ]
        if data["dry_run"]:
            lines += ["'after' is not measured in a dry run (nothing was written)."]
        lines += [""]
    curve = data["curve"]
    if data["val_score"] is not None:
        lines += [
            f"Validation {data['val_metric']} at the chosen gamma: {_pct(data['val_score'])}% "
            f"({data['n_val_queries']} validation questions, {data['n_train_queries']} "
            "training questions).",
            "",
        ]
    if curve:
        lines += [
            f"Validation curve ({curve['source']}):",
            "",
            "| gamma | score | ± |",
            "|---|---|---|",
        ]
        std = curve["std"] or [None] * len(curve["gammas"])
        for g, s, e in zip(curve["gammas"], curve["scores"], std):
            mark = " ←" if math.isclose(g, data["gamma"], rel_tol=1e-9, abs_tol=1e-12) else ""
            lines.append(f"| {g:.4g}{mark} | {_pct(s)} | {_pct(e) if e is not None else ''} |")
        lines += [""]
    adapter = data.get("query_adapter")
    if adapter:
        how = "validation" if adapter["chosen_by"] == "val" else "cross-validation"
        lines += [
            f"Query adapter (`query_adapter={adapter['mode']!r}`): "
            f"**{'kept' if adapter['kept'] else 'not kept'}**. {how.capitalize()} nDCG@10 over "
            f"{adapter['n_queries']} questions:",
            "",
            "| | nDCG@10 | lambda | blend |",
            "|---|---|---|---|",
            f"| NUDGE alone | {_pct(adapter['nudge'])} | | |",
            f"| NUDGE + adapter | {_pct(adapter['nudge+adapter'])} | {adapter['lambda']:g} "
            f"| {adapter['blend']:g} |",
            "",
            adapter["reason"],
            "",
        ]
    if data["timings"]:
        lines += ["| stage | seconds |", "|---|---|"]
        lines += [f"| {name} | {secs:.2f} |" for name, secs in data["timings"].items()]
        lines += [""]
    facts = dict(data["context"])
    if data["state_dir"]:
        facts["originals saved in"] = data["state_dir"]
    if facts:
        lines += [f"- {name}: `{value}`" for name, value in facts.items()]
        lines += [""]
    lines += [f"Written {data['created']} by nudge-rag."]
    return "\n".join(lines) + "\n"


def draw_report(data: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Draw ``report.png``: the validation curve and the before/after bars.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'nudge-rag[report]'``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as err:
        msg = "report.png needs matplotlib: pip install 'nudge-rag[report]'"
        raise ImportError(msg) from err
    curve = data["curve"]
    metrics = {n: v for n, v in data["metrics"].items() if v.get("before")}
    n_panels = (curve is not None) + bool(metrics)
    fig, axes = plt.subplots(
        1, max(n_panels, 1), figsize=(6.2 * max(n_panels, 1), 4.9), squeeze=False
    )
    axes = list(axes[0])
    headline = _headline(data)
    title = (
        f"{headline} after tuning the stored document vectors ({data['variant']})"
        if headline
        else f"Tuning the stored document vectors with {data['variant']}: "
        f"{data['rows_moved']:,} of {data['n_docs']:,} moved"
    )
    if data["dry_run"]:
        title += " — dry run"
    fig.suptitle(title, fontsize=12, fontweight="bold")
    if curve is not None:
        _draw_curve(axes.pop(0), data, curve)
    if metrics:
        _draw_bars(axes.pop(0), data, metrics)
    times = ", ".join(
        f"{n} {sec:.2f} s" if sec < 1 else f"{n} {sec:.1f} s" for n, sec in data["timings"].items()
    )
    k = data["k"]
    lines = [
        f"{data['rows_moved']:,} of {data['n_docs']:,} document vectors moved; the embedding "
        "model is unchanged.",
        f"recall@{k}: relevant documents found in the top {k} / min(#relevant, {k}) (the NUDGE "
        f"paper's definition, not |found|/|relevant|); nDCG@{k}: how high they rank there "
        "(100% = the best possible order).",
    ]
    if times:
        lines.append(f"Time per stage: {times}")
    footer = "\n".join(textwrap.fill(line, 190) for line in lines)
    fig.text(0.5, 0.01, footer, ha="center", va="bottom", fontsize=8.5, color="#444444")
    fig.tight_layout(rect=(0, 0.11, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_curve(ax: Any, data: Mapping[str, Any], curve: Mapping[str, Any]) -> None:
    gammas = np.asarray(curve["gammas"], dtype=float)
    scores = 100 * np.asarray(curve["scores"], dtype=float)
    ax.plot(gammas, scores, marker="o", markersize=3.5, color="#1f77b4", label=curve["source"])
    if curve.get("std") is not None:
        std = 100 * np.asarray(curve["std"], dtype=float)
        folds = f" over {data['n_folds']} folds" if data["n_folds"] else ""
        ax.fill_between(
            gammas, scores - std, scores + std, color="#1f77b4", alpha=0.18, label=f"± 1 std{folds}"
        )
    gamma = data["gamma"]
    ax.axvline(gamma, color="#d62728", linestyle="--", linewidth=1.2)
    best = data["val_score"]
    label = f"chosen gamma = {gamma:.3g}"
    if best is not None:
        label += f"\n{data['val_metric']} {100 * best:.1f}%"
    y = 100 * best if best is not None else float(scores.max())
    if best is not None:
        ax.plot([gamma], [y], marker="o", markersize=7, color="#d62728", zorder=3)
    right = gamma <= 0.6 * float(gammas.max())
    ax.annotate(
        label,
        xy=(gamma, y),
        xytext=(12, -42) if right else (-12, -42),
        ha="left" if right else "right",
        textcoords="offset points",
        color="#d62728",
        fontsize=9,
        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "#d62728", "alpha": 0.9},
        arrowprops={"arrowstyle": "-", "color": "#d62728", "lw": 0.8},
    )
    ax.set_xlabel("gamma: how far each answer document may move (0 = not at all)")
    metric = data["val_metric"]
    cut = metric.split("@")[1]
    meaning = "answer ranked first" if cut == "1" else f"answers in the top {cut}"
    ax.set_ylabel(f"validation {metric} (%, higher is better)")
    src = (
        "held-out training questions"
        if curve["source"] == "cross-validation"
        else "validation questions"
    )
    ax.set_title(
        f"Choosing the step size on {src}\n(score = % of them with the {meaning})", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8.5)


def _draw_bars(ax: Any, data: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
    k = data["k"]
    groups = []
    for name, got in metrics.items():
        n = (got.get("after") or got["before"]).get("n_queries")
        for metric in ("recall", "ndcg"):
            label = f"{'nDCG' if metric == 'ndcg' else 'recall'}@{k}\n{name}" + (
                f"\n{n} questions" if n else ""
            )
            before = got["before"].get(f"{metric}@{k}")
            after = (got.get("after") or {}).get(f"{metric}@{k}")
            groups.append((label, before, after))
    x = np.arange(len(groups), dtype=float)
    width = 0.38
    before = [100 * g[1] for g in groups]
    after = [100 * g[2] if g[2] is not None else 0.0 for g in groups]
    b1 = ax.bar(x - width / 2, before, width, color="#9e9e9e", label="before tuning")
    has_after = any(g[2] is not None for g in groups)
    if has_after:
        b2 = ax.bar(x + width / 2, after, width, color="#2ca02c", label="after tuning")
        ax.bar_label(b2, fmt="%.1f", fontsize=8.5, padding=2)
    ax.bar_label(b1, fmt="%.1f", fontsize=8.5, padding=2)
    ax.set_xticks(x, [g[0] for g in groups], fontsize=8.5)
    ax.set_ylabel("score (%; higher is better)")
    top = max([*before, *after, 1.0])
    ax.set_ylim(0, top * 1.32)
    ax.set_title(f"Retrieval through the store's own search (top {k})", fontsize=10.5)
    ax.legend(loc="upper center", ncol=2, fontsize=8.5, frameon=False)
    ax.grid(axis="y", alpha=0.3)
