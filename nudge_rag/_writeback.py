"""Safe write-back of tuned vectors into an :class:`~nudge_rag.EmbeddingStore`.

The procedure, written once for every store, runs under one writer lock per store
(``writer.lock`` in the state folder, held with ``flock``; an in-process lock for state kept
in memory), so two fits, restores or resumes on one store never interleave; the second waits
up to ``lock_timeout`` seconds, then gets :class:`StoreBusyError` naming the first.

1. Before the first write, the *original* vectors of every id that will change are added to
   ``originals.npz`` in the state directory (temp file, fsync, atomic rename). An id already
   there keeps its first-seen original, so originals are never overwritten with tuned vectors.
2. Each saved id's stored vector is checked against what this write-back may have put there:
   its original, its vector in the last completed plan (``applied.npz``) or in the pending
   one. A vector that is none of them was changed by someone else (the document was edited,
   or deleted and re-added): it is left as it is, its saved original is dropped, and the
   event is reported (a WARNING naming the ids, and :attr:`WriteBack.last_report`). A fit
   reads such a document's current vector as its new original.
3. The full plan (ids and target vectors) is saved as ``pending.npz``; rows that an earlier
   fit moved and this one does not are planned back to their originals, so the store always
   ends as *originals + this fit's changes* (a re-fit starts from the originals).
4. The plan is written in batches through ``store.set_vectors`` (an in-place update), and
   ``progress.json`` records each finished batch.
5. When the last batch is written the plan becomes ``applied.npz`` (what the store now
   holds) and ``meta.json`` records the fit (variant, gamma, time).

A crash at any point leaves every id holding either its original or its target vector.
``resume()`` finishes an interrupted plan; ``restore()`` writes all originals back and then
forgets them; ``discard_pending()`` drops an interrupted plan and keeps the originals;
``status()`` says which of these applies. Without a ``state_dir`` the same state is kept in
memory, owned by the store object (fine for in-memory stores, which are lost with the
process anyway).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from nudge_rag._errors import StoreBusyError, WriteBackError, WrongStateError
from nudge_rag._identity import (
    StoreIdentity,
    fingerprint,
    identity_of,
    same_folder,
)
from nudge_rag._lock import LockBusy, WriterLock, describe_holder
from nudge_rag._query_adapter import QueryAdapter
from nudge_rag._queryset import row_index
from nudge_rag._state import (
    META,
    ORIGINALS,
    PENDING,
    FolderState,
    WriteBackState,
)
from nudge_rag._store import (
    EmbeddingStore,
    IndexedEmbeddingStore,
    SharedStateEmbeddingStore,
    StatefulEmbeddingStore,
    supports,
)
from nudge_rag._validation import check_matrix, check_positive_int, check_storable_ids

logger = logging.getLogger(__name__)

__all__ = [
    "StoreBusyError",
    "WriteBack",
    "WriteBackError",
    "WriteBackStatus",
    "WriteReport",
    "WrongStateError",
]

#: A restore, resume or fit that would drop the originals of at least this many saved ids,
#: and of most of them, stops instead: the state most likely belongs to another store.
SUSPECT_MIN = 10

#: Seconds a query adapter read from a state without a cheap version check (a database) is
#: reused before it is read again (a re-fit elsewhere is seen this long after at most).
ADAPTER_RECHECK_S = 5.0

#: A stored vector within ``DRIFT_RTOL * |reference| + DRIFT_ATOL`` (euclidean) of its original
#: or of a vector this write-back wrote counts as unchanged. Loose enough for stores that
#: re-normalize or round what they store (float16 is ~3e-4 relative), tight enough that an
#: edited document's new embedding is never mistaken for its old one.
DRIFT_RTOL = 1e-3
DRIFT_ATOL = 1e-6
_N_SHOWN = 5


@dataclass(frozen=True)
class WriteReport:
    """What one :meth:`WriteBack.apply`, ``restore`` or ``resume`` did.

    Attributes:
        kind: ``"apply"``, ``"restore"`` or ``"resume"``.
        written: vectors written to the store.
        drifted_ids: saved ids whose stored vector someone else had changed since this
            write-back wrote it (the document was edited, or deleted and re-added): left as
            they are, their saved originals dropped.
        skipped_ids: ids ``apply`` was asked to write but did not, because their stored
            vector changed while the fit ran (not the vector the fit started from).
        missing_ids: saved ids that are no longer in the store (their originals dropped).
    """

    kind: str
    written: int = 0
    drifted_ids: list[str] = field(default_factory=list)
    skipped_ids: list[str] = field(default_factory=list)
    missing_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class WriteBackStatus:
    """Where the write-back of one store stands: :meth:`WriteBack.status`.

    Attributes:
        state_dir: the folder holding the state files; ``None`` when kept in memory.
        tuned: whether originals are saved, i.e. some stored vectors may be tuned
            (``restore()`` puts the originals back).
        n_originals: ids whose original vectors are saved.
        n_tuned: vectors the last completed fit set to tuned values (``None``: not recorded).
        pending: ``"apply"`` or ``"restore"`` when an interrupted plan waits, else ``None``.
        pending_ids: ids in that plan.
        batches_done: its batches already written.
        batches_total: its batches in all.
        variant: ``"n"`` / ``"m"`` of the last completed fit (``None``: not recorded).
        gamma: its step size.
        method: how its gamma was chosen (``"cv"``, ``"val"``, ``"split"``, ``"fixed"``).
        applied_at: when it completed, ISO 8601 UTC.
        locked_by: who holds the writer lock now, e.g. ``"pid 12 on host x (MainThread,
            fit, since 2026-01-01T00:00:00+00:00)"``; ``None`` when free.
        query_adapter: the query adapter saved with the tuned vectors (``lambda``,
            ``blend``, ``val_score``, ``base_score``, ``chosen_by``, ``dim``); ``None``: none.
    """

    state_dir: Path | None
    tuned: bool
    n_originals: int
    n_tuned: int | None
    pending: str | None
    pending_ids: int
    batches_done: int
    batches_total: int
    variant: str | None
    gamma: float | None
    method: str | None
    applied_at: str | None
    locked_by: str | None
    query_adapter: dict[str, Any] | None = None

    @property
    def next_step(self) -> str:
        """What to do in this state, in one sentence."""
        if self.locked_by is not None:
            return f"another writer is working on this store ({self.locked_by}): wait for it"
        if self.pending is not None:
            return (
                f"an interrupted {self.pending} waits ({self.batches_done} of "
                f"{self.batches_total} batches written): resume() finishes it, restore() puts "
                "every original back, discard_pending() drops the plan and keeps the originals"
            )
        if self.tuned:
            adapter = (
                " (and a query adapter, which restore() removes)" if self.query_adapter else ""
            )
            return (
                f"{self.n_originals} stored vector(s) have saved originals{adapter}: restore() "
                "puts them back; a new fit starts from them"
            )
        return "the store holds its original vectors: nothing to do"


def _adapter_payload(adapter: QueryAdapter) -> dict[str, Any]:
    """A fitted adapter as a JSON-able record (the matrix as base64 float32 bytes)."""
    matrix = np.ascontiguousarray(adapter.matrix_, dtype="<f4")
    record: dict[str, Any] = {"dim": int(matrix.shape[0])}
    for name in ("lambda_", "blend_", "val_score_", "base_score_", "chosen_by_"):
        value = getattr(adapter, name, None)
        record[name.rstrip("_")] = value if isinstance(value, (str, type(None))) else float(value)
    record["saved_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record["matrix"] = base64.b64encode(matrix.tobytes()).decode("ascii")
    return record


def _adapter_summary(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """The record without its matrix (for ``status``)."""
    if payload is None:
        return None
    return {k: v for k, v in payload.items() if k != "matrix"}


def _adapter_from_payload(payload: dict[str, Any] | None, where: Any) -> QueryAdapter | None:
    if payload is None:
        return None
    try:
        dim = int(payload["dim"])
        matrix = np.frombuffer(base64.b64decode(payload["matrix"]), dtype="<f4")
        matrix = matrix.reshape(dim, dim).astype(np.float32)
        info = {
            f"{name}_": payload.get(name)
            for name in ("lambda", "blend", "val_score", "base_score", "chosen_by")
        }
        return QueryAdapter.from_matrix(matrix, **info)
    except (KeyError, ValueError, TypeError) as err:
        msg = (
            f"cannot read the saved query adapter ({where or 'state in the store'}): "
            f"{type(err).__name__}: {err}. Fit again, or restore() to remove it."
        )
        raise WriteBackError(msg) from err


def _close(current: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per row: whether ``current`` is ``reference`` up to the drift tolerance."""
    if current.shape != reference.shape:
        return np.zeros(current.shape[0], dtype=bool)
    diff = np.linalg.norm(current - reference, axis=1)
    return diff <= DRIFT_RTOL * np.linalg.norm(reference, axis=1) + DRIFT_ATOL


