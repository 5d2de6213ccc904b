"""One writer at a time: the writer lock's interface and its two implementations.

:class:`WriterLock` is what every lock offers: a re-entrant in-process lock (threads wait for
each other, the same thread can re-enter: ``tune_store`` holds it around ``apply``), a record
of who holds it for the next writer's error, waiting up to a timeout with a message naming
the holder, and :meth:`~WriterLock.holder_now`. Where the lock lives outside the process is
up to a subclass, through four hooks (``_open``, ``_try``, ``_taken``, ``_give_back``, plus
``_recorded`` for messages):

- :class:`FileLock`: a file held with ``fcntl.flock`` (a state folder's ``writer.lock``, a
  feedback log's ``<log>.tune-<key>.lock``). The kernel drops a ``flock`` when its process
  ends, however it ends (SIGKILL included), so the lock of a dead process never blocks
  anyone. While held, the file records who holds it; a record left by a writer that died
  is reported (at INFO) by the next one to take the lock. The file is never opened through
  a link.
- :class:`AdvisoryLock`: a PostgreSQL advisory lock held on a connection of its own; the
  server frees it when that session ends (pgvector's state, a PostgreSQL feedback log).

A ``WriterLock`` itself has the in-process half only: state kept in memory lives in one
process with its store anyway.
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
from collections.abc import Callable, Iterator
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

__all__ = [
    "LOCK_FILE",
    "AdvisoryLock",
    "FileLock",
    "LockBusy",
    "WriterLock",
    "describe_holder",
    "file_lock",
]

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


class WriterLock:
    """A re-entrant lock on one write-back state (or one feedback re-tune).

    Use :meth:`hold` as a context manager. The same thread may hold it again (nested calls);
    other threads and other processes wait up to ``timeout`` seconds, then get
    :class:`LockBusy` naming the holder.

    Args:
        name: what the lock protects, for messages (a folder, a store, a table).
        busy_hint: the end of the busy message: what may hold it and what to do.
    """

    busy_hint = (
        "only one writer (fit, restore, resume) may work on a store at a time. Wait for it "
        "to finish, or pass lock_timeout=<seconds> to wait for it."
    )

    def __init__(self, name: str, busy_hint: str | None = None):
        self.name = name
        if busy_hint is not None:
            self.busy_hint = busy_hint
        self._rlock = threading.RLock()
        self._depth = 0  # changed only by the thread that holds _rlock
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
        """Who holds the lock now, without taking it (``None``: free)."""
        return dict(self.holder) if self.holder is not None else None

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
            self._wait_outside(what, deadline, timeout)
            self.holder = _me(what)
            self._taken(self.holder)
            self._depth = 1
        except BaseException:
            self._give_back()
            self.holder = None
            self._depth = 0
            self._rlock.release()
            raise

    def release(self) -> None:
        """Give back one :meth:`acquire`; the last one frees it for others."""
        self._depth -= 1
        if self._depth == 0:
            self.holder = None
            self._give_back()
        self._rlock.release()

    # ------------------------------------------------------- the part outside the process
    def _open(self) -> bool:
        """Get ready to take the outside lock; ``False``: there is none (in-process only)."""
        return False

    def _try(self) -> bool:
        """Take the outside lock without waiting; ``False``: someone else holds it."""
        return True

    def _taken(self, holder: dict[str, Any]) -> None:
        """The outside lock is ours: record ``holder`` where the next writer will look."""

    def _give_back(self) -> None:
        """Free the outside lock and what :meth:`_open` took (safe to call when not held)."""

    def _recorded(self) -> dict[str, Any] | None:
        """Who holds the outside lock, as recorded (for messages; ``None``: unknown)."""
        return None

    # ------------------------------------------------------------------ internals
    def _wait_outside(self, what: str, deadline: float | None, timeout: float | None) -> None:
        if not self._open():
            return
        sleep = _POLL_S[0]
        while not self._try():
            if deadline is not None and time.monotonic() >= deadline:
                holder = self._recorded()
                raise LockBusy(self._busy_message(holder, timeout), holder)
            if sleep == _POLL_S[0]:  # the first miss: another process holds it
                self._log_wait(self._recorded(), timeout)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            time.sleep(sleep if left is None else min(sleep, left))
            sleep = min(sleep * 2, _POLL_S[1])

    def _log_wait(self, holder: dict[str, Any] | None, timeout: float | None) -> None:
        logger.info(
            "waiting for the writer lock of %s (%s), held by %s",
            self.name,
            "as long as it takes" if timeout is None else f"up to {timeout:g} s",
            describe_holder(holder),
        )

    def _busy_message(self, holder: dict[str, Any] | None, timeout: float | None) -> str:
        waited = f" after waiting {timeout:g} s" if timeout else ""
        return f"{self.name} is locked by {describe_holder(holder)}{waited}: {self.busy_hint}"


class FileLock(WriterLock):
    """A :class:`WriterLock` that is also a file held with ``flock`` (see the module).

    Args:
        path: the lock file (created, with its folder, on first use).
        name: what the lock protects, for messages.
        busy_hint: the end of the busy message.
    """

    def __init__(self, path: Path, name: str, busy_hint: str | None = None):
        super().__init__(name, busy_hint)
        self.path = Path(path)
        self._fd: int | None = None
        self._locked = False  # this process holds the flock on _fd

    def holder_now(self) -> dict[str, Any] | None:
        """Who holds the lock now, as recorded, without taking it (``None``: free).

        Reads the record only, so it never gets in a writer's way. A record whose process is
        gone (same host, pid not running) is stale and reported as free.
        """
        if self.holder is not None:
            return dict(self.holder)
        record = _read_record(self.path)
        if record is None:
            return None
        same_host = record.get("host") == socket.gethostname()
        if same_host and isinstance(record.get("pid"), int) and not _pid_alive(record["pid"]):
            return None
        return record

    def _open(self) -> bool:
        if fcntl is None:  # pragma: no cover - Windows
            _warn_once(f"no fcntl on this platform: the lock of {self.name} holds in-process only")
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = _open_lock_file(self.path)
        return True

    def _try(self) -> bool:
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._locked = True
        except OSError as err:
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            os.close(self._fd)
            self._fd = None
            _warn_once(
                f"cannot lock {self.path} ({err.strerror or err}): two processes working on "
                f"{self.name} at the same time could overwrite each other's work"
            )
        return True

    def _taken(self, holder: dict[str, Any]) -> None:
        fd = self._fd
        if fd is None or not self._locked:  # the file could not be locked (warned)
            return
        previous = _read_fd(fd)
        if previous:
            logger.info(
                "the previous writer of %s, %s, ended without releasing its lock (killed?); "
                "the lock was free",
                self.name,
                describe_holder(previous),
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)

    def _give_back(self) -> None:
        fd, self._fd = self._fd, None
        locked, self._locked = self._locked, False
        if fd is None:
            return
        try:
            if locked:  # never touch the record of a holder we waited for
                os.ftruncate(fd, 0)  # an empty record: released cleanly
        finally:
            if locked:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _recorded(self) -> dict[str, Any] | None:
        return _read_record(self.path)


class AdvisoryLock(WriterLock):
    """A :class:`WriterLock` that is also a PostgreSQL advisory lock, on a session of its own.

    Writers in other processes or hosts wait for it (up to their timeout); the server frees
    it when the holding session ends, however it ends (a server restart too).

    Args:
        connect: opens a new autocommit psycopg connection (the lock's own session).
        keys: the advisory lock's key: one 64-bit or two 32-bit signed integers.
        name: what the lock protects, for messages.
        busy_hint: the end of the busy message.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        keys: tuple[int, ...],
        name: str,
        busy_hint: str | None = None,
    ):
        super().__init__(name, busy_hint)
        self._connect = connect
        self._keys = keys
        args = ", ".join(["%s"] * len(keys))
        self._sql_try = f"SELECT pg_try_advisory_lock({args})"
        self._sql_unlock = f"SELECT pg_advisory_unlock({args})"
        self._conn: Any = None
        self._pid: int | None = None  # the server process of the session holding the lock
        self._locked = False  # this session holds the advisory lock

    def _open(self) -> bool:
        self._conn = self._connect()
        self._pid = self._conn.info.backend_pid
        return True

    def _try(self) -> bool:
        self._locked = bool(self._conn.execute(self._sql_try, self._keys).fetchone()[0])
        return self._locked

    def _give_back(self) -> None:
        conn, self._conn = self._conn, None
        locked, self._locked = self._locked, False
        if conn is None:
            return
        if locked:  # never touch the record of a holder we waited for
            with contextlib.suppress(Exception):  # a lost connection freed the lock already
                self._release_record(conn)
                conn.execute(self._sql_unlock, self._keys)
        conn.close()

    def _release_record(self, conn: Any) -> None:
        """Clear what :meth:`_taken` recorded, on ``conn``, before the lock is freed."""


def _read_fd(fd: int) -> dict[str, Any] | None:
    try:
        data = os.pread(fd, 4096, 0)
        record = json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _open_lock_file(path: Path) -> int:
    """Open (or create) a lock file without following a link.

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


_LOCKS: dict[str, FileLock] = {}
_LOCKS_GUARD = threading.Lock()


def file_lock(path: Path, name: str, busy_hint: str | None = None) -> FileLock:
    """The one :class:`FileLock` of this process for the lock file ``path``."""
    key = os.path.realpath(path)
    with _LOCKS_GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = FileLock(Path(path), name, busy_hint)
        return lock
