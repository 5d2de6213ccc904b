"""Store-side vs full-read ``tune_store``: ``passive="store"`` against ``passive="read"``.

(a) ``--part nfcorpus``: the 3,633 nfcorpus documents (all-MiniLM-L6-v2) in an embedded
    Chroma collection (cosine, HNSW ``ef_search`` 400) and a local Qdrant collection (COSINE,
    ``":memory:"``; local mode searches exactly): gamma, validation score, wall time of
    ``tune_store`` and the vectors it read through ``get_vectors`` (write-back reads of
    originals excluded), for both modes, each on a freshly filled store.
(b) ``--part scale``: a generated corpus (``write_memmap_corpus`` + ``make_scale_task``, query
    counts scaled from 70k train / 10k val / 100k answered per 1M documents) in a store; each
    (backend, mode) runs in a fresh child process, which opens (Chroma, persisted once in
    ``--dir``) or fills (Qdrant ``":memory:"``, local mode cannot share a store between
    processes) the store, builds the query lists, resets the peak RSS (``/proc/self/clear_refs``)
    and runs ``tune_store``. "held" is the RSS before the reset (the embedded store itself,
    the queries); "peak" is VmHWM after ``tune_store``; "added" = peak - held. The
    write-back is undone (``restore``) after the measurement.

    python benchmarks/store_modes.py --part nfcorpus
    python benchmarks/store_modes.py --part scale --docs 200000 --dim 128
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(
    os.environ.get("NUDGE_RAG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
CHROMA_BATCH = 5000
QDRANT_BATCH = 5000


def rss(field: str) -> int:
    """A ``/proc/self/status`` memory field in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> int:
    """Collect garbage, reset VmHWM to the current RSS, return that RSS."""
    gc.collect()
    held = rss("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    return held


def load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ------------------------------------------------------------------ stores
def doc_id(backend: str, row: int) -> str:
    """Chroma ids ``d<row>``; Qdrant point ids are the unsigned integer ``row``."""
    return f"d{row}" if backend == "chroma" else str(row)


def chroma_collection(path: Path | None, name: str = "docs", *, create: bool):
    import chromadb

    client = chromadb.PersistentClient(path=str(path)) if path else chromadb.EphemeralClient()
    if create:
        return client.create_collection(
            name, configuration={"hnsw": {"space": "cosine", "ef_search": 400}}
        )
    return client.get_collection(name)


def fill_chroma(col, emb, n_docs: int) -> None:
    import numpy as np

    for s in range(0, n_docs, CHROMA_BATCH):
        e = min(s + CHROMA_BATCH, n_docs)
        col.add(
            ids=[f"d{i}" for i in range(s, e)], embeddings=np.asarray(emb[s:e], dtype=np.float32)
        )


def qdrant_filled(emb, n_docs: int, path: str = ":memory:"):
    import numpy as np
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path) if path == ":memory:" else QdrantClient(path=path)
    client.create_collection(
        "docs",
        vectors_config=models.VectorParams(size=emb.shape[1], distance=models.Distance.COSINE),
    )
    for s in range(0, n_docs, QDRANT_BATCH):
        e = min(s + QDRANT_BATCH, n_docs)
        client.upload_collection(
            "docs",
            vectors=np.asarray(emb[s:e], dtype=np.float32),
            ids=list(range(s, e)),
            batch_size=QDRANT_BATCH,
        )
    return client


def counting(store_cls):
    """A subclass of ``store_cls`` that counts the vectors read through ``get_vectors``."""

    class Counting(store_cls):
        vectors_read = 0

        def get_vectors(self, ids):
            ids = list(ids)
            self.vectors_read += len(ids)
            return super().get_vectors(ids)

    return Counting


def answer_ids(split, backend: str) -> list[list[str]]:
    rel = split.relevance
    ind, ptr = rel.indices.tolist(), rel.indptr.tolist()
    return [[doc_id(backend, j) for j in ind[ptr[q] : ptr[q + 1]]] for q in range(len(ptr) - 1)]