def _shown(ids: Sequence[str]) -> str:
    more = f" and {len(ids) - _N_SHOWN} more" if len(ids) > _N_SHOWN else ""
    return f"{list(ids[:_N_SHOWN])!r}{more}"


_UNSET: Any = object()


def _store_state(store: Any) -> WriteBackState:
    """The state ``store`` keeps itself (``store.writeback_state()``), checked."""
    state = store.writeback_state()
    if not isinstance(state, WriteBackState):
        msg = (
            f"{type(store).__name__}.writeback_state() must return a "
            f"nudge_rag.WriteBackState, got {type(state).__name__}"
        )
        raise TypeError(msg)
    return state


class WriteBack:
    """Writes tuned vectors into a store without ever losing the originals.

    Every call that writes (``apply``, ``restore``, ``resume``, ``discard_pending``) and
    ``read_corpus`` holds the store's writer lock, so one writer works on a store at a time,
    across threads and processes (through a lock file in ``state_dir``); a second one waits up
    to ``lock_timeout`` seconds, then gets :class:`StoreBusyError` naming the first.

    Args:
        store: any :class:`~nudge_rag.EmbeddingStore`.
        state_dir: folder for ``originals.npz``, the plans, ``progress.json``, ``meta.json``
            and ``writer.lock`` (created on first write). ``None`` keeps that state in
            memory, shared by every ``WriteBack`` over the same store (``store.state_owner``
            where the backend has one: the store object, or ``(client, collection name)``
            for a collection several wrappers reach through one client): fine for
            in-memory stores, which are lost with the process anyway. Every writer of one
            store must use the same ``state_dir``.
        batch_size: ids written per ``set_vectors`` call.
        show_progress: show a tqdm bar while writing.
        lock_timeout: seconds to wait for another writer of the same store; ``0`` (default)
            fails at once with :class:`StoreBusyError`, ``None`` waits as long as it takes.

    Attributes:
        last_report: the :class:`WriteReport` of the last ``apply``/``restore``/``resume``.

    Example:
        >>> wb = WriteBack(store, state_dir="index_dir/nudge")   # doctest: +SKIP
        >>> ids, corpus = wb.read_corpus()        # originals, even after an earlier fit
        >>> wb.apply(changed_ids, changed_vectors)
        >>> wb.status().next_step
        >>> wb.restore()                          # every original back
    """

    def __init__(
        self,
        store: EmbeddingStore,
        state_dir: str | os.PathLike | None = None,
        *,
        batch_size: int = 512,
        show_progress: bool = False,
        lock_timeout: float | None = 0.0,
    ):
        if not isinstance(store, EmbeddingStore):
            from nudge_rag.backends import backend_for

            store = backend_for(store)  # a framework store, or defaults for missing members
        self.store = store
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.show_progress = show_progress
        self.lock_timeout = _check_timeout(lock_timeout)
        owner = store.state_owner if supports(store, SharedStateEmbeddingStore) else store
        own_state = store.writeback_state if supports(store, StatefulEmbeddingStore) else None
        if self.state_dir is None and own_state is not None:
            # The store keeps the state itself (pgvector: side tables in its database).
            self._state: WriteBackState = _store_state(store)
        else:
            self._state = FolderState(self.state_dir, owner)
        self._lock: WriterLock = self._state.lock
        self._home, self._home_where = self._find_home(owner, own_state)
        self.last_report: WriteReport | None = None
        self._adapter_cache: tuple[Any, float, QueryAdapter | None] | None = None
        if self._state.has_temp_files():  # left by a killed writer: remove unless one is busy
            # (never wait here: a writer at work may be writing them right now)
            with contextlib.suppress(StoreBusyError), self.locked("clean up", timeout=0):
                pass

    # ------------------------------------------------------------------ the lock
    @contextlib.contextmanager
    def locked(self, what: str = "write", *, timeout: float | None = _UNSET) -> Iterator[None]:
        """Hold this store's writer lock for a ``with`` block (re-entrant in one thread).

        ``tune_store`` holds it from reading the corpus to the last write, so a fit's read,
        solve and write are one step that no other writer can come between.

        Args:
            what: what the block does, recorded for other writers' messages.
            timeout: seconds to wait; default :attr:`lock_timeout`.

        Raises:
            StoreBusyError: another thread or process holds it.
        """
        timeout = self.lock_timeout if timeout is _UNSET else _check_timeout(timeout)
        try:
            self._lock.acquire(what, timeout)
        except LockBusy as err:
            raise StoreBusyError(str(err), err.holder) from None
        try:
            if self._lock.depth == 1:
                self._state.clean_temp_files()
            yield
        finally:
            self._lock.release()

    # ------------------------------------------------------------------ which store, which place
    def _find_home(self, owner: object, own_state: Any) -> tuple[Any, str | None]:
        """The store's home state when this write-back keeps its state elsewhere, else ``None``.

        The home is the store's own state (pgvector's tables), its default state folder, or
        the memory of the store object; it records where the originals went when they are
        kept elsewhere (see :mod:`nudge_rag._identity`).
        """
        if not isinstance(self._state, FolderState):
            return None, None
        if callable(own_state):
            if self.state_dir is None:
                return None, None
            return _store_state(self.store), f"the store's own state ({self.store.name})"
        try:
            default = self.store.default_state_dir()
        except Exception as err:  # noqa: BLE001 - a backend that cannot tell
            logger.debug("default_state_dir() of %s failed: %s", self.store.name, err)
            default = None
        if default is not None:
            if self.state_dir is None or same_folder(default, self.state_dir):
                return None, None  # memory on purpose (a dry run), or the default itself
            return FolderState(default, owner), str(default)
        if self.state_dir is None:
            return None, None
        return FolderState(None, owner), "memory"

    def identity(self, dim: int | None = None) -> StoreIdentity:
        """What this store is, as a state folder records it (see :class:`StoreIdentity`)."""
        return identity_of(self.store, dim)

    def _here(self) -> str:
        if self.state_dir is not None:
            return str(self.state_dir)
        if not isinstance(self._state, FolderState):
            return f"the store's own state ({self.store.name})"
        return "memory"

    def check_state(self) -> None:
        """Refuse when this store's originals are kept elsewhere, or this state is another's.

        Every call that reads or writes the state runs this check first; call it to fail
        before expensive work (embedding questions).

        Raises:
            WrongStateError: naming both places (or both stores); nothing was done.
        """
        self._check_place()

    def _check_place(self) -> None:
        """Refuse when this store's originals are kept elsewhere, or this state is another's.

        Raises:
            WrongStateError: naming both places (or both stores); nothing was done.
        """
        here = self._here()
        me = self.identity()
        claimed = self._claimed_elsewhere()
        if claimed is not None:
            msg = (
                f"the original vectors of {me.describe()} are kept in {claimed}, not in {here}: "
                f"pass state_dir={claimed!r} (command line: --state-dir {claimed}). Nothing was "
                "done; using another folder would read tuned vectors as originals."
            )
            raise WrongStateError(msg)
        if self._home is not None and self._home.holds_state():
            where = self._home_where
            hint = (
                "leave state_dir out (command line: no --state-dir)"
                if where != "memory"
                else "use the state folder you tuned it with"
            )
            msg = (
                f"the original vectors of {me.describe()} are kept in {where}, not in {here}: "
                f"{hint}. Nothing was done; using another folder would read tuned vectors as "
                "originals."
            )
            raise WrongStateError(msg)
        recorded = self._state.load_identity()
        if not recorded:
            return
        theirs = StoreIdentity.from_dict(recorded)
        differs = theirs.conflicts(me)
        moved = theirs.moved(me)
        if differs or (moved and not self._fingerprint_matches(recorded)):
            what = ", ".join(differs or moved)
            msg = (
                f"the state in {here} belongs to {theirs.describe()}, not to {me.describe()} "
                f"({what} differ): open the store it was written for, or give this store its "
                "own state folder. Nothing was written or dropped."
            )
            raise WrongStateError(msg)
        if moved:
            logger.info(
                "the state in %s was written for %s; %s holds its saved ids with the vectors it "
                "wrote: state updated",
                here,
                theirs.describe(),
                me.describe(),
            )
            self._state.save_identity(
                {**recorded, "kind": me.kind, "location": me.location, "collection": me.collection}
            )

    def _claimed_elsewhere(self) -> str | None:
        """A folder that the home says holds this store's originals, if not this one."""
        home = self._home if self._home is not None else self._state
        claim = home.load_claim()
        if claim is None or same_folder(claim, self.state_dir):
            return None
        folder = Path(claim)
        if os.path.lexists(folder / ORIGINALS) or os.path.lexists(folder / PENDING):
            return claim
        return None  # stale: that folder was restored or removed

    def _fingerprint_matches(self, recorded: dict[str, Any]) -> bool:
        """Whether the store holds the recorded sample ids with vectors this state knows."""
        sample = recorded.get("fingerprint")
        if not isinstance(sample, dict) or not sample:
            return False
        ids = [str(i) for i in sample]
        current, present = self._read_present(ids)
        if not present.all():
            return False
        loaded = self._state.load_originals()
        orig_ids, orig_vecs = loaded if loaded is not None else ([], None)
        return bool(self._ours(ids, current, self._references(orig_ids, orig_vecs)).all())

    def _save_originals(self, ids: list[str], vectors: np.ndarray) -> None:
        """Save the originals, with the identity (folder) and the home's claim."""
        if self._home is not None and ids:
            self._home.save_claim(str(Path(self.state_dir).resolve()) if self.state_dir else None)
        self._state.save_originals(ids, vectors)
        if ids:
            dim = int(vectors.shape[1]) if vectors.ndim == 2 else None
            self._state.save_identity(
                {**self.identity(dim).as_dict(), "fingerprint": fingerprint(ids, vectors)}
            )

    def _release_claim(self) -> None:
        """After a completed restore: the home no longer points here."""
        if self._home is None or self.state_dir is None:
            return
        claim = self._home.load_claim()
        if claim is not None and same_folder(claim, self.state_dir):
            self._home.save_claim(None)

    def _refuse_suspect(
        self,
        n_saved: int,
        missing: list[str],
        drifted: list[str],
        saved_dim: int | None,
        store_dim: int | None,
    ) -> None:
        """Stop before dropping originals wholesale: the state is most likely another store's.

        Raises:
            WrongStateError: the saved originals have another dimension than the store's
                vectors, or most saved ids (at least :data:`SUSPECT_MIN`) are missing or hold
                vectors this write-back never wrote.
        """
        here = self._here()
        recorded = self._state.load_identity()
        owner = (
            StoreIdentity.from_dict(recorded).describe()
            if recorded
            else "another store (this state does not record which)"
        )
        fix = (
            "Nothing was written or dropped. Open the store this state belongs to; if this "
            f"collection was re-created or re-embedded on purpose, its old originals can never "
            f"go back: move {here} aside and start again."
        )
        if saved_dim and store_dim and saved_dim != store_dim:
            msg = (
                f"the originals saved in {here} are {saved_dim}-dimensional, but "
                f"{self.identity().describe()} holds {store_dim}-dimensional vectors: this "
                f"state belongs to {owner}. {fix}"
            )
            raise WrongStateError(msg)
        bad = len(missing) + len(drifted)
        if bad >= SUSPECT_MIN and 2 * bad > n_saved:
            msg = (
                f"{len(missing)} of the {n_saved} ids saved in {here} are not in "
                f"{self.identity().describe()} and {len(drifted)} hold vectors this state never "
                f"wrote: this state belongs to {owner}. {fix}"
            )
            raise WrongStateError(msg)

    # ------------------------------------------------------------------ reading
    @property
    def has_pending(self) -> bool:
        """Whether an interrupted write-back or restore waits for ``resume()``."""
        return self._state.has_pending()

    def moved_ids(self) -> list[str]:
        """Ids whose originals are saved (the rows an earlier fit may have moved)."""
        loaded = self._state.load_originals()
        return [] if loaded is None else loaded[0]

    def originals(self) -> tuple[list[str], np.ndarray]:
        """The saved original vectors: ``(ids, (n, dim) float32)``; empty if nothing moved."""
        loaded = self._state.load_originals()
        if loaded is None:
            return [], np.zeros((0, 0), dtype=np.float32)
        return loaded

    def status(self) -> WriteBackStatus:
        """Where this store's write-back stands, and what to do next (``.next_step``).

        Reads the state only: it takes no lock, so it never gets in a writer's way (while one
        works, the counts may be a moment old).

        Raises:
            WrongStateError: the originals of this store are kept elsewhere, or this state
                belongs to another store (the message names both).
        """
        self._check_place()
        try:
            summary = self._state.pending_summary()
        except WriteBackError:  # unreadable plan: resume() names the file
            summary = ("unreadable", 0, 1)
        done = self._state.pending_progress() if summary is not None else 0
        meta = self._state.load_meta()
        holder = self._lock.holder_now()
        n_originals = self._state.count_originals()
        where = self.state_dir / META if self.state_dir is not None else "the saved meta"
        gamma = _meta_number(meta, "gamma", float, where)
        n_tuned = _meta_number(meta, "n_tuned", int, where)
        return WriteBackStatus(
            state_dir=self.state_dir,
            tuned=n_originals > 0,
            n_originals=n_originals,
            n_tuned=n_tuned,
            pending=None if summary is None else summary[0],
            pending_ids=0 if summary is None else summary[1],
            batches_done=done,
            batches_total=0 if summary is None else -(-summary[1] // max(summary[2], 1)),
            variant=meta.get("variant"),
            gamma=gamma,
            method=meta.get("method"),
            applied_at=meta.get("applied_at"),
            locked_by=None if holder is None else describe_holder(holder),
            query_adapter=_adapter_summary(self._state.load_query_adapter()),
        )

    def query_adapter(self) -> QueryAdapter | None:
        """The query adapter saved with the tuned vectors, or ``None`` (none, or restored).

        Read once and reused while the saved one is unchanged (a ``stat`` per call for a
        state folder; a state kept in a database is read again after
        :data:`ADAPTER_RECHECK_S` seconds), so a fit or restore by another process is seen
        by this object. Cheap enough to call for every query.

        Raises:
            WriteBackError: the saved adapter is unreadable.
        """
        version = self._state.query_adapter_version()
        now = time.monotonic()
        cached = self._adapter_cache
        if cached is not None and cached[0] == version:
            if version is not None or now - cached[1] < ADAPTER_RECHECK_S:
                return cached[2]
        adapter = _adapter_from_payload(self._state.load_query_adapter(), self.state_dir)
        self._adapter_cache = (version, now, adapter)
        return adapter

    def read_corpus(self, ids: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
        """Read the store's vectors with saved originals in place of tuned ones.

        A document someone else changed since this write-back wrote it reads as its current
        vector (it is the new original; the next ``apply`` drops the stale record).

        Args:
            ids: which ids to read (default: ``store.list_ids()``).

        Returns:
            ``(ids, (n, dim) float32)``: the vectors a fresh fit must start from.
        """
        with self.locked("read"):
            self._check_place()
            ids = list(self.store.list_ids()) if ids is None else list(ids)
            if not ids:
                return ids, np.zeros((0, 0), dtype=np.float32)
            corpus = self._read(ids)
            loaded = self._state.load_originals()
            if loaded is None:
                return ids, corpus
            orig_ids, orig_vecs = loaded
            rows = row_index(ids)
            pairs = [(rows[i], k) for k, i in enumerate(orig_ids) if i in rows]
            if not pairs:
                return ids, corpus
            dst, src = (np.asarray(a, dtype=np.int64) for a in zip(*pairs))
            refs = self._references(orig_ids, orig_vecs)
            ours = self._ours([ids[d] for d in dst], corpus[dst], refs)
            corpus[dst[ours]] = orig_vecs[src[ours]]
            if not ours.all():
                changed = [ids[d] for d in dst[~ours]]
                logger.info(
                    "%d document(s) were changed by someone else since they were tuned; their "
                    "current vectors are read as originals: %s",
                    len(changed),
                    _shown(changed),
                )
            return ids, corpus

    # ------------------------------------------------------------------ writing
    def apply(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        *,
        base: np.ndarray | None = None,
        info: Mapping[str, Any] | None = None,
        query_adapter: QueryAdapter | None = None,
    ) -> WriteReport:
        """Make the store hold ``vectors`` for ``ids`` and originals for every other saved id.

        Args:
            ids: the ids to write.
            vectors: ``(len(ids), dim)`` float array of their new vectors.
            base: optional ``(len(ids), dim)`` float array: the vectors the new ones were
                computed from (what :meth:`read_corpus` gave). An id whose stored vector
                (or saved original) is no longer its ``base`` changed while the fit ran: it
                is left as it is and reported in ``skipped_ids``.
            info: what to record in ``meta.json`` about this fit (``variant``, ``gamma``...).
            query_adapter: a fitted :class:`~nudge_rag.QueryAdapter` to save with these
                vectors (:meth:`query_adapter` gives it to every reader of the store). Any
                adapter saved before is removed before the first write (it was fitted for
                other vectors) and the new one saved once the plan is complete, so an
                interrupted write-back that is resumed leaves no adapter.

        Returns:
            A :class:`WriteReport` (also :attr:`last_report`).

        Raises:
            StoreBusyError: another writer holds the store.
            WriteBackError: a plan from an interrupted call is pending, or a batch failed.
            KeyError: an id that is not in the store (nothing written).
            ValueError: shapes or values that cannot be written.
        """
        ids = [str(i) for i in ids]
        check_storable_ids(ids, "ids")
        vectors = check_matrix(vectors, "vectors", allow_empty=True)
        if len(ids) != vectors.shape[0]:
            msg = (
                "ids must be the same length as vectors. "
                f"Got {len(ids)} ids and {vectors.shape[0]} vectors."
            )
            raise ValueError(msg)
        if len(set(ids)) != len(ids):
            msg = "ids passed to apply() must be unique"
            raise ValueError(msg)
        if base is not None:
            base = np.asarray(base, dtype=np.float32)
            if base.shape != vectors.shape:
                msg = f"base must have the shape of vectors {vectors.shape}, got {base.shape}"
                raise ValueError(msg)
        payload = None if query_adapter is None else _adapter_payload(query_adapter)
        if payload is not None and ids and payload["dim"] != vectors.shape[1]:
            msg = (
                f"query_adapter is {payload['dim']}-dimensional, but the vectors are "
                f"{vectors.shape[1]}-dimensional"
            )
            raise ValueError(msg)
        with self.locked("apply"):
            report = self._apply(ids, vectors, base, dict(info or {}), payload)
        self.last_report = report
        return report

    def _apply(
        self,
        ids: list[str],
        vectors: np.ndarray,
        base: np.ndarray | None,
        info: dict[str, Any],
        adapter: dict[str, Any] | None = None,
    ) -> WriteReport:
        self._refuse_if_pending()
        self._check_place()
        # Reading raises KeyError for unknown ids before anything is written.
        current = self._read(ids)
        if ids and current.shape[1] != vectors.shape[1]:
            msg = (
                f"vectors have {vectors.shape[1]} dimensions, but the store holds "
                f"{current.shape[1]}-dimensional vectors"
            )
            raise ValueError(msg)
        loaded = self._state.load_originals()
        orig_ids, orig_vecs = loaded if loaded is not None else ([], None)
        target = row_index(ids)
        # Which saved records still describe what the store holds.
        rest = [k for k, i in enumerate(orig_ids) if i not in target]
        rest_ids = [orig_ids[k] for k in rest]
        rest_cur, present = self._read_present(rest_ids)
        keep = np.ones(len(orig_ids), dtype=bool)
        missing = [i for i, p in zip(rest_ids, present) if not p]
        if orig_vecs is not None:
            refs = self._references(orig_ids, orig_vecs)
            rest_idx = np.asarray(rest, dtype=np.int64)
            keep[rest_idx[~present]] = False
            ours_rest = self._ours(rest_ids, rest_cur, refs)
            keep[rest_idx[present & ~ours_rest]] = False
            in_target = np.asarray(
                [k for k, i in enumerate(orig_ids) if i in target], dtype=np.int64
            )
            t_rows = np.asarray([target[orig_ids[k]] for k in in_target], dtype=np.int64)
            ours_t = self._ours([ids[r] for r in t_rows], current[t_rows], refs)
            keep[in_target[~ours_t]] = False
        gone = set(missing)
        drifted = [i for i, k in zip(orig_ids, keep) if not k and i not in gone]
        if orig_vecs is not None:
            store_dim = current.shape[1] if ids else (rest_cur.shape[1] or None)
            self._refuse_suspect(
                len(orig_ids), missing, drifted, int(orig_vecs.shape[1]), store_dim
            )
        # The vector each id's tuned vector must have been computed from.
        kept = {orig_ids[k]: k for k in range(len(orig_ids)) if keep[k]}
        expected = current.copy()
        known_rows = [(r, kept[i]) for r, i in enumerate(ids) if i in kept]
        if known_rows:
            r_idx, k_idx = (np.asarray(a, dtype=np.int64) for a in zip(*known_rows))
            expected[r_idx] = orig_vecs[k_idx]
        write = np.ones(len(ids), dtype=bool)
        if base is not None and ids:
            write = _close(base, expected)
        skipped = [i for i, w in zip(ids, write) if not w]
        # New originals: kept records, plus the current vector of every id written anew.
        fresh = [r for r, i in enumerate(ids) if write[r] and i not in kept]
        new_ids = [orig_ids[k] for k in range(len(orig_ids)) if keep[k]]
        parts = [] if orig_vecs is None else [orig_vecs[keep]]
        # A state that writes batches itself saves their rows' new originals in each batch's
        # transaction (copied from the rows); here it only drops the records that no longer hold.
        upfront = fresh if self._state.write_batch is None else []
        if upfront or not keep.all():
            if upfront:
                new_ids += [ids[r] for r in upfront]
                parts.append(current[np.asarray(upfront, dtype=np.int64)])
            self._save_originals(new_ids, np.concatenate(parts))
            logger.info("saved originals of %d new id(s) (%d in all)", len(upfront), len(new_ids))
        self._report_dropped(drifted, missing)
        # Rows moved earlier but not now (or skipped now) go back to their originals.
        w_idx = np.flatnonzero(write)
        back = [kept[i] for i in kept if i not in target or not write[target[i]]]
        plan_ids = [ids[r] for r in w_idx] + [orig_ids[k] for k in back]
        blocks = [vectors[w_idx]] if w_idx.size else []
        if back:
            blocks.append(orig_vecs[np.asarray(back, dtype=np.int64)])
        plan_vecs = np.concatenate(blocks) if blocks else vectors[:0]
        meta = {
            **{k: v for k, v in info.items() if isinstance(v, (str, int, float, bool))},
            "n_tuned": int(w_idx.size),
        }
        if self._state.load_query_adapter() is not None:  # fitted for the vectors replaced now
            self._state.save_query_adapter(None)
        self._state.save_pending("apply", plan_ids, plan_vecs, self.batch_size, meta)
        self._run_plan("apply", plan_ids, plan_vecs, self.batch_size, start=0)
        if adapter is not None:
            self._state.save_query_adapter(adapter)
            logger.info("saved the query adapter with the tuned vectors")
        if skipped:
            logger.warning(
                "%d document(s) changed while the fit ran (not the vector it started from): "
                "left as they are, not tuned: %s",
                len(skipped),
                _shown(skipped),
            )
        return WriteReport("apply", len(plan_ids), drifted, skipped, missing)

    def resume(self) -> bool:
        """Finish an interrupted ``apply()`` or ``restore()``.

        Rows someone else changed since the plan was saved are left as they are (reported
        in :attr:`last_report`), so a plan whose store was recreated (another dimension,
        other ids) finishes instead of failing again.

        Returns:
            ``True`` if a pending plan was completed, ``False`` if there was none.

        Raises:
            StoreBusyError: another writer holds the store.
            WriteBackError: a batch failed again (the plan stays pending).
        """
        with self.locked("resume"):
            self._check_place()
            pending = self._state.load_pending()
            if pending is None:
                return False
            kind, ids, vectors, batch_size, done = pending
            logger.info("resuming %s: %d id(s), from batch %d", kind, len(ids), done)
            start = min(done * batch_size, len(ids))
            todo = ids[start:]
            current, present = self._read_present(todo)
            loaded = self._state.load_originals()
            orig_ids, orig_vecs = loaded if loaded is not None else ([], None)
            ours = self._ours(todo, current, self._references(orig_ids, orig_vecs))
            if kind == "apply" and self._state.write_batch is not None:
                # A row with no saved original is in a batch that never committed: it still
                # holds its original, which its batch's transaction will save.
                saved = set(orig_ids)
                ours |= np.fromiter((i not in saved for i in todo), dtype=bool, count=len(todo))
            skip = np.zeros(len(ids), dtype=bool)
            skip[start:] = ~(present & ours)
            missing = [i for i, p in zip(todo, present) if not p]
            drifted = [i for i, p, o in zip(todo, present, ours) if p and not o]
            self._refuse_suspect(
                len(todo),
                missing,
                drifted,
                int(vectors.shape[1]) if vectors.ndim == 2 and len(ids) else None,
                int(current.shape[1]) if present.any() else None,
            )
            if (missing or drifted) and kind == "apply" and orig_vecs is not None:
                gone = set(missing) | set(drifted)
                keep = np.asarray([i not in gone for i in orig_ids], dtype=bool)
                self._save_originals([i for i in orig_ids if i not in gone], orig_vecs[keep])
            self._report_dropped(drifted, missing, restoring=kind == "restore")
            self._run_plan(kind, ids, vectors, batch_size, start=done, skip=skip)
            self.last_report = WriteReport(
                "resume", int(len(ids) - start - skip.sum()), drifted, [], missing
            )
            return True

    def restore(self) -> int:
        """Write every saved original back into the store, then forget the originals.

        A pending plan is superseded. Ids that are no longer in the store, and documents
        someone else changed since this write-back wrote them, are left as they are (a
        WARNING names them; :attr:`last_report` lists them).

        Returns:
            How many vectors were restored.

        Raises:
            StoreBusyError: another writer holds the store.
            WriteBackError: a batch failed (call ``restore()`` or ``resume()`` again).
        """
        with self.locked("restore"):
            self._check_place()
            loaded = self._state.load_originals()
            if loaded is None:
                if self._state.has_pending():
                    self._state.clear_pending()
                self._state.finish_restore()
                logger.info("nothing to restore: no originals saved")
                self.last_report = WriteReport("restore")
                return 0
            ids, vectors = loaded
            current, present = self._read_present(ids)
            ours = self._ours(ids, current, self._references(ids, vectors))
            keep = present & ours
            missing = [i for i, p in zip(ids, present) if not p]
            drifted = [i for i, p, o in zip(ids, present, ours) if p and not o]
            self._refuse_suspect(
                len(ids),
                missing,
                drifted,
                int(vectors.shape[1]),
                int(current.shape[1]) if present.any() else None,
            )
            self._report_dropped(drifted, missing, restoring=True)
            self._absorb_pending()
            ids = [i for i, k in zip(ids, keep) if k]
            vectors = vectors[keep]
            self._state.save_pending("restore", ids, vectors, self.batch_size)
            self._run_plan("restore", ids, vectors, self.batch_size, start=0)
            self._release_claim()
            self.last_report = WriteReport("restore", len(ids), drifted, [], missing)
            return len(ids)

    def discard_pending(self) -> bool:
        """Drop an interrupted plan without writing anything; the originals stay saved.

        For a plan that cannot finish (``resume()`` keeps failing, e.g. the store refuses the
        writes). Every id keeps holding its original or the plan's vector, and those vectors
        are remembered as written, so a later ``restore()`` still puts every original back,
        and a fit starts from them.

        Returns:
            ``True`` if a plan was dropped, ``False`` if none was pending.

        Raises:
            StoreBusyError: another writer holds the store.
        """
        with self.locked("discard_pending"):
            self._check_place()
            if not self._state.has_pending():
                return False
            try:
                summary = self._state.pending_summary() or ("plan", 0, 1)
            except WriteBackError:  # unreadable: _absorb_pending says so
                summary = ("plan", 0, 1)
            self._absorb_pending()
            self._state.clear_pending()
            where = self.state_dir if self.state_dir is not None else "memory"
            logger.warning(
                "discarded the pending %s of %d id(s); the originals stay in %s. Some stored "
                "vectors may still be tuned: restore() puts every original back",
                summary[0],
                summary[1],
                where,
            )
            return True

    # ------------------------------------------------------------------ internals
    def _read(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors of ``ids`` in batches (``KeyError`` for an unknown id)."""
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        blocks = [
            np.asarray(self.store.get_vectors(ids[s : s + self.batch_size]), dtype=np.float32)
            for s in range(0, len(ids), self.batch_size)
        ]
        return np.concatenate(blocks, axis=0)

    def _read_present(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Stored vectors of ``ids`` and whether each is in the store (absent rows are 0)."""
        present = np.ones(len(ids), dtype=bool)
        if not ids:
            return np.zeros((0, 0), dtype=np.float32), present
        blocks: list[np.ndarray] = []
        listed: set[str] | None = None
        for s in range(0, len(ids), self.batch_size):
            batch = list(ids[s : s + self.batch_size])
            try:
                blocks.append(np.asarray(self.store.get_vectors(batch), dtype=np.float32))
                continue
            except KeyError as err:
                unknown = getattr(err, "ids", None)
                if not unknown:
                    listed = set(self.store.list_ids()) if listed is None else listed
                    unknown = [i for i in batch if i not in listed]
            gone = set(unknown)
            here = [i for i in batch if i not in gone]
            mask = np.asarray([i not in gone for i in batch], dtype=bool)
            present[s : s + len(batch)] = mask
            got = np.asarray(self.store.get_vectors(here), dtype=np.float32) if here else None
            blocks.append(_scatter(got, mask))
        dim = max((b.shape[1] for b in blocks if b.ndim == 2), default=0)
        blocks = [
            b if b.shape[1] == dim else np.zeros((b.shape[0], dim), np.float32) for b in blocks
        ]
        return np.concatenate(blocks, axis=0), present

    def _references(
        self, orig_ids: Sequence[str], orig_vecs: np.ndarray | None
    ) -> list[tuple[Sequence[str], np.ndarray]] | None:
        """Every vector this write-back may have left in the store, or ``None`` if unknown."""
        if not self._state.verifies:
            return None
        refs: list[tuple[Sequence[str], np.ndarray]] = []
        if orig_vecs is not None:
            refs.append((orig_ids, orig_vecs))
        applied = self._state.load_applied()
        try:
            pending = self._state.load_pending() if self._state.has_pending() else None
        except WriteBackError:
            return None  # an unreadable plan: its vectors are unknown
        if applied is None and pending is None and orig_vecs is not None:
            self._log_unverified()
            return None  # state written before plans were kept: cannot tell
        if self._state.load_meta().get("unverified"):
            self._log_unverified()
            return None
        if applied is not None:
            refs.append(applied)
        if pending is not None:
            refs.append((pending[1], pending[2]))
        return refs

    def _log_unverified(self) -> None:
        logger.info(
            "%s does not record every vector it wrote (written by an "
            "older nudge-rag, or a dropped plan): documents changed by someone else cannot be "
            "told apart until the next completed fit or restore",
            self._lock.name,
        )

    @staticmethod
    def _ours(
        ids: Sequence[str],
        current: np.ndarray,
        refs: list[tuple[Sequence[str], np.ndarray]] | None,
    ) -> np.ndarray:
        """Per id: whether its stored vector ``current`` is one of ``refs`` (all: ``None``)."""
        if refs is None:
            return np.ones(len(ids), dtype=bool)
        if not ids:
            return np.zeros(0, dtype=bool)
        ours = np.zeros(len(ids), dtype=bool)
        pos = row_index(ids)
        for ref_ids, ref_vecs in refs:
            idx = np.fromiter((pos.get(i, -1) for i in ref_ids), dtype=np.int64, count=len(ref_ids))
            hit = np.flatnonzero(idx >= 0)
            if hit.size == 0 or ref_vecs.shape[1] != current.shape[1]:
                continue
            close = _close(current[idx[hit]], ref_vecs[hit])
            ours[idx[hit[close]]] = True
        return ours

    def _absorb_pending(self) -> None:
        """Remember a pending plan's vectors as written (before it is superseded or dropped)."""
        try:
            pending = self._state.load_pending()
        except WriteBackError as err:
            logger.warning(
                "%s. Dropping it; until the next completed fit or restore, documents changed "
                "by someone else cannot be told apart from tuned ones",
                err,
            )
            self._state.save_meta({**self._state.load_meta(), "unverified": True})
            return
        if pending is None:
            return
        applied = self._state.load_applied()
        ids, vectors = pending[1], pending[2]
        if applied is not None and applied[1].shape[1:] == vectors.shape[1:]:
            ids = list(applied[0]) + list(ids)
            vectors = np.concatenate([applied[1], vectors])
        self._state.save_applied(ids, vectors)

    def _report_dropped(
        self, drifted: list[str], missing: list[str], *, restoring: bool = False
    ) -> None:
        if missing:
            logger.warning(
                "%d saved id(s) are no longer in the store; their originals are dropped: %s",
                len(missing),
                _shown(missing),
            )
        if drifted:
            logger.warning(
                "%d document(s) were changed by someone else since nudge-rag wrote them "
                "(edited, deleted and re-added, or the collection was recreated): %s; their "
                "stale saved originals are dropped: %s",
                len(drifted),
                "not restored, left as they are"
                if restoring
                else "their current vectors count as their originals now",
                _shown(drifted),
            )

    def _refuse_if_pending(self) -> None:
        if self._state.has_pending():
            where = f" (state in {self.state_dir})" if self.state_dir else ""
            msg = (
                "an interrupted write-back is pending" + where + ": call resume() to finish it, "
                "restore() to undo it, or discard_pending() to drop it, before writing again"
            )
            raise WriteBackError(msg)

    def _run_plan(
        self,
        kind: str,
        ids: list[str],
        vectors: np.ndarray,
        batch_size: int,
        start: int,
        *,
        skip: np.ndarray | None = None,
    ) -> None:
        n_batches = -(-len(ids) // batch_size)
        bar = None
        if self.show_progress and n_batches > start:
            try:
                from tqdm.auto import tqdm

                bar = tqdm(total=n_batches, initial=start, desc=f"nudge {kind}", unit="batch")
            except ImportError:  # pragma: no cover - tqdm is optional
                bar = None
        written = 0
        write_batch = self._state.write_batch  # the batch, its originals and progress at once
        try:
            for b in range(start, n_batches):
                sl = slice(b * batch_size, (b + 1) * batch_size)
                batch_ids, batch_vecs = ids[sl], vectors[sl]
                if skip is not None and skip[sl].any():
                    take = np.flatnonzero(~skip[sl])
                    batch_ids, batch_vecs = [batch_ids[t] for t in take], batch_vecs[take]
                try:
                    if write_batch is not None:
                        write_batch(kind, b + 1, batch_ids, batch_vecs)
                    elif batch_ids:
                        self.store.set_vectors(batch_ids, batch_vecs)
                except Exception as err:
                    where = f" State is in {self.state_dir}." if self.state_dir else ""
                    msg = (
                        f"{kind} stopped at batch {b + 1} of {n_batches} "
                        f"({type(err).__name__}: {err}). "
                        "Every id holds either its original or its new vector; call resume() to "
                        "finish or restore() to put the originals back (discard_pending() drops "
                        f"the plan and keeps the originals).{where}"
                    )
                    raise WriteBackError(msg) from err
                written += len(batch_ids)
                if write_batch is None:
                    self._state.save_progress(b + 1)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        if kind == "restore":
            self._state.finish_restore()
        else:
            self._state.finish_apply(self._state.pending_meta())
        logger.info("%s complete: %d vector(s) written", kind, written)
        if supports(self.store, IndexedEmbeddingStore):  # e.g. pgvector: VACUUM (ANALYZE)
            self.store.refresh_index()


def _meta_number(meta: dict[str, Any], key: str, kind: type, where: Any) -> Any:
    """``meta[key]`` as ``kind`` (``None`` if absent); a value that is not one is named."""
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        got = kind(value)
        if np.isfinite(got):
            return got
    logger.warning(
        "%s: %s is %r, not a number (the file was edited or damaged); shown as unknown",
        where,
        key,
        value,
    )
    return None


def _scatter(got: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    """Rows of ``got`` placed where ``mask`` is true, zeros elsewhere."""
    dim = got.shape[1] if got is not None and got.ndim == 2 else 0
    out = np.zeros((mask.size, dim), dtype=np.float32)
    if got is not None and dim:
        out[mask] = got
    return out


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        msg = f"lock_timeout must be a number of seconds >= 0 or None (wait), got {timeout!r}"
        raise ValueError(msg)
    return float(timeout)
