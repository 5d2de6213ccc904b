"""Write-back survives faults (issue 5, section 1).

A child process (``tests/fault_child.py``) tunes a store and writes it back; it SIGKILLs itself
at seeded points (while saving originals, between batches, inside a batch) or the parent
kills it after a seeded random delay. After each kill the store must hold the same ids, each
with its original or its tuned vector; ``resume()`` then finishes to the uninterrupted result
or ``restore()`` brings every original back. Also: a Chroma server killed mid write-back,
concurrent readers, and idempotent re-fits.

The Chroma (persistent folder, server) and Qdrant (local folder) stores are the harness's
kinds (``tests/stores``): the parent makes them with ``make`` / ``fill``, and the child opens
one as a new process does (``kind.open(uri, collection)``, the command line's names). They
are cosine collections, as users make them for NUDGE-N: each write is normalized again, which
moves some float32 components by 1 ulp, so a restore gives the originals back within the
kind's ``restore_atol`` (1e-7); FAISS and pgvector check it bit for bit
(``test_faults_faiss.py``, ``test_faults_pgvector.py``).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("chromadb", reason="pip install 'nudge-rag[chroma]'")
pytest.importorskip("qdrant_client", reason="pip install 'nudge-rag[qdrant]'")

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import fault_child as fc  # noqa: E402
from stores.harness import Docs, Made  # noqa: E402
from stores.test_chroma import ChromaKind  # noqa: E402

from nudge_rag import WriteBackError  # noqa: E402

# each case kills a tuning process (or a server) and checks every row: 3-8 s; `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

CHILD = str(TESTS / "fault_child.py")
N_MOVED = 15  # make_data(): docs 0..14 have questions; with batch_size=3: 5 batches
N_BATCHES = 5


# ---------------------------------------------------------------------- store setup
def template_docs() -> Docs:
    """``fc.make_data()``'s documents for a harness kind: ``doc-k``, text ``document k``,
    metadata ``{"i": k}`` (what fault_child's targets read back)."""
    data = fc.make_data()
    return Docs(
        [f"doc-{k}" for k in range(fc.N_DOCS)],
        [f"document {k}" for k in range(fc.N_DOCS)],
        [{"i": k} for k in range(fc.N_DOCS)],
        data["docs"].copy(),
    )


#: The harness's configuration of each store kept in a folder (copied for every case).
FOLDER_CONFIGS = {"chroma_persist": "hnsw", "qdrant_local": "local"}


@dataclass
class Templates:
    """Filled store folders, copied for every case: kind -> its (closed) ``Made``."""

    made: dict[str, Made]


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> Templates:
    """A Chroma persistent folder and a Qdrant local folder holding ``template_docs()``, made
    by the harness's kinds (LangChain's ``Chroma``, cosine; ``QdrantVectorStore``, whose ids
    are UUIDs of ``doc-k``)."""
    root = tmp_path_factory.mktemp("templates")
    made = {}
    for kind, config in FOLDER_CONFIGS.items():
        store_kind = fc.kind_of(kind)
        store_kind.skip_if_missing()
        docs = template_docs()
        made[kind] = store_kind.make(root, docs, config, None)  # root / "chroma", "qdrant"
        made[kind].close()
        assert docs.ids == fc.doc_ids(kind)
    return Templates(made)


def new_store(kind: str, framework: str, where: Path, templates: Templates, server=None) -> dict:
    """Args for a fresh, filled store of ``kind``: a copy of its template folder, or a new
    collection on the Chroma ``server`` made by the harness's Chroma kind."""
    where.mkdir(parents=True, exist_ok=True)
    if kind == "chroma_http":
        made = ChromaKind().fill(template_docs(), server=server)
        made.close()
        uri = made.uri
    else:
        made = templates.made[kind]
        scheme, _, folder = made.uri.partition(":")
        copy = where / Path(folder).name
        shutil.copytree(folder, copy)
        uri = f"{scheme}:{copy}"
    return {
        "store": kind,
        "framework": framework,
        "uri": uri,
        "collection": made.collection,
        "state_dir": str(where / "state"),
        "batch_size": 3,
    }


def read(args: dict) -> tuple[list[str], np.ndarray]:
    target = fc.open_target(args)
    try:
        return target.read()
    finally:
        target.close()


_REFERENCE: dict[tuple[str, str], dict] = {}


def reference(kind: str, framework: str, tmp_path_factory, templates, server=None) -> dict:
    """Originals and the uninterrupted result on an identical store (cached per kind)."""
    key = (kind, framework)
    if key not in _REFERENCE:
        args = new_store(kind, framework, tmp_path_factory.mktemp("ref"), templates, server)
        ids, before = read(args)
        target = fc.open_target(args)
        try:
            result = target.fit()
        finally:
            target.close()
        changed = result.changed_ids
        assert len(changed) == N_MOVED
        ids2, after = read(args)
        assert ids2 == ids
        moved = ~np.all(before == after, axis=1)
        assert sorted(np.asarray(ids)[moved].tolist()) == sorted(changed)
        _REFERENCE[key] = {"ids": ids, "orig": before, "tuned": after}
    return _REFERENCE[key]


def run_child(args: dict, kill, *, delay: float | None = None, slow: float = 0.0) -> int:
    payload = json.dumps({**args, "kill": kill, "slow": slow})
    proc = subprocess.Popen(
        [sys.executable, CHILD, payload], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    if delay is not None:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(9)
    _out, err = proc.communicate(timeout=120)
    if proc.returncode not in (0, -9):
        pytest.fail(f"child failed ({proc.returncode}): {err.decode()[-3000:]}")
    return proc.returncode


# ---------------------------------------------------------------------- checks
def tol(kind: str) -> float:
    """How exactly ``restore`` gives the originals back: the harness kind's ``restore_atol``
    (a cosine collection normalizes each vector written, which moves some components of a
    float32 row by 1 ulp)."""
    return fc.kind_of(kind).restore_atol


def close(a: np.ndarray, b: np.ndarray, atol: float) -> np.ndarray:
    return np.all(np.abs(a - b) <= atol, axis=1) if atol else np.all(a == b, axis=1)


def check_consistent(args: dict, ref: dict) -> np.ndarray:
    """Same ids; every row original or tuned (1e-6). Returns which rows are tuned."""
    ids, vecs = read(args)
    assert ids == ref["ids"] and len(ids) == fc.N_DOCS
    assert np.isfinite(vecs).all()
    is_orig = close(vecs, ref["orig"], 1e-6)
    is_tuned = close(vecs, ref["tuned"], 1e-6)
    bad = ~(is_orig | is_tuned)
    assert not bad.any(), f"rows neither original nor tuned: {np.asarray(ids)[bad].tolist()}"
    return is_tuned & ~is_orig


def finish(
    args: dict, ref: dict, branch: str, *, plan_expected: bool | None, n_saved: int = N_MOVED
) -> None:
    """``resume()`` to the uninterrupted result, or ``restore()`` to the originals (``n_saved``
    of them saved: a store whose batches save their own originals has only those it wrote)."""
    target = fc.open_target(args)
    try:
        pending = target.writeback.has_pending
        if plan_expected is not None:
            assert pending == plan_expected
        if branch == "resume" or not pending:
            resumed = target.resume()
            assert resumed == pending
            assert not target.writeback.has_pending
        else:
            assert target.restore() == n_saved
            assert not target.writeback.has_pending
            assert target.writeback.moved_ids() == []
    finally:
        target.close()
    ids, vecs = read(args)
    assert ids == ref["ids"]
    if branch == "restore" and pending:
        assert close(vecs, ref["orig"], tol(args["store"])).all()
    elif pending:
        assert close(vecs, ref["tuned"], 1e-6).all()
    else:  # no plan: the store is untouched or the write-back had completed
        assert (
            close(vecs, ref["orig"], tol(args["store"])).all()
            or close(vecs, ref["tuned"], 1e-6).all()
        )


# ---------------------------------------------------------------------- kill points
PRE_PLAN = [
    {"at": "replace", "file": "originals.npz", "when": "before"},
    {"at": "replace", "file": "originals.npz", "when": "after"},
    {"at": "replace", "file": "pending.npz", "when": "before"},
]
IN_PLAN = [
    {"at": "replace", "file": "pending.npz", "when": "after"},  # plan saved, nothing written
    *({"at": "after_set", "batch": k} for k in (1, 2, 3, 4, 5)),
    *({"at": "inside_set", "batch": k, "part": 1 + k % 2} for k in (1, 2, 3, 4, 5)),
    # progress of batch k recorded (the first progress.json write is the plan's 0)
    *({"at": "replace", "file": "progress.json", "nth": k + 1, "when": "after"} for k in (2, 5)),
]


def _kid(kill) -> str:
    parts = [kill["at"], kill.get("file", ""), kill.get("when", "")]
    parts += [str(kill[k]) for k in ("batch", "part", "nth") if k in kill]
    return "-".join(p for p in parts if p).replace(".", "_")


CORE_CASES = [("chroma_persist", k) for k in PRE_PLAN + IN_PLAN]  # 3 + 13 = 16
CORE_CASES += [("qdrant_local", k) for k in (PRE_PLAN[1], *IN_PLAN[1:12:2])]  # 7
# On a Chroma server, after batch k and after its progress are the store contract's kill
# test (tests/stores/test_chroma.py, "http": tune-batch3, tune-progress2, restore-batch2)
CORE_CASES += [("chroma_http", k) for k in (PRE_PLAN[0], IN_PLAN[8], IN_PLAN[5])]  # 3


def _server(request, kind):
    return request.getfixturevalue("chroma_server") if kind == "chroma_http" else None


@pytest.mark.parametrize(
    ("kind", "kill"), CORE_CASES, ids=[f"{s}-{_kid(k)}" for s, k in CORE_CASES]
)
def test_core_killed(kind, kill, request, tmp_path, tmp_path_factory, templates):
    server = _server(request, kind)
    ref = reference(kind, "core", tmp_path_factory, templates, server)
    args = new_store(kind, "core", tmp_path, templates, server)
    assert run_child(args, kill) == -9
    tuned = check_consistent(args, ref)
    pre_plan = kill in PRE_PLAN
    if pre_plan:
        assert not tuned.any()
    branch = "resume" if CORE_CASES.index((kind, kill)) % 2 == 0 else "restore"
    finish(args, ref, branch, plan_expected=not pre_plan)
    if pre_plan:
        # Nothing pending: a new fit runs to exactly the uninterrupted result.
        target = fc.open_target(args)
        try:
            target.fit()
        finally:
            target.close()
        assert close(read(args)[1], ref["tuned"], 1e-6).all()


FRAMEWORK_CASES = [
    (fw, kind, kill)
    for fw in ("langchain", "llama")
    for kind, kill in (
        ("chroma_persist", PRE_PLAN[1]),
        ("chroma_persist", {"at": "inside_set", "batch": 3, "part": 2}),
        ("qdrant_local", {"at": "after_set", "batch": 2}),
        ("qdrant_local", {"at": "inside_set", "batch": 4, "part": 1}),
        ("chroma_http", {"at": "after_set", "batch": 4}),
    )
]


@pytest.mark.parametrize(
    ("framework", "kind", "kill"),
    FRAMEWORK_CASES,
    ids=[f"{f}-{s}-{_kid(k)}" for f, s, k in FRAMEWORK_CASES],
)
def test_framework_killed(framework, kind, kill, request, tmp_path, tmp_path_factory, templates):
    server = _server(request, kind)
    ref = reference(kind, framework, tmp_path_factory, templates, server)
    args = new_store(kind, framework, tmp_path, templates, server)
    assert run_child(args, kill) == -9
    tuned = check_consistent(args, ref)
    pre_plan = kill in PRE_PLAN
    if pre_plan:
        assert not tuned.any()
    branch = "resume" if FRAMEWORK_CASES.index((framework, kind, kill)) % 2 else "restore"
    finish(args, ref, branch, plan_expected=not pre_plan)


TIMED = [("chroma_persist", 0), ("qdrant_local", 1), ("chroma_persist", 2), ("qdrant_local", 3)]


@pytest.mark.parametrize(("kind", "seed"), TIMED, ids=[f"{k}-{s}" for k, s in TIMED])
def test_timed_kill(kind, seed, tmp_path, tmp_path_factory, templates):
    """The parent kills at a seeded random moment of a slowed write-back (unplanned points)."""
    ref = reference(kind, "core", tmp_path_factory, templates)
    args = new_store(kind, "core", tmp_path, templates)
    delay = random.Random(seed).uniform(0.0, 0.1 + N_BATCHES * 0.03)
    run_child(args, None, delay=delay, slow=0.03)
    check_consistent(args, ref)
    finish(args, ref, "resume" if seed % 2 else "restore", plan_expected=None)


# ---------------------------------------------------------------------- server killed
@pytest.fixture
def own_server(chroma_server, tmp_path):
    """A second Chroma server (killing it leaves the session one alone)."""
    server = type(chroma_server)(chroma_server.exe, tmp_path)
    server.start()
    yield server
    server.stop(kill=True)


def test_server_killed_mid_writeback(own_server, tmp_path, tmp_path_factory, templates):
    ref = reference("chroma_http", "core", tmp_path_factory, templates, own_server)
    args = new_store("chroma_http", "core", tmp_path / "case", templates, own_server)
    target = fc.open_target(args)
    real_set = target.store.set_vectors
    calls = []

    def set_vectors(ids, vectors):
        calls.append(len(ids))
        if len(calls) == 3:  # the server dies after the 2nd batch
            own_server.stop(kill=True)
        real_set(ids, vectors)

    target.store.set_vectors = set_vectors
    with pytest.raises(WriteBackError, match=r"batch 3 of 5.*call resume\(\).*restore\(\)"):
        target.fit()
    own_server.start()
    check_consistent(args, ref)
    finish(args, ref, "resume", plan_expected=True)


# ---------------------------------------------------------------------- readers
K = 5


def _reader(
    query, known: set[str], stop: threading.Event, errors: list, seen: list, seconds: float = 10
) -> None:
    """Query random unit vectors until ``stop``; ``seen`` gets ``(time, number of results)``."""
    rng = np.random.default_rng(7)
    deadline = time.monotonic() + seconds
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            q = rng.standard_normal(fc.DIM).astype(np.float32)
            got = query(q / np.linalg.norm(q))
            seen.append((time.monotonic(), len(got)))
            assert len(got) >= K, f"query returned {len(got)} < {K} results"
            assert set(got) <= known, f"unknown ids {set(got) - known}"
    except Exception as err:  # noqa: BLE001 - reported by the test thread
        errors.append(err)


READER_KINDS = ["chroma_persist", "chroma_http", "qdrant_local"]


@pytest.mark.parametrize("kind", READER_KINDS)
def test_concurrent_readers(kind, request, tmp_path, templates):
    server = _server(request, kind)
    args = new_store(kind, "core", tmp_path, templates, server)
    target = fc.open_target(args)
    known = set(fc.doc_ids(kind))
    made = target.made  # the wrapper's own search, beside the write-back

    def query(q):
        return [doc_id for doc_id, _, _ in made.search(q, K)]

    real_set = target.store.set_vectors

    def slow_set(ids, vectors):
        time.sleep(0.05)
        real_set(ids, vectors)

    target.store.set_vectors = slow_set
    stop, errors, seen = threading.Event(), [], []
    thread = threading.Thread(target=_reader, args=(query, known, stop, errors, seen))
    thread.start()
    try:
        target.fit()
    finally:
        stop.set()
        thread.join(15)
        target.close()
    assert not errors, errors[0]
    assert seen, "the reader never ran"


def test_reader_process_and_retriever_during_fit(chroma_server, tmp_path, templates):
    """LangChain fit on the HTTP server while another process and the retriever query."""
    args = new_store("chroma_http", "langchain", tmp_path, templates, chroma_server)
    target = fc.open_target(args)
    known = set(fc.doc_ids("chroma_http"))
    reader = subprocess.Popen(  # opens the store through the harness, queries for 4 s
        [sys.executable, CHILD, json.dumps({**args, "query": {"seconds": 4, "k": K}})],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    real_set = target.store.set_vectors
    seen: list[list[str]] = []

    def slow_set(ids, vectors):
        time.sleep(0.1)
        real_set(ids, vectors)
        if not seen:  # the framework retriever, once, mid write-back
            question = fc.train_pairs(args)[0][0]
            seen.append([d.id for d in target.obj.invoke(question, k=K)])

    target.store.set_vectors = slow_set
    try:
        ready = reader.stdout.readline().strip()  # the reader has queried once
        assert ready == b"ready", reader.communicate(timeout=60)[1].decode()[-2000:]
        target.fit()
    finally:
        target.close()
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err.decode()[-2000:]
    report = json.loads(out)
    assert report["n"] > 0 and report["bad"] == []
    assert set(report["ids"]) <= known
    assert len(seen[0]) == K and set(seen[0]) <= known


# ---------------------------------------------------------------------- re-fits
@pytest.mark.parametrize(
    ("framework", "kind"), [("langchain", "chroma_persist"), ("llama", "qdrant_local")]
)
def test_refit_idempotent_and_from_originals(framework, kind, tmp_path, templates):
    args = new_store(kind, framework, tmp_path / "a", templates)
    fresh = new_store(kind, framework, tmp_path / "b", templates)
    ids, orig = read(args)
    first = fc.train_pairs(args)  # docs 0..14
    second = fc.train_pairs({**args, "data": {"n_answered": 12, "offset": 10}})  # docs 10..21
    target = fc.open_target(args)
    try:
        target.fit(first)
        _, once = target.read()
        target.fit(first)
        _, twice = target.read()
        np.testing.assert_allclose(twice, once, atol=1e-6, rtol=0)
        target.fit(second)
    finally:
        target.close()
    _, after = read(args)
    target = fc.open_target(fresh)
    try:
        target.fit(second)
    finally:
        target.close()
    _, expected = read(fresh)
    index = {i: n for n, i in enumerate(ids)}
    only_first = [index[i] for _, i in first if i not in {j for _, j in second}]
    assert only_first
    assert close(after[only_first], orig[only_first], tol(kind)).all()
    np.testing.assert_allclose(after, expected, atol=1e-6, rtol=0)  # from the originals
