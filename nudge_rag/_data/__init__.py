"""Retrieval datasets, one module per source.

* :mod:`._retrieval` — :class:`RetrievalDataset`, the ecosystem's id-keyed text triple
  (``queries``, ``corpus``, ``relevant_docs``; LlamaIndex's ``EmbeddingQAFinetuneDataset``
  JSON), and :func:`split_dataset`.
* :mod:`._beir` — :func:`load_beir`: a BEIR folder as a :class:`RetrievalDataset`.
* :mod:`._embedded` — :class:`EmbeddedDataset` / :class:`EmbeddedSplit`: precomputed
  embeddings aligned to ids with graded relevance (:func:`load_embedded`); what the solver,
  search and metrics consume.
* :mod:`._readers` — the JSON / JSON-lines / qrels / ids / ``.npy`` readers the others share,
  and :class:`DataFileError`, raised for every file whose content is wrong.
"""

from nudge_rag._data._beir import load_beir
from nudge_rag._data._embedded import EmbeddedDataset, EmbeddedSplit, load_embedded
from nudge_rag._data._readers import DataFileError
from nudge_rag._data._retrieval import RetrievalDataset, split_dataset

__all__ = [
    "DataFileError",
    "EmbeddedDataset",
    "EmbeddedSplit",
    "RetrievalDataset",
    "load_beir",
    "load_embedded",
    "split_dataset",
]
