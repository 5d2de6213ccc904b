import logging
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from nudge_rag._metrics import (
    Relevance,
    evaluate,
    hit_at_k,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
)


def log2(x):
    return math.log2(x)


# ---------------------------------------------------------------------- toy fixture
# Three queries over documents 0..9, cut-off k = 3.
#
# query 0: relevant {1: grade 2, 4: grade 1}; retrieved [1, 2, 4]
#   hits at ranks 1 (grade 2) and 3 (grade 1)
#   recall = 2 / min(2, 3) = 1
#   DCG  = 2/log2(2) + 1/log2(4) = 2 + 0.5 = 2.5
#   IDCG = 2/log2(2) + 1/log2(3) = 2 + 0.63093 = 2.63093
#   nDCG = 2.5 / 2.63093 = 0.95023
#   MRR  = 1, hit = 1
# query 1: relevant {0, 5, 6, 7} (grade 1); retrieved [3, 5, -1] (only two results)
#   one hit at rank 2
#   recall = 1 / min(4, 3) = 1/3
#   DCG  = 1/log2(3) = 0.63093
#   IDCG = 1/log2(2) + 1/log2(3) + 1/log2(4) = 1 + 0.63093 + 0.5 = 2.13093
#   nDCG = 0.29608
#   MRR  = 1/2, hit = 1
# query 2: relevant {9} (grade 1); retrieved [0, 1, 2]
#   no hit: recall = nDCG = MRR = hit = 0
TOY_RETRIEVED = np.array([[1, 2, 4, 9], [3, 5, -1, -1], [0, 1, 2, 3]])
TOY_RELEVANCE = Relevance.from_lists(
    [[1, 4], [0, 5, 6, 7], [9]], grades=[[2, 1], [1, 1, 1, 1], [1]]
)


def test_toy_recall():
    assert_allclose(recall_at_k(TOY_RETRIEVED, TOY_RELEVANCE, 3), [1.0, 1 / 3, 0.0])


def test_toy_ndcg():
    q0 = (2 / log2(2) + 1 / log2(4)) / (2 / log2(2) + 1 / log2(3))
    q1 = (1 / log2(3)) / (1 / log2(2) + 1 / log2(3) + 1 / log2(4))
    assert_allclose(ndcg_at_k(TOY_RETRIEVED, TOY_RELEVANCE, 3), [q0, q1, 0.0])
    assert_allclose([q0, q1], [0.95023, 0.29608], atol=1e-5)


def test_toy_mrr_and_hit():
    assert_allclose(mrr_at_k(TOY_RETRIEVED, TOY_RELEVANCE, 3), [1.0, 0.5, 0.0])
    assert_allclose(hit_at_k(TOY_RETRIEVED, TOY_RELEVANCE, 3), [1.0, 1.0, 0.0])


def test_toy_evaluate_means():
    out = evaluate(TOY_RETRIEVED, TOY_RELEVANCE, k=3)
    assert set(out) == {"recall@3", "ndcg@3", "mrr@3", "hit@3"}
    assert_allclose(out["recall@3"], (1 + 1 / 3 + 0) / 3)
    assert_allclose(out["mrr@3"], 0.5)
    assert_allclose(out["hit@3"], 2 / 3)
    assert isinstance(out["ndcg@3"], float)


def test_cutoff_one_and_several_ks():
    # At k = 1 only rank 1 counts: query 0 hits (grade 2 of ideal 2) -> nDCG 1, recall 1/1.
    out = evaluate(TOY_RETRIEVED, TOY_RELEVANCE, k=[1, 3], metrics=("recall", "ndcg"))
    assert_allclose(out["recall@1"], 1 / 3)
    assert_allclose(out["ndcg@1"], 1 / 3)
    assert "recall@3" in out and "mrr@1" not in out


def test_recall_denominator_is_min_of_relevant_and_k():
    # 12 relevant docs, k = 10, all ten retrieved are relevant -> recall 1 (not 10/12).
    rel = Relevance.from_lists([list(range(12))])
    assert_allclose(recall_at_k(np.arange(10)[None, :], rel, 10), [1.0])
    assert_allclose(ndcg_at_k(np.arange(10)[None, :], rel, 10), [1.0])


