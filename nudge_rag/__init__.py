"""nudge-rag: fine-tune the document embeddings stored in a RAG vector store (NUDGE).

NUDGE (Zeighami et al., arXiv 2409.02343) moves each document embedding toward the
embeddings of the training queries it answers, within a bounded region, with the step size
chosen on validation queries. The model is never touched. This package depends on numpy and
scipy only; framework adapters live in ``llama_index_nudge`` and ``langchain_nudge``.
"""

from nudge_rag import data, pairs  # noqa: F401 - nudge_rag.data, nudge_rag.pairs
from nudge_rag._errors import (
    DimensionMismatchError,
    MetricMismatchError,
    StateDirError,
    UnknownIdError,
    UnsupportedStoreError,
)
from nudge_rag._feedback import (
    FeedbackLog,
    FeedbackPairs,
    TuneInProgressError,
    tune_from_feedback,
)
from nudge_rag._metrics import Relevance, evaluate
from nudge_rag._query_adapter import QueryAdapter
from nudge_rag._queryset import QuerySet
from nudge_rag._report import evaluate_store, write_report
from nudge_rag._search import search
from nudge_rag._solver import DEFAULT_GAMMAS, NotFittedError, NudgeM, NudgeN
from nudge_rag._store import (
    BaseEmbeddingStore,
    EmbeddingStore,
    SearchableEmbeddingStore,
    check_similarity,
)
from nudge_rag._tune import StoreTuner, TuneResult, make_solver, resolve_state_dir, tune_store
from nudge_rag._writeback import (
    StoreBusyError,
    WriteBack,
    WriteBackError,
    WriteBackStatus,
    WriteReport,
)
from nudge_rag.backends import ArrayStore, backend_for

__version__ = "0.1.0"

__all__ = [
    "ArrayStore",
    "BaseEmbeddingStore",
    "DEFAULT_GAMMAS",
    "DimensionMismatchError",
    "EmbeddingStore",
    "FeedbackLog",
    "FeedbackPairs",
    "MetricMismatchError",
    "NotFittedError",
    "NudgeM",
    "NudgeN",
    "QueryAdapter",
    "QuerySet",
    "Relevance",
    "SearchableEmbeddingStore",
    "StateDirError",
    "StoreTuner",
    "TuneInProgressError",
    "TuneResult",
    "UnknownIdError",
    "UnsupportedStoreError",
    "StoreBusyError",
    "WriteBack",
    "WriteBackError",
    "WriteBackStatus",
    "WriteReport",
    "backend_for",
    "check_similarity",
    "evaluate",
    "evaluate_store",
    "make_solver",
    "resolve_state_dir",
    "search",
    "tune_from_feedback",
    "tune_store",
    "write_report",
    "__version__",
]
