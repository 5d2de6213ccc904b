"""Vector-store backends shared by every framework integration.

A Chroma collection or a Qdrant collection holds vectors by id the same way whether it was
filled through LlamaIndex, LangChain or the client directly, so the code that reads, writes
and searches them lives here once:

* :class:`ChromaCollectionStore` over a ``chromadb`` collection (embedded or HTTP client);
* :class:`QdrantCollectionStore` over a ``qdrant_client`` collection (local or server).

Both implement :class:`~nudge_rag.SearchableEmbeddingStore` (``nearest`` for
``tune_store(..., passive="store")``), write in place (Chroma ``collection.update``, Qdrant
``update_vectors``: documents and payloads stay, nothing is deleted and re-added), and tell
where originals should live (:meth:`default_state_dir`). This module imports neither client
library at import time; it only calls the objects it is given.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["ChromaCollectionStore", "QdrantCollectionStore", "STATE_FOLDER"]

#: Name of the sidecar folder that holds originals next to a persisted store.
STATE_FOLDER = "nudge_state"

_CHROMA_SPACES = {"cosine": "cosine", "ip": "dot", "l2": "l2"}
_QDRANT_DISTANCES = {"cosine": "cosine", "dot": "dot", "euclid": "l2"}


def _unknown(ids: Sequence[str], known: Any, where: str) -> KeyError:
    unknown = [i for i in ids if i not in known]
    return KeyError(f"{len(unknown)} id(s) are not in {where}, e.g. {unknown[:3]!r}")


def _rows(ids: Sequence[str], vectors: Any) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(ids):
        msg = (
            f"ids must be the same length as vectors. Got {len(ids)} ids and vectors of "
            f"shape {matrix.shape}."
        )
        raise ValueError(msg)
    return matrix


def _to_cosine(scores: np.ndarray, distance: str, kind: str) -> np.ndarray:
    """Turn a store's raw scores or distances into cosine similarity (unit vectors)."""
    if kind == "similarity":  # Qdrant: cosine and dot are similarities, euclid a distance
        return scores if distance != "l2" else 1.0 - scores**2 / 2.0
    if distance == "l2":  # Chroma l2 is the squared distance
        return 1.0 - scores / 2.0
    return 1.0 - scores  # Chroma cosine distance and ip "distance" are 1 - similarity


