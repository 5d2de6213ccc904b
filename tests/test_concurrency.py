"""Never lose an original: concurrent tuners, edited documents, stale locks (issue 14).

1. Two tuners on one store at the same time (the framework objects: LangChain's
   ``NudgeRetriever``, LlamaIndex's ``NudgeFinetuneEngine``), 20 rounds each: in two threads
   over an in-memory store and an embedded persistent Chroma folder, and in two processes
   over a Chroma server (two processes must not open one embedded Chroma folder: Chroma
   itself does not support that, so a cron re-tune overlapping a manual one is run against
   the HTTP server, with one shared ``state_dir``). The second writer waits
   (``lock_timeout``) or gets ``StoreBusyError``; their writes never interleave; after each
   round the store is exactly what the last writer made of the originals, and ``restore()``
   returns every row to its original. Each test checks that the writers really overlapped:
   at least one was refused and at least one waited (the lock logs a wait).
2. A document the user edits after a fit (deleted and re-added under its id, or updated in
   place) on InMemoryVectorStore / SimpleVectorStore, Chroma and Qdrant: the next fit reads
   the edit as the new original, ``restore()`` leaves the edit as it is and reports the id.
3. A second retriever / engine on the same in-memory store object sees the first one's
   state: its fit starts from the originals and its ``restore()`` puts all of them back.
4. The stale-lock rule: a live writer in another process makes the next one fail with
   ``StoreBusyError`` naming its pid and host; once it is SIGKILLed the kernel has dropped
   its ``flock``, so the next writer proceeds at once and reports the dead holder's record.

The process tests run this file as a worker (``python tests/test_concurrency.py worker
'<json>'``): it opens the store once, then runs one command per stdin line and answers one
JSON line each, so 20 rounds do not pay 40 interpreter starts.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.testing import assert_allclose

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
for _extra in (
    REPO / "integrations",
    TESTS / "integration_langchain",
    TESTS / "integration_llama_index",
):
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

from nudge_rag import ArrayStore, StoreBusyError, StoreTuner, WriteBack  # noqa: E402

N_DOCS, DIM, GAMMA, BATCH = 200, 16, 0.3, 100
ROUNDS = 20
WAITED = "waiting for the writer lock"  # what nudge_rag._lock logs when a writer must wait
STALE = "ended without releasing its lock"  # ... and when it takes a dead writer's lock


# ---------------------------------------------------------------------- data
@dataclass
class Data:
    """Documents (unit vectors), their texts, and questions for two overlapping pair sets.

    ``pairs["a"]`` answers the first 60% of the documents, ``pairs["b"]`` the 30%..90%
    slice, so a fit of one after the other moves some rows back and others anew.
    """

    ids: list[str]
    texts: list[str]
    docs: np.ndarray
    questions: dict[str, np.ndarray]
    pairs: dict[str, list[tuple[str, str]]]

    def lookup(self) -> dict[str, np.ndarray]:
        """Every text (documents and questions) to its vector, for the lookup embedders."""
        return {**dict(zip(self.texts, self.docs, strict=True)), **self.questions}


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_data(n_docs: int = N_DOCS, dim: int = DIM, *, uuids: bool = False, seed: int = 0):
    rng = np.random.default_rng(seed)
    docs = unit_rows(rng, n_docs, dim)
    names = [f"doc-{k}" for k in range(n_docs)]
    ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, n)) for n in names] if uuids else names
    texts = [f"document {k}" for k in range(n_docs)]
    answered = {"a": range(0, n_docs * 6 // 10), "b": range(n_docs * 3 // 10, n_docs * 9 // 10)}
    questions: dict[str, np.ndarray] = {}
    pairs: dict[str, list[tuple[str, str]]] = {"a": [], "b": []}
    for k in range(n_docs * 9 // 10):
        for j in range(2):
            q = docs[k] + 0.6 * unit_rows(rng, 1, dim)[0]
            text = f"question {j} about document {k}"
            questions[text] = (q / np.linalg.norm(q)).astype(np.float32)
            for name, docs_answered in answered.items():
                if k in docs_answered:
                    pairs[name].append((text, ids[k]))
    return Data(ids, texts, docs, questions, pairs)


def reference(data: Data, vectors: np.ndarray, pairs: list[tuple[str, str]]) -> np.ndarray:
    """What one fit of ``pairs`` makes of a store holding ``vectors``: the same flow
    (``StoreTuner``) over a plain array store, with no other writer."""
    store = ArrayStore(data.ids, vectors)
    tuner = StoreTuner(store, state_dir="memory", solver_params={"gamma": GAMMA})
    tuner.tune(pairs, embed=lambda texts: np.stack([data.questions[t] for t in texts]))
    return store.vectors.copy()


# ---------------------------------------------------------------------- stores and tuners
class Tuner:
    """A ``NudgeRetriever`` (LangChain) or ``NudgeFinetuneEngine`` (LlamaIndex) with its pairs."""

    def __init__(
        self,
        framework: str,
        vectorstore: Any,
        data: Data,
        pairs: list[tuple[str, str]],
        *,
        state_dir: Any = "auto",
        lock_timeout: float | None = 0.0,
        batch_size: int = BATCH,
    ):
        self.framework, self.pairs = framework, pairs
        if framework == "langchain":
            from langchain_nudge import NudgeRetriever

            self.obj = NudgeRetriever(
                vectorstore=vectorstore,
                state_dir=state_dir,
                solver_params={"gamma": GAMMA},
                batch_size=batch_size,
                lock_timeout=lock_timeout,
            )
        else:
            from llama_helpers import LookupEmbedding
            from llama_index_nudge import NudgeFinetuneEngine

            self.obj = NudgeFinetuneEngine(
                vectorstore,
                LookupEmbedding(data.questions),
                pairs,
                state_dir=state_dir,
                solver_params={"gamma": GAMMA},
                batch_size=batch_size,
                lock_timeout=lock_timeout,
            )
        assert self.writeback.lock_timeout == lock_timeout

    @property
    def writeback(self) -> WriteBack:
        return self.obj.writeback

    @property
    def store(self) -> Any:
        return self.obj.store

    def fit(self):
        if self.framework == "langchain":
            return self.obj.fit(self.pairs).tune_result
        return self.obj.finetune()

    def restore(self) -> int:
        return self.obj.restore()

    def run(self, op: str):
        return self.fit() if op == "fit" else self.restore()


#: The harness kind (``tests/stores``) of each case's store, and its configuration (per
#: framework where LlamaIndex makes its own; else the store is made through LangChain and seen
#: through LlamaIndex's wrapper on the same client).
HARNESS_KINDS: dict[str, tuple[str, str | dict[str, str]]] = {
    "memory": ("memory", {"langchain": "langchain", "llama": "llama-index"}),
    "chroma": ("chroma", "hnsw"),  # a persistent folder
    "chroma_ephemeral": ("chroma", "ephemeral"),
    "chroma_http": ("chroma", "http"),  # a collection of the session's server
    "qdrant": ("qdrant", "local"),  # a local folder
    "qdrant_memory": ("qdrant", {"langchain": "memory", "llama": "llama-index"}),
}
WRAPPERS = {"langchain": "langchain", "llama": "llama-index"}  # the harness's framework names


class StoreCase:
    """One store of ``kind`` (``memory``, ``chroma``, ``chroma_ephemeral``, ``chroma_http``,
    ``qdrant``, ``qdrant_memory``) filled with ``data`` by its harness kind, seen through
    ``framework``'s wrapper, and the user's own edits made through that wrapper."""

    def __init__(
        self,
        framework: str,
        kind: str,
        data: Data,
        folder: Path | None = None,
        request: Any = None,  # the test's, for the server of ``chroma_http``
    ):
        self.framework, self.kind, self.data = framework, kind, data
        if framework == "langchain":
            pytest.importorskip("langchain_core", reason="pip install 'nudge-rag[langchain]'")
        else:
            pytest.importorskip("llama_index.core", reason="pip install 'nudge-rag[llama-index]'")
        from stores.harness import Docs
        from stores.test_chroma import ChromaKind
        from stores.test_memory import MemoryKind
        from stores.test_qdrant import QdrantKind

        name, config = HARNESS_KINDS[kind]
        self.store_kind = {"memory": MemoryKind, "chroma": ChromaKind, "qdrant": QdrantKind}[name]()
        config = config if isinstance(config, str) else config[framework]
        metadatas = [{"k": k} for k in range(len(data.ids))]
        docs = Docs(list(data.ids), list(data.texts), metadatas, data.docs, data.questions)
        self.made = self.store_kind.make(folder, docs, config, request)
        self.view = self.made  # the case's wrapper
        if self.made.framework != WRAPPERS[framework]:
            self.view = self.store_kind.wrapper(self.made, WRAPPERS[framework])
        self.vectorstore = self.view.store

    def wrapper(self, framework: str) -> Any:
        """A new framework wrapper on the store's client (in-memory stores: the same object,
        which *is* the store)."""
        return self.store_kind.wrapper(self.made, WRAPPERS[framework]).store

    def tuner(self, pairs: Any, *, new_wrapper: str | None = None, **kwargs: Any) -> Tuner:
        """A tuner of ``pairs`` (a list, or the name of one of the data's) over the case's
        wrapper, or over a new one of framework ``new_wrapper``."""
        state_dir = "auto" if self.kind in ("chroma", "qdrant") else "memory"
        kwargs.setdefault("state_dir", state_dir)
        framework = new_wrapper or self.framework
        vectorstore = self.wrapper(new_wrapper) if new_wrapper else self.vectorstore
        pairs = self.data.pairs[pairs] if isinstance(pairs, str) else pairs
        return Tuner(framework, vectorstore, self.data, pairs, **kwargs)

    # reading -----------------------------------------------------------------
    def read(self, ids: list[str] | None = None) -> np.ndarray:
        from nudge_rag import backend_for

        store = backend_for(self.vectorstore)
        return store.get_vectors(self.data.ids if ids is None else ids)

    def ids(self) -> list[str]:
        from nudge_rag import backend_for

        return backend_for(self.vectorstore).list_ids()

    # the user's edits, through the case's wrapper --------------------------------
    def delete(self, doc_id: str) -> None:
        self.view.delete(doc_id)

    def readd(self, doc_id: str, text: str, vector: np.ndarray) -> None:
        """Delete the document and add it again under its id, with a new text and vector."""
        self.view.delete(doc_id)
        self.view.add(doc_id, text, vector, {"edited": True})

    def update(self, doc_id: str, text: str, vector: np.ndarray) -> None:
        """Change the document: in place where the wrapper's add upserts (LlamaIndex's
        ``ChromaVectorStore`` cannot: deleted and added again, as its users must)."""
        self.view.update(doc_id, text, vector, {"edited": True})

    def close(self) -> None:
        self.made.close()


def tolerance(kind: str) -> float:
    # A cosine collection (Chroma, Qdrant) re-normalizes what it stores (about 1 ulp).
    return 1e-6 if kind == "memory" else 2e-6


def close_rows(a: np.ndarray, b: np.ndarray, atol: float) -> np.ndarray:
    return np.all(np.abs(a - b) <= atol, axis=1)


# ---------------------------------------------------------------------- 1. concurrent tuners
@dataclass
class Outcome:
    """What one writer of a round did: ``"ok"`` or ``"busy"``, and when it wrote."""

    status: str
    waited: bool = False
    first_write: float | None = None
    last_write: float | None = None
    error: str = ""


def round_ops(r: int) -> list[tuple[str, str]]:
    """The two writers of round ``r``: a fit of ``a`` against a fit of ``b`` or a restore."""
    return [("fit", "a"), ("restore", "") if r % 4 == 3 else ("fit", "b")]


def settle(ops, outcomes: list[Outcome], refs: dict[str, np.ndarray]) -> tuple[str, np.ndarray]:
    """The state the store must hold after a round: the last writer's, and that writer."""
    assert all(o.status in ("ok", "busy") for o in outcomes), [o.error for o in outcomes]
    assert sum(o.status == "busy" for o in outcomes) <= 1, "both writers were refused"
    wrote = [
        (o.first_write, o.last_write, op)
        for op, o in zip(ops, outcomes, strict=True)
        if o.status == "ok" and o.first_write is not None
    ]
    assert wrote, "no writer wrote anything"
    if len(wrote) == 2:  # one writer at a time: the two write windows never overlap
        (s0, e0, _), (s1, e1, _) = sorted(wrote, key=lambda w: w[0])
        assert e0 < s1, f"the writes of two writers interleaved: {wrote}"
    op, arg = max(wrote, key=lambda w: w[1])[2]
    return f"{op} {arg}".strip(), refs["orig"] if op == "restore" else refs[arg]


