"""``tune_store`` at scale in the stores RAG developers run: one function per store.

A generated unit-norm corpus (``write_memmap_corpus``, ``--docs`` rows of ``--dim``) goes into
the store once per size (filled in the parent, timed); queries come from ``make_scale_task``
with ``--answered`` answer documents (the same number at every size, with ``0.7 x`` as many
training and ``0.1 x`` as many validation queries, the ratios of ``store_modes.py``). Each
(store, size, mode) then runs in a fresh child process: it opens the store, builds the query
lists, resets the peak RSS (``/proc/self/clear_refs``) and runs ``tune_store`` in read mode
(every stored vector read) or store mode (answer documents read, the store's kNN for the
rest). Reported: ``tune_store`` wall time, vectors read through ``get_vectors`` (originals
saved by the write-back excluded), "held" (RSS before the reset: the store itself and the
queries), "added" (peak RSS during ``tune_store`` minus held: what nudge-rag costs on top),
and the write-back rate (rows moved / seconds of the write stage). The write-back is undone
(``restore``) after each measurement.

Stores (``--store``, comma-separated):

* ``faiss``: an exact ``IndexFlatIP`` saved in ``<dir>/faiss_<docs>x<dim>/index.faiss`` and
  loaded with ``faiss.read_index``, tuned through ``FaissBackend`` in write-through mode
  (``folder=``: each batch written into the saved file and flushed).

    python benchmarks/store_scale.py --store faiss --docs 200000,1000000 --dim 384

* ``milvus``: a Milvus Lite file ``<dir>/milvus_<docs>x<dim>/store.db`` with an exact ``FLAT``
  COSINE collection, tuned through ``MilvusBackend.from_uri`` (whole-row upserts, a flush
  per batch). Milvus Lite 3.2.2 serves the file from inside the Python process (its gRPC
  server logs there), so held/added include the Milvus Lite engine's own memory.

    python benchmarks/store_scale.py --store milvus --docs 200000 --dim 384

* ``pgvector``: PostgreSQL 16 + pgvector from the ``pgserver`` wheel, started by this script
  in a temporary folder under ``--dir`` and stopped (and deleted) at the end; a plain table
  ``pgvector_<docs>x<dim> (id text PRIMARY KEY, text text, embedding vector(dim))`` per size,
  filled with one binary ``COPY`` (then ``VACUUM ANALYZE``), no ANN index: the store mode's
  kNN is an exact sequential scan. Tuned through ``PgVectorBackend.from_url(...,
  distance="cosine")``, with the write-back state (originals, plan) in side tables of the
  same database, as the backend keeps it by default. The server runs in its own processes,
  so held/added are the Python process only (the server's memory is not counted).

    python benchmarks/store_scale.py --store pgvector --docs 50000,200000 --dim 384

* ``pgvector-hnsw``: the same table with an HNSW ``vector_cosine_ops`` index at pgvector's
  defaults (built once after the fill; its time is in the fill column). Store mode asks the
  index for each validation query's nearest rows (approximate); read mode reads every vector
  (exact), so the two rows compare the chosen gamma and validation score against exact. The
  write stage includes the ``VACUUM (ANALYZE)`` the backend runs after the last batch.

    python benchmarks/store_scale.py --store pgvector-hnsw --docs 200000 --dim 384
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_modes import load_avg, reset_peak, rss  # noqa: E402

MIB = 2**20


def query_counts(n_answered: int) -> tuple[int, int]:
    """Training and validation queries for ``n_answered`` answer documents."""
    return max(10, round(0.7 * n_answered)), max(5, round(0.1 * n_answered))


def counting(store_cls):
    """A subclass of ``store_cls`` that counts the vectors read through ``get_vectors``."""

    class Counting(store_cls):
        vectors_read = 0

        def get_vectors(self, ids):
            ids = list(ids)
            self.vectors_read += len(ids)
            return super().get_vectors(ids)

    return Counting


def answer_ids(split) -> list[list[str]]:
    """Answer ids per query: the stored row as text (the store's own ids)."""
    rel = split.relevance
    ind, ptr = rel.indices.tolist(), rel.indptr.tolist()
    return [[str(j) for j in ind[ptr[q] : ptr[q + 1]]] for q in range(len(ptr) - 1)]


def measure(store, args, queries: tuple, *, state_in_store: bool = False) -> dict:
    """Reset the peak RSS, run ``tune_store`` on ``store``, restore; the numbers.

    The write-back state goes to a folder under ``--dir``, or, with ``state_in_store``, where
    the store keeps it itself (``WriteBack`` without ``state_dir``: PostgreSQL's side tables).
    """
    from nudge_rag import NudgeN, WriteBack, tune_store

    train_emb, train_ids, val_emb, val_ids = queries
    state = None if state_in_store else Path(args.dir) / f"state_{args.store}_{args.mode}"
    wb = WriteBack(store, state, batch_size=args.batch)
    held = reset_peak()
    t = time.perf_counter()
    res = tune_store(wb, NudgeN(), train_emb, train_ids, val_emb, val_ids, passive=args.mode)
    wall = time.perf_counter() - t
    peak = rss("VmHWM")
    wb.restore()  # not measured: the next run starts from the originals
    write_s = res.timings.get("write", 0.0)
    return {
        "tune_s": wall,
        "read_s": res.timings.get("read", 0.0),
        "solve_s": res.timings.get("solve", 0.0),
        "write_s": write_s,
        "changed": len(res.changed_ids),
        "rows_per_s": len(res.changed_ids) / write_s if write_s else 0.0,
        "vectors_read": store.vectors_read - len(res.changed_ids),  # minus originals saved
        "gamma": res.gamma,
        "val_score": res.val_score,
        "held": held,
        "peak": peak,
    }


# ------------------------------------------------------------------ FAISS
def faiss_fill(corpus: Path, folder: Path) -> float:
    """Save an ``IndexFlatIP`` of the corpus in ``folder`` once; seconds it took (0 if there)."""
    import faiss
    import numpy as np

    if (folder / "index.faiss").exists():
        return 0.0
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    emb = np.load(corpus, mmap_mode="r")
    index = faiss.IndexFlatIP(emb.shape[1])
    for s in range(0, emb.shape[0], 65536):
        index.add(np.ascontiguousarray(emb[s : s + 65536], dtype=np.float32))
    faiss.write_index(index, str(folder / "tmp.faiss"))
    (folder / "tmp.faiss").rename(folder / "index.faiss")
    return time.perf_counter() - t


def faiss_child(args, queries: tuple) -> dict:
    """Load the saved index, tune it through the write-through backend."""
    import faiss

    from nudge_rag.backends import FaissBackend

    folder = Path(args.store_path)
    t = time.perf_counter()
    index = faiss.read_index(str(folder / "index.faiss"))
    store = counting(FaissBackend)(index, folder=folder)
    open_s = time.perf_counter() - t
    return {**measure(store, args, queries), "open_s": open_s, "count": store.count()}


# ------------------------------------------------------------------ Milvus Lite
def milvus_fill(corpus: Path, folder: Path) -> float:
    """A Milvus Lite file ``<folder>/store.db`` with a FLAT COSINE collection, filled once.

    Ids are the row numbers as text (VARCHAR primary key), inserted 10,000 rows a call.
    """
    import numpy as np
    from pymilvus import DataType, MilvusClient

    db = folder / "store.db"
    if (folder / "filled").exists():
        return 0.0
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    emb = np.load(corpus, mmap_mode="r")
    client = MilvusClient(uri=str(db), db_name="default")
    if client.has_collection("docs"):
        client.drop_collection("docs")
    schema = client.create_schema(auto_id=False)
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=16)
    schema.add_field("text", DataType.VARCHAR, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=emb.shape[1])
    params = client.prepare_index_params()
    params.add_index("vector", index_type="FLAT", metric_type="COSINE")
    client.create_collection("docs", schema=schema, index_params=params)
    for s in range(0, emb.shape[0], 10_000):
        block = np.asarray(emb[s : s + 10_000], dtype=np.float32)
        rows = [
            {"pk": str(s + k), "text": f"doc {s + k}", "vector": v} for k, v in enumerate(block)
        ]
        client.insert("docs", rows)
    client.flush("docs")
    client.close()
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(str(db))  # the child opens the file next
    (folder / "filled").touch()
    return time.perf_counter() - t


