"""NudgeRetriever with a FeedbackLog: every search logged, query ids on copies, feedback checks,
re-tunes from the originals, a re-tune while the app serves, InMemoryVectorStore and Chroma."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core", reason="pip install 'nudge-rag[langchain]'")
pytest.importorskip("langchain_tests", reason="pip install 'nudge-rag[test]'")

import threading
import uuid

import numpy as np
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_helpers import LookupEmbeddings, toy_vectors
from langchain_nudge import NudgeRetriever
from langchain_tests.integration_tests import RetrieversIntegrationTests
from numpy.testing import assert_allclose, assert_array_equal

from nudge_rag import FeedbackLog, UnknownIdError

N, DIM = 12, 8
TEXTS = [f"passage {i}" for i in range(N)]
IDS = [f"doc-{i}" for i in range(N)]
QUESTIONS = [f"question about passage {i}?" for i in range(N)]


class CountingEmbeddings(LookupEmbeddings):
    """The lookup double, counting query embeddings."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.query_calls = 0

    def embed_query(self, text: str):
        self.query_calls += 1
        return super().embed_query(text)


def _vectors(seed: int = 0) -> dict[str, np.ndarray]:
    """Unit vectors; each question lies near its passage (but not always nearest)."""
    vecs = toy_vectors(TEXTS, dim=DIM, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for text, question in zip(TEXTS, QUESTIONS, strict=True):
        q = vecs[text] + 0.9 * rng.normal(size=DIM)
        vecs[question] = (q / np.linalg.norm(q)).astype(np.float32)
    return vecs


def _memory_store() -> InMemoryVectorStore:
    store = InMemoryVectorStore(CountingEmbeddings(_vectors()))
    store.add_texts(TEXTS, ids=IDS, metadatas=[{"i": i} for i in range(N)])
    return store


def _retriever(tmp_path, store=None, **kwargs) -> NudgeRetriever:
    log = FeedbackLog(tmp_path / "feedback.db", **kwargs.pop("log_kwargs", {}))
    store = _memory_store() if store is None else store
    return NudgeRetriever(
        vectorstore=store, k=4, feedback=log, state_dir="memory", solver_params={"gamma": 0.3},
        **kwargs,
    )  # fmt: skip


def _thumbs_up(retriever: NudgeRetriever, n: int = N) -> None:
    """Each question's user marks its passage when it is shown."""
    for i in range(n):
        docs = retriever.invoke(QUESTIONS[i])
        shown = [d.id for d in docs]
        if IDS[i] in shown:
            retriever.feedback(docs[0].metadata["nudge_query_id"], IDS[i], relevant=True)


def test_invoke_logs_the_search_and_tags_copies(tmp_path):
    retriever = _retriever(tmp_path)
    store = retriever.vectorstore
    assert retriever.embedder_id.startswith("CountingEmbeddings#")  # one probe, computed once
    calls = store.embeddings.query_calls
    docs = retriever.invoke(QUESTIONS[3])
    assert store.embeddings.query_calls == calls + 1  # embedded once, searched by vector
    assert [d.id for d in docs] == [d.id for d in store.similarity_search(QUESTIONS[3], k=4)]
    qids = {d.metadata["nudge_query_id"] for d in docs}
    assert len(qids) == 1
    logged = retriever.feedback_log.get_query(qids.pop())
    assert logged.shown_ids == [d.id for d in docs]
    assert logged.text == QUESTIONS[3]
    assert logged.store == "InMemoryVectorStore" == retriever.feedback_store
    assert_allclose(logged.vector, _vectors()[QUESTIONS[3]], rtol=1e-6)
    # The stored documents were not touched.
    assert all("nudge_query_id" not in d.metadata for d in store.get_by_ids(IDS))
    assert docs[0].metadata["i"] == store.get_by_ids([docs[0].id])[0].metadata["i"]


async def test_ainvoke_logs_too(tmp_path):
    retriever = _retriever(tmp_path)
    docs = await retriever.ainvoke(QUESTIONS[0], k=2)
    assert len(docs) == 2
    qid = docs[0].metadata["nudge_query_id"]
    assert retriever.feedback_log.get_query(qid).shown_ids == [d.id for d in docs]
    retriever.feedback(qid, docs[1].id, relevant=False)
    assert retriever.feedback_log.counts() == (1, 1)


def test_without_a_log_nothing_changes(tmp_path):
    retriever = NudgeRetriever(vectorstore=_memory_store(), k=3)
    docs = retriever.invoke(QUESTIONS[1])
    assert all("nudge_query_id" not in d.metadata for d in docs)
    with pytest.raises(ValueError, match="feedback=FeedbackLog"):
        retriever.feedback("x", "doc-1")
    with pytest.raises(ValueError, match="no feedback log"):
        retriever.fit_from_feedback()


def test_feedback_errors(tmp_path):
    retriever = _retriever(tmp_path)
    docs = retriever.invoke(QUESTIONS[2])
    qid = docs[0].metadata["nudge_query_id"]
    unshown = next(i for i in IDS if i not in {d.id for d in docs})
    with pytest.raises(UnknownIdError, match="was not shown"):
        retriever.feedback(qid, unshown)
    with pytest.raises(UnknownIdError, match="not in the feedback log"):
        retriever.feedback(uuid.uuid4().hex, docs[0].id)
    with pytest.raises(ValueError, match="no positive feedback"):
        retriever.fit_from_feedback()


def test_opt_out_of_text(tmp_path):
    retriever = _retriever(tmp_path, log_kwargs={"store_text": False})
    qid = retriever.invoke(QUESTIONS[0])[0].metadata["nudge_query_id"]
    assert retriever.feedback_log.get_query(qid).text is None


def test_fit_from_feedback_tunes_from_the_originals(tmp_path):
    retriever = _retriever(tmp_path)
    store = retriever.vectorstore
    originals = np.array([store.store[i]["vector"] for i in IDS], dtype=np.float32)
    calls = store.embeddings.document_calls
    _thumbs_up(retriever)
    retriever.fit_from_feedback()
    assert store.embeddings.document_calls == calls  # the logged vectors, nothing embedded
    result = retriever.tune_result
    assert result.changed_ids and result.gamma == 0.3
    pairs = result.feedback_pairs
    assert set(result.changed_ids) == {d for ids in pairs.answer_ids for d in ids}
    tuned = np.array([store.store[i]["vector"] for i in IDS], dtype=np.float32)
    # A marked passage now ranks its question's top result.
    marked = pairs.answer_ids[0][0]
    assert retriever.vectorstore.similarity_search(pairs.texts[0], k=1)[0].id == marked
    # Searching the tuned store logs more queries; a re-run starts from the originals.
    retriever.invoke(QUESTIONS[0])
    retriever.fit_from_feedback()
    assert_allclose(np.array([store.store[i]["vector"] for i in IDS]), tuned, atol=1e-6)
    retriever.restore()
    assert_array_equal(np.array([store.store[i]["vector"] for i in IDS]), originals)


def test_refit_while_the_app_serves(tmp_path):
    """A cron-style re-tune (its own retriever) while the app keeps searching and marking."""
    app = _retriever(tmp_path)
    _thumbs_up(app, 6)
    cron = NudgeRetriever(
        vectorstore=app.vectorstore, feedback=FeedbackLog(tmp_path / "feedback.db"),
        state_dir="memory", solver_params={"gamma": 0.3},
    )  # fmt: skip
    stop, errors, served = threading.Event(), [], [0]

    def serve() -> None:
        try:
            while not stop.is_set() and served[0] < 200:
                i = served[0] % N
                docs = app.invoke(QUESTIONS[i])
                assert len(docs) == 4
                app.feedback(docs[0].metadata["nudge_query_id"], docs[0].id)
                served[0] += 1
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    thread = threading.Thread(target=serve)
    thread.start()
    fits = 0
    try:
        while fits < 3 or (served[0] < 100 and fits < 500 and thread.is_alive()):
            cron.fit_from_feedback()
            fits += 1
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert served[0] >= 100
    counts = app.feedback_log.counts()
    assert counts.queries == 6 + served[0]
    cron.fit_from_feedback()
    used = sum(len(q) for q in cron.tune_result.feedback_pairs.query_ids)
    assert used == counts.events  # one positive event per query: each is in the last run


def test_chroma(tmp_path):
    pytest.importorskip("langchain_chroma", reason="pip install 'nudge-rag[chroma]'")
    import chromadb
    from langchain_chroma import Chroma

    embeddings = CountingEmbeddings(_vectors(), default=np.ones(DIM) / DIM**0.5)
    store = Chroma(
        collection_name="feedback-test",
        embedding_function=embeddings,
        client=chromadb.EphemeralClient(),
        collection_metadata={"hnsw:space": "cosine"},
    )
    store.add_texts(TEXTS, ids=IDS)
    retriever = _retriever(tmp_path, store=store)
    retriever.embedder_id  # noqa: B018 - the fingerprint probe, once
    calls = embeddings.query_calls
    docs = retriever.invoke(QUESTIONS[4])
    assert embeddings.query_calls == calls + 1
    assert retriever.feedback_store == "feedback-test"
    qid = docs[0].metadata["nudge_query_id"]
    assert retriever.feedback_log.get_query(qid).store == "feedback-test"
    _thumbs_up(retriever)
    retriever.fit_from_feedback()
    assert retriever.tune_result.changed_ids
    retriever.restore()


class TestLoggingRetrieverStandard(RetrieversIntegrationTests):
    """LangChain's standard retriever suite on a retriever that logs every search."""

    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path):
        self.folder = tmp_path

    @property
    def retriever_constructor(self) -> type[NudgeRetriever]:
        return NudgeRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"vectorstore": _memory_store(), "feedback": FeedbackLog(self.folder / "f.db")}

    @property
    def retriever_query_example(self) -> str:
        return QUESTIONS[0]


