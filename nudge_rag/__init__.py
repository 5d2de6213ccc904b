"""nudge-rag: fine-tune the document embeddings stored in a RAG vector store (NUDGE).

NUDGE (Zeighami et al., arXiv 2409.02343) moves each document embedding toward the
embeddings of the training queries it answers, within a bounded region, with the step size
chosen on validation queries. The model is never touched. This package depends on numpy and
scipy only; framework adapters live in ``llama_index_nudge`` and ``langchain_nudge``.
"""

from nudge_rag._data import (
    EmbeddedDataset,
    EmbeddedSplit,
    RetrievalDataset,
    load_beir,
    load_embedded,
    split_dataset,
)
from nudge_rag._metrics import Relevance, evaluate
from nudge_rag._queryset import QuerySet
from nudge_rag._search import search
from nudge_rag._solver import DEFAULT_GAMMAS, NotFittedError, NudgeM, NudgeN
from nudge_rag._store import ArrayStore, EmbeddingStore, SearchableEmbeddingStore, check_similarity
from nudge_rag._synthetic import make_retrieval_task
from nudge_rag._tune import TuneResult, make_solver, tune_store
from nudge_rag._writeback import WriteBack, WriteBackError

__version__ = "0.1.0"

__all__ = [
    "ArrayStore",
    "DEFAULT_GAMMAS",
    "EmbeddedDataset",
    "EmbeddedSplit",
    "EmbeddingStore",
    "NotFittedError",
    "NudgeM",
    "NudgeN",
    "QuerySet",
    "Relevance",
    "RetrievalDataset",
    "SearchableEmbeddingStore",
    "TuneResult",
    "WriteBack",
    "WriteBackError",
    "check_similarity",
    "evaluate",
    "load_beir",
    "load_embedded",
    "make_retrieval_task",
    "make_solver",
    "search",
    "split_dataset",
    "tune_store",
    "__version__",
]
