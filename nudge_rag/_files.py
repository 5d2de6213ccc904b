"""Crash-safe file writes shared by the write-back state and the array store."""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nudge_rag._errors import UnsafeFileError

__all__ = [
    "UnsafeFileError",
    "atomic_save_npz",
    "atomic_write_json",
    "fsync_dir",
    "open_regular",
    "read_regular",
]

#: ``O_NOFOLLOW`` where the platform has it (a link as the last part of a path is refused).
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def open_regular(path: str | os.PathLike, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that never follows a symbolic link and accepts only a regular file.

    Args:
        path: the file.
        flags: ``os.O_*`` flags (``O_NOFOLLOW`` and ``O_CLOEXEC`` are added).
        mode: permissions of a file ``O_CREAT`` makes.

    Returns:
        The file descriptor.

    Raises:
        UnsafeFileError: ``path`` is a symbolic link, a FIFO, a device or a folder.
        FileNotFoundError: no such file (without ``O_CREAT``).
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, flags | _NOFOLLOW | _CLOEXEC | _NONBLOCK, mode)
    except OSError as err:
        if err.errno == errno.ELOOP or os.path.islink(path):
            msg = (
                f"{path} is a symbolic link; nudge-rag never reads or writes a state file "
                "through a link (it could point anywhere). Remove the link."
            )
            raise UnsafeFileError(errno.ELOOP, msg) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        msg = f"{path} is not a regular file; nudge-rag reads and writes only regular state files"
        raise UnsafeFileError(errno.EINVAL, msg)
    if _NONBLOCK:
        os.set_blocking(fd, True)
    return fd


def read_regular(path: str | os.PathLike, limit: int | None = None) -> bytes:
    """The bytes of a regular file, never through a symbolic link (see :func:`open_regular`)."""
    fd = open_regular(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as fh:
        return fh.read() if limit is None else fh.read(limit)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk, where the platform allows."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str) -> Path:
    """Write through ``write(file)`` to a temp file, fsync it, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write an ``.npz`` so that ``path`` holds either the old file or the complete new one."""
    path = _atomic_write(path, lambda fh: np.savez(fh, **arrays), "wb")
    fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON so that ``path`` holds either the old file or the complete new one."""
    _atomic_write(path, lambda fh: json.dump(payload, fh), "w")
