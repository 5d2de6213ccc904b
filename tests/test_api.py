"""The public API: ``nudge_rag.__all__`` is pinned (LangChain's ``test_all_imports``)."""

from __future__ import annotations

import nudge_rag
import nudge_rag.backends

EXPECTED = [
    "DataFileError",
    "ArrayStore",
    "BaseEmbeddingStore",
    "DEFAULT_GAMMAS",
    "DimensionMismatchError",
    "EmbeddedDataset",
    "EmbeddedSplit",
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
    "RetrievalDataset",
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
    "__version__",
    "backend_for",
    "check_similarity",
    "evaluate",
    "evaluate_store",
    "group_pairs",
    "load_beir",
    "load_embedded",
    "make_retrieval_task",
    "make_scale_task",
    "make_solver",
    "normalize_pairs",
    "parse_questions",
    "resolve_state_dir",
    "search",
    "split_dataset",
    "tune_from_feedback",
    "tune_store",
    "write_memmap_corpus",
    "write_report",
]


def test_all_is_pinned():
    assert sorted(nudge_rag.__all__) == sorted(EXPECTED)
    for name in nudge_rag.__all__:
        assert hasattr(nudge_rag, name), name


def test_backends_all_resolves():
    for name in nudge_rag.backends.__all__:
        assert hasattr(nudge_rag.backends, name), name
