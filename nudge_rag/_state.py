"""Where a write-back keeps what it needs to never lose an original: the state interface.

:class:`WriteBackState` declares what :class:`~nudge_rag.WriteBack` reads and writes: the
saved originals, the pending plan and its progress, the last applied plan, the fit's meta,
the query adapter, and the writer lock (a :class:`~nudge_rag._lock.WriterLock`). It has two
implementations:

- :class:`FolderState`: files in a state folder (``originals.npz``, ``pending.npz``,
  ``progress.json``, ``applied.npz``, ``meta.json``, ``query_adapter.json``, the identity
  and claim records, ``writer.lock``), or the same in memory when there is no folder;
- a state a store keeps itself (``store.writeback_state()``, see
  :class:`~nudge_rag.StatefulEmbeddingStore`): pgvector's side tables and advisory lock.

A store state subclasses :class:`WriteBackState`, implements its abstract methods and may
define :meth:`WriteBackState.write_batch` (a batch, its progress and its originals in one
transaction); everything else has a default here.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import threading
import weakref
import zipfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from nudge_rag._errors import WriteBackError
from nudge_rag._files import (
    UnsafeFileError,
    atomic_save_npz,
    atomic_write_json,
    fsync_dir,
    open_regular,
    read_regular,
)
from nudge_rag._identity import CLAIM, CLAIM_KEY, IDENTITY
from nudge_rag._lock import LOCK_FILE, WriterLock, file_lock

logger = logging.getLogger(__name__)

__all__ = ["FolderState", "WriteBackState"]

ORIGINALS = "originals.npz"
PENDING = "pending.npz"
PROGRESS = "progress.json"
APPLIED = "applied.npz"
META = "meta.json"
QUERY_ADAPTER = "query_adapter.json"
STATE_FILES = (ORIGINALS, PENDING, PROGRESS, APPLIED, META, QUERY_ADAPTER, IDENTITY, CLAIM)


class WriteBackState(abc.ABC):
    """What a write-back keeps, wherever it keeps it (see the module).

    Attributes:
        lock: the writer lock of this state (one writer per store at a time).
        root: the state folder, or ``None`` (memory, or the store itself).
        verifies: whether the state records what it wrote (:meth:`load_applied`), so that
            documents changed by someone else are told apart from ours.
        write_batch: ``None``, or a method ``write_batch(kind, batches_done, ids, vectors)``
            that writes one batch of the plan into the store together with its progress and
            (for ``"apply"``) the originals of its rows that have none saved yet, copied from
            the rows, in one transaction. :class:`~nudge_rag.WriteBack` then calls it instead
            of ``store.set_vectors`` + :meth:`save_progress` and saves no originals before the
            plan: a batch commits with its originals, and a row whose batch did not commit
            still holds its original.
    """

    lock: WriterLock
    root: Path | None = None
    verifies: bool = True
    write_batch: Callable[[str, int, list[str], np.ndarray], None] | None = None

    # originals ---------------------------------------------------------------
    @abc.abstractmethod
    def load_originals(self) -> tuple[list[str], np.ndarray] | None:
        """The saved originals ``(ids, (n, dim) float32)``, or ``None`` when there are none."""

    @abc.abstractmethod
    def save_originals(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Make the saved originals exactly ``ids`` -> ``vectors`` (atomically)."""

    @abc.abstractmethod
    def delete_originals(self) -> None:
        """Forget every saved original."""

    def count_originals(self) -> int:
        """How many ids have a saved original."""
        loaded = self.load_originals()
        return 0 if loaded is None else len(loaded[0])

    # the last completed plan ---------------------------------------------------
    @abc.abstractmethod
    def load_applied(self) -> tuple[list[str], np.ndarray] | None:
        """What the last completed plan wrote, or ``None``."""

    @abc.abstractmethod
    def save_applied(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Record what the store holds for ``ids`` because of this write-back."""

    # the pending plan ----------------------------------------------------------
    @abc.abstractmethod
    def load_pending(self) -> tuple[str, list[str], np.ndarray, int, int] | None:
        """``(kind, ids, vectors, batch_size, batches_done)`` of the pending plan, or ``None``."""

    @abc.abstractmethod
    def save_pending(
        self,
        kind: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        batch_size: int,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Save a plan (``kind``: ``"apply"`` or ``"restore"``) with no batch done yet."""

    @abc.abstractmethod
    def save_progress(self, batches_done: int) -> None:
        """Record that the first ``batches_done`` batches of the pending plan are written."""

    @abc.abstractmethod
    def clear_pending(self) -> None:
        """Drop the pending plan and its progress."""

    def has_pending(self) -> bool:
        """Whether a plan is pending."""
        return self.load_pending() is not None

    def pending_summary(self) -> tuple[str, int, int] | None:
        """``(kind, n_ids, batch_size)`` of the pending plan."""
        pending = self.load_pending()
        return None if pending is None else (pending[0], len(pending[1]), pending[3])

    def pending_progress(self) -> int:
        """How many batches of the pending plan are written (``0`` without one)."""
        pending = self.load_pending()
        return 0 if pending is None else int(pending[4])

    def pending_meta(self) -> dict[str, Any]:
        """What ``apply`` recorded about the fit whose plan is pending (``{}`` if nothing)."""
        return {}

    @abc.abstractmethod
    def finish_apply(self, meta: dict[str, Any]) -> None:
        """The pending plan is written: it becomes the applied one, ``meta`` the fit's record."""

    @abc.abstractmethod
    def finish_restore(self) -> None:
        """Every original is back: forget everything (originals first)."""

    # meta, query adapter ----------------------------------------------------------
    @abc.abstractmethod
    def load_meta(self) -> dict[str, Any]:
        """What the last fit recorded (``{}`` if nothing)."""

    @abc.abstractmethod
    def save_meta(self, meta: dict[str, Any]) -> None:
        """Replace the fit's record."""

    @abc.abstractmethod
    def load_query_adapter(self) -> dict[str, Any] | None:
        """The saved query adapter's record, or ``None``."""

    @abc.abstractmethod
    def save_query_adapter(self, payload: dict[str, Any] | None) -> None:
        """Save the query adapter's record (``None``: remove it)."""

    def query_adapter_version(self) -> Any:
        """A cheap token that changes when the saved adapter does.

        ``None``: unknown; the write-back then re-reads the adapter every few seconds.
        """
        return None

    # identity, claims (see nudge_rag._identity), leftovers --------------------------
    def load_identity(self) -> dict[str, Any] | None:
        """Which store this state belongs to; ``None`` for a state the store keeps itself."""
        return None

    def save_identity(self, payload: dict[str, Any]) -> None:
        """Record which store this state belongs to (nothing for a state in the store)."""
        return None

    def load_claim(self) -> str | None:
        """The folder this store's originals went to, when a fit kept them elsewhere."""
        folder = self.load_meta().get(CLAIM_KEY)
        return folder if isinstance(folder, str) else None

    def save_claim(self, folder: str | None) -> None:
        """Record (or, with ``None``, forget) the folder this store's originals went to."""
        meta = self.load_meta()
        if folder is None and CLAIM_KEY not in meta:
            return
        meta.pop(CLAIM_KEY, None)
        if folder is not None:
            meta[CLAIM_KEY] = folder
        self.save_meta(meta)

    def holds_state(self) -> bool:
        """Whether anything here still protects an original."""
        return self.count_originals() > 0 or self.has_pending()

    def clean_temp_files(self) -> int:
        """Remove what a killed writer left half-written; call under the lock."""
        return 0

    def has_temp_files(self) -> bool:
        """Whether :meth:`clean_temp_files` has anything to remove."""
        return False


_MEMORY_LOCK = threading.Lock()
_MEMORY_STATES: dict[tuple[int, str | None], tuple[Any, dict[str, Any]]] = {}


def _memory_of(owner: object) -> dict[str, Any]:
    """The in-memory write-back state of ``owner``, shared by every user of it.

    ``owner`` is what a backend's ``state_owner`` names: the store object itself (an
    ``InMemoryVectorStore``), or a pair ``(client, collection name)`` for a collection that
    several wrapper objects can reach through one client object (Chroma, Qdrant in memory).
    Kept while that object lives (a weak reference where it allows one, else a strong one).
    Holds the state's writer lock under ``LOCK_FILE``.
    """
    if isinstance(owner, tuple) and len(owner) == 2:
        anchor, collection = owner[0], str(owner[1])
    else:
        anchor, collection = owner, None
    key = (id(anchor), collection)
    with _MEMORY_LOCK:
        got = _MEMORY_STATES.get(key)
        if got is not None and got[0]() is anchor:
            return got[1]
        try:
            ref: Any = weakref.ref(anchor, lambda _ref, key=key: _MEMORY_STATES.pop(key, None))
        except TypeError:  # no weak references: hold it (the state is small next to the store)
            ref = lambda anchor=anchor: anchor  # noqa: E731
        label = collection or getattr(anchor, "name", None) or type(anchor).__name__
        lock = WriterLock(f"the write-back state of {label} (in memory)")
        memory: dict[str, Any] = {LOCK_FILE: lock}
        _MEMORY_STATES[key] = (ref, memory)
        return memory


class FolderState(WriteBackState):
    """The state in files of a folder (``root``), or in memory (``root=None``).

    Files are written atomically (temp file, fsync, rename), read without following links,
    and checked on read; a state in memory belongs to ``owner`` (see :func:`_memory_of`).
    Built on six primitives (``_load_npz``, ``_save_npz``, ``_delete``, ``_rename``,
    ``_load_json``, ``_save_json``).
    """

    def __init__(self, root: str | os.PathLike | None, owner: object):
        self.root = Path(root) if root is not None else None
        self._mem: dict[str, Any] = _memory_of(owner) if root is None else {}
        self.lock: WriterLock = (
            file_lock(self.root / LOCK_FILE, f"the write-back state of {self.root}")
            if self.root is not None
            else self._mem[LOCK_FILE]
        )

    # primitives --------------------------------------------------------------
    def _load_npz(
        self, name: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> dict[str, np.ndarray] | None:
        if self.root is None:
            return self._mem.get(name)
        path = self.root / name
        if not os.path.lexists(path):
            return None
        try:
            with (
                os.fdopen(open_regular(path, os.O_RDONLY), "rb") as fh,
                np.load(fh, allow_pickle=False) as data,
            ):
                out = {k: data[k] for k in keys}
                out.update((k, data[k]) for k in optional if k in data.files)
        except UnsafeFileError as err:
            msg = f"write-back state file {err.strerror}; the store was not touched"
            raise WriteBackError(msg) from err
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
            msg = (
                f"cannot read write-back state file {path}: {type(err).__name__}: {err}. "
                "It is truncated or corrupted; the store was not touched. If it holds originals, "
                "restore it from a backup before deleting it."
            )
            raise WriteBackError(msg) from err
        if "vectors" not in keys:
            return out
        ids, vectors = out["ids"], out["vectors"]
        if ids.ndim != 1 or vectors.ndim != 2 or ids.shape[0] != vectors.shape[0]:
            msg = (
                f"write-back state file {path} is inconsistent: "
                f"{ids.shape[0] if ids.ndim else 0} ids "
                f"for vectors of shape {vectors.shape}; the store was not touched"
            )
            raise WriteBackError(msg)
        if not np.isfinite(vectors).all():
            msg = (
                f"write-back state file {path} holds NaN or inf vectors; the store was not touched"
            )
            raise WriteBackError(msg)
        return out

    def _save_npz(self, name: str, **arrays: np.ndarray) -> None:
        if self.root is None:
            self._mem[name] = {k: np.array(v, copy=True) for k, v in arrays.items()}
        else:
            atomic_save_npz(self.root / name, **arrays)

    def _delete(self, name: str) -> None:
        if self.root is None:
            self._mem.pop(name, None)
        else:
            (self.root / name).unlink(missing_ok=True)
            fsync_dir(self.root)

    def _rename(self, src: str, dst: str) -> None:
        if self.root is None:
            if src in self._mem:
                self._mem[dst] = self._mem.pop(src)
        else:
            os.replace(self.root / src, self.root / dst)
            fsync_dir(self.root)

    def _exists(self, name: str) -> bool:
        return name in self._mem if self.root is None else os.path.lexists(self.root / name)

    def _load_json(self, name: str) -> dict[str, Any] | None:
        if self.root is None:
            got = self._mem.get(name)
            return dict(got) if got is not None else None
        path = self.root / name
        if not os.path.lexists(path):
            return None
        try:
            payload = json.loads(read_regular(path).decode("utf-8"))
        except UnsafeFileError as err:
            msg = f"write-back state file {err.strerror}; the store was not touched"
            raise WriteBackError(msg) from err
        except (OSError, ValueError) as err:
            logger.warning("unreadable write-back state file %s (%s): ignored", path, err)
            return None
        return payload if isinstance(payload, dict) else None

    def _save_json(self, name: str, payload: dict[str, Any]) -> None:
        if self.root is None:
            self._mem[name] = dict(payload)
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.root / name, payload)

    def clean_temp_files(self) -> int:
        """Remove ``.<state file>.*.tmp`` files a killed writer left; call under the lock."""
        if self.root is None or not self.root.is_dir():
            return 0
        removed = 0
        for path in self.root.glob(".*.tmp"):
            if any(path.name.startswith(f".{name}.") for name in STATE_FILES):
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            logger.info(
                "removed %d temporary file(s) a killed writer left in %s", removed, self.root
            )
        return removed

    def has_temp_files(self) -> bool:
        """Whether :meth:`clean_temp_files` has anything to remove."""
        if self.root is None or not self.root.is_dir():
            return False
        return any(
            path.name.startswith(f".{name}.")
            for path in self.root.glob(".*.tmp")
            for name in STATE_FILES
        )

    # originals ---------------------------------------------------------------
    def load_originals(self) -> tuple[list[str], np.ndarray] | None:
        data = self._load_npz(ORIGINALS, ("ids", "vectors"))
        if data is None:
            return None
        return data["ids"].astype(str).tolist(), data["vectors"].astype(np.float32, copy=False)

    def count_originals(self) -> int:
        data = self._load_npz(ORIGINALS, ("ids",))
        return 0 if data is None else int(data["ids"].shape[0])

    def save_originals(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        self._save_npz(ORIGINALS, ids=np.asarray(ids, dtype=str), vectors=vectors)

    def delete_originals(self) -> None:
        self._delete(ORIGINALS)

    # the last completed plan: what this write-back put in the store --------------
    def load_applied(self) -> tuple[list[str], np.ndarray] | None:
        data = self._load_npz(APPLIED, ("ids", "vectors"))
        if data is None:
            return None
        return data["ids"].astype(str).tolist(), data["vectors"].astype(np.float32, copy=False)

    def save_applied(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        self._save_npz(APPLIED, ids=np.asarray(ids, dtype=str), vectors=vectors)

    # pending plan ------------------------------------------------------------
    def has_pending(self) -> bool:
        return self._exists(PENDING)

    def load_pending(self) -> tuple[str, list[str], np.ndarray, int, int] | None:
        data = self._load_npz(PENDING, ("ids", "vectors", "kind", "batch_size"))
        if data is None:
            return None
        done = self.pending_progress()
        return (
            str(data["kind"]),
            data["ids"].astype(str).tolist(),
            data["vectors"].astype(np.float32, copy=False),
            int(data["batch_size"]),
            done,
        )

    def pending_summary(self) -> tuple[str, int, int] | None:
        """``(kind, n_ids, batch_size)`` of the pending plan without loading its vectors."""
        data = self._load_npz(PENDING, ("ids", "kind", "batch_size"))
        if data is None:
            return None
        return str(data["kind"]), int(data["ids"].shape[0]), int(data["batch_size"])

    def pending_meta(self) -> dict[str, Any]:
        """What ``apply`` recorded about the fit whose plan is pending (``{}`` if nothing)."""
        data = self._load_npz(PENDING, (), optional=("meta",))
        if data is None or "meta" not in data:
            return {}
        try:
            meta = json.loads(str(data["meta"]))
        except ValueError:
            return {}
        return meta if isinstance(meta, dict) else {}

    def save_pending(
        self,
        kind: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        batch_size: int,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.save_progress(0)
        self._save_npz(
            PENDING,
            ids=np.asarray(ids, dtype=str),
            vectors=vectors,
            kind=np.asarray(kind),
            batch_size=np.asarray(batch_size),
            meta=np.asarray(json.dumps(meta or {})),
        )

    def pending_progress(self) -> int:
        if self.root is None:
            return int(self._mem.get(PROGRESS, 0))
        path = self.root / PROGRESS
        if not os.path.lexists(path):
            return 0
        try:
            return int(json.loads(read_regular(path).decode("utf-8"))["batches_done"])
        except UnsafeFileError as err:
            msg = f"write-back state file {err.strerror}; the store was not touched"
            raise WriteBackError(msg) from err
        except (OSError, ValueError, KeyError, TypeError) as err:
            logger.warning("unreadable %s (%s): resuming from the first batch", path, err)
            return 0

    def save_progress(self, batches_done: int) -> None:
        if self.root is None:
            self._mem[PROGRESS] = batches_done
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.root / PROGRESS, {"batches_done": batches_done})

    def clear_pending(self) -> None:
        self._delete(PENDING)
        self._delete(PROGRESS)

    def finish_apply(self, meta: dict[str, Any]) -> None:
        """The pending plan is written: it becomes what the store holds (``applied``)."""
        meta = {**meta, "applied_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._save_json(META, meta)
        self._rename(PENDING, APPLIED)
        self._delete(PROGRESS)

    def finish_restore(self) -> None:
        """Every original is back: forget everything (originals first)."""
        self.delete_originals()
        self._delete(APPLIED)
        self._delete(META)
        self._delete(QUERY_ADAPTER)
        self.clear_pending()
        self._delete(IDENTITY)

    # identity and claims (see nudge_rag._identity) ------------------------------------
    def load_identity(self) -> dict[str, Any] | None:
        return self._load_json(IDENTITY)

    def save_identity(self, payload: dict[str, Any]) -> None:
        if self.root is not None:
            self._save_json(IDENTITY, payload)

    def load_claim(self) -> str | None:
        got = self._load_json(CLAIM)
        folder = None if got is None else got.get("state_dir")
        return folder if isinstance(folder, str) else None

    def save_claim(self, folder: str | None) -> None:
        if folder is None:
            self._delete(CLAIM)
        else:
            self._save_json(CLAIM, {"state_dir": folder})

    def holds_state(self) -> bool:
        return self._exists(ORIGINALS) or self._exists(PENDING)

    # query adapter -------------------------------------------------------------
    def load_query_adapter(self) -> dict[str, Any] | None:
        return self._load_json(QUERY_ADAPTER)

    def save_query_adapter(self, payload: dict[str, Any] | None) -> None:
        if payload is None:
            self._delete(QUERY_ADAPTER)
        else:
            self._save_json(QUERY_ADAPTER, payload)

    def query_adapter_version(self) -> Any:
        """A token that changes when the saved adapter does (cheap: a ``stat``)."""
        if self.root is None:
            return id(self._mem.get(QUERY_ADAPTER))
        try:
            st = (self.root / QUERY_ADAPTER).stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    # meta ---------------------------------------------------------------------
    def load_meta(self) -> dict[str, Any]:
        return self._load_json(META) or {}

    def save_meta(self, meta: dict[str, Any]) -> None:
        self._save_json(META, meta)
