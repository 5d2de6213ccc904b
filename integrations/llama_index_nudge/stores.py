"""The backend of a LlamaIndex vector store, and where its originals are kept.

The backends live in the core (:mod:`nudge_rag.backends`), one module per store, shared with
the LangChain integration. :func:`adapter_for` finds the one for a LlamaIndex vector store
through the core's single registry (subclasses included); :func:`default_state_dir` is the
core's one rule for where originals live (:func:`nudge_rag.resolve_state_dir`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    import llama_index.core  # noqa: F401 - fail early with the install hint
except ImportError as err:  # pragma: no cover - exercised only without the extra
    msg = "llama_index_nudge needs llama-index-core: pip install 'nudge-rag[llama-index]'"
    raise ImportError(msg) from err

from nudge_rag import EmbeddingStore, resolve_state_dir
from nudge_rag.backends import backend_for

__all__ = [
    "adapter_for",
    "default_state_dir",
]


def adapter_for(vector_store: Any) -> EmbeddingStore:
    """The :class:`~nudge_rag.EmbeddingStore` backend for a LlamaIndex vector store.

    Args:
        vector_store: a supported LlamaIndex vector store (or a subclass), or anything that
            already implements :class:`~nudge_rag.EmbeddingStore`.

    Raises:
        nudge_rag.UnsupportedStoreError: (a ``TypeError``) the message lists the supported
            stores and the extra that installs each.
    """
    return backend_for(vector_store, "llama-index")


def default_state_dir(store: EmbeddingStore, persist_dir: str | Path | None = None) -> Path | None:
    """Where originals are kept when the caller does not say (``state_dir="auto"``).

    ``<persist_dir>/nudge_state`` when the index's persist folder is given; else next to the
    store's files (Chroma, Qdrant local); else memory (``None``, with a warning).

    Raises:
        nudge_rag.StateDirError: (a ``ValueError``) a store on a server: pass ``state_dir``.
    """
    return resolve_state_dir(store, "auto", persist_dir)
