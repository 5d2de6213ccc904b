"""Synthetic retrieval tasks with a semantic gap between queries and documents.

The generator mimics FAQ-style retrieval data where fine-tuning document embeddings pays:

* documents are unit vectors clustered around topic centres;
* an *intent* is a small group of 1-3 documents of one topic (the first is the primary
  answer, grade 2; the others grade 1), two distractor documents of the same topic, and a
  random intent direction that the documents do not contain;
* every query is a paraphrase of one intent: its embedding mixes the mean of the intent's
  documents, the mean of its distractors, the intent direction, a hidden "query-style"
  shift shared by all queries, and per-query noise, then is normalised.

Intents are shared across the train / dev / test splits (about 80 % of test queries have an
answer that also answers training queries with the defaults), so moving a document toward
its training queries (what NUDGE does) brings it closer to the unseen paraphrases. With the
defaults, untuned cosine retrieval reaches a test recall@10 of about 0.47 (nDCG@10 about
0.31), and a simple move of each answered document toward its training queries about 0.8.
The query weights are given for dimension 128 and scaled by ``sqrt(dim / 128)``, so the
difficulty hardly depends on the dimension.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any, overload

import numpy as np

from nudge_rag._data import EmbeddedDataset, EmbeddedSplit
from nudge_rag._queryset import Relevance
from nudge_rag._validation import check_positive_int

logger = logging.getLogger(__name__)

__all__ = ["make_retrieval_task", "write_memmap_corpus", "make_scale_task"]

_CHUNK = 4096  # rows per random stream in write_memmap_corpus (block-size invariance)


class _IndexIds(Sequence[str]):
    """Lazy ids ``f"{prefix}{i}"`` for ``i < n`` (no list of millions of strings)."""

    def __init__(self, prefix: str, n: int) -> None:
        self._prefix = prefix
        self._n = n

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [f"{self._prefix}{j}" for j in range(*i.indices(self._n))]
        j = int(i)
        if j < 0:
            j += self._n
        if not 0 <= j < self._n:
            msg = f"id index {i} out of range for {self._n} ids"
            raise IndexError(msg)
        return f"{self._prefix}{j}"

    def __repr__(self) -> str:
        return f"<{self._n} ids {self._prefix}0 .. {self._prefix}{self._n - 1}>"


def make_retrieval_task(
    n_docs: int = 5000,
    dim: int = 128,
    n_train: int = 3000,
    n_dev: int = 500,
    n_test: int = 1000,
    *,
    n_topics: int = 50,
    queries_per_intent: float = 2.0,
    topic_spread: float = 0.5,
    confusion: float = 1.0,
    style_weight: float = 0.5,
    intent_weight: float = 2.5,
    noise: float = 1.0,
    random_state: int | None = 0,
) -> EmbeddedDataset:
    """Generate a retrieval task whose untuned cosine retrieval is mediocre but tunable.

    Args:
        n_docs: number of documents.
        dim: embedding dimension.
        n_train: training queries.
        n_dev: development (validation) queries.
        n_test: test queries.
        n_topics: number of document clusters.
        queries_per_intent: mean number of queries per intent; intents are shared across
            the splits, so larger values give more test queries with training paraphrases.
        topic_spread: spread of documents around their topic centre (larger: easier).
        confusion: mean weight of the intent's distractor documents (two other documents of
            the topic) in its queries; near 1 the distractors rank as high as the answers.
        style_weight: weight of the query-style shift shared by all queries.
        intent_weight: weight of the per-intent direction absent from the documents (the
            part NUDGE can learn from training queries).
        noise: weight of per-query noise.
        random_state: seed for ``np.random.default_rng``.

    Returns:
        An :class:`EmbeddedDataset` with unit-norm float32 ``doc_embeddings``
        ``(n_docs, dim)``, ``doc_ids`` ``"d0", "d1", ...`` and splits ``train``, ``dev``,
        ``test`` (query ids ``"train-0"``, ...; no texts), relevance graded 2 (primary
        document) and 1.

    Example:
        >>> task = make_retrieval_task(n_docs=500, dim=32, n_train=300, n_dev=50, n_test=100)
        >>> task.doc_embeddings.shape, task.test.n_queries
        ((500, 32), 100)
    """
    n_docs = check_positive_int(n_docs, "n_docs")
    dim = check_positive_int(dim, "dim", minimum=2)
    n_topics = check_positive_int(n_topics, "n_topics")
    counts = _check_counts(n_train, n_dev, n_test)
    if not queries_per_intent >= 1:
        msg = f"queries_per_intent must be >= 1, got {queries_per_intent}"
        raise ValueError(msg)
    rng = np.random.default_rng(random_state)
    centres = _unit(rng.standard_normal((n_topics, dim), dtype=np.float32))
    topic = rng.integers(0, n_topics, size=n_docs)
    docs = _docs_near(centres[topic], topic_spread, rng)

    n_queries = int(sum(counts))
    n_intents = max(1, min(n_docs, int(round(n_queries / queries_per_intent))))
    primary = rng.choice(n_docs, size=n_intents, replace=False)
    relevance_all, distractors = _make_intents(topic, primary, rng, n_topics=n_topics)
    intent_of_query = _assign_queries(n_intents, n_queries, rng)
    queries = _make_queries(
        docs,
        relevance_all,
        intent_of_query,
        rng,
        distractors=distractors,
        confusion=confusion,
        style_weight=style_weight,
        intent_weight=intent_weight,
        noise=noise,
    )
    splits = _split_queries(queries, relevance_all.subset(intent_of_query), counts, rng)
    logger.debug(
        "synthetic task: %d docs x %d dims, %d intents, queries %s",
        n_docs,
        dim,
        n_intents,
        counts,
    )
    return EmbeddedDataset(
        doc_ids=_IndexIds("d", n_docs),
        doc_embeddings=docs,
        splits=splits,
        name=f"synthetic-{n_docs}x{dim}",
    )


def write_memmap_corpus(
    path: str | PathLike[str],
    n_docs: int,
    dim: int,
    random_state: int | None = 0,
    *,
    n_topics: int = 1000,
    topic_spread: float = 0.5,
    block: int = 65536,
) -> Path:
    """Write a clustered, unit-norm float32 corpus ``.npy`` without holding it in memory.

    Rows are generated in fixed chunks of 4096, each from its own seeded stream, so the file
    does not depend on ``block`` (which only bounds memory: ``block x dim`` float32 at once).

    Args:
        path: the ``.npy`` file to create (overwritten).
        n_docs: rows.
        dim: columns.
        random_state: seed.
        n_topics: number of cluster centres.
        topic_spread: spread of documents around their centre.
        block: rows written per step.

    Returns:
        ``path`` as a :class:`~pathlib.Path`; open it with ``np.load(path, mmap_mode="r")``.
    """
    n_docs = check_positive_int(n_docs, "n_docs")
    dim = check_positive_int(dim, "dim", minimum=2)
    block = check_positive_int(block, "block")
    n_topics = check_positive_int(n_topics, "n_topics")
    path = Path(path)
    seed = 0 if random_state is None else int(random_state)
    centres = _unit(
        np.random.default_rng([seed, 0, 0]).standard_normal((n_topics, dim), dtype=np.float32)
    )
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_docs, dim))
    try:
        rows_per_step = max(_CHUNK, (block // _CHUNK) * _CHUNK)
        for start in range(0, n_docs, rows_per_step):
            stop = min(start + rows_per_step, n_docs)
            for c0 in range(start, stop, _CHUNK):
                c1 = min(c0 + _CHUNK, n_docs)
                rng = np.random.default_rng([seed, 1, c0 // _CHUNK])
                topic = rng.integers(0, n_topics, size=c1 - c0)
                out[c0:c1] = _docs_near(centres[topic], topic_spread, rng)
            out.flush()
    finally:
        del out
    logger.info("wrote %s: %d x %d float32", path, n_docs, dim)
    return path


def make_scale_task(
    corpus_path: str | PathLike[str],
    n_train: int = 70_000,
    n_dev: int = 10_000,
    n_test: int = 10_000,
    n_answered_docs: int = 100_000,
    *,
    random_state: int | None = 0,
    style_weight: float = 0.5,
    intent_weight: float = 2.5,
    noise: float = 1.0,
) -> EmbeddedDataset:
    """Queries over a large ``.npy`` corpus, reading only the rows that get queries.

    The answered documents (a random sample of ``n_answered_docs`` rows) are partitioned into
    intents of 1-3 documents (the first graded 2, the others 1), so exactly that many
    documents are answers; the queries are paraphrases of the intents spread over the splits
    as in :func:`make_retrieval_task`. Only the answered rows
    are read from disk; the corpus is returned as a read-only memmap.

    Args:
        corpus_path: a ``(n_docs, dim)`` float32 ``.npy`` (e.g. from
            :func:`write_memmap_corpus`).
        n_train: training queries.
        n_dev: development (validation) queries.
        n_test: test queries.
        n_answered_docs: documents that are primary answers of an intent (at most n_docs).
        random_state: seed.
        style_weight: weight of the shared query-style shift.
        intent_weight: weight of the per-intent direction.
        noise: weight of per-query noise.

    Returns:
        An :class:`EmbeddedDataset` whose ``doc_embeddings`` is the memmap of ``corpus_path``
        and whose ``doc_ids`` are lazy (``"d0"``, ``"d1"``, ...).
    """
    corpus = np.load(Path(corpus_path), mmap_mode="r")
    if corpus.ndim != 2 or corpus.dtype != np.float32:
        msg = (
            f"corpus_path must hold a 2-D float32 array, got shape {corpus.shape} "
            f"and dtype {corpus.dtype}"
        )
        raise ValueError(msg)
    n_docs = corpus.shape[0]
    counts = _check_counts(n_train, n_dev, n_test)
    n_answered = check_positive_int(n_answered_docs, "n_answered_docs")
    if n_answered > n_docs:
        msg = f"n_answered_docs must be at most the corpus size {n_docs}, got {n_answered}"
        raise ValueError(msg)
    rng = np.random.default_rng(random_state)
    answered = np.sort(rng.choice(n_docs, size=n_answered, replace=False))
    answered_emb = np.asarray(corpus[answered], dtype=np.float32)  # reads only these rows
    # Partition the answered docs (shuffled) into intents of 1-3 docs, so that exactly
    # n_answered_docs documents are answers; the first of each intent has grade 2.
    sizes = rng.choice(np.arange(1, 4), size=n_answered, p=[0.5, 0.3, 0.2])
    ends = np.cumsum(sizes)
    n_intents = int(np.searchsorted(ends, n_answered)) + 1
    ends = np.minimum(ends[:n_intents], n_answered)
    indptr = np.concatenate(([0], ends)).astype(np.int64)
    members = rng.permutation(n_answered).astype(np.int64)
    grades = np.ones(n_answered, dtype=np.int64)
    grades[indptr[:-1]] = 2
    local = Relevance(indptr, members, grades)
    intent_of_query = _assign_queries(n_intents, int(sum(counts)), rng)
    queries = _make_queries(
        answered_emb,
        local,
        intent_of_query,
        rng,
        style_weight=style_weight,
        intent_weight=intent_weight,
        noise=noise,
    )
    relevance_all = Relevance(local.indptr, answered[local.indices], local.grades)
    splits = _split_queries(queries, relevance_all.subset(intent_of_query), counts, rng)
    return EmbeddedDataset(
        doc_ids=_IndexIds("d", n_docs),
        doc_embeddings=corpus,
        splits=splits,
        name=f"scale-{Path(corpus_path).stem}",
    )


# ---------------------------------------------------------------------- helpers
def _check_counts(n_train: Any, n_dev: Any, n_test: Any) -> tuple[int, int, int]:
    counts = (
        check_positive_int(n_train, "n_train", minimum=0),
        check_positive_int(n_dev, "n_dev", minimum=0),
        check_positive_int(n_test, "n_test", minimum=0),
    )
    if sum(counts) == 0:
        msg = "n_train + n_dev + n_test must be at least 1, got 0 queries"
        raise ValueError(msg)
    return counts


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, np.finfo(np.float32).tiny, out=norms)
    return (x / norms).astype(np.float32, copy=False)


def _docs_near(centres: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors around the given ``(n, dim)`` centres."""
    n, dim = centres.shape
    noise = rng.standard_normal((n, dim), dtype=np.float32) * np.float32(spread / np.sqrt(dim))
    return _unit(centres + noise)


