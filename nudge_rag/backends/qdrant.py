"""Qdrant: a collection's dense vector, in local mode (``path=``/``":memory:"``) or on a server.

Reads with ``client.retrieve``, writes with ``client.update_vectors`` (payloads stay),
searches with ``client.query_batch_points``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nudge_rag._store import BaseEmbeddingStore
from nudge_rag.backends._common import STATE_FOLDER, as_rows, to_cosine, unknown_ids
from nudge_rag.backends._spec import Scheme, StoreSpec, Wrapper
from nudge_rag.backends._uri import (
    OpenedStore,
    OpenOptions,
    StoreURIError,
    choose,
    closing_on_error,
    existing_path,
    first_line,
    need,
    split_vector,
)

__all__ = ["QdrantBackend"]

_QDRANT_DISTANCES = {"cosine": "cosine", "dot": "dot", "euclid": "l2"}


class QdrantBackend(BaseEmbeddingStore):
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

    @property
    def state_owner(self) -> object:
        """``(client, collection name)``: whom originals kept in memory belong to.

        Every wrapper over this collection of one ``QdrantClient`` (its local storage or
        server connection) shares them.
        """
        return (getattr(self.client, "_client", self.client), self.collection_name)

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
            raise unknown_ids(missing, (), f"Qdrant collection {self.collection_name!r}")
        if any(found[k] is None for k in keys):
            msg = f"some points of {self.collection_name!r} have no vector {self.vector_name!r}"
            raise ValueError(msg)
        return as_rows(ids, [found[k] for k in keys])

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """``client.update_vectors`` of this dense vector only; payloads stay."""
        from qdrant_client import models

        ids = [str(i) for i in ids]
        matrix = as_rows(ids, vectors)
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
            out[n, : scores.size] = to_cosine(scores, self.distance, "similarity")
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


def from_langchain(vectorstore: Any) -> QdrantBackend:
    """Registry factory for ``langchain_qdrant.QdrantVectorStore`` (dense or hybrid mode)."""
    mode = getattr(getattr(vectorstore, "retrieval_mode", None), "value", "dense")
    if str(mode).lower() == "sparse":
        msg = (
            "QdrantVectorStore uses retrieval_mode=SPARSE; NUDGE tunes dense vectors. "
            "Use RetrievalMode.DENSE or HYBRID."
        )
        raise ValueError(msg)
    return QdrantBackend(vectorstore.client, vectorstore.collection_name, vectorstore.vector_name)


def from_llama_index(vector_store: Any) -> QdrantBackend:
    """Registry factory for LlamaIndex's ``QdrantVectorStore`` (dense vector ``"text-dense"``)."""
    # Reading the collection's vector format sets ``dense_vector_name`` on old layouts.
    vector_name = getattr(vector_store, "dense_vector_name", "text-dense")
    return QdrantBackend(vector_store.client, vector_store.collection_name, vector_name)


def langchain_result_ids(vectorstore: Any) -> Callable[[list[Any]], None]:
    """Set ``Document.id`` of langchain-qdrant results from ``metadata["_id"]``.

    Older langchain-qdrant releases copy the point id into the metadata only.
    """

    def set_ids(docs: list[Any]) -> None:
        for doc in docs:
            if doc.id is None and doc.metadata.get("_id") is not None:
                doc.id = str(doc.metadata["_id"])

    return set_ids


# ---------------------------------------------------------------------- command line
def _qdrant_backend(client: Any, collection: str | None, uri: str) -> tuple[Any, str]:

    names = [c.name for c in client.get_collections().collections]
    name = choose(names, collection, uri)
    vectors = client.get_collection(name).config.params.vectors
    vector_name = ""
    if isinstance(vectors, dict):
        if "text-dense" in vectors:  # LlamaIndex's name
            vector_name = "text-dense"
        elif len(vectors) == 1:
            vector_name = next(iter(vectors))
        else:
            msg = (
                f"--store {uri}: collection {name!r} has several dense vectors "
                f"({', '.join(sorted(vectors))}); give --collection {name}:VECTOR"
            )
            raise StoreURIError(msg)
    return QdrantBackend(client, name, vector_name), name


def _qdrant(client: Any, collection: str | None, uri: str) -> OpenedStore:

    name, vector = split_vector(collection)
    with closing_on_error(client.close, uri):
        if vector is not None:
            choose([c.name for c in client.get_collections().collections], name, uri)
            backend = QdrantBackend(client, name, vector)
        else:
            backend, name = _qdrant_backend(client, name, uri)
    return OpenedStore(backend, uri, "qdrant", str(name), client.close)


def _open_qdrant_dir(
    uri: str, scheme: str, rest: str, collection: str | None, options: OpenOptions
) -> OpenedStore:
    path = existing_path(rest, uri, "Qdrant local folder")
    if not path.is_dir() or not (path / "collection").is_dir():
        msg = f"--store {uri}: {path} is not a Qdrant local folder (no collection/ inside)"
        raise StoreURIError(msg)
    qdrant_client = need("qdrant_client", "qdrant", uri)
    try:
        client = qdrant_client.QdrantClient(path=str(path))
    except Exception as err:  # noqa: BLE001 - e.g. the folder is locked by another process
        msg = f"--store {uri}: cannot open the Qdrant folder: {first_line(err)}"
        raise StoreURIError(msg) from err
    return _qdrant(client, collection, uri)


def _open_qdrant_http(
    uri: str, scheme: str, rest: str, collection: str | None, options: OpenOptions
) -> OpenedStore:
    url = uri.split("+", 1)[1]
    qdrant_client = need("qdrant_client", "qdrant", uri)
    try:
        client = qdrant_client.QdrantClient(url=url, timeout=10)
        client.get_collections()
    except Exception as err:  # noqa: BLE001 - connection errors of every kind
        msg = f"--store {uri}: cannot reach the Qdrant server at {url}: {first_line(err)}"
        raise StoreURIError(msg) from err
    return _qdrant(client, collection, uri)


SPEC = StoreSpec(
    name="qdrant",
    label="Qdrant",
    extra="qdrant",
    wrappers=(
        Wrapper(
            "langchain_qdrant.qdrant.QdrantVectorStore",
            "langchain",
            "from_langchain",
            result_ids="langchain_result_ids",
        ),
        Wrapper(
            "llama_index.vector_stores.qdrant.base.QdrantVectorStore",
            "llama-index",
            "from_llama_index",
        ),
    ),
    schemes=(
        Scheme(
            "qdrant",
            "qdrant:DIR",
            "_open_qdrant_dir",
            "a Qdrant local folder (QdrantClient(path=DIR))",
        ),
        Scheme(
            "qdrant+http",
            "qdrant+http://HOST:PORT",
            "_open_qdrant_http",
            "a Qdrant server",
        ),
        Scheme(
            "qdrant+https",
            "qdrant+https://HOST:PORT",
            "_open_qdrant_http",
            "a Qdrant server over TLS",
        ),
    ),
    cosine_hint="Distance.COSINE",
    dot_hint="Distance.DOT",
    after_writes="nothing: Qdrant re-indexes upserted points itself",
)
