"""NUDGE for LlamaIndex: tune the embeddings stored in a vector index, never the model.

Two entry points:

* :class:`NudgeFinetuneEngine` (index mode): reads the node embeddings a ``VectorStoreIndex``
  already stores (any store ``nudge_rag.backends.supported_stores("llama-index")`` lists), embeds
  training questions with the index's embed model, runs NUDGE and writes the moved vectors back in
  place. The user's ``index.as_retriever()`` then returns better results; ``restore()`` undoes it.
* :class:`Nudge` (dataset mode): a drop-in for ``llama_index.experimental.nudge.Nudge``; it
  embeds a dataset's corpus and returns tuned corpus embeddings as arrays.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.llms import LLM
    from llama_index.core.prompts import PromptTemplate
    from llama_index.core.schema import BaseNode
except ImportError as err:  # pragma: no cover - exercised only without the extra
    msg = "llama_index_nudge needs llama-index-core: pip install 'nudge-rag[llama-index]'"
    raise ImportError(msg) from err

from llama_index_nudge.embedding import AdaptedQueryEmbedding
from llama_index_nudge.feedback import embedder_id
from llama_index_nudge.questions import (
    DEFAULT_QUESTIONS_KEY,
    generate_questions,
    questions_from_metadata,
)
from nudge_rag import (
    ArrayStore,
    FeedbackLog,
    StoreTuner,
    TuneResult,
    WriteBackStatus,
    tune_from_feedback,
)
from nudge_rag.backends import backend_for_index
from nudge_rag.data import RetrievalDataset
from nudge_rag.pairs import normalize_pairs

logger = logging.getLogger(__name__)

__all__ = ["Nudge", "NudgeFinetuneEngine", "PairSource"]

QueryEmbedding = Literal["query", "text"]
PairSource = Any
"""Training pairs: ``[(query_text, node_id), ...]``, a dataset with ``.queries``, ``.corpus``
and ``.relevant_docs`` (LlamaIndex's ``EmbeddingQAFinetuneDataset``, our ``RetrievalDataset``),
or the path of such a dataset saved as JSON."""

_N_SHOWN = 3


# ---------------------------------------------------------------------- helpers
def _embedder(embed_model: BaseEmbedding, mode: QueryEmbedding) -> Any:
    """A batch embed function for :class:`nudge_rag.StoreTuner`.

    ``mode="query"`` calls ``embed_model.get_query_embedding`` per text: exactly what the
    retriever does at search time (query instructions of models such as BGE/E5 included).
    ``mode="text"`` embeds in batches with ``get_text_embedding_batch``, like LlamaIndex's own
    fine-tuning; faster, and the same vectors for symmetric models (MiniLM).
    """
    if mode not in ("query", "text"):
        msg = f"query_embedding must be 'query' or 'text', got {mode!r}"
        raise ValueError(msg)
    if mode == "text":
        return embed_model.get_text_embedding_batch
    return lambda texts: [embed_model.get_query_embedding(t) for t in texts]


def _add(old: list[tuple[str, str]], source: PairSource, name: str) -> list[tuple[str, str]]:
    return old if source is None else old + normalize_pairs(source, name)


# ---------------------------------------------------------------------- index mode
class NudgeFinetuneEngine:
    """Fine-tune the node embeddings stored in a LlamaIndex vector store with NUDGE.

    NUDGE (arXiv 2409.02343) moves each stored node embedding toward the embeddings of the
    training questions it answers; the embedding model is untouched and queries are embedded
    as before, so nothing else in the application changes. Only the vectors are rewritten,
    in place (text and metadata are kept), and only the rows that move.

    Where the originals live (``state_dir``): before the first write the original vectors of
    every node that will move are saved, and ``restore()`` writes them back. With the default
    ``state_dir="auto"`` they go to ``<persist_dir>/nudge_state`` when ``persist_dir`` is given,
    to ``<chroma path>/nudge_state/<collection>`` for an embedded Chroma ``PersistentClient``,
    to ``<qdrant path>/nudge_state/<collection>`` for a local ``QdrantClient(path=...)``, and
    to memory for purely in-memory stores (a ``SimpleVectorStore`` not persisted, in-memory
    Chroma/Qdrant), which are lost with the process anyway. A remote store (Chroma
    ``HttpClient``, a Qdrant server) needs an explicit ``state_dir``. ``state_dir=None`` means
    the same as ``"auto"``; ``state_dir="memory"`` keeps them in memory. Every ``finetune()``
    starts from the originals, so running it again with more pairs never compounds changes.

    Persisting: ``finetune()`` changes the vector store, not the files an index was persisted
    to. For a ``SimpleVectorStore`` (or a FAISS store) call
    ``index.storage_context.persist(persist_dir)`` again after ``finetune()`` and after
    ``restore()``; stores with their own files or server (Chroma, Qdrant, pgvector, Milvus,
    LanceDB) are written directly.

    Metric: NUDGE-N (``variant="n"``, default) writes unit-norm vectors and suits cosine
    stores (``SimpleVectorStore``, Chroma ``cosine``, Qdrant ``COSINE``) and l2/ip stores whose
    vectors are all unit-norm. NUDGE-M (``variant="m"``) needs a store that scores by dot
    product (Chroma ``ip``, Qdrant ``Distance.DOT``); anything else is refused before any write.

    Setup:
        .. code-block:: bash

            pip install "nudge-rag[llama-index,chroma]"   # the store's extra: see the Stores page

        Chroma scores by l2 unless told otherwise; create the collection with cosine
        (NUDGE-N) or inner product (NUDGE-M). On l2, NUDGE-N is accepted only while every
        stored vector is unit-norm (l2 then ranks like cosine).

        .. code-block:: python

            collection = client.create_collection("docs", metadata={"hnsw:space": "cosine"})
            # or, chromadb >= 1.0: configuration={"hnsw": {"space": "cosine"}}

        Qdrant: LlamaIndex creates collections with ``Distance.COSINE``; pass
        ``dense_config=VectorParams(size=dim, distance=Distance.DOT)`` for NUDGE-M. Point ids
        are the node ids, so nodes need UUID ids (LlamaIndex's default).

    Instantiate:
        .. code-block:: python

            from llama_index_nudge import NudgeFinetuneEngine

            # questions written by QuestionsAnsweredExtractor into node metadata (default)
            engine = NudgeFinetuneEngine.from_index(index)
            # or explicit pairs / a dataset / an LLM
            engine = NudgeFinetuneEngine.from_index(index, train_pairs=[("what is x?", node_id)])
            engine = NudgeFinetuneEngine.from_index(index, llm=llm, num_questions=3)

    Fine-tune:
        .. code-block:: python

            result = engine.finetune()      # TuneResult: changed_ids, gamma, val_score
            engine.restore()                # original embeddings back

    Search:
        .. code-block:: python

            nodes = index.as_retriever(similarity_top_k=5).retrieve("what is x?")

    Use as retriever:
        .. code-block:: python

            query_engine = index.as_query_engine()   # unchanged code, tuned vectors

    Args:
        vector_store: a ``SimpleVectorStore``, ``ChromaVectorStore``, ``QdrantVectorStore``
            or any :class:`nudge_rag.EmbeddingStore`.
        embed_model: the model the index embeds queries with.
        train_pairs: ``[(query_text, node_id), ...]``, a dataset with ``.queries``,
            ``.corpus``, ``.relevant_docs``, or a path to one saved as JSON.
        val_pairs: optional validation pairs in the same forms; without them gamma is
            cross-validated on the training pairs (10 folds, 3 deals), then every training
            pair is used.
        variant: ``"n"`` (NUDGE-N) or ``"m"`` (NUDGE-M).
        solver_params: keyword arguments of :class:`nudge_rag.NudgeN` / :class:`~nudge_rag.NudgeM`
            (e.g. ``{"gamma": 0.1}``).
        state_dir: where originals are kept: ``"auto"`` (see above; ``None`` means the same),
            a folder, or ``"memory"``.
        persist_dir: the folder the index is persisted to, used by ``state_dir="auto"``.
        query_embedding: ``"text"`` (default: questions embedded in batches with
            ``get_text_embedding_batch``, right for symmetric models such as MiniLM) or
            ``"query"`` (``get_query_embedding`` per question, exactly what the retriever does:
            use it for models with a query instruction, e.g. BGE/E5 with one configured).
        batch_size: vectors per read/write request.
        docstore: where node ids without a stored vector are looked up, to say so in errors.
        lock_timeout: seconds a finetune, restore or resume waits for another writer of the
            same store (another engine, retriever or process; one writer at a time): ``0``
            (default) raises :class:`nudge_rag.StoreBusyError` at once, ``None`` waits.
        query_adapter: ``"off"`` (default), ``"on"`` or ``"auto"``: after NUDGE, also fit a
            linear map of query embeddings toward the tuned nodes
            (:class:`nudge_rag.QueryAdapter`; ``"auto"`` keeps it only when validation shows
            a gain) and save it with the vectors. :meth:`get_finetuned_model` returns the
            embedding model that applies it to queries (text embeddings unchanged) and
            :meth:`as_retriever` uses that model; ``result_`` says what was chosen and why.
            Code that queries the index with its own model still gets NUDGE's gain.
        index: the ``VectorStoreIndex`` (``from_index`` sets it), for :meth:`as_retriever`.

    Examples:
        >>> engine = NudgeFinetuneEngine.from_index(index, train_pairs=pairs)  # doctest: +SKIP
        >>> engine.finetune().changed_ids[:2]
        ['6f1c...', '0b2e...']
        >>> engine.restore()
        2
    """

    def __init__(
        self,
        vector_store: Any,
        embed_model: BaseEmbedding,
        train_pairs: PairSource = None,
        *,
        val_pairs: PairSource = None,
        variant: str = "n",
        solver_params: Mapping[str, Any] | None = None,
        state_dir: str | os.PathLike | None = "auto",
        persist_dir: str | os.PathLike | None = None,
        query_embedding: QueryEmbedding = "text",
        batch_size: int = 512,
        embed_batch_size: int = 64,
        docstore: Any = None,
        show_progress: bool = False,
        lock_timeout: float | None = 0.0,
        query_adapter: Literal["off", "on", "auto"] = "off",
        index: Any = None,
    ):
        if not isinstance(embed_model, BaseEmbedding):
            msg = (
                f"embed_model must be a LlamaIndex BaseEmbedding, got {type(embed_model).__name__}"
            )
            raise TypeError(msg)
        self.embed_model = embed_model
        self.variant = variant
        self.solver_params = dict(solver_params or {})
        self._embed = _embedder(embed_model, query_embedding)
        self._docstore = docstore
        self.tuner = StoreTuner(
            vector_store,
            state_dir=state_dir,
            persist_dir=persist_dir,
            variant=variant,
            solver_params=self.solver_params,
            batch_size=batch_size,
            embed_batch_size=embed_batch_size,
            show_progress=show_progress,
            lock_timeout=lock_timeout,
            explain_unknown=self._explain_unknown,
            framework="llama-index",
            query_adapter=query_adapter,
        )
        self.index = index
        self.store = self.tuner.store
        self.state_dir = self.tuner.state_dir
        self.writeback = self.tuner.writeback
        self._train: list[tuple[str, str]] = []
        self._val: list[tuple[str, str]] = []
        self.add_pairs(train_pairs, val_pairs)
        logger.info(
            "NUDGE engine on %s (distance=%s), originals in %s",
            self.store.name,
            self.store.distance,
            self.state_dir or "memory",
        )

    @property
    def result_(self) -> TuneResult | None:
        """What the last :meth:`finetune` did (``None`` before any, or after ``restore()``)."""
        return self.tuner.result_

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_index(
        cls,
        index: Any,
        *,
        train_pairs: PairSource = None,
        val_pairs: PairSource = None,
        metadata_key: str = DEFAULT_QUESTIONS_KEY,
        llm: LLM | None = None,
        num_questions: int = 3,
        question_prompt: PromptTemplate | str | None = None,
        embed_model: BaseEmbedding | None = None,
        **kwargs: Any,
    ) -> NudgeFinetuneEngine:
        """An engine for a ``VectorStoreIndex``, with training pairs from one source.

        The source is, in order of precedence: ``train_pairs``; questions generated by
        ``llm`` (``num_questions`` per node); the questions in ``node.metadata[metadata_key]``
        (``QuestionsAnsweredExtractor``'s raw string, or a list of strings). Nodes without
        usable questions, or without a stored vector, are skipped with a log message.

        Args:
            index: the ``VectorStoreIndex``.
            train_pairs: explicit pairs or a dataset (see the class docstring).
            val_pairs: validation pairs.
            metadata_key: metadata key holding each node's questions.
            llm: a LlamaIndex ``LLM`` to generate questions with.
            num_questions: questions generated per node.
            question_prompt: a prompt with ``{context_str}`` and ``{num_questions}``.
            embed_model: the query embedding model (default: the index's).
            **kwargs: the other arguments of :class:`NudgeFinetuneEngine`.

        Raises:
            ValueError: no node yields any question, or an invalid argument.
        """
        embed_model = embed_model or getattr(index, "_embed_model", None)
        if embed_model is None:
            msg = "the index has no embed model: pass embed_model="
            raise ValueError(msg)
        engine = cls(
            backend_for_index(index),  # by node id, also for stores that know positions only
            embed_model,
            None,
            val_pairs=val_pairs,
            docstore=getattr(index, "docstore", None),
            index=index,
            **kwargs,
        )
        if train_pairs is not None:
            engine.add_pairs(train_pairs)
            return engine
        nodes = engine._stored_nodes(index)
        if llm is not None:
            engine.tuner.preflight()  # metric, pending write-back: before paying for the LLM
            pairs = generate_questions(nodes, llm, num_questions, question_prompt)
            where = f"the LLM ({type(llm).__name__})"
        else:
            pairs, _ = questions_from_metadata(nodes, metadata_key)
            where = f"node.metadata[{metadata_key!r}]"
        if not pairs:
            msg = (
                f"no training questions found in {where} of the {len(nodes)} stored node(s): "
                "run QuestionsAnsweredExtractor (or store a list of questions under "
                "metadata_key) before indexing, pass llm= to generate them, or pass train_pairs="
            )
            raise ValueError(msg)
        engine.add_pairs(pairs)
        return engine

    def _stored_nodes(self, index: Any) -> list[BaseNode]:
        """The nodes that have a stored vector, with their metadata."""
        ids = self.store.list_ids()
        nodes: dict[str, BaseNode] = {}
        docstore = getattr(index, "docstore", None)
        if docstore is not None:
            for node in docstore.get_nodes(ids, raise_error=False):
                if node is not None:
                    nodes[node.node_id] = node
            struct = getattr(index, "index_struct", None)
            no_vector = set(getattr(struct, "nodes_dict", {}) or {}) - set(ids)
            if no_vector:
                logger.warning(
                    "%d indexed node(s) have no stored embedding and are skipped, e.g. %s",
                    len(no_vector),
                    sorted(no_vector)[:_N_SHOWN],
                )
        missing = [i for i in ids if i not in nodes]
        vector_store = index.vector_store
        if missing and getattr(vector_store, "stores_text", False):
            for s in range(0, len(missing), 512):
                for node in vector_store.get_nodes(node_ids=missing[s : s + 512]):
                    nodes[node.node_id] = node
        return [nodes[i] for i in ids if i in nodes]

    # ------------------------------------------------------------------ pairs
    def add_pairs(self, train_pairs: PairSource = None, val_pairs: PairSource = None) -> None:
        """Add training (and validation) pairs; duplicates count once when tuning.

        Raises:
            ValueError / TypeError: a malformed pair or source (the message names it).
        """
        self._train = _add(self._train, train_pairs, "train_pairs")
        self._val = _add(self._val, val_pairs, "val_pairs")

    @property
    def train_pairs(self) -> list[tuple[str, str]]:
        """The ``(query_text, node_id)`` training pairs."""
        return list(dict.fromkeys(self._train))

    @property
    def val_pairs(self) -> list[tuple[str, str]]:
        """The ``(query_text, node_id)`` validation pairs."""
        return list(dict.fromkeys(self._val))

    def _explain_unknown(self, unknown: list[str]) -> str | None:
        """Say so when unknown ids are nodes of the docstore that have no stored vector."""
        docstore = self._docstore
        in_docstore = [i for i in unknown if docstore is not None and docstore.document_exists(i)]
        if not in_docstore:
            return None
        return (
            f"the pairs name {len(in_docstore)} node(s) that have no stored embedding, e.g. "
            f"{in_docstore[:_N_SHOWN]!r}: insert them into the index (with embeddings) first"
        )

    # ------------------------------------------------------------------ tuning
    def finetune(self, train_pairs: PairSource = None, val_pairs: PairSource = None) -> TuneResult:
        """Embed the questions, solve NUDGE on the stored vectors and write the moved ones back.

        Every call starts from the original vectors (saved ones overlay tuned ones), and rows
        moved by an earlier call that do not move now get their originals back; nodes inserted
        since keep their model embeddings unless the pairs name them. Without validation
        pairs, gamma is cross-validated on the training pairs, then every pair is used.

        Args:
            train_pairs: more training pairs to add before tuning.
            val_pairs: more validation pairs.

        Returns:
            The :class:`nudge_rag.TuneResult` (also kept as ``result_``).

        Raises:
            ValueError: empty store, no pairs.
            nudge_rag.UnknownIdError: (a ``ValueError``) node ids not in the vector store.
            nudge_rag.DimensionMismatchError, nudge_rag.MetricMismatchError: (``ValueError``)
                the embed model or the store's metric does not fit; nothing written.
            nudge_rag.WriteBackError: an interrupted write-back is pending (``resume()`` or
                ``restore()`` first).
        """
        self.add_pairs(train_pairs, val_pairs)
        if not self._train:
            self.tuner.preflight()  # an empty store says so first
            msg = "no training pairs: pass train_pairs=[(query_text, node_id), ...] or a dataset"
            raise ValueError(msg)
        return self.tuner.tune(self._train, self._val or None, embed=self._embed)

    def finetune_from_feedback(
        self,
        log: FeedbackLog,
        *,
        store_name: str | None = None,
        since: Any = None,
        until: Any = None,
        min_count: float = 1.0,
        merge_tolerance: float | None = FeedbackLog.DEFAULT_MERGE_TOLERANCE,
        resume: bool = True,
    ) -> TuneResult:
        """Re-tune the stored vectors from the feedback a :class:`FeedbackRetriever` logged.

        Uses the logged query vectors (nothing is embedded; this engine's pairs are not
        used), starts from the original vectors every time, and chooses gamma as
        :meth:`finetune` does without validation pairs (:func:`nudge_rag.tune_from_feedback`).
        Safe to run (e.g. nightly from cron) while the app serves and logs: feedback that
        arrives meanwhile is kept for the next run; a second run at the same time raises
        ``TuneInProgressError``; a killed run is finished by the next one (``resume``).

        Args:
            log: the :class:`nudge_rag.FeedbackLog` the retriever writes to.
            store_name: the store name the queries were logged under (default: this store's
                name, which ``FeedbackRetriever`` uses too).
            since: only feedback from then on (a datetime, Unix seconds or a ``timedelta``).
            until: only feedback before then.
            min_count: net thumbs-up a (question, node) pair needs.
            merge_tolerance: questions whose unit vectors are this close are one question.
            resume: first finish a write-back a killed run left pending.

        Returns:
            The :class:`nudge_rag.TuneResult` (``feedback_pairs``: the pairs used).
        """
        return tune_from_feedback(
            self.tuner,
            log,
            store=self.store.name if store_name is None else store_name,
            since=since,
            until=until,
            min_count=min_count,
            merge_tolerance=merge_tolerance,
            resume=resume,
            embedder=embedder_id(self.embed_model),
        )

    def get_finetuned_model(self) -> AdaptedQueryEmbedding:
        """The embedding model to query this store with: queries adapted, texts unchanged.

        An :class:`AdaptedQueryEmbedding` over ``embed_model`` that applies the query
        adapter saved with the store's tuned vectors (looked up on each query, so a later
        ``finetune()`` or ``restore()`` is followed); without a saved adapter it returns the
        model's own embeddings. As LlamaIndex's adapter engine did, pass it where queries
        are embedded: ``index.as_retriever(embed_model=engine.get_finetuned_model())``.
        """
        return AdaptedQueryEmbedding(self.embed_model, self.writeback.query_adapter)

    def as_retriever(self, **kwargs: Any) -> Any:
        """``index.as_retriever(embed_model=self.get_finetuned_model(), **kwargs)``.

        Raises:
            ValueError: the engine was built without the index (use ``from_index`` or
                ``index=``).
        """
        if self.index is None:
            msg = (
                "as_retriever needs the VectorStoreIndex: build the engine with "
                "NudgeFinetuneEngine.from_index(index) or pass index="
            )
            raise ValueError(msg)
        kwargs.setdefault("embed_model", self.get_finetuned_model())
        return self.index.as_retriever(**kwargs)

    def restore(self) -> int:
        """Write the original embeddings back and forget them (and any query adapter).

        Returns:
            How many vectors were restored.
        """
        return self.tuner.restore()

    def resume(self) -> bool:
        """Finish a write-back interrupted by a crash or a failed request.

        Returns:
            ``True`` if one was pending.
        """
        return self.tuner.resume()

    def discard_pending(self) -> bool:
        """Drop an interrupted write-back that cannot finish; the originals stay saved.

        See :meth:`nudge_rag.WriteBack.discard_pending`: ``restore()`` still puts every
        original back afterwards. Returns ``True`` if a pending plan was dropped.
        """
        return self.tuner.discard_pending()

    def status(self) -> WriteBackStatus:
        """Where this store's write-back stands: :meth:`nudge_rag.WriteBack.status`."""
        return self.tuner.status()


# ---------------------------------------------------------------------- dataset mode
class Nudge:
    """Drop-in for ``llama_index.experimental.nudge.Nudge``, on nudge-rag's numpy solvers.

    Embeds the training dataset's corpus once (``embed_model.get_text_embedding_batch``),
    then tunes the corpus embeddings with NUDGE-N or NUDGE-M. Queries are embedded with
    ``get_query_embedding``, as the original does (it matters for models with a query
    instruction, such as BGE). Differences from the original, all compatible:
    ``val_dataset`` is optional (gamma is then cross-validated on the training queries);
    ``device`` is accepted and ignored (no torch); each ``finetune()`` /
    ``insert_data_and_finetune()`` starts from the original embeddings with every query seen
    so far, so repeated calls never compound changes; only the rows that move are rewritten.

    Args:
        embed_model: a LlamaIndex ``BaseEmbedding``.
        train_dataset: LlamaIndex's ``EmbeddingQAFinetuneDataset``, any object or mapping with
            ``queries``, ``corpus``, ``relevant_docs``, a :class:`nudge_rag.data.RetrievalDataset`,
            or a JSON path written by ``save_json``.
        val_dataset: optional validation dataset (same forms); its relevant docs must be in
            the training corpus.
        use_nudge_n: NUDGE-N (unit-norm output, score by cosine) or NUDGE-M (score by dot).
        device: ignored.
        query_embedding: ``"query"`` (default, as the original) or ``"text"`` (batched
            ``get_text_embedding_batch``; the same vectors for symmetric models, faster).
        solver_params: keyword arguments of the solver (e.g. ``{"gamma": 0.1}``).

    Example:
        >>> nudge = Nudge(embed_model, train_dataset, val_dataset)  # doctest: +SKIP
        >>> nudge.finetune()
        >>> tuned = nudge.get_finetuned_corpus_embeddings()   # (n_docs, dim), corpus order
    """

    def __init__(
        self,
        embed_model: BaseEmbedding,
        train_dataset: PairSource,
        val_dataset: PairSource = None,
        use_nudge_n: bool = True,
        device: str | None = None,
        *,
        query_embedding: QueryEmbedding = "query",
        solver_params: Mapping[str, Any] | None = None,
    ):
        if device is not None:
            logger.debug("device=%r ignored: nudge-rag runs on numpy", device)
        self.embed_model = embed_model
        self.use_nudge_n = use_nudge_n
        self.solver_params = dict(solver_params or {})
        self._embed = _embedder(embed_model, query_embedding)
        train = self._dataset(train_dataset, "train_dataset")
        if not train.corpus:
            msg = "train_dataset has an empty corpus: nothing to fine-tune"
            raise ValueError(msg)
        self.corpus: dict[str, str] = {}
        self._store: ArrayStore | None = None
        self._add_corpus(train.corpus)
        self._tuner = StoreTuner(
            self._store,
            state_dir="memory",
            variant="n" if use_nudge_n else "m",
            solver_params=self.solver_params,
        )
        self._train: list[tuple[str, str]] = []
        self._val: list[tuple[str, str]] = []
        self._add_queries(train, val_dataset)

    @property
    def _distance(self) -> str:
        return "cosine" if self.use_nudge_n else "dot"

    @staticmethod
    def _dataset(source: Any, name: str) -> RetrievalDataset:
        if isinstance(source, (str, os.PathLike)):
            return RetrievalDataset.from_json(source)
        try:
            return RetrievalDataset.from_any(source)
        except TypeError as err:
            msg = f"{name}: {err}"
            raise TypeError(msg) from err

    def _add_corpus(self, corpus: Mapping[Any, str]) -> None:
        corpus = {str(k): v for k, v in corpus.items()}
        clash = [k for k in corpus if k in self.corpus]
        if clash:
            msg = (
                f"{len(clash)} new corpus id(s) already exist in the corpus, e.g. "
                f"{clash[:_N_SHOWN]!r}; new ids must be unique"
            )
            raise ValueError(msg)
        if not corpus:
            return
        vectors = np.asarray(
            self.embed_model.get_text_embedding_batch(list(corpus.values())), dtype=np.float32
        )
        if vectors.ndim != 2 or vectors.shape[0] != len(corpus):
            msg = (
                f"embed_model returned embeddings of shape {vectors.shape} for {len(corpus)} "
                "documents"
            )
            raise ValueError(msg)
        if self._store is None:
            self._store = ArrayStore(list(corpus), vectors, self._distance)
        else:  # the same store object grows, so its saved originals stay with it
            self._store.add(list(corpus), vectors)
        self.corpus.update(corpus)

    def _add_queries(self, train: RetrievalDataset, val: PairSource) -> None:
        self._train = _add(self._train, train, "train_dataset")
        if val is not None:
            self._val = _add(self._val, self._dataset(val, "val_dataset"), "val_dataset")

    @property
    def corpus_embeddings(self) -> np.ndarray:
        """``(n_docs, dim)`` float32: the current (tuned after ``finetune()``) embeddings."""
        return self._store.vectors

    def finetune(self) -> TuneResult:
        """Tune the corpus embeddings on all training queries seen so far.

        Returns:
            The :class:`nudge_rag.TuneResult`.
        """
        return self._tuner.tune(self._train, self._val or None, embed=self._embed)

    def insert_data_and_finetune(
        self, new_train_dataset_batch: PairSource, new_val_dataset_batch: PairSource = None
    ) -> TuneResult:
        """Add new documents and queries, then tune again from the original embeddings.

        Args:
            new_train_dataset_batch: a dataset whose corpus holds only new document ids.
            new_val_dataset_batch: optional new validation queries.

        Raises:
            ValueError: a new corpus id already exists (named in the message).
        """
        batch = self._dataset(new_train_dataset_batch, "new_train_dataset_batch")
        self._add_corpus(batch.corpus)
        self._add_queries(batch, new_val_dataset_batch)
        return self.finetune()

    def get_finetuned_corpus_embeddings(
        self, as_dict: bool = False
    ) -> np.ndarray | dict[str, np.ndarray]:
        """The corpus embeddings, in corpus order, as the original returns them.

        Args:
            as_dict: return ``{doc_id: (dim,) float32 array}`` instead.

        Returns:
            ``(n_docs, dim)`` float32 array (a copy), or the dict.
        """
        vectors = self._store.vectors.copy()
        if as_dict:
            return dict(zip(self._store.ids, vectors, strict=True))
        return vectors
