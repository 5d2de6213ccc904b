"""``NudgeRetriever``: a LangChain retriever whose stored document vectors NUDGE fine-tunes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, PrivateAttr, field_validator

from langchain_nudge._compat import (
    AsyncCallbackManagerForRetrieverRun,
    BaseRetriever,
    CallbackManagerForRetrieverRun,
    Document,
    VectorStore,
)
from langchain_nudge.questions import DEFAULT_PROMPT, generate_pairs, pairs_from_metadata
from nudge_rag import (
    FeedbackLog,
    QueryAdapter,
    StateDirError,
    StoreTuner,
    TuneResult,
    UnsupportedStoreError,
    WriteBack,
    WriteBackStatus,
    backend_for,
    resolve_state_dir,
    tune_from_feedback,
)
from nudge_rag.backends import langchain_result_ids

logger = logging.getLogger(__name__)

__all__ = ["QUERY_ID_KEY", "NudgeRetriever"]

#: ``Document.metadata`` key holding the feedback log's query id of a returned document.
QUERY_ID_KEY = "nudge_query_id"


class NudgeRetriever(BaseRetriever):
    """Retriever over a vector store whose document embeddings NUDGE fine-tunes in place.

    NUDGE (arXiv 2409.02343) moves each stored document vector toward the training questions
    it answers; the embedding model is never touched. :meth:`fit` writes the tuned vectors
    into the store itself, so every other reader of the store benefits too; :meth:`restore`
    puts the original vectors back.

    Supported stores: every LangChain store in nudge-rag's registry, subclasses included
    (``nudge_rag.backends.supported_stores("langchain")`` lists them with the extra that
    installs each); others through :func:`nudge_rag.backends.register_backend` or
    ``embedding_store=``. NUDGE-N (``variant="n"``)
    needs a cosine store (or one whose vectors are all unit-norm); NUDGE-M (``"m"``) needs
    a dot-product store (Chroma ``hnsw:space="ip"``, Qdrant ``Distance.DOT``); a mismatch
    raises a ``ValueError`` naming the setting to change.

    Originals are never lost: before the first write they are saved next to a persisted store
    (Chroma persist dir: ``<dir>/nudge_state/<collection>``; Qdrant local path:
    ``<path>/nudge_state/<collection>``), unless ``state_dir`` names a folder. An in-memory
    store keeps them in memory, shared by every retriever over the same store object (an INFO
    log says so: pass ``state_dir`` if you ``dump()`` or ``save_local()`` the store;
    ``state_dir="memory"`` silences it). A store on a server (Chroma HTTP, Qdrant server) needs
    ``state_dir``: originals kept only in memory would not outlive the process. A later
    :meth:`fit` starts from the originals. The rule is the same in the LlamaIndex integration
    (:func:`nudge_rag.resolve_state_dir`).

    Setup:
        .. code-block:: bash

            pip install 'nudge-rag[langchain,chroma]'   # the store's extra: see the Stores page

    Instantiate:
        .. code-block:: python

            from langchain_core.vectorstores import InMemoryVectorStore
            from langchain_nudge import NudgeRetriever

            store = InMemoryVectorStore(embeddings)
            store.add_texts(["Paris is the capital of France."], ids=["paris"])
            retriever = NudgeRetriever(vectorstore=store, k=4)

    Fine-tune:
        .. code-block:: python

            retriever.fit([("What is France's capital?", "paris")])
            # or: retriever.fit(metadata_key="questions")  # questions stored in metadata
            # or: retriever.fit(llm=chat_model, n_questions=3)  # generated questions
            retriever.restore()  # original vectors back

    Search:
        .. code-block:: python

            docs = retriever.invoke("capital of France", k=2)

    Returned documents carry their store id in ``Document.id``, also from the wrappers that
    leave it out: langchain-qdrant (copied from ``metadata["_id"]``), langchain-milvus (from
    the primary-key field in the metadata, ``"pk"`` by default) and langchain-community's
    ``LanceDB`` (its ``results_to_docs`` is wrapped, on that store object only, to set
    ``Document.id`` from the table's id column). Feedback needs those ids.

    Use as retriever:
        .. code-block:: python

            chain = retriever | format_docs | prompt | llm

    Learn from feedback:
        .. code-block:: python

            from nudge_rag import FeedbackLog

            retriever = NudgeRetriever(vectorstore=store, feedback=FeedbackLog("feedback.db"))
            docs = retriever.invoke("capital of France")     # logged; nothing else changes
            qid = docs[0].metadata["nudge_query_id"]
            retriever.feedback(qid, docs[0].id, relevant=True)  # from a thumbs-up handler
            retriever.fit_from_feedback()                    # nightly, e.g. from cron

        With a log, every ``invoke``/``ainvoke`` embeds the question once with the store's
        embeddings (``embed_query``), searches by that vector where the store supports
        ``similarity_search_by_vector``, and logs the vector, the shown ids in order, the
        store name and the question (unless ``FeedbackLog(..., store_text=False)``). Each
        returned document is a copy with ``metadata["nudge_query_id"]`` set.

    Attributes:
        vectorstore: the LangChain vector store searched and tuned.
        k: documents returned per query (``invoke(query, k=...)`` overrides it).
        variant: ``"n"`` (NUDGE-N, default) or ``"m"`` (NUDGE-M).
        search_kwargs: extra arguments for ``vectorstore.similarity_search`` (e.g. a filter).
        state_dir: where originals live: ``"auto"`` (default, above; ``None`` means the
            same), a folder, or ``"memory"``.
        solver_params: keyword arguments for the solver (e.g. ``{"gamma": 0.3}``).
        embedding_store: an :class:`nudge_rag.EmbeddingStore` to use instead of the adapter
            :func:`langchain_nudge.store_for` picks.
        batch_size: ids read or written per store call.
        embed_batch_size: questions per ``embed_documents`` call.
        query_embedding: ``"documents"`` (default: questions embedded in batches with
            ``embed_documents``, right for symmetric models such as MiniLM) or ``"query"``
            (``embed_query`` per question, exactly what a search does: use it for models with
            a query instruction, e.g. BGE/E5).
        show_progress: tqdm bars while embedding questions and writing vectors.
        feedback_log: a :class:`nudge_rag.FeedbackLog` to log every search to (pass it as
            ``feedback=``); ``None`` (default) logs nothing.
        feedback_store_name: the store name queries are logged under (default: the store's,
            e.g. the Chroma collection); retrievers sharing a log must use distinct names for
            distinct stores.
        lock_timeout: seconds a fit, restore or resume waits for another writer of the same
            store (another retriever, engine or process; one writer at a time): ``0``
            (default) raises :class:`nudge_rag.StoreBusyError` at once, ``None`` waits as
            long as it takes.
        query_adapter: ``"off"`` (default), ``"on"`` or ``"auto"``: after NUDGE, also fit a
            linear map of the query embeddings toward the tuned documents
            (:class:`nudge_rag.QueryAdapter`; ``"auto"`` keeps it only when validation shows
            a gain) and save it with the tuned vectors. Whatever this option, a saved
            adapter is applied by ``invoke``/``ainvoke``: the question is embedded with
            ``embed_query``, adapted, and searched by vector. The feedback log keeps the
            model's own query vector, before the adapter. :attr:`tune_result` says what was
            chosen and why.

    Unknown keyword arguments are refused (a typo would otherwise be ignored silently).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", populate_by_name=True)

    vectorstore: VectorStore
    k: int = Field(default=4, ge=1)
    variant: Literal["n", "m"] = "n"
    search_kwargs: dict[str, Any] = Field(default_factory=dict)
    state_dir: str | Path | None = "auto"
    solver_params: dict[str, Any] = Field(default_factory=dict)
    embedding_store: Any = Field(default=None, exclude=True)
    batch_size: int = Field(default=512, ge=1)
    embed_batch_size: int = Field(default=64, ge=1)
    query_embedding: Literal["documents", "query"] = "documents"
    show_progress: bool = False
    feedback_log: FeedbackLog | None = Field(default=None, alias="feedback", exclude=True)
    feedback_store_name: str | None = None
    lock_timeout: float | None = Field(default=0.0, ge=0)
    query_adapter: Literal["off", "on", "auto"] = "off"

    _tuner: StoreTuner | None = PrivateAttr(default=None)
    _reader: WriteBack | None = PrivateAttr(default=None)
    _no_state: bool = PrivateAttr(default=False)
    _feedback_store: str | None = PrivateAttr(default=None)
    _set_ids: Callable[[list[Document]], None] | None = PrivateAttr(default=None)
    _embedder_id: str | None = PrivateAttr(default=None)

    @field_validator("variant", mode="before")
    @classmethod
    def _variant_key(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.lower().replace("nudge", "").strip("-_ ")
        return value

    # ------------------------------------------------------------------ store access
    @property
    def tuner(self) -> StoreTuner:
        """The core's :class:`nudge_rag.StoreTuner` over this store (built on first use)."""
        if self._tuner is None:
            self._tuner = StoreTuner(
                self.embedding_store if self.embedding_store is not None else self.vectorstore,
                state_dir=self.state_dir,
                variant=self.variant,
                solver_params=self.solver_params,
                batch_size=self.batch_size,
                embed_batch_size=self.embed_batch_size,
                show_progress=self.show_progress,
                lock_timeout=self.lock_timeout,
                framework="langchain",
                query_adapter=self.query_adapter,
            )
        return self._tuner

    @property
    def store(self) -> Any:
        """The :class:`nudge_rag.EmbeddingStore` reading and writing the stored vectors."""
        return self.tuner.store

    @property
    def writeback(self) -> WriteBack:
        """The :class:`nudge_rag.WriteBack` holding the originals (see ``state_dir``)."""
        return self.tuner.writeback

    @property
    def tune_result(self) -> TuneResult | None:
        """What the last :meth:`fit` did (``None`` before any)."""
        return self.tuner.result_ if self._tuner is not None else None

    # ------------------------------------------------------------------ search
    def model_post_init(self, context: Any, /) -> None:
        """Make the wrapper's search results carry ids where it drops them (the store's spec)."""
        super().model_post_init(context)
        self._set_ids = langchain_result_ids(self.vectorstore)

    def _with_ids(self, docs: list[Document]) -> list[Document]:
        """Set ``Document.id`` where the wrapper leaves it out (its store's spec says how)."""
        if self._set_ids is not None:
            self._set_ids(docs)
        return docs

    def _search_args(self, kwargs: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        k = kwargs.pop("k", self.k)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            msg = f"k must be a positive integer, got {k!r}"
            raise ValueError(msg)
        return int(k), {**self.search_kwargs, **kwargs}

    def saved_query_adapter(self) -> QueryAdapter | None:
        """The query adapter saved with the store's tuned vectors (``None``: none).

        Looked up in the store's write-back state (the folder ``state_dir`` resolves to, the
        in-memory state of the store object, or the store's own tables), so an adapter
        another retriever or process saved is found; a ``stat`` per call once read.
        """
        if self._tuner is not None:
            return self._tuner.writeback.query_adapter()
        if self._no_state:
            return None
        if self._reader is None:
            try:
                store = (
                    self.embedding_store
                    if self.embedding_store is not None
                    else backend_for(self.vectorstore, "langchain")
                )
                folder = resolve_state_dir(store, self.state_dir, warn=False)
            except (UnsupportedStoreError, StateDirError):
                # A store nudge-rag cannot tune, or a server store without state_dir: no
                # state to find an adapter in; searching works as before.
                self._no_state = True
                return None
            self._reader = WriteBack(store, folder, lock_timeout=self.lock_timeout)
        return self._reader.query_adapter()

    def _query_vectors(
        self, vector: list[float], adapter: QueryAdapter | None
    ) -> list[float] | None:
        """The vector to search by (adapted when an adapter is saved), or ``None``: by text."""
        if adapter is not None:
            if not self._searches_by_vector():
                logger.warning(
                    "%s cannot search by vector: the saved query adapter is not applied",
                    type(self.vectorstore).__name__,
                )
                return None
            return adapter.transform(np.asarray(vector, dtype=np.float32)).tolist()
        return vector if self._searches_by_vector() else None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k, params = self._search_args(kwargs)
        adapter = self.saved_query_adapter()
        if self.feedback_log is None and adapter is None:
            return self._with_ids(self.vectorstore.similarity_search(query, k=k, **params))
        vector = list(self._query_embeddings().embed_query(query))
        search_vector = self._query_vectors(vector, adapter)
        if search_vector is not None:
            docs = self.vectorstore.similarity_search_by_vector(search_vector, k=k, **params)
        else:  # the store embeds the query itself (a second embedding call)
            docs = self.vectorstore.similarity_search(query, k=k, **params)
        if self.feedback_log is None:
            return self._with_ids(docs)
        return self._log_search(query, vector, self._with_ids(docs))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        k, params = self._search_args(kwargs)
        adapter = self.saved_query_adapter()
        if self.feedback_log is None and adapter is None:
            return self._with_ids(await self.vectorstore.asimilarity_search(query, k=k, **params))
        vector = list(await self._query_embeddings().aembed_query(query))
        search_vector = self._query_vectors(vector, adapter)
        if search_vector is not None:
            docs = await self.vectorstore.asimilarity_search_by_vector(search_vector, k=k, **params)
        else:
            docs = await self.vectorstore.asimilarity_search(query, k=k, **params)
        if self.feedback_log is None:
            return self._with_ids(docs)
        # The log's write may wait for another process: keep it off the event loop.
        return await asyncio.to_thread(self._log_search, query, vector, self._with_ids(docs))

    # ------------------------------------------------------------------ feedback
    def _query_embeddings(self) -> Any:
        embeddings = self.vectorstore.embeddings
        if embeddings is None:
            msg = (
                f"{type(self.vectorstore).__name__} has no embeddings object: a retriever with "
                "a feedback log (or a saved query adapter) embeds each question once"
            )
            raise ValueError(msg)
        return embeddings

    def _searches_by_vector(self) -> bool:
        method = getattr(type(self.vectorstore), "similarity_search_by_vector", None)
        return method is not None and method is not VectorStore.similarity_search_by_vector

    @property
    def feedback_store(self) -> str:
        """The store name this retriever's queries are logged under."""
        if self._feedback_store is None:
            if self.feedback_store_name is not None:
                self._feedback_store = self.feedback_store_name
            elif self.embedding_store is not None:
                self._feedback_store = str(self.embedding_store.name)
            else:
                self._feedback_store = str(backend_for(self.vectorstore, "langchain").name)
        return self._feedback_store

    @property
    def embedder_id(self) -> str:
        """Which model embeds this retriever's questions (:meth:`FeedbackLog.embedder_id`).

        The embeddings' class and model name, and a fingerprint of one probe embedding
        (computed once). The feedback log records it with every query, and
        :meth:`fit_from_feedback` refuses query vectors another model wrote.
        """
        if self._embedder_id is None:
            embeddings = self._query_embeddings()
            model = next(
                (
                    str(v)
                    for k in ("model", "model_name", "model_id")
                    if isinstance(v := getattr(embeddings, k, None), str) and v
                ),
                "",
            )
            name = type(embeddings).__name__ + (f"({model})" if model else "")
            probe = embeddings.embed_query(FeedbackLog.PROBE_TEXT)
            self._embedder_id = FeedbackLog.embedder_id(name, probe)
        return self._embedder_id

    def _log_search(self, query: str, vector: list[float], docs: list[Document]) -> list[Document]:
        shown = [d.id for d in docs if d.id is not None]
        if len(shown) < len(docs):
            logger.warning(
                "%d of %d returned documents have no id and cannot receive feedback",
                len(docs) - len(shown),
                len(docs),
            )
        qid = self.feedback_log.log_query(
            vector, shown, text=query, store=self.feedback_store, embedder=self.embedder_id
        )
        return [d.model_copy(update={"metadata": {**d.metadata, QUERY_ID_KEY: qid}}) for d in docs]

    def _require_log(self) -> FeedbackLog:
        if self.feedback_log is None:
            msg = (
                "this retriever has no feedback log: create it with "
                "NudgeRetriever(..., feedback=FeedbackLog('feedback.db'))"
            )
            raise ValueError(msg)
        return self.feedback_log

    def feedback(
        self, query_id: str, doc_id: str, relevant: bool = True, *, weight: float = 1.0
    ) -> str:
        """Record that a returned document answered (or did not answer) a question.

        Args:
            query_id: ``metadata["nudge_query_id"]`` of the returned documents.
            doc_id: the ``Document.id`` of one of them.
            relevant: ``True`` (thumbs-up) or ``False`` (thumbs-down; cancels a thumbs-up).
            weight: how much it counts (a thumbs-up is 1; e.g. 0.5 for a click).

        Returns:
            The event id.

        Raises:
            nudge_rag.UnknownIdError: the query id is not in the log, or the document was not
                among those returned for it.
            ValueError: the retriever has no feedback log.
        """
        return self._require_log().feedback(query_id, doc_id, relevant, weight=weight)

    def fit_from_feedback(
        self,
        *,
        since: float | datetime | timedelta | None = None,
        until: float | datetime | None = None,
        min_count: float = 1.0,
        merge_tolerance: float | None = FeedbackLog.DEFAULT_MERGE_TOLERANCE,
        resume: bool = True,
    ) -> NudgeRetriever:
        """Re-tune the stored vectors from the feedback logged for this store.

        Starts from the original vectors every time (never compounding on tuned ones), with
        the logged query vectors (nothing is embedded) and gamma cross-validated on the pairs
        (:func:`nudge_rag.tune_from_feedback`). Safe to run from a cron job while the app
        serves: searches keep working during the write-back (each vector is its original or
        its new value), queries and feedback keep being logged (the next run uses them), and
        a second run at the same time raises ``TuneInProgressError`` instead of writing.

        Args:
            since: only feedback from then on (a ``timedelta`` means that long ago).
            until: only feedback before then.
            min_count: net thumbs-up a (question, document) pair needs.
            merge_tolerance: questions whose unit vectors are this close are one question.
            resume: first finish a write-back a killed run left pending.

        Returns:
            ``self``; :attr:`tune_result` says what moved (``tune_result.feedback_pairs``:
            the pairs used).
        """
        tune_from_feedback(
            self.tuner,
            self._require_log(),
            store=self.feedback_store,
            since=since,
            until=until,
            min_count=min_count,
            merge_tolerance=merge_tolerance,
            resume=resume,
            embedder=self.embedder_id,
        )
        return self

    # ------------------------------------------------------------------ tuning
    def stored_documents(self) -> list[Document]:
        """Every document in the store, with its id, read in batches."""
        ids = self.store.list_ids()
        docs: list[Document] = []
        for start in range(0, len(ids), self.batch_size):
            docs.extend(self.vectorstore.get_by_ids(ids[start : start + self.batch_size]))
        return self._with_ids(docs)

    def _embed(self, questions: list[str]) -> Any:
        """One batch of questions through the store's own embeddings object."""
        embeddings = self.vectorstore.embeddings
        if embeddings is None:
            msg = (
                f"{type(self.vectorstore).__name__} has no embeddings object to embed the "
                "questions with; create it with one, or call fit_embeddings()"
            )
            raise ValueError(msg)
        if self.query_embedding == "query":
            return [embeddings.embed_query(q) for q in questions]
        return embeddings.embed_documents(questions)

    def embed_questions(self, questions: Sequence[str]) -> np.ndarray:
        """Embed questions with the store's own embeddings, ``embed_batch_size`` at a time.

        ``embed_documents`` by default (it batches); ``query_embedding="query"`` uses
        ``embed_query``, as a search does.

        Returns:
            ``(len(questions), dim)`` float32 array.
        """
        return self.tuner.embed_questions(list(questions), self._embed)

    def fit(
        self,
        pairs: Any = None,
        *,
        val_pairs: Any = None,
        metadata_key: str | None = None,
        llm: Any = None,
        documents: Sequence[Document] | None = None,
        n_questions: int = 3,
        prompt: str = DEFAULT_PROMPT,
        max_concurrency: int | None = None,
    ) -> NudgeRetriever:
        """Fine-tune the stored document vectors on training questions and write them back.

        Give exactly one source of training questions: ``pairs``, ``metadata_key`` or
        ``llm``. Validation questions choose the step size; without ``val_pairs`` it is
        cross-validated on the training questions, then every pair is used for the fit.

        Args:
            pairs: ``[(question, doc_id), ...]`` or ``{question: [doc_ids]}``.
            val_pairs: validation pairs, same forms as ``pairs``.
            metadata_key: read each document's questions from this metadata key (a list of
                strings or a string of numbered lines).
            llm: a LangChain chat model or LLM generating ``n_questions`` per document.
            documents: for ``metadata_key``/``llm``: the documents to use (with ids);
                default: every document in the store.
            n_questions: questions generated per document with ``llm``.
            prompt: template for ``llm`` with ``{n}`` and ``{text}``.
            max_concurrency: parallel ``llm`` calls (``llm.batch``'s default if ``None``).

        Returns:
            ``self``; :attr:`tune_result` says what moved.

        Raises:
            ValueError: no or several sources, malformed pairs or metadata, an empty store.
            nudge_rag.UnknownIdError: (a ``ValueError`` and ``KeyError``) a document id that
                is not in the store.
            nudge_rag.DimensionMismatchError, nudge_rag.MetricMismatchError: (``ValueError``)
                the questions' model or the store's metric does not fit; nothing written.
            nudge_rag.UnsupportedStoreError: (a ``TypeError``) a store whose vectors cannot be
                read or written.
            nudge_rag.WriteBackError: an interrupted write-back is pending.
        """
        given = [
            name
            for name, v in (("pairs", pairs), ("metadata_key", metadata_key), ("llm", llm))
            if v is not None
        ]
        if len(given) != 1:
            msg = f"give exactly one of pairs, metadata_key or llm; got {given or 'none'}"
            raise ValueError(msg)
        if pairs is None:
            docs = self.stored_documents() if documents is None else list(documents)
            if not docs:
                msg = "the store is empty: add documents (with their embeddings) before tuning"
                raise ValueError(msg)
            if metadata_key is not None:
                pairs = pairs_from_metadata(docs, metadata_key)
            else:
                self.tuner.preflight()  # before paying for the LLM
                pairs = generate_pairs(
                    llm,
                    docs,
                    n_questions=n_questions,
                    prompt=prompt,
                    max_concurrency=max_concurrency,
                )
        self.tuner.tune(pairs, val_pairs, embed=self._embed)
        return self

    def fit_embeddings(
        self,
        train_embeddings: np.ndarray,
        train_answer_ids: Sequence[Sequence[str]],
        val_embeddings: np.ndarray | None = None,
        val_answer_ids: Sequence[Sequence[str]] | None = None,
    ) -> NudgeRetriever:
        """Like :meth:`fit`, with questions already embedded.

        Args:
            train_embeddings: ``(n_train, dim)`` float32 array of training questions.
            train_answer_ids: for each training question, the ids of its documents.
            val_embeddings: optional ``(n_val, dim)`` float32 validation questions.
            val_answer_ids: their document ids.

        Returns:
            ``self``.
        """
        self.tuner.tune_embedded(train_embeddings, train_answer_ids, val_embeddings, val_answer_ids)
        return self

    def restore(self) -> int:
        """Write the original vectors back into the store.

        Returns:
            How many vectors were restored.
        """
        return self.tuner.restore()

    def resume(self) -> bool:
        """Finish a write-back that was interrupted (e.g. by a crash).

        Returns:
            ``True`` if a pending write-back was completed.
        """
        return self.tuner.resume()

    def discard_pending(self) -> bool:
        """Drop an interrupted write-back that cannot finish; the originals stay saved.

        See :meth:`nudge_rag.WriteBack.discard_pending`: ``restore()`` still puts every
        original back afterwards.

        Returns:
            ``True`` if a pending plan was dropped.
        """
        return self.tuner.discard_pending()

    def status(self) -> WriteBackStatus:
        """Where this store's write-back stands: :meth:`nudge_rag.WriteBack.status`.

        Tuned or not, a pending plan, who holds the writer lock, how gamma was chosen.
        """
        return self.tuner.status()
