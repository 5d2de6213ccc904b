"""What each store module declares about itself, and the tables built from those declarations.

A store is one module in :mod:`nudge_rag.backends` with a module-level ``SPEC``
(:class:`StoreSpec`): its name, the extra that installs it, the framework wrapper classes it
serves, its ``--store`` URI schemes, how to make it score by cosine or inner product, and how
a framework's search result carries the stored id. The registry (:func:`backend_for`), the
command line's URI table and ``--store`` help, the metric hints of
:func:`~nudge_rag.check_similarity` and the adapters' id handling are all built from the specs
(:func:`store_specs`), so a store's name is written in its own module only. Modules are found
by listing the package: a new ``nudge_rag/backends/<store>.py`` with a ``SPEC`` is picked up
without editing any other file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

__all__ = ["Scheme", "StoreSpec", "Wrapper", "store_specs"]

Framework = Literal["langchain", "llama-index"]


@dataclass(frozen=True)
class Wrapper:
    """A framework's vector-store class served by a store module.

    Attributes:
        class_path: ``module.QualName`` of the class (subclasses are served too); written as
            a string so that nothing is imported to build the registry.
        framework: ``"langchain"`` or ``"llama-index"``.
        factory: name of the function in the store module that takes the wrapper object and
            returns the backend.
        index_factory: name of a function taking a LlamaIndex ``VectorStoreIndex`` instead,
            for stores that need the index (its ids are positions).
        extra: the pip extra for this wrapper when it differs from the store's.
        result_ids: name of a function ``(vectorstore) -> Callable[[list], None] | None`` in
            the store module that returns what sets ``Document.id`` on the wrapper's search
            results where the wrapper leaves it out (``None``: the wrapper sets it).
    """

    class_path: str
    framework: Framework
    factory: str
    index_factory: str = ""
    result_ids: str = ""
    extra: str = ""

    @property
    def label(self) -> str:
        """The class name, as users know the wrapper."""
        return self.class_path.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Scheme:
    """A ``--store`` URI form of the command line.

    Attributes:
        scheme: the part before the colon (``"chroma"``, ``"chroma+http"``).
        form: how the form reads in help and docs (``"chroma:DIR"``).
        opener: ``"module:function"`` (or a function name in the store module) taking
            ``(uri, scheme, rest, collection)`` and returning an ``OpenedStore``.
        description: one line for the docs.
    """

    scheme: str
    form: str
    opener: str
    description: str = ""


@dataclass(frozen=True)
class StoreSpec:
    """Everything the rest of nudge-rag needs to know about one store.

    Attributes:
        name: the store's short name (``"chroma"``), the ``kind`` of an opened store.
        label: how users write it (``"Chroma"``).
        extra: the pip extra that installs it (``pip install 'nudge-rag[<extra>]'``).
        wrappers: the framework classes it serves.
        schemes: its ``--store`` URI forms (none: not on the command line).
        cosine_hint: how to create a collection that scores by cosine.
        dot_hint: how to create one that scores by inner product (for NUDGE-M).
        after_writes: what the backend does after in-place writes so that the store's index
            keeps serving well (for the docs; empty when nothing is needed).
        restore: how exactly ``restore()`` gives the originals back (for the docs).
        module: the module that declared it (filled in when the specs are read).
    """

    name: str
    label: str
    extra: str
    wrappers: tuple[Wrapper, ...] = ()
    schemes: tuple[Scheme, ...] = ()
    cosine_hint: str = ""
    dot_hint: str = ""
    after_writes: str = ""
    restore: str = "bit-exact (float32)"
    module: str = field(default="", compare=False)

    def function(self, name: str) -> Callable[..., Any]:
        """The function ``name`` (``"module:function"`` or a name in the store module)."""
        module, _, attr = name.rpartition(":")
        return getattr(importlib.import_module(module or self.module), attr)


@cache
def store_specs() -> tuple[StoreSpec, ...]:
    """The spec of every store module in :mod:`nudge_rag.backends`, in name order.

    Store modules import their client libraries inside functions only, so this imports no
    client library.
    """
    specs = []
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__package__}.{info.name}")  # a plugin, by name
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, StoreSpec):
            specs.append(replace(spec, module=module.__name__))
    return tuple(sorted(specs, key=lambda s: s.name))


def metric_hints(kind: Literal["cosine", "dot"]) -> str:
    """``"Chroma: ...; Qdrant: ..."``: how each store is made to score by ``kind``."""
    hints = [
        f"{s.label}: {s.cosine_hint if kind == 'cosine' else s.dot_hint}"
        for s in store_specs()
        if (s.cosine_hint if kind == "cosine" else s.dot_hint)
    ]
    return "; ".join(hints)
