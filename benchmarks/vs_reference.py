"""nudge-rag vs the reference ``nudge-ft`` on the same inputs, in one process.

Prints, for NUDGE-N and NUDGE-M: both gammas, max |Δ embeddings|, both fine-tune times (min of
``--repeat`` calls of ``finetune_embeddings``) and the speed-up. Needs the reference:
``pip install torch==2.13.0 nudge-ft==0.1.2`` (torch 2.13.0 is a CPU build on this machine).

    python benchmarks/vs_reference.py --data ../shared/data/nfcorpus [--split nudge_split]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time

import numpy as np

from nudge_rag.compat import NUDGEM, NUDGEN
from nudge_rag.data import load_embedded


def as_reference_dict(split):
    qs = split.queryset()
    return {"q_embs": np.ascontiguousarray(qs.embeddings), "q_ans_indx": qs.answer_lists()}


def timed(fn, repeat):
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the reference prints progress
            out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", required=True, help="nfcorpus folder (or any load_embedded layout)"
    )
    parser.add_argument("--split", default="nudge_split")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        import nudge
        import torch
    except ImportError:
        print("needs the reference: pip install torch==2.13.0 nudge-ft==0.1.2", file=sys.stderr)
        return 2
    torch.set_num_threads(torch.get_num_threads())
    data = load_embedded(args.data, args.split, args.model, mmap=False)
    docs = np.ascontiguousarray(data.doc_embeddings)
    train, val = as_reference_dict(data.train), as_reference_dict(data.dev)
    docs_norm = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    cpu = torch.device("cpu")
    print(
        f"{args.data} {args.split}: {len(docs)} docs, {len(train['q_embs'])} train / {len(val['q_embs'])} dev queries"
    )
    print(
        "| variant | gamma (nudge-ft) | gamma (nudge-rag) | max abs diff | nudge-ft s | nudge-rag s | speed-up |"
    )
    print("|---|---|---|---|---|---|---|")
    for variant, ref_cls, our_cls in (("N", nudge.NUDGEN, NUDGEN), ("M", nudge.NUDGEM, NUDGEM)):
        ref_model, ours = ref_cls(device=cpu), our_cls()
        ref_out, ref_s = timed(
            lambda m=ref_model: m.finetune_embeddings(docs, train, val), args.repeat
        )
        our_out, our_s = timed(lambda m=ours: m.finetune_embeddings(docs, train, val), args.repeat)
        diff = float(np.abs(ref_out - our_out).max())
        moved = np.abs(ref_out - docs_norm).max(axis=1) > 1e-6
        if variant == "M":
            ref_gamma = (
                float(np.linalg.norm(ref_out - docs_norm, axis=1)[moved].max())
                if moved.any()
                else 0.0
            )
        else:  # NUDGE-N: interior rows move by exactly sqrt(gamma); snapped rows by less
            step = np.linalg.norm(ref_out - docs_norm, axis=1)[moved]
            ref_gamma = float(step.max() ** 2) if step.size else 0.0
        print(
            f"| NUDGE-{variant} | {ref_gamma:.6g} | {ours.solver_.gamma_:.6g} | {diff:.2e} | "
            f"{ref_s:.3f} | {our_s:.4f} | {ref_s / our_s:.1f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
