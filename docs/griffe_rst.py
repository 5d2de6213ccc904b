"""A griffe extension for the API reference: the reST bits of the docstrings, as Markdown.

The docstrings are Google style (what ruff checks) with a few reST habits: roles such as
``:class:`~nudge_rag.NudgeN``` and ``.. code-block:: python`` directives. mkdocstrings would
print those literally; this turns roles into code spans and directives into fenced blocks.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const):`(~?)([^`]+)`")
_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. code-block::\s*(?P<lang>\S*)\s*$")


def _role(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _fence(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        indent = len(match["indent"])
        i += 1
        block: list[str] = []
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():
            block.pop()
        body = [line for line in block if line.strip()]
        depth = min((len(line) - len(line.lstrip()) for line in body), default=0)
        pad = " " * indent
        out.append(f"{pad}```{match['lang']}")
        out += [pad + line[depth:] if line.strip() else "" for line in block if block]
        out.append(f"{pad}```")
        out.append("")
    return "\n".join(out)


class RestToMarkdown(griffe.Extension):
    """Rewrite each docstring once, before it is parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: D102
        if obj.docstring is not None:
            obj.docstring.value = _fence(_ROLE.sub(_role, obj.docstring.value))
