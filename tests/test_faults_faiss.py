"""Write-back into a saved FAISS folder survives SIGKILL (issue 10; the suite of test_faults).

A FAISS index lives in the process; what outlives it is the folder ``save_local`` /
``storage_context.persist`` wrote, made by the harness's FAISS kind (``flat``, LangChain's;
``llama-index``, LlamaIndex's). The child (``tests/fault_child.py``, ``FaissTarget``) loads
the folder through the kind (``FaissKind.open``), tunes with the backend in write-through mode
(``folder=``: each batch is written into the saved index file and flushed before it counts as
done) and SIGKILLs itself while saving originals, between batches, inside a batch, or when the
parent kills it at a seeded random moment. The parent then loads the folder afresh: same ids
and count, every vector original or tuned; ``resume()`` in a new process reaches the
uninterrupted result, ``restore()`` the originals (exactly). Also: searches during a
write-back always return k results, and the memory mode's documented limit (a crash loses
unsaved writes; ``restore()`` is the way back). The kill points the command line goes through
on the same folder (after the originals or the plan are saved, after batch k, after its
progress) are the store contract's kill test (``tests/stores/test_faiss.py``).
"""

from __future__ import annotations

import random
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss", reason="pip install 'nudge-rag[faiss]'")
pytest.importorskip("langchain_community", reason="pip install 'nudge-rag[faiss]' (or [lancedb])")
pytest.importorskip("llama_index.vector_stores.faiss", reason="pip install 'nudge-rag[faiss]'")

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import fault_child as fc  # noqa: E402
from stores.harness import Made  # noqa: E402
from stores.test_faiss import FaissKind  # noqa: E402
from test_faults import (  # noqa: E402
    IN_PLAN,
    N_BATCHES,
    N_MOVED,
    PRE_PLAN,
    _kid,
    check_consistent,
    finish,
    read,
    run_child,
    template_docs,
)

# each case kills a tuning process and checks every row: 3-4 s; `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

KIND = "faiss_folder"


@pytest.fixture(scope="module")
def faiss_templates(tmp_path_factory) -> dict[str, Made]:
    """The saved folders every case copies, made by the harness's FAISS kind: LangChain's
    ``save_local`` folder (``flat``) and LlamaIndex's persisted index (``llama-index``)."""
    root = tmp_path_factory.mktemp("faiss_templates")
    kind = FaissKind()
    return {
        "langchain": kind.make(root, template_docs(), "flat", None),
        "llama": kind.make(root, template_docs(), "llama-index", None),
    }


def new_folder(framework: str, where: Path, templates: dict[str, Made]) -> dict:
    """Args for a fresh copy of the saved folder (state in ``<where>/state``): its ``uri``
    and ``collection`` as the command line names them."""
    where.mkdir(parents=True, exist_ok=True)
    made = templates["llama" if framework == "llama" else "langchain"]
    shutil.copytree(made.uri.removeprefix("faiss:"), where / "faiss")
    return {
        "store": KIND,
        "framework": framework,
        "uri": f"faiss:{where / 'faiss'}",
        "collection": made.collection,
        "state_dir": str(where / "state"),
        "batch_size": 3,
    }


_REFERENCE: dict[str, dict] = {}


def reference(framework: str, tmp_path_factory, templates) -> dict:
    """Originals and the uninterrupted result on an identical folder (cached per framework)."""
    if framework not in _REFERENCE:
        args = new_folder(framework, tmp_path_factory.mktemp("faiss_ref"), templates)
        ids, before = read(args)
        target = fc.open_target(args)
        result = target.fit()
        assert len(result.changed_ids) == N_MOVED
        ids2, after = read(args)  # loaded afresh: the folder holds the tuned vectors
        assert ids2 == ids
        moved = ~np.all(before == after, axis=1)
        assert sorted(np.asarray(ids)[moved].tolist()) == sorted(result.changed_ids)
        _REFERENCE[framework] = {"ids": ids, "orig": before, "tuned": after}
    return _REFERENCE[framework]


def _check_text(args: dict) -> None:
    """Text and metadata of the saved folder are what the template was made with (template_docs)."""
    made = fc.open_target(args).made
    if args["framework"] == "llama":
        nodes = made.index.docstore.get_nodes(fc.doc_ids(KIND))
        got = [(n.text, n.metadata["i"]) for n in nodes]
    else:
        docs = made.store.get_by_ids(fc.doc_ids(KIND))
        got = [(d.page_content, d.metadata["i"]) for d in docs]
    assert got == [(f"document {k}", k) for k in range(fc.N_DOCS)]


