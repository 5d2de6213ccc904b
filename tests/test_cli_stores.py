"""The command line on real stores, run as a user runs it (one process per command).

Per store (the harness's kinds, ``tests/stores``: made through the framework wrapper users
run, named by their ``--store`` URI): ``tune -> evaluate -> status -> restore -> evaluate``,
with the numbers checked against the Python API on the same data (:class:`nudge_rag.StoreTuner`
over an in-memory copy of the vectors, exact search with :func:`nudge_rag.search`). Bad inputs
(missing file, bad line, unknown doc id, wrong dimension, wrong metric, unreachable server,
unknown scheme) exit 2 with one line on stderr and leave the store as it was.

The questions are embedded by :class:`cli_lookup.LookupEmbeddings` (``--embed
cli_lookup:LookupEmbeddings``), which returns the task's query vectors, so no model is
downloaded.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_lookup import LookupEmbeddings

from nudge_rag import ArrayStore, Relevance, StoreTuner, backend_for, evaluate, search
from nudge_rag.cli import main
from nudge_rag.data import make_retrieval_task

HERE = Path(__file__).resolve().parent
K = 10
N_DOCS, DIM = 300, 16


# ---------------------------------------------------------------------------- the task
class Task:
    """A small generated retrieval task, written as pair files and a question lookup."""

    def __init__(self, folder: Path):
        data = make_retrieval_task(
            n_docs=N_DOCS, dim=DIM, n_train=240, n_dev=60, n_test=80, random_state=3
        )
        self.ids = [f"{i}" for i in range(N_DOCS)]  # integers: valid ids in every store
        docs = np.asarray(data.doc_embeddings, dtype=np.float32)
        self.docs = np.ascontiguousarray(docs / np.linalg.norm(docs, axis=1, keepdims=True))
        self.folder = folder
        self.files: dict[str, Path] = {}
        self.splits = {}
        texts, vectors = [], []
        for split in ("train", "dev", "test"):
            sp = data.split(split)
            rel = sp.relevance
            lines, questions, answers, grades = [], [], [], []
            for q in range(sp.n_queries):
                rows = rel.indices[rel.indptr[q] : rel.indptr[q + 1]].tolist()
                g = rel.grades[rel.indptr[q] : rel.indptr[q + 1]].tolist()
                text = f"{split} question {q}"
                questions.append(text)
                answers.append([self.ids[r] for r in rows])
                grades.append(g)
                lines.append(json.dumps({"question": text, "doc_ids": answers[-1], "grades": g}))
            path = folder / f"{split}.jsonl"
            path.write_text("\n".join(lines) + "\n")
            self.files[split] = path
            self.splits[split] = (questions, answers, grades, np.asarray(sp.query_embeddings))
            texts += questions
            vectors.append(np.asarray(sp.query_embeddings, dtype=np.float32))
        self.lookup = folder / "questions.npz"
        np.savez(self.lookup, texts=np.asarray(texts), vectors=np.concatenate(vectors))

    def pairs(self, split: str) -> list[tuple[str, str]]:
        questions, answers, _, _ = self.splits[split]
        return [(q, d) for q, ids in zip(questions, answers) for d in ids]

    def exact_scores(self, docs: np.ndarray, split: str = "test") -> dict[str, float]:
        """recall/nDCG/MRR@K with exact cosine search over ``docs`` (the Python API)."""
        questions, answers, grades, vectors = self.splits[split]
        rows = {d: i for i, d in enumerate(self.ids)}
        rel = Relevance.from_lists([[rows[d] for d in a] for a in answers], grades)
        _, top = search(vectors, docs, K, similarity="cosine")
        return evaluate(top, rel, K, metrics=("recall", "ndcg", "mrr"))


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Task:
    return Task(tmp_path_factory.mktemp("cli_task"))


def run_cli(task: Task, *args: str, pad: bool = False) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]
        ),
        "NUDGE_CLI_QUESTIONS": str(task.lookup),
        "NUDGE_CLI_PAD": "1" if pad else "0",
        "PYTHONWARNINGS": "ignore",
        "TQDM_DISABLE": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "nudge_rag.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def ok_json(res: subprocess.CompletedProcess) -> dict:
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


EMBED = ("--embed", "cli_lookup:LookupEmbeddings")


# ---------------------------------------------------------------------------- stores
def _kind(name: str):
    """The harness's store kind ``name`` (``tests/stores/test_<name>.py``)."""
    from stores.test_chroma import ChromaKind
    from stores.test_faiss import FaissKind
    from stores.test_lancedb import LanceDBKind
    from stores.test_milvus import MilvusKind
    from stores.test_pgvector import PgVectorKind
    from stores.test_qdrant import QdrantKind

    kinds = (ChromaKind, FaissKind, LanceDBKind, MilvusKind, PgVectorKind, QdrantKind)
    return {k.name: k for k in kinds}[name]()


