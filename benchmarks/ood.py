"""Out-of-distribution check (as in the paper): tune on one cluster of queries, test on the other.

All nfcorpus queries (train, dev and test of ``--split``) are clustered into two groups by
spherical k-means (k = 2, seeded) on their embeddings. For each direction (A -> B, B -> A)
and each variant, 80 % of the tuning cluster's queries (seeded) are the training pairs (gamma
by the default cross-validation, no validation set), its other 20 % measure in-distribution
nDCG@10 and the whole other cluster measures out-of-distribution nDCG@10, each against the
untuned embeddings. The paper reports NUDGE-N +1.7 nDCG@10 out of distribution and NUDGE-M
-11.6; NUDGE-N must not make the other cluster worse than untuned.

    python benchmarks/ood.py --data /work/shared/data/nfcorpus
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from nudge_rag import NudgeM, NudgeN, QuerySet, Relevance, evaluate, search
from nudge_rag.data import load_embedded


def spherical_kmeans(x: np.ndarray, k: int, seed: int, iters: int = 100) -> np.ndarray:
    """Cluster labels of the rows of ``x`` (cosine k-means, k-means++-style seeding)."""
    rng = np.random.default_rng(seed)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    centres = [unit[rng.integers(len(unit))]]
    for _ in range(1, k):
        dist = 1 - np.max(unit @ np.array(centres).T, axis=1)
        centres.append(unit[rng.choice(len(unit), p=dist / dist.sum())])
    centres = np.array(centres)
    labels = np.full(len(unit), -1)
    for _ in range(iters):
        new = np.argmax(unit @ centres.T, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for c in range(k):
            mean = unit[labels == c].sum(axis=0)
            centres[c] = mean / np.linalg.norm(mean)
    return labels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="nfcorpus folder (load_embedded layout)")
    parser.add_argument("--split", default="nudge_split")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--seed", type=int, default=0, help="k-means and 80/20 seed")
    args = parser.parse_args(argv)
    data = load_embedded(args.data, args.split, args.model, mmap=False)
    docs = np.ascontiguousarray(data.doc_embeddings)
    splits = [data.split(s) for s in ("train", "dev", "test")]
    queries = np.concatenate([s.query_embeddings for s in splits])
    rels = [s.relevance for s in splits]
    offsets = np.cumsum([0] + [r.indptr[-1] for r in rels[:-1]])
    relevance = Relevance(
        np.concatenate([[0]] + [r.indptr[1:] + o for r, o in zip(rels, offsets)]),
        np.concatenate([r.indices for r in rels]),
        np.concatenate([r.grades for r in rels]),
    )
    labels = spherical_kmeans(queries, 2, args.seed)
    clusters = [np.flatnonzero(labels == c) for c in (0, 1)]
    rng = np.random.default_rng(args.seed)
    parts = []  # (fit rows, held-out rows) of each cluster, the same for both variants
    for rows in clusters:
        rows = rng.permutation(rows)
        n_fit = int(round(0.8 * rows.size))
        parts.append((np.sort(rows[:n_fit]), np.sort(rows[n_fit:])))

    def ndcg(embeddings: np.ndarray, similarity: str, rows: np.ndarray) -> float:
        _, top = search(queries[rows], embeddings, 10, similarity=similarity)
        return 100 * evaluate(top, relevance.subset(rows), 10, metrics=("ndcg",))["ndcg@10"]

    print(
        f"{args.data} ({args.split}, {args.model}): {len(queries)} queries in two k-means "
        f"clusters A ({clusters[0].size}) and B ({clusters[1].size}); nDCG@10"
    )
    print()
    print(
        "| variant | tuned on | gamma | in-distribution: untuned | tuned | change "
        "| other cluster: untuned | tuned | change |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, cls in (("NUDGE-N", NudgeN), ("NUDGE-M", NudgeM)):
        for tune, other, label in ((0, 1, "A, test B"), (1, 0, "B, test A")):
            fit_rows, held_rows = parts[tune]
            pairs = QuerySet(queries[fit_rows], relevance.subset(fit_rows).to_lists())
            solver = cls().fit(docs, pairs)
            tuned, sim = solver.embeddings_, solver.similarity
            cells = []
            for test_rows in (held_rows, clusters[other]):
                before = ndcg(docs, "cosine", test_rows)
                after = ndcg(tuned, sim, test_rows)
                cells += [f"{before:.1f}", f"{after:.1f}", f"{after - before:+.1f}"]
            print(f"| {name} | {label} | {solver.gamma_:.3g} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
