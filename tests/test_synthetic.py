import time

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from nudge_rag._data import EmbeddedDataset
from nudge_rag._metrics import evaluate
from nudge_rag._queryset import QuerySet
from nudge_rag._search import search
from nudge_rag._synthetic import make_retrieval_task, make_scale_task, write_memmap_corpus


@pytest.fixture(scope="module")
def task():
    return make_retrieval_task(n_docs=2000, dim=64, n_train=1200, n_dev=200, n_test=400)


def _move_toward_training_queries(docs, train: QuerySet, step):
    """A crude NUDGE-like step: each answered document moves toward the sum of its queries."""
    pull = np.zeros_like(docs)
    np.add.at(pull, train.indices, train.embeddings[train.query_of_pair()])
    norms = np.linalg.norm(pull, axis=1, keepdims=True)
    pull = np.divide(pull, norms, out=np.zeros_like(pull), where=norms > 0)
    moved = docs + step * pull
    return moved / np.linalg.norm(moved, axis=1, keepdims=True)


def test_shapes_and_types(task):
    assert isinstance(task, EmbeddedDataset)
    assert task.doc_embeddings.shape == (2000, 64)
    assert task.doc_embeddings.dtype == np.float32
    assert_allclose(np.linalg.norm(task.doc_embeddings, axis=1), 1.0, rtol=1e-5)
    assert len(task.doc_ids) == 2000 and task.doc_ids[0] == "d0" and task.doc_ids[-1] == "d1999"
    assert {s: sp.n_queries for s, sp in task.splits.items()} == {
        "train": 1200,
        "dev": 200,
        "test": 400,
    }
    for split in task.splits.values():
        assert split.query_embeddings.dtype == np.float32
        assert_allclose(np.linalg.norm(split.query_embeddings, axis=1), 1.0, rtol=1e-5)
        counts = split.relevance.n_relevant()
        assert counts.min() >= 1 and counts.max() <= 3
        assert set(np.unique(split.relevance.grades)) <= {1, 2}
        assert isinstance(split.queryset(), QuerySet)
    assert task.doc_texts is None and task.test.query_texts is None


def test_seeded(task):
    again = make_retrieval_task(n_docs=2000, dim=64, n_train=1200, n_dev=200, n_test=400)
    assert_array_equal(again.doc_embeddings, task.doc_embeddings)
    assert_array_equal(again.test.query_embeddings, task.test.query_embeddings)
    other = make_retrieval_task(
        n_docs=2000, dim=64, n_train=1200, n_dev=200, n_test=400, random_state=1
    )
    assert not np.array_equal(other.doc_embeddings, task.doc_embeddings)


def test_semantic_gap_is_mediocre_and_tunable():
    task = make_retrieval_task()  # the documented defaults: 5000 docs x 128 dims
    test = task.test
    _, rows = search(test.query_embeddings, task.doc_embeddings, 10)
    before = evaluate(rows, test.relevance, 10)
    assert 0.3 <= before["recall@10"] <= 0.6
    tuned = _move_toward_training_queries(task.doc_embeddings, task.train.queryset(), 1.0)
    _, rows = search(test.query_embeddings, tuned, 10)
    after = evaluate(rows, test.relevance, 10)
    assert after["recall@10"] > before["recall@10"] + 0.15
    assert after["ndcg@10"] > before["ndcg@10"] + 0.15


def test_test_answers_often_have_training_queries(task):
    answered_in_train = np.zeros(task.n_docs, dtype=bool)
    answered_in_train[task.train.relevance.indices] = True
    rel = task.test.relevance
    covered = np.add.reduceat(answered_in_train[rel.indices].astype(int), rel.indptr[:-1]) > 0
    assert 0.5 < covered.mean() < 1.0


def test_fast():
    start = time.perf_counter()
    make_retrieval_task(n_docs=5000, dim=128)
    assert time.perf_counter() - start < 1.0


def test_argument_errors():
    with pytest.raises(ValueError, match="n_train \\+ n_dev \\+ n_test must be at least 1"):
        make_retrieval_task(n_train=0, n_dev=0, n_test=0)
    with pytest.raises(ValueError, match="n_docs must be an integer >= 1"):
        make_retrieval_task(n_docs=0)
    with pytest.raises(ValueError, match="queries_per_intent must be >= 1"):
        make_retrieval_task(queries_per_intent=0.5)


# ---------------------------------------------------------------------- scale helpers
def test_write_memmap_corpus_unit_norm_and_block_invariant(tmp_path):
    a = write_memmap_corpus(tmp_path / "a.npy", 10_000, 16, random_state=3, block=4096)
    b = write_memmap_corpus(tmp_path / "b.npy", 10_000, 16, random_state=3, block=50_000)
    x, y = np.load(a, mmap_mode="r"), np.load(b)
    assert x.shape == (10_000, 16) and x.dtype == np.float32
    assert_array_equal(x, y)
    assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-5)
    c = np.load(write_memmap_corpus(tmp_path / "c.npy", 10_000, 16, random_state=4))
    assert not np.array_equal(c, y)


def test_make_scale_task(tmp_path):
    path = write_memmap_corpus(tmp_path / "corpus.npy", 20_000, 32, random_state=0)
    task = make_scale_task(path, n_train=3000, n_dev=500, n_test=500, n_answered_docs=2500)
    assert isinstance(task.doc_embeddings, np.memmap)
    assert len(task.doc_ids) == 20_000 and task.doc_ids[12345] == "d12345"
    assert {s: sp.n_queries for s, sp in task.splits.items()} == {
        "train": 3000,
        "dev": 500,
        "test": 500,
    }
    answered = np.unique(np.concatenate([sp.relevance.indices for sp in task.splits.values()]))
    assert answered.size == 2500
    assert answered.max() < 20_000
    # the query of a single-answer intent leans toward its document
    test = task.test
    _, rows = search(test.query_embeddings, task.doc_embeddings, 10)
    assert evaluate(rows, test.relevance, 10)["hit@10"] > 0.2
    with pytest.raises(ValueError, match="n_answered_docs must be at most the corpus size"):
        make_scale_task(path, n_answered_docs=30_000)
