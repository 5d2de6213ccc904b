"""The command line on real stores, run as a user runs it (one process per command).

Per store kind: ``tune -> evaluate -> status -> restore -> evaluate``, with the numbers
checked against the Python API on the same data (:class:`nudge_rag.StoreTuner` over an
in-memory copy of the vectors, exact search with :func:`nudge_rag.search`). Bad inputs
(missing file, bad line, unknown doc id, wrong dimension, wrong metric, unreachable server,
unknown scheme) exit 2 with one line on stderr and leave the store as it was.

The questions are embedded by :class:`LookupEmbeddings` below (a LangChain-style
``Embeddings`` given as ``--embed test_cli_stores:LookupEmbeddings``) that returns the
task's query vectors, so no model is downloaded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nudge_rag import ArrayStore, Relevance, StoreTuner, evaluate, search
from nudge_rag.cli import main
from nudge_rag.data import make_retrieval_task

HERE = Path(__file__).resolve().parent
K = 10
N_DOCS, DIM = 300, 16


class LookupEmbeddings:
    """LangChain-style embeddings that look each question up in ``$NUDGE_CLI_QUESTIONS``.

    ``$NUDGE_CLI_PAD=1`` appends a zero (a model of the wrong dimension).
    """

    def __init__(self, path: str | None = None, pad: bool | None = None) -> None:
        data = np.load(path or os.environ["NUDGE_CLI_QUESTIONS"])
        self.vectors = dict(zip(data["texts"].tolist(), data["vectors"]))
        self.pad = os.environ.get("NUDGE_CLI_PAD") == "1" if pad is None else pad

    def embed_query(self, text: str) -> list[float]:
        vector = self.vectors[text]
        return [*vector.tolist(), 0.0] if self.pad else vector.tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]


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


EMBED = ("--embed", "test_cli_stores:LookupEmbeddings")


# ---------------------------------------------------------------------------- stores
class StoreKind:
    """Builds one store kind from the task and reads its vectors back (fresh client)."""

    name = ""

    def build(self, task: Task, folder: Path) -> list[str]:  # returns --store/--collection args
        raise NotImplementedError

    def read(self, ids: list[str]) -> np.ndarray:
        raise NotImplementedError


class ChromaDir(StoreKind):
    name = "chroma"

    def build(self, task, folder):
        import chromadb

        self.path = folder / "chroma"
        client = chromadb.PersistentClient(path=str(self.path))
        col = client.create_collection(
            "docs", configuration={"hnsw": {"space": "cosine", "ef_search": 400}}
        )
        col.add(
            ids=task.ids,
            embeddings=task.docs,
            documents=[f"text {i}" for i in task.ids],
            metadatas=[{"n": int(i)} for i in task.ids],
        )
        self._drop()
        return ["--store", f"chroma:{self.path}", "--collection", "docs"]

    @staticmethod
    def _drop():
        from chromadb.api.shared_system_client import SharedSystemClient

        SharedSystemClient.clear_system_cache()  # the next client reads the folder afresh

    def _collection(self):
        import chromadb

        self._drop()
        return chromadb.PersistentClient(path=str(self.path)).get_collection("docs")

    def read(self, ids):
        got = self._collection().get(ids=ids, include=["embeddings", "documents", "metadatas"])
        by_id = dict(zip(got["ids"], got["embeddings"]))
        docs = dict(zip(got["ids"], got["documents"]))
        assert all(docs[i] == f"text {i}" for i in ids)  # text kept through tune and restore
        self._drop()
        return np.asarray([by_id[i] for i in ids], dtype=np.float32)


class ChromaHttp(ChromaDir):
    name = "chroma-http"

    def __init__(self, server):
        self.server = server

    def build(self, task, folder):
        client = self.server.client()
        self.collection = f"docs_{folder.name}"[:60]
        col = client.create_collection(
            self.collection, configuration={"hnsw": {"space": "cosine", "ef_search": 400}}
        )
        col.add(ids=task.ids, embeddings=task.docs, documents=[f"text {i}" for i in task.ids])
        self.state = folder / "state"
        url = f"chroma+http://{self.server.host}:{self.server.port}"
        return ["--store", url, "--collection", self.collection, "--state-dir", str(self.state)]

    def _collection(self):
        return self.server.client().get_collection(self.collection)

    def read(self, ids):
        got = self._collection().get(ids=ids, include=["embeddings", "documents"])
        by_id = dict(zip(got["ids"], got["embeddings"]))
        assert dict(zip(got["ids"], got["documents"]))[ids[0]] == f"text {ids[0]}"
        return np.asarray([by_id[i] for i in ids], dtype=np.float32)


class QdrantDir(StoreKind):
    name = "qdrant"

    def build(self, task, folder):
        from qdrant_client import QdrantClient, models

        self.path = folder / "qdrant"
        client = QdrantClient(path=str(self.path))
        client.create_collection(
            "docs", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
        )
        client.upsert(
            "docs",
            points=[
                models.PointStruct(id=int(i), vector=v.tolist(), payload={"text": f"text {i}"})
                for i, v in zip(task.ids, task.docs)
            ],
        )
        client.close()
        return ["--store", f"qdrant:{self.path}", "--collection", "docs"]

    def read(self, ids):
        from qdrant_client import QdrantClient

        client = QdrantClient(path=str(self.path))
        try:
            points = client.retrieve("docs", ids=[int(i) for i in ids], with_vectors=True)
        finally:
            client.close()
        by_id = {str(p.id): p for p in points}
        assert by_id[ids[0]].payload == {"text": f"text {ids[0]}"}
        return np.asarray([by_id[i].vector for i in ids], dtype=np.float32)


class FaissDir(StoreKind):
    """A LangChain ``FAISS.save_local`` folder (inner product over unit vectors: cosine)."""

    name = "faiss"

    def build(self, task, folder):
        from langchain_community.vectorstores import FAISS
        from langchain_community.vectorstores.utils import DistanceStrategy

        self.path = folder / "faiss"
        store = FAISS.from_embeddings(
            list(zip([f"text {i}" for i in task.ids], task.docs.tolist())),
            LookupEmbeddings(task.lookup, False),
            ids=task.ids,
            distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT,
        )
        store.save_local(str(self.path))
        return ["--store", f"faiss:{self.path}", "--trust-pickle"]

    def read(self, ids):
        from langchain_community.vectorstores import FAISS

        store = FAISS.load_local(
            str(self.path),
            LookupEmbeddings(self.lookup, False),
            allow_dangerous_deserialization=True,
        )
        rows = {d: r for r, d in store.index_to_docstore_id.items()}
        assert store.docstore.search(ids[0]).page_content == f"text {ids[0]}"
        return np.stack([store.index.reconstruct(rows[i]) for i in ids])


class MilvusFile(StoreKind):
    name = "milvus"

    def build(self, task, folder):
        from pymilvus import DataType, MilvusClient

        self.path = folder / "milvus.db"
        client = MilvusClient(uri=str(self.path), db_name="default")
        schema = client.create_schema(auto_id=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=32)
        schema.add_field("text", DataType.VARCHAR, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
        params = client.prepare_index_params()
        params.add_index("vector", index_type="FLAT", metric_type="COSINE")
        client.create_collection("docs", schema=schema, index_params=params)
        rows = [{"pk": i, "text": f"text {i}", "vector": v} for i, v in zip(task.ids, task.docs)]
        client.insert("docs", rows)
        client.flush("docs")
        self._release(client)
        return ["--store", f"milvus:{self.path}", "--collection", "docs"]

    def _release(self, client):
        from milvus_lite.server_manager import server_manager_instance

        client.close()
        server_manager_instance.release_server(str(self.path))  # its lock, for the CLI

    def read(self, ids):
        from pymilvus import MilvusClient

        client = MilvusClient(uri=str(self.path), db_name="default")
        try:
            client.load_collection("docs")
            got = client.get("docs", ids=ids, output_fields=["vector", "text"])
        finally:
            self._release(client)
        by_id = {r["pk"]: r for r in got}
        assert by_id[ids[0]]["text"] == f"text {ids[0]}"
        return np.asarray([by_id[i]["vector"] for i in ids], dtype=np.float32)


class LanceDir(StoreKind):
    name = "lancedb"

    def build(self, task, folder):
        import lancedb
        import pyarrow as pa

        self.path = folder / "lance"
        data = pa.table(
            {
                "id": task.ids,
                "text": [f"text {i}" for i in task.ids],
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(task.docs.ravel()), DIM),
            }
        )
        lancedb.connect(self.path).create_table("docs", data=data)
        return ["--store", f"lancedb:{self.path}", "--collection", "docs"]

    def read(self, ids):
        import lancedb

        table = lancedb.connect(self.path).open_table("docs").to_arrow().to_pydict()
        by_id = dict(zip(table["id"], table["vector"]))
        assert dict(zip(table["id"], table["text"]))[ids[0]] == f"text {ids[0]}"
        return np.asarray([by_id[i] for i in ids], dtype=np.float32)


class PgTable(StoreKind):
    """A plain pgvector table with an HNSW cosine index (the metric is read from it)."""

    name = "pgvector"

    def __init__(self, server):
        self.server = server

    def build(self, task, folder):
        import psycopg

        self.table = f"docs_{folder.name}".replace("-", "_")[:50].lower()
        with psycopg.connect(self.server.url, autocommit=True) as conn:
            conn.execute(
                f"CREATE TABLE {self.table} (id text PRIMARY KEY, text text, "
                f"embedding vector({DIM}))"
            )
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {self.table} VALUES (%s, %s, %s::vector)",
                    [(i, f"text {i}", str(v.tolist())) for i, v in zip(task.ids, task.docs)],
                )
            conn.execute(
                f"CREATE INDEX ON {self.table} USING hnsw (embedding vector_cosine_ops) "
                "WITH (m = 16, ef_construction = 200)"
            )
        return ["--store", self.server.url, "--collection", self.table]

    def read(self, ids):
        import psycopg

        with psycopg.connect(self.server.url) as conn:
            rows = conn.execute(
                f"SELECT id, text, embedding::text FROM {self.table} WHERE id = ANY(%s)", (ids,)
            ).fetchall()
        by_id = {r[0]: json.loads(r[2]) for r in rows}
        assert {r[0]: r[1] for r in rows}[ids[0]] == f"text {ids[0]}"
        return np.asarray([by_id[i] for i in ids], dtype=np.float32)


def _kinds():
    return ["chroma", "chroma-http", "qdrant", "faiss", "milvus", "lancedb", "pgvector"]


# kind -> (modules it needs, the extra that installs them)
_NEEDS = {
    "chroma": (("chromadb",), "chroma"),
    "chroma-http": (("chromadb",), "chroma"),
    "qdrant": (("qdrant_client",), "qdrant"),
    "faiss": (("faiss", "langchain_community"), "faiss"),
    "milvus": (("pymilvus", "milvus_lite"), "milvus"),
    "lancedb": (("lancedb",), "lancedb"),
    "pgvector": (("psycopg",), "postgres"),
}
_BACKEND = {"faiss": "faiss", "milvus": "milvus", "lancedb": "lancedb", "pgvector": "pgvector"}


@pytest.fixture
def store(request, task, tmp_path):
    import importlib.util

    kind = request.param
    modules, extra = _NEEDS[kind]
    for module in modules:
        pytest.importorskip(module, reason=f"pip install 'nudge-rag[{extra}]'")
    if (
        kind in _BACKEND
        and importlib.util.find_spec(f"nudge_rag.backends.{_BACKEND[kind]}") is None
    ):
        pytest.skip(f"nudge_rag.backends.{_BACKEND[kind]} is not in this checkout")
    made = {
        "chroma": ChromaDir,
        "qdrant": QdrantDir,
        "faiss": FaissDir,
        "milvus": MilvusFile,
        "lancedb": LanceDir,
    }.get(kind)
    if kind == "chroma-http":
        made = ChromaHttp(request.getfixturevalue("chroma_server"))
    elif kind == "pgvector":
        made = PgTable(request.getfixturevalue("pg_server"))
    else:
        made = made()
    made.lookup = task.lookup
    made.args = made.build(task, tmp_path)
    return made


# ---------------------------------------------------------------------------- end to end
@pytest.mark.slow  # the whole command-line flow on each store: 15-57 s
@pytest.mark.parametrize("store", _kinds(), indirect=True)
def test_tune_evaluate_status_restore_evaluate(task, store):
    files = task.files
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

    report = ["--report", str(store.path.parent / "report")] if store.name == "chroma" else []
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


@pytest.mark.parametrize("store", ["chroma"], indirect=True)
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
    state = store.path / "nudge_state" / "docs"
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


@pytest.mark.parametrize("store", ["chroma"], indirect=True)
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
    assert not (store.path / "nudge_state").exists()
    data = json.loads((report / "report.json").read_text())
    assert data["dry_run"] is True and data["rows_moved"] > 0
    assert "after" not in data["metrics"]["validation"]


@pytest.mark.slow  # several command-line runs: about 17 s
@pytest.mark.parametrize("store", ["chroma"], indirect=True)
def test_pending_write_back_is_reported_refused_and_resumed(task, store):
    # an interrupted tune: originals saved, a plan of 3 batches pending, none written yet
    from nudge_rag._writeback import WriteBack

    ids = task.ids[:6]
    target = -task.docs[:6]
    wb = WriteBack(ArrayStore(task.ids, task.docs), store.path / "nudge_state" / "docs")
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
