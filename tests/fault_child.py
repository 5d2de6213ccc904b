"""Child process for ``test_faults.py``: tune a store and write it back, then die on cue.

Run as ``python tests/fault_child.py '<json args>'``. The parent creates and fills the store;
this script opens it as a new process does, through the harness's kind (``tests/stores``)
from its CLI ``uri`` and ``collection`` in the arguments: a Chroma or Qdrant store, a saved
FAISS folder (LangChain's, or LlamaIndex's persisted index), LangChain's ``PGVector``
collection (the pgvector ``"core"`` target is a plain table the core API opens by URL). It
runs the fit through the core API (``WriteBack`` + ``tune_store``), LangChain's
``NudgeRetriever`` or LlamaIndex's ``NudgeFinetuneEngine``, and SIGKILLs itself at the hook
named by ``args["kill"]``:

* ``{"at": "replace", "file": "originals.npz", "nth": 1, "when": "before"|"after"}``: inside
  ``atomic_save_npz`` (any ``os.replace`` onto that state file), before or after the rename;
  ``"progress.json"`` with ``nth = k + 1`` kills once batch ``k``'s progress is recorded.
* ``{"at": "after_set", "batch": k}``: after the k-th ``set_vectors`` returned (progress not
  yet recorded).
* ``{"at": "inside_set", "batch": k, "part": m}``: the k-th ``set_vectors`` writes its first
  ``m`` rows through the real store, then the process dies.
* ``None``: no hook (the parent may kill it at a random time; ``slow`` sleeps per batch).
* ``{"at": "pg_commit" | "pg_partial", ...}``: pgvector only (state in side tables, no
  files): before a transaction's COMMIT (``install_pg_hooks``).

With ``args["query"] = {"seconds": s, "k": k}`` it is a reader instead: it searches the store
through LangChain's wrapper for ``s`` seconds and prints what it got (``query_while``).

The same module builds the data and opens the stores for the parent (``open_target``), so the
parent and the child agree on ids, vectors and training queries.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
for extra in (
    TESTS,  # the store harness: tests/stores
    REPO / "integrations",
    TESTS / "integration_langchain",
    TESTS / "integration_llama_index",
):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

N_DOCS, DIM, GAMMA = 36, 8, 0.3
COLLECTION = "faults"


# ---------------------------------------------------------------------- data
def make_data(seed: int = 0, n_answered: int = 15, offset: int = 0) -> dict[str, Any]:
    """Unit-norm documents ``doc-0``.. and two training questions for each answered doc.

    With a fixed gamma, NUDGE-N moves exactly the answered documents
    (``doc-{offset}`` .. ``doc-{offset + n_answered - 1}``).
    """
    rng = np.random.default_rng(seed)
    docs = rng.standard_normal((N_DOCS, DIM)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    qrng = np.random.default_rng(seed + 1000)
    questions: dict[str, np.ndarray] = {}
    pairs = []
    for k in range(N_DOCS):  # every doc has questions; only the answered ones are used
        for j in range(2):
            q = docs[k] + 0.5 * qrng.standard_normal(DIM).astype(np.float32)
            text = f"what does document {k} say, part {j}?"
            questions[text] = (q / np.linalg.norm(q)).astype(np.float32)
            if offset <= k < offset + n_answered:
                pairs.append((text, k))
    return {"docs": docs, "questions": questions, "pairs": pairs}


def doc_ids(store: str) -> list[str]:
    """Store ids: ``doc-k`` for Chroma; a UUID per doc for Qdrant (point ids)."""
    names = [f"doc-{k}" for k in range(N_DOCS)]
    if store == "qdrant_local":
        return [str(uuid.uuid5(uuid.NAMESPACE_URL, n)) for n in names]
    return names


def train_pairs(args: dict[str, Any]) -> list[tuple[str, str]]:
    data = make_data(**args.get("data", {}))
    ids = doc_ids(args["store"])
    return [(text, ids[k]) for text, k in data["pairs"]]


# ---------------------------------------------------------------------- stores
def kind_of(store: str):
    """The harness's kind (``tests/stores``) of a target's store: how it is made, how exactly
    ``restore`` gives its vectors back, and how a new process opens it.

    Imported here, not at the top: the pgvector ``"core"`` child does without the harness
    (pytest and LangChain at start-up).
    """
    if store == "qdrant_local":
        from stores.test_qdrant import QdrantKind

        return QdrantKind()
    if store in ("chroma_persist", "chroma_http"):
        from stores.test_chroma import ChromaKind

        return ChromaKind()
    if store == "faiss_folder":
        from stores.test_faiss import FaissKind

        return FaissKind()
    if store == "pgvector":
        from stores.test_pgvector import PgVectorKind

        return PgVectorKind()
    msg = f"no harness kind for fault target {store!r}"
    raise ValueError(msg)


def open_made(args: dict[str, Any], framework: str = "langchain"):
    """The store of ``args`` (the CLI's ``uri`` and ``collection``) opened through its
    ``framework`` wrapper as a new process opens it, by its harness kind: LangChain's
    ``Chroma`` / ``QdrantVectorStore`` / ``FAISS`` / ``PGVector`` (which embeds the training
    questions) or LlamaIndex's ``ChromaVectorStore`` / ``QdrantVectorStore`` /
    ``FaissVectorStore`` (with its index). A :class:`stores.harness.Made`."""
    from langchain_helpers import LookupEmbeddings

    data = make_data(**args.get("data", {}))
    embeddings = LookupEmbeddings(data["questions"], default=np.ones(DIM) / DIM**0.5)
    return kind_of(args["store"]).open(args["uri"], args["collection"], embeddings, framework)


class Target:
    """The store opened for ``args``: ``resume()``, ``restore()``, ``fit()``, ``read()``.

    ``made`` is the store as the harness opens it in a new process (:func:`open_made`); the
    core API writes back through its backend (``backend_for``), LangChain's
    ``NudgeRetriever`` and LlamaIndex's ``NudgeFinetuneEngine`` through the wrapper itself
    (or :meth:`_engine_backend`, where a target gives them its own backend).
    """

    def __init__(self, args: dict[str, Any]):
        self.args = args
        self.framework = args.get("framework", "core")
        self.batch_size = int(args.get("batch_size", 3))
        self.made = None
        self._connect()
        self.obj = self._build()

    def _connect(self) -> None:
        """Open the store: LlamaIndex's wrapper for its engine, else LangChain's."""
        self.made = open_made(
            self.args, "llama-index" if self.framework == "llama" else "langchain"
        )

    def _backend(self):
        from nudge_rag.backends import backend_for

        return backend_for(self.made.store)

    def _engine_backend(self):
        """The backend the frameworks' engines write through (``None``: the one the registry
        finds for the wrapper)."""
        return None

    def _build(self):
        data = make_data(**self.args.get("data", {}))
        state_dir = self.args.get("state_dir")  # None: the store keeps its own (pgvector)
        if self.framework == "core":
            from nudge_rag import WriteBack

            return WriteBack(self._backend(), state_dir, batch_size=self.batch_size)
        backend = self._engine_backend()
        if self.framework == "langchain":
            from langchain_nudge import NudgeRetriever

            return NudgeRetriever(
                vectorstore=self.made.store,
                embedding_store=backend,
                k=5,
                state_dir=state_dir,
                solver_params={"gamma": GAMMA},
                batch_size=self.batch_size,
            )
        from llama_helpers import LookupEmbedding
        from llama_index_nudge import NudgeFinetuneEngine

        return NudgeFinetuneEngine(
            self.made.store if backend is None else backend,
            LookupEmbedding(data["questions"]),
            state_dir=state_dir,
            solver_params={"gamma": GAMMA},
            batch_size=self.batch_size,
        )

    @property
    def writeback(self):
        return self.obj if self.framework == "core" else self.obj.writeback

    @property
    def store(self):
        return self.writeback.store

    def fit(self, pairs: list[tuple[str, str]] | None = None):
        pairs = train_pairs(self.args) if pairs is None else pairs
        if self.framework == "langchain":
            return self.obj.fit(pairs).tune_result
        if self.framework == "llama":
            self.obj = self._engine(pairs)  # a new engine: pairs do not accumulate
            return self.obj.finetune()
        from nudge_rag import NudgeN, tune_store

        data = make_data(**self.args.get("data", {}))
        texts = [t for t, _ in pairs]
        emb = np.stack([data["questions"][t] for t in texts])
        return tune_store(self.obj, NudgeN(gamma=GAMMA), emb, [[i] for _, i in pairs])

    def _engine(self, pairs):
        from llama_index_nudge import NudgeFinetuneEngine

        old = self.obj
        return NudgeFinetuneEngine(
            old.store,
            old.embed_model,
            pairs,
            state_dir=old.state_dir,
            solver_params={"gamma": GAMMA},
            batch_size=self.batch_size,
        )

    def resume(self) -> bool:
        return self.obj.resume()

    def restore(self) -> int:
        return self.obj.restore()

    def read(self) -> tuple[list[str], np.ndarray]:
        """All ids (sorted) and their vectors."""
        ids = sorted(self.store.list_ids())
        return ids, self.store.get_vectors(ids)

    def close(self) -> None:
        if self.made is not None:
            self.made.close()
            self.made = None


def open_target(args: dict[str, Any]) -> Target:
    if args["store"] == "faiss_folder":
        return FaissTarget(args)
    if args["store"] == "pgvector":
        return PgTarget(args)
    return Target(args)


# ---------------------------------------------------------------------- FAISS (saved folder)
class FaissTarget(Target):
    """A saved FAISS folder (``faiss:PATH``) as the harness's FAISS kind opens it: LangChain's
    ``save_local`` folder, or LlamaIndex's persisted index for ``"llama"``. Every engine
    writes through to the folder (``folder=``): LlamaIndex's by node id (``for_index`` of the
    loaded index), not by the store's positions."""

    def _backend(self):
        from nudge_rag.backends import faiss as faiss_backend

        folder = self.made.uri.removeprefix("faiss:")
        if self.made.index is not None:
            return faiss_backend.for_index(self.made.index, folder=folder)
        return faiss_backend.from_langchain(
            self.made.store, folder=folder, index_name=self.made.collection
        )

    def _engine_backend(self):
        return self._backend()


