"""Datasets: BEIR folders, folders with precomputed embeddings, and generated tasks.

``load_beir`` reads a BEIR folder (corpus, queries, qrels) as text; ``load_embedded`` reads
one with precomputed embeddings (``emb/<model>/``); ``split_dataset`` deals a text dataset's
queries into train / dev / test. ``make_retrieval_task`` and ``make_scale_task`` generate
tasks with known answers for tests and benchmarks. Every reader names the file and line of
bad input (:class:`DataFileError`).
"""

from nudge_rag._data import (
    DataFileError,
    EmbeddedDataset,
    EmbeddedSplit,
    RetrievalDataset,
    load_beir,
    load_embedded,
    split_dataset,
)
from nudge_rag._synthetic import make_retrieval_task, make_scale_task, write_memmap_corpus

__all__ = [
    "DataFileError",
    "EmbeddedDataset",
    "EmbeddedSplit",
    "RetrievalDataset",
    "load_beir",
    "load_embedded",
    "make_retrieval_task",
    "make_scale_task",
    "split_dataset",
    "write_memmap_corpus",
]
