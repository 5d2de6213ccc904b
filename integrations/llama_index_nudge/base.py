"""NUDGE for LlamaIndex: tune the embeddings stored in a vector index, never the model.

Two entry points:

* :class:`NudgeFinetuneEngine` (index mode): reads the node embeddings a ``VectorStoreIndex``
  already stores (``SimpleVectorStore``, Chroma, Qdrant), embeds training questions with the
  index's embed model, runs NUDGE and writes the moved vectors back in place. The user's
  ``index.as_retriever()`` then returns better results; ``restore()`` undoes it.
* :class:`Nudge` (dataset mode): a drop-in for ``llama_index.experimental.nudge.Nudge``; it
  embeds a dataset's corpus and returns tuned corpus embeddings as arrays.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
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

from llama_index_nudge.questions import (
    DEFAULT_QUESTIONS_KEY,
    generate_questions,
    questions_from_metadata,
)
from llama_index_nudge.stores import adapter_for, default_state_dir
from nudge_rag import (
    ArrayStore,
    NudgeM,
    NudgeN,
    TuneResult,
    WriteBack,
    check_similarity,
    make_solver,
    tune_store,
)
from nudge_rag._data import RetrievalDataset

logger = logging.getLogger(__name__)

__all__ = ["Nudge", "NudgeFinetuneEngine", "PairSource"]

QueryEmbedding = Literal["query", "text"]
PairSource = Any
"""Training pairs: ``[(query_text, node_id), ...]``, a dataset with ``.queries``, ``.corpus``
and ``.relevant_docs`` (LlamaIndex's ``EmbeddingQAFinetuneDataset``, our ``RetrievalDataset``),
or the path of such a dataset saved as JSON."""

_AUTO = "auto"
_N_SHOWN = 3


# ---------------------------------------------------------------------- helpers
def _pairs_from(source: PairSource, name: str) -> list[tuple[str, str]]:
    """Flatten any accepted pair source into ``(query_text, node_id)`` pairs."""
    if source is None:
        return []
    if isinstance(source, (str, os.PathLike)):
        source = RetrievalDataset.from_json(source)
    if isinstance(source, Mapping) or hasattr(source, "relevant_docs"):
        dataset = RetrievalDataset.from_any(source)
        pairs = []
        for query_id, doc_ids in dataset.relevant_docs.items():
            text = dataset.queries[query_id]
            pairs.extend((str(text), str(doc_id)) for doc_id in doc_ids)
        return pairs
    if not isinstance(source, Iterable):
        msg = (
            f"{name} must be a list of (query_text, node_id) pairs, a dataset or a JSON path, got "
            f"{type(source).__name__}"
        )
        raise TypeError(msg)
    pairs = []
    for k, item in enumerate(source):
        ok = isinstance(item, (tuple, list)) and len(item) == 2
        if (
            not ok
            or not isinstance(item[0], str)
            or not isinstance(item[1], Hashable)
            or not item[0].strip()
        ):
            msg = (
                f"{name}[{k}] must be a (query_text, node_id) pair with a non-empty query, got "
                f"{item!r:.80}"
            )
            raise ValueError(msg)
        pairs.append((item[0], str(item[1])))
    return pairs


def _dedupe(pairs: Iterable[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    unique = list(dict.fromkeys(pairs))
    n_pairs = len(pairs) if isinstance(pairs, Sequence) else None
    if n_pairs is not None and len(unique) < n_pairs:
        logger.warning(
            "%s: skipped %d duplicate (query, node_id) pair(s)", name, n_pairs - len(unique)
        )
    return unique


def _group(pairs: Sequence[tuple[str, str]]) -> tuple[list[str], list[list[str]]]:
    """One query per distinct text, answered by every node it was paired with."""
    answers: dict[str, list[str]] = {}
    for text, node_id in pairs:
        answers.setdefault(text, []).append(node_id)
    return list(answers), list(answers.values())


class _QueryEmbedder:
    """Embeds query texts once (cached by text) with the index's embed model.

    ``mode="query"`` calls ``embed_model.get_query_embedding`` per text: exactly what the
    retriever does at search time (query instructions of models such as BGE/E5 included).
    ``mode="text"`` embeds in batches with ``get_text_embedding_batch``, like LlamaIndex's own
    fine-tuning; faster, and the same vectors for symmetric models (MiniLM).
    """

    def __init__(self, embed_model: BaseEmbedding, mode: QueryEmbedding):
        if mode not in ("query", "text"):
            msg = f"query_embedding must be 'query' or 'text', got {mode!r}"
            raise ValueError(msg)
        self.embed_model = embed_model
        self.mode = mode
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if new:
            if self.mode == "text":
                vectors = self.embed_model.get_text_embedding_batch(new)
            else:
                vectors = [self.embed_model.get_query_embedding(t) for t in new]
            matrix = np.asarray(vectors, dtype=np.float32)
            if matrix.ndim != 2 or matrix.shape[0] != len(new):
                msg = (
                    f"embed_model returned embeddings of shape {matrix.shape} for {len(new)} "
                    "queries"
                )
                raise ValueError(msg)
            if not np.isfinite(matrix).all():
                msg = "embed_model returned NaN or inf query embeddings"
                raise ValueError(msg)
            self._cache.update(zip(new, matrix, strict=True))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])


def _check_dim(queries: np.ndarray, stored_dim: int, what: str) -> None:
    if queries.shape[0] and queries.shape[1] != stored_dim:
        msg = (
            f"embed_model returns {queries.shape[1]}-dimensional {what} embeddings, but the store "
            f"holds {stored_dim}-dimensional vectors: use the embed model the index was built with"
        )
        raise ValueError(msg)


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
    ``HttpClient``, a Qdrant server) needs an explicit ``state_dir``. ``state_dir=None`` always
    keeps them in memory. Every ``finetune()`` starts from the originals, so running it again
    with more pairs never compounds changes.

    Metric: NUDGE-N (``variant="n"``, default) writes unit-norm vectors and suits cosine
    stores (``SimpleVectorStore``, Chroma ``cosine``, Qdrant ``COSINE``) and l2/ip stores whose
    vectors are all unit-norm. NUDGE-M (``variant="m"``) needs a store that scores by dot
    product (Chroma ``ip``, Qdrant ``Distance.DOT``); anything else is refused before any write.

    Setup:
        .. code-block:: bash

            pip install "nudge-rag[llama-index]"   # + llama-index-vector-stores-chroma / -qdrant

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
        val_pairs: optional validation pairs in the same forms; without them the solver
            holds out ``val_fraction`` of the training queries to choose gamma.
        variant: ``"n"`` (NUDGE-N) or ``"m"`` (NUDGE-M).
        solver_params: keyword arguments of :class:`nudge_rag.NudgeN` / :class:`~nudge_rag.NudgeM`
            (e.g. ``{"gamma": 0.1}``).
        state_dir: where originals are kept: ``"auto"`` (see above), a folder, or ``None``
            (memory).
        persist_dir: the folder the index is persisted to, used by ``state_dir="auto"``.
        query_embedding: ``"text"`` (default: questions embedded in batches with
            ``get_text_embedding_batch``, right for symmetric models such as MiniLM) or
            ``"query"`` (``get_query_embedding`` per question, exactly what the retriever does:
            use it for models with a query instruction, e.g. BGE/E5 with one configured).
        batch_size: vectors per read/write request.
        docstore: where node ids without a stored vector are looked up, to say so in errors.

    Example:
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
        state_dir: str | os.PathLike | None = _AUTO,
        persist_dir: str | os.PathLike | None = None,
        query_embedding: QueryEmbedding = "text",
        batch_size: int = 512,
        docstore: Any = None,
    ):
        if not isinstance(embed_model, BaseEmbedding):
            msg = (
                f"embed_model must be a LlamaIndex BaseEmbedding, got {type(embed_model).__name__}"
            )
            raise TypeError(msg)
        self.store = adapter_for(vector_store)
        self.embed_model = embed_model
        self.variant = variant
        self.solver_params = dict(solver_params or {})
        make_solver(variant, **self.solver_params)  # fail now on a bad variant or parameter
        if isinstance(state_dir, str) and state_dir == _AUTO:
            state_dir = default_state_dir(self.store, persist_dir)
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.writeback = WriteBack(self.store, self.state_dir, batch_size=batch_size)
        self._embedder = _QueryEmbedder(embed_model, query_embedding)
        self._docstore = docstore
        self._train: list[tuple[str, str]] = []
        self._val: list[tuple[str, str]] = []
        self.add_pairs(train_pairs, val_pairs)
        self.result_: TuneResult | None = None
        logger.info(
            "NUDGE engine on %s (distance=%s), originals in %s",
            type(self.store).__name__,
            self.store.distance,
            self.state_dir or "memory",
        )

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
            index.vector_store,
            embed_model,
            None,
            val_pairs=val_pairs,
            docstore=getattr(index, "docstore", None),
            **kwargs,
        )
        if train_pairs is not None:
            engine.add_pairs(train_pairs)
            return engine
        nodes = engine._stored_nodes(index)
        if llm is not None:
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
        """Add training (and validation) pairs; duplicates are skipped with a warning.

        Raises:
            ValueError / TypeError: a malformed pair or source.
        """
        self._train = _dedupe(self._train + _pairs_from(train_pairs, "train_pairs"), "train_pairs")
        self._val = _dedupe(self._val + _pairs_from(val_pairs, "val_pairs"), "val_pairs")

    @property
    def train_pairs(self) -> list[tuple[str, str]]:
        """The ``(query_text, node_id)`` training pairs."""
        return list(self._train)

    @property
    def val_pairs(self) -> list[tuple[str, str]]:
        """The ``(query_text, node_id)`` validation pairs."""
        return list(self._val)

    def _check_known(self, pairs: Sequence[tuple[str, str]], known: set[str], name: str) -> None:
        unknown = list(dict.fromkeys(node_id for _, node_id in pairs if node_id not in known))
        if not unknown:
            return
        docstore = self._docstore
        in_docstore = [i for i in unknown if docstore is not None and docstore.document_exists(i)]
        if in_docstore:
            msg = (
                f"{name} name {len(in_docstore)} node(s) that have no stored embedding, e.g. "
                f"{in_docstore[:_N_SHOWN]!r}: insert them into the index (with embeddings) first"
            )
            raise ValueError(msg)
        msg = (
            f"{name} name {len(unknown)} node id(s) that are not in the vector store, e.g. "
            f"{unknown[:_N_SHOWN]!r}"
        )
        raise ValueError(msg)

    # ------------------------------------------------------------------ tuning
    def finetune(self, train_pairs: PairSource = None, val_pairs: PairSource = None) -> TuneResult:
        """Embed the questions, solve NUDGE on the stored vectors and write the moved ones back.

        Every call starts from the original vectors (saved ones overlay tuned ones), and rows
        moved by an earlier call that do not move now get their originals back; nodes inserted
        since keep their model embeddings unless the pairs name them.

        Args:
            train_pairs: more training pairs to add before tuning.
            val_pairs: more validation pairs.

        Returns:
            The :class:`nudge_rag.TuneResult` (also kept as ``result_``).

        Raises:
            ValueError: empty store, no pairs, unknown node ids, dimension or metric mismatch.
            nudge_rag.WriteBackError: an interrupted write-back is pending (``resume()`` or
                ``restore()`` first).
        """
        self.add_pairs(train_pairs, val_pairs)
        ids = self.store.list_ids()
        if not ids:
            msg = "the vector store is empty: insert nodes (with embeddings) before fine-tuning"
            raise ValueError(msg)
        if not self._train:
            msg = "no training pairs: pass train_pairs=[(query_text, node_id), ...] or a dataset"
            raise ValueError(msg)
        known = set(ids)
        self._check_known(self._train, known, "train_pairs")
        self._check_known(self._val, known, "val_pairs")
        solver: NudgeN | NudgeM = make_solver(self.variant, **self.solver_params)
        # The metric that depends only on settings is checked before anything is embedded;
        # tune_store checks the unit-norm case on the vectors themselves.
        check_similarity(solver.similarity, str(self.store.distance), unit_norm=True)
        stored_dim = int(self.store.get_vectors(ids[:1]).shape[1])
        train_texts, train_answers = _group(self._train)
        train_emb = self._embedder(train_texts)
        _check_dim(train_emb, stored_dim, "query")
        val_emb = val_answers = None
        if self._val:
            val_texts, val_answers = _group(self._val)
            val_emb = self._embedder(val_texts)
            _check_dim(val_emb, stored_dim, "query")
        result = tune_store(self.writeback, solver, train_emb, train_answers, val_emb, val_answers)
        logger.info(
            "NUDGE-%s: %d of %d stored vectors moved (gamma=%s) from %d training queries",
            self.variant.upper(),
            len(result.changed_ids),
            result.n_docs,
            result.gamma,
            len(train_texts),
        )
        self.result_ = result
        return result

    def restore(self) -> int:
        """Write the original embeddings back and forget them.

        Returns:
            How many vectors were restored.
        """
        return self.writeback.restore()

    def resume(self) -> bool:
        """Finish a write-back interrupted by a crash or a failed request.

        Returns:
            ``True`` if one was pending.
        """
        return self.writeback.resume()


# ---------------------------------------------------------------------- dataset mode
class Nudge:
    """Drop-in for ``llama_index.experimental.nudge.Nudge``, on nudge-rag's numpy solvers.

    Embeds the training dataset's corpus once (``embed_model.get_text_embedding_batch``),
    then tunes the corpus embeddings with NUDGE-N or NUDGE-M. Differences from the original,
    all compatible: ``val_dataset`` is optional (gamma is then chosen on a held-out share of
    the training queries); ``device`` is accepted and ignored (no torch); each
    ``finetune()`` / ``insert_data_and_finetune()`` starts from the original embeddings with
    every query seen so far, so repeated calls never compound changes; only the rows that
    move are rewritten.

    Args:
        embed_model: a LlamaIndex ``BaseEmbedding``.
        train_dataset: LlamaIndex's ``EmbeddingQAFinetuneDataset``, any object or mapping with
            ``queries``, ``corpus``, ``relevant_docs``, a :class:`nudge_rag._data.RetrievalDataset`,
            or a JSON path written by ``save_json``.
        val_dataset: optional validation dataset (same forms); its relevant docs must be in
            the training corpus.
        use_nudge_n: NUDGE-N (unit-norm output, score by cosine) or NUDGE-M (score by dot).
        device: ignored.
        query_embedding: ``"query"`` or ``"text"``, see :class:`NudgeFinetuneEngine`.
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
        query_embedding: QueryEmbedding = "text",
        solver_params: Mapping[str, Any] | None = None,
    ):
        if device is not None:
            logger.debug("device=%r ignored: nudge-rag runs on numpy", device)
        self.embed_model = embed_model
        self.use_nudge_n = use_nudge_n
        self.solver_params = dict(solver_params or {})
        self._embedder = _QueryEmbedder(embed_model, query_embedding)
        train = self._dataset(train_dataset, "train_dataset")
        self.corpus: dict[str, str] = {}
        if not train.corpus:
            msg = "train_dataset has an empty corpus: nothing to fine-tune"
            raise ValueError(msg)
        self._store: ArrayStore | None = None
        self._writeback: WriteBack | None = None
        self._add_corpus(train.corpus)
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
        old = self._store
        if old is None:
            self._store = ArrayStore(list(corpus), vectors, self._distance)
            self._writeback = WriteBack(self._store)
        else:
            if old.vectors.shape[1] != vectors.shape[1]:
                msg = (
                    f"new documents embed to {vectors.shape[1]} dimensions, the corpus has "
                    f"{old.vectors.shape[1]}"
                )
                raise ValueError(msg)
            stacked = np.concatenate([old.vectors, vectors])
            self._store = ArrayStore(old.ids + list(corpus), stacked, self._distance)
            # Saved originals stay valid: existing ids keep their rows' meaning.
            self._writeback.store = self._store
        self.corpus.update(corpus)

    def _add_queries(self, train: RetrievalDataset, val: PairSource) -> None:
        self._train = _dedupe(self._train + _pairs_from(train, "train_dataset"), "train_dataset")
        if val is not None:
            val_pairs = _pairs_from(self._dataset(val, "val_dataset"), "val_dataset")
            self._val = _dedupe(self._val + val_pairs, "val_dataset")

    @property
    def corpus_embeddings(self) -> np.ndarray:
        """``(n_docs, dim)`` float32: the current (tuned after ``finetune()``) embeddings."""
        return self._store.vectors

    def finetune(self) -> TuneResult:
        """Tune the corpus embeddings on all training queries seen so far.

        Returns:
            The :class:`nudge_rag.TuneResult`.
        """
        solver = make_solver("n" if self.use_nudge_n else "m", **self.solver_params)
        known = set(self._store.ids)
        for pairs, name in ((self._train, "train_dataset"), (self._val, "val_dataset")):
            unknown = sorted({d for _, d in pairs if d not in known})
            if unknown:
                msg = (
                    f"{name} names {len(unknown)} document id(s) not in the corpus, e.g. "
                    f"{unknown[:_N_SHOWN]!r}"
                )
                raise ValueError(msg)
        texts, answers = _group(self._train)
        train_emb = self._embedder(texts)
        _check_dim(train_emb, self._store.vectors.shape[1], "query")
        val_emb = val_answers = None
        if self._val:
            val_texts, val_answers = _group(self._val)
            val_emb = self._embedder(val_texts)
        return tune_store(self._writeback, solver, train_emb, answers, val_emb, val_answers)

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
