"""One registry from a framework's vector-store class to the backend that reads and writes it.

Both integrations (LangChain, LlamaIndex) look stores up here. Keys are class paths
(``module.QualName``), so no framework or client library is imported to build the table;
lookup walks the object's MRO, so a subclass of a supported class uses its backend. Each
entry names the backend module and a factory in it, imported only when a store of that class
is seen, and the extra that installs the store's packages (for the error message).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nudge_rag._errors import UnsupportedStoreError
from nudge_rag._store import EmbeddingStore

__all__ = ["backend_for", "backend_for_index", "register_backend", "supported_stores"]


@dataclass(frozen=True)
class _Entry:
    framework: str  # "langchain" / "llama-index" / "" (any)
    label: str  # what the user knows the store as
    factory: str | Callable[[Any], Any]  # "module:function" or a callable
    extra: str  # pip extra that installs it
    index_factory: str = ""  # "module:function" taking a LlamaIndex VectorStoreIndex, if needed


_MEMORY = "nudge_rag.backends.memory"
_CHROMA = "nudge_rag.backends.chroma"
_QDRANT = "nudge_rag.backends.qdrant"
_FAISS = "nudge_rag.backends.faiss"
_PGVECTOR = "nudge_rag.backends.pgvector"
_MILVUS = "nudge_rag.backends.milvus"
_LANCEDB = "nudge_rag.backends.lancedb"

# class path -> entry. Adding a store: one line per framework wrapper, plus its module.
_REGISTRY: dict[str, _Entry] = {
    "langchain_core.vectorstores.in_memory.InMemoryVectorStore": _Entry(
        "langchain", "InMemoryVectorStore", f"{_MEMORY}:from_langchain_in_memory", "langchain"
    ),
    "llama_index.core.vector_stores.simple.SimpleVectorStore": _Entry(
        "llama-index", "SimpleVectorStore", f"{_MEMORY}:from_llama_index_simple", "llama-index"
    ),
    "langchain_chroma.vectorstores.Chroma": _Entry(
        "langchain", "Chroma", f"{_CHROMA}:from_langchain", "chroma"
    ),
    "llama_index.vector_stores.chroma.base.ChromaVectorStore": _Entry(
        "llama-index", "ChromaVectorStore", f"{_CHROMA}:from_llama_index", "chroma"
    ),
    "langchain_qdrant.qdrant.QdrantVectorStore": _Entry(
        "langchain", "QdrantVectorStore", f"{_QDRANT}:from_langchain", "qdrant"
    ),
    "llama_index.vector_stores.qdrant.base.QdrantVectorStore": _Entry(
        "llama-index", "QdrantVectorStore", f"{_QDRANT}:from_llama_index", "qdrant"
    ),
    "langchain_community.vectorstores.faiss.FAISS": _Entry(
        "langchain", "FAISS", f"{_FAISS}:from_langchain", "faiss"
    ),
    "llama_index.vector_stores.faiss.base.FaissVectorStore": _Entry(
        "llama-index",
        "FaissVectorStore",
        f"{_FAISS}:from_llama_index",
        "faiss",
        index_factory=f"{_FAISS}:for_index",  # its ids are positions; the index maps them
    ),
    "llama_index.vector_stores.faiss.map_store.FaissMapVectorStore": _Entry(
        "llama-index", "FaissMapVectorStore", f"{_FAISS}:from_llama_index_map", "faiss"
    ),
    "langchain_postgres.vectorstores.PGVector": _Entry(
        "langchain", "PGVector", f"{_PGVECTOR}:from_langchain", "postgres"
    ),
    "llama_index.vector_stores.postgres.base.PGVectorStore": _Entry(
        "llama-index", "PGVectorStore", f"{_PGVECTOR}:from_llama_index", "postgres"
    ),
    "langchain_milvus.vectorstores.milvus.Milvus": _Entry(
        "langchain", "Milvus", f"{_MILVUS}:from_langchain", "milvus"
    ),
    "llama_index.vector_stores.milvus.base.MilvusVectorStore": _Entry(
        "llama-index", "MilvusVectorStore", f"{_MILVUS}:from_llama_index", "milvus"
    ),
    "langchain_community.vectorstores.lancedb.LanceDB": _Entry(
        "langchain", "LanceDB", f"{_LANCEDB}:from_langchain", "lancedb"
    ),
    "llama_index.vector_stores.lancedb.base.LanceDBVectorStore": _Entry(
        "llama-index", "LanceDBVectorStore", f"{_LANCEDB}:from_llama_index", "lancedb"
    ),
}


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_backend(
    store_class: type | str,
    factory: Callable[[Any], EmbeddingStore],
    *,
    framework: str = "",
    extra: str = "",
) -> None:
    """Make :func:`backend_for` build ``factory(vector_store)`` for a class and its subclasses.

    Args:
        store_class: the vector-store class, or its ``"module.QualName"`` path.
        factory: called with the vector store; returns an :class:`~nudge_rag.EmbeddingStore`.
        framework: ``"langchain"``, ``"llama-index"`` or ``""``, for messages.
        extra: the pip extra that installs the store, for messages.
    """
    key = store_class if isinstance(store_class, str) else _class_path(store_class)
    _REGISTRY[key] = _Entry(framework, key.rsplit(".", 1)[-1], factory, extra)


def supported_stores(framework: str | None = None) -> list[str]:
    """Labels of the registered stores (of one framework, or all), with the extra to install."""
    names = {"langchain": "LangChain ", "llama-index": "LlamaIndex ", "": ""}
    out = []
    for e in _REGISTRY.values():
        if framework is not None and e.framework not in (framework, ""):
            continue
        label = (names.get(e.framework, "") if framework is None else "") + e.label
        out.append(f"{label} (pip install 'nudge-rag[{e.extra}]')" if e.extra else label)
    return sorted(out)


def _build(entry: _Entry, vector_store: Any) -> EmbeddingStore:
    factory = entry.factory
    if isinstance(factory, str):
        module, _, name = factory.partition(":")
        factory = getattr(importlib.import_module(module), name)
    return factory(vector_store)


def backend_for(vector_store: Any, framework: str | None = None) -> EmbeddingStore:
    """The backend that reads and writes the vectors ``vector_store`` holds.

    Args:
        vector_store: a framework vector store (its class or a base class registered), or an
            object that already implements :class:`~nudge_rag.EmbeddingStore` (returned as is).
        framework: ``"langchain"`` or ``"llama-index"``: which stores the error message lists.

    Raises:
        UnsupportedStoreError: (a ``TypeError``) no backend for this class; the message lists
            the supported stores and the extra that installs each.
    """
    for cls in type(vector_store).__mro__:
        entry = _REGISTRY.get(_class_path(cls))
        if entry is not None:
            return _build(entry, vector_store)
    if isinstance(vector_store, EmbeddingStore):
        return vector_store
    missing = [
        m
        for m in ("distance", "list_ids", "get_vectors", "set_vectors")
        if not hasattr(vector_store, m)
    ]
    if not missing:  # the four essentials: defaults for the rest
        return _Completed(vector_store)
    msg = (
        f"nudge-rag cannot read and write the stored vectors of {type(vector_store).__name__}. "
        f"Supported: {'; '.join(supported_stores(framework))}. Other stores: implement "
        "nudge_rag.EmbeddingStore (subclass nudge_rag.BaseEmbeddingStore) and pass it, or "
        "register a factory with nudge_rag.backends.register_backend()."
    )
    raise UnsupportedStoreError(msg)


def backend_for_index(index: Any) -> EmbeddingStore:
    """The backend for the vector store of a LlamaIndex ``VectorStoreIndex``, by node id.

    The same as ``backend_for(index.vector_store)``, except for stores that know only
    positions (LlamaIndex's ``FaissVectorStore``), whose backend needs the index's map from
    position to node id.
    """
    vector_store = index.vector_store
    for cls in type(vector_store).__mro__:
        entry = _REGISTRY.get(_class_path(cls))
        if entry is not None and entry.index_factory:
            module, _, name = entry.index_factory.partition(":")
            return getattr(importlib.import_module(module), name)(index)
        if entry is not None:
            break
    return backend_for(vector_store, "llama-index")


class _Completed:
    """A store with only the four essential members, completed with default others.

    The essentials are ``distance``, ``list_ids``, ``get_vectors`` and ``set_vectors``; the
    defaults are :class:`~nudge_rag.BaseEmbeddingStore`'s.
    """

    def __init__(self, inner: Any):
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def distance(self) -> str:  # noqa: D102
        return self._inner.distance

    @property
    def name(self) -> str:  # noqa: D102
        return getattr(self._inner, "name", type(self._inner).__name__)

    @property
    def is_remote(self) -> bool:  # noqa: D102
        return bool(getattr(self._inner, "is_remote", False))

    def count(self) -> int:  # noqa: D102
        count = getattr(self._inner, "count", None)
        return int(count()) if callable(count) else len(self._inner.list_ids())

    def default_state_dir(self) -> Any:  # noqa: D102
        default = getattr(self._inner, "default_state_dir", None)
        return default() if callable(default) else None
