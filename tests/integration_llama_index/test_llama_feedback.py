"""FeedbackRetriever around index.as_retriever() and NudgeFinetuneEngine.finetune_from_feedback:
logged searches, query ids on node copies (the stored nodes untouched), feedback checks, and a
re-tune from the originals."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_index.core", reason="pip install 'nudge-rag[llama-index]'")

import numpy as np
from llama_helpers import LookupEmbedding, stored, toy_nodes
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import MetadataMode
from llama_index_nudge import FeedbackRetriever, NudgeFinetuneEngine
from numpy.testing import assert_allclose

from nudge_rag import FeedbackLog, UnknownIdError


class CountingLookup(LookupEmbedding):
    calls: int = 0

    def _get_query_embedding(self, query: str) -> list[float]:
        self.calls += 1
        return super()._get_query_embedding(query)


@pytest.fixture
def setup(toy, tmp_path):
    docs, questions = toy
    embed = CountingLookup(questions)
    index = VectorStoreIndex(toy_nodes(docs, questions), embed_model=embed)
    log = FeedbackLog(tmp_path / "feedback.db")
    retriever = FeedbackRetriever(index.as_retriever(similarity_top_k=4), log)
    return index, embed, log, retriever, questions


def _thumbs_up(retriever, questions) -> int:
    """Question ``2k``/``2k+1`` belongs to node ``d{k}``; mark it when it is shown."""
    marked = 0
    for j, text in enumerate(questions):
        nodes = retriever.retrieve(text)
        target = f"d{j // 2}"
        if target in [n.node.node_id for n in nodes]:
            retriever.feedback(nodes[0].node.metadata["nudge_query_id"], target)
            marked += 1
    return marked


def test_retrieve_logs_and_tags_copies(setup):
    index, embed, log, retriever, questions = setup
    text = next(iter(questions))
    plain = index.as_retriever(similarity_top_k=4).retrieve(text)
    assert retriever.embedder_id.startswith("CountingLookup(lookup)#")  # one probe, once
    before = embed.calls
    nodes = retriever.retrieve(text)
    assert embed.calls == before + 1  # embedded once; the wrapped retriever reused it
    assert [n.node.node_id for n in nodes] == [n.node.node_id for n in plain]
    assert_allclose([n.score for n in nodes], [n.score for n in plain], rtol=1e-6)
    qid = nodes[0].node.metadata["nudge_query_id"]
    logged = log.get_query(qid)
    assert logged.shown_ids == [n.node.node_id for n in nodes]
    assert logged.text == text
    assert logged.store == "SimpleVectorStore" == retriever.store_name
    assert_allclose(logged.vector, questions[text], rtol=1e-6)
    # The query id is on copies only, and hidden from the LLM's view of the metadata.
    node = nodes[0].node
    assert "nudge_query_id" not in node.get_content(metadata_mode=MetadataMode.LLM)
    assert "nudge_query_id" not in node.get_content(metadata_mode=MetadataMode.EMBED)
    stored_node = index.docstore.get_node(node.node_id)
    assert "nudge_query_id" not in stored_node.metadata
    assert stored_node is not node


async def test_aretrieve_logs_too(setup):
    _, _, log, retriever, questions = setup
    nodes = await retriever.aretrieve(next(iter(questions)))
    qid = nodes[0].node.metadata["nudge_query_id"]
    assert log.get_query(qid).shown_ids == [n.node.node_id for n in nodes]


def test_feedback_errors(setup):
    _, _, _, retriever, questions = setup
    nodes = retriever.retrieve(next(iter(questions)))
    qid = nodes[0].node.metadata["nudge_query_id"]
    unshown = next(f"d{k}" for k in range(12) if f"d{k}" not in {n.node.node_id for n in nodes})
    with pytest.raises(UnknownIdError, match="was not shown"):
        retriever.feedback(qid, unshown)
    with pytest.raises(UnknownIdError, match="not in the feedback log"):
        retriever.feedback("no-such-query", nodes[0].node.node_id)
    with pytest.raises(TypeError, match="FeedbackLog"):
        FeedbackRetriever(retriever.retriever, "feedback.db")


def test_finetune_from_feedback(setup):
    index, embed, log, retriever, questions = setup
    originals = stored(index)
    assert _thumbs_up(retriever, questions) > 0
    engine = NudgeFinetuneEngine(
        index.vector_store, retriever.embed_model, state_dir=None, solver_params={"gamma": 0.3}
    )
    calls = embed.calls
    result = engine.finetune_from_feedback(log)
    assert embed.calls == calls + 1  # the model's fingerprint probe; no question embedded
    assert result.changed_ids and result.gamma == 0.3
    marked = {d for ids in result.feedback_pairs.answer_ids for d in ids}
    assert set(result.changed_ids) == marked
    tuned = stored(index)
    for node_id in marked:
        assert not np.allclose(tuned[node_id], originals[node_id])
    # More searches on the tuned index, then a re-run: from the originals, same pairs, same
    # vectors (the new queries have no feedback).
    retriever.retrieve(next(iter(questions)))
    engine.finetune_from_feedback(log)
    for node_id, vector in stored(index).items():
        assert_allclose(vector, tuned[node_id], atol=1e-6)
    engine.restore()
    for node_id, vector in stored(index).items():
        assert_allclose(vector, originals[node_id])


def test_finetune_from_feedback_needs_feedback_for_this_store(setup):
    index, _, log, retriever, questions = setup
    _thumbs_up(retriever, questions)
    engine = NudgeFinetuneEngine(index.vector_store, retriever.embed_model, state_dir=None)
    with pytest.raises(ValueError, match="no positive feedback in the log for store 'other'"):
        engine.finetune_from_feedback(log, store_name="other")
