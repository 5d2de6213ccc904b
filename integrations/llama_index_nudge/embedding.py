"""``AdaptedQueryEmbedding``: a LlamaIndex embedding that applies a store's query adapter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
except ImportError as err:  # pragma: no cover - depends on the environment
    msg = "llama_index_nudge needs llama-index-core: pip install 'nudge-rag[llama-index]'"
    raise ImportError(msg) from err
from pydantic import PrivateAttr

from nudge_rag import QueryAdapter

__all__ = ["AdaptedQueryEmbedding"]


class AdaptedQueryEmbedding(BaseEmbedding):
    """Wraps an embedding model: query embeddings go through the saved query adapter.

    Text (document) embeddings are the wrapped model's, unchanged, so the index's nodes and
    new inserts are embedded as before. Query embeddings are the model's, mapped by the
    :class:`nudge_rag.QueryAdapter` saved with the store's tuned vectors; the adapter is
    looked up on every query (a ``stat`` of the state once read), so a later re-fit or
    ``restore()`` (no adapter: queries unchanged) is followed without rebuilding anything.
    Returned by :meth:`NudgeFinetuneEngine.get_finetuned_model`.

    Args:
        base: the model the index embeds with.
        adapter: a function returning the adapter to apply now, or ``None`` (e.g.
            ``WriteBack.query_adapter``), or a fitted :class:`nudge_rag.QueryAdapter`.
    """

    _base: BaseEmbedding = PrivateAttr()
    _adapter: Callable[[], QueryAdapter | None] = PrivateAttr()

    def __init__(
        self,
        base: BaseEmbedding,
        adapter: Callable[[], QueryAdapter | None] | QueryAdapter,
        **kwargs: Any,
    ):
        if not isinstance(base, BaseEmbedding):
            msg = f"base must be a LlamaIndex BaseEmbedding, got {type(base).__name__}"
            raise TypeError(msg)
        kwargs.setdefault("model_name", f"{base.model_name} + nudge query adapter")
        kwargs.setdefault("embed_batch_size", base.embed_batch_size)
        super().__init__(**kwargs)
        self._base = base
        self._adapter = (lambda: adapter) if isinstance(adapter, QueryAdapter) else adapter

    @classmethod
    def class_name(cls) -> str:
        """LlamaIndex's serialization name."""
        return "AdaptedQueryEmbedding"

    @property
    def base(self) -> BaseEmbedding:
        """The wrapped model."""
        return self._base

    def _adapt(self, vector: list[float]) -> list[float]:
        adapter = self._adapter()
        if adapter is None:
            return list(vector)
        return adapter.transform(np.asarray(vector, dtype=np.float32)).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._adapt(self._base.get_query_embedding(query))

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._adapt(await self._base.aget_query_embedding(query))

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._base.get_text_embedding(text)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await self._base.aget_text_embedding(text)

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._base.get_text_embedding_batch(texts)
