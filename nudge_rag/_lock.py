"""One writer per store: the lock that serializes write-backs across threads and processes.

A write-back state folder gets a lock file, ``writer.lock``, held with ``fcntl.flock`` for
the whole read-originals -> read-store -> save-originals -> plan -> write sequence. The
kernel drops a ``flock`` when its process ends, however it ends (SIGKILL included), so the
lock of a dead process never blocks anyone. While it is held the file records who holds it
(pid, host, thread, since when, doing what), for the error the next writer gets; a record
left behind by a writer that died is reported (at INFO) by the next one to take the lock.
A writer that has to wait for another one says so (at INFO, naming the holder).

Inside one process an ``RLock`` per folder comes first, so threads wait for each other too
(a ``flock`` alone would not stop two threads on a filesystem that emulates it with POSIX
locks) and the same thread can re-enter (``tune_store`` holds the lock around ``apply``).
State kept in memory (no folder) has only the in-process lock: that state and its store
live in one process anyway.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nudge_rag._errors import LockBusy
from nudge_rag._files import UnsafeFileError, open_regular, read_regular

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: only the in-process lock
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

__all__ = ["LOCK_FILE", "LockBusy", "StoreLock", "describe_holder", "file_lock"]

LOCK_FILE = "writer.lock"
_POLL_S = (0.01, 0.25)  # first and longest sleep between tries while waiting


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _me(what: str) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "thread": threading.current_thread().name,
        "since": _now(),
        "what": what,
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists, owned by someone else
        return True
    return True


def describe_holder(holder: dict[str, Any] | None) -> str:
    """``"pid 123 on host x (thread MainThread, apply, since 2026-...)"`` for messages."""
    if not holder:
        return "another writer (it left no record)"
    parts = [str(holder.get(k)) for k in ("thread", "what") if holder.get(k)]
    if holder.get("since"):
        parts.append(f"since {holder['since']}")
    where = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    return f"{where} ({', '.join(parts)})" if parts else where


class StoreLock:
    """A re-entrant lock on one write-back state: in-process, plus a file lock for a folder.

    Use :meth:`hold` as a context manager. The same thread may hold it again (nested calls);
    other threads and other processes wait up to ``timeout`` seconds, then get
    :class:`LockBusy` naming the holder.

    Args:
        folder: the state folder (its ``writer.lock`` is the file lock), or ``None`` for state
            kept in memory (in-process lock only).
        name: what the lock protects, for messages (the folder, or the store's name).
    """

    def __init__(self, folder: Path | None, name: str):
        self.folder = folder
        self.name = name
        self._rlock = threading.RLock()
        self._depth = 0  # changed only by the thread that holds _rlock
        self._fd: int | None = None
        self.holder: dict[str, Any] | None = None  # this process's holder, while held

    # ------------------------------------------------------------------ public
    @contextlib.contextmanager
    def hold(self, what: str, timeout: float | None = 0.0) -> Iterator[None]:
        """Hold the lock for the ``with`` block.

        Args:
            what: what the holder does (``"apply"``, ``"restore"``, ``"fit"``), for messages.
            timeout: seconds to wait for another writer; ``0`` fails at once, ``None`` waits
                as long as it takes.

        Raises:
            LockBusy: another thread or process held it for ``timeout`` seconds.
        """
        self.acquire(what, timeout)
        try:
            yield
        finally:
            self.release()

    @property
    def depth(self) -> int:
        """How many nested :meth:`hold` blocks the holding thread is in."""
        return self._depth

    def holder_now(self) -> dict[str, Any] | None:
        """Who holds the lock now, as recorded, without taking it (``None``: free).

        Reads the record only, so it never gets in a writer's way. A record whose process is
        gone (same host, pid not running) is stale and reported as free.
        """
        if self.holder is not None:
            return dict(self.holder)
        if self.folder is None:
            return None
        record = _read_record(self.folder / LOCK_FILE)
        if record is None:
            return None
        same_host = record.get("host") == socket.gethostname()
        if same_host and isinstance(record.get("pid"), int) and not _pid_alive(record["pid"]):
            return None
        return record

    def acquire(self, what: str, timeout: float | None = 0.0) -> None:
        """Take the lock (see :meth:`hold`); pair with :meth:`release`."""
        if timeout is not None and timeout < 0:
            msg = f"lock_timeout must be >= 0 seconds or None (wait), got {timeout!r}"
            raise ValueError(msg)
        deadline = None if timeout is None else time.monotonic() + timeout
        got = self._rlock.acquire(blocking=False)
        if not got and timeout != 0:  # another thread of this process holds it: wait
            self._log_wait(dict(self.holder) if self.holder else None, timeout)
            got = self._rlock.acquire() if timeout is None else self._rlock.acquire(timeout=timeout)
        if not got:
            holder = dict(self.holder) if self.holder else None
            raise LockBusy(self._busy_message(holder, timeout), holder)
        if self._depth:
            self._depth += 1
            return
        try:
            if self.folder is not None:
                self._lock_file(what, deadline, timeout)
            self.holder = _me(what)
            self._depth = 1
        except BaseException:
            self._unlock_file()
            self.holder = None
            self._depth = 0
            self._rlock.release()
            raise

    def release(self) -> None:
        """Give back one :meth:`acquire`; the last one frees it for others."""
        self._depth -= 1
        if self._depth == 0:
            self.holder = None
            self._unlock_file()
        self._rlock.release()

    # ------------------------------------------------------------------ internals
    def _log_wait(self, holder: dict[str, Any] | None, timeout: float | None) -> None:
        logger.info(
            "waiting for the writer lock of %s (%s), held by %s",
            self.name,
            "as long as it takes" if timeout is None else f"up to {timeout:g} s",
            describe_holder(holder),
        )

    def _busy_message(self, holder: dict[str, Any] | None, timeout: float | None) -> str:
        waited = f" after waiting {timeout:g} s" if timeout else ""
        return (
            f"the write-back state of {self.name} is locked by {describe_holder(holder)}{waited}: "
            "only one writer (fit, restore, resume) may work on a store at a time. Wait for it "
            "to finish, or pass lock_timeout=<seconds> to wait for it."
        )

    def _lock_file(self, what: str, deadline: float | None, timeout: float | None) -> None:
        if fcntl is None:  # pragma: no cover - Windows
            _warn_once(
                "no fcntl on this platform: the write-back lock holds within this process only"
            )
            return
        assert self.folder is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        fd = _open_lock_file(path)
        sleep = _POLL_S[0]
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    _warn_once(
                        f"cannot lock {path} ({err.strerror or err}): two processes writing "
                        "this store at the same time could overwrite each other's originals"
                    )
                    return
            if deadline is not None and time.monotonic() >= deadline:
                os.close(fd)
                holder = _read_record(path)
                raise LockBusy(self._busy_message(holder, timeout), holder)
            if sleep == _POLL_S[0]:  # the first miss: another process holds it
                self._log_wait(_read_record(path), timeout)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            time.sleep(sleep if left is None else min(sleep, left))
            sleep = min(sleep * 2, _POLL_S[1])
        previous = _read_fd(fd)
        if previous:
            logger.info(
                "the previous writer of %s, %s, ended without releasing its lock (killed?); "
                "the lock was free",
                self.name,
                describe_holder(previous),
            )
        record = json.dumps(_me(what)).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        self._fd = fd

    def _unlock_file(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # an empty record: released cleanly
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _read_fd(fd: int) -> dict[str, Any] | None:
    try:
        data = os.pread(fd, 4096, 0)
        record = json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _open_lock_file(path: Path) -> int:
    """Open (or create) ``writer.lock`` without following a link.

    A link (symbolic, or a hard link: a file with another name elsewhere), or any file that
    is not a regular one, put in its place is never written through: it is removed (the
    name only, not what it points to) and a regular lock file is made, with a WARNING.
    """
    try:
        fd = open_regular(path, os.O_RDWR | os.O_CREAT)
    except UnsafeFileError as err:
        if path.is_dir() and not path.is_symlink():
            raise
        problem = err.strerror
    else:
        if os.fstat(fd).st_nlink <= 1:
            return fd
        os.close(fd)
        problem = f"{path} is a hard link (the same file has another name)"
    logger.warning(
        "%s; replaced it with a regular lock file (what it pointed to was not touched)", problem
    )
    path.unlink(missing_ok=True)
    return open_regular(path, os.O_RDWR | os.O_CREAT)


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        data = read_regular(path, 4096)
        record = json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        logger.warning(message)


_LOCKS: dict[str, StoreLock] = {}
_LOCKS_GUARD = threading.Lock()


def file_lock(folder: Path) -> StoreLock:
    """The one :class:`StoreLock` of this process for the state folder ``folder``."""
    key = os.path.realpath(folder)
    with _LOCKS_GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = StoreLock(Path(folder), str(folder))
        return lock