# ---------------------------------------------------------------------- stores without ids
def _milvus_store(tmp_path):
    pytest.importorskip("langchain_milvus", reason="pip install 'nudge-rag[milvus]'")
    from langchain_milvus import Milvus

    store = Milvus(
        CountingEmbeddings(_vectors()),
        collection_name="fb",
        connection_args={"uri": str(tmp_path / "m.db"), "db_name": "default"},
        index_params={"metric_type": "COSINE", "index_type": "FLAT", "params": {}},
    )
    store.add_texts(TEXTS, ids=IDS, metadatas=[{"i": i} for i in range(N)])
    return store


def _lancedb_store(tmp_path):
    lancedb = pytest.importorskip("lancedb", reason="pip install 'nudge-rag[lancedb]'")
    from langchain_community.vectorstores import LanceDB

    store = LanceDB(
        connection=lancedb.connect(tmp_path / "lance"),
        embedding=CountingEmbeddings(_vectors()),
        table_name="fb",
    )
    store.add_texts(TEXTS, ids=IDS, metadatas=[{"i": i} for i in range(N)])
    return store


def _faiss_store(tmp_path):
    pytest.importorskip("faiss", reason="pip install 'nudge-rag[faiss]'")
    from langchain_community.vectorstores import FAISS

    return FAISS.from_texts(
        TEXTS, CountingEmbeddings(_vectors()), ids=IDS, metadatas=[{"i": i} for i in range(N)]
    )


@pytest.mark.parametrize("make", [_milvus_store, _lancedb_store, _faiss_store])
def test_feedback_on_stores_whose_wrapper_drops_ids(make, tmp_path):
    """langchain-milvus puts the id in metadata["pk"] and LangChain's LanceDB leaves it out:
    the retriever's documents still carry Document.id, so feedback reaches the store rows."""
    store = make(tmp_path)
    retriever = _retriever(tmp_path, store=store)
    docs = retriever.invoke(QUESTIONS[2])
    plain = store.similarity_search(QUESTIONS[2], k=4)  # the wrapper's own search
    assert [d.page_content for d in docs] == [d.page_content for d in plain]
    assert [d.id for d in docs] == [IDS[d.metadata["i"]] for d in docs]  # each row's own id
    _thumbs_up(retriever)
    retriever.fit_from_feedback()
    result = retriever.tune_result
    assert result.changed_ids and set(result.changed_ids) <= set(IDS)
    assert retriever.restore() == len(result.changed_ids)
