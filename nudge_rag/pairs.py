"""Training pairs: every accepted form to one list, grouping by question, and LLM output parsing.

The tuning flow calls these itself (``StoreTuner.tune`` takes pairs in any form); use them to
inspect or prepare pairs: ``normalize_pairs`` turns ``(question, doc_id)`` tuples, dicts,
LlamaIndex's ``EmbeddingQAFinetuneDataset`` or the ``{queries, corpus, relevant_docs}``
triple into one list; ``group_pairs`` groups it by question; ``parse_questions`` reads the
questions out of an LLM's answer.
"""

from nudge_rag._pairs import group_pairs, normalize_pairs
from nudge_rag._questions import parse_questions

__all__ = ["group_pairs", "normalize_pairs", "parse_questions"]