class CliStore:
    """A harness store holding the task's documents, as the command line names it.

    Attributes:
        name: the store's spec name; ``config`` its index configuration.
        args: ``--store URI --collection NAME`` (and what else the store needs).
        collection: the collection the store holds the documents in.
        path: the store's folder or file (``None`` for a server).
        ids: the store's ids of ``task.ids`` (Qdrant's are UUIDs), in the task's order.
        files: the task's pair files, with the store's ids.
    """

    def __init__(self, name: str, config: str, task: Task, folder: Path, request):
        from stores.harness import Docs

        self.kind = _kind(name)
        self.kind.skip_if_missing()
        docs = Docs(
            list(task.ids),
            [f"text {i}" for i in task.ids],
            [{"n": int(i)} for i in task.ids],
            task.docs.copy(),
        )
        self.made = self.kind.make(folder, docs, config, request)
        self.made.docs = docs
        request.addfinalizer(self.made.close)
        if not self.kind.multi_process:
            self.made.close()  # the command line opens the store, in another process
        self.name, self.config, self.ids = name, config, docs.ids
        self.collection = self.made.collection
        self.args = ["--store", self.made.uri, "--collection", self.collection]
        self.args += list(self.made.cli_args)
        scheme, _, rest = self.made.uri.partition(":")
        self.path = None if "http" in scheme or "/" not in rest else Path(rest)
        self.files = task.files
        if self.ids != task.ids:  # pairs name the store's ids
            to_store = dict(zip(task.ids, self.ids))
            self.files = {}
            for split, path in task.files.items():
                lines = [json.loads(line) for line in path.read_text().splitlines()]
                for line in lines:
                    line["doc_ids"] = [to_store[i] for i in line["doc_ids"]]
                self.files[split] = folder / path.name
                self.files[split].write_text("\n".join(json.dumps(x) for x in lines) + "\n")

    def read(self, ids: list[str]) -> np.ndarray:
        """The stored vectors of ``ids`` (the task's ids), as a new process opens the store;
        their text must still be the task's."""
        rows = [int(i) for i in ids]
        store_ids = [self.ids[r] for r in rows]
        reopened = self.kind.reopen(self.made)
        try:
            vectors = backend_for(reopened.store).get_vectors(store_ids)
            for r, vector in list(zip(rows, vectors))[:3]:  # text kept through every write
                hit_id, text, _ = reopened.search(vector, 1)[0]
                assert hit_id == self.ids[r] and text in (None, f"text {r}")
        finally:
            if reopened is not self.made:
                reopened.close()
        return np.asarray(vectors, dtype=np.float32)

    @functools.cached_property
    def state(self) -> Path:
        """The state folder the command line uses by default."""
        from nudge_rag.backends._uri import open_store

        with open_store(self.made.uri, self.collection) as opened:
            return opened.backend.default_state_dir()


#: The stores of the command-line flow: (kind, configuration).
FLOW = [
    ("chroma", "hnsw"),
    ("chroma", "http"),
    ("qdrant", "local"),
    ("faiss", "flat"),
    ("milvus", "flat"),
    ("lancedb", "exact"),
    ("pgvector", "hnsw"),
]


