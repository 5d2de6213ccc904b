"""The tuning report (report.md / report.json / report.png) and store-side evaluation."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import nudge_rag
from nudge_rag import ArrayStore, StoreTuner, evaluate_store, write_report
from nudge_rag._report import report_data, score_ranking
from nudge_rag.data import make_retrieval_task


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------- evaluate_store
def test_evaluate_store_on_a_hand_computed_toy():
    # d1, d2, d3 are the axes. q1 = e1 answers d1 (grade 2): rank 1 -> recall 1, nDCG 1, MRR 1.
    # q2 = unit(e2 + 0.5 e3) ranks d2, d3, d1; its answer d3 (grade 1) is at rank 2:
    # recall@2 = 1, MRR = 1/2, nDCG@2 = (1 / log2(3)) / 1 = 0.63093.
    store = ArrayStore(["d1", "d2", "d3"], np.eye(3, dtype=np.float32))
    queries = _unit(np.array([[1, 0, 0], [0, 1, 0.5]], dtype=np.float32))
    got = evaluate_store(store, queries, [["d1"], ["d3"]], [[2], [1]], k=2)
    assert got["n_queries"] == 2
    assert got["recall@2"] == pytest.approx(1.0)
    assert got["mrr@2"] == pytest.approx(0.75)
    assert got["ndcg@2"] == pytest.approx((1 + 1 / np.log2(3)) / 2)


def test_score_ranking_pads_short_lists_and_grades():
    # one query, answers a (grade 2) and b (grade 1); retrieved [b] only (a short list).
    # DCG = 1 / log2(2) = 1; ideal = 2 + 1 / log2(3); recall@3 = 1 / min(2, 3) = 0.5.
    got = score_ranking([["b"]], [["a", "b"]], [[2, 1]], k=3)
    assert got["recall@3"] == pytest.approx(0.5)
    assert got["ndcg@3"] == pytest.approx(1 / (2 + 1 / np.log2(3)))
    assert got["mrr@3"] == pytest.approx(1.0)


# ---------------------------------------------------------------------- the report
@pytest.fixture(scope="module")
def task():
    return make_retrieval_task(n_docs=300, dim=16, n_train=200, n_dev=50, n_test=60, random_state=1)


def _pairs(split):
    rel = split.relevance
    out = []
    for q in range(split.n_queries):
        for d in rel.indices[rel.indptr[q] : rel.indptr[q + 1]].tolist():
            out.append((f"{split.name} {q}", str(d)))
    return out


def _tuned(task, val: bool, variant: str = "n"):
    docs = np.asarray(task.doc_embeddings)
    store = ArrayStore(
        [str(i) for i in range(task.n_docs)], docs, distance="cosine" if variant == "n" else "dot"
    )
    lookup = {}
    for name in ("train", "dev", "test"):
        sp = task.split(name)
        lookup.update({f"{name} {q}": sp.query_embeddings[q] for q in range(sp.n_queries)})

    def embed(texts):
        return np.stack([lookup[t] for t in texts])

    tuner = StoreTuner(store, state_dir="memory", variant=variant)
    before = _scores(store, task, embed)
    result = tuner.tune(
        _pairs(task.split("train")), _pairs(task.split("dev")) if val else None, embed=embed
    )
    after = _scores(store, task, embed)
    return result, {"test": {"before": before, "after": after}}


def _scores(store, task, embed):
    sp = task.split("test")
    rel = sp.relevance
    answers = [
        [str(d) for d in rel.indices[rel.indptr[q] : rel.indptr[q + 1]]]
        for q in range(sp.n_queries)
    ]
    return evaluate_store(store, embed([f"test {q}" for q in range(sp.n_queries)]), answers, k=10)


def test_report_with_cross_validation(task, tmp_path):
    pytest.importorskip("matplotlib", reason="pip install 'nudge-rag[report]'")
    result, evaluations = _tuned(task, val=False)
    assert result.n_folds > 0 or result.solver.n_folds_ > 0
    paths = nudge_rag.write_report(
        result, tmp_path / "r", evaluations=evaluations, context={"store": "memory"}
    )
    assert set(paths) == {"md", "json", "png"}
    data = json.loads(paths["json"].read_text())
    solver = result.solver
    curve = data["curve"]
    assert curve["source"] == "cross-validation"
    np.testing.assert_allclose(curve["gammas"], solver.cv_gammas_)
    np.testing.assert_allclose(curve["scores"], solver.cv_scores_)
    np.testing.assert_allclose(curve["std"], solver.cv_std_)
    assert data["gamma"] == result.gamma
    at_gamma = curve["scores"][curve["gammas"].index(result.gamma)]
    assert data["val_score"] == pytest.approx(at_gamma)  # the curve's point at the chosen gamma
    assert max(curve["scores"]) - at_gamma <= 0.05  # the best, or within the CV tolerance of it
    assert data["rows_moved"] == len(result.changed_ids) > 0
    assert data["n_folds"] == solver.n_folds_
    assert set(data["timings"]) >= {"read", "solve", "write"}
    test = data["metrics"]["test"]
    assert test["after"]["ndcg@10"] > test["before"]["ndcg@10"]
    md = paths["md"].read_text()
    before, after = 100 * test["before"]["ndcg@10"], 100 * test["after"]["ndcg@10"]
    assert f"nDCG@10 on the test questions: {before:.1f}% → {after:.1f}%" in md
    assert "![" in md and "report.png" in md and "cross-validation" in md
    assert f"{len(result.changed_ids):,} of {result.n_docs:,}" in md
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    import matplotlib.image

    height, width = matplotlib.image.imread(paths["png"]).shape[:2]
    assert width > height > 300


def test_report_with_validation_pairs_plots_the_searched_grid(task, tmp_path):
    result, evaluations = _tuned(task, val=True)
    data = report_data(result, evaluations=evaluations)
    assert data["curve"]["source"] == "validation" and data["curve"]["std"] is None
    assert dict(zip(data["curve"]["gammas"], data["curve"]["scores"])) == pytest.approx(
        result.solver.gamma_scores_
    )
    assert data["val_metric"] == "recall@1" and data["val_score"] == result.val_score
    paths = write_report(result, tmp_path, evaluations=evaluations, picture=False)
    assert set(paths) == {"md", "json"} and not (tmp_path / "report.png").exists()
    assert "report.png" not in paths["md"].read_text()


def test_report_for_nudge_m_without_a_curve(task, tmp_path):
    pytest.importorskip("matplotlib", reason="pip install 'nudge-rag[report]'")
    result, evaluations = _tuned(task, val=True, variant="m")
    data = report_data(result, evaluations=evaluations)
    assert data["variant"] == "NUDGE-M" and data["val_metric"] == "hit@1"
    paths = write_report(result, tmp_path, evaluations=evaluations, dry_run=True)
    assert paths["png"].stat().st_size > 10_000
    assert "Dry run" in paths["md"].read_text()


def test_missing_matplotlib_says_what_to_install(task, tmp_path, monkeypatch):
    result, evaluations = _tuned(task, val=True)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'nudge-rag\[report\]'"):
        write_report(result, tmp_path, evaluations=evaluations)
    assert (tmp_path / "report.json").is_file()  # the numbers are written first