def milvus_child(args, queries: tuple) -> dict:
    """Open the Milvus Lite file, tune it through ``MilvusBackend`` (whole-row upserts, flush).

    Milvus Lite runs inside this process: the RSS numbers include its engine.
    """
    from nudge_rag.backends import MilvusBackend

    t = time.perf_counter()
    store = counting(MilvusBackend).from_uri(Path(args.store_path) / "store.db", "docs")
    open_s = time.perf_counter() - t
    out = {**measure(store, args, queries), "open_s": open_s, "count": store.count()}
    store.client.close()
    return out


# ------------------------------------------------------------------ PostgreSQL + pgvector
_PG: dict = {}  # this run's one server: started by the first fill, stopped by pgvector_stop
PG_COPY_ROWS = 10_000


def pgvector_server(work: Path) -> str:
    """Start PostgreSQL (pgserver) in a new temporary folder under ``work`` once; its URL."""
    if "url" not in _PG:
        import warnings

        import psycopg

        with warnings.catch_warnings():  # platformdirs: XDG_RUNTIME_DIR is not set
            warnings.simplefilter("ignore")
            import pgserver

        data = Path(tempfile.mkdtemp(prefix="pgserver_", dir=work))
        _PG["server"] = pgserver.get_server(data, cleanup_mode="delete")
        _PG["url"] = _PG["server"].get_uri()
        with psycopg.connect(_PG["url"], autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return _PG["url"]


def pgvector_stop() -> None:
    """Stop this run's server and delete its folder (if one was started)."""
    server = _PG.pop("server", None)
    _PG.pop("url", None)
    if server is not None:
        server.cleanup()


def _copy_block(start: int, block) -> bytes:
    """Rows ``(id, text, embedding)`` in PostgreSQL's binary COPY format.

    Each row: a field count, then per field a length and the bytes; a ``vector`` is pgvector's
    binary form (int16 dim, int16 0, big-endian float32s), built for the whole block at once.
    """
    from nudge_rag.backends.pgvector import vector_fields

    n, dim = block.shape
    vec_bytes, width = vector_fields(block).tobytes(), 4 * (dim + 2)
    parts = []
    for k in range(n):
        doc_id = str(start + k).encode()
        text = f"doc {start + k}".encode()
        parts.append(
            struct.pack(">hi", 3, len(doc_id))
            + doc_id
            + struct.pack(">i", len(text))
            + text
            + vec_bytes[k * width : (k + 1) * width]
        )
    return b"".join(parts)


def pgvector_fill(corpus: Path, folder: Path) -> float:
    """A table of the corpus on this run's server (one binary COPY); seconds it took.

    Ids are the row numbers as text (the primary key); no vector index (exact search).
    ``<folder>/store.json`` tells the child processes the URL and the table.
    """
    import numpy as np
    import psycopg

    url = pgvector_server(folder.parent)
    table = folder.name.replace("-", "_")
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    emb = np.load(corpus, mmap_mode="r")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(
            f"CREATE TABLE {table} (id text PRIMARY KEY, text text, "
            f"embedding vector({emb.shape[1]}))"
        )
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY {table} (id, text, embedding) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
            for s in range(0, emb.shape[0], PG_COPY_ROWS):
                copy.write(_copy_block(s, np.asarray(emb[s : s + PG_COPY_ROWS])))
            copy.write(struct.pack(">h", -1))
        conn.execute(f"VACUUM ANALYZE {table}")
    (folder / "store.json").write_text(json.dumps({"url": url, "table": table}))
    return time.perf_counter() - t


def pgvector_hnsw_fill(corpus: Path, folder: Path) -> float:
    """:func:`pgvector_fill`, then an HNSW cosine index at pgvector's defaults; seconds in all.

    ``maintenance_work_mem`` is raised to 2 GB for the build (pgvector's advice: a graph that
    does not fit builds far slower); ``m`` = 16, ``ef_construction`` = 64; searches use the
    default ``hnsw.ef_search`` = 40 (raised to ``k`` where ``k`` is larger).
    """
    import psycopg

    fill_s = pgvector_fill(corpus, folder)
    info = json.loads((folder / "store.json").read_text())
    t = time.perf_counter()
    with psycopg.connect(info["url"], autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '2GB'")
        conn.execute(f"CREATE INDEX ON {info['table']} USING hnsw (embedding vector_cosine_ops)")
    build_s = time.perf_counter() - t
    print(f"  HNSW index on {info['table']}: {build_s:.0f} s", file=sys.stderr)
    return fill_s + build_s


def pgvector_child(args, queries: tuple) -> dict:
    """Open the table through ``PgVectorBackend.from_url``; write-back state in the database."""
    from nudge_rag.backends import PgVectorBackend

    info = json.loads((Path(args.store_path) / "store.json").read_text())
    t = time.perf_counter()
    store = counting(PgVectorBackend).from_url(info["url"], table=info["table"], distance="cosine")
    open_s = time.perf_counter() - t
    out = {
        **measure(store, args, queries, state_in_store=True),
        "open_s": open_s,
        "count": store.count(),
    }
    store.close()
    return out


STORES = {
    # name: (fill(corpus, folder) -> seconds, child(args, queries) -> numbers, label)
    "faiss": (faiss_fill, faiss_child, "FAISS IndexFlatIP (write-through)"),
    "milvus": (milvus_fill, milvus_child, "Milvus Lite FLAT COSINE (whole-row upsert + flush)"),
    "pgvector": (
        pgvector_fill,
        pgvector_child,
        "PostgreSQL + pgvector, no index, cosine (UPDATE per batch)",
    ),
    "pgvector-hnsw": (
        pgvector_hnsw_fill,
        pgvector_child,
        "PostgreSQL + pgvector, HNSW cosine (defaults), VACUUM after the write-back",
    ),
}


# ------------------------------------------------------------------ driver
def child(args) -> None:
    import gc

    import numpy as np

    from nudge_rag.data import make_scale_task

    n_train, n_val = query_counts(args.answered)
    data = make_scale_task(
        args.corpus, n_train=n_train, n_dev=n_val, n_test=1, n_answered_docs=args.answered
    )
    queries = (
        np.array(data.train.query_embeddings, dtype=np.float32),
        answer_ids(data.train),
        np.array(data.dev.query_embeddings, dtype=np.float32),
        answer_ids(data.dev),
    )
    del data  # the generator's memmap pages of the corpus are not the store's
    gc.collect()
    print(json.dumps(STORES[args.store][1](args, queries)))


def run_sizes(args, work: Path) -> int:
    """Fill each store at each size and measure every mode in a child; print the rows."""
    from nudge_rag.data import write_memmap_corpus

    for n in [int(x) for x in args.docs.split(",")]:
        corpus = work / f"corpus_{n}x{args.dim}.npy"
        if not corpus.exists():
            t = time.perf_counter()
            write_memmap_corpus(corpus, n, args.dim, 0)
            print(f"generated {corpus} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        for name in args.store.split(","):
            fill, _, label = STORES[name]
            folder = work / f"{name}_{n}x{args.dim}"
            fill_s = fill(corpus, folder)
            for mode in args.modes.split(","):
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    "--store",
                    name,
                    "--mode",
                    mode,
                    "--corpus",
                    str(corpus),
                    "--store-path",
                    str(folder),
                    "--answered",
                    str(args.answered),
                    "--batch",
                    str(args.batch),
                    "--dir",
                    str(work),
                ]
                t = time.perf_counter()
                res = subprocess.run(
                    cmd, capture_output=True, text=True, check=False, timeout=args.timeout
                )
                if res.returncode != 0:
                    print(res.stderr[-3000:], file=sys.stderr)
                    return res.returncode
                r = json.loads(res.stdout.strip().splitlines()[-1])
                print(
                    f"| {label} | {n} | {fill_s:.1f} | {mode} | {r['tune_s']:.1f} | "
                    f"{r['read_s']:.1f} / {r['solve_s']:.1f} / {r['write_s']:.1f} | "
                    f"{r['vectors_read']} / {r['count']} | {r['changed']} | "
                    f"{r['rows_per_s']:.0f} | {r['held'] / MIB:.0f} | "
                    f"{(r['peak'] - r['held']) / MIB:.0f} | {r['gamma']:.4g} | "
                    f"{r['val_score']:.4f} |",
                    flush=True,
                )
                print(
                    f"  child {name}/{n}/{mode}: {time.perf_counter() - t:.0f} s in all, "
                    f"load {load_avg()}",
                    file=sys.stderr,
                )
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--store", default="faiss", help=f"comma-separated: {','.join(STORES)}")
    p.add_argument("--docs", default="200000", help="comma-separated corpus sizes")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--answered", type=int, default=20_000)
    p.add_argument("--modes", default="read,store")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--dir", default="/tmp/nudge-rag-store-scale")
    p.add_argument("--timeout", type=int, default=1200, help="seconds per child run")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--store-path", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0

    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    n_train, n_val = query_counts(args.answered)
    cmdline = (
        f"python benchmarks/store_scale.py --store {args.store} --docs {args.docs} "
        f"--dim {args.dim} --answered {args.answered} --modes {args.modes}"
    )
    print(f"### `{cmdline}` (load avg {load_avg()})\n")
    print(
        f"{args.answered} answer documents, {n_train} train / {n_val} val queries at every "
        f"size; write-back batches of {args.batch}\n"
    )
    print(
        "| store | docs | fill s | mode | tune_store s | read / solve / write s | vectors read "
        "| rows moved | write-back rows/s | held MiB | added MiB | gamma | val score |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    try:
        code = run_sizes(args, work)
    finally:
        pgvector_stop()  # the benchmark's PostgreSQL, if one was started
    if code:
        return code
    print(f"\nload avg after: {load_avg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
