"""LangChain integration of nudge-rag: fine-tune the vectors stored in a LangChain vector store.

.. code-block:: python

    from langchain_nudge import NudgeRetriever

    retriever = NudgeRetriever(vectorstore=store, k=4)
    retriever.fit([("What is France's capital?", "paris")])
    chain = retriever | format_docs | prompt | llm
    retriever.restore()
"""

from langchain_nudge.questions import (
    generate_pairs,
    normalize_pairs,
    pairs_from_metadata,
    parse_questions,
)
from langchain_nudge.retrievers import NudgeRetriever
from langchain_nudge.stores import (
    ReAddStore,
    register_store,
    store_for,
)

__all__ = [
    "NudgeRetriever",
    "ReAddStore",
    "generate_pairs",
    "normalize_pairs",
    "pairs_from_metadata",
    "parse_questions",
    "register_store",
    "store_for",
]
