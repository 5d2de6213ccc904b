"""Parse questions out of an LLM answer or a metadata value (framework-free, shared)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["parse_questions"]

# "1." "1)" "1:" "(1)" "Q1:" "Question 1 -" "- " "* " "• " at the start of a line.
_ITEM = re.compile(
    r"^\s*(?:(?:q(?:uestion)?\s*)?\(?\d{1,3}\s*[.):\]\-]|q(?:uestion)?\s*\d{0,3}\s*[:.\-]|[-*•])\s*",
    re.IGNORECASE,
)
_EMPHASIS = re.compile(r"^(?:\*\*|__|#+)\s*")
_BOLD = re.compile(r"^(?:\*\*|__)\s*")  # after a marker: "**1.** Q" (a "#" there is text)
_PREAMBLE = re.compile(
    r"^(?:here\s+(?:are|is)|sure\b|certainly\b|okay\b|ok\b|the following\b)", re.IGNORECASE
)
_OPEN_CLOSE = {'"': '"', "'": "'", "`": "`", "*": "*", "“": "”", "‘": "’"}


def _unwrap(text: str) -> str:
    """Strip whitespace and *paired* surrounding quotes or bold markers (``"Q?"``, ``**Q?**``).

    A lone trailing quote is part of the text (nfcorpus has queries ending in " '").
    """
    text = text.strip()
    while len(text) >= 2 and _OPEN_CLOSE.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


def parse_questions(raw: str | Sequence[str] | Any, *, strict: bool = False) -> list[str]:
    """The questions in an LLM answer, a metadata string, or a list of strings.

    A string is split into lines. When some lines are numbered or bulleted (``1.``, ``2)``,
    ``Q3:``, ``- ``), only those are kept, so a preamble ("Here are 3 questions:") or a
    closing remark is skipped; numbering, bold markers and surrounding quotes are stripped from
    those lines. Otherwise every line that is not a preamble (ending in ``:`` or
    starting with "Here are", "Sure", ...) is kept, or with ``strict`` only lines ending in
    ``?``. A list holds one question per item (items are only stripped of whitespace).
    Duplicates are dropped, order kept.

    Args:
        raw: the metadata value or LLM answer; ``None`` gives no questions.
        strict: for LLM answers: never fall back to unnumbered lines without ``?`` (they are
            remarks such as "I cannot think of any.").

    Returns:
        The questions, possibly empty.

    Raises:
        TypeError: ``raw`` is neither a string nor a sequence of strings.
    """
    if raw is None:
        return []
    if isinstance(raw, str):
        lines = [_EMPHASIS.sub("", ln.strip(), count=1) for ln in raw.splitlines()]
        lines = [ln for ln in lines if ln]
        items = [  # "**1.** Q" -> "Q": the marker, then any emphasis closing after it
            _BOLD.sub("", _ITEM.sub("", ln, count=1), count=1) for ln in lines if _ITEM.match(ln)
        ]
        if not items and strict:
            items = [ln for ln in lines if _unwrap(ln).endswith("?")]
        elif not items:
            items = [ln for ln in lines if not ln.endswith(":") and not _PREAMBLE.match(ln)]
        items = [_unwrap(item) for item in items]
    elif isinstance(raw, Sequence) and all(isinstance(item, str) for item in raw):
        items = list(raw)  # one question per item, kept as written
    else:
        msg = (
            f"questions must be a string or a list of strings, got {type(raw).__name__}: "
            f"{raw!r:.80}"
        )
        raise TypeError(msg)
    cleaned = (item.strip() for item in items)
    return list(dict.fromkeys(q for q in cleaned if q))
