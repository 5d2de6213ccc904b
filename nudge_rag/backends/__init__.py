"""Vector-store backends, one module per store, shared by every framework integration.

A Chroma collection holds vectors by id the same way whether it was filled through
LlamaIndex, LangChain or the client directly, so the code that reads, writes and searches it
lives here once, and :func:`backend_for` finds the backend for a framework's store object:

* :mod:`~nudge_rag.backends.memory`: :class:`ArrayStore` (numpy, ``.npz``), LangChain's
  ``InMemoryVectorStore``, LlamaIndex's ``SimpleVectorStore``;
* :mod:`~nudge_rag.backends.chroma`: a ``chromadb`` collection (embedded or HTTP);
* :mod:`~nudge_rag.backends.qdrant`: a Qdrant collection (local or server).
* :mod:`~nudge_rag.backends.pgvector`: a pgvector table (LangChain ``PGVector``, LlamaIndex
  ``PGVectorStore``, or a URL and a table); originals in side tables of the same database.
* :mod:`~nudge_rag.backends.faiss`: a flat FAISS index (LangChain ``FAISS``, LlamaIndex
  ``FaissVectorStore`` / ``FaissMapVectorStore``).
* :mod:`~nudge_rag.backends.milvus`: a Milvus collection (Milvus Lite ``.db`` or a server).
* :mod:`~nudge_rag.backends.lancedb`: a LanceDB table (a local folder).

Each implements :class:`~nudge_rag.EmbeddingStore` and writes in place (nothing is deleted
and re-added). No client library is imported until a store of its kind is used.
CONTRIBUTING.md says how to add a store.
"""

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
    "as_rows",
    "backend_for",
    "backend_for_index",
    "langchain_result_ids",
    "register_backend",
    "supported_stores",
    "to_cosine",
    "unknown_ids",
]
