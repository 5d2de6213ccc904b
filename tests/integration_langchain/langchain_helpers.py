"""Helpers shared by the LangChain integration tests (a uniquely named module, so that it
cannot clash with other test folders' conftest modules)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from langchain_core.embeddings import Embeddings

from nudge_rag import FeedbackLog

DATA_DIR = Path(
    os.environ.get("NUDGE_RAG_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)


class LookupEmbeddings(Embeddings):
    """Test double serving *precomputed* vectors by exact text (never embeds anything).

    Args:
        vectors: ``{text: (dim,) vector}``.
        as_arrays: return float64 numpy rows instead of lists (``InMemoryVectorStore`` then
            stores arrays and scores ~20x faster: it stacks every stored vector per query).
        default: vector for unknown texts (e.g. the store's own ``"dummy_text"`` probe);
            ``None`` raises ``KeyError``.
    """

    def __init__(
        self,
        vectors: Mapping[str, np.ndarray],
        *,
        as_arrays: bool = False,
        default: np.ndarray | None = None,
    ):
        self.vectors = dict(vectors)
        self.as_arrays = as_arrays
        self.default = default
        self.document_calls = 0

    def _get(self, text: str):
        if text == FeedbackLog.PROBE_TEXT and text not in self.vectors and self.default is None:
            text = next(iter(self.vectors))  # the model's fingerprint probe
        vector = self.vectors.get(text, self.default)
        if vector is None:
            msg = f"no precomputed vector for text {text[:60]!r}"
            raise KeyError(msg)
        vector = np.asarray(vector, dtype=np.float64)
        return vector.copy() if self.as_arrays else vector.tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.document_calls += 1
        return [self._get(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._get(text)


def toy_vectors(texts: Sequence[str], dim: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Random unit vectors for ``texts`` (seeded)."""
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(len(texts), dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return dict(zip(texts, vecs, strict=True))


# ---------------------------------------------------------------------- nfcorpus end to end
from nfcorpus_eval import exact_ndcg, query_vectors, ranked_ndcg, split_pairs  # noqa: E402, F401 (re-exported)