@pytest.fixture
def store(request, task, tmp_path) -> CliStore:
    name, config = request.param
    return CliStore(name, config, task, tmp_path, request)


# ---------------------------------------------------------------------------- end to end
@pytest.mark.slow  # the whole command-line flow on each store: 15-57 s
@pytest.mark.parametrize("store", FLOW, indirect=True, ids=[f"{n}-{c}" for n, c in FLOW])
def test_tune_evaluate_status_restore_evaluate(task, store, tmp_path):
    files = store.files
    original = store.read(task.ids)
    np.testing.assert_allclose(original, task.docs, atol=1e-6)

    # the Python API on the same data: the same gamma, the same rows, the same vectors
    python = StoreTuner(ArrayStore(task.ids, task.docs), state_dir="memory")
    expected = python.tune(
        task.pairs("train"),
        task.pairs("dev"),
        embed=LookupEmbeddings(task.lookup, False).embed_documents,
    )
    tuned_docs = task.docs.copy()
    rows = [int(i) for i in expected.changed_ids]
    tuned_docs[rows] = expected.solver.changed_embeddings_

    report = ["--report", str(tmp_path / "report")] if store.config == "hnsw" else []
    tuned = ok_json(
        run_cli(
            task,
            "tune",
            *store.args,
            "--pairs",
            str(files["train"]),
            "--val-pairs",
            str(files["dev"]),
            "--test-pairs",
            str(files["test"]),
            *EMBED,
            "--json",
            *report,
        )
    )
    assert tuned["gamma"] == pytest.approx(expected.gamma, abs=1e-12)
    assert tuned["rows_moved"] == len(expected.changed_ids) > 0
    assert tuned["variant"] == "NUDGE-N" and tuned["dry_run"] is False
    now = store.read(task.ids)
    np.testing.assert_allclose(now, tuned_docs, atol=1e-5)  # exactly the Python API's vectors
    before = task.exact_scores(task.docs)
    after = task.exact_scores(tuned_docs)
    test = tuned["metrics"]["test"]
    for key in (f"recall@{K}", f"ndcg@{K}", f"mrr@{K}"):
        assert test["before"][key] == pytest.approx(before[key], abs=1e-9), key
        assert test["after"][key] == pytest.approx(after[key], abs=1e-9), key
    assert after[f"ndcg@{K}"] > before[f"ndcg@{K}"] + 0.02
    if report:  # the same numbers in report.json, and a picture
        data = json.loads(Path(report[1], "report.json").read_text())
        assert data["metrics"] == tuned["metrics"] and data["gamma"] == tuned["gamma"]
        assert Path(report[1], "report.png").stat().st_size > 20_000
        assert "nDCG@10 on the test questions" in Path(report[1], "report.md").read_text()

    evaluated = ok_json(
        run_cli(
            task,
            "evaluate",
            *_no_state(store.args),
            "--pairs",
            str(files["test"]),
            *EMBED,
            "--json",
        )
    )
    assert evaluated["n_queries"] == len(task.splits["test"][0])
    assert evaluated["graded"] is True
    for key in (f"recall@{K}", f"ndcg@{K}", f"mrr@{K}"):
        assert evaluated[key] == pytest.approx(after[key], abs=1e-9), key

    status = ok_json(run_cli(task, "status", *store.args, "--json"))
    assert status["tuned"] is True and status["pending"] is None
    assert "'nudge-rag restore' puts them back" in status["next_step"]  # shell words
    assert "restore()" not in status["next_step"]
    assert status["n_originals"] == len(expected.changed_ids)
    if store.name == "pgvector":  # originals in side tables of the same database
        assert "database" in status["state_dir"]
    else:
        assert Path(status["state_dir"], "originals.npz").is_file()
        assert status["variant"] == "NUDGE-N"
        assert status["gamma"] == pytest.approx(expected.gamma, abs=1e-12)
        assert status["rows_moved"] == len(expected.changed_ids)

    res = run_cli(task, "restore", *store.args, "--quiet")
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""  # --quiet
    np.testing.assert_allclose(store.read(task.ids), original, atol=1e-6)
    assert ok_json(run_cli(task, "status", *store.args, "--json"))["tuned"] is False

    back = ok_json(
        run_cli(
            task,
            "evaluate",
            *_no_state(store.args),
            "--pairs",
            str(files["test"]),
            *EMBED,
            "--json",
        )
    )
    # The vectors are back exactly (above). Chroma searches an HNSW graph that in-place
    # updates have reshaped, and under load a search has missed a row after restore (recall@10
    # 0.98 against 1.0 in 2 of many runs), so its scores are compared within 0.03.
    tol = 0.03 if store.name.startswith("chroma") else 1e-9
    for key in (f"recall@{K}", f"ndcg@{K}", f"mrr@{K}"):
        assert back[key] == pytest.approx(before[key], abs=tol), key


