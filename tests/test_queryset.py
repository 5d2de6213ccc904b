"""One relevance structure: ``Relevance`` (CSR) on its own and inside ``QuerySet``."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_array_equal

from nudge_rag._metrics import Relevance as MetricsRelevance
from nudge_rag._metrics import evaluate
from nudge_rag._queryset import QuerySet, Relevance, as_relevance
from nudge_rag._search import search


def _random_lists(rng, n_queries=40, n_docs=30, max_len=6):
    return [rng.integers(0, n_docs, rng.integers(0, max_len)).tolist() for _ in range(n_queries)]


def test_metrics_relevance_is_the_same_class():
    assert MetricsRelevance is Relevance


def test_every_answer_form_gives_the_same_relevance():
    rng = np.random.default_rng(0)
    lists = _random_lists(rng)
    emb = rng.standard_normal((len(lists), 4)).astype(np.float32)
    expected = [sorted(set(a)) for a in lists]  # straightforward: sorted, duplicates merged
    lengths = [len(a) for a in lists]
    indptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    flat = np.array([d for a in lists for d in a], dtype=np.int64)
    dense = np.zeros((len(lists), 30))
    for i, a in enumerate(lists):
        dense[i, a] = 1
    forms = [lists, (indptr, flat), sp.csr_matrix(dense), Relevance.from_lists(expected)]
    for answers in forms:
        qs = QuerySet(emb, answers)
        assert isinstance(qs.relevance, Relevance)
        assert qs.answer_lists() == expected
        assert qs.indptr is qs.relevance.indptr and qs.indices is qs.relevance.indices
        assert_array_equal(qs.query_of_pair(), qs.relevance.query_of_pair())


def test_a_relevance_is_used_as_it_is():
    rel = Relevance.from_lists([[2, 1], [0]], grades=[[2, 1], [3]])
    qs = QuerySet(np.ones((2, 3), np.float32), rel)
    assert qs.relevance is rel
    assert_array_equal(qs.relevance.grades, [1, 2, 3])  # sorted by row, grades follow


def test_one_subset():
    rng = np.random.default_rng(1)
    lists = _random_lists(rng)
    qs = QuerySet(rng.standard_normal((len(lists), 4)).astype(np.float32), lists)
    rows = np.array([5, 0, 5, 39, 12])
    sub = qs.subset(rows)
    ref = qs.relevance.subset(rows)
    assert_array_equal(sub.indptr, ref.indptr)
    assert_array_equal(sub.indices, ref.indices)
    assert sub.answer_lists() == [sorted(set(lists[r])) for r in rows]
    assert_array_equal(sub.embeddings, qs.embeddings[rows])


def test_duplicates_merged_and_reported_once_by_checked(caplog):
    qs = QuerySet(np.eye(2, 3, dtype=np.float32), [[2, 0, 2, 2], [1]])
    assert qs.answer_lists() == [[0, 2], [1]]
    with caplog.at_level(logging.WARNING):
        clean = qs.checked(3, 3, "train")
        assert "train: merged 2 duplicate (query, answer) pair(s)" in caplog.text
        caplog.clear()
        clean.checked(3, 3, "train")
    assert "merged" not in caplog.text
    assert clean.answer_lists() == [[0, 2], [1]]


def test_queries_without_answers_dropped_by_checked(caplog):
    qs = QuerySet(np.eye(3, 3, dtype=np.float32), [[1], [], [2]])
    with caplog.at_level(logging.WARNING):
        clean = qs.checked(3, 3, "val")
    assert "val: dropped 1 query with no answers (e.g. query 1)" in caplog.text
    assert clean.answer_lists() == [[1], [2]] and clean.n_queries == 2


def test_relevance_refuses_what_query_sets_merge():
    with pytest.raises(
        ValueError, match="relevance lists document row 4 more than once for query 0"
    ):
        Relevance(np.array([0, 2]), np.array([4, 4]))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Relevance(np.array([0, 1]), np.array([-1])), r"relevance\[0\]"),
        (lambda: QuerySet(np.ones((1, 2), np.float32), [[-1]]), r"answers\[0\]"),
        (
            lambda: QuerySet(np.ones((1, 2), np.float32), (np.array([0, 1]), np.array([-1]))),
            r"answers\[0\]",
        ),
        (lambda: search(np.ones((1, 2)), np.ones((3, 2)), 1, exclude=[[-1]]), r"exclude\[0\]"),
    ],
)
def test_one_message_for_a_negative_row(make, match):
    with pytest.raises(ValueError, match=match + " names document row -1; negative indices"):
        make()


def test_one_message_for_a_malformed_indptr():
    with pytest.raises(ValueError, match=r"relevance: indptr must start with 0"):
        Relevance(np.array([1, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"answers: indptr must start with 0 and have length "):
        QuerySet(np.ones((2, 2), np.float32), (np.array([0, 1]), np.array([0])))
    with pytest.raises(ValueError, match=r"answers: indptr must be non-decreasing and end at len"):
        QuerySet(np.ones((1, 2), np.float32), (np.array([0, 2]), np.array([0])))


def test_relevance_with_the_wrong_number_of_queries():
    rel = Relevance.from_lists([[0], [1], [2]])
    with pytest.raises(ValueError, match="answers has 3 entries, but there are 2 query embeddings"):
        QuerySet(np.ones((2, 2), np.float32), rel)
    with pytest.raises(ValueError, match="exclude has 3 entries, but there are 2"):
        as_relevance(rel, "exclude", n_queries=2)


def test_grades_default_to_read_only_ones():
    rel = Relevance.from_lists([[3, 1], [2]])
    assert_array_equal(rel.grades, [1, 1, 1])
    assert not rel.grades.flags.writeable


def test_query_set_answers_feed_metrics_and_search():
    rng = np.random.default_rng(2)
    docs = rng.standard_normal((30, 8)).astype(np.float32)
    queries = rng.standard_normal((10, 8)).astype(np.float32)
    _, top = search(queries, docs, 5)
    qs = QuerySet(queries, [r[:2].tolist()[::-1] for r in top])  # unsorted: sorted here
    assert_array_equal(evaluate(top, qs.relevance, 2, metrics=("recall",))["recall@2"], 1.0)
    _, rest = search(queries, docs, 3, exclude=qs)
    assert_array_equal(rest, top[:, 2:5])
    _, rest = search(queries, docs, 3, exclude=qs.relevance)
    assert_array_equal(rest, top[:, 2:5])


def test_huge_document_rows_sort_without_overflow():
    big = 2**61
    qs = QuerySet(np.ones((3, 2), np.float32), [[big + 1, big], [5], [big, 0]])
    assert qs.answer_lists() == [[big, big + 1], [5], [0, big]]


def test_subset_refuses_rows_out_of_range():
    qs = QuerySet(np.eye(2, 3, dtype=np.float32), [[0], [1]])
    for bad in ([2], [-1]):  # -1 took the last query silently
        with pytest.raises(ValueError, match=r"rows must be query rows in 0\.\.1, got"):
            qs.subset(np.array(bad))
    assert qs.subset([]).n_queries == 0