# ---------------------------------------------------------------------- PostgreSQL + pgvector
PG_TABLE = "faults_docs"  # the plain table (``"core"``); LangChain's is its own


def pg_url_for(url: str, database: str) -> str:
    """The libpq URL ``url`` (``postgresql://user:pw@/db?host=...``) with another database."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def make_pg_database(url: str) -> None:
    """Make the plain table the core API tunes in the (empty) database at ``url``:
    ``faults_docs`` (``id`` text key, ``body``, ``meta`` jsonb, ``embedding vector(8)``) with
    ``make_data()``, text and metadata too, and an HNSW ``vector_cosine_ops`` index. (The
    LangChain ``PGVector`` collection ``faults`` beside it is the harness's pgvector kind.)

    Every connection is closed at the end, so the database can serve as a template.
    """
    import psycopg

    data = make_data()
    ids = doc_ids("pgvector")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(
            f"CREATE TABLE {PG_TABLE} (id text PRIMARY KEY, body text, meta jsonb, "
            f"embedding vector({DIM}))"
        )
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY {PG_TABLE} (id, body, meta, embedding) FROM STDIN") as copy,
        ):
            for k, (doc_id, vec) in enumerate(zip(ids, data["docs"])):
                copy.write_row((doc_id, f"document {k}", json.dumps({"i": k}), str(vec.tolist())))
        conn.execute(f"CREATE INDEX ON {PG_TABLE} USING hnsw (embedding vector_cosine_ops)")


def pg_text(args: dict[str, Any]) -> list[tuple[str, str, int]]:
    """``(id, text, metadata["i"])`` of every row of the target's table, sorted by id."""
    import psycopg

    if args.get("framework", "core") == "langchain":
        query = (
            "SELECT e.id::text, e.document, (e.cmetadata->>'i')::int FROM langchain_pg_embedding e "
            "JOIN langchain_pg_collection c ON c.uuid = e.collection_id WHERE c.name = %s"
        )
        params: tuple[Any, ...] = (COLLECTION,)
    else:
        query = f"SELECT id, body, (meta->>'i')::int FROM {PG_TABLE}"
        params = ()
    with psycopg.connect(args["uri"], autocommit=True) as conn:
        return sorted(conn.execute(query, params).fetchall())


class PgTarget(Target):
    """A pgvector table in the database ``args["uri"]``; the state in its side tables.

    ``"core"``: ``WriteBack`` over ``PgVectorBackend.from_url(uri, table="faults_docs")``
    (the core API on a plain table: no wrapper); ``"langchain"``: ``NudgeRetriever`` over
    LangChain's ``PGVector`` collection ``faults`` as the harness's pgvector kind opens it.
    """

    def _connect(self) -> None:
        """LangChain's wrapper; the core API connects through its backend."""
        if self.framework == "langchain":
            super()._connect()
        elif self.framework != "core":
            msg = f"pgvector fault targets are 'core' or 'langchain', got {self.framework!r}"
            raise ValueError(msg)

    def _build(self):
        if self.framework != "core":
            return super()._build()
        from nudge_rag import WriteBack
        from nudge_rag.backends.pgvector import PgVectorBackend

        store = PgVectorBackend.from_url(self.args["uri"], table=PG_TABLE)
        return WriteBack(store, batch_size=self.batch_size)

    def close(self) -> None:
        self.store.close()  # the backend's connection, then the wrapper's engine
        super().close()


# ---------------------------------------------------------------------- hooks
def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install_hooks(target: Target, kill: dict[str, Any] | None, slow: float) -> None:
    import nudge_rag._writeback as wbmod

    store = target.store
    real_set = store.set_vectors
    calls = {"set": 0}

    def set_vectors(ids, vectors):
        calls["set"] += 1
        if slow:
            time.sleep(slow)
        if kill and kill["at"] == "inside_set" and calls["set"] == kill["batch"]:
            part = int(kill["part"])
            real_set(list(ids)[:part], np.asarray(vectors)[:part])
            _die()
        real_set(ids, vectors)
        if kill and kill["at"] == "after_set" and calls["set"] == kill["batch"]:
            _die()

    store.set_vectors = set_vectors
    if kill and kill["at"] == "replace":
        real_replace = os.replace
        seen = {"n": 0}

        def replace(src, dst, *a, **kw):
            if Path(dst).name == kill["file"]:
                seen["n"] += 1
                if seen["n"] == kill.get("nth", 1):
                    if kill["when"] == "before":
                        assert Path(src).exists()  # the temp file is complete
                        _die()
                    real_replace(src, dst, *a, **kw)
                    _die()
            return real_replace(src, dst, *a, **kw)

        wbmod.os.replace = replace  # the os module itself: atomic_save_npz and progress


def install_pg_hooks(target: Target, kill: dict[str, Any] | None, slow: float) -> None:
    """Kill points of the pgvector target, whose state is in side tables (no files):

    * ``{"at": "pg_commit", "method": M, "nth": n}``: the n-th call of ``M`` (a method of the
      ``PgVectorState``: ``save_pending``, ``write_batch`` (batch n with its originals and
      progress), ``finish_apply``) has run every statement of its transaction, and the
      process dies before the COMMIT;
    * ``{"at": "pg_partial", "batch": k, "part": m}``: batch k's real transaction for its
      first ``m`` rows runs inside an open transaction, and the process dies before the COMMIT.

    ``slow`` sleeps before each batch (the write-back goes through ``write_batch``, not
    ``set_vectors``).
    """
    state = target.writeback._state
    if slow:
        real_batch = state.write_batch

        def slow_batch(*a, **kw):
            time.sleep(slow)
            return real_batch(*a, **kw)

        state.write_batch = slow_batch
    if not kill or not str(kill.get("at", "")).startswith("pg_"):
        return
    import psycopg

    store = target.store
    if kill["at"] == "pg_partial":
        real_write = state.write_batch
        seen = {"n": 0}

        def partial_batch(kind, done, ids, vectors):
            seen["n"] += 1
            if seen["n"] == int(kill["batch"]):
                part = int(kill["part"])
                with store._connection().transaction():
                    # a savepoint: part of the batch, its originals and progress
                    real_write(kind, done, list(ids)[:part], np.asarray(vectors)[:part])
                    _die()
            real_write(kind, done, ids, vectors)

        state.write_batch = partial_batch
        return
    method, nth = kill["method"], int(kill.get("nth", 1))
    owner = store if method == "set_vectors" else state
    real = getattr(owner, method)
    flags = {"calls": 0, "armed": False, "depth": 0}

    def wrapper(*a, **kw):
        flags["calls"] += 1
        hit = flags["calls"] == nth
        flags["armed"] = hit
        out = real(*a, **kw)
        if hit:
            _die()  # a method without a transaction of its own: once it returned
        return out

    setattr(owner, method, wrapper)
    real_transaction = psycopg.Connection.transaction

    @contextmanager
    def transaction(self, *a, **kw):
        flags["depth"] += 1
        try:
            with real_transaction(self, *a, **kw) as tx:
                yield tx
                if flags["armed"] and flags["depth"] == 1:
                    _die()  # every statement ran; the COMMIT has not been sent
        finally:
            flags["depth"] -= 1

    psycopg.Connection.transaction = transaction


def query_while(args: dict[str, Any], seconds: float, k: int) -> dict[str, Any]:
    """Search the store of ``args`` for random unit vectors through LangChain's wrapper (as
    :func:`open_made` opens it) for ``seconds``: ``n`` searches, ``bad`` (result counts under
    ``k``) and ``ids`` (every id returned). Prints ``ready`` after the first search."""
    made = open_made(args)
    rng = np.random.default_rng(3)
    n, bad, seen = 0, [], set()
    deadline = None
    try:
        while deadline is None or time.monotonic() < deadline:
            q = rng.standard_normal(DIM).astype(np.float32)
            ids = [doc_id for doc_id, _, _ in made.search(q / np.linalg.norm(q), k)]
            n += 1
            seen.update(ids)
            if len(ids) < k:
                bad.append(len(ids))
            if deadline is None:
                print("ready", flush=True)
                deadline = time.monotonic() + seconds
    finally:
        made.close()
    return {"n": n, "bad": bad, "ids": sorted(seen)}


def main(argv: list[str]) -> int:
    args = json.loads(argv[1])
    if "query" in args:  # a reader process: {"query": {"seconds": s, "k": k}, ...}
        print(json.dumps(query_while(args, **args["query"])), flush=True)
        return 0
    target = open_target(args)
    install_hooks(target, args.get("kill"), float(args.get("slow", 0.0)))
    if args["store"] == "pgvector":
        install_pg_hooks(target, args.get("kill"), float(args.get("slow", 0.0)))
    print("ready", flush=True)
    target.fit()
    target.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
