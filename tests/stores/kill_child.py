"""Run ``nudge-rag`` with SIGKILL after the k-th batch the write-back writes into the store.

``python kill_child.py K nudge-rag-args...``: the store's backend, opened from its URI as the
command line opens it, kills this process as soon as its ``set_vectors`` has written ``K``
batches, as a crash or ``kill -9`` would, between two batches of a fit, a restore or a resume.
"""

from __future__ import annotations

import os
import signal
import sys


def main(argv: list[str]) -> int:
    after = int(argv[0])
    from nudge_rag.backends import _uri

    real_open = _uri.open_store

    def open_store(*args, **kwargs):
        opened = real_open(*args, **kwargs)
        backend, calls = opened.backend, [0]
        real_set = backend.set_vectors

        def set_vectors(ids, vectors):
            real_set(ids, vectors)
            calls[0] += 1
            if calls[0] >= after:
                os.kill(os.getpid(), signal.SIGKILL)

        backend.set_vectors = set_vectors
        return opened

    _uri.open_store = open_store
    from nudge_rag.cli import main as cli

    return cli(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
