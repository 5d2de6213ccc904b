"""NUDGE alone vs NUDGE + query adapter, through LangChain's ``NudgeRetriever`` (issue 22).

nfcorpus (``nudge_split``, the stored all-MiniLM-L6-v2 vectors) in an ``InMemoryVectorStore``;
the questions' stored vectors are served by a lookup double, so no model runs. Each row fits
the retriever (``query_adapter="off"``, ``"on"`` or ``"auto"``; the train pairs, with the
dev pairs as validation or cross-validated without them) and measures test nDCG@10 through
``retriever.batch`` (i.e. ``invoke``), then ``restore()`` and measures again.

Out of distribution (the paper's protocol, as ``benchmarks/ood.py``): all questions in two
spherical k-means clusters; tune on 80 % of one cluster (cross-validated), measure on the
whole other cluster. Those rows rank the stored vectors exactly with the retriever's saved
adapter applied to the questions (what ``invoke`` does, ~1,200 questions per cell).

Where the adapter does not help (generated tasks, ``make_retrieval_task`` 3,000 x 64-d
documents, seeds 0-1, default and no query-style shift): NUDGE-N alone vs ``"on"`` vs
``"auto"`` through :class:`nudge_rag.StoreTuner` over an ``ArrayStore``, exact test nDCG@10
with the saved adapter applied (``StoreTuner.adapt_queries``).

Query-time cost: ``QueryAdapter.transform`` of one question (the adapter lookup included,
a ``stat`` of the state), in microseconds, and the retriever's ``invoke`` with and without
a saved adapter.

    python benchmarks/query_adapter.py --data /work/shared/data/nfcorpus
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integrations"))
sys.path.insert(0, str(HERE))

from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402
from langchain_nudge import NudgeRetriever  # noqa: E402
from ood import spherical_kmeans  # noqa: E402

from nudge_rag import Relevance, evaluate, search  # noqa: E402
from nudge_rag.data import load_embedded  # noqa: E402

K = 10


class Lookup(Embeddings):
    """Precomputed vectors by text (documents and questions); numpy rows for speed."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table

    def embed_documents(self, texts):
        return [self.table[t].astype(np.float64) for t in texts]

    def embed_query(self, text):
        return self.table[text].astype(np.float64)


