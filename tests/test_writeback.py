"""The write-back procedure over ArrayStore: originals, plans, resume, restore."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from nudge_rag import ArrayStore, NudgeM, NudgeN, WriteBack, WriteBackError, tune_store
from nudge_rag._state import ORIGINALS, PENDING
from nudge_rag._writeback import WrongStateError


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


# ---------------------------------------------------------------------- issue 14
import json  # noqa: E402
import logging  # noqa: E402
import threading  # noqa: E402

from nudge_rag import StateDirError, StoreBusyError, StoreTuner  # noqa: E402
from nudge_rag._state import APPLIED, META, PROGRESS  # noqa: E402


def tuned(n, dim=8, value=0.25):
    v = np.full((n, dim), value, np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("on_disk", [False, True])
def test_edited_document_is_left_as_is_by_restore_and_reported(store, tmp_path, on_disk, caplog):
    before = store.vectors.copy()
    wb = WriteBack(store, tmp_path / "s" if on_disk else None)
    wb.apply(["d1", "d2", "d3"], tuned(3))
    edit = unit(np.random.default_rng(9), 1)
    store.set_vectors(["d2"], edit)  # the user edits d2 (someone else's write)
    with caplog.at_level(logging.WARNING, logger="nudge_rag._writeback"):
        assert wb.restore() == 2
    assert_array_equal(store.get_vectors(["d2"]), edit)  # the edit stays
    assert_array_equal(store.vectors[[1, 3]], before[[1, 3]])
    assert wb.last_report.drifted_ids == ["d2"]
    assert "1 document(s) were changed by someone else" in caplog.text and "'d2'" in caplog.text
    assert wb.moved_ids() == []


def test_fit_reads_an_edited_document_as_its_new_original(store):
    wb = WriteBack(store)
    wb.apply(["d1", "d2"], tuned(2))
    edit = unit(np.random.default_rng(3), 1)
    store.set_vectors(["d2"], edit)
    ids, corpus = wb.read_corpus()
    assert_array_equal(corpus[ids.index("d2")], edit[0])  # not the stale original
    report = wb.apply(["d2"], tuned(1, value=0.5), base=corpus[[ids.index("d2")]])
    assert report.drifted_ids == ["d2"] and report.skipped_ids == []
    got_ids, originals = wb.originals()
    assert_array_equal(originals[got_ids.index("d2")], edit[0])  # the edit is the original now
    wb.restore()
    assert_array_equal(store.get_vectors(["d2"]), edit)


def test_apply_skips_a_document_changed_while_the_fit_ran(store):
    wb = WriteBack(store)
    ids, corpus = wb.read_corpus()
    edit = unit(np.random.default_rng(4), 1)
    store.set_vectors(["d5"], edit)  # changed between the read and the write
    report = wb.apply(["d4", "d5"], tuned(2), base=corpus[[4, 5]])
    assert report.skipped_ids == ["d5"]
    assert_array_equal(store.get_vectors(["d5"]), edit)
    assert wb.moved_ids() == ["d4"]


def test_a_deleted_saved_id_is_dropped_not_a_stuck_plan(store, tmp_path):
    wb = WriteBack(store, tmp_path)
    wb.apply(["d1", "d2"], tuned(2))
    keep = [i for i in store.ids if i != "d2"]
    smaller = ArrayStore(keep, store.get_vectors(keep))  # d2 deleted
    again = WriteBack(smaller, tmp_path)
    report = again.apply(["d3"], tuned(1))  # plans d1 back; d2 is gone
    assert report.missing_ids == ["d2"] and not again.has_pending
    assert again.restore() == 2


def test_restore_after_the_store_is_recreated_with_another_dimension(tmp_path):
    """Originals of another dimension are never dropped: the state is refused, both named."""
    rng = np.random.default_rng(5)
    ids = [f"d{i}" for i in range(10)]
    state = tmp_path / "state"
    wb = WriteBack(ArrayStore(ids, unit(rng, 10)), state)
    wb.apply(ids[:4], tuned(4))
    saved_ids, saved = wb.originals()
    recreated = ArrayStore(ids, unit(rng, 10, dim=16))  # same ids, another model
    snapshot = recreated.vectors.copy()
    wb2 = WriteBack(recreated, state)
    with pytest.raises(WrongStateError, match=r"8-dimensional, but .* holds 16-dimensional"):
        wb2.restore()
    with pytest.raises(WrongStateError, match="move .* aside"):
        wb2.apply(ids[:2], tuned(2, dim=16))
    assert_array_equal(recreated.vectors, snapshot)
    assert wb2.moved_ids() == saved_ids  # nothing dropped
    assert_array_equal(wb2.originals()[1], saved)
    state.rename(tmp_path / "old-state")  # the fix the message gives
    wb3 = WriteBack(recreated, state)
    wb3.apply(ids[:2], tuned(2, dim=16))  # a fit works again
    assert wb3.restore() == 2
    assert_array_equal(recreated.vectors, snapshot)


def test_a_plan_stuck_on_a_recreated_store_is_refused_not_dropped(tmp_path):
    """A pending plan of 8-dim vectors over a 16-dim store: refused, the originals kept."""
    rng = np.random.default_rng(6)
    ids = [f"d{i}" for i in range(10)]
    old = FlakyStore(ids, unit(rng, 10), fail_on=1)
    wb = WriteBack(old, tmp_path, batch_size=2)
    with pytest.raises(WriteBackError):
        wb.apply(ids[:4], tuned(4))
    recreated = FlakyStore(ids, unit(rng, 10, dim=16), fail_on=0)
    wb2 = WriteBack(recreated, tmp_path, batch_size=2)
    with pytest.raises(WrongStateError, match="8-dimensional, but .* holds 16-dimensional"):
        wb2.resume()
    assert wb2.has_pending and sorted(wb2.moved_ids()) == ids[:4]
    assert wb2.discard_pending() is True  # the way out that keeps every original
    assert sorted(wb2.moved_ids()) == ids[:4]


def test_discard_pending_keeps_the_originals_and_restore_still_works(tmp_path, caplog):
    rng = np.random.default_rng(7)
    vectors = unit(rng, 20)
    store = FlakyStore([f"d{i}" for i in range(20)], vectors, fail_on=3)
    wb = WriteBack(store, tmp_path, batch_size=4)
    wb.apply(["d0", "d1"], tuned(2))  # a completed fit
    with pytest.raises(WriteBackError, match=r"discard_pending\(\)"):
        wb.apply([f"d{i}" for i in range(12)], tuned(12, value=0.5))  # stops at batch 2
    status = wb.status()
    assert status.pending == "apply" and status.batches_done == 1 and status.batches_total == 3
    assert "discard_pending()" in status.next_step
    with caplog.at_level(logging.WARNING):
        assert wb.discard_pending() is True
    assert "the originals stay in" in caplog.text
    assert (tmp_path / ORIGINALS).exists() and not (tmp_path / PENDING).exists()
    assert wb.discard_pending() is False
    # rows the dropped plan wrote are still known as ours: all originals come back
    assert wb.restore() == 12
    assert_array_equal(store.vectors, vectors)
    assert wb.last_report.drifted_ids == []


def test_discard_pending_with_an_unreadable_plan(store, tmp_path):
    wb = WriteBack(store, tmp_path)
    before = store.vectors.copy()
    wb.apply(["d1"], tuned(1))
    (tmp_path / PENDING).write_bytes(b"garbage")
    with pytest.raises(WriteBackError, match="cannot read write-back state file"):
        wb.resume()
    assert wb.status().pending == "unreadable"
    assert wb.discard_pending() is True
    assert wb.restore() == 1
    assert_array_equal(store.vectors, before)


def test_restore_supersedes_a_pending_plan_and_its_rows_are_not_drift(tmp_path):
    rng = np.random.default_rng(8)
    vectors = unit(rng, 12)
    store = FlakyStore([f"d{i}" for i in range(12)], vectors, fail_on=2)
    wb = WriteBack(store, tmp_path, batch_size=2)
    with pytest.raises(WriteBackError):
        wb.apply([f"d{i}" for i in range(6)], tuned(6))
    store.fail_on = 3  # the restore fails too, at its first batch: d0, d1 keep the dropped
    store.calls = 2  # plan's vectors, which the next restore must still recognise
    with pytest.raises(WriteBackError):
        wb.restore()
    store.fail_on = -1
    assert wb.restore() == 6
    assert_array_equal(store.vectors, vectors)
    assert wb.last_report.drifted_ids == []


def test_state_from_an_older_version_restores_without_drift_checks(store, tmp_path):
    before = store.vectors.copy()
    wb = WriteBack(store, tmp_path)
    wb.apply(["d1", "d2"], tuned(2))
    (tmp_path / APPLIED).unlink()  # what nudge-rag 0.1 left: originals only
    (tmp_path / META).unlink()
    assert WriteBack(store, tmp_path).restore() == 2
    assert_array_equal(store.vectors, before)


def test_status_through_a_fit_and_a_restore(store, tmp_path):
    wb = WriteBack(store, tmp_path)
    empty = wb.status()
    assert not empty.tuned and empty.pending is None and empty.locked_by is None
    assert empty.next_step.startswith("the store holds its original vectors")
    q, answers = make_pairs(store)
    result = tune_store(wb, NudgeN(gamma=0.2), q, answers)
    status = wb.status()
    assert status.tuned and status.n_originals == len(result.changed_ids)
    assert status.n_tuned == len(result.changed_ids)
    assert status.variant == "n" and status.gamma == pytest.approx(0.2)
    assert status.applied_at and status.state_dir == tmp_path
    assert json.loads((tmp_path / META).read_text())["variant"] == "n"
    wb.restore()
    assert not wb.status().tuned and wb.status().applied_at is None


def test_temp_files_of_a_killed_writer_are_removed_on_next_open(store, tmp_path):
    wb = WriteBack(store, tmp_path)
    wb.apply(["d1"], tuned(1))
    left = [tmp_path / ".progress.json.k3j2.tmp", tmp_path / ".originals.npz.x9.tmp"]
    for path in left:
        path.write_bytes(b"partial")
    other = tmp_path / ".notes.tmp"  # not a state file: not ours to delete
    other.write_text("mine")
    WriteBack(store, tmp_path)
    assert not any(p.exists() for p in left) and other.exists()
    assert (tmp_path / ORIGINALS).exists()


def test_temp_files_are_kept_while_another_writer_holds_the_lock(store, tmp_path):
    wb = WriteBack(store, tmp_path)
    wb.apply(["d1"], tuned(1))
    tmp = tmp_path / ".pending.npz.a1.tmp"
    held, release = threading.Event(), threading.Event()

    def writer():
        with WriteBack(store, tmp_path).locked("apply"):
            tmp.write_bytes(b"being written")
            held.set()
            release.wait(10)

    t = threading.Thread(target=writer)
    t.start()
    held.wait(10)
    WriteBack(store, tmp_path)  # must not delete the busy writer's temp file
    assert tmp.exists()
    release.set()
    t.join()


@pytest.mark.parametrize("on_disk", [False, True])
def test_second_writer_gets_store_busy_naming_the_holder(store, tmp_path, on_disk):
    state = tmp_path / "s" if on_disk else None
    held, release = threading.Event(), threading.Event()

    def holder():
        with WriteBack(store, state).locked("fit"):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder, name="tuner-A")
    t.start()
    held.wait(10)
    try:
        wb = WriteBack(store, state)
        with pytest.raises(StoreBusyError, match=r"locked by pid \d+ on host .*tuner-A, fit"):
            wb.restore()
        with pytest.raises(StoreBusyError, match="after waiting 0.2 s") as err:
            WriteBack(store, state, lock_timeout=0.2).restore()
        assert err.value.holder["thread"] == "tuner-A"
        assert "tuner-A" in wb.status().locked_by
        assert isinstance(err.value, WriteBackError)
    finally:
        release.set()
        t.join()
    assert wb.status().locked_by is None
    assert WriteBack(store, state, lock_timeout=None).restore() == 0


def test_bounded_wait_succeeds_when_the_holder_finishes(store, tmp_path):
    held = threading.Event()

    def holder():
        with WriteBack(store, tmp_path).locked("fit"):
            held.set()
            threading.Event().wait(0.3)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(10)
    WriteBack(store, tmp_path, lock_timeout=10).apply(["d1"], tuned(1))
    t.join()
    assert WriteBack(store, tmp_path).moved_ids() == ["d1"]


@pytest.mark.parametrize("bad", [-1, "3", True, float("nan")])
def test_lock_timeout_is_checked(store, bad):
    with pytest.raises(ValueError, match="lock_timeout must be a number of seconds >= 0"):
        WriteBack(store, lock_timeout=bad)


def test_lock_is_reentrant_within_a_thread(store, tmp_path):
    wb = WriteBack(store, tmp_path)
    with wb.locked("outer"), wb.locked("inner"):
        wb.apply(["d1"], tuned(1))
        assert WriteBack(store, tmp_path).restore() == 1  # same thread, same folder


def test_bad_state_dir_is_refused_before_any_embedding(store, tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    calls = []
    with pytest.raises(StateDirError, match="exists and is not a folder"):
        tuner = StoreTuner(store, state_dir=afile)
        tuner.tune([("q", "d1")], embed=lambda texts: calls.append(texts) or np.ones((1, 8)))
    assert calls == []


def test_progress_file_name_is_unchanged(store, tmp_path):
    """The SIGKILL suite and users' scripts know the state files by name."""
    wb = WriteBack(store, tmp_path)
    wb.apply(["d1"], tuned(1))
    names = {p.name for p in tmp_path.iterdir()}
    assert {ORIGINALS, APPLIED, META, "writer.lock"} <= names
    assert PENDING not in names and PROGRESS not in names
