"""tune_store: reading every vector vs asking the store's own index (passive="store")."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from test_solver import make_task

from nudge_rag import ArrayStore, NudgeM, NudgeN, WriteBack, tune_store


def store_and_pairs(seed=0):
    docs, train, val = make_task(seed, n_docs=400)
    ids = [f"doc-{i}" for i in range(len(docs))]
    store = ArrayStore(ids, docs / np.linalg.norm(docs, axis=1, keepdims=True), distance="cosine")
    to_ids = lambda qs: [[ids[r] for r in a] for a in qs.answer_lists()]  # noqa: E731
    return store, train.embeddings, to_ids(train), val.embeddings, to_ids(val)


class CountingStore(ArrayStore):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.read = set()

    def get_vectors(self, ids):
        self.read.update(ids)
        return super().get_vectors(ids)


@pytest.mark.parametrize("cls", [NudgeN, NudgeM])
def test_store_side_validation_gives_the_same_result_as_reading_everything(cls):
    store, tq, ta, vq, va = store_and_pairs()
    if cls is NudgeM:
        store.distance = "dot"
    a_store = ArrayStore(store.ids, store.vectors, store.distance)
    full = tune_store(WriteBack(a_store), cls(), tq, ta, vq, va, passive="read")
    b_store = CountingStore(store.ids, store.vectors, store.distance)
    side = tune_store(WriteBack(b_store), cls(), tq, ta, vq, va, passive="store")
    assert side.gamma == full.gamma
    assert side.val_score == pytest.approx(full.val_score)
    assert sorted(side.changed_ids) == sorted(full.changed_ids)
    assert_allclose(b_store.vectors, a_store.vectors, atol=1e-6)
    answers = {d for a in ta + va for d in a}
    assert b_store.read <= answers, "store mode reads only answer documents"
    assert len(answers) < len(store.ids)


def test_store_side_splits_validation_when_none_given():
    store, tq, ta, _, _ = store_and_pairs(1)
    full = tune_store(
        WriteBack(ArrayStore(store.ids, store.vectors)), NudgeN(), tq, ta, passive="read"
    )
    side = tune_store(
        WriteBack(ArrayStore(store.ids, store.vectors)), NudgeN(), tq, ta, passive="store"
    )
    assert side.gamma == full.gamma


def test_auto_uses_the_store_index_above_the_threshold():
    store, tq, ta, vq, va = store_and_pairs()
    counting = CountingStore(store.ids, store.vectors)
    tune_store(WriteBack(counting), NudgeN(), tq, ta, vq, va, store_mode_min_docs=10)
    assert len(counting.read) < len(store.ids)
    counting = CountingStore(store.ids, store.vectors)
    tune_store(WriteBack(counting), NudgeN(), tq, ta, vq, va)  # 400 docs: below the default
    assert len(counting.read) == len(store.ids)


def test_store_mode_needs_a_searchable_store():
    class Plain:
        distance = "cosine"

        def __init__(self, inner):
            self.inner = inner

        def list_ids(self):
            return self.inner.list_ids()

        def get_vectors(self, ids):
            return self.inner.get_vectors(ids)

        def set_vectors(self, ids, vectors):
            self.inner.set_vectors(ids, vectors)

    store, tq, ta, vq, va = store_and_pairs()
    with pytest.raises(TypeError, match="passive='store' needs a store with nearest"):
        tune_store(WriteBack(Plain(store)), NudgeN(), tq, ta, vq, va, passive="store")
    with pytest.raises(ValueError, match="passive must be"):
        tune_store(WriteBack(store), NudgeN(), tq, ta, vq, va, passive="sometimes")


def test_refit_in_store_mode_starts_from_originals():
    store, tq, ta, vq, va = store_and_pairs()
    before = store.vectors.copy()
    wb = WriteBack(store)
    tune_store(wb, NudgeN(gamma=0.3), tq, ta, vq, va, passive="store")
    first = store.vectors.copy()
    tune_store(wb, NudgeN(gamma=0.3), tq, ta, vq, va, passive="store")
    assert_array_equal(store.vectors, first)
    wb.restore()
    assert_array_equal(store.vectors, before)


def test_passive_scores_argument_is_checked():
    docs, train, val = make_task()
    with pytest.raises(ValueError, match=r"passive_scores must have shape \(n_val, val_k\)"):
        NudgeN().fit(docs, train, val, passive_scores=np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"passive_scores must have shape \(n_train, val_k\)"):
        NudgeN().fit(docs, train, passive_scores=np.zeros((3, 1)))  # cross-validated
    with pytest.raises(ValueError, match="passive_scores with cv=None needs an explicit val"):
        NudgeN(cv=None).fit(docs, train, passive_scores=np.zeros((3, 1)))
    with pytest.raises(ValueError, match="got NaN"):
        NudgeN().fit(docs, train, val, passive_scores=np.full((val.n_queries, 1), np.nan))


@pytest.mark.parametrize("cls", [NudgeN, NudgeM])
def test_store_side_cross_validation_matches_reading_everything(cls):
    """Without val pairs both modes cross-validate: the store scores every training query."""
    store, tq, ta, _, _ = store_and_pairs(2)
    if cls is NudgeM:
        store.distance = "dot"
    a_store = ArrayStore(store.ids, store.vectors, store.distance)
    full = tune_store(WriteBack(a_store), cls(), tq, ta, passive="read")
    b_store = CountingStore(store.ids, store.vectors, store.distance)
    side = tune_store(WriteBack(b_store), cls(), tq, ta, passive="store")
    assert full.method == side.method == "cv" and side.n_folds == full.n_folds == 10
    assert side.gamma == full.gamma
    assert side.val_score == pytest.approx(full.val_score)
    assert_allclose(b_store.vectors, a_store.vectors, atol=1e-6)
    assert b_store.read <= {d for a in ta for d in a}


def test_status_records_how_gamma_was_chosen():
    store, tq, ta, _, _ = store_and_pairs(3)
    wb = WriteBack(ArrayStore(store.ids, store.vectors))
    result = tune_store(wb, NudgeN(), tq, ta)
    status = wb.status()
    assert (status.variant, status.method) == ("n", "cv") == ("n", result.method)
    assert status.gamma == result.gamma
