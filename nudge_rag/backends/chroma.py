"""Chroma: a ``chromadb`` collection, embedded (``PersistentClient``) or on a server (HTTP).

Reads with ``collection.get``, writes with ``collection.update`` (documents and metadata
stay; nothing is deleted and re-added), searches with ``collection.query``. The ``chromadb``
package is never imported here: the backend only calls the collection it is given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from nudge_rag._store import BaseEmbeddingStore
from nudge_rag.backends._common import STATE_FOLDER, as_rows, to_cosine, unknown_ids
from nudge_rag.backends._spec import Scheme, StoreSpec, Wrapper
from nudge_rag.backends._uri import (
    OpenedStore,
    OpenOptions,
    StoreURIError,
    choose,
    existing_path,
    first_line,
    need,
)

__all__ = ["ChromaBackend"]

_CHROMA_SPACES = {"cosine": "cosine", "ip": "dot", "l2": "l2"}


class ChromaBackend(BaseEmbeddingStore):
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

    @property
    def state_owner(self) -> object:
        """``(client, collection name)``: whom originals kept in memory belong to.

        Every wrapper (LangChain's ``Chroma``, LlamaIndex's ``ChromaVectorStore``) and every
        ``get_collection`` result over one collection of one client shares them; Chroma's
        clients of one in-memory or persistent system share that client object.
        """
        client = getattr(self.collection, "_client", None)
        return self.collection if client is None else (client, self.name)

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
            raise unknown_ids(ids, by_id, f"Chroma collection {self.name!r}")
        if any(by_id[i] is None for i in ids):
            msg = f"Chroma collection {self.name!r} returned no embedding for some ids"
            raise ValueError(msg)
        return as_rows(ids, [by_id[i] for i in ids])

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """``collection.update`` of the embeddings only; documents and metadata stay."""
        ids = list(ids)
        matrix = as_rows(ids, vectors)
        if not ids:
            return
        # Chroma's update skips unknown ids with a log line: check first, write nothing then
        found = set(self.collection.get(ids=ids, include=[])["ids"])
        if len(found) != len(set(ids)):
            raise unknown_ids(ids, found, f"Chroma collection {self.name!r}")
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
            out[n, : d.size] = to_cosine(d, self.distance, "distance")
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


def from_langchain(vectorstore: Any) -> ChromaBackend:
    """Registry factory for ``langchain_chroma.Chroma`` (its ``_collection``)."""
    return ChromaBackend(vectorstore._collection)


def from_llama_index(vector_store: Any) -> ChromaBackend:
    """Registry factory for LlamaIndex's ``ChromaVectorStore`` (``client`` is the collection)."""
    return ChromaBackend(vector_store.client)


# ---------------------------------------------------------------------- command line
def _chroma_backend(client: Any, collection: str | None, uri: str) -> tuple[Any, str]:

    names = [getattr(c, "name", c) for c in client.list_collections()]
    name = choose([str(n) for n in names], collection, uri)
    return ChromaBackend(client.get_collection(name)), name


def _open_chroma_dir(
    uri: str, scheme: str, rest: str, collection: str | None, options: OpenOptions
) -> OpenedStore:
    path = existing_path(rest, uri, "Chroma persist folder")
    if not path.is_dir() or not (path / "chroma.sqlite3").is_file():
        msg = f"--store {uri}: {path} is not a Chroma persist folder (no chroma.sqlite3)"
        raise StoreURIError(msg)
    chromadb = need("chromadb", "chroma", uri)
    try:
        client = chromadb.PersistentClient(path=str(path))
    except Exception as err:  # noqa: BLE001 - chromadb raises many kinds
        msg = f"--store {uri}: cannot open the Chroma folder: {first_line(err)}"
        raise StoreURIError(msg) from err
    backend, name = _chroma_backend(client, collection, uri)
    return OpenedStore(backend, uri, "chroma", name)


def _open_chroma_http(
    uri: str, scheme: str, rest: str, collection: str | None, options: OpenOptions
) -> OpenedStore:
    parts = urlsplit(uri.split("+", 1)[1])
    if not parts.hostname:
        msg = f"--store {uri!r}: expected chroma+http://HOST:PORT"
        raise StoreURIError(msg)
    ssl = parts.scheme == "https"
    port = parts.port or (443 if ssl else 8000)
    chromadb = need("chromadb", "chroma", uri)
    try:
        client = chromadb.HttpClient(host=parts.hostname, port=port, ssl=ssl)
        client.heartbeat()
    except Exception as err:  # noqa: BLE001 - connection errors of every kind
        msg = (
            f"--store {uri}: cannot reach the Chroma server at {parts.hostname}:{port}: "
            f"{first_line(err)}"
        )
        raise StoreURIError(msg) from err
    backend, name = _chroma_backend(client, collection, uri)
    return OpenedStore(backend, uri, "chroma", name)


SPEC = StoreSpec(
    name="chroma",
    label="Chroma",
    extra="chroma",
    wrappers=(
        Wrapper("langchain_chroma.vectorstores.Chroma", "langchain", "from_langchain"),
        Wrapper(
            "llama_index.vector_stores.chroma.base.ChromaVectorStore",
            "llama-index",
            "from_llama_index",
        ),
    ),
    schemes=(
        Scheme(
            "chroma",
            "chroma:DIR",
            "_open_chroma_dir",
            "a Chroma persist folder (PersistentClient)",
        ),
        Scheme(
            "chroma+http",
            "chroma+http://HOST:PORT",
            "_open_chroma_http",
            "a Chroma server (HttpClient)",
        ),
        Scheme(
            "chroma+https",
            "chroma+https://HOST:PORT",
            "_open_chroma_http",
            "a Chroma server over TLS",
        ),
    ),
    cosine_hint="metadata={'hnsw:space': 'cosine'} or configuration={'hnsw': {'space': 'cosine'}}",
    dot_hint="metadata={'hnsw:space': 'ip'} or configuration={'hnsw': {'space': 'ip'}}",
    after_writes="nothing: Chroma updates its HNSW index in place on upsert",
)
