"""The contract every store meets, run once per store and index configuration.

A store's test file subclasses :class:`StoreContract` with its :class:`StoreKind`; each test
runs for every configuration the kind lists (``conftest.py`` parametrizes ``config``). What is
asserted is what a user relies on: reads in any order, writes in place that keep text and
metadata (seen through the wrapper's own search), unknown ids named, NUDGE-M refused on a
cosine store before anything is written, ``nearest`` against exact search, ids with odd
characters kept exactly, a second writer refused, a user's edit kept by ``restore``, the
originals back after ``restore``, and nfcorpus before -> after -> restore through the one
tuning flow (``StoreTuner`` on the framework's store object) and the wrapper's own search
(every query gets ``k`` results; ANN configurations within stated bounds).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from nudge_rag import (
    MetricMismatchError,
    SearchableEmbeddingStore,
    StoreBusyError,
    StoreTuner,
    backend_for,
)

from .harness import (
    FILE_STATE_POINTS,
    ODD_IDS,
    Docs,
    Made,
    StoreKind,
    nfcorpus_docs,
    toy_docs,
    unit_rows,
)

logger = logging.getLogger(__name__)

K = 10


def _pairs(docs: Docs) -> tuple[np.ndarray, list[list[str]]]:
    questions = list(docs.queries)
    rows = [int(q.split("passage ")[1].rstrip("?")) for q in questions]
    return np.stack([docs.queries[q] for q in questions]), [[docs.ids[r]] for r in rows]


class StoreContract:
    """What every store does; subclass with ``KIND = <StoreKind subclass>``."""

    KIND: ClassVar[type[StoreKind]]

    @pytest.fixture
    def kind(self) -> StoreKind:
        kind = self.KIND()
        kind.skip_if_missing()
        return kind

    @pytest.fixture
    def made(self, kind, config, tmp_path, request) -> Made:
        if config in kind.refused:
            pytest.skip("refused configuration: test_refused_configuration covers it")
        docs = toy_docs()
        made = kind.make(tmp_path, docs, config, request)
        made.docs = docs
        yield made
        made.close()

    # ------------------------------------------------------------------ reads and writes
    def test_reads_in_any_order(self, made, tmp_path):
        docs = made.docs
        backend = backend_for(made.store)
        assert sorted(backend.list_ids()) == sorted(docs.ids)
        assert backend.count() == len(docs.ids)
        order = np.random.default_rng(3).permutation(len(docs.ids))
        got = backend.get_vectors([docs.ids[i] for i in order])
        assert got.dtype == np.float32 and got.shape == docs.vectors.shape
        np.testing.assert_allclose(got, docs.vectors[order], atol=1e-6)
        assert backend.distance in ("cosine", "l2", "dot")

    def test_write_in_place_keeps_text_and_metadata(self, made, kind):
        docs = made.docs
        backend = backend_for(made.store)
        moved = docs.ids[::3]
        new = np.roll(docs.vectors[::3], 1, axis=1)  # other unit vectors
        backend.set_vectors(moved, new)
        backend.set_vectors(moved, new)  # idempotent
        np.testing.assert_allclose(backend.get_vectors(moved), new, atol=1e-6)
        assert sorted(backend.list_ids()) == sorted(docs.ids)
        row = {i: k for k, i in enumerate(docs.ids)}
        for doc_id, vector in list(zip(moved, new))[:5]:
            hit_id, text, metadata = made.search(vector, 1)[0]
            assert hit_id == doc_id
            if text is None:  # kept in the framework's docstore, not in this store
                continue
            assert text == docs.texts[row[doc_id]]
            for key, value in docs.metadatas[row[doc_id]].items():
                assert metadata.get(key) == value

    def test_unknown_ids_are_named(self, made):
        docs = made.docs
        backend = backend_for(made.store)
        with pytest.raises(KeyError, match="no-such-doc"):
            backend.get_vectors([docs.ids[0], "no-such-doc"])
        with pytest.raises(KeyError, match="no-such-doc"):
            backend.set_vectors(["no-such-doc"], docs.vectors[:1])

    def test_nudge_m_is_refused_on_a_cosine_store_before_writing(self, made, tmp_path):
        docs = made.docs
        backend = backend_for(made.store)
        if backend.distance == "dot":
            pytest.skip("an inner-product store takes NUDGE-M")
        queries, answers = _pairs(docs)
        tuner = StoreTuner(made.store, state_dir=tmp_path / "state", variant="m")
        with pytest.raises(MetricMismatchError, match="dot product"):
            tuner.tune_embedded(queries, answers)
        np.testing.assert_allclose(backend.get_vectors(docs.ids), docs.vectors, atol=1e-6)

    def test_nearest_agrees_with_exact_search(self, made, kind, config):
        docs = made.docs
        backend = backend_for(made.store)
        if not isinstance(backend, SearchableEmbeddingStore):
            pytest.skip("the backend reads every vector instead (no store-side search)")
        queries = np.stack(list(docs.queries.values())[:20])
        got_ids, got = backend.nearest(queries, 5)
        exact = queries @ docs.vectors.T
        order = np.argsort(-exact, axis=1, kind="stable")[:, :5]
        want = [[docs.ids[j] for j in row] for row in order]
        assert got.shape == (20, 5)
        if config in kind.approximate:
            found = np.mean([len(set(g) & set(w)) / 5 for g, w in zip(got_ids, want)])
            assert found >= 0.8
        else:
            assert got_ids == want
            np.testing.assert_allclose(got, np.take_along_axis(exact, order, 1), atol=1e-4)

    # ------------------------------------------------------------------ the write-back
    def test_tune_then_restore(self, made, kind, tmp_path):
        docs = made.docs
        backend = backend_for(made.store)
        queries, answers = _pairs(docs)
        stored = backend.get_vectors(docs.ids)  # as the store holds them (its own rounding)
        tuner = StoreTuner(made.store, state_dir=tmp_path / "state")
        result = tuner.tune_embedded(queries[::2], answers[::2], queries[1::2], answers[1::2])
        assert result.changed_ids
        moved = backend.get_vectors(result.changed_ids)
        assert not np.allclose(moved, backend_vectors_of(docs, result.changed_ids), atol=1e-4)
        np.testing.assert_allclose(np.linalg.norm(moved, axis=1), 1.0, atol=1e-5)
        hits = made.search(queries[0], 5)
        assert len(hits) == 5 and {h[0] for h in hits} <= set(docs.ids)
        assert tuner.restore() == len(result.changed_ids)
        np.testing.assert_allclose(
            backend.get_vectors(docs.ids), stored, rtol=0, atol=kind.restore_atol
        )
        assert not tuner.writeback.status().tuned

    def test_a_second_writer_is_refused(self, made, tmp_path):
        docs = made.docs
        queries, answers = _pairs(docs)
        first = StoreTuner(made.store, state_dir=tmp_path / "state")
        second = StoreTuner(made.store, state_dir=tmp_path / "state", lock_timeout=0)
        held, done = threading.Event(), threading.Event()

        def hold() -> None:  # the lock is re-entrant within a thread: hold it from another
            with first.writeback.locked("a test holding the lock"):
                held.set()
                done.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert held.wait(30)
            with pytest.raises(StoreBusyError):
                second.tune_embedded(queries, answers)
        finally:
            done.set()
            holder.join()
        backend = backend_for(made.store)
        np.testing.assert_allclose(backend.get_vectors(docs.ids), docs.vectors, atol=1e-6)

    def test_restore_keeps_a_users_edit(self, made, kind, config, tmp_path):
        """Between a fit and ``restore`` the user edits tuned documents through the wrapper:
        one updated, one deleted, one deleted and added again, and a new one added.
        ``restore`` gives every other document its original, keeps the user's vectors and
        names what it left: the edited ones drifted, the deleted one missing."""
        docs = made.docs
        queries, answers = _pairs(docs)
        backend = backend_for(made.store)
        stored = dict(zip(docs.ids, backend.get_vectors(docs.ids)))
        tuner = StoreTuner(made.store, state_dir=tmp_path / "state", solver_params={"gamma": 0.5})
        changed = tuner.tune_embedded(queries, answers).changed_ids
        updated, deleted, readded = changed[:3]
        mine = unit_rows(np.random.default_rng(7).standard_normal((3, docs.vectors.shape[1])))
        meta = [{"row": -k, "title": f"mine {k}"} for k in (1, 2, 3)]  # the docs' fields
        if config in kind.cannot_delete:  # refused, the store as it was; re-embed in place
            with pytest.raises(Exception, match=kind.cannot_delete[config]):
                made.delete(deleted)
            backend.set_vectors([updated], mine[:1])
            edited, gone = {updated: mine[0]}, set()
        else:
            edited = {made.update(updated, "my edited passage", mine[0], meta[0]): mine[0]}
            made.delete(deleted)
            made.delete(readded)
            edited[made.add(readded, "my passage, again", mine[1], meta[1])] = mine[1]
            new_id = "a new one" if kind.odd_ids else str(uuid.uuid5(uuid.NAMESPACE_URL, "new"))
            edited[made.add(new_id, "my new passage", mine[2], meta[2])] = mine[2]
            assert len(edited) == 3, f"the store gave two edits one id: {sorted(edited)}"
            # a store that numbers its rows gives a deleted-and-added document a new number
            gone = {deleted} | ({updated, readded} - set(edited))
        backend = backend_for(made.store)
        assert sorted(backend.list_ids()) == sorted(set(docs.ids) - gone | set(edited))

        tuner = StoreTuner(made.store, state_dir=tmp_path / "state")  # a later session
        tuner.restore()
        report = tuner.writeback.last_report
        assert set(report.missing_ids) == gone
        assert set(report.drifted_ids) == set(edited) & set(changed)
        np.testing.assert_allclose(
            backend.get_vectors(list(edited)), np.stack(list(edited.values())), atol=1e-6
        )
        others = [i for i in docs.ids if i not in gone | set(edited)]
        np.testing.assert_allclose(
            backend.get_vectors(others),
            np.stack([stored[i] for i in others]),
            rtol=0,
            atol=kind.restore_atol,
        )

    def test_odd_ids_are_kept_exactly(self, kind, config, tmp_path, request):
        if not kind.odd_ids:
            pytest.skip("the store assigns its own ids")
        if config in kind.refused:
            pytest.skip("refused configuration")
        ids = ODD_IDS + [f"doc-{k}" for k in range(len(ODD_IDS), 40)]
        docs = toy_docs(n=40, ids=ids)
        made = kind.make(tmp_path, docs, config, request)
        try:
            backend = backend_for(made.store)
            assert sorted(backend.list_ids()) == sorted(ids)
            stored = backend.get_vectors(ids)
            queries, answers = _pairs(docs)
            tuner = StoreTuner(
                made.store, state_dir=tmp_path / "state", solver_params={"gamma": 0.5}
            )
            result = tuner.tune_embedded(queries, answers)
            assert result.changed_ids and set(result.changed_ids) <= set(ids)
            assert set(ODD_IDS) & set(result.changed_ids)
            tuner.restore()
            np.testing.assert_allclose(
                backend.get_vectors(ids), stored, rtol=0, atol=kind.restore_atol
            )
        finally:
            made.close()

    def test_command_line_tune_status_restore(self, made, kind, tmp_path, monkeypatch, capsys):
        if made.uri is None:
            pytest.skip("not on the command line")
        if kind.exclusive:
            made.close()  # its client locks the store
        from nudge_rag.cli import main

        docs = made.docs
        queries, answers = _pairs(docs)
        texts = list(docs.queries)
        for name, rows in (("train", slice(0, None, 2)), ("dev", slice(1, None, 2))):
            lines = [
                json.dumps({"question": q, "doc_ids": a})
                for q, a in zip(texts[rows], answers[rows])
            ]
            (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        lookup = tmp_path / "questions.npz"
        np.savez(lookup, texts=np.asarray(texts), vectors=queries)
        monkeypatch.setenv("NUDGE_CLI_QUESTIONS", str(lookup))
        monkeypatch.syspath_prepend(str(TESTS))
        store = ["--store", made.uri, "--collection", made.collection, *made.cli_args]
        state = ["--state-dir", str(tmp_path / "cli_state")]
        tune = ["tune", *store, *state, "--pairs", str(tmp_path / "train.jsonl")]
        tune += ["--val-pairs", str(tmp_path / "dev.jsonl"), "--gamma", "0.5", "--json"]
        tune += ["--embed", EMBED, "--progress", "off"]
        stored = _cli_vectors(made, docs.ids)
        assert main(tune) == 0, capsys.readouterr().err
        tuned = json.loads(capsys.readouterr().out)
        assert not np.allclose(_cli_vectors(made, docs.ids), stored, atol=1e-4)
        assert main(["status", *store, *state, "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["tuned"] is True, status
        assert main(["restore", *store, *state]) == 0, capsys.readouterr().err
        np.testing.assert_allclose(
            _cli_vectors(made, docs.ids), stored, rtol=0, atol=kind.restore_atol
        )
        assert tuned

    @pytest.mark.slow
    def test_sigkill_at_each_write_back_point(
        self, made, kind, kill_point, tmp_path, monkeypatch, capsys
    ):
        """``kill -9`` at one point of the write-back of ``tune`` or ``restore`` (one process,
        the command line; the state where the store keeps it by default): ``status`` says what
        was written, ``restore`` brings back every original, and after the same kill again
        ``resume`` finishes to exactly what the uninterrupted command writes."""
        if made.uri is None:
            pytest.skip("not on the command line")
        from nudge_rag._store import StatefulEmbeddingStore, supports

        command, point = kill_point
        with _cli_open(made) as opened:
            own_state = supports(opened.backend, StatefulEmbeddingStore)
        if own_state and point in FILE_STATE_POINTS:
            pytest.skip(
                "the store keeps its own state: each batch saves its originals and progress"
            )
        cli = _CommandLine(made, kind, tmp_path, monkeypatch, capsys)
        docs = made.docs
        stored = _cli_vectors(made, docs.ids)
        n = json.loads(cli.run(*cli.tune, "--json"))["rows_moved"]
        fitted = _cli_vectors(made, docs.ids)
        n_batches = -(-n // _BATCH)
        assert n_batches > 4, "the plan must have batches before and after the kill points"
        cli.run(*cli.restore)
        atol = max(kind.restore_atol, 1e-6)
        written, recorded = _written_at(point, n, own_state)

        def check_status(pending: str | None, n_originals: int) -> None:
            status = json.loads(cli.run("status", *cli.store, "--json"))
            want = None
            if pending is not None:
                want = {"kind": pending, "n_ids": n, "batches_done": recorded}
                want["n_batches"] = n_batches
            assert status["pending"] == want, status
            assert status["n_originals"] == n_originals, status
            assert status["tuned"] is (n_originals > 0), status

        def rows(want_tuned: int) -> None:
            assert sorted(_cli_ids(made)) == sorted(docs.ids)  # no row lost or added
            now = _cli_vectors(made, docs.ids)
            original = np.all(np.isclose(now, stored, rtol=0, atol=atol), axis=1)
            tuned = np.all(np.isclose(now, fitted, rtol=0, atol=1e-6), axis=1)
            assert (original | tuned).all(), "a row is neither original nor tuned"
            assert int((tuned & ~original).sum()) == want_tuned

        def is_original() -> None:
            np.testing.assert_allclose(
                _cli_vectors(made, docs.ids), stored, rtol=0, atol=kind.restore_atol
            )
            check_status(None, 0)

        if command == "tune":
            cli.kill(point, *cli.tune)
            rows(written)
            saved = written if own_state else n  # a file state saves every original first
            check_status(None if point == "originals" else "apply", saved)
            out = cli.run(*cli.restore)
            assert (f"restored {saved} " if saved else "nothing to restore") in out, out
            is_original()
            cli.kill(point, *cli.tune)
            out = cli.run("resume", *cli.store)
            if point == "originals":  # no plan: the next fit starts from the originals
                assert "no interrupted write-back" in out, out
                rows(0)
                cli.run(*cli.tune)
            else:
                assert "finished the interrupted write-back" in out, out
            final = fitted
            # exactly the same vectors where restore is exact; a store that rounds what it is
            # given (restore_atol) gave this fit originals a rounding away from the first's
            exact = kind.restore_atol == 0
            np.testing.assert_allclose(
                _cli_vectors(made, docs.ids), fitted, rtol=0, atol=0 if exact else 1e-6
            )
            check_status(None, n)
        else:
            cli.run(*cli.tune)
            cli.kill(point, *cli.restore)
            rows(n - written)
            check_status("restore", n)  # the originals are kept until every one is back
            out = cli.run(*cli.restore)
            assert f"restored {n} " in out, out
            is_original()
            cli.run(*cli.tune)
            cli.kill(point, *cli.restore)
            out = cli.run("resume", *cli.store)
            assert "finished the interrupted write-back" in out, out
            is_original()
            final = stored
        # text and metadata are kept, as a new process opens the store through its wrapper
        reopened = kind.reopen(made)
        row = {i: k for k, i in enumerate(docs.ids)}
        moved = [i for i in docs.ids if not np.allclose(fitted[row[i]], stored[row[i]])]
        for doc_id in moved[:3]:
            hit_id, text, metadata = reopened.search(final[row[doc_id]], 1)[0]
            assert hit_id == doc_id
            if text is not None:
                assert text == docs.texts[row[doc_id]]
                assert metadata.get("title") == docs.metadatas[row[doc_id]]["title"]

    def test_refused_configuration(self, kind, config, tmp_path, request):
        if config not in kind.refused:
            pytest.skip("a supported configuration")
        docs = toy_docs()
        made = kind.make(tmp_path, docs, config, request)
        try:
            with pytest.raises((ValueError, TypeError), match=kind.refused[config]):
                backend = backend_for(made.store)
                StoreTuner(backend, state_dir=tmp_path / "s").tune_embedded(*_pairs(docs))
        finally:
            made.close()

    # ------------------------------------------------------------------ nfcorpus
    @pytest.mark.slow
    def test_nfcorpus_before_after_restore(self, kind, config, tmp_path, request, nfcorpus):
        from nfcorpus_eval import exact_ndcg, ranked_ndcg

        from nudge_rag import NudgeN

        if config in kind.refused:
            pytest.skip("refused configuration")
        if config in kind.nfcorpus_skip:
            pytest.skip(kind.nfcorpus_skip[config])
        ds = nfcorpus
        vectors = np.asarray(ds.doc_embeddings, dtype=np.float32)
        ids = list(ds.doc_ids)
        docs = nfcorpus_docs(ds)
        made = kind.make(tmp_path, docs, config, request)
        to_store = dict(zip(ids, docs.ids))  # the store's own ids (rowids) where it gives them
        to_ds = dict(zip(docs.ids, ids))
        # An ANN index is measured on every test query. An exact configuration's search is
        # the store's own exact search: every third query goes through the wrapper (against
        # exact search over the vectors read back on the same queries), and the whole test
        # set's numbers come from those vectors (Milvus Lite answers a search in ~60 ms,
        # SimpleVectorStore in ~110 ms: three passes over every query took 2 minutes each).
        n_test = ds.test.n_queries
        sample = np.arange(n_test) if config in kind.approximate else np.arange(0, n_test, 3)
        try:
            tuner = StoreTuner(made.store, state_dir=tmp_path / "st")

            def ndcg() -> float:
                kind.set_search(made, config)
                hits = [
                    [to_ds[h[0]] for h in made.search(q, K)]
                    for q in ds.test.query_embeddings[sample]
                ]
                assert min(len(h) for h in hits) == K, "a query got fewer than k results"
                return ranked_ndcg(ds, hits, K, sample)

            def read_back() -> np.ndarray:
                return tuner.store.get_vectors(docs.ids)

            train, dev = ds.train, ds.dev
            before, stored_before = ndcg(), read_back()
            tuner.tune_embedded(
                train.query_embeddings,
                _answer_ids(ds, train, to_store),
                dev.query_embeddings,
                _answer_ids(ds, dev, to_store),
            )
            after, tuned = ndcg(), read_back()
            fitted = NudgeN().fit(vectors, train.queryset(), dev.queryset())
            tuner.restore()
            restored, stored_restored = ndcg(), read_back()
            full = {  # the whole test set, exact search over the vectors the store holds
                "before": exact_ndcg(ds, stored_before),
                "after": exact_ndcg(ds, tuned),
                "arrays": exact_ndcg(ds, fitted.embeddings_),
                "restored": exact_ndcg(ds, stored_restored),
            }
            logger.warning(
                "%s[%s] nfcorpus nDCG@10 on %d test queries through the wrapper: before %.4f, "
                "after %.4f, restored %.4f; every test query, exact search over the stored "
                "vectors: before %.4f, after %.4f (arrays %.4f), restored %.4f",
                kind.name,
                config,
                len(sample),
                before,
                after,
                restored,
                *full.values(),
            )
            assert full["before"] == pytest.approx(exact_ndcg(ds, vectors), abs=0.002)
            assert full["after"] == pytest.approx(full["arrays"], abs=0.005)
            assert full["restored"] == pytest.approx(full["before"], abs=0.002)
            exact_before = exact_ndcg(ds, stored_before, queries=sample)
            exact_after = exact_ndcg(ds, tuned, queries=sample)
            if config in kind.approximate:
                # no worse than before (the planner may pick a sequential scan once the
                # table is analyzed: then better, exact)
                assert restored >= before - 0.005
                loss_before, loss_after = exact_before - before, exact_after - after
                assert loss_after <= loss_before + kind.ann_slack(config)
            else:
                assert before == pytest.approx(exact_before, abs=0.002)
                assert after == pytest.approx(exact_after, abs=0.002)
                assert restored == pytest.approx(before, abs=0.002)
        finally:
            made.close()


#: Rows per write-back batch in the kill tests (``--batch-size``).
_BATCH = 8
#: The ``--embed`` model of the command-line tests: the questions' vectors, looked up.
EMBED = "cli_lookup:LookupEmbeddings"
TESTS = Path(__file__).resolve().parents[1]


def _written_at(point: str, n: int, own_state: bool) -> tuple[int, int]:
    """Rows written and batches recorded when ``kill_child.py`` kills at ``point`` (a plan of
    ``n`` rows in batches of :data:`_BATCH`)."""
    name, _, number = point.partition(":")
    if name in ("originals", "plan"):
        return 0, 0
    if name == "finish":
        return n, -(-n // _BATCH)
    k = int(number)
    # a batch written through set_vectors is recorded afterwards; write_batch records it with
    # the batch, in one transaction
    recorded = k if name == "progress" or own_state else k - 1
    return min(k * _BATCH, n), recorded


class _CommandLine:
    """``nudge-rag`` on a made store: in this process, or in a child killed at a point."""

    def __init__(self, made: Made, kind: StoreKind, tmp_path: Path, monkeypatch, capsys):
        docs = made.docs
        queries, answers = _pairs(docs)
        texts = list(docs.queries)
        lines = [json.dumps({"question": q, "doc_ids": a}) for q, a in zip(texts, answers)]
        pairs = tmp_path / "train.jsonl"
        pairs.write_text("\n".join(lines) + "\n", encoding="utf-8")
        lookup = tmp_path / "questions.npz"
        np.savez(lookup, texts=np.asarray(texts), vectors=queries)
        monkeypatch.setenv("NUDGE_CLI_QUESTIONS", str(lookup))
        monkeypatch.syspath_prepend(str(TESTS))
        self.made, self.kind, self.capsys = made, kind, capsys
        self.store = ["--store", made.uri, "--collection", made.collection, *made.cli_args]
        self.tune = ["tune", *self.store, "--pairs", str(pairs), "--gamma", "0.5"]
        self.tune += ["--batch-size", str(_BATCH), "--progress", "off", "--embed", EMBED]
        self.restore = ["restore", *self.store, "--batch-size", str(_BATCH)]
        path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
        self.env = {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore"}

    def run(self, *args: str) -> str:
        """``nudge-rag args`` in this process; its stdout."""
        from nudge_rag.cli import main

        status = main(list(args))
        out = self.capsys.readouterr()
        assert status == 0, out.err
        return out.out

    def kill(self, point: str, *args: str) -> None:
        """``nudge-rag args`` in a child process that SIGKILLs itself at ``point``."""
        child = [sys.executable, str(Path(__file__).with_name("kill_child.py")), point, *args]
        done = subprocess.run(child, env=self.env, capture_output=True, text=True, timeout=300)
        assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
        self.kind.settle(self.made)


def _cli_open(made: Made):
    """The store opened from its URI, as the command line opens it (a context manager)."""
    from nudge_rag.backends._uri import open_store

    trust = "--trust-pickle" in made.cli_args
    return open_store(made.uri, made.collection, distance=_distance(made), trust_pickle=trust)


def _cli_vectors(made: Made, ids: list[str]) -> np.ndarray:
    """The vectors as the command line sees them."""
    with _cli_open(made) as opened:
        return opened.backend.get_vectors(ids)


def _cli_ids(made: Made) -> list[str]:
    """The ids as the command line sees them."""
    with _cli_open(made) as opened:
        return list(opened.backend.list_ids())


def _distance(made: Made) -> str | None:
    args = list(made.cli_args)
    return args[args.index("--distance") + 1] if "--distance" in args else None


def _answer_ids(ds, split, to_store: dict[str, str]) -> list[list[str]]:
    rel = split.relevance
    return [
        [to_store[ds.doc_ids[int(r)]] for r in rel.indices[rel.indptr[q] : rel.indptr[q + 1]]]
        for q in range(split.n_queries)
    ]


def backend_vectors_of(docs: Docs, ids: list[str]) -> np.ndarray:
    """The original vectors of ``ids``."""
    row = {i: k for k, i in enumerate(docs.ids)}
    return docs.vectors[[row[i] for i in ids]]


__all__ = ["StoreContract", "K"]
