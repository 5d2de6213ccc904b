"""LangChain's standard retriever suite, before and after a fit, plus the public API pin."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core", reason="pip install 'nudge-rag[langchain]'")
pytest.importorskip("langchain_tests", reason="pip install 'nudge-rag[test]'")

import langchain_nudge
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_helpers import LookupEmbeddings, toy_vectors
from langchain_nudge import NudgeRetriever
from langchain_tests.integration_tests import RetrieversIntegrationTests

TEXTS = [f"document number {i} about topic {i % 4}" for i in range(12)]
QUERY = "which document is about topic 1?"


def _store() -> InMemoryVectorStore:
    vectors = toy_vectors([*TEXTS, QUERY, "question about document 3?"], dim=8)
    store = InMemoryVectorStore(LookupEmbeddings(vectors))
    store.add_texts(TEXTS, ids=[f"doc-{i}" for i in range(len(TEXTS))])
    return store


class TestNudgeRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[NudgeRetriever]:
        return NudgeRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"vectorstore": _store()}

    @property
    def retriever_query_example(self) -> str:
        return QUERY


class TestFittedNudgeRetrieverStandard(RetrieversIntegrationTests):
    """The same suite on a retriever whose store holds tuned vectors."""

    @property
    def retriever_constructor(self) -> type[NudgeRetriever]:
        class Fitted(NudgeRetriever):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.fit([("question about document 3?", "doc-3")])
                assert self.tune_result.changed_ids == ["doc-3"]

        return Fitted

    @property
    def retriever_constructor_params(self) -> dict:
        return {"vectorstore": _store(), "solver_params": {"gamma": 0.5}}

    @property
    def retriever_query_example(self) -> str:
        return QUERY


def test_all_imports():
    assert sorted(langchain_nudge.__all__) == [
        "NudgeRetriever",
        "ReAddStore",
        "generate_pairs",
        "normalize_pairs",
        "pairs_from_metadata",
        "parse_questions",
        "register_store",
        "store_for",
    ]
    for name in langchain_nudge.__all__:
        assert getattr(langchain_nudge, name) is not None


def test_core_does_not_import_langchain():
    import subprocess
    import sys

    code = "import sys, nudge_rag; assert 'langchain_core' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("variant", ["n", "N", "nudge-n", "m"])
def test_variant_names(variant):
    retriever = NudgeRetriever(vectorstore=_store(), variant=variant)
    assert retriever.variant in ("n", "m")
