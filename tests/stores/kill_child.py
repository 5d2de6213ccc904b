"""Run ``nudge-rag`` and SIGKILL it at one point of the write-back, as ``kill -9`` would.

``python kill_child.py POINT nudge-rag-args...``: the command line runs as usual (the store
opened from its URI) and the process kills itself at ``POINT`` of the write-back sequence that
``tune``, ``restore`` or ``resume`` goes through (:class:`nudge_rag.WriteBack`):

* ``originals``: the originals of the rows to move are saved (a file state; a store that
  keeps its own state saves them with each batch), no plan yet;
* ``plan``: the plan (``"apply"`` or ``"restore"``) is saved, nothing written;
* ``batch:K``: batch ``K`` is written into the store: through ``set_vectors``, its progress
  not yet recorded, or through the state's ``write_batch`` (pgvector: the batch, its
  originals and its progress in one transaction), committed;
* ``progress:K``: batch ``K``'s progress is recorded (a file state);
* ``finish``: every batch is written, and the plan is not yet marked done
  (``finish_apply`` / ``finish_restore`` not run).

A point the command never reaches lets it finish (exit status 0): the parent checks ``-9``.
"""

from __future__ import annotations

import functools
import os
import signal
import sys


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _after(real, when):
    """``real``, then death when ``when(*args)`` holds."""

    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        out = real(*args, **kwargs)
        if when(*args, **kwargs):
            _die()
        return out

    return wrapper


def _before(real):
    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        _die()

    return wrapper


def _state_classes() -> list[type]:
    """Every write-back state class: a folder's, and each store's own (pgvector's)."""
    from nudge_rag._state import WriteBackState

    found, todo = [], [WriteBackState]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


def _patch(name: str, make) -> None:
    """Replace method ``name`` on each state class that defines it, with ``make(real)``."""
    for cls in _state_classes():
        if name in vars(cls):
            setattr(cls, name, make(vars(cls)[name]))


def arm(point: str) -> None:
    """Patch the write-back so that this process dies at ``point``."""
    from nudge_rag import _writeback as wb
    from nudge_rag.backends import _uri  # loads every store module, and their state classes

    name, _, number = point.partition(":")
    k = int(number or 0)
    if name == "originals":
        real = wb.WriteBack._save_originals
        wb.WriteBack._save_originals = _after(real, lambda self, ids, vectors: len(ids) > 0)
    elif name == "plan":
        _patch("save_pending", lambda real: _after(real, lambda *a, **kw: True))
    elif name == "progress":
        _patch("save_progress", lambda real: _after(real, lambda self, done: done == k))
    elif name == "finish":
        _patch("finish_apply", _before)
        _patch("finish_restore", _before)
    elif name == "batch":
        real_open = _uri.open_store

        def open_store(*args, **kwargs):
            opened = real_open(*args, **kwargs)
            calls = [0]

            def written(*a, **kw) -> bool:
                calls[0] += 1
                return calls[0] == k

            opened.backend.set_vectors = _after(opened.backend.set_vectors, written)
            return opened

        _uri.open_store = open_store
        # a state that writes each batch in one transaction with its progress (pgvector)
        _patch(
            "write_batch",
            lambda real: _after(real, lambda self, kind, done, ids, vectors: done == k),
        )
    else:
        msg = f"unknown kill point {point!r}"
        raise ValueError(msg)


def main(argv: list[str]) -> int:
    arm(argv[0])
    from nudge_rag.cli import main as cli

    return cli(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
