"""The exception classes of nudge-rag: one per kind of failure, shared by every entry point.

Each subclasses the built-in a caller would catch anyway (``ValueError``, ``KeyError``,
``RuntimeError``), so ``except ValueError`` keeps working; catch the specific class to tell
failures apart.
"""

from __future__ import annotations

__all__ = [
    "DimensionMismatchError",
    "MetricMismatchError",
    "StateDirError",
    "UnknownIdError",
    "UnsupportedStoreError",
]


class UnknownIdError(ValueError, KeyError):
    """Pairs or a call named document ids that the store does not hold.

    Attributes:
        ids: the unknown ids (all of them, in first-seen order).
    """

    def __init__(self, message: str, ids: list[str] | None = None):
        super().__init__(message)
        self.ids = list(ids or [])

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DimensionMismatchError(ValueError):
    """Vectors whose dimension differs from what the store holds (nothing was written)."""


class MetricMismatchError(ValueError):
    """The variant's similarity does not match how the store scores (nothing was written)."""


class StateDirError(ValueError):
    """No usable place to keep the original vectors (checked before any work is done)."""


class UnsupportedStoreError(TypeError):
    """A vector store nudge-rag cannot read and write in place (the message lists those it can)."""
