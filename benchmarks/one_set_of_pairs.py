"""One set of pairs, no validation set: the held-out split (before) vs cross-validation (now).

Most users call ``fit(pairs)`` with one set of labelled pairs. Before, ``fit`` held 10 % of
the queries out at random, chose gamma on them and tuned on the other 90 %; now it chooses
gamma by 10-fold cross-validation and tunes on every pair. This prints test nDCG@10 for both,
over seeds 0-4 (the split or fold seed), with the training pairs only and with the training
and dev pairs pooled as one set, next to the paper's protocol (gamma chosen on the separate
dev set).

    python benchmarks/one_set_of_pairs.py --data /work/shared/data/nfcorpus
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from nudge_rag import NudgeM, NudgeN, QuerySet, evaluate, load_embedded, search


def pooled(a: QuerySet, b: QuerySet) -> QuerySet:
    """The queries of ``a`` and ``b`` as one set."""
    indptr = np.concatenate([a.indptr, b.indptr[1:] + a.indptr[-1]])
    indices = np.concatenate([a.indices, b.indices])
    return QuerySet(np.concatenate([a.embeddings, b.embeddings]), (indptr, indices))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="nfcorpus folder (load_embedded layout)")
    parser.add_argument("--split", default="nudge_split")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    args = parser.parse_args(argv)
    data = load_embedded(args.data, args.split, args.model, mmap=False)
    docs = np.ascontiguousarray(data.doc_embeddings)
    train, dev = data.split("train").queryset(), data.split("dev").queryset()
    test = data.split("test")

    def ndcg(embeddings: np.ndarray, similarity: str) -> float:
        _, top = search(test.query_embeddings, embeddings, 10, similarity=similarity)
        return 100 * evaluate(top, test.relevance, 10, metrics=("ndcg",))["ndcg@10"]

    print(
        f"{args.data} ({args.split}, {args.model}): {train.n_queries} train, "
        f"{dev.n_queries} dev, {test.n_queries} test queries; test nDCG@10, seeds 0-{args.seeds - 1}"
    )
    print(f"untuned: {ndcg(docs, 'cosine'):.1f}")
    print()
    print("| variant | pairs | gamma chosen on | nDCG@10 per seed | mean | min | fit s |")
    print("|---|---|---|---|---|---|---|")
    for name, cls in (("NUDGE-N", NudgeN), ("NUDGE-M", NudgeM)):
        solver = cls().fit(docs, train, dev)
        print(
            f"| {name} | train | dev (paper) | {ndcg(solver.embeddings_, solver.similarity):.1f} "
            f"| | | |"
        )
        for pairs_name, pairs in (("train", train), ("train + dev", pooled(train, dev))):
            for method, params in (("10 % split (before)", {"cv": None}), ("10-fold CV (now)", {})):
                scores, times = [], []
                for seed in range(args.seeds):
                    start = time.perf_counter()
                    solver = cls(random_state=seed, **params).fit(docs, pairs)
                    times.append(time.perf_counter() - start)
                    scores.append(ndcg(solver.embeddings_, solver.similarity))
                per_seed = ", ".join(f"{s:.1f}" for s in scores)
                print(
                    f"| {name} | {pairs_name} | {method} | {per_seed} | {np.mean(scores):.1f} "
                    f"| {min(scores):.1f} | {np.median(times):.2f} |"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