class ChromaCollectionStore:
    """:class:`~nudge_rag.SearchableEmbeddingStore` over a Chroma collection.

    ``distance`` is the collection's space (``configuration["hnsw"]["space"]`` or the older
    ``metadata["hnsw:space"]``; Chroma's default is ``"l2"``; ``"ip"`` is reported as
    ``"dot"``). Create the collection with cosine for NUDGE-N
    (``client.create_collection(name, configuration={"hnsw": {"space": "cosine"}})`` or
    ``metadata={"hnsw:space": "cosine"}``), or ``ip`` for NUDGE-M; an ``l2`` collection works
    with NUDGE-N when every stored vector is unit-norm (l2 then ranks like cosine).

    Args:
        collection: a ``chromadb`` collection (``Chroma._collection`` in LangChain,
            ``ChromaVectorStore.client`` in LlamaIndex).
        page_size: ids listed per ``collection.get`` call.

    Raises:
        ValueError: a space other than cosine, ip or l2.
    """

    def __init__(self, collection: Any, *, page_size: int = 5000):
        self.collection = collection
        self.page_size = page_size
        self.distance = self._read_distance()

    @property
    def name(self) -> str:
        """The collection's name."""
        return str(self.collection.name)

    def _read_distance(self) -> str:
        space = None
        try:
            config = self.collection.configuration
        except Exception:  # noqa: BLE001 - older clients have no configuration
            config = None
        if isinstance(config, dict):
            for section in ("hnsw", "spann"):
                part = config.get(section)
                if isinstance(part, dict) and part.get("space"):
                    space = part["space"]
                    break
        if space is None:
            space = (self.collection.metadata or {}).get("hnsw:space", "l2")
        space = str(getattr(space, "value", space))
        if space not in _CHROMA_SPACES:
            msg = (
                f"Chroma collection {self.name!r} uses space {space!r}; expected one of "
                f"{sorted(_CHROMA_SPACES)}"
            )
            raise ValueError(msg)
        return _CHROMA_SPACES[space]

    def count(self) -> int:
        """Number of stored vectors."""
        return int(self.collection.count())

    def list_ids(self) -> list[str]:
        """All ids, page by page, in Chroma's storage order."""
        ids: list[str] = []
        offset = 0
        while True:
            page = self.collection.get(include=[], limit=self.page_size, offset=offset)["ids"]
            ids.extend(page)
            if len(page) < self.page_size:
                return ids
            offset += len(page)

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``ids``, ``(len(ids), dim)`` float32, in the order asked.

        Raises:
            KeyError: ids the collection does not hold (Chroma itself skips them silently).
        """
        ids = list(ids)
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        got = self.collection.get(ids=ids, include=["embeddings"])
        embeddings = got["embeddings"]
        by_id = dict(zip(got["ids"], [] if embeddings is None else embeddings))
        if len(by_id) != len(set(ids)):
            raise _unknown(ids, by_id, f"Chroma collection {self.name!r}")
        if any(by_id[i] is None for i in ids):
            msg = f"Chroma collection {self.name!r} returned no embedding for some ids"
            raise ValueError(msg)
        return _rows(ids, [by_id[i] for i in ids])

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """``collection.update`` of the embeddings only; documents and metadata stay."""
        ids = list(ids)
        matrix = _rows(ids, vectors)
        if ids:
            self.collection.update(ids=ids, embeddings=matrix)

    def nearest(self, vectors: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """The collection's own (HNSW) kNN: ids and cosine similarity per query row."""
        vectors = np.asarray(vectors, dtype=np.float32)
        k_eff = min(int(k), self.count())
        out = np.full((vectors.shape[0], int(k)), -np.inf, dtype=np.float32)
        if k_eff == 0 or vectors.shape[0] == 0:
            return [[] for _ in range(vectors.shape[0])], out
        res = self.collection.query(
            query_embeddings=vectors, n_results=k_eff, include=["distances"]
        )
        ids = [list(row) for row in res["ids"]]
        for n, dist in enumerate(res["distances"]):
            d = np.asarray(dist, dtype=np.float32)
            out[n, : d.size] = _to_cosine(d, self.distance, "distance")
        return ids, out

    def default_state_dir(self) -> Path | None:
        """``<persist dir>/nudge_state/<collection>`` for an embedded persistent client.

        ``None`` for an in-memory client. For an HTTP client (the data lives on the server)
        the caller must choose a folder: :attr:`is_remote` tells.
        """
        settings = self._settings()
        if settings is None or self.is_remote:
            return None
        folder = getattr(settings, "persist_directory", None)
        if getattr(settings, "is_persistent", False) and folder and os.path.isdir(folder):
            return Path(folder) / STATE_FOLDER / self.name
        return None

    @property
    def is_remote(self) -> bool:
        """Whether the collection lives on a Chroma server (HTTP client)."""
        settings = self._settings()
        impl = str(getattr(settings, "chroma_api_impl", "")).lower()
        return "fastapi" in impl or "http" in impl

    def _settings(self) -> Any:
        client = getattr(self.collection, "_client", None)
        try:
            return client.get_settings() if client is not None else None
        except Exception:  # noqa: BLE001 - clients without settings
            return None