def _no_state(args: list[str]) -> list[str]:
    """``evaluate`` takes no --state-dir."""
    if "--state-dir" in args:
        i = args.index("--state-dir")
        return args[:i] + args[i + 2 :]
    return args


# ---------------------------------------------------------------------------- bad inputs
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bad_line_file(task: Task) -> Path:
    lines = task.files["train"].read_text().splitlines()
    lines[1] = '{"question": "broken", "doc_ids": ['
    path = task.folder / "bad_line.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _unknown_id_file(task: Task) -> Path:
    path = task.folder / "unknown.jsonl"
    path.write_text(
        task.files["train"].read_text()
        + json.dumps({"question": "train question 0", "doc_id": "no-such-doc"})
        + "\n"
    )
    return path


@pytest.mark.parametrize("store", [("chroma", "hnsw")], indirect=True, ids=["chroma"])
@pytest.mark.parametrize(
    "case",
    ["missing file", "bad line", "unknown doc id", "wrong dimension", "wrong metric", "bad scheme"],
)
def test_bad_input_exits_2_and_leaves_the_store_unchanged(task, store, case, capsys, monkeypatch):
    pairs = str(task.files["train"])
    extra: list[str] = []
    pad = False
    args = list(store.args)
    if case == "missing file":
        pairs, expect = str(task.folder / "nowhere.jsonl"), "nowhere.jsonl"
    elif case == "bad line":
        pairs, expect = str(_bad_line_file(task)), "bad_line.jsonl:2:"
    elif case == "unknown doc id":
        pairs, expect = str(_unknown_id_file(task)), "no-such-doc"
    elif case == "wrong dimension":
        pad, expect = True, f"the store holds {DIM}-dimensional vectors"
    elif case == "wrong metric":
        extra, expect = ["--variant", "m"], "dot product"
    else:
        args = ["--store", "nosuchstore:/x"]
        expect = "supported: chroma:DIR"
    command = ["tune", *args, "--pairs", pairs, *EMBED, *extra]
    if case == "wrong dimension":  # as a user runs it, in its own process
        res = run_cli(task, *command, pad=pad)
        status, err = res.returncode, res.stderr
    else:  # the same main(), in this process (faster)
        monkeypatch.setenv("NUDGE_CLI_QUESTIONS", str(task.lookup))
        status, err = main(command), capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nudge-rag: error: "), err
    assert expect in lines[0]
    assert "Traceback" not in err
    np.testing.assert_allclose(store.read(task.ids), task.docs, atol=1e-6)
    state = store.state
    assert not (state / "originals.npz").exists() and not (state / "pending.npz").exists()


