"""Learning from users, simulated on nfcorpus through the public LangChain API.

The train and dev questions of ``nudge_split`` are the users. In each round every user asks
their question through ``NudgeRetriever(..., feedback=FeedbackLog(...))`` (``k=10``), sees the
store's current top 10 and gives a thumbs-up to each shown document that the qrels call
relevant (only what was shown can be marked). Then ``retriever.fit_from_feedback()`` re-tunes
the stored vectors (NUDGE-N, the solver's default gamma rule, from the originals, with every
round's feedback so far; the same question asked again is merged) and the next round searches
the tuned store. Test nDCG@10 is measured after each round on the test questions, which never
give feedback.

Documents go into the store with their stored all-MiniLM-L6-v2 vectors and questions are
embedded by a LangChain ``Embeddings`` that looks the stored vectors up by text
(``queries_*.npy``), so no model runs.

    python benchmarks/feedback_loop.py                       # InMemoryVectorStore, 4 rounds
    python benchmarks/feedback_loop.py --store chroma        # embedded Chroma (cosine HNSW)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_nudge import NudgeRetriever

from nudge_rag import FeedbackLog, evaluate
from nudge_rag.data import load_embedded

DATA = Path(
    os.environ.get("NUDGE_RAG_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
K = 10


class StoredEmbeddings(Embeddings):
    """Serves the dataset's stored vectors by exact text; never embeds anything.

    Document vectors come back as numpy rows: ``InMemoryVectorStore`` then keeps arrays and
    scores a query many times faster than over lists (it stacks every stored vector).
    """

    def __init__(self, documents: dict[str, np.ndarray], queries: dict[str, np.ndarray]):
        self.documents, self.queries = documents, queries

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.documents[t].astype(np.float64) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.queries[text].astype(float).tolist()


def make_store(kind: str, embeddings: Embeddings, texts: list[str], ids: list[str], tmp: Path):
    if kind == "memory":
        store = InMemoryVectorStore(embeddings)
    else:
        import chromadb
        from langchain_chroma import Chroma

        store = Chroma(
            collection_name="nfcorpus",
            embedding_function=embeddings,
            client=chromadb.PersistentClient(path=str(tmp / "chroma")),
            # ef_search above the default 100 keeps HNSW close to exact search on 3.6k docs.
            collection_configuration={"hnsw": {"space": "cosine", "ef_search": 400}},
        )
    for s in range(0, len(ids), 1000):
        store.add_texts(texts[s : s + 1000], ids=ids[s : s + 1000])
    return store


def test_ndcg(searcher: NudgeRetriever, split, row_of: dict[str, int]) -> float:
    rows = np.full((split.n_queries, K), -1, dtype=np.int64)
    for q, text in enumerate(split.query_texts):
        found = [row_of[d.id] for d in searcher.invoke(text, k=K)]
        rows[q, : len(found)] = found
    return 100 * evaluate(rows, split.relevance, k=K)["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["memory", "chroma"], default="memory")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--data", type=Path, default=DATA / "nfcorpus")
    args = parser.parse_args()

    ds = load_embedded(args.data, "nudge_split", mmap=False)
    doc_texts = ds.doc_texts
    ids = [f"d{r}" for r in range(ds.n_docs)]
    row_of = {d: r for r, d in enumerate(ids)}
    queries = {}
    for name in ("train", "dev", "test"):
        split = ds.split(name)
        queries.update(zip(split.query_texts, split.query_embeddings, strict=True))
    embeddings = StoredEmbeddings(dict(zip(doc_texts, ds.doc_embeddings, strict=True)), queries)
    users = []  # (question, set of relevant doc ids)
    for split in (ds.train, ds.dev):
        rel = split.relevance
        for q, text in enumerate(split.query_texts):
            rows = rel.indices[rel.indptr[q] : rel.indptr[q + 1]]
            users.append((text, {ids[r] for r in rows.tolist()}))

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        store = make_store(args.store, embeddings, doc_texts, ids, tmp)
        log = FeedbackLog(tmp / "feedback.db")
        retriever = NudgeRetriever(vectorstore=store, k=K, feedback=log, state_dir=tmp / "state")
        searcher = NudgeRetriever(vectorstore=store, k=K, state_dir=tmp / "state")  # no log
        print(f"store: {type(store).__name__}; users: {len(users)} train+dev questions; "
              f"test: {ds.test.n_queries} questions")  # fmt: skip
        print(f"round 0 (untuned): test nDCG@10 {test_ndcg(searcher, ds.test, row_of):.1f}")
        for r in range(1, args.rounds + 1):
            start = time.perf_counter()
            marked = 0
            for text, relevant in users:
                docs = retriever.invoke(text)
                for doc in docs:
                    if doc.id in relevant:
                        retriever.feedback(doc.metadata["nudge_query_id"], doc.id)
                        marked += 1
            served = time.perf_counter() - start
            start = time.perf_counter()
            retriever.fit_from_feedback()
            fit = time.perf_counter() - start
            result = retriever.tune_result
            pairs = result.feedback_pairs
            chosen = result.method or getattr(result.solver, "gamma_chosen_by_", "?")
            ndcg = test_ndcg(searcher, ds.test, row_of)
            print(
                f"round {r}: {marked} thumbs-up this round; {pairs.n_pairs} pairs on "
                f"{len(pairs)} questions; gamma {result.gamma:.3g} ({chosen}"
                f"{f', {result.n_folds} folds' if result.n_folds else ''}); "
                f"{len(result.changed_ids)} vectors moved; test nDCG@10 {ndcg:.1f} "
                f"(serve {served:.0f} s, fit_from_feedback {fit:.1f} s)"
            )
        log.close()


if __name__ == "__main__":
    main()
