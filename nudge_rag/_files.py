"""Crash-safe file writes shared by the write-back state and the array store."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_save_npz", "atomic_write_json", "fsync_dir"]


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
