"""The write-back procedure over ArrayStore: originals, plans, resume, restore."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from nudge_rag import ArrayStore, NudgeM, NudgeN, WriteBack, WriteBackError, tune_store
from nudge_rag._writeback import ORIGINALS, PENDING


def unit(rng, n, dim=8):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def store():
    rng = np.random.default_rng(0)
    return ArrayStore([f"d{i}" for i in range(40)], unit(rng, 40), distance="cosine")


class FlakyStore(ArrayStore):
    """Fails on the n-th set_vectors call (like a server going away mid write-back)."""

    def __init__(self, *a, fail_on=2, **kw):
        super().__init__(*a, **kw)
        self.calls, self.fail_on = 0, fail_on

    def set_vectors(self, ids, vectors):
        self.calls += 1
        if self.calls == self.fail_on:
            raise ConnectionError("server went away")
        super().set_vectors(ids, vectors)


@pytest.mark.parametrize("on_disk", [False, True])
def test_apply_saves_originals_then_restore_is_bit_exact(store, tmp_path, on_disk):
    before = store.vectors.copy()
    wb = WriteBack(store, tmp_path / "state" if on_disk else None, batch_size=3)
    ids = ["d1", "d5", "d9", "d30"]
    new = np.full((4, 8), 1 / np.sqrt(8), dtype=np.float32)
    wb.apply(ids, new)
    assert_array_equal(store.get_vectors(ids), new)
    got_ids, originals = wb.originals()
    assert got_ids == ids
    assert_array_equal(originals, before[[1, 5, 9, 30]])
    if on_disk:
        assert (tmp_path / "state" / ORIGINALS).exists()
        assert not (tmp_path / "state" / PENDING).exists()
    assert wb.restore() == 4
    assert_array_equal(store.vectors, before)
    assert wb.moved_ids() == []


def test_read_corpus_returns_originals_after_apply(store):
    before = store.vectors.copy()
    wb = WriteBack(store)
    wb.apply(["d2"], np.zeros((1, 8), np.float32) + 0.5)
    ids, corpus = wb.read_corpus()
    assert ids == store.ids
    assert_array_equal(corpus, before)


def test_second_apply_keeps_first_originals_and_resets_rows_it_no_longer_moves(store):
    before = store.vectors.copy()
    wb = WriteBack(store)
    wb.apply(["d1", "d2"], np.full((2, 8), 0.1, np.float32))
    wb.apply(["d2", "d3"], np.full((2, 8), 0.2, np.float32))
    assert_array_equal(store.get_vectors(["d1"]), before[[1]])  # back to its original
    assert_array_equal(store.get_vectors(["d2", "d3"]), np.full((2, 8), 0.2, np.float32))
    ids, originals = wb.originals()
    assert sorted(ids) == ["d1", "d2", "d3"]
    assert_array_equal(originals[ids.index("d2")], before[2])  # not the 0.1 tuned value


def test_failed_batch_leaves_every_vector_original_or_new_and_resume_finishes(tmp_path):
    rng = np.random.default_rng(1)
    vectors = unit(rng, 20)
    store = FlakyStore([f"d{i}" for i in range(20)], vectors, fail_on=2)
    wb = WriteBack(store, tmp_path, batch_size=4)
    ids = [f"d{i}" for i in range(10)]
    new = unit(rng, 10)
    with pytest.raises(WriteBackError, match=r"apply stopped at batch 2 of 3 .*call resume\(\)"):
        wb.apply(ids, new)
    current = store.get_vectors(ids)
    is_orig = (current == vectors[:10]).all(axis=1)
    is_new = (current == new).all(axis=1)
    assert (is_orig | is_new).all()
    assert wb.has_pending
    # a fresh process sees the same state on disk
    wb2 = WriteBack(store, tmp_path, batch_size=4)
    with pytest.raises(WriteBackError, match="interrupted write-back is pending"):
        wb2.apply(ids, new)
    assert wb2.resume() is True
    assert_array_equal(store.get_vectors(ids), new)
    assert not wb2.has_pending
    assert wb2.restore() == 10
    assert_array_equal(store.vectors, vectors)


def test_restore_after_interruption_returns_originals(tmp_path):
    rng = np.random.default_rng(2)
    vectors = unit(rng, 12)
    store = FlakyStore([f"d{i}" for i in range(12)], vectors, fail_on=2)
    wb = WriteBack(store, tmp_path, batch_size=2)
    with pytest.raises(WriteBackError):
        wb.apply([f"d{i}" for i in range(8)], unit(rng, 8))
    wb.restore()
    assert_array_equal(store.vectors, vectors)
    assert not wb.has_pending and wb.moved_ids() == []


def test_unknown_id_raises_before_anything_is_written(store):
    before = store.vectors.copy()
    wb = WriteBack(store)
    with pytest.raises(KeyError, match="nope"):
        wb.apply(["d1", "nope"], np.ones((2, 8), np.float32))
    assert_array_equal(store.vectors, before)
    assert wb.moved_ids() == []


def test_dimension_mismatch_raises_before_writing(store):
    before = store.vectors.copy()
    with pytest.raises(ValueError, match="vectors have 5 dimensions, but the store holds 8"):
        WriteBack(store).apply(["d1"], np.ones((1, 5), np.float32))
    assert_array_equal(store.vectors, before)


def test_length_mismatch(store):
    with pytest.raises(ValueError, match="Got 2 ids and 1 vectors"):
        WriteBack(store).apply(["d1", "d2"], np.ones((1, 8), np.float32))


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupted_originals_file_is_a_clear_error_and_store_untouched(store, tmp_path, damage):
    wb = WriteBack(store, tmp_path)
    wb.apply(["d1"], np.ones((1, 8), np.float32) / np.sqrt(8))
    path = tmp_path / ORIGINALS
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not an npz file")
    snapshot = store.vectors.copy()
    with pytest.raises(WriteBackError, match=r"cannot read write-back state file .*originals.npz"):
        WriteBack(store, tmp_path).restore()
    assert_array_equal(store.vectors, snapshot)


def test_not_a_store():
    with pytest.raises(TypeError, match="implement nudge_rag.EmbeddingStore"):
        WriteBack(object())


def make_pairs(store, n=60, seed=0):
    rng = np.random.default_rng(seed)
    answers = [[store.ids[j] for j in rng.choice(20, size=2, replace=False)] for _ in range(n)]
    q = np.stack([store.get_vectors(a).mean(0) for a in answers])
    q += 0.3 * rng.standard_normal(q.shape).astype(np.float32)
    return q.astype(np.float32), answers


def test_tune_store_writes_only_changed_rows_and_is_idempotent(store):
    before = store.vectors.copy()
    q, answers = make_pairs(store)
    wb = WriteBack(store)
    res = tune_store(wb, NudgeN(gamma=0.2), q, answers)
    changed = set(res.changed_ids)
    assert changed and changed <= {a for pair in answers for a in pair}
    unchanged = [i for i, d in enumerate(store.ids) if d not in changed]
    assert_array_equal(store.vectors[unchanged], before[unchanged])
    first = store.vectors.copy()
    tune_store(wb, NudgeN(gamma=0.2), q, answers)  # same pairs again: same state
    assert_array_equal(store.vectors, first)
    wb.restore()
    assert_array_equal(store.vectors, before)


def test_tune_store_refuses_nudge_m_on_cosine_store(store):
    q, answers = make_pairs(store)
    with pytest.raises(
        ValueError, match="NUDGE-M writes non-normalized vectors .* scores by cosine"
    ):
        tune_store(WriteBack(store), NudgeM(), q, answers)


def test_tune_store_nudge_n_on_l2_store_requires_unit_norm():
    rng = np.random.default_rng(0)
    store = ArrayStore([f"d{i}" for i in range(30)], 2 * unit(rng, 30), distance="l2")
    q, answers = make_pairs(store)
    with pytest.raises(
        ValueError, match="ranks like cosine only when every stored vector is unit-norm"
    ):
        tune_store(WriteBack(store), NudgeN(), q, answers)


def test_tune_store_unknown_answer_id(store):
    q, answers = make_pairs(store)
    answers[3] = ["missing-doc"]
    with pytest.raises(KeyError, match="missing-doc"):
        tune_store(WriteBack(store), NudgeN(), q, answers)


def test_tune_store_empty_store():
    store = ArrayStore([], np.zeros((0, 8), np.float32))
    with pytest.raises(ValueError, match="the store is empty"):
        tune_store(WriteBack(store), NudgeN(), np.ones((2, 8), np.float32), [["a"], ["b"]])


def test_array_store_roundtrip(store, tmp_path):
    store.save(tmp_path / "s.npz")
    again = ArrayStore.load(tmp_path / "s.npz")
    assert again.ids == store.ids and again.distance == "cosine"
    assert_array_equal(again.vectors, store.vectors)
