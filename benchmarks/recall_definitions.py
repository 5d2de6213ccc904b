"""recall@k under both definitions, beside nDCG@k: the NUDGE paper's and the standard one.

nudge-rag's ``recall@k`` (like the NUDGE paper and its reference code) divides the relevant
documents found in the top k by ``min(#relevant, k)``; the standard recall divides by
``#relevant``. On NFCorpus many test queries have more than 10 relevant documents, so the two
differ a lot. This prints both for no fine-tuning, NUDGE-M and NUDGE-N (gamma chosen on dev),
on the same inputs as ``nudge-rag benchmark``:

    python benchmarks/recall_definitions.py --data ../shared/data/nfcorpus [--split beir_split]
"""

from __future__ import annotations

import argparse

import numpy as np

from nudge_rag import NudgeM, NudgeN, evaluate, search
from nudge_rag.data import load_embedded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="nudge_split")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    data = load_embedded(args.data, args.split)
    train, val = data.split("train").queryset(), data.split("dev").queryset()
    test = data.split("test")
    n_rel = test.relevance.n_relevant()
    k = args.k
    print(
        f"| method | recall@{k}, paper (÷ min(#rel, {k})) | recall@{k}, standard (÷ #rel) "
        f"| nDCG@{k} | gamma |"
    )
    print("|---|---|---|---|---|")
    methods = [("no fine-tuning", None)] + [("NUDGE-M", NudgeM), ("NUDGE-N", NudgeN)]
    for name, cls in methods:
        solver = None if cls is None else cls().fit(data.doc_embeddings, train, val)
        docs = data.doc_embeddings if solver is None else solver.embeddings_
        similarity = "cosine" if solver is None else solver.similarity
        _, top = search(test.query_embeddings, docs, k, similarity=similarity)
        per = evaluate(top, test.relevance, k, metrics=("recall", "ndcg"), per_query=True)
        valid = n_rel > 0
        paper = per[f"recall@{k}"][valid]
        standard = paper * np.minimum(n_rel[valid], k) / n_rel[valid]
        ndcg = per[f"ndcg@{k}"][valid]
        gamma = "–" if solver is None else f"{solver.gamma_:.4g}"
        print(
            f"| {name} | {100 * paper.mean():.1f} | {100 * standard.mean():.1f} "
            f"| {100 * ndcg.mean():.1f} | {gamma} |"
        )
    print(
        f"\n{int(valid.sum())} test queries; {int((n_rel > k).sum())} have more than {k} "
        "relevant documents."
    )


if __name__ == "__main__":
    main()
