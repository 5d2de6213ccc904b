"""The write-back against a model, under random fits, restores, kills and the user's edits.

A Hypothesis state machine drives one store, made by ``tests/stores``' harness as its users
make it (LangChain's ``InMemoryVectorStore``, state in memory; a collection of LangChain's
in-memory ``Chroma``, state in a folder; a LangChain ``PGVector`` collection in PostgreSQL,
state in side tables whose originals each batch's transaction saves), through
``StoreTuner``: fits of random training pairs, ``restore()``, ``resume()``,
``discard_pending()``, and the user's own changes through the LangChain wrapper (a document
updated in place, deleted and added again under its id, deleted, or a new one added).
A *kill* makes ``set_vectors`` write the first ``m`` rows of its
``k``-th batch and then raise (through a store that delegates to the real one; for
pgvector the ``k``-th batch's transaction dies before its COMMIT); afterwards the tuner is
built anew, as the next process would.

The model knows each document's current original (what it was added or edited to) and every
vector a fit may have written for it; a fit's vectors come from an independent run of the
same fit over a plain array holding the model's originals. After every step:

* the store holds exactly the model's documents (deleted ones stay deleted);
* every stored vector is its current original, a tuned value of a fit since the user last
  touched it, or, where the last step completed, exactly what that step must leave;
* after ``restore()`` (and a resumed restore) the store is originals + the user's edits;
* ``status().pending`` says what the model expects, and drift reports name the documents
  the user changed after they were tuned.

Bounded and deterministic: ``derandomize=True``, no example database.
"""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis", reason="pip install 'nudge-rag[test]'")

import shutil
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

TESTS = Path(__file__).resolve().parent
if str(TESTS / "integration_langchain") not in sys.path:
    sys.path.insert(0, str(TESTS / "integration_langchain"))

from stores.harness import Docs, Made, StoreKind  # noqa: E402
from stores.test_memory import MemoryKind  # noqa: E402

from nudge_rag import (  # noqa: E402
    ArrayStore,
    BaseEmbeddingStore,
    StoreTuner,
    WriteBackError,
    backend_for,
)

# Hypothesis state machines over real stores: 20-85 s per store; `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

N_DOCS, DIM, GAMMA, BATCH = 16, 8, 0.3, 4
ATOL = 1e-5
SETTINGS = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
COUNTS: Counter[str] = Counter()  # what the runs did: each kind of step must happen
STEPS = ["fit"] * 4 + ["user"] * 4 + ["restore", "resume"] * 2 + ["discard_pending"]
#: No kill, or one inside batch ``k`` after ``m`` of its rows.
KILLS = st.none() | st.tuples(st.integers(1, 3), st.integers(0, BATCH - 1))


