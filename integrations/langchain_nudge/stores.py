"""Read and write the *stored* vectors of LangChain vector stores by id.

The backends live in the core (:mod:`nudge_rag.backends`), one module per store, shared with
the LlamaIndex integration; :func:`store_for` finds the one for a LangChain vector store
through the core's single registry, and :func:`register_store` adds one for another store
class.

:class:`ReAddStore` is the fallback for a store that cannot be updated in place: it re-adds
documents by id with their tuned vectors, which some stores implement as delete-then-add.
Use it only where the wrapper really upserts (PGVector's legacy class, Redis).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from langchain_nudge._compat import Document, Embeddings
from nudge_rag import BaseEmbeddingStore, EmbeddingStore
from nudge_rag.backends import (
    as_rows,
    backend_for,
    register_backend,
    unknown_ids,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ReAddStore",
    "register_store",
    "store_for",
]


# ====================================================================== fallback
class _ReplayEmbeddings(Embeddings):
    """Hands back given vectors for given texts, in order; embeds nothing."""

    def __init__(self, texts: Sequence[str], vectors: np.ndarray):
        self._texts = list(texts)
        self._vectors = vectors
        self._next = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        end = self._next + len(texts)
        if list(texts) != self._texts[self._next : end]:
            msg = "the vector store asked for vectors of texts other than the documents re-added"
            raise RuntimeError(msg)
        out = self._vectors[self._next : end].astype(float).tolist()
        self._next = end
        return out

    def embed_query(self, text: str) -> list[float]:
        msg = "_ReplayEmbeddings only serves documents being re-added"
        raise RuntimeError(msg)


class ReAddStore(BaseEmbeddingStore):
    """Fallback :class:`nudge_rag.EmbeddingStore`: re-add documents by id with tuned vectors.

    For a vector store with no adapter here. Reading needs ``get_vectors``, a callable that
    returns the stored vectors of given ids (LangChain has no standard way to read them).
    Writing calls ``vectorstore.add_documents(docs, ids=...)`` while the store's embeddings
    object is temporarily swapped for a shim that returns the tuned vectors. Stores that
    implement that call as delete-then-add leave a short window in which a concurrent reader
    may miss a document; a warning says so. Prefer a dedicated adapter
    (:func:`register_store`).

    Args:
        vectorstore: the LangChain vector store (must support ``get_by_ids`` and
            ``add_documents(..., ids=...)``).
        get_vectors: ``ids -> (len(ids), dim)`` float array of the stored vectors.
        ids: all document ids in the store.
        distance: how the store scores: ``"cosine"``, ``"dot"`` or ``"l2"``.
    """

    _lock = threading.Lock()

    def __init__(
        self,
        vectorstore: Any,
        get_vectors: Callable[[Sequence[str]], Any],
        ids: Sequence[str],
        distance: str,
    ):
        self.vectorstore = vectorstore
        self._get_vectors = get_vectors
        self._ids = [str(i) for i in ids]
        self.distance = distance
        self._attr = self._embeddings_attribute()

    def _embeddings_attribute(self) -> str:
        current = getattr(self.vectorstore, "embeddings", None)
        for name, value in vars(self.vectorstore).items():
            if current is not None and value is current:
                return name
        msg = (
            f"{type(self.vectorstore).__name__} does not expose its embeddings object as an "
            "attribute, so tuned vectors cannot be re-added; write an adapter and "
            "register it with register_store()"
        )
        raise TypeError(msg)

    def list_ids(self) -> list[str]:
        """The ids given at construction."""
        return list(self._ids)

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Vectors from the ``get_vectors`` callable, checked."""
        return as_rows(ids, self._get_vectors(list(ids)))

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Re-add the documents of ``ids`` with ``vectors`` (may be delete-then-add)."""
        vectors = as_rows(ids, vectors)
        if not ids:
            return
        docs = self.vectorstore.get_by_ids(list(ids))
        by_id = {d.id: d for d in docs}
        if len(by_id) != len(set(ids)):
            raise unknown_ids(ids, by_id, type(self.vectorstore).__name__)
        ordered = [by_id[i] for i in ids]
        logger.warning(
            "re-adding %d document(s) to %s through add_documents(ids=...): where the store "
            "implements this as delete-then-add, a reader searching during the write may get "
            "fewer results (those documents are missing for that moment)",
            len(ordered),
            type(self.vectorstore).__name__,
        )
        shim = _ReplayEmbeddings([d.page_content for d in ordered], vectors)
        with self._lock:
            original = getattr(self.vectorstore, self._attr)
            setattr(self.vectorstore, self._attr, shim)
            try:
                self.vectorstore.add_documents(
                    [Document(page_content=d.page_content, metadata=d.metadata) for d in ordered],
                    ids=list(ids),
                )
            finally:
                setattr(self.vectorstore, self._attr, original)


# ====================================================================== registry
def register_store(vectorstore_class: type | str, factory: Callable[[Any], Any]) -> None:
    """Use ``factory(vectorstore)`` as the backend of a LangChain vector-store class.

    The core's registry (:func:`nudge_rag.backends.register_backend`) holds it, so subclasses
    use it too.

    Args:
        vectorstore_class: the vector store class, or its ``"module.QualName"`` path.
        factory: called with the vector store; returns an :class:`nudge_rag.EmbeddingStore`.
    """
    register_backend(vectorstore_class, factory, framework="langchain")


def store_for(vectorstore: Any) -> EmbeddingStore:
    """The :class:`nudge_rag.EmbeddingStore` backend for a LangChain vector store.

    Raises:
        nudge_rag.UnsupportedStoreError: (a ``TypeError``) no backend for this class; the
            message lists the supported stores and the extra that installs each.
    """
    return backend_for(vectorstore, "langchain")
