"""One set of pairs, no validation set: the held-out split (before) vs cross-validation (now).

Most users call ``fit(pairs)`` with one set of labelled pairs. Before, ``fit`` held 10 % of
the queries out at random, chose gamma on them and tuned on the other 90 %; now it chooses
gamma by 10-fold cross-validation, repeated over 3 seeded deals of the queries (one deal
is shown too), and tunes on every pair. This prints test nDCG@10 for each,
over seeds 0-4 (the split or fold seed), with the training pairs only and with the training
and dev pairs pooled as one set, next to the paper's protocol (gamma chosen on the separate
dev set).

    python benchmarks/one_set_of_pairs.py --data /work/shared/data/nfcorpus
    python benchmarks/one_set_of_pairs.py --data /work/shared/data/nfcorpus --frameworks

``--frameworks`` instead runs the same pairs through LangChain's ``NudgeRetriever.fit(pairs)``
(``InMemoryVectorStore``) and LlamaIndex's ``NudgeFinetuneEngine.finetune()`` (questions in
the nodes' metadata, ``SimpleVectorStore``), NUDGE-N, fold seeds 0-4 via ``solver_params``.
Both group the pairs by question text (1,702 train queries are 1,696 distinct texts), so
their folds differ from the core's. The tuned vectors are read back from the store and
ranked exactly (the stores' own retrievers give the same rankings: see the e2e tests).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from nudge_rag import NudgeM, NudgeN, QuerySet, evaluate, search
from nudge_rag.data import load_embedded


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
    parser.add_argument(
        "--frameworks", action="store_true", help="through LangChain and LlamaIndex instead"
    )
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.frameworks:
        return frameworks(args)
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
            for method, params in (
                ("10 % split (before)", {"cv": None}),
                ("10-fold CV, one deal", {"cv_repeats": 1}),
                ("10-fold CV x 3 deals (default)", {}),
            ):
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


def _split_pairs(data, name: str) -> list[tuple[str, str]]:
    split = data.split(name)
    rel = split.relevance
    return [
        (split.query_texts[q], data.doc_ids[int(row)])
        for q in range(split.n_queries)
        for row in rel.indices[rel.indptr[q] : rel.indptr[q + 1]]
    ]


def frameworks(args) -> int:
    """NUDGE-N through both integrations, train pairs only and train + dev pooled."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integrations"))
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import InMemoryVectorStore
    from langchain_nudge import NudgeRetriever
    from llama_index.core import VectorStoreIndex
    from llama_index.core.embeddings import BaseEmbedding
    from llama_index.core.schema import TextNode
    from llama_index_nudge import DEFAULT_QUESTIONS_KEY, NudgeFinetuneEngine

    data = load_embedded(args.data, args.split, args.model, mmap=False)
    test = data.split("test")
    lookup = {}
    for name in ("train", "dev", "test"):
        split = data.split(name)
        lookup.update(zip(split.query_texts, np.asarray(split.query_embeddings).tolist()))
    doc_vectors = np.asarray(data.doc_embeddings, dtype=np.float32)
    documents = dict(zip(data.doc_texts, doc_vectors.tolist()))

    class Lookup(Embeddings):  # precomputed query vectors by text (no model offline)
        def embed_documents(self, texts):  # stored vectors and questions: no model runs
            return [documents[t] if t in documents else lookup[t] for t in texts]

        def embed_query(self, text):
            return lookup[text]

    class LlamaLookup(BaseEmbedding):
        def _get_query_embedding(self, query):
            return lookup[query]

        def _get_text_embedding(self, text):
            return lookup[text]

        async def _aget_query_embedding(self, query):
            return lookup[query]

    def ndcg(vectors: np.ndarray) -> float:
        _, top = search(test.query_embeddings, vectors, 10, similarity="cosine")
        return 100 * evaluate(top, test.relevance, 10, metrics=("ndcg",))["ndcg@10"]

    def langchain(pairs, seed):
        store = InMemoryVectorStore(Lookup())
        store.add_texts(data.doc_texts, ids=list(data.doc_ids))
        retriever = NudgeRetriever(
            vectorstore=store, k=10, state_dir="memory", solver_params={"random_state": seed}
        )
        result = retriever.fit(pairs).tune_result
        got = store.get_by_ids(list(data.doc_ids))
        vectors = np.asarray([store.store[d.id]["vector"] for d in got], dtype=np.float32)
        return ndcg(vectors), result

    def llama(pairs, seed):
        by_doc: dict[str, list[str]] = {}
        for question, doc_id in pairs:
            by_doc.setdefault(doc_id, []).append(question)
        nodes = [
            TextNode(
                id_=doc_id,
                text=data.doc_texts[k],
                embedding=doc_vectors[k].tolist(),
                metadata=(  # the question extractor's format: numbered lines
                    {
                        DEFAULT_QUESTIONS_KEY: "\n".join(
                            f"{j + 1}. {q}" for j, q in enumerate(by_doc[doc_id])
                        )
                    }
                    if doc_id in by_doc
                    else {}
                ),
                excluded_embed_metadata_keys=[DEFAULT_QUESTIONS_KEY],
            )
            for k, doc_id in enumerate(data.doc_ids)
        ]
        index = VectorStoreIndex(nodes, embed_model=LlamaLookup())
        engine = NudgeFinetuneEngine.from_index(
            index,
            embed_model=LlamaLookup(),
            state_dir="memory",
            solver_params={"random_state": seed},
        )
        result = engine.finetune()
        table = index.vector_store.data.embedding_dict
        return ndcg(np.asarray([table[d] for d in data.doc_ids], dtype=np.float32)), result

    train = _split_pairs(data, "train")
    both = train + _split_pairs(data, "dev")
    print(f"untuned: {ndcg(doc_vectors):.1f}; NUDGE-N, test nDCG@10, fold seeds 0-{args.seeds - 1}")
    print()
    print("| framework | pairs | nDCG@10 per seed | mean | min | gamma per seed |")
    print("|---|---|---|---|---|---|")
    for framework, run in (
        ("LangChain NudgeRetriever.fit", langchain),
        ("LlamaIndex finetune()", llama),
    ):
        for pairs_name, pairs in (("train", train), ("train + dev", both)):
            scores, gammas = [], []
            for seed in range(args.seeds):
                score, result = run(pairs, seed)
                scores.append(score)
                gammas.append(result.gamma)
            print(
                f"| {framework} | {pairs_name} | {', '.join(f'{x:.1f}' for x in scores)} "
                f"| {np.mean(scores):.1f} | {min(scores):.1f} | {', '.join(f'{g:g}' for g in gammas)} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
