"""The exception classes of nudge-rag: one per kind of failure, shared by every entry point.

Each subclasses the built-in a caller would catch anyway (``ValueError``, ``KeyError``,
``RuntimeError``), so ``except ValueError`` keeps working; catch the specific class to tell
failures apart.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

__all__ = [
    "CliError",
    "DataFileError",
    "DimensionMismatchError",
    "EmbedderError",
    "LockBusy",
    "MetricMismatchError",
    "MetricUnknownError",
    "NotFittedError",
    "StateDirError",
    "StoreBusyError",
    "StoreURIError",
    "TuneInProgressError",
    "UnknownIdError",
    "UnsafeFileError",
    "UnsupportedStoreError",
    "WriteBackError",
    "WrongStateError",
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


class WriteBackError(RuntimeError):
    """A write-back could not complete, or its saved state cannot be used.

    The store is never left half-written: every id holds its original or its target vector,
    and the message says whether to call ``resume()``, ``restore()`` or ``discard_pending()``.
    """


class WrongStateError(WriteBackError):
    """The state given belongs to another store, or this store's originals are elsewhere.

    Nothing was written or dropped; the message names both stores (or both places) and the
    one to use.
    """


class StoreBusyError(WriteBackError):
    """Another fit, restore or resume holds this store's writer lock; nothing was done.

    Attributes:
        holder: what the holder recorded (``pid``, ``host``, ``thread``, ``since``, ``what``),
            or ``None`` when it left no record.
    """

    def __init__(self, message: str, holder: dict[str, Any] | None = None):
        super().__init__(message)
        self.holder = holder


class TuneInProgressError(RuntimeError):
    """Another re-tune from this feedback log holds the store's tune lock (nothing was done)."""


class NotFittedError(ValueError, AttributeError):
    """Raised when a fitted attribute is used before ``fit``."""


class DataFileError(ValueError):
    """A data file whose content is not what its format expects.

    The message names the file, the line or byte offset where it applies, what was expected
    and what came. It is a ``ValueError``, so ``except ValueError`` catches it.

    Attributes:
        path: the file.
        line: the 1-based line number, or ``None`` when no line applies.
        offset: the 0-based byte offset in the file, or ``None`` when unknown.
    """

    def __init__(
        self,
        message: str,
        path: str | PathLike[str] | None = None,
        line: int | None = None,
        offset: int | None = None,
    ) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)
        self.line = line
        self.offset = offset

    def __reduce__(self) -> tuple[Any, ...]:  # keep the attributes through pickling
        return (type(self), (str(self), self.path, self.line, self.offset))


class LockBusy(RuntimeError):
    """Another writer holds the lock (``_writeback`` turns it into ``StoreBusyError``).

    Attributes:
        holder: what the holder recorded (``pid``, ``host``, ``thread``, ``since``, ``what``),
            or ``None`` when it could not be read.
    """

    def __init__(self, message: str, holder: dict[str, Any] | None = None):
        super().__init__(message)
        self.holder = holder


class StoreURIError(ValueError):
    """``--store`` / ``--collection`` name no store that can be opened (nothing was touched)."""


class EmbedderError(ValueError):
    """``--embed`` names no usable model (nothing was read or written)."""


class MetricUnknownError(ValueError):
    """The store does not record how it ranks (e.g. a pgvector table with no ANN index).

    Pass the metric: ``distance=`` in Python, ``--distance`` on the command line.
    """


class UnsafeFileError(OSError):
    """A state file is a symbolic link or not a regular file: it is never followed."""


class CliError(Exception):
    """A failure ``nudge-rag`` reports in one line, with its exit status (the CLI's own)."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status
