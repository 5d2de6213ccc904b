"""Dataset mode: the drop-in for llama_index.experimental.nudge.Nudge."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core", reason="pip install 'nudge-rag[llama-index]'")

import numpy as np
from llama_helpers import EmbeddingQAFinetuneDataset, LookupEmbedding
from llama_index_nudge import Nudge

from nudge_rag import NudgeM, NudgeN, QuerySet
from nudge_rag._data import RetrievalDataset


@pytest.fixture
def qa(toy):
    """The toy data as an EmbeddingQAFinetuneDataset, with an embed model serving its texts."""
    docs, questions = toy
    corpus = {f"d{k}": f"document {k}" for k in range(12)}
    texts = list(questions)
    dataset = EmbeddingQAFinetuneDataset(
        queries={f"q{j}": t for j, t in enumerate(texts)},
        corpus=corpus,
        relevant_docs={f"q{j}": [f"d{j // 2}"] for j in range(len(texts))},
    )
    embed = LookupEmbedding({**questions, **{t: docs[k] for k, t in enumerate(corpus.values())}})
    return dataset, embed


def _queryset(toy, rows):
    docs, questions = toy
    vectors = np.asarray(list(questions.values()))
    return QuerySet(vectors[rows], [[j // 2] for j in rows])


@pytest.mark.parametrize(("use_nudge_n", "solver"), [(True, NudgeN), (False, NudgeM)])
def test_matches_the_solver_on_the_arrays(toy, qa, use_nudge_n, solver):
    docs, _ = toy
    dataset, embed = qa
    val = EmbeddingQAFinetuneDataset(
        queries={q: dataset.queries[q] for q in ("q0", "q5")},
        corpus=dataset.corpus,
        relevant_docs={q: dataset.relevant_docs[q] for q in ("q0", "q5")},
    )
    nudge = Nudge(
        embed_model=embed, train_dataset=dataset, val_dataset=val, use_nudge_n=use_nudge_n
    )
    np.testing.assert_allclose(nudge.get_finetuned_corpus_embeddings(), docs, atol=1e-6)
    nudge.finetune()
    expected = (
        solver().fit(docs, _queryset(toy, list(range(24))), _queryset(toy, [0, 5])).embeddings_
    )
    np.testing.assert_allclose(nudge.get_finetuned_corpus_embeddings(), expected, atol=1e-5)
    as_dict = nudge.get_finetuned_corpus_embeddings(as_dict=True)
    assert list(as_dict) == list(dataset.corpus)
    np.testing.assert_allclose(as_dict["d3"], expected[3], atol=1e-5)


def test_json_path_and_retrieval_dataset(toy, qa, tmp_path):
    dataset, embed = qa
    dataset.save_json(str(tmp_path / "train.json"))
    a = Nudge(embed, str(tmp_path / "train.json"), solver_params={"gamma": 0.3})
    b = Nudge(
        embed, RetrievalDataset.from_json(tmp_path / "train.json"), solver_params={"gamma": 0.3}
    )
    a.finetune()
    b.finetune()
    np.testing.assert_allclose(
        a.get_finetuned_corpus_embeddings(), b.get_finetuned_corpus_embeddings()
    )


def test_insert_data_and_finetune(toy, qa):
    docs, questions = toy
    dataset, embed = qa
    first = {
        "queries": {f"q{j}": dataset.queries[f"q{j}"] for j in range(12)},
        "corpus": {f"d{k}": dataset.corpus[f"d{k}"] for k in range(6)},
        "relevant_docs": {f"q{j}": [f"d{j // 2}"] for j in range(12)},
    }
    batch = {
        "queries": {f"q{j}": dataset.queries[f"q{j}"] for j in range(12, 24)},
        "corpus": {f"d{k}": dataset.corpus[f"d{k}"] for k in range(6, 12)},
        "relevant_docs": {f"q{j}": [f"d{j // 2}"] for j in range(12, 24)},
    }
    params = {"solver_params": {"gamma": 0.3}}
    nudge = Nudge(embed, first, **params)
    nudge.finetune()
    assert nudge.get_finetuned_corpus_embeddings().shape == (6, 8)
    result = nudge.insert_data_and_finetune(batch)
    assert len(result.changed_ids) == 12
    # Same as tuning everything at once from the original embeddings (no compounding).
    whole = Nudge(embed, dataset, **params)
    whole.finetune()
    np.testing.assert_allclose(
        nudge.get_finetuned_corpus_embeddings(), whole.get_finetuned_corpus_embeddings(), atol=1e-6
    )


def test_nudge_embeds_queries_as_queries_like_the_original(toy):
    """``llama_index.experimental.nudge.Nudge`` embeds queries with get_query_embedding."""
    from llama_index_nudge import Nudge

    docs, questions = toy
    calls = {"query": 0, "text": 0}

    class Counting(LookupEmbedding):
        def _get_query_embedding(self, query):
            calls["query"] += 1
            return super()._get_query_embedding(query)

    corpus = {f"d{k}": f"document {k}" for k in range(len(docs))}
    table = {**questions, **{f"document {k}": docs[k] for k in range(len(docs))}}
    dataset = {
        "queries": {f"q{j}": text for j, text in enumerate(questions)},
        "corpus": corpus,
        "relevant_docs": {f"q{j}": [f"d{j // 2}"] for j in range(len(questions))},
    }
    nudge = Nudge(Counting(table), dataset, solver_params={"gamma": 0.3})
    nudge.finetune()
    assert calls["query"] == len(questions)
