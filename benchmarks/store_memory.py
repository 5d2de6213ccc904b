"""Peak RSS and time of the streaming store operations, at growing corpus sizes.

Each (backend, operation, size) runs in a fresh child process that opens (Chroma embedded,
filled once per size in ``--dir``) or fills (Qdrant local ``":memory:"``) a store of a
generated unit-norm corpus (``write_memmap_corpus``), resets the peak RSS
(``/proc/self/clear_refs``) and then runs one of:

* ``scan``: ``list_ids()`` then ``get_vectors`` in batches of ``--batch`` (the loop
  ``WriteBack.read_corpus`` runs), each batch dropped: what streaming reads cost.
  (``read_corpus`` itself concatenates the batches, so read mode holds the corpus by design.)
* ``write``: ``WriteBack.apply`` of ``--moved`` rows (it reads their originals, saves them
  and the plan to a state folder, then writes in batches of ``--batch``).

"held" is the RSS before the reset (the embedded store itself: both clients keep the index /
the vectors in the Python process); "added" is VmHWM - held, what the operation costs on top.

    python benchmarks/store_memory.py --sizes 50000,200000 --dim 128
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_modes import (  # noqa: E402
    chroma_collection,
    doc_id,
    fill_chroma,
    load_avg,
    qdrant_filled,
    reset_peak,
    rss,
)


def child(args) -> None:
    import numpy as np

    from nudge_rag import WriteBack
    from nudge_rag.backends import ChromaBackend, QdrantBackend

    emb = np.load(args.corpus, mmap_mode="r")
    n = emb.shape[0]
    if args.backend == "chroma":
        store = ChromaBackend(chroma_collection(Path(args.chroma_path), create=False))
    else:
        store = QdrantBackend(qdrant_filled(emb, n), "docs")
    held = reset_peak()
    t = time.perf_counter()
    if args.op == "scan":
        ids = store.list_ids()
        t_list = time.perf_counter() - t
        total = 0.0
        for s in range(0, len(ids), args.batch):
            block = store.get_vectors(ids[s : s + args.batch])
            total += float(block[:, 0].sum())  # touch it, then drop it
        rows = len(ids)
        extra = {"list_s": t_list}
    else:
        rows = min(args.moved, n)
        pick = np.sort(np.random.default_rng(0).choice(n, size=rows, replace=False))
        ids = [doc_id(args.backend, int(i)) for i in pick]
        new = np.asarray(emb[pick], dtype=np.float32)
        new = -new  # any unit vectors
        state = tempfile.mkdtemp(prefix="nudge-wb-", dir=args.dir)
        wb = WriteBack(store, state_dir=state, batch_size=args.batch)
        t = time.perf_counter()  # ids and targets are the caller's, not the write-back's
        wb.apply(ids, new)
        extra = {}
    wall = time.perf_counter() - t
    peak = rss("VmHWM")
    if args.op == "write":
        wb.restore()
        shutil.rmtree(state, ignore_errors=True)
    print(json.dumps({"s": wall, "rows": rows, "held": held, "peak": peak, **extra}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default="200000")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--backends", default="chroma,qdrant")
    p.add_argument("--ops", default="scan,write")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--moved", type=int, default=50_000)
    p.add_argument("--dir", default="/tmp/nudge-rag-store-modes")
    p.add_argument("--timeout", type=int, default=480)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", help=argparse.SUPPRESS)
    p.add_argument("--op", help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--chroma-path", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0

    import numpy as np

    from nudge_rag.data import write_memmap_corpus

    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    cmdline = (
        f"python benchmarks/store_memory.py --sizes {args.sizes} --dim {args.dim} "
        f"--backends {args.backends} --batch {args.batch} --moved {args.moved}"
    )
    print(f"### `{cmdline}` (load avg {load_avg()})\n")
    print(
        "| store | docs | operation | rows | s | peak RSS MiB | held before MiB | added MiB | corpus MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in [int(x) for x in args.sizes.split(",")]:
        corpus = work / f"corpus_{n}x{args.dim}.npy"
        if not corpus.exists():
            write_memmap_corpus(corpus, n, args.dim, 0)
        chroma_path = work / f"chroma_{n}x{args.dim}"
        for backend in args.backends.split(","):
            if backend == "chroma" and not (chroma_path / "done").exists():
                shutil.rmtree(chroma_path, ignore_errors=True)
                t = time.perf_counter()
                fill_chroma(
                    chroma_collection(chroma_path, create=True), np.load(corpus, mmap_mode="r"), n
                )
                (chroma_path / "done").write_text(f"{time.perf_counter() - t:.1f}")
            for op in args.ops.split(","):
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    "--backend",
                    backend,
                    "--op",
                    op,
                    "--corpus",
                    str(corpus),
                    "--chroma-path",
                    str(chroma_path),
                    "--dir",
                    str(work),
                    "--batch",
                    str(args.batch),
                    "--moved",
                    str(args.moved),
                ]
                res = subprocess.run(
                    cmd, capture_output=True, text=True, check=False, timeout=args.timeout
                )
                if res.returncode != 0:
                    print(res.stderr[-3000:], file=sys.stderr)
                    return res.returncode
                r = json.loads(res.stdout.strip().splitlines()[-1])
                mib = 2**20
                label = "Chroma embedded" if backend == "chroma" else "Qdrant local :memory:"
                what = (
                    f"scan (list_ids {r['list_s']:.1f} s + get_vectors)"
                    if op == "scan"
                    else "WriteBack.apply"
                )
                print(
                    f"| {label} | {n} | {what} | {r['rows']} | {r['s']:.1f} | {r['peak'] / mib:.0f} | "
                    f"{r['held'] / mib:.0f} | {(r['peak'] - r['held']) / mib:.0f} | {n * args.dim * 4 / mib:.0f} |",
                    flush=True,
                )
    print(f"\nload avg after: {load_avg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
