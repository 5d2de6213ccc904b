"""Scale benchmark: NUDGE on a memory-mapped generated corpus (default 1M x 768).

Generates (once) a unit-norm float32 corpus ``.npy`` with ``write_memmap_corpus``, then, for
each variant and mode, runs in a fresh child process: build the query sets
(``make_scale_task``: 70k training queries answering 100k documents, 10k validation queries),
``fit`` on the memmap (mode ``val``: gamma chosen on the validation queries; mode ``cv``: no
validation queries, gamma by the default 10-fold cross-validation over at most 10,000 held-out
training queries, then a fit on all 70k),
and report the fit's wall time and the peak RSS during the fit (``VmHWM`` after resetting it
with ``/proc/self/clear_refs`` once the query sets are built; so it includes the query arrays
the caller holds, but not the benchmark's own data generation). The result stays as the moved rows and
their new vectors (``changed_rows_`` / ``changed_embeddings_``); no second copy of the corpus
is made.

    python benchmarks/scale.py                       # 1M x 768, about 3 GB in --dir
    python benchmarks/scale.py --modes cv --variants n
    python benchmarks/scale.py --docs 200000 --dim 384 --train 20000 --val 2000 --answered 30000
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def _rss(field: str) -> int:
    """A ``/proc/self/status`` memory field in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _drop_pages(arr) -> None:
    """Drop the pages of a read-only ``np.memmap`` from this process's resident set."""
    import mmap

    import numpy as np

    mm = getattr(arr, "_mmap", None)
    if mm is None or not isinstance(arr, np.memmap):
        return
    offset = arr.ctypes.data - np.frombuffer(mm, dtype=np.uint8).ctypes.data
    first = offset - offset % mmap.PAGESIZE
    mm.madvise(mmap.MADV_DONTNEED, first, len(mm) - first)


def child(args: argparse.Namespace) -> None:
    import numpy as np

    from nudge_rag import NudgeM, NudgeN
    from nudge_rag.data import make_scale_task

    t0 = time.perf_counter()
    data = make_scale_task(
        args.corpus, n_train=args.train, n_dev=args.val, n_test=1, n_answered_docs=args.answered
    )
    train, val = data.train.queryset(), data.dev.queryset()
    t_task = time.perf_counter() - t0
    gc.collect()
    # Drop the corpus pages that building the query sets touched (the benchmark's residue,
    # not the solver's), then measure from here.
    _drop_pages(data.doc_embeddings)
    held = _rss("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    solver = (NudgeN if args.child == "n" else NudgeM)()
    t1 = time.perf_counter()
    solver.fit(data.doc_embeddings, train, val if args.mode == "val" else None)
    t_fit = time.perf_counter() - t1
    peak = _rss("VmHWM")  # peak since the reset: the fit, plus what the caller held
    out = {
        "variant": f"NUDGE-{args.child.upper()}",
        "chosen_by": solver.gamma_chosen_by_,
        "fit_s": t_fit,
        "task_s": t_task,
        "peak_rss_bytes": peak,
        "rss_before_fit_bytes": held,
        "setup_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "corpus_bytes": int(np.prod(data.doc_embeddings.shape)) * 4,
        "gamma": solver.gamma_,
        "val_score": solver.val_score_,
        "changed_rows": int(solver.changed_rows_.size),
        "n_train": train.n_queries,
        "n_val": solver.n_val_queries_,
        "active_rows": int(np.unique(np.concatenate([train.indices, val.indices])).size),
    }
    print(json.dumps(out))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--train", type=int, default=70_000)
    parser.add_argument("--val", type=int, default=10_000)
    parser.add_argument("--answered", type=int, default=100_000)
    parser.add_argument(
        "--dir", default="/tmp/nudge-rag-scale", help="where the corpus .npy is written"
    )
    parser.add_argument("--variants", default="n,m")
    parser.add_argument("--modes", default="val,cv", help="val (explicit), cv (no val)")
    parser.add_argument("--mode", choices=("val", "cv"), default="val", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("n", "m"), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    from nudge_rag.data import write_memmap_corpus

    corpus = Path(args.dir) / f"corpus_{args.docs}x{args.dim}.npy"
    if not corpus.exists():
        corpus.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        write_memmap_corpus(corpus, args.docs, args.dim, 0)
        print(f"generated {corpus} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    print(
        f"corpus {args.docs} x {args.dim} float32 ({args.docs * args.dim * 4 / 2**30:.2f} GiB), "
        f"{args.train} train / {args.val} val queries, {args.answered} answered docs"
    )
    print(
        "| variant | gamma chosen by | fit s | peak RSS in fit GiB | peak / corpus | held before fit GiB | gamma | val score | rows moved |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    runs = [(v, m) for m in args.modes.split(",") for v in args.variants.split(",")]
    for variant, mode in runs:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            variant,
            "--corpus",
            str(corpus),
            "--train",
            str(args.train),
            "--val",
            str(args.val),
            "--answered",
            str(args.answered),
            "--mode",
            mode,
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            print(res.stderr, file=sys.stderr)
            return res.returncode
        r = json.loads(res.stdout.strip().splitlines()[-1])
        print(
            f"| {r['variant']} | {r['chosen_by']} ({r['n_val']} queries) | {r['fit_s']:.1f} | {r['peak_rss_bytes'] / 2**30:.2f} | "
            f"{r['peak_rss_bytes'] / r['corpus_bytes']:.2f} | {r['rss_before_fit_bytes'] / 2**30:.2f} | "
            f"{r['gamma']:.4g} | {r['val_score']:.3f} | {r['changed_rows']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