def unit(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Killed(RuntimeError):
    """The simulated kill: the process died in the middle of a ``set_vectors`` call."""


class KillableStore(BaseEmbeddingStore):
    """Delegates to the real backend; once armed, its ``k``-th ``set_vectors`` writes the
    first ``m`` rows through the real store and raises :class:`Killed`."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.kill_at: tuple[int, int] | None = None
        self.calls = 0
        self.killed = False

    distance = property(lambda self: self.inner.distance)
    name = property(lambda self: self.inner.name)
    state_owner = property(lambda self: getattr(self.inner, "state_owner", self.inner))

    def arm(self, batch: int, rows: int) -> None:
        self.kill_at, self.calls, self.killed = (batch, rows), 0, False

    def count(self) -> int:
        return self.inner.count()

    def list_ids(self) -> list[str]:
        return self.inner.list_ids()

    def get_vectors(self, ids):
        return self.inner.get_vectors(ids)

    @property
    def writeback_state(self) -> Any:
        """The inner store's own state (pgvector), its batch transaction killable: the k-th
        ``write_batch`` dies before its COMMIT, so none of that batch is written."""
        make = getattr(self.inner, "writeback_state", None)
        if make is None:
            raise AttributeError("writeback_state")

        def state() -> Any:
            inner = make()
            real = inner.write_batch

            def write_batch(kind, done, ids, vectors) -> None:
                self.calls += 1
                if self.kill_at is not None and self.calls == self.kill_at[0]:
                    self.kill_at, self.killed = None, True
                    msg = f"killed inside batch {self.calls}, before its COMMIT"
                    raise Killed(msg)
                real(kind, done, ids, vectors)

            inner.write_batch = write_batch
            return inner

        return state

    def set_vectors(self, ids, vectors) -> None:
        self.calls += 1
        if self.kill_at is not None and self.calls == self.kill_at[0]:
            rows = min(self.kill_at[1], len(ids))
            self.kill_at, self.killed = None, True
            if rows:
                self.inner.set_vectors(list(ids)[:rows], np.asarray(vectors)[:rows])
            msg = f"killed inside batch {self.calls} after {rows} row(s)"
            raise Killed(msg)
        self.inner.set_vectors(ids, vectors)


# ---------------------------------------------------------------------- the stores
class HarnessStore:
    """A store as ``tests/stores``' kind ``KIND`` makes it in configuration ``CONFIG``; the
    user's changes through its LangChain wrapper (``Made.add``/``update``/``delete``)."""

    KIND: type[StoreKind] = MemoryKind
    CONFIG = "langchain"
    state_dir: Any = "memory"  # the write-back state: in memory, a folder, or the store's own

    def __init__(self, ids: list[str], vectors: np.ndarray):
        docs = Docs(list(ids), [self._text(i) for i in ids], [{} for _ in ids], vectors)
        self.made = self.make(docs)

    def make(self, docs: Docs) -> Made:
        return self.KIND().make(None, docs, self.CONFIG, None)

    @staticmethod
    def _text(doc_id: str) -> str:
        return f"{doc_id} as of {uuid.uuid4().hex}"  # a text per vector: the lookup's key

    def backend(self) -> Any:
        return backend_for(self.made.store)

    def add(self, doc_id: str, vector: np.ndarray) -> None:
        self.made.add(doc_id, self._text(doc_id), vector)

    def update(self, doc_id: str, vector: np.ndarray) -> None:
        self.made.update(doc_id, self._text(doc_id), vector)

    def delete(self, doc_id: str) -> None:
        self.made.delete(doc_id)

    def close(self) -> None:
        self.made.close()


class ChromaStore(HarnessStore):
    """A collection of the process's in-memory Chroma (HNSW, cosine); the write-back state in
    a folder."""

    CONFIG = "ephemeral"

    def make(self, docs: Docs) -> Made:
        from stores.test_chroma import ChromaKind

        self.state_dir = tempfile.mkdtemp(prefix="nudge-stateful-")
        return ChromaKind().make(None, docs, self.CONFIG, None)

    def close(self) -> None:
        self.made.close()  # drops the collection
        shutil.rmtree(self.state_dir, ignore_errors=True)


class PgStore(HarnessStore):
    """A LangChain ``PGVector`` collection in a database of the session's PostgreSQL server;
    the write-back state in side tables of the same database (each batch saves its rows'
    originals in its own transaction)."""

    url = ""  # a database of the session server with pgvector, set by the test
    state_dir = None  # the backend keeps the state itself
    per_batch = True

    def make(self, docs: Docs) -> Made:
        from stores.test_pgvector import PgVectorKind

        name = f"s_{uuid.uuid4().hex[:12]}"
        return PgVectorKind().fill(self.url, docs, "exact", collection=name)

    def close(self) -> None:
        self.made.store.delete_collection()  # its rows too: the next one reuses the ids
        self.made.close()


# ---------------------------------------------------------------------- the machine
class WriteBackMachine(RuleBasedStateMachine):
    """One store, one tuner (built anew after every kill), and the model of both."""

    store_class: type = HarnessStore

    @initialize(seed=st.integers(0, 2**16))
    def open_store(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        ids = [f"doc-{k}" for k in range(N_DOCS)]
        vectors = unit(self.rng, N_DOCS)
        self.store = self.store_class(ids, vectors)
        self.reader: Any = None  # one backend for the invariant's reads
        self.orig: dict[str, np.ndarray] = dict(zip(ids, vectors, strict=True))
        self.tuned: dict[str, list[np.ndarray]] = {i: [] for i in ids}  # may be stored too
        self.expect: dict[str, np.ndarray] | None = dict(self.orig)  # exact, when known
        self.pending: str | None = None
        self.targets: dict[str, np.ndarray] = {}  # the pending apply's target per id
        self.touched: set[str] = set()  # ids the user changed since the plan was saved
        self.saved: set[str] = set()  # ids whose originals are saved
        self.stale: set[str] = set()  # ... of those, ids the user changed since
        self.unsure = False  # a resume dropped some stale records, we don't know which
        self.next_id = N_DOCS
        self.new_tuner()

    def new_tuner(self) -> None:
        self.killable = KillableStore(self.store.backend())
        self.tuner = StoreTuner(
            self.killable,
            state_dir=self.store.state_dir,
            solver_params={"gamma": GAMMA},
            batch_size=BATCH,
        )

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.store.close()

    # the model's helpers -------------------------------------------------------
    def present(self) -> list[str]:
        return list(self.orig)

    def expected_fit(self, queries: np.ndarray, answers: list[list[str]]):
        """What the fit makes of the model's originals: ``{id: tuned}`` of the moved ids."""
        ids = self.killable.list_ids()
        reference = ArrayStore(ids, np.stack([self.orig[i] for i in ids]))
        result = StoreTuner(reference, state_dir="memory", solver_params={"gamma": GAMMA})
        changed = result.tune_embedded(queries, answers).changed_ids
        return {i: reference.get_vectors([i])[0] for i in changed}

    def drop_stale(self) -> set[str]:
        """A completed or planned write drops every stale record; returns the present ones."""
        dropped = self.stale & set(self.orig)
        self.saved -= self.stale
        self.stale = set()
        self.unsure = False
        return dropped

    def user_changed(self, doc_id: str) -> None:
        if doc_id in self.saved:
            self.stale.add(doc_id)
        if self.pending is not None:
            self.touched.add(doc_id)

    def arm(self, kill: tuple[int, int] | None) -> None:
        if kill is not None:
            self.killable.arm(*kill)

    def after_kill(self) -> None:
        """The process died: the next one builds a new tuner (the state is on disk, or, in
        memory, owned by the store object)."""
        assert self.killable.killed
        self.new_tuner()

    # one step ------------------------------------------------------------------------
    @rule(data=st.data())
    def step(self, data) -> None:
        """One step, drawn with weights (a rule per kind of step would let Hypothesis
        switch kinds off for whole runs, which leaves the store untuned most of the time):
        fits and the user's changes 4 each, restore and resume 2 each, discard 1."""
        what = data.draw(st.sampled_from(STEPS), label="step")
        if what == "fit":
            seed = data.draw(st.integers(0, 2**16), label="seed")
            self.fit(seed, data.draw(st.integers(1, 6), label="n_answered"), data.draw(KILLS))
        elif what == "user":
            change = data.draw(st.sampled_from(["update", "readd", "delete", "add"]))
            pick, tuned_one = data.draw(st.integers(0, 10**6)), data.draw(st.booleans())
            self.user_changes(change, pick, tuned_one)
        elif what == "discard_pending":
            self.discard_pending()
        else:
            getattr(self, what)(data.draw(KILLS, label="kill"))

    # fits ------------------------------------------------------------------------
    def fit(self, seed: int, n_answered: int, kill) -> None:
        rng = np.random.default_rng(seed)
        ids = self.present()
        answered = [ids[k] for k in rng.choice(len(ids), min(n_answered, len(ids)), False)]
        answers = [[d] for d in answered for _ in range(1 + int(rng.integers(2)))]
        noise = 0.5 * rng.standard_normal((len(answers), DIM)).astype(np.float32)
        queries = np.stack([self.orig[a[0]] for a in answers]) + noise
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        if self.pending is not None:
            with pytest.raises(WriteBackError, match="pending"):
                self.tuner.tune_embedded(queries, answers)
            COUNTS["fit refused: pending"] += 1
            return
        want = self.expected_fit(queries, answers)
        self.arm(kill)
        stale_present = self.stale & set(self.orig)
        unsure = self.unsure
        try:
            result = self.tuner.tune_embedded(queries, answers)
        except WriteBackError:
            self.after_kill()
            COUNTS["killed fit"] += 1
            self.drop_stale()
            if getattr(self.store, "per_batch", False):
                # Only the committed batches saved originals: exactly the rows now tuned.
                stored = self.stored()
                written = {i for i, v in want.items() if np.abs(stored[i] - v).max() <= ATOL}
                COUNTS["killed fit with batches committed"] += bool(written)
                COUNTS["killed fit before its first batch"] += not written
                targets = self.saved | set(want)
                self.saved |= written
                assert set(self.tuner.writeback.moved_ids()) == self.saved
            else:
                self.saved |= set(want)
                targets = self.saved
            self.pending, self.touched = "apply", set()
            self.targets = {i: want.get(i, self.orig[i]) for i in targets}
            for doc_id, vector in want.items():
                self.tuned[doc_id].append(vector)
            self.expect = None
            return
        self.killable.kill_at = None
        COUNTS["fit"] += 1
        assert sorted(result.changed_ids) == sorted(want)
        if not unsure:
            assert set(result.drifted_ids) == stale_present
        COUNTS["fit read an edit as original"] += bool(stale_present)
        self.drop_stale()
        self.saved |= set(want)
        self.tuned = {i: [want[i]] if i in want else [] for i in self.orig}
        self.expect = {i: want.get(i, v) for i, v in self.orig.items()}

    # restore, resume, discard ----------------------------------------------------------
    def restore(self, kill) -> None:
        ours = len(self.saved - self.stale)
        drifted, missing = self.stale & set(self.orig), self.stale - set(self.orig)
        unsure = self.unsure
        self.arm(kill)
        try:
            restored = self.tuner.restore()
        except WriteBackError:
            self.after_kill()
            COUNTS["killed restore"] += 1
            self.pending, self.touched, self.expect = "restore", set(), None
            return
        self.killable.kill_at = None
        COUNTS["restore"] += 1
        report = self.tuner.writeback.last_report
        if not unsure:
            assert restored == ours
            assert set(report.drifted_ids) == drifted and set(report.missing_ids) == missing
        COUNTS["restore left an edit"] += bool(drifted)
        self.restored()

    def restored(self) -> None:
        self.pending, self.saved, self.stale, self.unsure = None, set(), set(), False
        self.tuned = {i: [] for i in self.orig}
        self.expect = dict(self.orig)  # originals, with the user's edits

    def resume(self, kill) -> None:
        self.arm(kill)
        try:
            done = self.tuner.resume()
        except WriteBackError:
            self.after_kill()
            COUNTS[f"killed resume of {self.pending}"] += 1
            # it may have dropped (and reported) stale records of the rows it got to
            self.unsure = self.unsure or (self.pending == "apply" and bool(self.stale))
            return
        self.killable.kill_at = None
        assert done == (self.pending is not None)
        if self.pending == "restore":
            COUNTS["resumed restore"] += 1
            self.restored()
        elif self.pending == "apply":
            COUNTS["resumed fit"] += 1
            if getattr(self.store, "per_batch", False):
                # A row whose batch never committed has no saved original: whatever it holds
                # now (the user's edit too) is its original, saved by its batch, then tuned.
                fresh = {i for i in self.targets if i in self.orig and i not in self.saved}
                COUNTS["resume tuned an edited row without original"] += bool(fresh & self.touched)
                self.touched -= fresh
                self.saved |= fresh
            self.expect = {
                i: self.targets[i] if i in self.targets and i not in self.touched else v
                for i, v in self.orig.items()
            }
            self.tuned = {
                i: [self.expect[i]] if i in self.targets and i not in self.touched else []
                for i in self.orig
            }
            self.unsure = self.unsure or bool(self.stale)
            self.pending = None

    def discard_pending(self) -> None:
        assert self.tuner.discard_pending() == (self.pending is not None)
        if self.pending is not None:
            COUNTS["discarded"] += 1
        self.pending = None  # every row keeps what it holds; the originals stay saved

    # the user's own changes ------------------------------------------------------------
    def user_changes(self, what: str, pick: int, a_tuned_one: bool) -> None:
        """The user updates a document in place, deletes it and adds it again under its id
        with a new vector, deletes it, or adds one (new, or a deleted one back)."""
        if what == "delete" and len(self.orig) <= N_DOCS // 2:
            what = "add"
        if what == "add":
            gone = sorted(self.saved - set(self.orig))
            if a_tuned_one and gone:  # a deleted tuned document comes back under its id
                doc_id = gone[pick % len(gone)]
                COUNTS["re-add of a deleted tuned document"] += 1
            else:
                doc_id, self.next_id = f"doc-{self.next_id}", self.next_id + 1
        else:
            ids = sorted(self.saved & set(self.orig)) if a_tuned_one else []
            ids = ids or self.present()
            doc_id = ids[pick % len(ids)]
            COUNTS[f"{what} of a tuned document"] += doc_id in self.saved
        COUNTS["user changes"] += 1
        self.user_changed(doc_id)
        if what == "delete":
            self.store.delete(doc_id)
            del self.orig[doc_id], self.tuned[doc_id]
            if self.expect is not None:
                del self.expect[doc_id]
            return
        vector = unit(self.rng)[0]
        if what == "readd":
            self.store.delete(doc_id)
            self.store.add(doc_id, vector)
        elif what == "update":
            self.store.update(doc_id, vector)
        else:
            self.store.add(doc_id, vector)
        self.orig[doc_id], self.tuned[doc_id] = vector, []
        if self.expect is not None:
            self.expect[doc_id] = vector

    # the invariant ---------------------------------------------------------------------
    def stored(self) -> dict[str, np.ndarray]:
        if self.reader is None:
            self.reader = self.store.backend()
        ids = self.reader.list_ids()
        return dict(zip(ids, self.reader.get_vectors(ids), strict=True)) if ids else {}

    @invariant()
    def every_vector_is_an_original_a_tuned_value_or_the_users(self) -> None:
        if not hasattr(self, "store"):
            return
        stored = self.stored()
        assert sorted(stored) == sorted(self.orig), "the store's documents are not the user's"
        for doc_id, vector in stored.items():
            if self.expect is not None:
                assert np.abs(vector - self.expect[doc_id]).max() <= ATOL, (doc_id, "expected")
                continue
            options = [self.orig[doc_id], *self.tuned[doc_id]]
            assert any(np.abs(vector - o).max() <= ATOL for o in options), (
                f"{doc_id} holds neither its original nor a tuned value nor the user's edit"
            )
        status = self.tuner.status()
        assert status.pending == self.pending
        if not self.unsure:
            assert status.tuned == bool(self.saved)


class ChromaMachine(WriteBackMachine):
    store_class = ChromaStore


class PgMachine(WriteBackMachine):
    store_class = PgStore


@pytest.mark.parametrize("store", ["InMemoryVectorStore", "chroma", "pgvector"])
def test_writeback_never_loses_an_original(store, request):
    if store == "chroma":
        pytest.importorskip("langchain_chroma", reason="pip install 'nudge-rag[chroma]'")
    elif store == "pgvector":
        pytest.importorskip("langchain_postgres", reason="pip install 'nudge-rag[postgres]'")
        from stores.test_pgvector import new_database

        PgStore.url = new_database(request.getfixturevalue("pg_url"))
    COUNTS.clear()
    machine = {"chroma": ChromaMachine, "pgvector": PgMachine}.get(store, WriteBackMachine)
    # Hypothesis seeds a derandomized run from the machine's source, so an edit to the machine
    # draws other runs: the in-process stores (a few seconds) run enough examples that every
    # kind of step below happens whatever the seed; PostgreSQL (about 50 s) runs fewer.
    examples = 30 if store == "pgvector" else 100
    run_state_machine_as_test(machine, settings=settings(SETTINGS, max_examples=examples))
    # the runs really went through kills, resumes, edits and drift (not only happy paths)
    for what in (
        "fit",
        "killed fit",
        "killed restore",
        "resumed fit",
        "resumed restore",
        "restore",
        "fit read an edit as original",
        "restore left an edit",
        "update of a tuned document",
        "readd of a tuned document",
        "delete of a tuned document",
    ):
        assert COUNTS[what] > 0, f"no {what!r} in {dict(COUNTS)}"