@pytest.mark.parametrize("scheme", ["chroma+http", "qdrant+http", "postgresql"])
def test_unreachable_server_exits_2(task, scheme, tmp_path, capsys):
    import importlib.util

    if scheme.startswith("chroma"):
        pytest.importorskip("chromadb", reason="pip install 'nudge-rag[chroma]'")
    if scheme.startswith("qdrant"):
        pytest.importorskip("qdrant_client", reason="pip install 'nudge-rag[qdrant]'")
    if scheme == "postgresql":
        pytest.importorskip("psycopg", reason="pip install 'nudge-rag[postgres]'")
        if importlib.util.find_spec("nudge_rag.backends.pgvector") is None:
            pytest.skip("nudge_rag.backends.pgvector is not in this checkout")
    url = f"{scheme}://127.0.0.1:{_free_port()}"
    if scheme == "postgresql":
        url = f"postgresql://nobody@127.0.0.1:{_free_port()}/db"
    commands = [
        ["tune", "--store", url, "--pairs", str(task.files["train"]), *EMBED],
        ["evaluate", "--store", url, "--pairs", str(task.files["test"]), *EMBED],
        ["status", "--store", url],
    ]
    for n, command in enumerate(commands):
        if command[0] != "evaluate":
            command += ["--state-dir", str(tmp_path)]
        if scheme == "postgresql":
            command += ["--collection", "docs"]
        if n == 0:  # as a user runs it
            res = run_cli(task, *command)
            status, err = res.returncode, res.stderr
        else:
            status, err = main(command), capsys.readouterr().err
        assert status == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "cannot reach" in lines[0], err
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("store", [("chroma", "hnsw")], indirect=True, ids=["chroma"])
def test_dry_run_writes_nothing_and_says_what_would_change(task, store, tmp_path):
    report = tmp_path / "report"
    res = run_cli(
        task,
        "tune",
        *store.args,
        "--pairs",
        str(task.files["train"]),
        "--val-pairs",
        str(task.files["dev"]),
        *EMBED,
        "--dry-run",
        "--report",
        str(report),
        "--no-picture",
    )
    assert res.returncode == 0, res.stderr
    assert "dry run" in res.stdout and "would move" in res.stdout
    assert "nothing was written" in res.stdout
    np.testing.assert_allclose(store.read(task.ids), task.docs, atol=1e-6)
    assert not store.state.parent.exists()  # no state folder at all
    data = json.loads((report / "report.json").read_text())
    assert data["dry_run"] is True and data["rows_moved"] > 0
    assert "after" not in data["metrics"]["validation"]


@pytest.mark.slow  # several command-line runs: about 17 s
@pytest.mark.parametrize("store", [("chroma", "hnsw")], indirect=True, ids=["chroma"])
def test_pending_write_back_is_reported_refused_and_resumed(task, store):
    # an interrupted tune: originals saved, a plan of 3 batches pending, none written yet
    from nudge_rag._writeback import WriteBack

    ids = task.ids[:6]
    target = -task.docs[:6]
    wb = WriteBack(ArrayStore(task.ids, task.docs), store.state)
    wb._state.save_originals(ids, task.docs[:6])
    wb._state.save_pending("apply", ids, target, 2)

    status = ok_json(run_cli(task, "status", *store.args, "--json"))
    assert status["pending"] == {"kind": "apply", "n_ids": 6, "batches_done": 0, "n_batches": 3}
    assert "'nudge-rag resume' finishes it" in status["next_step"]
    assert "resume()" not in status["next_step"]
    res = run_cli(task, "tune", *store.args, "--pairs", str(task.files["train"]), *EMBED)
    assert res.returncode == 1  # not bad input: the store's state needs a decision
    assert "pending" in res.stderr and "nudge-rag resume" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    np.testing.assert_allclose(store.read(task.ids), task.docs, atol=1e-6)

    res = run_cli(task, "resume", *store.args)
    assert res.returncode == 0 and "finished" in res.stdout, res.stderr
    np.testing.assert_allclose(store.read(ids), target, atol=1e-6)
    res = run_cli(task, "restore", *store.args)
    assert res.returncode == 0 and "restored 6" in res.stdout, res.stderr
    np.testing.assert_allclose(store.read(task.ids), task.docs, atol=1e-6)