def run_tune(store, train_emb, train_ids, val_emb, val_ids, mode: str) -> dict:
    from nudge_rag import NudgeN, WriteBack, tune_store

    wb = WriteBack(store, batch_size=512)
    store.vectors_read = 0
    t = time.perf_counter()
    res = tune_store(wb, NudgeN(), train_emb, train_ids, val_emb, val_ids, passive=mode)
    wall = time.perf_counter() - t
    out = {
        "mode": mode,
        "tune_s": wall,
        "gamma": res.gamma,
        "val_score": res.val_score,
        "vectors_read": store.vectors_read - len(res.changed_ids),  # minus originals saved
        "changed": len(res.changed_ids),
        "wb": wb,
    }
    return out


# ------------------------------------------------------------------ (a) nfcorpus
def part_nfcorpus(args) -> None:
    import numpy as np

    from nudge_rag.backends import ChromaBackend, QdrantBackend
    from nudge_rag.data import load_embedded

    d = load_embedded(DATA / "nfcorpus")
    emb = np.asarray(d.doc_embeddings, dtype=np.float32)
    n = emb.shape[0]
    print(f"### `python benchmarks/store_modes.py --part nfcorpus` (load avg {load_avg()})\n")
    print(
        f"nfcorpus: {n} docs x {emb.shape[1]}, {d.train.n_queries} train / {d.dev.n_queries} dev queries\n"
    )
    print("| store | mode | gamma | val score | tune_store s | vectors read | rows moved |")
    print("|---|---|---|---|---|---|---|")
    for backend in ("chroma", "qdrant"):
        tr, dv = answer_ids(d.train, backend), answer_ids(d.dev, backend)
        for mode in ("read", "store"):
            if backend == "chroma":
                tmp = Path(args.dir) / f"nfcorpus_chroma_{mode}_{os.getpid()}"
                shutil.rmtree(tmp, ignore_errors=True)
                col = chroma_collection(tmp, "nfcorpus", create=True)
                fill_chroma(col, emb, n)
                store = counting(ChromaBackend)(col)
                label = "Chroma embedded (cosine, ef_search 400)"
            else:
                store = counting(QdrantBackend)(qdrant_filled(emb, n), "docs")
                label = "Qdrant local :memory: (COSINE)"
            r = run_tune(store, d.train.query_embeddings, tr, d.dev.query_embeddings, dv, mode)
            print(
                f"| {label} | {mode} | {r['gamma']:.4g} | {r['val_score']:.4f} | {r['tune_s']:.2f} | "
                f"{r['vectors_read']} / {n} | {r['changed']} |"
            )
    for tmp in Path(args.dir).glob(f"nfcorpus_chroma_*_{os.getpid()}"):
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nload avg after: {load_avg()}")


# ------------------------------------------------------------------ (b) scale
def scaled_counts(n_docs: int) -> tuple[int, int, int]:
    f = n_docs / 1_000_000
    return max(10, round(70_000 * f)), max(5, round(10_000 * f)), max(10, round(100_000 * f))


def child_scale(args) -> None:
    import numpy as np

    from nudge_rag.backends import ChromaBackend, QdrantBackend
    from nudge_rag.data import make_scale_task

    n_train, n_val, n_answered = scaled_counts(args.docs)
    data = make_scale_task(
        args.corpus, n_train=n_train, n_dev=n_val, n_test=1, n_answered_docs=n_answered
    )
    t0 = time.perf_counter()
    if args.backend == "chroma":
        store = counting(ChromaBackend)(chroma_collection(Path(args.chroma_path), create=False))
    else:
        store = counting(QdrantBackend)(qdrant_filled(data.doc_embeddings, args.docs), "docs")
    t_open = time.perf_counter() - t0
    tr, dv = answer_ids(data.train, args.backend), answer_ids(data.dev, args.backend)
    train_emb = np.asarray(data.train.query_embeddings)
    val_emb = np.asarray(data.dev.query_embeddings)
    del data
    held = reset_peak()
    r = run_tune(store, train_emb, tr, val_emb, dv, args.mode)
    peak = rss("VmHWM")
    wb = r.pop("wb")
    wb.restore()  # put the originals back for the next run (not measured)
    r.update(held=held, peak=peak, open_s=t_open, count=store.count())
    print(json.dumps(r))


