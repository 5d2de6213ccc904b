"""Open a store from a URI, as the command line's ``--store URI [--collection NAME]`` does.

The forms come from the store modules' specs (:func:`supported_schemes`), e.g.
``chroma:DIR``, ``chroma+http://HOST:PORT``, ``qdrant:DIR``, ``faiss:DIR``,
``postgresql://USER@HOST/DB``, ``milvus:FILE.db``, ``lancedb:DIR``.

A scheme is offered only when its backend module is installed with nudge-rag. Nothing is
created: a folder that does not exist, a collection that is not there, or a server that does
not answer is a :class:`StoreURIError` (a ``ValueError``) naming what exists. Client
libraries are imported only when a store of their kind is opened.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nudge_rag._errors import MetricUnknownError, StoreURIError
from nudge_rag._store import DISTANCES, EmbeddingStore
from nudge_rag.backends._spec import Scheme, StoreSpec, store_specs

logger = logging.getLogger(__name__)

__all__ = ["OpenOptions", "OpenedStore", "StoreURIError", "open_store", "supported_schemes"]


@dataclass(frozen=True)
class OpenOptions:
    """What the caller says about a store besides its URI (the openers' last argument).

    Attributes:
        distance: how the store ranks, where the store does not record it (``--distance``).
        trust_pickle: whether a FAISS folder's pickle may be loaded (``--trust-pickle``).
    """

    distance: str | None = None
    trust_pickle: bool = False


@dataclass
class OpenedStore:
    """A backend opened from a URI, with what closes its client.

    Attributes:
        backend: the :class:`~nudge_rag.EmbeddingStore`.
        uri: the URI as given.
        kind: the store's spec name (``StoreSpec.name``).
        collection: the collection or table opened.
    """

    backend: EmbeddingStore
    uri: str
    kind: str
    collection: str
    _close: Callable[[], None] | None = field(default=None, repr=False)

    def close(self) -> None:
        """Release the client (a Qdrant local folder is locked while open)."""
        close, self._close = self._close, None
        if close is not None:
            try:
                close()
            except Exception as err:  # noqa: BLE001 - closing must not hide the real outcome
                logger.debug("closing %s: %s", self.uri, err)

    def __enter__(self) -> OpenedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _schemes() -> dict[str, tuple[Scheme, StoreSpec]]:
    """``scheme -> (its Scheme, its store's spec)``, from the store modules' specs."""
    return {sch.scheme: (sch, spec) for spec in store_specs() for sch in spec.schemes}


def supported_schemes() -> list[str]:
    """The ``--store`` forms this installation can open (``"chroma:DIR"``, ...)."""
    return [sch.form for sch, _ in _schemes().values()]


def open_store(
    uri: str,
    collection: str | None = None,
    *,
    distance: str | None = None,
    trust_pickle: bool = False,
) -> OpenedStore:
    """Open the store ``uri`` names (and its ``collection``) for reading and writing vectors.

    Args:
        uri: see the module docstring.
        collection: the collection or table; may be left out when the store has one.
        distance: ``"cosine"``, ``"dot"`` or ``"l2"``: how the store ranks, for a store whose
            metric cannot be read (a pgvector table without an HNSW or IVFFlat index). A
            store that records its metric must agree with it.
        trust_pickle: allow unpickling a FAISS folder's ``index.pkl`` (LangChain's
            docstore). A pickle runs whatever code it holds when loaded: pass ``True`` only
            for a folder you made or whose maker you trust (CLI: ``--trust-pickle``).

    Raises:
        StoreURIError: unknown scheme (the supported ones listed), a folder or file that does
            not exist, no such collection (those that exist listed), a server that does not
            answer, or a missing client library (with the extra to install).
    """
    scheme, sep, rest = str(uri).partition(":")
    found = _schemes().get(scheme.lower()) if sep else None
    if found is None:
        shown = redact(str(uri))
        msg = f"--store {shown!r}: unknown store; supported: {', '.join(supported_schemes())}"
        raise StoreURIError(msg)
    if distance is not None and distance not in DISTANCES:
        msg = f"--distance: expected one of {', '.join(DISTANCES)}, got {distance!r}"
        raise StoreURIError(msg)
    sch, spec = found
    options = OpenOptions(distance=distance, trust_pickle=trust_pickle)
    opened = spec.function(sch.opener)(uri, sch.scheme, rest, collection, options)
    if distance is not None and opened.backend.distance != distance:
        opened.close()
        msg = (
            f"--distance {distance}: {opened.kind} collection {opened.collection!r} scores by "
            f"{opened.backend.distance} (read from the store); leave --distance out"
        )
        raise StoreURIError(msg)
    return opened


# ---------------------------------------------------------------------- helpers
def need(module: str, extra: str, uri: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        msg = (
            f"--store {uri}: needs {module.split('.')[0]}: pip install 'nudge-rag[{extra}]' ({err})"
        )
        raise StoreURIError(msg) from err


def existing_path(rest: str, uri: str, what: str) -> Path:
    if not rest:
        msg = f"--store {uri!r}: give the {what} after the colon"
        raise StoreURIError(msg)
    path = Path(rest).expanduser()
    if not path.exists():
        msg = f"--store {uri}: {path} does not exist; expected an existing {what}"
        raise StoreURIError(msg)
    return path


def choose(names: list[str], collection: str | None, uri: str, what: str = "collection") -> str:
    if collection is not None:
        if collection not in names:
            have = ", ".join(sorted(names)) or "none"
            msg = f"--store {uri}: no {what} {collection!r}; {what}s there: {have}"
            raise StoreURIError(msg)
        return collection
    if len(names) == 1:
        return names[0]
    if not names:
        msg = f"--store {uri}: the store holds no {what}s"
        raise StoreURIError(msg)
    msg = f"--store {uri}: give --collection; {what}s there: {', '.join(sorted(names))}"
    raise StoreURIError(msg)


@contextlib.contextmanager
def closing_on_error(close: Callable[[], Any], uri: str) -> Iterator[None]:
    """An opener's set-up after its client is open: on any error the client is closed.

    A ``ValueError`` comes out as a :class:`StoreURIError` naming ``--store`` (a metric the
    store does not record, with the ``--distance`` flag that gives it).
    """
    try:
        yield
    except StoreURIError:
        close()
        raise
    except MetricUnknownError as err:
        close()
        msg = f"--store {uri}: {first_line(err)}; pass --distance cosine, dot or l2"
        raise StoreURIError(msg) from err
    except ValueError as err:
        close()
        raise StoreURIError(f"--store {uri}: {first_line(err)}") from err
    except BaseException:
        close()
        raise


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def split_vector(collection: str | None) -> tuple[str | None, str | None]:
    if collection is not None and ":" in collection:
        name, _, vector = collection.partition(":")
        return name, vector
    return collection, None


def redact(uri: str) -> str:
    """``uri`` without a password or secret parameters (for messages)."""
    from nudge_rag._masking import mask_secrets

    return mask_secrets(uri)
