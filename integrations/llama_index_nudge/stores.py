"""One small :class:`~nudge_rag.EmbeddingStore` per LlamaIndex vector store.

Each class reads and writes the vectors a vector store already holds, by LlamaIndex node id;
none of them embeds text. Everything that must be safe (saving originals, batching, resume,
restore) lives in :class:`nudge_rag.WriteBack`.

* :class:`SimpleVectorStoreAdapter`: LlamaIndex's default in-memory ``SimpleVectorStore``
  (``data.embedding_dict``); it ranks by cosine similarity.
* :class:`ChromaAdapter`: a ``chromadb`` collection (embedded ``PersistentClient`` or
  ``HttpClient``); ids are node ids; the distance is the collection's ``hnsw`` space
  (``l2`` by default, ``cosine``, ``ip``).
* :class:`QdrantAdapter`: a Qdrant collection (local ``QdrantClient(path=...)`` or a server);
  point ids are the node ids (UUID strings); the distance is the dense vector's setting.

:func:`adapter_for` picks the right one for a LlamaIndex vector store.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    from llama_index.core.vector_stores.simple import SimpleVectorStore
except ImportError as err:  # pragma: no cover - exercised only without the extra
    msg = "llama_index_nudge needs llama-index-core: pip install 'nudge-rag[llama-index]'"
    raise ImportError(msg) from err

from nudge_rag import EmbeddingStore
from nudge_rag.backends import STATE_FOLDER, ChromaCollectionStore, QdrantCollectionStore

logger = logging.getLogger(__name__)

__all__ = [
    "ChromaAdapter",
    "QdrantAdapter",
    "SimpleVectorStoreAdapter",
    "adapter_for",
    "default_state_dir",
]

_PAGE = 1000  # ids per listing request


def _unknown_ids_error(unknown: Sequence[str], where: str) -> KeyError:
    msg = f"{len(unknown)} id(s) are not in {where}, e.g. {list(unknown[:3])!r}"
    return KeyError(msg)


def _as_matrix(ids: Sequence[str], vectors: Any) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(ids):
        msg = (
            f"ids must be the same length as vectors. Got {len(ids)} ids and vectors of shape "
            f"{matrix.shape}."
        )
        raise ValueError(msg)
    return matrix


class SimpleVectorStoreAdapter:
    """:class:`~nudge_rag.EmbeddingStore` over LlamaIndex's in-memory ``SimpleVectorStore``.

    ``SimpleVectorStore`` ranks by cosine similarity in its default query mode, so
    ``distance`` is ``"cosine"``; NUDGE-M is refused there.

    Args:
        vector_store: the index's ``SimpleVectorStore`` (``index.vector_store``).
    """

    distance = "cosine"

    def __init__(self, vector_store: SimpleVectorStore):
        self.vector_store = vector_store

    @property
    def _embeddings(self) -> dict[str, list[float]]:
        return self.vector_store.data.embedding_dict

    def list_ids(self) -> list[str]:
        """Node ids in insertion order."""
        return list(self._embeddings)

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``ids``: ``(len(ids), dim)`` float32."""
        store = self._embeddings
        unknown = [i for i in ids if i not in store]
        if unknown:
            raise _unknown_ids_error(unknown, "the SimpleVectorStore")
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        return np.asarray([store[i] for i in ids], dtype=np.float32)

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Replace ``data.embedding_dict[node_id]`` (text and metadata live elsewhere)."""
        matrix = _as_matrix(ids, vectors)
        store = self._embeddings
        unknown = [i for i in ids if i not in store]
        if unknown:
            raise _unknown_ids_error(unknown, "the SimpleVectorStore")
        for node_id, row in zip(ids, matrix.tolist(), strict=True):
            store[node_id] = row


#: The core's Chroma backend (one implementation for every framework).
ChromaAdapter = ChromaCollectionStore

#: The core's Qdrant backend; LlamaIndex names its dense vector ``"text-dense"``.
QdrantAdapter = QdrantCollectionStore


def adapter_for(vector_store: Any) -> EmbeddingStore:
    """The :class:`~nudge_rag.EmbeddingStore` for a LlamaIndex vector store.

    Args:
        vector_store: a ``SimpleVectorStore``, ``ChromaVectorStore`` or ``QdrantVectorStore``,
            or anything that already implements :class:`~nudge_rag.EmbeddingStore`.

    Raises:
        TypeError: an unsupported vector store.
    """
    if isinstance(vector_store, SimpleVectorStore):
        return SimpleVectorStoreAdapter(vector_store)
    name = type(vector_store).__name__
    if name == "ChromaVectorStore":
        return ChromaCollectionStore(vector_store.client)
    if name == "QdrantVectorStore":
        # Reading the collection's vector format sets ``dense_vector_name`` on old layouts.
        vector_name = getattr(vector_store, "dense_vector_name", "text-dense")
        return QdrantCollectionStore(vector_store.client, vector_store.collection_name, vector_name)
    if isinstance(vector_store, EmbeddingStore):
        return vector_store
    msg = (
        f"unsupported vector store {name}: expected SimpleVectorStore, ChromaVectorStore, "
        "QdrantVectorStore or an object implementing nudge_rag.EmbeddingStore "
        "(distance, list_ids, get_vectors, set_vectors)"
    )
    raise TypeError(msg)


def default_state_dir(store: EmbeddingStore, persist_dir: str | Path | None = None) -> Path | None:
    """Where originals are kept when the caller does not say.

    * ``persist_dir`` given (the folder an index is persisted to): ``<persist_dir>/nudge_state``.
    * an embedded Chroma ``PersistentClient``: ``<chroma path>/nudge_state/<collection>``.
    * a local Qdrant ``QdrantClient(path=...)``: ``<qdrant path>/nudge_state/<collection>``.
    * an in-memory store (``SimpleVectorStore`` not persisted, in-memory Chroma/Qdrant):
      ``None`` (originals kept in memory, lost with the process like the store itself).

    Raises:
        ValueError: a remote store (Chroma ``HttpClient``, a Qdrant server): pass ``state_dir``.
    """
    if persist_dir is not None:
        return Path(persist_dir) / STATE_FOLDER
    if isinstance(store, SimpleVectorStoreAdapter):
        return None
    if isinstance(store, (ChromaCollectionStore, QdrantCollectionStore)):
        if not store.is_remote:
            return store.default_state_dir()
        where = f"collection {store.name!r} on a server"
    else:
        where = f"{type(store).__name__}"
    msg = (
        f"cannot tell where to keep the original embeddings of {where}: pass state_dir=<folder> "
        "(originals must outlive this process), or state_dir=None to keep them in memory only"
    )
    raise ValueError(msg)
