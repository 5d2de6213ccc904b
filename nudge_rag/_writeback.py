"""Safe write-back of tuned vectors into an :class:`~nudge_rag.EmbeddingStore`.

The procedure, written once for every store:

1. Before the first write, the *original* vectors of every id that will change are added to
   ``originals.npz`` in the state directory (temp file, fsync, atomic rename). An id already
   there keeps its first-seen original, so originals are never overwritten with tuned vectors.
2. The full plan (ids and target vectors) is saved as ``pending.npz``; rows that an earlier
   fit moved and this one does not are planned back to their originals, so the store always
   ends as *originals + this fit's changes* (a re-fit starts from the originals).
3. The plan is written in batches through ``store.set_vectors`` (an in-place update), and
   ``progress.json`` records each finished batch.
4. When the last batch is written the plan is removed.

A crash at any point leaves every id holding either its original or its target vector.
``resume()`` finishes an interrupted plan; ``restore()`` writes all originals back and then
forgets them. Without a ``state_dir`` the same state is kept in memory (fine for in-memory
stores, which are lost with the process anyway).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import weakref
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nudge_rag._files import atomic_save_npz, atomic_write_json, fsync_dir
from nudge_rag._queryset import row_index
from nudge_rag._store import EmbeddingStore
from nudge_rag._validation import check_matrix, check_positive_int

logger = logging.getLogger(__name__)

__all__ = ["WriteBack", "WriteBackError"]

ORIGINALS = "originals.npz"
PENDING = "pending.npz"
PROGRESS = "progress.json"


class WriteBackError(RuntimeError):
    """A write-back could not complete, or its saved state cannot be used.

    The store is never left half-written: every id holds its original or its target vector,
    and the message says whether to call ``resume()`` or ``restore()``.
    """


_MEMORY_LOCK = threading.Lock()
_MEMORY_STATES: dict[int, tuple[Any, dict[str, Any]]] = {}


def _memory_of(owner: object) -> dict[str, Any]:
    """The in-memory write-back state of ``owner`` (a store object), shared by every user of it.

    Kept while ``owner`` lives (a weak reference where the object allows one, else a strong one).
    """
    key = id(owner)
    with _MEMORY_LOCK:
        got = _MEMORY_STATES.get(key)
        if got is not None and got[0]() is owner:
            return got[1]
        try:
            ref: Any = weakref.ref(owner, lambda _ref, key=key: _MEMORY_STATES.pop(key, None))
        except TypeError:  # no weak references: hold it (the state is small next to the store)
            ref = lambda owner=owner: owner  # noqa: E731
        memory: dict[str, Any] = {}
        _MEMORY_STATES[key] = (ref, memory)
        return memory


class _State:
    """Originals, pending plan and progress, on disk (``root``) or in memory."""

    def __init__(self, root: str | os.PathLike | None, owner: object):
        self.root = Path(root) if root is not None else None
        self._mem: dict[str, Any] = _memory_of(owner) if root is None else {}

    def _load_npz(self, name: str, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
        if self.root is None:
            return self._mem.get(name)
        path = self.root / name
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                out = {k: data[k] for k in keys}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
            msg = (
                f"cannot read write-back state file {path}: {type(err).__name__}: {err}. "
                "It is truncated or corrupted; the store was not touched. If it holds originals, "
                "restore it from a backup before deleting it."
            )
            raise WriteBackError(msg) from err
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

    # originals ---------------------------------------------------------------
    def load_originals(self) -> tuple[list[str], np.ndarray] | None:
        data = self._load_npz(ORIGINALS, ("ids", "vectors"))
        if data is None:
            return None
        return data["ids"].astype(str).tolist(), data["vectors"].astype(np.float32, copy=False)

    def save_originals(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        self._save_npz(ORIGINALS, ids=np.asarray(ids, dtype=str), vectors=vectors)

    def delete_originals(self) -> None:
        self._delete(ORIGINALS)

    # pending plan ------------------------------------------------------------
    def load_pending(self) -> tuple[str, list[str], np.ndarray, int, int] | None:
        data = self._load_npz(PENDING, ("ids", "vectors", "kind", "batch_size"))
        if data is None:
            return None
        done = self._load_progress()
        return (
            str(data["kind"]),
            data["ids"].astype(str).tolist(),
            data["vectors"].astype(np.float32, copy=False),
            int(data["batch_size"]),
            done,
        )

    def save_pending(
        self, kind: str, ids: Sequence[str], vectors: np.ndarray, batch_size: int
    ) -> None:
        self.save_progress(0)
        self._save_npz(
            PENDING,
            ids=np.asarray(ids, dtype=str),
            vectors=vectors,
            kind=np.asarray(kind),
            batch_size=np.asarray(batch_size),
        )

    def _load_progress(self) -> int:
        if self.root is None:
            return int(self._mem.get(PROGRESS, 0))
        path = self.root / PROGRESS
        if not path.exists():
            return 0
        try:
            return int(json.loads(path.read_text())["batches_done"])
        except (ValueError, KeyError, TypeError) as err:
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


class WriteBack:
    """Writes tuned vectors into a store without ever losing the originals.

    Args:
        store: any :class:`~nudge_rag.EmbeddingStore`.
        state_dir: folder for ``originals.npz``, ``pending.npz`` and ``progress.json``
            (created on first write). ``None`` keeps that state in memory, shared by every
            ``WriteBack`` over the same store object (``store.state_owner`` where the backend
            has one): fine for in-memory stores, which are lost with the process anyway.
        batch_size: ids written per ``set_vectors`` call.
        show_progress: show a tqdm bar while writing.

    Example:
        >>> wb = WriteBack(store, state_dir="index_dir/nudge")   # doctest: +SKIP
        >>> ids, corpus = wb.read_corpus()        # originals, even after an earlier fit
        >>> wb.apply(changed_ids, changed_vectors)
        >>> wb.restore()                          # every original back
    """

    def __init__(
        self,
        store: EmbeddingStore,
        state_dir: str | os.PathLike | None = None,
        *,
        batch_size: int = 512,
        show_progress: bool = False,
    ):
        if not isinstance(store, EmbeddingStore):
            from nudge_rag.backends import backend_for

            store = backend_for(store)  # a framework store, or defaults for missing members
        self.store = store
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.show_progress = show_progress
        self._state = _State(self.state_dir, getattr(store, "state_owner", self))

    # ------------------------------------------------------------------ reading
    @property
    def has_pending(self) -> bool:
        """Whether an interrupted write-back or restore waits for ``resume()``."""
        return self._state.load_pending() is not None

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

    def read_corpus(self, ids: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
        """Read the store's vectors with saved originals in place of tuned ones.

        Args:
            ids: which ids to read (default: ``store.list_ids()``).

        Returns:
            ``(ids, (n, dim) float32)``: the vectors a fresh fit must start from.
        """
        ids = list(self.store.list_ids()) if ids is None else list(ids)
        if not ids:
            return ids, np.zeros((0, 0), dtype=np.float32)
        blocks = [
            np.asarray(self.store.get_vectors(ids[s : s + self.batch_size]), dtype=np.float32)
            for s in range(0, len(ids), self.batch_size)
        ]
        corpus = np.concatenate(blocks, axis=0)
        loaded = self._state.load_originals()
        if loaded is not None:
            orig_ids, orig_vecs = loaded
            rows = row_index(ids)
            pairs = [(rows[i], k) for k, i in enumerate(orig_ids) if i in rows]
            if pairs:
                dst, src = map(np.asarray, zip(*pairs))
                if orig_vecs.shape[1] != corpus.shape[1]:
                    msg = (
                        f"saved originals have {orig_vecs.shape[1]} dimensions, but the store "
                        f"holds {corpus.shape[1]}-dimensional vectors; state at {self.state_dir}"
                    )
                    raise WriteBackError(msg)
                corpus[dst] = orig_vecs[src]
        return ids, corpus

    # ------------------------------------------------------------------ writing
    def apply(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Make the store hold ``vectors`` for ``ids`` and originals for every other saved id.

        Raises:
            WriteBackError: a plan from an interrupted call is pending, or a batch failed.
            ValueError: shapes or values that cannot be written.
        """
        ids = [str(i) for i in ids]
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
        self._refuse_if_pending()

        loaded = self._state.load_originals()
        orig_ids, orig_vecs = loaded if loaded is not None else ([], None)
        known = set(orig_ids)
        new_ids = [i for i in ids if i not in known]
        if new_ids:
            # Reading raises KeyError for unknown ids before anything is written.
            current = np.concatenate(
                [
                    np.asarray(
                        self.store.get_vectors(new_ids[s : s + self.batch_size]), dtype=np.float32
                    )
                    for s in range(0, len(new_ids), self.batch_size)
                ]
            )
            if current.shape[1] != vectors.shape[1]:
                msg = (
                    f"vectors have {vectors.shape[1]} dimensions, but the store holds "
                    f"{current.shape[1]}-dimensional vectors"
                )
                raise ValueError(msg)
            all_ids = list(orig_ids) + new_ids
            all_vecs = current if orig_vecs is None else np.concatenate([orig_vecs, current])
            self._state.save_originals(all_ids, all_vecs)
            logger.info("saved originals of %d new id(s) (%d in all)", len(new_ids), len(all_ids))
        elif orig_vecs is not None and vectors.shape[0] and orig_vecs.shape[1] != vectors.shape[1]:
            msg = (
                f"vectors have {vectors.shape[1]} dimensions, "
                f"but the saved originals have {orig_vecs.shape[1]}"
            )
            raise ValueError(msg)

        # Rows moved earlier but not now go back to their originals.
        target = set(ids)
        back = [k for k, i in enumerate(orig_ids) if i not in target]
        plan_ids = ids + [orig_ids[k] for k in back]
        plan_vecs = vectors if not back else np.concatenate([vectors, orig_vecs[np.asarray(back)]])
        self._state.save_pending("apply", plan_ids, plan_vecs, self.batch_size)
        self._run_plan("apply", plan_ids, plan_vecs, self.batch_size, start=0)

    def resume(self) -> bool:
        """Finish an interrupted ``apply()`` or ``restore()``.

        Returns:
            ``True`` if a pending plan was completed, ``False`` if there was none.
        """
        pending = self._state.load_pending()
        if pending is None:
            return False
        kind, ids, vectors, batch_size, done = pending
        logger.info("resuming %s: %d id(s), from batch %d", kind, len(ids), done)
        self._run_plan(kind, ids, vectors, batch_size, start=done)
        return True

    def restore(self) -> int:
        """Write every saved original back into the store, then forget the originals.

        A pending plan is superseded. Ids that are no longer in the store are skipped.

        Returns:
            How many vectors were restored.
        """
        loaded = self._state.load_originals()
        if loaded is None:
            if self._state.load_pending() is not None:
                self._state.clear_pending()
            logger.info("nothing to restore: no originals saved")
            return 0
        ids, vectors = loaded
        present = set(self.store.list_ids())
        keep = [k for k, i in enumerate(ids) if i in present]
        if len(keep) != len(ids):
            logger.warning(
                "restore: %d saved id(s) are no longer in the store", len(ids) - len(keep)
            )
        ids = [ids[k] for k in keep]
        vectors = vectors[np.asarray(keep, dtype=np.int64)]
        self._state.save_pending("restore", ids, vectors, self.batch_size)
        self._run_plan("restore", ids, vectors, self.batch_size, start=0)
        return len(ids)

    # ------------------------------------------------------------------ internals
    def _refuse_if_pending(self) -> None:
        if self._state.load_pending() is not None:
            where = f" (state in {self.state_dir})" if self.state_dir else ""
            msg = (
                "an interrupted write-back is pending" + where + ": call resume() to finish it "
                "or restore() to undo it before writing again"
            )
            raise WriteBackError(msg)

    def _run_plan(
        self, kind: str, ids: list[str], vectors: np.ndarray, batch_size: int, start: int
    ) -> None:
        n_batches = -(-len(ids) // batch_size)
        bar = None
        if self.show_progress and n_batches > start:
            try:
                from tqdm.auto import tqdm

                bar = tqdm(total=n_batches, initial=start, desc=f"nudge {kind}", unit="batch")
            except ImportError:  # pragma: no cover - tqdm is optional
                bar = None
        try:
            for b in range(start, n_batches):
                sl = slice(b * batch_size, (b + 1) * batch_size)
                try:
                    self.store.set_vectors(ids[sl], vectors[sl])
                except Exception as err:
                    where = f" State is in {self.state_dir}." if self.state_dir else ""
                    msg = (
                        f"{kind} stopped at batch {b + 1} of {n_batches} "
                        f"({type(err).__name__}: {err}). "
                        "Every id holds either its original or its new vector; call resume() to "
                        f"finish or restore() to put the originals back.{where}"
                    )
                    raise WriteBackError(msg) from err
                self._state.save_progress(b + 1)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        if kind == "restore":
            self._state.delete_originals()
        self._state.clear_pending()
        logger.info("%s complete: %d vector(s) written", kind, len(ids))
