"""QueryAdapter: the closed-form query map, its choice on validation or folds, transform."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from nudge_rag import NotFittedError, QueryAdapter, QuerySet, evaluate, search
from nudge_rag._solver._cv import _Folds


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def shifted_task(seed=0, n_docs=80, dim=16, n_train=240, n_val=80, shift=1.5):
    """Queries are their answer document plus a fixed linear distortion and noise.

    A query map that undoes the distortion ranks answers higher, so the adapter must gain.
    """
    rng = np.random.default_rng(seed)
    docs = unit(rng.standard_normal((n_docs, dim))).astype(np.float32)
    distortion = np.eye(dim) + shift * rng.standard_normal((dim, dim)) / np.sqrt(dim)

    def queries(n):
        answers = rng.integers(0, n_docs, size=n)
        emb = docs[answers] @ distortion + 0.3 * rng.standard_normal((n, dim))
        return QuerySet(emb.astype(np.float32), [[int(a)] for a in answers])

    return docs, queries(n_train), queries(n_val)


def ndcg(queries, docs, relevance, k=10):
    _, top = search(queries, docs, k, similarity="cosine")
    return evaluate(top, relevance, k, metrics=("ndcg",))[f"ndcg@{k}"]


@pytest.fixture(scope="module")
def task():
    return shifted_task()


def test_closed_form_matches_a_straightforward_ridge(task):
    docs, train, val = task
    adapter = QueryAdapter(lambdas=(5.0,), blends=(0.6,)).fit(docs, train, val)
    q = unit(train.embeddings.astype(np.float64))
    y = np.stack([unit(docs.astype(np.float64))[a].mean(axis=0) for a in train.answer_lists()])
    eye = np.eye(docs.shape[1])
    w = np.linalg.solve(q.T @ q + 5.0 * eye, q.T @ y + 5.0 * eye)
    assert_allclose(adapter.matrix_, 0.4 * eye + 0.6 * w, atol=1e-5)
    assert adapter.matrix_.dtype == np.float32
    assert (adapter.lambda_, adapter.blend_) == (5.0, 0.6)


@pytest.mark.parametrize("params", [{"lambdas": (1e12,)}, {"blends": (1e-9,)}])
def test_identity_at_infinite_lambda_or_zero_blend(task, params):
    docs, train, val = task
    adapter = QueryAdapter(**params).fit(docs, train, val)
    assert_allclose(adapter.transform(val.embeddings), unit(val.embeddings), atol=1e-5)
    assert adapter.val_score_ == pytest.approx(adapter.base_score_, abs=1e-9)


def test_transform_shapes_dtypes_unit_norm_and_batches(task):
    docs, train, val = task
    adapter = QueryAdapter().fit(docs, train, val)
    out = adapter.transform(val.embeddings.astype(np.float64))
    assert out.dtype == np.float32 and out.shape == val.embeddings.shape
    assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    one = adapter.transform(val.embeddings[3])
    assert one.shape == (docs.shape[1],)
    assert_allclose(one, out[3], atol=1e-6)
    small = QueryAdapter(batch_size=7)
    small.matrix_, small.n_features_in_ = adapter.matrix_, adapter.n_features_in_
    assert_allclose(small.transform(val.embeddings), out, atol=1e-6)
    assert adapter.transform(np.zeros((0, docs.shape[1]))).shape == (0, docs.shape[1])
    zero = adapter.transform(np.zeros((1, docs.shape[1])))
    assert np.all(zero == 0)


def test_choice_is_the_best_on_validation_and_gains(task):
    docs, train, val = task
    adapter = QueryAdapter().fit(docs, train, val)
    assert adapter.chosen_by_ == "val" and adapter.n_val_queries_ == val.n_queries
    assert adapter.val_scores_.shape == (6, 4)
    assert adapter.val_score_ == adapter.val_scores_.max()
    # The recorded score is what the chosen map gives (independent search + metric).
    assert adapter.val_score_ == pytest.approx(
        ndcg(adapter.transform(val.embeddings), docs, val.relevance), abs=1e-6
    )
    assert adapter.base_score_ == pytest.approx(ndcg(val.embeddings, docs, val.relevance))
    assert adapter.gain_ > 0.05
    # Each point of the curve is the score of that (lambda, blend).
    for i, lam in enumerate(adapter.lambdas):
        for j, blend in enumerate(adapter.blends):
            one = QueryAdapter(lambdas=(lam,), blends=(blend,)).fit(docs, train, val)
            assert one.val_score_ == pytest.approx(adapter.val_scores_[i, j], abs=1e-9)


def test_cross_validation_uses_gamma_folds_and_fold_docs(task):
    docs, train, _ = task
    seen = []

    def fold_docs(fold_train):
        seen.append(fold_train.n_queries)
        return docs

    adapter = QueryAdapter(cv=4, random_state=3).fit(docs, train, fold_docs=fold_docs)
    folds = _Folds(train.n_queries, 4, None, 3)
    assert seen == [train.n_queries - m.size for m in folds.members]
    assert adapter.chosen_by_ == "cv" and adapter.n_folds_ == 4
    assert adapter.n_val_queries_ == train.n_queries
    plain = QueryAdapter(cv=4, random_state=3).fit(docs, train)
    assert_allclose(plain.val_scores_, adapter.val_scores_)
    assert adapter.gain_ > 0.05
    # The pooled score is the queries-weighted mean of the folds' own validation scores.
    everyone = np.arange(train.n_queries)
    pooled = 0.0
    for rows in folds.members:
        fold = QueryAdapter(lambdas=(adapter.lambda_,), blends=(adapter.blend_,)).fit(
            docs, train.subset(np.setdiff1d(everyone, rows)), train.subset(rows)
        )
        pooled += fold.val_score_ * rows.size
    assert adapter.val_score_ == pytest.approx(pooled / train.n_queries, abs=1e-9)


def test_fold_docs_change_the_curve(task):
    docs, train, _ = task
    rng = np.random.default_rng(1)
    noisy = unit(docs + rng.standard_normal(docs.shape)).astype(np.float32)
    plain = QueryAdapter(cv=3).fit(docs, train)
    other = QueryAdapter(cv=3).fit(docs, train, fold_docs=lambda _: noisy)
    assert not np.allclose(plain.val_scores_, other.val_scores_)


def test_not_fitted():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        QueryAdapter().transform(np.ones((2, 3)))


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"lambdas": ()}, ValueError, "lambdas must be a non-empty"),
        ({"lambdas": (1.0, -2.0)}, ValueError, r"lambdas must be numbers in \(0.0, inf\]"),
        ({"blends": (0.5, 1.5)}, ValueError, r"blends must be numbers in \(0.0, 1.0\]"),
        ({"blends": (0.0,)}, ValueError, "blends must be numbers"),
        ({"lambdas": ("a",)}, TypeError, "lambdas must be a sequence of numbers"),
        ({"cv": 1}, ValueError, "cv must be None or a number of folds >= 2"),
        ({"cv": None}, ValueError, "cv must be a number of folds >= 2 when fit gets no val"),
        ({"k": 0}, ValueError, "k"),
    ],
)
def test_bad_parameters(task, params, error, match):
    docs, train, _ = task
    with pytest.raises(error, match=match):
        QueryAdapter(**params).fit(docs, train)


def test_bad_inputs(task):
    docs, train, val = task
    adapter = QueryAdapter().fit(docs, train, val)
    with pytest.raises(ValueError, match="query_embeddings"):
        adapter.transform(np.ones((2, docs.shape[1] + 1), dtype=np.float32))
    with pytest.raises(ValueError, match="query_embeddings"):
        adapter.transform(np.full((1, docs.shape[1]), np.nan))
    with pytest.raises(ValueError, match="train"):
        QueryAdapter().fit(docs[:, :-1], train, val)
    with pytest.raises(ValueError, match="fold_docs returned 3 documents, expected 80"):
        QueryAdapter(cv=2).fit(docs, train, fold_docs=lambda _: docs[:3])
    one = QuerySet(train.embeddings[:1], [[0]])
    with pytest.raises(ValueError, match="cross-validating the adapter needs at least 2"):
        QueryAdapter().fit(docs, one)


def test_from_matrix_round_trip(task):
    docs, train, val = task
    adapter = QueryAdapter().fit(docs, train, val)
    again = QueryAdapter.from_matrix(adapter.matrix_, lambda_=adapter.lambda_, blend_=0.5)
    assert_allclose(again.transform(val.embeddings), adapter.transform(val.embeddings))
    assert again.lambda_ == adapter.lambda_ and again.blend_ == 0.5
    with pytest.raises(ValueError, match="matrix must be square"):
        QueryAdapter.from_matrix(np.ones((2, 3)))
    with pytest.raises(TypeError, match="unknown fitted attributes"):
        QueryAdapter.from_matrix(adapter.matrix_, gamma_=1.0)