def check_state(got: np.ndarray, want: np.ndarray, ids: list[str], atol: float, what: str):
    bad = ~close_rows(got, want, atol)
    assert not bad.any(), (
        f"{what}: {int(bad.sum())} row(s) differ, e.g. {np.asarray(ids)[bad][:5].tolist()} "
        f"(max diff {np.abs(got - want).max():.2e})"
    )


def refs_for(data: Data) -> dict[str, np.ndarray]:
    return {
        "orig": data.docs,
        "a": reference(data, data.docs, data.pairs["a"]),
        "b": reference(data, data.docs, data.pairs["b"]),
    }


# InMemoryVectorStore is LangChain's, SimpleVectorStore LlamaIndex's; on one persistent
# Chroma folder a LangChain retriever and a LlamaIndex engine tune against each other.
THREAD_CASES = [("langchain", "memory"), ("llama", "memory"), ("llama", "chroma")]


@pytest.mark.parametrize(
    ("framework", "kind"), THREAD_CASES, ids=["InMemoryVectorStore", "SimpleVectorStore", "chroma"]
)
@pytest.mark.slow  # 20 rounds of two tuners on each store
def test_two_tuners_in_threads_lose_no_original(framework, kind, tmp_path, caplog):
    if kind == "chroma":
        pytest.importorskip("langchain_chroma", reason="pip install 'nudge-rag[chroma]'")
        pytest.importorskip(
            "llama_index.vector_stores.chroma", reason="pip install 'nudge-rag[chroma]'"
        )
    data = make_data()
    refs = refs_for(data)
    case = StoreCase(framework, kind, data, tmp_path)
    try:
        other = "langchain" if kind == "chroma" else framework
        tuners = [case.tuner("a"), case.tuner("b", new_wrapper=other)]
        if kind == "chroma":
            assert tuners[0].writeback.state_dir == tuners[1].writeback.state_dir
        busy = waited = 0
        for r in range(ROUNDS):
            ops = round_ops(r)
            timeout = 0.0 if r % 2 == 0 else 60.0  # even rounds: refuse; odd rounds: wait
            outcomes = [Outcome("none"), Outcome("none")]
            barrier = threading.Barrier(2)
            for n, tuner in enumerate(tuners):
                tuner.writeback.lock_timeout = timeout
                _record_writes(tuner.store, outcomes, n)
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="nudge_rag._lock"):
                threads = [
                    threading.Thread(
                        target=_work, args=(tuners[n], ops[n][0], outcomes[n], barrier)
                    )
                    for n in (0, 1)
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(60)
            busy += any(o.status == "busy" for o in outcomes)
            waited += WAITED in caplog.text
            last, want = settle(ops, outcomes, refs)
            check_state(case.read(), want, data.ids, tolerance(kind), f"round {r} ({last} last)")
            if r % 5 == 4:  # a third tuner (a new object) restores every original
                fresh = case.tuner("a", new_wrapper=case.framework)
                fresh.restore()
                check_state(case.read(), data.docs, data.ids, tolerance(kind), f"restore {r}")
                assert not fresh.writeback.status().tuned
        # the busy rounds refuse, the waiting rounds wait: the writers really overlapped
        assert busy >= 1 and waited >= 1, f"refused in {busy}, waited in {waited} rounds"
        tuners[1].restore()
        check_state(case.read(), data.docs, data.ids, tolerance(kind), "final restore")
        assert not tuners[0].writeback.status().tuned
    finally:
        case.close()


def _work(tuner: Tuner, op: str, outcome: Outcome, barrier: threading.Barrier) -> None:
    """One writer of a round, in its thread: start with the other one, note the outcome."""
    barrier.wait(10)
    try:
        tuner.run(op)
        outcome.status = "ok"
    except StoreBusyError:
        outcome.status = "busy"
    except Exception as err:  # noqa: BLE001 - reported by the test thread
        outcome.status, outcome.error = "error", repr(err)


def _record_writes(store: Any, outcomes: list[Outcome], n: int) -> None:
    """Note when tuner ``n`` writes (wrapping its backend's ``set_vectors`` once)."""
    real = getattr(store, "_real_set_vectors", None)
    if real is None:
        real = store._real_set_vectors = store.set_vectors

    def set_vectors(ids, vectors):
        now = time.monotonic()
        if outcomes[n].first_write is None:
            outcomes[n].first_write = now
        real(ids, vectors)
        outcomes[n].last_write = time.monotonic()

    store.set_vectors = set_vectors


@pytest.mark.parametrize("timeout", [0.0, 30.0], ids=["refused", "waits"])
def test_a_fit_that_starts_mid_write_is_refused_or_waits_never_sent_to_resume(timeout, caplog):
    """A second fit that starts while the first one's plan is being written (``pending``
    saved, batches going out) is refused (``StoreBusyError``) or waits for it: it is not
    told that an interrupted write-back waits for ``resume()``."""
    data = make_data()
    case = StoreCase("langchain", "memory", data)
    first, second = case.tuner("a"), case.tuner("b", lock_timeout=timeout)
    writing, go_on = threading.Event(), threading.Event()
    real = first.store.set_vectors

    def slow_set(ids, vectors):
        real(ids, vectors)
        writing.set()
        assert go_on.wait(30)

    first.store.set_vectors = slow_set
    errors: list[BaseException] = []

    def run_first() -> None:
        try:
            first.fit()
        except BaseException as err:  # noqa: BLE001 - reported by the test thread
            errors.append(err)

    thread = threading.Thread(target=run_first)
    thread.start()
    try:
        assert writing.wait(30)
        assert first.writeback.status().pending == "apply"  # mid write-back
        if timeout == 0:
            with pytest.raises(StoreBusyError, match="only one writer"):
                second.fit()
        else:
            threading.Timer(0.3, go_on.set).start()
            with caplog.at_level(logging.INFO, logger="nudge_rag._lock"):
                second.fit()  # waited for the first, then fitted from the originals
            assert WAITED in caplog.text and "(up to 30 s), held by pid" in caplog.text
    finally:
        go_on.set()
        thread.join(30)
    assert not errors, errors
    want = refs_for(data)["a" if timeout == 0 else "b"]
    check_state(case.read(), want, data.ids, 1e-6, "after both")
    second.restore()
    check_state(case.read(), data.docs, data.ids, 1e-6, "restored")


def test_opening_a_busy_store_does_not_wait_for_its_writer(tmp_path):
    """A ``WriteBack`` made while another writer holds the lock (its temporary files on
    disk) returns at once, even with ``lock_timeout=None``, and leaves those files alone."""
    store = ArrayStore(["d0", "d1"], np.eye(2, 4, dtype=np.float32))
    held, release = threading.Event(), threading.Event()
    temp = tmp_path / ".pending.npz.k2.tmp"

    def writer() -> None:
        with WriteBack(store, tmp_path).locked("apply"):
            temp.write_bytes(b"being written")
            held.set()
            release.wait(30)

    holder = threading.Thread(target=writer)
    holder.start()
    try:
        assert held.wait(30)
        opened = threading.Thread(
            target=WriteBack, args=(store, tmp_path), kwargs={"lock_timeout": None}
        )
        opened.start()
        opened.join(5)
        assert not opened.is_alive(), "WriteBack() waited for the other writer"
        assert temp.exists()
    finally:
        release.set()
        holder.join(30)


# ---------------------------------------------------------------------- 1b. processes
class Worker:
    """A worker process (this file run as a script) tuning Chroma server collections with
    ``framework``'s tuner; each command names the collection and the ``state_dir``."""

    def __init__(self, framework: str, server: Any):
        args = {"framework": framework, "host": server.host, "port": server.port}
        self.framework = framework
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "worker", json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ready = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self) -> None:
        if self.ready:
            return
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            pytest.fail(f"worker did not start: {line!r} {self.proc.stderr.read()[-3000:]}")
        self.ready = True

    def send(self, **command: Any) -> None:
        self.wait_ready()
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def reply(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            pytest.fail(f"worker ended: {self.proc.stderr.read()[-3000:]}")
        return json.loads(line)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            stream.close()


@pytest.fixture(scope="module")
def workers(chroma_server):
    """A LangChain and a LlamaIndex worker process (started once: imports take seconds)."""
    pytest.importorskip("langchain_chroma", reason="pip install 'nudge-rag[chroma]'")
    pytest.importorskip(
        "llama_index.vector_stores.chroma", reason="pip install 'nudge-rag[chroma]'"
    )
    pool = {fw: Worker(fw, chroma_server) for fw in ("langchain", "llama")}
    yield pool
    for worker in pool.values():
        worker.close()


@pytest.mark.slow  # two processes, 20 rounds, a Chroma server: about 20 s
def test_two_tuner_processes_lose_no_original(workers, tmp_path, request):
    """A LangChain retriever and a LlamaIndex engine in two processes on one collection of a
    Chroma server, with one ``state_dir``: 20 rounds of overlapping fits and restores (the
    roles alternate, so each framework's tuner is the first and the second writer)."""
    data = make_data()
    refs = refs_for(data)
    server = StoreCase("langchain", "chroma_http", data, tmp_path, request)
    where = {"collection": server.made.collection, "state_dir": str(tmp_path / "state")}
    pool = [workers["langchain"], workers["llama"]]
    busy = waited = 0
    for r in range(ROUNDS):
        ops = round_ops(r)
        order = pool if r % 2 == 0 else pool[::-1]
        timeout = 0.0 if r % 4 < 2 else 60.0  # two rounds refuse, two rounds wait
        for worker, (op, pairs) in zip(order, ops, strict=True):
            worker.send(op=op, pairs=pairs or "a", lock_timeout=timeout, **where)
        replies = [worker.reply() for worker in order]
        outcomes = [
            Outcome(x["status"], x["waited"], x["first_write"], x["last_write"], x["error"])
            for x in replies
        ]
        busy += any(o.status == "busy" for o in outcomes)
        waited += any(o.waited for o in outcomes)
        last, want = settle(ops, outcomes, refs)
        check_state(server.read(data.ids), want, data.ids, 2e-6, f"round {r} ({last} last)")
        if r % 5 == 4:
            pool[r % 2].send(op="restore", pairs="a", lock_timeout=None, **where)
            assert pool[r % 2].reply()["status"] == "ok"
            check_state(server.read(data.ids), data.docs, data.ids, 2e-6, f"restore {r}")
    assert busy >= 1 and waited >= 1, f"refused in {busy}, waited in {waited} rounds"
    pool[0].send(op="restore", pairs="a", lock_timeout=None, **where)
    assert pool[0].reply()["status"] == "ok"
    check_state(server.read(data.ids), data.docs, data.ids, 2e-6, "final restore")


def _worker_main(args: dict[str, Any]) -> int:
    """The worker process: one command per stdin line, one JSON reply line each."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    lock_log = logging.getLogger("nudge_rag._lock")
    lock_log.addHandler(Keep())
    lock_log.setLevel(logging.INFO)
    data = make_data()
    server = f"chroma+http://{args['host']}:{args['port']}"
    framework = "langchain" if args["framework"] == "langchain" else "llama-index"
    stores: dict[str, Any] = {}

    def vectorstore(name: str) -> Any:
        """The server's collection ``name`` through the framework's wrapper, opened as the
        harness opens a store in a new process."""
        if name not in stores:
            from langchain_helpers import LookupEmbeddings
            from stores.test_chroma import ChromaKind

            embeddings = LookupEmbeddings(data.lookup())
            stores[name] = ChromaKind().open(server, name, embeddings, framework).store
        return stores[name]

    # Import the framework now, so that the first round's two writers start together.
    from nudge_rag import backend_for  # noqa: F401

    if args["framework"] == "langchain":
        import langchain_chroma  # noqa: F401
        import langchain_nudge  # noqa: F401
    else:
        import llama_index.vector_stores.chroma  # noqa: F401
        import llama_index_nudge  # noqa: F401
    print("ready", flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            break
        tuner = Tuner(  # a new tuner per command, as a new cron run would build
            args["framework"],
            vectorstore(command["collection"]),
            data,
            data.pairs[command["pairs"]],
            state_dir=command["state_dir"],
            lock_timeout=command["lock_timeout"],
            batch_size=command.get("batch_size", BATCH),
        )
        reply: dict[str, Any] = {"status": "ok", "first_write": None, "last_write": None}
        reply["error"] = ""
        real = tuner.store.set_vectors
        slow = float(command.get("slow", 0.0))

        def set_vectors(ids, vectors, real=real, reply=reply, slow=slow):
            if reply["first_write"] is None:
                reply["first_write"] = time.time()
            real(ids, vectors)
            reply["last_write"] = time.time()
            if slow:
                print(json.dumps({"event": "writing"}), flush=True)
                time.sleep(slow)

        tuner.store.set_vectors = set_vectors
        records.clear()
        try:
            tuner.run(command["op"])
        except StoreBusyError as err:
            reply.update(status="busy", holder=err.holder)
        except Exception as err:  # noqa: BLE001 - sent to the parent
            reply.update(status="error", error=f"{type(err).__name__}: {err}")
        reply["waited"] = any(WAITED in m for m in records)
        reply["stale"] = [m for m in records if STALE in m]
        print(json.dumps(reply), flush=True)
    return 0


# ---------------------------------------------------------------------- 4. stale locks
HOLDER_SCRIPT = """
import sys, time, numpy as np
from nudge_rag import ArrayStore, WriteBack
store = ArrayStore(["d0", "d1"], np.eye(2, 4, dtype=np.float32))
with WriteBack(store, sys.argv[1]).locked("fit"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_live_holder_is_named_and_a_killed_one_does_not_block(tmp_path, caplog):
    """Core: a process holding the lock is named (pid, host); SIGKILLed, it blocks nobody."""
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "held", proc.stderr.read()
        store = ArrayStore(["d0", "d1"], np.eye(2, 4, dtype=np.float32))
        host = socket.gethostname()
        wb = WriteBack(store, state)
        with pytest.raises(StoreBusyError, match=rf"locked by pid {proc.pid} on host ") as err:
            wb.apply(["d0"], np.full((1, 4), 0.5, np.float32))
        assert err.value.holder["pid"] == proc.pid and err.value.holder["host"] == host
        assert err.value.holder["what"] == "fit"
        assert f"pid {proc.pid} on host {host}" in wb.status().locked_by
        assert "another writer is working" in wb.status().next_step
        with pytest.raises(StoreBusyError, match=r"after waiting 0.3 s"):
            WriteBack(store, state, lock_timeout=0.3).restore()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert wb.status().locked_by is None  # the record names a dead process: not a holder
    with caplog.at_level(logging.INFO, logger="nudge_rag._lock"):
        start = time.monotonic()
        wb.apply(["d0"], np.full((1, 4), 0.5, np.float32))  # lock_timeout=0: at once
        assert time.monotonic() - start < 5
    assert STALE in caplog.text and f"pid {proc.pid} on host {host}" in caplog.text
    assert wb.restore() == 1
    assert_allclose(store.vectors, np.eye(2, 4, dtype=np.float32))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="nudge_rag._lock"):
        wb.restore()  # a cleanly released lock leaves no record to report
    assert STALE not in caplog.text


@pytest.mark.slow  # kills a tuner process: about 17 s
def test_a_tuner_process_killed_mid_write_blocks_no_one(workers, tmp_path, caplog, request):
    """LangChain: a fit in another process writes slowly; while it is alive the retriever
    here gets ``StoreBusyError`` naming it; SIGKILLed mid write-back, its lock is gone:
    ``resume()`` here proceeds at once (reporting the dead holder) and ``restore()`` puts
    every original back. (It kills the module's LangChain worker: it runs last of them.)"""
    from langchain_nudge import NudgeRetriever

    data = make_data()
    server = StoreCase("langchain", "chroma_http", data, tmp_path, request)
    state = tmp_path / "state"
    worker = workers["langchain"]
    here = NudgeRetriever(
        vectorstore=server.vectorstore, state_dir=state, solver_params={"gamma": GAMMA}
    )
    host = socket.gethostname()
    try:
        worker.send(
            op="fit",
            pairs="a",
            lock_timeout=0,
            slow=0.2,
            batch_size=16,
            collection=server.made.collection,
            state_dir=str(state),
        )
        for _ in range(3):  # three batches written, the fourth under way
            assert worker.reply() == {"event": "writing"}
        with pytest.raises(StoreBusyError, match=rf"pid {worker.pid} on host ") as err:
            here.restore()
        assert err.value.holder["pid"] == worker.pid and err.value.holder["host"] == host
        assert f"pid {worker.pid}" in here.writeback.status().locked_by
    finally:
        worker.kill()
    status = here.writeback.status()
    assert status.locked_by is None and status.pending == "apply"
    assert 2 <= status.batches_done < status.batches_total
    with caplog.at_level(logging.INFO, logger="nudge_rag._lock"):
        assert here.resume() is True  # lock_timeout=0: the dead holder blocks nothing
    assert STALE in caplog.text and f"pid {worker.pid} on host {host}" in caplog.text
    check_state(server.read(data.ids), refs_for(data)["a"], data.ids, 2e-6, "resumed")
    assert here.restore() == len(data.pairs["a"]) // 2
    check_state(server.read(data.ids), data.docs, data.ids, 2e-6, "restored")


# ---------------------------------------------------------------------- 2. edited documents
EDIT_CASES = [
    ("langchain", "memory"),
    ("llama", "memory"),
    ("langchain", "chroma"),
    ("llama", "chroma"),
    ("langchain", "qdrant"),
    ("llama", "qdrant_memory"),
]


@pytest.mark.parametrize(("framework", "kind"), EDIT_CASES, ids=[f"{f}-{k}" for f, k in EDIT_CASES])
def test_an_edited_document_is_the_users_not_restored_over(framework, kind, tmp_path, caplog):
    extra = "chroma" if kind.startswith("chroma") else "qdrant"
    pytest.importorskip(
        "chromadb" if extra == "chroma" else "qdrant_client",
        reason=f"pip install 'nudge-rag[{extra}]'",
    )
    data = make_data(40, 8, uuids=kind.startswith("qdrant"))
    case = StoreCase(framework, kind, data, tmp_path)
    atol = tolerance(kind)
    rng = np.random.default_rng(11)
    try:
        tuner = case.tuner("a")
        first = tuner.fit()
        moved = sorted(first.changed_ids, key=data.ids.index)
        assert len(moved) == 24
        # The user replaces x (deleted, added again under its id) and updates y (in place
        # where the wrapper can).
        x, y, z, w, v = moved[:5]
        edits = dict(zip((x, y, z, w), unit_rows(rng, 4, 8), strict=True))
        case.readd(x, "x, rewritten", edits[x])
        case.update(y, "y, rewritten", edits[y])
        # The next fit reads the edits as the new originals: it is a fit from them.
        second = tuner.fit()
        assert sorted(second.drifted_ids) == sorted([x, y])
        originals = data.docs.copy()
        for doc_id in (x, y):
            originals[data.ids.index(doc_id)] = edits[doc_id]
        want = reference(data, originals, data.pairs["a"])
        check_state(case.read(), want, data.ids, 1e-5, "fit after the edits")
        saved_ids, saved = tuner.writeback.originals()
        assert_allclose(saved[saved_ids.index(x)], edits[x], atol=atol)
        # More edits after that fit: z updated, w deleted and re-added, v deleted for good.
        case.update(z, "z, rewritten", edits[z])
        case.readd(w, "w, rewritten", edits[w])
        case.delete(v)
        with caplog.at_level(logging.WARNING, logger="nudge_rag._writeback"):
            restored = tuner.restore()
        assert restored == len(moved) - 3
        report = tuner.writeback.last_report
        assert sorted(report.drifted_ids) == sorted([z, w]) and report.missing_ids == [v]
        assert "2 document(s) were changed by someone else" in caplog.text
        assert repr(z) in caplog.text and repr(w) in caplog.text and repr(v) in caplog.text
        # The store: originals, with the user's edits kept and the deleted document gone.
        assert sorted(case.ids()) == sorted(i for i in data.ids if i != v)
        for doc_id in (z, w):
            originals[data.ids.index(doc_id)] = edits[doc_id]
        keep = [k for k, i in enumerate(data.ids) if i != v]
        kept_ids = [data.ids[k] for k in keep]
        check_state(case.read(kept_ids), originals[keep], kept_ids, atol, "after restore")
        status = tuner.writeback.status()
        assert not status.tuned and status.pending is None
        # A new fit after all that starts from exactly this store.
        pairs = [(q, i) for q, i in data.pairs["a"] if i != v]
        third = case.tuner(pairs).fit()
        assert third.drifted_ids == []
        want = reference(data, originals, pairs)
        check_state(case.read(kept_ids), want[keep], kept_ids, 1e-5, "a fit after the restore")
    finally:
        case.close()


# ---------------------------------------------------------------------- 3. a second object
SECOND_CASES = [
    ("langchain", "memory"),
    ("llama", "memory"),
    ("langchain", "chroma_ephemeral"),
    ("llama", "chroma_ephemeral"),
    ("langchain", "qdrant_memory"),
    ("llama", "qdrant_memory"),
]


@pytest.mark.parametrize(
    ("framework", "kind"), SECOND_CASES, ids=[f"{f}-{k}" for f, k in SECOND_CASES]
)
def test_a_second_tuner_on_an_in_memory_store_sees_the_first_ones_state(framework, kind):
    """Originals kept in memory belong to the store, not to the retriever or engine."""
    extra = "chroma" if kind.startswith("chroma") else "qdrant"
    pytest.importorskip(
        "chromadb" if extra == "chroma" else "qdrant_client",
        reason=f"pip install 'nudge-rag[{extra}]'",
    )
    data = make_data(60, 8, uuids=kind.startswith("qdrant"))
    case = StoreCase(framework, kind, data)
    atol = tolerance(kind)
    try:
        first = case.tuner("a")
        first.fit()
        check_state(case.read(), reference(data, data.docs, data.pairs["a"]), data.ids, 1e-5, "a")
        # A second object: for Chroma and Qdrant a new framework wrapper over the same client.
        second = case.tuner("b", new_wrapper=framework)
        assert second.writeback.status().tuned  # it sees the first one's originals
        second.fit()  # from the originals: rows only "a" moved go back
        check_state(case.read(), reference(data, data.docs, data.pairs["b"]), data.ids, 1e-5, "b")
        both = {i for _, i in data.pairs["a"] + data.pairs["b"]}
        assert second.restore() == len(both)  # originals saved by either fit
        check_state(case.read(), data.docs, data.ids, atol, "restored by the second")
        assert first.restore() == 0 and not first.writeback.status().tuned
        first.fit()
        third = case.tuner("b", new_wrapper=framework)
        assert third.restore() == len(data.pairs["a"]) // 2
        check_state(case.read(), data.docs, data.ids, atol, "restored by a third")
    finally:
        case.close()


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "worker":
    sys.exit(_worker_main(json.loads(sys.argv[2])))
