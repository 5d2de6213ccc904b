"""Helpers for the LlamaIndex integration tests (imported by name; fixtures are in conftest).

The embed models here are test doubles that only serve precomputed vectors: ``LookupEmbedding``
returns the real all-MiniLM-L6-v2 query embeddings shipped with the data by text lookup, so
no model runs in these tests.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
# The editable install may map llama_index_nudge as a namespace package (installed before the
# package had an __init__.py); putting integrations/ first makes it import as a regular one.
if str(REPO / "integrations") not in sys.path:
    sys.path.insert(0, str(REPO / "integrations"))

from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata  # noqa: E402
from pydantic import BaseModel, PrivateAttr  # noqa: E402

from nudge_rag import FeedbackLog  # noqa: E402

DATA_DIR = Path(
    os.environ.get("NUDGE_RAG_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
NFCORPUS = DATA_DIR / "nfcorpus"


class LookupEmbedding(BaseEmbedding):
    """Serves fixed vectors by text; unknown texts raise ``KeyError`` (a test must not embed)."""

    _table: dict[str, list[float]] = PrivateAttr(default_factory=dict)

    def __init__(self, table: dict[str, np.ndarray] | None = None, **kwargs):
        super().__init__(model_name="lookup", **kwargs)
        self._table = {
            k: np.asarray(v, dtype=np.float32).tolist() for k, v in (table or {}).items()
        }

    def add(self, texts, vectors) -> None:
        for text, vector in zip(texts, np.asarray(vectors, dtype=np.float32), strict=True):
            self._table[text] = vector.tolist()

    def _lookup(self, text: str) -> list[float]:
        if text == FeedbackLog.PROBE_TEXT and text not in self._table and self._table:
            return next(iter(self._table.values()))  # the model's fingerprint probe
        try:
            return self._table[text]
        except KeyError:
            msg = f"LookupEmbedding has no vector for {text[:60]!r}"
            raise KeyError(msg) from None

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._lookup(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._lookup(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._lookup(text)


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def toy_nodes(docs: np.ndarray, questions: dict[str, np.ndarray], key: str | None = None):
    """TextNodes ``d0``.. with their embeddings; with ``key``, each holds its two questions
    under ``metadata[key]`` as a list (excluded from the embedded text)."""
    from llama_index.core.schema import TextNode

    texts = list(questions)
    nodes = []
    for k, vector in enumerate(docs):
        metadata = {key: texts[2 * k : 2 * k + 2]} if key else {}
        nodes.append(
            TextNode(
                id_=f"d{k}",
                text=f"document {k}",
                embedding=vector.tolist(),
                metadata=metadata,
                excluded_embed_metadata_keys=[key] if key else [],
            )
        )
    return nodes


def toy_pairs(questions: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    """``(question, node_id)``: questions ``2k`` and ``2k+1`` belong to node ``d{k}``."""
    return [(text, f"d{j // 2}") for j, text in enumerate(questions)]


def stored(index) -> dict[str, list[float]]:
    """A copy of a SimpleVectorStore index's embeddings."""
    return {k: list(v) for k, v in index.vector_store.data.embedding_dict.items()}


class EmbeddingQAFinetuneDataset(BaseModel):
    """Same fields and JSON as LlamaIndex's ``EmbeddingQAFinetuneDataset`` (which lived in the
    deprecated ``llama-index-finetuning`` package and is not installed here)."""

    queries: dict[str, str]
    corpus: dict[str, str]
    relevant_docs: dict[str, list[str]]
    mode: str = "text"

    def save_json(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.model_dump(), f, indent=4)


class FixedLLM(CustomLLM):
    """Answers every prompt with the same text and records the prompts."""

    answer: str = ""
    prompts: list = []

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata()

    def complete(self, prompt: str, formatted: bool = False, **kwargs) -> CompletionResponse:
        self.prompts.append(prompt)
        return CompletionResponse(text=self.answer)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs):
        yield self.complete(prompt)


# ---------------------------------------------------------------------- nfcorpus end to end
from nfcorpus_eval import exact_ndcg, query_vectors, ranked_ndcg, split_pairs  # noqa: E402, F401 (re-exported)