def part_scale(args) -> int:
    import numpy as np

    from nudge_rag.data import write_memmap_corpus

    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"corpus_{args.docs}x{args.dim}.npy"
    if not corpus.exists():
        t = time.perf_counter()
        write_memmap_corpus(corpus, args.docs, args.dim, 0)
        print(f"generated {corpus} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    chroma_path = work / f"chroma_{args.docs}x{args.dim}"
    backends = args.backends.split(",")
    fill_note = ""
    if "chroma" in backends and not (chroma_path / "done").exists():
        shutil.rmtree(chroma_path, ignore_errors=True)
        t = time.perf_counter()
        col = chroma_collection(chroma_path, create=True)
        fill_chroma(col, np.load(corpus, mmap_mode="r"), args.docs)
        fill_s = time.perf_counter() - t
        (chroma_path / "done").write_text(f"{fill_s:.1f}")
        del col
        fill_note = f"Chroma fill {fill_s:.0f} s; "
    n_train, n_val, n_answered = scaled_counts(args.docs)
    cmdline = f"python benchmarks/store_modes.py --part scale --docs {args.docs} --dim {args.dim} --backends {args.backends}"
    print(f"### `{cmdline}` (load avg {load_avg()})\n")
    print(
        f"{args.docs} x {args.dim} float32 ({args.docs * args.dim * 4 / 2**20:.0f} MiB raw), "
        f"{n_train} train / {n_val} val queries, {n_answered} answered docs; {fill_note}\n"
    )
    print(
        "| store | mode | tune_store s | vectors read | peak RSS MiB | held before MiB | added by tune MiB | gamma | val score |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for backend in backends:
        for mode in args.modes.split(","):
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--backend",
                backend,
                "--mode",
                mode,
                "--corpus",
                str(corpus),
                "--docs",
                str(args.docs),
                "--chroma-path",
                str(chroma_path),
            ]
            t = time.perf_counter()
            res = subprocess.run(
                cmd, capture_output=True, text=True, check=False, timeout=args.timeout
            )
            if res.returncode != 0:
                print(res.stderr[-3000:], file=sys.stderr)
                return res.returncode
            r = json.loads(res.stdout.strip().splitlines()[-1])
            label = "Chroma embedded" if backend == "chroma" else "Qdrant local :memory:"
            mib = 2**20
            print(
                f"| {label} | {mode} | {r['tune_s']:.1f} | {r['vectors_read']} | {r['peak'] / mib:.0f} | "
                f"{r['held'] / mib:.0f} | {(r['peak'] - r['held']) / mib:.0f} | {r['gamma']:.4g} | {r['val_score']:.4f} |",
                flush=True,
            )
            print(
                f"  child {backend}/{mode}: {time.perf_counter() - t:.0f} s in all, load {load_avg()}",
                file=sys.stderr,
            )
    print(f"\nload avg after: {load_avg()}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--part", choices=("nfcorpus", "scale"), default="nfcorpus")
    p.add_argument("--docs", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--backends", default="chroma,qdrant")
    p.add_argument("--modes", default="read,store")
    p.add_argument("--dir", default="/tmp/nudge-rag-store-modes")
    p.add_argument("--timeout", type=int, default=480, help="seconds per child run")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--chroma-path", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_scale(args)
        return 0
    if args.part == "nfcorpus":
        Path(args.dir).mkdir(parents=True, exist_ok=True)
        part_nfcorpus(args)
        return 0
    return part_scale(args)


if __name__ == "__main__":
    sys.exit(main())
