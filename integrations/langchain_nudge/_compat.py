"""Import guard for ``langchain-core`` (the one hard dependency of this package)."""

from __future__ import annotations

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
    )
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.vectorstores import VectorStore
except ImportError as err:  # pragma: no cover - exercised only without langchain-core
    msg = "langchain_nudge needs langchain-core; install it with pip install 'nudge-rag[langchain]'"
    raise ImportError(msg) from err

__all__ = [
    "AsyncCallbackManagerForRetrieverRun",
    "BaseRetriever",
    "CallbackManagerForRetrieverRun",
    "Document",
    "Embeddings",
    "VectorStore",
]
