"""FAISS through LangChain's ``FAISS``: a flat inner-product index over normalized vectors,
an ``IndexIVFFlat`` (``nlist`` = 4 * sqrt(n), at most n / 39; ``nprobe`` = 8) as users build it, and
an ``IndexHNSWFlat``, which cannot be updated in place and is refused.

``llama-index`` (a ``VectorStoreIndex`` over LlamaIndex's ``FaissVectorStore`` on an
``IndexFlatIP``, persisted to a folder) is made for the fault suite, not run by the contract;
``open`` opens either saved folder as a new process does (LangChain's ``FAISS.load_local``,
LlamaIndex's ``load_index_from_storage``: the fault suite's child).
"""

from __future__ import annotations

import numpy as np

from .contract import StoreContract
from .harness import Docs, Made, StoreKind, llama_index_over


class FaissKind(StoreKind):
    name = "faiss"
    all_kill_points = True  # its state in a folder: every point
    configs = ("flat", "ivf", "hnsw")
    approximate = frozenset({"ivf"})
    # an HNSW graph cannot move a vector in place: refused before anything is written,
    # naming the index types that can
    refused = {"hnsw": "IndexFlatIP / IndexFlatL2"}
    cannot_delete = {
        # LangChain's FAISS.delete renumbers its id map as a flat index shifts, which an IVF
        # index does not; the direct map nudge-rag adds (an array) refuses the remove, so the
        # store is left as it was instead of mislabelled
        "ivf": "remove not supported with this direct_map format"
    }
    module_needed = "faiss"
    extra = "faiss"

    def make(self, tmp_path, docs, config, request) -> Made:
        if config == "llama-index":  # the fault suite's, the LlamaIndex nfcorpus test's
            return self._persist_llama_index(tmp_path / "faiss_llama", docs)
        import faiss
        from langchain_community.docstore.in_memory import InMemoryDocstore
        from langchain_community.vectorstores import FAISS
        from langchain_community.vectorstores.utils import DistanceStrategy

        dim = docs.vectors.shape[1]
        if config == "flat":
            index = faiss.IndexFlatIP(dim)
        elif config == "hnsw":
            index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        else:
            # FAISS's rule of thumb, with the 39 training points a list it asks for
            nlist = max(1, min(int(4 * np.sqrt(len(docs.ids))), len(docs.ids) // 39))
            index = faiss.IndexIVFFlat(
                faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT
            )
            index.train(docs.vectors)
            # FAISS's default nprobe = 1 leaves some queries with fewer than k results on
            # lists this small, before any tuning; 8 probes is a usual first setting
            index.nprobe = 8
        store = FAISS(
            docs.embeddings(),
            index,
            InMemoryDocstore(),
            {},
            normalize_L2=True,
            distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT,
        )
        store.add_embeddings(
            list(zip(docs.texts, docs.vectors.tolist())), metadatas=docs.metadatas, ids=docs.ids
        )
        if config == "flat":
            folder = tmp_path / "faiss"
            store.save_local(str(folder))
            # the folder's index.pkl is LangChain's pickle: the CLI loads it only when told
            return Made(
                store, "langchain", f"faiss:{folder}", "index", cli_args=("--trust-pickle",)
            )
        return Made(store, "langchain")

    def _persist_llama_index(self, folder, docs: Docs) -> Made:
        """A ``VectorStoreIndex`` over a ``FaissVectorStore`` (``IndexFlatIP``) holding
        ``docs``, persisted in ``folder`` (``storage_context.persist``), as LlamaIndex users
        save one. Its ``uri`` names the folder for :meth:`open`; the command line's ``faiss:``
        opens LangChain's folders only."""
        import faiss
        from llama_index.vector_stores.faiss import FaissVectorStore

        store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(docs.vectors.shape[1]))
        index = llama_index_over(store, docs)
        index.storage_context.persist(str(folder))
        return Made(store, "llama-index", f"faiss:{folder}", None, index=index)

    def reopen(self, made: Made) -> Made:
        """The saved folder loaded afresh (the test's wrapper holds its index in memory)."""
        embeddings = made.store.embeddings if made.framework == "langchain" else None
        return self.open(made.uri, made.collection, embeddings, made.framework)

    def open(self, uri, collection, embeddings=None, framework="langchain") -> Made:
        """The saved folder (``faiss:PATH``) loaded as its framework's users load it:
        LangChain's ``save_local`` folder with ``FAISS.load_local`` (``collection`` is its
        ``index_name``; the kind's inner-product strategy), or LlamaIndex's persisted folder
        with ``FaissVectorStore.from_persist_dir`` and ``load_index_from_storage``
        (:attr:`Made.index`, which names the nodes of the store's positions; its embed model
        is LlamaIndex's ``MockEmbedding``: nothing is embedded through it)."""
        folder = uri.removeprefix("faiss:")
        if framework == "llama-index":
            from llama_index.core import StorageContext, load_index_from_storage
            from llama_index.core.embeddings import MockEmbedding
            from llama_index.vector_stores.faiss import FaissVectorStore

            store = FaissVectorStore.from_persist_dir(folder)
            context = StorageContext.from_defaults(vector_store=store, persist_dir=folder)
            index = load_index_from_storage(context, embed_model=MockEmbedding(store.client.d))
            return Made(store, framework, uri, collection, index=index)
        from langchain_community.vectorstores import FAISS
        from langchain_community.vectorstores.utils import DistanceStrategy

        store = FAISS.load_local(
            folder,
            embeddings,
            index_name=collection,
            allow_dangerous_deserialization=True,
            distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT,
        )
        return Made(store, "langchain", uri, collection, cli_args=("--trust-pickle",))


class TestFaiss(StoreContract):
    KIND = FaissKind
