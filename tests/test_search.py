import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from nudge_rag._queryset import QuerySet
from nudge_rag._search import search


def _brute_force(queries, docs, k, similarity="cosine"):
    """Full score matrix, stable sort on the negated scores (lower row first on ties)."""
    q = queries.astype(np.float64)
    d = docs.astype(np.float64)
    if similarity == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
        d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-30)
    scores = q @ d.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((57, 24)).astype(np.float32)
    docs = rng.standard_normal((1000, 24)).astype(np.float32)
    return queries, docs


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_matches_brute_force(data, similarity):
    queries, docs = data
    scores, rows = search(queries, docs, 10, similarity=similarity, doc_batch_size=128)
    ref_scores, ref_rows = _brute_force(queries, docs, 10, similarity)
    assert scores.dtype == np.float32 and rows.dtype == np.int64
    assert scores.shape == rows.shape == (57, 10)
    assert_array_equal(rows, ref_rows)
    assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("batch_size", "doc_batch_size"), [(1, 7), (7, 13), (57, 999), (1000, 1000), (8, 4096)]
)
def test_block_size_invariance(data, batch_size, doc_batch_size):
    queries, docs = data
    expected_scores, expected_rows = search(queries, docs, 15)
    scores, rows = search(queries, docs, 15, batch_size=batch_size, doc_batch_size=doc_batch_size)
    assert_array_equal(rows, expected_rows)
    assert_allclose(scores, expected_scores, rtol=1e-6, atol=1e-6)


def test_ties_go_to_lower_rows():
    # Documents 2, 5, 7, 9 are identical; 0 is the best match, the others orthogonal.
    docs = np.zeros((12, 3), dtype=np.float32)
    docs[:, 2] = 1.0
    docs[[2, 5, 7, 9]] = [1.0, 1.0, 0.0]
    docs[0] = [1.0, 0.9, 0.0]
    query = np.array([[1.0, 1.0, 0.0]], dtype=np.float32)
    for doc_batch_size in (1, 2, 3, 5, 12):
        _, rows = search(query, docs, 4, doc_batch_size=doc_batch_size)
        assert rows.tolist() == [[2, 5, 7, 9]]
        _, rows = search(query, docs, 6, doc_batch_size=doc_batch_size)
        # after the four tied maxima: doc 0, then the first of the orthogonal ones
        assert rows.tolist() == [[2, 5, 7, 9, 0, 1]]


def test_many_ties_match_stable_sort():
    rng = np.random.default_rng(0)
    # Few distinct values -> many exact ties at the k-th place.
    docs = rng.integers(-2, 3, size=(500, 4)).astype(np.float32)
    queries = rng.integers(-2, 3, size=(30, 4)).astype(np.float32)
    _, ref_rows = _brute_force(queries, docs, 20, "dot")
    for batch in (7, 64, 500):
        _, rows = search(queries, docs, 20, similarity="dot", doc_batch_size=batch, batch_size=9)
        assert_array_equal(rows, ref_rows)


def test_k_larger_than_corpus_pads():
    rng = np.random.default_rng(0)
    docs = rng.standard_normal((4, 5)).astype(np.float32)
    queries = rng.standard_normal((3, 5)).astype(np.float32)
    scores, rows = search(queries, docs, 6, doc_batch_size=3)
    assert rows.shape == (3, 6)
    assert_array_equal(rows[:, 4:], -1)
    assert np.isneginf(scores[:, 4:]).all()
    _, ref_rows = _brute_force(queries, docs, 4)
    assert_array_equal(rows[:, :4], ref_rows)


def test_zero_vectors_do_not_give_nan():
    docs = np.array([[0, 0], [1, 0], [0, 1]], dtype=np.float32)
    queries = np.array([[0, 0], [2, 0]], dtype=np.float32)
    scores, rows = search(queries, docs, 3)
    assert np.isfinite(scores).all()
    assert rows[0].tolist() == [0, 1, 2]  # all scores 0: row order
    assert rows[1].tolist() == [1, 0, 2]  # 1, then ties at 0 in row order
    assert_allclose(scores[1], [1, 0, 0])


def test_cosine_ignores_document_norms_dot_does_not():
    docs = np.array([[1, 0], [10, 1]], dtype=np.float32)
    query = np.array([[1, 0]], dtype=np.float32)
    assert search(query, docs, 1)[1].tolist() == [[0]]
    assert search(query, docs, 1, similarity="dot")[1].tolist() == [[1]]


def test_memmap_input(tmp_path, data):
    queries, docs = data
    path = tmp_path / "docs.npy"
    np.save(path, docs)
    mm = np.load(path, mmap_mode="r")
    assert isinstance(mm, np.memmap)
    scores, rows = search(queries, mm, 10, doc_batch_size=100)
    ref_scores, ref_rows = search(queries, docs, 10)
    assert_array_equal(rows, ref_rows)
    assert_allclose(scores, ref_scores, rtol=1e-6)


def test_float64_inputs_give_float32(data):
    queries, docs = data
    scores, rows = search(queries.astype(np.float64), docs.astype(np.float64), 5)
    assert scores.dtype == np.float32
    assert_array_equal(rows, search(queries, docs, 5)[1])


def test_exclude(data):
    queries, docs = data
    _, rows = search(queries, docs, 10)
    # exclude each query's current top 3 -> the new list is the old ranks 4.. onwards
    excluded = [r[:3].tolist() for r in rows]
    _, rows2 = search(queries, docs, 7, exclude=excluded, doc_batch_size=64)
    assert_array_equal(rows2, rows[:, 3:10])
    # a QuerySet works as exclude too
    qs = QuerySet(queries, excluded)
    _, rows3 = search(queries, docs, 7, exclude=qs)
    assert_array_equal(rows3, rows2)


def test_exclude_everything_pads():
    docs = np.eye(3, dtype=np.float32)
    scores, rows = search(docs[:1], docs, 2, exclude=[[0, 1, 2]])
    assert rows.tolist() == [[-1, -1]]
    assert np.isneginf(scores).all()


def test_no_queries(data):
    _, docs = data
    scores, rows = search(np.zeros((0, 24), dtype=np.float32), docs, 5)
    assert scores.shape == rows.shape == (0, 5)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"similarity": "l2"}, ValueError, "similarity must be one of"),
        ({"k": 0}, ValueError, "k must be an integer >= 1"),
        ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
        ({"exclude": [[5000]] * 57}, ValueError, "exclude\\[0\\] names document row 5000"),
        ({"exclude": [[1]]}, ValueError, "exclude has 1 entries, but there are 57"),
    ],
)
def test_argument_errors(data, kwargs, exc, match):
    queries, docs = data
    with pytest.raises(exc, match=match):
        search(queries, docs, **{"k": 5, **kwargs})


def test_shape_errors(data):
    queries, docs = data
    with pytest.raises(ValueError, match="query_embeddings has 23 dimensions, but the documents"):
        search(queries[:, :23], docs, 5)
    with pytest.raises(ValueError, match="doc_embeddings must be 2-D"):
        search(queries, docs[0], 5)
    with pytest.raises(ValueError, match="doc_embeddings is empty"):
        search(queries, docs[:0], 5)


def test_nan_in_documents_is_named(data):
    queries, docs = data
    docs = docs.copy()
    docs[321, 4] = np.nan
    with pytest.raises(ValueError, match="row 321 holds NaN"):
        search(queries, docs, 5, doc_batch_size=100)