def test_ideal_dcg_uses_largest_grades():
    # relevant {0: 1, 1: 3, 2: 2}; retrieved [1, 2] at k = 2 is the ideal order -> nDCG 1;
    # the reversed order [2, 1]: DCG = 2 + 3/log2(3), IDCG = 3 + 2/log2(3).
    rel = Relevance.from_lists([[0, 1, 2]], grades=[[1, 3, 2]])
    assert_allclose(ndcg_at_k(np.array([[1, 2]]), rel, 2), [1.0])
    expected = (2 + 3 / log2(3)) / (3 + 2 / log2(3))
    assert_allclose(ndcg_at_k(np.array([[2, 1]]), rel, 2), [expected])


def test_extra_columns_beyond_k_are_ignored():
    wide = np.concatenate([TOY_RETRIEVED, np.full((3, 5), -1)], axis=1)
    assert_allclose(ndcg_at_k(wide, TOY_RELEVANCE, 3), ndcg_at_k(TOY_RETRIEVED, TOY_RELEVANCE, 3))


def test_query_without_relevant_docs_is_nan_and_left_out(caplog):
    rel = Relevance.from_lists([[1], []])
    retrieved = np.array([[1, 2], [3, 4]])
    assert np.isnan(recall_at_k(retrieved, rel, 2)[1])
    assert np.isnan(ndcg_at_k(retrieved, rel, 2)[1])
    with caplog.at_level(logging.WARNING, logger="nudge_rag._metrics"):
        out = evaluate(retrieved, rel, 2)
    assert out["recall@2"] == 1.0
    assert "1 of 2 queries have no relevant documents" in caplog.text
    with pytest.raises(ValueError, match="no query with a relevant document"):
        evaluate(retrieved, Relevance.from_lists([[], []]), 2)


def test_per_query_arrays():
    out = evaluate(TOY_RETRIEVED, TOY_RELEVANCE, 3, per_query=True)
    assert out["recall@3"].shape == (3,)
    assert_allclose(out["hit@3"], [1, 1, 0])


# ---------------------------------------------------------------------- invariances
def _random_case(rng, n_queries=200, n_docs=300, k=10):
    lengths = rng.integers(1, 8, size=n_queries)
    answers = [rng.choice(n_docs, size=n, replace=False).tolist() for n in lengths]
    grades = [rng.integers(1, 4, size=n).tolist() for n in lengths]
    retrieved = np.stack([rng.choice(n_docs, size=k + 5, replace=False) for _ in range(n_queries)])
    return retrieved, Relevance.from_lists(answers, grades), answers, grades


def _reference_metrics(retrieved, answers, grades, k):
    """Straightforward per-query loop, as the NUDGE reference calc_metrics."""
    out = {"recall": [], "ndcg": [], "mrr": []}
    for top, ans, gr in zip(retrieved, answers, grades, strict=True):
        rel = dict(zip(ans, gr, strict=True))
        top = top[:k].tolist()
        out["recall"].append(len(set(top) & set(ans)) / min(len(ans), k))
        ideal = sorted(gr, reverse=True)[:k]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(top))
        out["ndcg"].append(dcg / idcg)
        ranks = [i + 1 for i, d in enumerate(top) if d in rel]
        out["mrr"].append(1 / ranks[0] if ranks else 0.0)
    return {m: np.array(v) for m, v in out.items()}


def test_matches_straightforward_implementation():
    rng = np.random.default_rng(0)
    retrieved, rel, answers, grades = _random_case(rng)
    expected = _reference_metrics(retrieved, answers, grades, 10)
    assert_allclose(recall_at_k(retrieved, rel, 10), expected["recall"])
    assert_allclose(ndcg_at_k(retrieved, rel, 10), expected["ndcg"])
    assert_allclose(mrr_at_k(retrieved, rel, 10), expected["mrr"])


def test_invariant_to_query_order_and_answer_order():
    rng = np.random.default_rng(0)
    retrieved, rel, answers, grades = _random_case(rng)
    perm = rng.permutation(len(answers))
    shuffled = [rng.permutation(len(a)) for a in answers]
    rel2 = Relevance.from_lists(
        [[answers[i][j] for j in shuffled[i]] for i in perm],
        [[grades[i][j] for j in shuffled[i]] for i in perm],
    )
    for fn in (recall_at_k, ndcg_at_k, mrr_at_k, hit_at_k):
        assert_allclose(fn(retrieved[perm], rel2, 10), fn(retrieved, rel, 10)[perm])


def test_grade_scaling_leaves_ndcg_unchanged():
    rng = np.random.default_rng(0)
    retrieved, rel, _, _ = _random_case(rng)
    scaled = Relevance(rel.indptr, rel.indices, rel.grades * 3)
    assert_allclose(ndcg_at_k(retrieved, scaled, 10), ndcg_at_k(retrieved, rel, 10))


