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

import logging
import threading
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

from .harness import ODD_IDS, Docs, Made, StoreKind, toy_docs

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

    def test_restore_keeps_a_users_edit(self, made, kind, tmp_path):
        docs = made.docs
        queries, answers = _pairs(docs)
        backend = backend_for(made.store)
        stored = dict(zip(docs.ids, backend.get_vectors(docs.ids)))
        tuner = StoreTuner(made.store, state_dir=tmp_path / "state", solver_params={"gamma": 0.5})
        result = tuner.tune_embedded(queries, answers)
        edited = result.changed_ids[0]
        mine = np.roll(docs.vectors[:1], 3, axis=1)
        backend.set_vectors([edited], mine)  # the user re-embeds one document
        tuner.restore()
        np.testing.assert_allclose(backend.get_vectors([edited]), mine, atol=1e-6)
        others = [i for i in docs.ids if i != edited]
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
        import json

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
        monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
        store = ["--store", made.uri, "--collection", made.collection, *made.cli_args]
        state = ["--state-dir", str(tmp_path / "cli_state")]
        tune = ["tune", *store, *state, "--pairs", str(tmp_path / "train.jsonl")]
        tune += ["--val-pairs", str(tmp_path / "dev.jsonl"), "--gamma", "0.5", "--json"]
        tune += ["--embed", "test_cli_stores:LookupEmbeddings", "--progress", "off"]
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
    def test_sigkill_mid_write_back_then_restore_or_resume(self, made, kind, tmp_path):
        """``kill -9`` between two batches: ``restore`` brings back every original, and after
        a second kill ``resume`` finishes the fit (the command line, one process each)."""
        if made.uri is None or not kind.multi_process:
            pytest.skip("the store cannot be opened by a second process while the test holds it")
        import json
        import os
        import subprocess
        import sys

        docs = made.docs
        queries, answers = _pairs(docs)
        texts = list(docs.queries)
        lines = [json.dumps({"question": q, "doc_ids": a}) for q, a in zip(texts, answers)]
        (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        lookup = tmp_path / "questions.npz"
        np.savez(lookup, texts=np.asarray(texts), vectors=queries)
        here = Path(__file__).resolve().parent
        env = {
            **os.environ,
            "NUDGE_CLI_QUESTIONS": str(lookup),
            "PYTHONPATH": os.pathsep.join([str(here.parent), os.environ.get("PYTHONPATH", "")]),
            "PYTHONWARNINGS": "ignore",
        }
        store = ["--store", made.uri, "--collection", made.collection, *made.cli_args]
        state = ["--state-dir", str(tmp_path / "state")]
        tune = ["tune", *store, *state, "--pairs", str(tmp_path / "train.jsonl")]
        tune += ["--gamma", "0.5", "--batch-size", "8", "--progress", "off"]
        tune += ["--embed", "test_cli_stores:LookupEmbeddings"]

        def run(*args: str, kill_after: int = 0) -> subprocess.CompletedProcess:
            if kill_after:
                cmd = [sys.executable, str(here / "kill_child.py"), str(kill_after), *args]
            else:
                cmd = [sys.executable, "-m", "nudge_rag.cli", *args]
            return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

        stored = _cli_vectors(made, docs.ids)
        killed = run(*tune, kill_after=2)
        assert killed.returncode == -9, killed.stderr[-2000:]
        now = _cli_vectors(made, docs.ids)
        moved = ~np.all(np.isclose(now, stored, rtol=0, atol=1e-6), axis=1)
        assert 0 < moved.sum() <= 16  # two batches of 8 written, the rest not
        status = run("status", *store, *state, "--json")
        assert status.returncode == 0, status.stderr[-2000:]
        assert json.loads(status.stdout)["pending"], status.stdout
        restored = run("restore", *store, *state)
        assert restored.returncode == 0, restored.stderr[-2000:]
        np.testing.assert_allclose(
            _cli_vectors(made, docs.ids), stored, rtol=0, atol=kind.restore_atol
        )
        assert run(*tune, kill_after=3).returncode == -9
        resumed = run("resume", *store, *state)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        clean = run("restore", *store, *state)
        assert clean.returncode == 0, clean.stderr[-2000:]
        assert run(*tune).returncode == 0
        fitted = _cli_vectors(made, docs.ids)
        assert run("restore", *store, *state).returncode == 0
        assert run(*tune, kill_after=3).returncode == -9
        assert run("resume", *store, *state).returncode == 0
        # a resumed fit writes exactly what an uninterrupted one does
        np.testing.assert_allclose(_cli_vectors(made, docs.ids), fitted, rtol=0, atol=1e-6)
        assert run("restore", *store, *state).returncode == 0
        np.testing.assert_allclose(
            _cli_vectors(made, docs.ids), stored, rtol=0, atol=kind.restore_atol
        )

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
        from nfcorpus_eval import exact_ndcg, query_vectors, ranked_ndcg

        from nudge_rag import NudgeN

        if config in kind.refused:
            pytest.skip("refused configuration")
        ds = nfcorpus
        vectors = np.asarray(ds.doc_embeddings, dtype=np.float32)
        ids = list(ds.doc_ids)
        docs = Docs(
            list(ids),
            [f"[{i}] {t}" for i, t in zip(ids, ds.doc_texts)],  # unique texts
            [{"row": k} for k in range(len(ids))],
            vectors,
            query_vectors(ds),
        )
        made = kind.make(tmp_path, docs, config, request)
        to_store = dict(zip(ids, docs.ids))  # the store's own ids (rowids) where it gives them
        to_ds = dict(zip(docs.ids, ids))
        try:
            tuner = StoreTuner(made.store, state_dir=tmp_path / "st")
            test = ds.test

            def ndcg() -> float:
                kind.set_search(made, config)
                hits = [[to_ds[h[0]] for h in made.search(q, K)] for q in test.query_embeddings]
                assert min(len(h) for h in hits) == K, "a query got fewer than k results"
                return ranked_ndcg(ds, hits, K)

            train, dev = ds.train, ds.dev
            before = ndcg()
            tuner.tune_embedded(
                train.query_embeddings,
                _answer_ids(ds, train, to_store),
                dev.query_embeddings,
                _answer_ids(ds, dev, to_store),
            )
            after = ndcg()
            tuned = tuner.store.get_vectors(docs.ids)
            exact_after = exact_ndcg(ds, tuned)
            fitted = NudgeN().fit(vectors, train.queryset(), dev.queryset())
            arrays = exact_ndcg(ds, fitted.embeddings_)
            tuner.restore()
            restored = ndcg()
            exact_before = exact_ndcg(ds, vectors)
            logger.warning(
                "%s[%s] nfcorpus nDCG@10: before %.4f (exact %.4f), after %.4f (exact %.4f, "
                "arrays %.4f), restored %.4f",
                kind.name,
                config,
                before,
                exact_before,
                after,
                exact_after,
                arrays,
                restored,
            )
            assert exact_after == pytest.approx(arrays, abs=0.005)
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


def _cli_vectors(made: Made, ids: list[str]) -> np.ndarray:
    """The vectors as the command line sees them (the store opened from its URI)."""
    from nudge_rag.backends._uri import open_store

    trust = "--trust-pickle" in made.cli_args
    with open_store(
        made.uri, made.collection, distance=_distance(made), trust_pickle=trust
    ) as opened:
        return opened.backend.get_vectors(ids)


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