# Killed while a state file is renamed into place (originals, plan), after the last batch
# before its progress is recorded, and inside batches 1/3/5; then resume or restore. The other
# points (originals saved, plan saved, after batch k, progress recorded) are the store
# contract's kill test on the same saved folder through the command line
# (tests/stores/test_faiss.py, "flat": status, restore, then resume after the same kill).
CASES = [
    ("core", PRE_PLAN[0], "resume"),
    ("core", PRE_PLAN[2], "resume"),
    ("core", IN_PLAN[5], "resume"),
    ("core", IN_PLAN[6], "restore"),
    ("core", IN_PLAN[8], "resume"),
    ("core", IN_PLAN[10], "restore"),
]
# The frameworks' engines killed (LangChain's NudgeRetriever, LlamaIndex's NudgeFinetuneEngine)
_FRAMEWORK_KILLS = (
    PRE_PLAN[1],
    {"at": "after_set", "batch": 2},
    {"at": "inside_set", "batch": 4, "part": 1},
)
CASES += [
    (fw, kill, branch)
    for fw, branches in (
        ("langchain", ("restore", "resume", "restore")),
        ("llama", ("resume", "restore", "resume")),
    )
    for kill, branch in zip(_FRAMEWORK_KILLS, branches)
]


@pytest.mark.parametrize(
    ("framework", "kill", "branch"), CASES, ids=[f"{f}-{_kid(k)}" for f, k, _ in CASES]
)
def test_killed(framework, kill, branch, tmp_path, tmp_path_factory, faiss_templates):
    ref = reference(framework, tmp_path_factory, faiss_templates)
    args = new_folder(framework, tmp_path, faiss_templates)
    assert run_child(args, kill) == -9
    tuned = check_consistent(args, ref)
    pre_plan = kill in PRE_PLAN
    if pre_plan:
        assert not tuned.any()
    elif kill["at"] in ("after_set", "inside_set"):
        assert tuned.any()  # the batches written before the kill are in the saved file
    finish(args, ref, branch, plan_expected=not pre_plan)
    _check_text(args)


@pytest.mark.parametrize("seed", [0, 1])
def test_timed_kill(seed, tmp_path, tmp_path_factory, faiss_templates):
    """The parent kills at a seeded random moment of a slowed write-back."""
    ref = reference("core", tmp_path_factory, faiss_templates)
    args = new_folder("core", tmp_path, faiss_templates)
    delay = random.Random(seed).uniform(0.0, 0.1 + N_BATCHES * 0.03)
    run_child(args, None, delay=delay, slow=0.03)
    check_consistent(args, ref)
    finish(args, ref, "resume" if seed % 2 else "restore", plan_expected=None)


def test_readers_get_k_results_during_a_write_back(tmp_path, faiss_templates):
    args = new_folder("core", tmp_path, faiss_templates)
    target = fc.open_target(args)
    index = target.made.store.index
    real_set = target.store.set_vectors

    def slow_set(ids, vectors):
        time.sleep(0.05)
        real_set(ids, vectors)

    target.store.set_vectors = slow_set
    stop, errors, counts = threading.Event(), [], []

    def reader():
        rng = np.random.default_rng(7)
        try:
            while not stop.is_set():
                q = rng.standard_normal((1, fc.DIM)).astype(np.float32)
                _, labels = index.search(q / np.linalg.norm(q), 5)
                counts.append(int((labels >= 0).sum()))
        except Exception as err:  # noqa: BLE001 - reported by the test thread
            errors.append(err)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        target.fit()
    finally:
        stop.set()
        thread.join(15)
    assert not errors, errors[0]
    assert counts and min(counts) == 5


def test_memory_mode_crash_loses_unsaved_writes_and_restore_recovers(tmp_path, faiss_templates):
    """Without ``folder=`` writes live in memory: after a crash the folder holds what was
    saved last (here the originals) while the plan says some batches were done; restore()
    (not resume()) is the documented way back, and it leaves the originals."""
    from nudge_rag import NudgeN, WriteBack, tune_store
    from nudge_rag.backends.faiss import from_langchain

    args = new_folder("core", tmp_path, faiss_templates)
    ids, original = read(args)
    data = fc.make_data()
    vs = fc.open_made(args).store  # the saved folder, as the child loads it
    wb = WriteBack(from_langchain(vs), args["state_dir"], batch_size=3)
    calls = []
    real_set = wb.store.set_vectors

    def failing_set(batch_ids, vectors):  # the process "dies" at the 3rd batch
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_set(batch_ids, vectors)

    wb.store.set_vectors = failing_set
    emb = np.stack([data["questions"][t] for t, _ in fc.train_pairs(args)])
    with pytest.raises(KeyboardInterrupt):
        tune_store(wb, NudgeN(gamma=fc.GAMMA), emb, [[i] for _, i in fc.train_pairs(args)])
    # A new process: the folder was never saved after the writes.
    assert np.array_equal(read(args)[1], original)
    vs2 = fc.open_made(args).store
    wb2 = WriteBack(from_langchain(vs2), args["state_dir"], batch_size=3)
    assert wb2.has_pending
    assert wb2.restore() == N_MOVED
    assert np.array_equal(wb2.store.get_vectors(ids), original)
