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
import uuid
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


_CHROMA_SPACES = {"cosine": "cosine", "ip": "dot", "l2": "l2"}


class ChromaAdapter:
    """:class:`~nudge_rag.EmbeddingStore` over a Chroma collection.

    Vectors are replaced with ``collection.update(ids=..., embeddings=...)``, which keeps the
    documents and metadata (never delete-then-add).

    Args:
        collection: a ``chromadb`` collection (``ChromaVectorStore.client`` returns it).

    Raises:
        ValueError: the collection's space is not ``cosine``, ``ip`` or ``l2``.
    """

    def __init__(self, collection: Any):
        self.collection = collection
        self.distance = _CHROMA_SPACES[self._space()]

    def _space(self) -> str:
        space = None
        config = getattr(self.collection, "configuration", None) or {}
        for section in ("hnsw", "spann"):
            part = config.get(section) if isinstance(config, dict) else None
            if isinstance(part, dict) and part.get("space"):
                space = part["space"]
                break
        if space is None:
            space = (self.collection.metadata or {}).get("hnsw:space", "l2")
        space = str(space)
        if space not in _CHROMA_SPACES:
            msg = (
                f"Chroma collection {self.collection.name!r} uses space {space!r}; expected one "
                f"of {list(_CHROMA_SPACES)}"
            )
            raise ValueError(msg)
        return space

    def list_ids(self) -> list[str]:
        """All ids in the collection, page by page."""
        ids: list[str] = []
        offset = 0
        while True:
            page = self.collection.get(include=[], limit=_PAGE, offset=offset)["ids"]
            ids.extend(page)
            if len(page) < _PAGE:
                return ids
            offset += len(page)

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``ids`` (Chroma returns them in its own order; reordered here)."""
        ids = list(ids)
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        result = self.collection.get(ids=ids, include=["embeddings"])
        rows = {node_id: k for k, node_id in enumerate(result["ids"])}
        unknown = [i for i in ids if i not in rows]
        if unknown:
            raise _unknown_ids_error(unknown, f"Chroma collection {self.collection.name!r}")
        embeddings = result["embeddings"]
        if embeddings is None or any(embeddings[rows[i]] is None for i in ids):
            msg = f"Chroma collection {self.collection.name!r} returned no embeddings for some ids"
            raise ValueError(msg)
        stored = np.asarray(embeddings, dtype=np.float32)
        return stored[np.fromiter((rows[i] for i in ids), dtype=np.int64, count=len(ids))]

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """``collection.update`` of the embeddings only (Chroma silently skips unknown ids)."""
        ids = list(ids)
        matrix = _as_matrix(ids, vectors)
        if ids:
            self.collection.update(ids=ids, embeddings=matrix)


_QDRANT_DISTANCES = {"Cosine": "cosine", "Dot": "dot", "Euclid": "l2"}


def _qdrant_key(point_id: Any) -> str:
    """Canonical text of a Qdrant point id (UUIDs come back lower-case and hyphenated)."""
    text = str(point_id)
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text


class QdrantAdapter:
    """:class:`~nudge_rag.EmbeddingStore` over a Qdrant collection's dense vectors.

    Vectors are replaced with ``client.update_vectors``, which keeps the payload (text and
    metadata). Under ``Distance.COSINE`` Qdrant normalizes what it stores; NUDGE-N writes
    unit-norm vectors, so they are kept as written.

    Args:
        client: a ``qdrant_client.QdrantClient``.
        collection_name: the collection.
        vector_name: the dense vector's name (LlamaIndex uses ``"text-dense"``; ``""`` for an
            unnamed vector).

    Raises:
        ValueError: the collection has no such dense vector, or a distance other than
            cosine, dot or Euclid.
    """

    def __init__(self, client: Any, collection_name: str, vector_name: str = "text-dense"):
        self.client = client
        self.collection_name = collection_name
        self.vector_name = vector_name
        vectors = client.get_collection(collection_name).config.params.vectors
        if isinstance(vectors, dict):
            if vector_name not in vectors:
                msg = (
                    f"Qdrant collection {collection_name!r} has no dense vector {vector_name!r}; "
                    f"it has {sorted(vectors)}"
                )
                raise ValueError(msg)
            params = vectors[vector_name]
            self._named = True
        else:
            params = vectors
            self._named = False
        distance = getattr(params.distance, "value", str(params.distance))
        if distance not in _QDRANT_DISTANCES:
            msg = (
                f"Qdrant collection {collection_name!r} uses distance {distance!r}; NUDGE needs "
                "Cosine, Dot or Euclid"
            )
            raise ValueError(msg)
        self.distance = _QDRANT_DISTANCES[distance]

    def list_ids(self) -> list[str]:
        """All point ids, scrolled page by page."""
        ids: list[str] = []
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.collection_name,
                limit=_PAGE,
                offset=offset,
                with_payload=False,
                with_vectors=False,
            )
            ids.extend(str(p.id) for p in points)
            if offset is None:
                return ids

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored dense vectors of ``ids``, in the order asked."""
        ids = list(ids)
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        with_vectors: Any = [self.vector_name] if self._named else True
        points = self.client.retrieve(
            self.collection_name, ids=ids, with_vectors=with_vectors, with_payload=False
        )
        found = {}
        for point in points:
            vector = (
                point.vector.get(self.vector_name)
                if isinstance(point.vector, dict)
                else point.vector
            )
            found[_qdrant_key(point.id)] = vector
        keys = [_qdrant_key(i) for i in ids]
        unknown = [i for i, k in zip(ids, keys, strict=True) if k not in found]
        if unknown:
            raise _unknown_ids_error(unknown, f"Qdrant collection {self.collection_name!r}")
        missing = [i for i, k in zip(ids, keys, strict=True) if found[k] is None]
        if missing:
            msg = (
                f"{len(missing)} point(s) have no vector {self.vector_name!r}, e.g. {missing[:3]!r}"
            )
            raise ValueError(msg)
        return np.asarray([found[k] for k in keys], dtype=np.float32)

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """``client.update_vectors`` of the dense vector only (payload kept)."""
        from qdrant_client.http import models as rest

        ids = list(ids)
        matrix = _as_matrix(ids, vectors)
        if not ids:
            return
        points = [
            rest.PointVectors(id=i, vector={self.vector_name: row} if self._named else row)
            for i, row in zip(ids, matrix.tolist(), strict=True)
        ]
        self.client.update_vectors(self.collection_name, points=points, wait=True)


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
        return ChromaAdapter(vector_store.client)
    if name == "QdrantVectorStore":
        # Reading the collection's vector format sets ``dense_vector_name`` on old layouts.
        vector_name = getattr(vector_store, "dense_vector_name", "text-dense")
        return QdrantAdapter(vector_store.client, vector_store.collection_name, vector_name)
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
        return Path(persist_dir) / "nudge_state"
    if isinstance(store, SimpleVectorStoreAdapter):
        return None
    if isinstance(store, ChromaAdapter):
        client = getattr(store.collection, "_client", None)
        settings = (
            client.get_settings()
            if client is not None and hasattr(client, "get_settings")
            else None
        )
        impl = str(getattr(settings, "chroma_api_impl", "")) if settings is not None else ""
        if settings is not None and "fastapi" not in impl.lower():
            if settings.is_persistent and settings.persist_directory:
                return Path(settings.persist_directory) / "nudge_state" / store.collection.name
            return None
        where = f"Chroma collection {store.collection.name!r} on a server"
    elif isinstance(store, QdrantAdapter):
        inner = getattr(store.client, "_client", None)
        if type(inner).__name__ == "QdrantLocal":
            location = getattr(inner, "location", None)
            if location and location != ":memory:":
                return Path(location) / "nudge_state" / store.collection_name
            return None
        where = f"Qdrant collection {store.collection_name!r} on a server"
    else:
        where = f"{type(store).__name__}"
    msg = (
        f"cannot tell where to keep the original embeddings of {where}: pass state_dir=<folder> "
        "(originals must outlive this process), or state_dir=None to keep them in memory only"
    )
    raise ValueError(msg)