def split_pairs(data, name: str) -> list[tuple[str, str]]:
    split = data.split(name)
    rel = split.relevance
    return [
        (split.query_texts[q], data.doc_ids[int(r)])
        for q in range(split.n_queries)
        for r in rel.indices[rel.indptr[q] : rel.indptr[q + 1]]
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="nfcorpus folder (load_embedded layout)")
    parser.add_argument("--split", default="nudge_split")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--seed", type=int, default=0, help="k-means and 80/20 seed (OOD)")
    parser.add_argument("--no-ood", action="store_true", help="skip the OOD rows")
    parser.add_argument("--no-generated", action="store_true", help="skip the generated-task rows")
    args = parser.parse_args(argv)
    data = load_embedded(args.data, args.split, args.model, mmap=False)
    docs = np.asarray(data.doc_embeddings, dtype=np.float32)
    table = dict(zip(data.doc_texts, docs))
    for name in ("train", "dev", "test"):
        split = data.split(name)
        table.update(zip(split.query_texts, np.asarray(split.query_embeddings)))
    table.update({t.strip(): v for t, v in list(table.items())})  # pairs strip questions
    lookup = Lookup(table)
    store = InMemoryVectorStore(lookup)
    store.add_texts(data.doc_texts, ids=list(data.doc_ids))
    test = data.split("test")
    row_of = {d: r for r, d in enumerate(data.doc_ids)}

    def through_invoke(retriever: NudgeRetriever) -> float:
        results = retriever.batch(list(test.query_texts), config={"max_concurrency": 4}, k=K)
        top = np.full((test.n_queries, K), -1, dtype=np.int64)
        for q, found in enumerate(results):
            rows = [row_of[d.id] for d in found]
            top[q, : len(rows)] = rows
        return 100 * evaluate(top, test.relevance, K, metrics=("ndcg",))["ndcg@10"]

    train, dev = split_pairs(data, "train"), split_pairs(data, "dev")
    state = Path(tempfile.mkdtemp(prefix="nudge_adapter_bench_"))
    print(
        f"{args.data} ({args.split}, {args.model}): {data.n_docs} documents, "
        f"{test.n_queries} test questions; LangChain NudgeRetriever over InMemoryVectorStore, "
        "test nDCG@10 through invoke"
    )
    print()
    print(
        "| query_adapter | pairs | NUDGE gamma | adapter (lambda, blend) | validation nDCG@10: "
        "NUDGE alone -> + adapter | test nDCG@10 | fit s |"
    )
    print("|---|---|---|---|---|---|---|")
    plain = NudgeRetriever(vectorstore=store, k=K, state_dir=state)
    print(f"| untuned | | | | | {through_invoke(plain):.1f} | |", flush=True)
    for mode, val_name, val in (
        ("off", "train, dev as val", dev),
        ("on", "train, dev as val", dev),
        ("auto", "train, dev as val", dev),
        ("off", "train (cross-validated)", None),
        ("on", "train (cross-validated)", None),
        ("auto", "train (cross-validated)", None),
    ):
        retriever = NudgeRetriever(vectorstore=store, k=K, state_dir=state, query_adapter=mode)
        start = time.perf_counter()
        retriever.fit(train, val_pairs=val)
        seconds = time.perf_counter() - start
        result = retriever.tune_result
        scores = result.query_adapter_scores
        adapter, curve = "", ""
        if scores is not None:
            kept = "kept" if result.query_adapter is not None else "not kept"
            adapter = f"{scores['lambda']:g}, {scores['blend']:g} ({kept})"
            curve = f"{100 * scores['nudge']:.1f} -> {100 * scores['nudge+adapter']:.1f}"
        print(
            f"| {mode} | {val_name} | {result.gamma:.3g} | {adapter} | {curve} "
            f"| {through_invoke(retriever):.1f} | {seconds:.1f} |",
            flush=True,
        )
    # Query-time cost, with the last fit's adapter saved (cross-validated, "auto").
    retriever = NudgeRetriever(vectorstore=store, k=K, state_dir=state)
    adapter = retriever.saved_query_adapter()
    cost = ""
    if adapter is not None:
        one = np.asarray(test.query_embeddings[0], dtype=np.float32)
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(2000):
                retriever.saved_query_adapter().transform(one)
            runs.append((time.perf_counter() - start) / 2000 * 1e6)
        # invoke with the adapter vs the store's own search (plain app code), interleaved.
        timed = {"adapter": [], "plain": []}
        for text in list(test.query_texts[:200]):
            start = time.perf_counter()
            retriever.invoke(text)
            timed["adapter"].append(time.perf_counter() - start)
            start = time.perf_counter()
            store.similarity_search(text, k=K)
            timed["plain"].append(time.perf_counter() - start)
        ms = {name: 1e3 * statistics.median(values) for name, values in timed.items()}
        cost = (
            f"Query-time cost of the adapter: {statistics.median(runs):.1f} µs per question "
            f"(lookup of the saved adapter + transform of one {adapter.n_features_in_}-d "
            f"question; median of 5 x 2000). invoke with the adapter {ms['adapter']:.2f} ms "
            f"per question vs {ms['plain']:.2f} ms for the store's own similarity_search "
            f"(InMemoryVectorStore, {data.n_docs} documents; median over 200 questions, "
            "interleaved)."
        )
    retriever.restore()
    print(f"| restore() | | | | | {through_invoke(retriever):.1f} | |")
    if cost:
        print()
        print(cost)
    if not args.no_ood:
        ood(data, docs, lookup, args.seed)
    if not args.no_generated:
        generated()
    return 0


