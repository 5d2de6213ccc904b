"""Vector-store backends, one module per store, shared by every framework integration.

A Chroma collection holds vectors by id the same way whether it was filled through
LlamaIndex, LangChain or the client directly, so the code that reads, writes and searches it
lives here once, and :func:`backend_for` finds the backend for a framework's store object:

Each store is one module here that declares a ``SPEC`` (its name, extra, framework wrappers,
``--store`` schemes and metric hints); :func:`supported_stores` lists them, and the registry,
the command line's ``--store`` table and the docs' store pages are built from the specs.
:class:`ArrayStore` (numpy, ``.npz``) is the store of plain arrays.

Each implements :class:`~nudge_rag.EmbeddingStore` and writes in place (nothing is deleted
and re-added). A store that keeps its write-back state itself (pgvector: side tables and an
advisory lock) returns a :class:`WriteBackState` with a :class:`WriterLock` from
``writeback_state()``. No client library is imported until a store of its kind is used.
CONTRIBUTING.md says how to add a store.
"""

from nudge_rag._lock import WriterLock
from nudge_rag._state import WriteBackState
from nudge_rag.backends._common import STATE_FOLDER, as_rows, to_cosine, unknown_ids
from nudge_rag.backends._registry import (
    backend_for,
    backend_for_index,
    langchain_result_ids,
    register_backend,
    supported_stores,
)
from nudge_rag.backends.chroma import ChromaBackend
from nudge_rag.backends.faiss import FaissBackend
from nudge_rag.backends.lancedb import LanceDBBackend
from nudge_rag.backends.memory import (
    ArrayStore,
    InMemoryVectorStoreBackend,
    SimpleVectorStoreBackend,
)
from nudge_rag.backends.milvus import MilvusBackend
from nudge_rag.backends.pgvector import PgVectorBackend
from nudge_rag.backends.qdrant import QdrantBackend

__all__ = [
    "ArrayStore",
    "ChromaBackend",
    "FaissBackend",
    "InMemoryVectorStoreBackend",
    "LanceDBBackend",
    "MilvusBackend",
    "PgVectorBackend",
    "QdrantBackend",
    "STATE_FOLDER",
    "SimpleVectorStoreBackend",
    "WriteBackState",
    "WriterLock",
    "as_rows",
    "backend_for",
    "backend_for_index",
    "langchain_result_ids",
    "register_backend",
    "supported_stores",
    "to_cosine",
    "unknown_ids",
]