def test_no_dense_matrix_needed_for_huge_doc_ids():
    # Document rows near 10**12 would need a 10**12-wide dense label matrix.
    big = 10**12
    rel = Relevance.from_lists([[big, 5], [big + 1]])
    retrieved = np.array([[big, 7], [3, big + 1]])
    assert_allclose(recall_at_k(retrieved, rel, 2), [0.5, 1.0])


# ---------------------------------------------------------------------- Relevance
def test_relevance_drops_zero_grades_and_sorts():
    rel = Relevance(np.array([0, 3, 4]), np.array([5, 2, 9, 1]), np.array([1, 0, 2, 3]))
    assert_array_equal(rel.indptr, [0, 2, 3])
    assert_array_equal(rel.indices, [5, 9, 1])
    assert_array_equal(rel.grades, [1, 2, 3])
    assert rel.n_queries == 2 and rel.n_pairs == 3
    assert rel.to_lists() == [[5, 9], [1]]


def test_relevance_from_dict_with_ids():
    rel = Relevance.from_dict(
        {"q2": {"b": 2}, "q1": ["a", "c"]},
        query_ids=["q1", "q2", "q3"],
        doc_ids=["a", "b", "c"],
    )
    assert rel.to_lists() == [[0, 2], [1], []]
    assert_array_equal(rel.grades, [1, 1, 2])
    with pytest.raises(ValueError, match=r"document id\(s\) that are not in doc_ids.*'zz'"):
        Relevance.from_dict({"q1": ["zz"]}, doc_ids=["a"])
    with pytest.raises(ValueError, match=r"query id\(s\) that are not in query_ids.*'q9'"):
        Relevance.from_dict({"q9": ["a"]}, query_ids=["q1"], doc_ids=["a"])


def test_relevance_subset():
    sub = TOY_RELEVANCE.subset(np.array([2, 0]))
    assert sub.to_lists() == [[9], [1, 4]]
    assert_array_equal(sub.grades, [1, 2, 1])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.array([1, 2]), np.array([0, 1])), "indptr must start with 0"),
        ((np.array([0, 3]), np.array([0, 1])), "end at len"),
        ((np.array([0, 2]), np.array([0, -1])), r"relevance\[0\] names document row -1; negative"),
        ((np.array([0, 2]), np.array([4, 4])), "more than once for query 0"),
        ((np.array([0, 1]), np.array([4]), np.array([-1])), "grades must be >= 0"),
        ((np.array([0, 1]), np.array([4]), np.array([1, 2])), "one entry per index"),
    ],
)
def test_relevance_errors(args, match):
    with pytest.raises(ValueError, match=match):
        Relevance(*args)


def test_from_lists_grades_mismatch():
    with pytest.raises(ValueError, match=r"grades\[1\] has 1 entries, but answers\[1\] has 2"):
        Relevance.from_lists([[1], [2, 3]], grades=[[1], [1]])


# ---------------------------------------------------------------------- input errors
@pytest.mark.parametrize(
    ("retrieved", "k", "exc", "match"),
    [
        (np.array([1, 2, 3]), 1, ValueError, "must be 2-D"),
        (np.array([[1.0, 2.0]] * 3), 1, TypeError, "integer document rows"),
        (np.array([[1, 2]] * 2), 1, ValueError, "retrieved has 2 rows, but relevance has 3"),
        (np.array([[1, 2]] * 3), 5, ValueError, "retrieved has 2 columns, but k = 5"),
        (np.array([[1, 2], [3, -2], [0, 1]]), 2, ValueError, "query 1 has -2 at rank 2"),
        (np.array([[1, 1], [3, 4], [0, 1]]), 2, ValueError, "row 1 more than once for query 0"),
        (np.array([[1, 2]] * 3), 0, ValueError, "k must be an integer >= 1"),
    ],
)
def test_retrieved_errors(retrieved, k, exc, match):
    with pytest.raises(exc, match=match):
        recall_at_k(retrieved, TOY_RELEVANCE, k)


def test_padding_minus_one_may_repeat():
    rel = Relevance.from_lists([[0]])
    assert_allclose(recall_at_k(np.array([[-1, -1, 0]]), rel, 3), [1.0])
    assert_allclose(mrr_at_k(np.array([[-1, -1, 0]]), rel, 3), [1 / 3])


def test_evaluate_rejects_unknown_metric():
    with pytest.raises(ValueError, match="unknown"):
        evaluate(TOY_RETRIEVED, TOY_RELEVANCE, 3, metrics=("precision",))