def _make_intents(
    topic: np.ndarray,
    primary: np.ndarray,
    rng: np.random.Generator,
    *,
    n_topics: int,
) -> tuple[Relevance, np.ndarray]:
    """Intents: 1-3 answer documents of one topic (primary first) and 2 distractors.

    Returns:
        ``(relevance, distractors)``: one relevance row per intent (grade 2 for the primary
        document, 1 for the others) and ``(n_intents, 2)`` int64 distractor rows (documents
        of the same topic; they may coincide with an answer in tiny topics).
    """
    n_intents = primary.size
    order = np.argsort(topic, kind="stable")
    starts = np.searchsorted(topic[order], np.arange(n_topics))
    sizes = np.bincount(topic, minlength=n_topics)
    t = topic[primary]
    pick = rng.integers(0, np.iinfo(np.int64).max, size=(n_intents, 4)) % sizes[t][:, None]
    same_topic = order[starts[t][:, None] + pick]  # (n_intents, 4) docs of the same topic
    cand = np.concatenate([primary[:, None], same_topic[:, :2]], axis=1)
    n_extra = rng.choice(3, size=n_intents, p=[0.5, 0.3, 0.2])
    keep = np.arange(3)[None, :] <= n_extra[:, None]
    # drop repeats of a document within an intent (keep the first occurrence)
    keep[:, 1] &= cand[:, 1] != cand[:, 0]
    keep[:, 2] &= (cand[:, 2] != cand[:, 0]) & (cand[:, 2] != cand[:, 1])
    grades = np.broadcast_to(np.array([2, 1, 1], dtype=np.int64), cand.shape)
    indptr = np.zeros(n_intents + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    relevance = Relevance(indptr, cand[keep].astype(np.int64), grades[keep])
    return relevance, same_topic[:, 2:].astype(np.int64)


def _assign_queries(n_intents: int, n_queries: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_queries,)`` int64 intent of each query: each intent once, then random ones."""
    base = rng.permutation(n_intents)[: min(n_intents, n_queries)]
    rest = rng.integers(0, n_intents, size=n_queries - base.size)
    return np.concatenate([base, rest]).astype(np.int64)


def _make_queries(
    docs: np.ndarray,
    intents: Relevance,
    intent_of_query: np.ndarray,
    rng: np.random.Generator,
    *,
    distractors: np.ndarray | None = None,
    confusion: float = 0.0,
    style_weight: float,
    intent_weight: float,
    noise: float,
) -> np.ndarray:
    """``(n_queries, dim)`` unit float32 query embeddings (see the module docstring)."""
    dim = docs.shape[1]
    n_intents = intents.n_queries
    weights = intents.grades.astype(np.float32)
    mean = np.zeros((n_intents, dim), dtype=np.float32)
    np.add.at(mean, intents.query_of_pair(), docs[intents.indices] * weights[:, None])
    mean = _unit(mean)
    if distractors is not None and confusion > 0:
        beta = rng.uniform(0.5, 1.5, size=(n_intents, 1)).astype(np.float32) * confusion
        mean = mean + beta * _unit(docs[distractors].sum(axis=1))
    # A random unit vector moves the score of a document by about 1 / sqrt(dim); scaling the
    # weights by sqrt(dim / 128) keeps the difficulty about the same in any dimension.
    scale = np.float32(np.sqrt(dim / 128.0))
    style_weight, intent_weight, noise = (w * scale for w in (style_weight, intent_weight, noise))
    style = _unit(rng.standard_normal((1, dim), dtype=np.float32))
    direction = _unit(rng.standard_normal((n_intents, dim), dtype=np.float32))
    n_queries = intent_of_query.size
    jitter = rng.standard_normal((n_queries, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
    queries = (
        mean[intent_of_query]
        + np.float32(style_weight) * style
        + np.float32(intent_weight) * direction[intent_of_query]
        + np.float32(noise) * jitter
    )
    return _unit(queries)


def _split_queries(
    queries: np.ndarray,
    relevance: Relevance,
    counts: tuple[int, int, int],
    rng: np.random.Generator,
) -> dict[str, EmbeddedSplit]:
    """Deal the queries into train / dev / test at random."""
    order = rng.permutation(queries.shape[0])
    bounds = np.concatenate(([0], np.cumsum(counts)))
    splits = {}
    for name, lo, hi in zip(("train", "dev", "test"), bounds[:-1], bounds[1:], strict=True):
        rows = np.sort(order[lo:hi])
        splits[name] = EmbeddedSplit(
            name=name,
            query_ids=_IndexIds(f"{name}-", rows.size),
            query_embeddings=queries[rows],
            relevance=relevance.subset(rows),
        )
    return splits