class QdrantCollectionStore:
    """:class:`~nudge_rag.SearchableEmbeddingStore` over a Qdrant collection's dense vector.

    Reads with ``client.retrieve``, writes with ``client.update_vectors`` (payloads stay),
    searches with ``client.query_batch_points``. ``distance`` comes from the vector's config
    (``COSINE`` -> ``"cosine"``, ``DOT`` -> ``"dot"``, ``EUCLID`` -> ``"l2"``). Under
    ``COSINE`` Qdrant normalizes what it stores; NUDGE-N output is unit-norm already, and
    NUDGE-M (whose lengths matter) is refused there by :func:`~nudge_rag.check_similarity`.

    Ids are point ids as text: UUIDs (any spelling; matched in canonical form) or unsigned
    integers.

    Args:
        client: a ``qdrant_client.QdrantClient`` (local ``path=``/``":memory:"`` or a server).
        collection_name: the collection.
        vector_name: the dense vector's name; ``""`` for a collection with one unnamed vector.
        page_size: points listed per ``scroll`` call.

    Raises:
        ValueError: no such dense vector, or an unsupported distance.
    """

    def __init__(
        self, client: Any, collection_name: str, vector_name: str = "", *, page_size: int = 1000
    ):
        self.client = client
        self.collection_name = collection_name
        self.vector_name = vector_name or ""
        self.page_size = page_size
        self.distance = self._read_distance()

    @property
    def name(self) -> str:
        """The collection's name."""
        return self.collection_name

    def _read_distance(self) -> str:
        vectors = self.client.get_collection(self.collection_name).config.params.vectors
        if isinstance(vectors, dict):
            if self.vector_name not in vectors:
                msg = (
                    f"Qdrant collection {self.collection_name!r} has no dense vector named "
                    f"{self.vector_name!r}; it has {sorted(vectors)}"
                )
                raise ValueError(msg)
            params = vectors[self.vector_name]
        else:
            if self.vector_name:
                msg = (
                    f"Qdrant collection {self.collection_name!r} has one unnamed vector, but "
                    f"vector_name={self.vector_name!r} was given; use ''"
                )
                raise ValueError(msg)
            params = vectors
        name = str(getattr(params.distance, "value", params.distance)).lower()
        if name not in _QDRANT_DISTANCES:
            msg = (
                f"Qdrant collection {self.collection_name!r} uses distance {params.distance}; "
                "NUDGE supports COSINE, DOT and EUCLID"
            )
            raise ValueError(msg)
        return _QDRANT_DISTANCES[name]

    @staticmethod
    def _point_id(doc_id: str) -> int | str:
        text = str(doc_id)
        if text.isdigit():
            return int(text)
        try:
            return str(uuid.UUID(text))
        except ValueError as err:
            msg = f"{text!r} is not a Qdrant point id (a UUID or an unsigned integer)"
            raise KeyError(msg) from err

    def count(self) -> int:
        """Number of points."""
        return int(self.client.count(self.collection_name, exact=True).count)

    def list_ids(self) -> list[str]:
        """All point ids as text, in scroll order."""
        ids: list[str] = []
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.collection_name,
                limit=self.page_size,
                offset=offset,
                with_payload=False,
                with_vectors=False,
            )
            ids.extend(str(p.id) for p in points)
            if offset is None:
                return ids

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``ids``, ``(len(ids), dim)`` float32, in the order asked.

        Raises:
            KeyError: ids that are not points of the collection (or not valid point ids).
        """
        ids = [str(i) for i in ids]
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        keys = [str(self._point_id(i)) for i in ids]
        records = self.client.retrieve(
            self.collection_name,
            ids=[self._point_id(i) for i in ids],
            with_payload=False,
            with_vectors=[self.vector_name] if self.vector_name else True,
        )
        found = {}
        for record in records:
            vector = record.vector
            if isinstance(vector, dict):
                vector = vector.get(self.vector_name)
            found[str(record.id)] = vector
        missing = [i for i, k in zip(ids, keys) if k not in found]
        if missing:
            raise _unknown(missing, (), f"Qdrant collection {self.collection_name!r}")
        if any(found[k] is None for k in keys):
            msg = f"some points of {self.collection_name!r} have no vector {self.vector_name!r}"
            raise ValueError(msg)
        return _rows(ids, [found[k] for k in keys])

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """``client.update_vectors`` of this dense vector only; payloads stay."""
        from qdrant_client import models

        ids = [str(i) for i in ids]
        matrix = _rows(ids, vectors)
        if not ids:
            return
        points = [
            models.PointVectors(
                id=self._point_id(i),
                vector={self.vector_name: row} if self.vector_name else row,
            )
            for i, row in zip(ids, matrix.tolist())
        ]
        self.client.update_vectors(self.collection_name, points=points, wait=True)

    def nearest(self, vectors: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        """The collection's own kNN: ids and cosine similarity per query row."""
        from qdrant_client import models

        vectors = np.asarray(vectors, dtype=np.float32)
        out = np.full((vectors.shape[0], int(k)), -np.inf, dtype=np.float32)
        if vectors.shape[0] == 0:
            return [], out
        requests = [
            models.QueryRequest(
                query=row, using=self.vector_name or None, limit=int(k), with_payload=False
            )
            for row in vectors.tolist()
        ]
        responses = self.client.query_batch_points(self.collection_name, requests=requests)
        ids = []
        for n, response in enumerate(responses):
            points = response.points
            ids.append([str(p.id) for p in points])
            scores = np.asarray([p.score for p in points], dtype=np.float32)
            out[n, : scores.size] = _to_cosine(scores, self.distance, "similarity")
        return ids, out

    def default_state_dir(self) -> Path | None:
        """``<local path>/nudge_state/<collection>`` for local on-disk mode, else ``None``."""
        inner = getattr(self.client, "_client", None)
        location = getattr(inner, "location", None)
        if type(inner).__name__ == "QdrantLocal" and isinstance(location, str):
            if location != ":memory:" and os.path.isdir(location):
                return Path(location) / STATE_FOLDER / self.collection_name
        return None

    @property
    def is_remote(self) -> bool:
        """Whether the collection lives on a Qdrant server."""
        return type(getattr(self.client, "_client", None)).__name__ != "QdrantLocal"
