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
from nudge_rag.backends._spec import store_specs

__all__ = [
    "backend_for",
    "backend_for_index",
    "langchain_result_ids",
    "register_backend",
    "supported_stores",
]


@dataclass(frozen=True)
class _Entry:
    framework: str  # "langchain" / "llama-index" / "" (any)
    label: str  # what the user knows the store as
    factory: str | Callable[[Any], Any]  # "module:function" or a callable
    extra: str  # pip extra that installs it
    index_factory: str = ""  # "module:function" taking a LlamaIndex VectorStoreIndex, if needed
    result_ids: str = ""  # "module:function" setting Document.id on search results


def _spec_entries() -> dict[str, _Entry]:
    """The entries the store modules declare (their ``SPEC``), by class path."""
    entries = {}
    for spec in store_specs():
        for w in spec.wrappers:

            def qualified(name: str, module: str = spec.module) -> str:
                return f"{module}:{name}" if name and ":" not in name else name

            entries[w.class_path] = _Entry(
                w.framework,
                w.label,
                qualified(w.factory),
                w.extra or spec.extra,
                qualified(w.index_factory),
                qualified(w.result_ids),
            )
    return entries


# class path -> entry: the store modules' specs, then register_backend() calls.
_REGISTRY: dict[str, _Entry] = _spec_entries()


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


def _function(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _entry(vector_store: Any) -> _Entry | None:
    for cls in type(vector_store).__mro__:
        entry = _REGISTRY.get(_class_path(cls))
        if entry is not None:
            return entry
    return None


def _build(entry: _Entry, vector_store: Any) -> EmbeddingStore:
    factory = entry.factory
    if isinstance(factory, str):
        factory = _function(factory)
    return factory(vector_store)


def langchain_result_ids(vectorstore: Any) -> Callable[[list[Any]], None] | None:
    """What sets ``Document.id`` on ``vectorstore``'s search results where the wrapper does not.

    Stores whose LangChain wrapper leaves the id out declare a hook in their spec
    (``Wrapper.result_ids``); it may also patch that store object once so that its results
    carry ids. ``None`` when nothing needs to be done per search.
    """
    entry = _entry(vectorstore)
    if entry is None or not entry.result_ids:
        return None
    return _function(entry.result_ids)(vectorstore)


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
    entry = _entry(vector_store)
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
    entry = _entry(index.vector_store)
    if entry is not None and entry.index_factory:
        return _function(entry.index_factory)(index)
    return backend_for(index.vector_store, "llama-index")


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
