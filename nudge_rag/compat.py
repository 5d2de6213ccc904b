"""Reference-compatible API: ``from nudge_rag.compat import NUDGEN, NUDGEM``."""

from nudge_rag._compat import NUDGEM, NUDGEN, QueriesAnswersDict

__all__ = ["NUDGEN", "NUDGEM", "QueriesAnswersDict"]
