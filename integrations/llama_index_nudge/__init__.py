"""LlamaIndex integration of nudge-rag: NUDGE fine-tuning of the embeddings in a vector index.

``NudgeFinetuneEngine.from_index(index, ...)`` tunes the vectors a ``VectorStoreIndex`` already
stores (``nudge_rag.backends.supported_stores("llama-index")`` lists the stores); ``Nudge`` is a
drop-in for ``llama_index.experimental.nudge.Nudge``. ``FeedbackRetriever(index.as_retriever(),
log)`` logs each search to a ``nudge_rag.FeedbackLog`` for ``engine.finetune_from_feedback(log)``.
"""

from llama_index_nudge.base import Nudge, NudgeFinetuneEngine
from llama_index_nudge.embedding import AdaptedQueryEmbedding
from llama_index_nudge.feedback import FeedbackRetriever
from llama_index_nudge.questions import (
    DEFAULT_QUESTION_PROMPT,
    DEFAULT_QUESTIONS_KEY,
    generate_questions,
    parse_questions,
    questions_from_metadata,
)
from llama_index_nudge.stores import adapter_for, default_state_dir

__all__ = [
    "AdaptedQueryEmbedding",
    "DEFAULT_QUESTIONS_KEY",
    "DEFAULT_QUESTION_PROMPT",
    "FeedbackRetriever",
    "Nudge",
    "NudgeFinetuneEngine",
    "adapter_for",
    "default_state_dir",
    "generate_questions",
    "parse_questions",
    "questions_from_metadata",
]
