"""One harness for every store: how to make a filled store the way its users do.

A :class:`StoreKind` makes a store holding given documents (ids, texts, metadata, vectors)
through the framework wrapper its users run, in one *configuration* (exact search, or the
ANN index users build: ``"hnsw"``, ``"ivfflat"``, ...), and says what the contract may expect
of it (ids it accepts, how exactly ``restore`` gives vectors back). A store's test file is
its ``StoreKind`` and a subclass of :class:`~tests.stores.contract.StoreContract`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

_HERE = Path(__file__).resolve().parent
for _path in (_HERE.parent, _HERE.parent / "integration_langchain"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

pytest.importorskip("langchain_core", reason="pip install 'nudge-rag[langchain]'")

from langchain_helpers import LookupEmbeddings  # noqa: E402

#: Ids every store with free-form string ids must keep exactly.
ODD_IDS = [
    "it's",
    'say "hi"',
    "two\nlines",
    "tab\there",
    "back\\slash",
    "emoji 😀🚀",
    "ümlaut-ß",
    "x" * 300,
    "semi;colon -- DROP TABLE t",
    "%s %(x)s {}",
]

#: Where the kill test kills a command (``kill_child.py`` points): ``(command, point)``.
KILL_POINTS: tuple[tuple[str, str], ...] = (
    ("tune", "originals"),  # originals saved, no plan
    ("tune", "plan"),  # plan saved, nothing written
    ("tune", "batch:1"),  # the first batch written
    ("tune", "batch:3"),  # a batch in the middle written
    ("tune", "progress:2"),  # a batch written and recorded
    ("tune", "finish"),  # every batch written, the plan not marked done
    ("restore", "plan"),
    ("restore", "batch:2"),
    ("restore", "finish"),
)
#: Points of a state folder only (a store that keeps its own state saves the originals and
#: progress of each batch with it).
FILE_STATE_POINTS = frozenset({"originals", "progress:2"})


@dataclass
class Docs:
    """Documents to put in a store: ids, texts, metadata and ``(n, dim)`` float32 vectors."""

    ids: list[str]
    texts: list[str]
    metadatas: list[dict[str, Any]]
    vectors: np.ndarray
    queries: Mapping[str, np.ndarray] = field(default_factory=dict)  # question -> vector

    def embeddings(self, as_arrays: bool = False) -> LookupEmbeddings:
        """A lookup "model" serving the documents' and questions' vectors by text."""
        table = dict(zip(self.texts, self.vectors, strict=True))
        table.update(self.queries)
        default = np.zeros(self.vectors.shape[1], dtype=np.float32)
        default[0] = 1.0  # wrappers probe the dimension with a text of their own
        return LookupEmbeddings(table, default=default, as_arrays=as_arrays)

    def nodes(self) -> list[Any]:
        """The documents as LlamaIndex ``TextNode`` objects carrying their vectors."""
        from llama_index.core.schema import TextNode

        return [
            TextNode(id_=i, text=t, metadata=m, embedding=v.tolist())
            for i, t, m, v in zip(self.ids, self.texts, self.metadatas, self.vectors, strict=True)
        ]


@dataclass
class Made:
    """A filled store: the framework wrapper users hold, and how the CLI names it.

    Attributes:
        store: the LangChain ``VectorStore`` or LlamaIndex ``BasePydanticVectorStore``.
        framework: ``"langchain"`` or ``"llama-index"``.
        uri: the CLI's ``--store`` (``None``: not on the command line).
        collection: the CLI's ``--collection``.
        close: releases the store's client.
        upserts: whether the wrapper's own add replaces a document of the same id in place
            (else :meth:`update` deletes it and adds it again, as its users must).
        remove: how the user deletes a document where the wrapper has no ``delete`` (SQL on
            the store's own connection).
        lookup: the wrapper's :class:`LookupEmbeddings` where its ``embeddings`` is ``None``.
        index: LlamaIndex's ``VectorStoreIndex`` over the store where the store's own ids are
            positions and the index names their nodes (``FaissVectorStore``).
    """

    store: Any
    framework: str = "langchain"
    uri: str | None = None
    collection: str | None = None
    close: Callable[[], None] = lambda: None
    cli_args: tuple[str, ...] = ()  # more --store arguments the CLI needs (e.g. --distance)
    docs: Docs | None = None  # what it holds, with the ids the store gave them
    upserts: bool = False  # the wrapper's add replaces a document of the same id in place
    remove: Callable[[str], None] | None = None  # a delete where the wrapper has none
    lookup: Any = None  # the lookup "model", where the wrapper does not say which it has
    index: Any = None  # LlamaIndex's index, where it names the store's nodes (FAISS)

    def __post_init__(self) -> None:
        release, done = self.close, []

        def close_once() -> None:  # a test may close it early; the fixture closes it again
            if not done:
                done.append(True)
                release()

        self.close = close_once

    # the user's own edits, through the wrapper's API ------------------------------------
    def add(self, doc_id: str, text: str, vector: np.ndarray, metadata: dict | None = None) -> str:
        """Add a document (or put a deleted one back under its id) as the user would; returns
        the id it has in the store (a store that numbers its rows gives a new one)."""
        vector = np.asarray(vector, dtype=np.float32)
        if self.framework == "langchain":
            lookup = self.store.embeddings if self.lookup is None else self.lookup
            lookup.vectors[text] = vector  # the lookup "model" learns the text
            got = self.store.add_texts([text], metadatas=[dict(metadata or {})], ids=[doc_id])
            return str(got[0]) if got else doc_id
        from llama_index.core.schema import TextNode

        node = TextNode(id_=doc_id, text=text, metadata=dict(metadata or {}))
        node.embedding = vector.tolist()
        got = self.store.add([node])
        return str(got[0]) if got else doc_id

    def delete(self, doc_id: str) -> None:
        """Delete a document through the wrapper (or as its users must, :attr:`remove`)."""
        if self.remove is not None:
            self.remove(doc_id)
        elif self.framework == "langchain":
            self.store.delete(ids=[doc_id])
        else:
            self.store.delete_nodes(node_ids=[doc_id])

    def update(
        self, doc_id: str, text: str, vector: np.ndarray, metadata: dict | None = None
    ) -> str:
        """Change a document: in place where the wrapper upserts (:attr:`upserts`), else
        deleted and added again under its id."""
        if not self.upserts:
            self.delete(doc_id)
        return self.add(doc_id, text, vector, metadata)

    def search(self, vector: np.ndarray, k: int) -> list[tuple[str, Any, Any]]:
        """``(id, text, metadata)`` of the wrapper's own top ``k`` for ``vector``.

        Text and metadata are ``None`` where the vector store does not hold them.
        """
        vector = np.asarray(vector, dtype=np.float32).tolist()
        if self.framework == "langchain":
            from nudge_rag.backends import langchain_result_ids

            set_ids = langchain_result_ids(self.store)  # as NudgeRetriever does, first
            docs = self.store.similarity_search_by_vector(vector, k=k)
            if set_ids is not None:
                set_ids(docs)
            return [(str(d.id), d.page_content, dict(d.metadata)) for d in docs]
        from llama_index.core.vector_stores.types import VectorStoreQuery

        result = self.store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=k))
        if result.nodes is None:  # SimpleVectorStore: text and metadata live in the docstore
            return [(i, None, None) for i in result.ids]
        return [(n.node_id, n.get_content(), dict(n.metadata)) for n in result.nodes]


class StoreKind:
    """How to make one store, and what the contract expects of it.

    Attributes:
        name: the store's spec name.
        configs: the index configurations users run (the first is the default one).
        approximate: configurations whose search is approximate (ANN).
        odd_ids: whether ids are free-form strings (else the store assigns them).
        restore_atol: how close ``restore`` gets to the original float32 vectors.
        refused: configuration -> the message (regex) of the error that refuses it before
            anything is written.
        module_needed: the client module; tests skip (naming the extra) where it is missing.
        multi_process: whether a second process can open the store while the test holds it
            (DuckDB and Qdrant lock their folder; an embedded Chroma folder, a Milvus Lite
            file and an in-memory store serve one process).
        extra: the pip extra that installs the store.
        exclusive: whether the wrapper's client locks the store (a Qdrant folder, a Milvus
            Lite file): a test closes the wrapper (``Made.close``) before the command line
            opens the store.
        all_kill_points: whether the kill test runs every write-back point on the first
            configuration (see :meth:`kill_points`).
        nfcorpus_skip: configuration -> why the nfcorpus test (a measure of the index) does
            not run on it.
        cannot_delete: configuration -> the error (regex) a delete through the wrapper gives,
            the store left as it was (the edits test asserts it, then re-embeds in place).
    """

    name: ClassVar[str] = ""
    configs: ClassVar[tuple[str, ...]] = ("exact",)
    approximate: ClassVar[frozenset[str]] = frozenset()
    odd_ids: ClassVar[bool] = True
    restore_atol: ClassVar[float] = 0.0
    refused: ClassVar[Mapping[str, str]] = {}
    module_needed: ClassVar[str] = ""
    extra: ClassVar[str] = ""
    multi_process: ClassVar[bool] = True  # a second process may open it while the test does
    all_kill_points: ClassVar[bool] = False
    nfcorpus_skip: ClassVar[Mapping[str, str]] = {}
    cannot_delete: ClassVar[Mapping[str, str]] = {}
    exclusive: ClassVar[bool] = False  # its client locks the store, even in this process

    def skip_if_missing(self) -> None:
        """Skip with the extra's name when the store's client is not installed."""
        if self.module_needed:
            pytest.importorskip(self.module_needed, reason=f"pip install 'nudge-rag[{self.extra}]'")

    def make(self, tmp_path: Path, docs: Docs, config: str, request: Any) -> Made:
        """A store holding ``docs`` in configuration ``config``."""
        raise NotImplementedError

    def wrapper(self, made: Made, framework: str) -> Made:
        """The store ``made`` (as :meth:`make` made it) seen through a new wrapper of
        ``framework`` (``"langchain"`` or ``"llama-index"``) on the same client: what a second
        retriever or engine of the same process holds. Its close leaves the client to
        ``made.close``.

        Raises:
            NotImplementedError: the kind makes no such wrapper (default).
        """
        msg = f"{type(self).__name__} makes no second {framework} wrapper of a store"
        raise NotImplementedError(msg)

    def set_search(self, made: Made, config: str) -> None:
        """Set the search settings of ``config`` on the wrapper (default: nothing)."""

    def kill_points(self, config: str) -> tuple[tuple[str, str], ...]:
        """The kill points the kill test runs on ``config``.

        Every point runs where :attr:`all_kill_points` says so, on the first configuration:
        the write-back sequence and its state are the same code for every store that keeps
        its state in a folder (FAISS runs them all) and for a store that keeps its own
        (pgvector). Elsewhere one point of ``tune`` and one of ``restore``: what a store adds
        is its ``set_vectors`` and its index.
        """
        if not self.multi_process or config in self.refused:
            return ()
        if self.all_kill_points and config == self.configs[0]:
            return KILL_POINTS
        return (("tune", "batch:3"), ("restore", "batch:2"))

    def settle(self, made: Made) -> None:
        """Wait until a killed writer no longer holds the store (default: at once; a file lock
        dies with its process)."""

    def reopen(self, made: Made) -> Made:
        """The store as a new process opens it through its wrapper (default: ``made``, whose
        wrapper reads the store itself)."""
        return made

    def open(
        self,
        uri: str,
        collection: str | None,
        embeddings: Any = None,
        framework: str = "langchain",
    ) -> Made:
        """The store the command line names (``--store uri --collection collection``) opened
        through its ``framework`` wrapper (``"langchain"`` or ``"llama-index"``) as a new
        process does: what a child process of a test opens (``tests/fault_child.py``).

        Args:
            uri: :attr:`Made.uri` of the store :meth:`make` made (or of a copy of its folder).
            collection: :attr:`Made.collection`.
            embeddings: the LangChain wrapper's embedding model (LlamaIndex's takes none).
            framework: whose wrapper.
        """
        msg = f"the {self.name} kind does not open a store from its URI"
        raise NotImplementedError(msg)

    def ann_slack(self, config: str) -> float:
        """How much more an ANN configuration may lose to exact search after a fit (nDCG)."""
        return 0.01


def llama_index_over(store: Any, docs: Docs, **kwargs: Any) -> Any:
    """LlamaIndex's ``VectorStoreIndex`` over ``store`` holding ``docs`` as ``TextNode`` objects
    with their vectors (nothing is embedded: its embed model is LlamaIndex's
    ``MockEmbedding``), added as users add nodes: ``VectorStoreIndex(nodes, ...)``, in batches
    of its ``insert_batch_size`` (``kwargs``)."""
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    context = StorageContext.from_defaults(vector_store=store)
    embed = MockEmbedding(embed_dim=docs.vectors.shape[1])
    return VectorStoreIndex(docs.nodes(), storage_context=context, embed_model=embed, **kwargs)


def nfcorpus_docs(ds: Any) -> Docs:
    """The nfcorpus documents as the kinds take them: unique texts (``"[id] text"``: nfcorpus
    repeats 40 texts), the row in metadata, the stored MiniLM vectors, and every split's
    questions' vectors for the lookup "model"."""
    from nfcorpus_eval import query_vectors

    ids = list(ds.doc_ids)
    return Docs(
        ids,
        [f"[{i}] {t}" for i, t in zip(ids, ds.doc_texts, strict=True)],
        [{"row": k} for k in range(len(ids))],
        np.asarray(ds.doc_embeddings, dtype=np.float32),
        query_vectors(ds),
    )


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to norm 1, float32."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def toy_docs(n: int = 60, dim: int = 16, seed: int = 0, ids: Sequence[str] | None = None) -> Docs:
    """``n`` documents with random unit vectors, and two noisy questions per document."""
    rng = np.random.default_rng(seed)
    vectors = unit_rows(rng.standard_normal((n, dim)))
    ids = list(ids) if ids is not None else [f"doc-{k}" for k in range(n)]
    texts = [f"passage {k} of set {seed}" for k in range(n)]
    metadatas = [{"row": k, "title": f"title {k}"} for k in range(n)]
    queries = {}
    for k in range(n):
        for j in range(2):
            q = vectors[k] + 0.6 * rng.standard_normal(dim).astype(np.float32)
            queries[f"question {j} about passage {k}?"] = q / np.linalg.norm(q)
    return Docs(ids, texts, metadatas, vectors, queries)


def env_data_dir() -> Path:
    """The shared data folder (``$NUDGE_RAG_DATA`` or ``../shared/data``)."""
    return Path(os.environ.get("NUDGE_RAG_DATA", _HERE.parents[2] / "shared" / "data"))