def generated() -> None:
    """NUDGE-N alone vs "on" vs "auto" on generated tasks (the adapter gains little there)."""
    from nudge_rag import ArrayStore, StoreTuner
    from nudge_rag.data import make_retrieval_task

    print()
    print(
        "Generated tasks (make_retrieval_task: 3,000 documents x 64 dims, 1,500 train / "
        "250 dev / 500 test questions), StoreTuner over ArrayStore, test nDCG@10"
    )
    print()
    print("| task | pairs | NUDGE-N alone | on | auto |")
    print("|---|---|---|---|---|")
    for style in (0.5, 0.0):
        for seed in (0, 1):
            data = make_retrieval_task(
                n_docs=3000,
                dim=64,
                n_train=1500,
                n_dev=250,
                n_test=500,
                style_weight=style,
                random_state=seed,
            )
            ids = [str(i) for i in range(data.n_docs)]
            test = data.split("test")

            def embedded(name, data=data, ids=ids):
                split = data.split(name)
                answers = [[ids[r] for r in a] for a in split.relevance.to_lists()]
                return split.query_embeddings, answers

            for pairs, val in (
                ("train, dev as val", embedded("dev")),
                ("train (CV)", (None, None)),
            ):
                cells = []
                for mode in ("off", "on", "auto"):
                    store = ArrayStore(ids, np.asarray(data.doc_embeddings, np.float32).copy())
                    tuner = StoreTuner(store, state_dir="memory", query_adapter=mode)
                    result = tuner.tune_embedded(*embedded("train"), *val)
                    _, top = search(tuner.adapt_queries(test.query_embeddings), store.vectors, K)
                    score = 100 * evaluate(top, test.relevance, K, metrics=("ndcg",))["ndcg@10"]
                    cells.append(f"{score:.1f}")
                    if mode == "auto":
                        cells[-1] += (
                            " (kept)" if result.query_adapter is not None else " (not kept)"
                        )
                task = f"seed {seed}, style_weight {style}"
                print(f"| {task} | {pairs} | " + " | ".join(cells) + " |", flush=True)


def ood(data, docs: np.ndarray, lookup: Lookup, seed: int) -> None:
    """Tune on 80 % of one k-means cluster of all questions, test on the other cluster."""
    splits = [data.split(s) for s in ("train", "dev", "test")]
    texts = [t for s in splits for t in s.query_texts]
    queries = np.concatenate([s.query_embeddings for s in splits]).astype(np.float32)
    rels = [s.relevance for s in splits]
    offsets = np.cumsum([0] + [r.indptr[-1] for r in rels[:-1]])
    relevance = Relevance(
        np.concatenate([[0]] + [r.indptr[1:] + o for r, o in zip(rels, offsets)]),
        np.concatenate([r.indices for r in rels]),
        np.concatenate([r.grades for r in rels]),
    )
    labels = spherical_kmeans(queries, 2, seed)
    clusters = [np.flatnonzero(labels == c) for c in (0, 1)]
    rng = np.random.default_rng(seed)
    fit_rows = []
    for rows in clusters:
        rows = rng.permutation(rows)
        fit_rows.append(np.sort(rows[: int(round(0.8 * rows.size))]))
    print()
    print(
        f"Out of distribution: {len(queries)} questions in two k-means clusters A "
        f"({clusters[0].size}) and B ({clusters[1].size}); tuned on 80 % of one "
        "(cross-validated), nDCG@10 on the whole other cluster"
    )
    print()
    print(
        "| tuned on | untuned | NUDGE-N alone | + adapter (on) | auto | adapter (lambda, blend) |"
    )
    print("|---|---|---|---|---|---|")
    for tune, other, label in ((0, 1, "A, test B"), (1, 0, "B, test A")):
        rows = fit_rows[tune]
        pairs = [
            (texts[q], data.doc_ids[int(d)])
            for q in rows
            for d in relevance.indices[relevance.indptr[q] : relevance.indptr[q + 1]]
        ]
        test_rows = clusters[other]

        def ndcg(vectors: np.ndarray, questions: np.ndarray, rows=test_rows) -> float:
            _, top = search(questions, vectors, K, similarity="cosine")
            return 100 * evaluate(top, relevance.subset(rows), K, metrics=("ndcg",))["ndcg@10"]

        cells = [f"{ndcg(docs, queries[test_rows]):.1f}"]
        chosen = ""
        for mode in ("off", "on", "auto"):
            store = InMemoryVectorStore(lookup)
            store.add_texts(data.doc_texts, ids=list(data.doc_ids))
            retriever = NudgeRetriever(
                vectorstore=store, k=K, state_dir="memory", query_adapter=mode
            )
            retriever.fit(pairs)
            vectors = np.asarray([store.store[d]["vector"] for d in data.doc_ids], dtype=np.float32)
            adapter = retriever.saved_query_adapter()
            questions = queries[test_rows]
            if adapter is not None:
                questions = adapter.transform(questions)
            cells.append(f"{ndcg(vectors, questions):.1f}")
            scores = retriever.tune_result.query_adapter_scores
            if mode == "auto":
                cells[-1] += " (kept)" if adapter is not None else " (not kept)"
            if mode == "on":
                chosen = f"{scores['lambda']:g}, {scores['blend']:g}"
        print(f"| {label} | " + " | ".join(cells) + f" | {chosen} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
