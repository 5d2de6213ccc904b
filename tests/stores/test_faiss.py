"""FAISS through LangChain's ``FAISS``: a flat inner-product index over normalized vectors,
an ``IndexIVFFlat`` (``nlist`` = 4 * sqrt(n), at most n / 39; ``nprobe`` = 8) as users build it, and
an ``IndexHNSWFlat``, which cannot be updated in place and is refused."""

from __future__ import annotations

import numpy as np

from .contract import StoreContract
from .harness import Made, StoreKind


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

    def reopen(self, made: Made) -> Made:
        """The saved folder loaded afresh (the test's wrapper holds its index in memory)."""
        from langchain_community.vectorstores import FAISS

        folder = made.uri.removeprefix("faiss:")
        store = FAISS.load_local(
            folder,
            made.store.embeddings,
            allow_dangerous_deserialization=True,
            distance_strategy=made.store.distance_strategy,
        )
        return Made(store, "langchain", made.uri, made.collection, cli_args=made.cli_args)


class TestFaiss(StoreContract):
    KIND = FaissKind
