"""Log what a LlamaIndex retriever shows, so that users' feedback can tune the index.

:class:`FeedbackRetriever` wraps an index's retriever (``index.as_retriever()``): every
``retrieve``/``aretrieve`` embeds the question once (the wrapped retriever then searches with
that embedding), logs the query vector, the shown node ids in order and the question to a
:class:`nudge_rag.FeedbackLog`, and returns copies of the nodes with the query id in
``node.metadata["nudge_query_id"]`` (kept out of the LLM's and the embedder's view of the
metadata). The stored nodes are never changed. ``retriever.feedback(query_id, node_id)``
records a thumbs-up; ``NudgeFinetuneEngine.finetune_from_feedback(log)`` re-tunes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

try:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.schema import NodeWithScore, QueryBundle
except ImportError as err:  # pragma: no cover - exercised only without the extra
    msg = "llama_index_nudge needs llama-index-core: pip install 'nudge-rag[llama-index]'"
    raise ImportError(msg) from err

from nudge_rag import FeedbackLog, backend_for

logger = logging.getLogger(__name__)

__all__ = ["QUERY_ID_KEY", "FeedbackRetriever"]

#: ``node.metadata`` key holding the feedback log's query id of a returned node.
QUERY_ID_KEY = "nudge_query_id"


def embedder_id(embed_model: BaseEmbedding) -> str:
    """The identity the feedback log records for ``embed_model``.

    Its class and model name, and a fingerprint of its embedding of a fixed probe text
    (:meth:`nudge_rag.FeedbackLog.embedder_id`), so tuning never mixes query vectors of two
    models.
    """
    model = getattr(embed_model, "model_name", None)
    name = type(embed_model).__name__ + (f"({model})" if isinstance(model, str) and model else "")
    probe = embed_model.get_query_embedding(FeedbackLog.PROBE_TEXT)
    return FeedbackLog.embedder_id(name, probe)


class FeedbackRetriever(BaseRetriever):
    """A retriever that logs each search to a :class:`nudge_rag.FeedbackLog`.

    Setup:
        .. code-block:: bash

            pip install "nudge-rag[llama-index]"

    Instantiate:
        .. code-block:: python

            from llama_index_nudge import FeedbackRetriever, NudgeFinetuneEngine
            from nudge_rag import FeedbackLog

            log = FeedbackLog("feedback.db")   # or a postgresql:// URL
            retriever = FeedbackRetriever(index.as_retriever(similarity_top_k=5), log)
            # or: FeedbackRetriever.from_index(index, log, similarity_top_k=5)

    Search and collect feedback:
        .. code-block:: python

            nodes = retriever.retrieve("what is x?")
            qid = nodes[0].node.metadata["nudge_query_id"]
            retriever.feedback(qid, nodes[0].node.node_id, relevant=True)  # a thumbs-up

    Re-tune (e.g. nightly):
        .. code-block:: python

            engine = NudgeFinetuneEngine(
                index.vector_store, retriever.embed_model, persist_dir="./storage"
            )
            engine.finetune_from_feedback(log)   # from the originals, every time

    Use as retriever:
        .. code-block:: python

            query_engine = RetrieverQueryEngine.from_args(retriever)

    Args:
        retriever: the retriever to wrap, usually ``index.as_retriever(...)``.
        log: the feedback log.
        embed_model: the model queries are embedded with (default: the wrapped retriever's,
            e.g. a ``VectorIndexRetriever``'s). The wrapped retriever searches with the
            logged embedding, so each question is embedded once.
        store_name: the store name queries are logged under (default: the name nudge-rag's
            backend gives the retriever's vector store, as ``NudgeFinetuneEngine`` does).

    Raises:
        TypeError: no embed model given and the wrapped retriever has none.
    """

    def __init__(
        self,
        retriever: BaseRetriever,
        log: FeedbackLog,
        *,
        embed_model: BaseEmbedding | None = None,
        store_name: str | None = None,
    ):
        if not isinstance(log, FeedbackLog):
            msg = f"log must be a nudge_rag.FeedbackLog, got {type(log).__name__}"
            raise TypeError(msg)
        embed_model = embed_model or getattr(retriever, "_embed_model", None)
        if not isinstance(embed_model, BaseEmbedding):
            msg = (
                f"{type(retriever).__name__} has no embed model to log query vectors with: "
                "pass embed_model= (the model the index embeds queries with)"
            )
            raise TypeError(msg)
        if store_name is None:
            vector_store = getattr(retriever, "_vector_store", None)
            if vector_store is None:
                msg = f"{type(retriever).__name__} has no vector store: pass store_name="
                raise TypeError(msg)
            store_name = str(backend_for(vector_store, "llama-index").name)
        self.retriever = retriever
        self.log = log
        self.embed_model = embed_model
        self.store_name = store_name
        self._embedder_id: str | None = None
        super().__init__(
            callback_manager=getattr(retriever, "callback_manager", None),
            verbose=getattr(retriever, "_verbose", False),
        )

    @classmethod
    def from_index(cls, index: Any, log: FeedbackLog, **kwargs: Any) -> FeedbackRetriever:
        """``FeedbackRetriever(index.as_retriever(**kwargs), log)``."""
        return cls(index.as_retriever(**kwargs), log)

    @property
    def embedder_id(self) -> str:
        """Which model embeds the questions (computed once; the log records it per query)."""
        if self._embedder_id is None:
            self._embedder_id = embedder_id(self.embed_model)
        return self._embedder_id

    # ------------------------------------------------------------------ search
    def _with_embedding(self, query_bundle: QueryBundle, embedding: list[float]) -> QueryBundle:
        return QueryBundle(
            query_str=query_bundle.query_str,
            image_path=query_bundle.image_path,
            custom_embedding_strs=query_bundle.custom_embedding_strs,
            embedding=list(embedding),
        )

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        embedding = query_bundle.embedding
        if embedding is None:
            embedding = self.embed_model.get_agg_embedding_from_queries(query_bundle.embedding_strs)
        found = self.retriever.retrieve(self._with_embedding(query_bundle, embedding))
        return self._logged(query_bundle.query_str, embedding, found)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        embedding = query_bundle.embedding
        if embedding is None:
            embedding = await self.embed_model.aget_agg_embedding_from_queries(
                query_bundle.embedding_strs
            )
        found = await self.retriever.aretrieve(self._with_embedding(query_bundle, embedding))
        # The log's write may wait for another process: keep it off the event loop.
        return await asyncio.to_thread(self._logged, query_bundle.query_str, embedding, found)

    def _logged(
        self, query: str, embedding: list[float], found: list[NodeWithScore]
    ) -> list[NodeWithScore]:
        shown = [n.node.node_id for n in found]
        qid = self.log.log_query(
            embedding, shown, text=query, store=self.store_name, embedder=self.embedder_id
        )
        return [NodeWithScore(node=_tagged(n.node, qid), score=n.score) for n in found]

    # ------------------------------------------------------------------ feedback
    def feedback(
        self, query_id: str, node_id: str, relevant: bool = True, *, weight: float = 1.0
    ) -> str:
        """Record that a returned node answered (or did not answer) the question.

        Args:
            query_id: ``node.metadata["nudge_query_id"]`` of the returned nodes.
            node_id: the ``node_id`` of one of them.
            relevant: ``True`` (thumbs-up) or ``False`` (thumbs-down; cancels a thumbs-up).
            weight: how much it counts (a thumbs-up is 1).

        Returns:
            The event id.

        Raises:
            nudge_rag.UnknownIdError: the query id is not in the log, or the node was not
                returned for it.
        """
        return self.log.feedback(query_id, node_id, relevant, weight=weight)


def _tagged(node: Any, query_id: str) -> Any:
    """A copy of ``node`` carrying the query id, hidden from the LLM and the embedder."""
    update: dict[str, Any] = {"metadata": {**node.metadata, QUERY_ID_KEY: query_id}}
    for keys in ("excluded_llm_metadata_keys", "excluded_embed_metadata_keys"):
        current = list(getattr(node, keys, None) or [])
        if QUERY_ID_KEY not in current:
            update[keys] = [*current, QUERY_ID_KEY]
    return node.model_copy(update=update)
