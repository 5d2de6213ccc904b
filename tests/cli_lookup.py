"""The ``--embed`` model of the command-line tests: ``--embed cli_lookup:LookupEmbeddings``.

It returns each question's vector from ``$NUDGE_CLI_QUESTIONS`` (an ``.npz`` with ``texts``
and ``vectors``), so no model is downloaded.
"""

from __future__ import annotations

import os

import numpy as np


class LookupEmbeddings:
    """LangChain-style embeddings that look each question up in ``$NUDGE_CLI_QUESTIONS``.

    ``$NUDGE_CLI_PAD=1`` appends a zero (a model of the wrong dimension).
    """

    def __init__(self, path: str | None = None, pad: bool | None = None) -> None:
        data = np.load(path or os.environ["NUDGE_CLI_QUESTIONS"])
        self.vectors = dict(zip(data["texts"].tolist(), data["vectors"]))
        self.pad = os.environ.get("NUDGE_CLI_PAD") == "1" if pad is None else pad

    def embed_query(self, text: str) -> list[float]:
        vector = self.vectors[text]
        return [*vector.tolist(), 0.0] if self.pad else vector.tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]
