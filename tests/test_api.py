"""The public API: ``nudge_rag.__all__`` is pinned (LangChain's ``test_all_imports``)."""

from __future__ import annotations

import nudge_rag
import nudge_rag.backends

EXPECTED = [
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
    "__version__",
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
]


def test_all_is_pinned():
    assert sorted(nudge_rag.__all__) == sorted(EXPECTED)
    for name in nudge_rag.__all__:
        assert hasattr(nudge_rag, name), name


def test_backends_all_resolves():
    for name in nudge_rag.backends.__all__:
        assert hasattr(nudge_rag.backends, name), name


SUBMODULES = {
    "nudge_rag.data": [
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
    ],
    "nudge_rag.pairs": ["group_pairs", "normalize_pairs", "parse_questions"],
}


def test_submodules_all_is_pinned():
    import importlib

    for module_name, expected in SUBMODULES.items():
        module = importlib.import_module(module_name)
        assert sorted(module.__all__) == sorted(expected), module_name
        for name in module.__all__:
            assert hasattr(module, name), f"{module_name}.{name}"
        # not at the top level too: one place per name
        assert not set(expected) & set(nudge_rag.__all__)
