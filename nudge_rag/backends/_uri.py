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

import importlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
        shown = _redact(str(uri))
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
def _import(module: str, extra: str, uri: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        msg = (
            f"--store {uri}: needs {module.split('.')[0]}: pip install 'nudge-rag[{extra}]' ({err})"
        )
        raise StoreURIError(msg) from err


def _folder(rest: str, uri: str, what: str) -> Path:
    if not rest:
        msg = f"--store {uri!r}: give the {what} after the colon"
        raise StoreURIError(msg)
    path = Path(rest).expanduser()
    if not path.exists():
        msg = f"--store {uri}: {path} does not exist; expected an existing {what}"
        raise StoreURIError(msg)
    return path


def _choose(names: list[str], collection: str | None, uri: str, what: str = "collection") -> str:
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


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---------------------------------------------------------------------- Chroma
def _chroma_backend(client: Any, collection: str | None, uri: str) -> tuple[Any, str]:
    from nudge_rag.backends.chroma import ChromaBackend

    names = [getattr(c, "name", c) for c in client.list_collections()]
    name = _choose([str(n) for n in names], collection, uri)
    return ChromaBackend(client.get_collection(name)), name


def _open_chroma_dir(
    uri: str, scheme: str, rest: str, collection: str | None, options: OpenOptions
) -> OpenedStore:
    path = _folder(rest, uri, "Chroma persist folder")
    if not path.is_dir() or not (path / "chroma.sqlite3").is_file():
        msg = f"--store {uri}: {path} is not a Chroma persist folder (no chroma.sqlite3)"
        raise StoreURIError(msg)
    chromadb = _import("chromadb", "chroma", uri)
    try:
        client = chromadb.PersistentClient(path=str(path))
    except Exception as err:  # noqa: BLE001 - chromadb raises many kinds
        msg = f"--store {uri}: cannot open the Chroma folder: {_first_line(err)}"
        raise StoreURIError(msg) from err
    backend, name = _chroma_backend(client, collection, uri)
    return OpenedStore(backend, uri, "chroma", name)


def _open_chroma_http(
    uri: str, scheme: str, rest: str, collection: str | None, options: OpenOptions
) -> OpenedStore:
    parts = urlsplit(uri.split("+", 1)[1])
    if not parts.hostname:
        msg = f"--store {uri!r}: expected chroma+http://HOST:PORT"
        raise StoreURIError(msg)
    ssl = parts.scheme == "https"
    port = parts.port or (443 if ssl else 8000)
    chromadb = _import("chromadb", "chroma", uri)
    try:
        client = chromadb.HttpClient(host=parts.hostname, port=port, ssl=ssl)
        client.heartbeat()
    except Exception as err:  # noqa: BLE001 - connection errors of every kind
        msg = (
            f"--store {uri}: cannot reach the Chroma server at {parts.hostname}:{port}: "
            f"{_first_line(err)}"
        )
        raise StoreURIError(msg) from err
    backend, name = _chroma_backend(client, collection, uri)
    return OpenedStore(backend, uri, "chroma", name)


# ---------------------------------------------------------------------- Qdrant
def _qdrant_backend(client: Any, collection: str | None, uri: str) -> tuple[Any, str]:
    from nudge_rag.backends.qdrant import QdrantBackend

    names = [c.name for c in client.get_collections().collections]
    name = _choose(names, collection, uri)
    vectors = client.get_collection(name).config.params.vectors
    vector_name = ""
    if isinstance(vectors, dict):
        if "text-dense" in vectors:  # LlamaIndex's name
            vector_name = "text-dense"
        elif len(vectors) == 1:
            vector_name = next(iter(vectors))
        else:
            msg = (
                f"--store {uri}: collection {name!r} has several dense vectors "
                f"({', '.join(sorted(vectors))}); give --collection {name}:VECTOR"
            )
            raise StoreURIError(msg)
    return QdrantBackend(client, name, vector_name), name


def _split_vector(collection: str | None) -> tuple[str | None, str | None]:
    if collection is not None and ":" in collection:
        name, _, vector = collection.partition(":")
        return name, vector
    return collection, None


def _qdrant(client: Any, collection: str | None, uri: str) -> OpenedStore:
    from nudge_rag.backends.qdrant import QdrantBackend

    name, vector = _split_vector(collection)
    try:
        if vector is not None:
            _choose([c.name for c in client.get_collections().collections], name, uri)
            backend = QdrantBackend(client, name, vector)
        else:
            backend, name = _qdrant_backend(client, name, uri)
    except StoreURIError:
        client.close()
        raise
    except ValueError as err:
        client.close()
        raise StoreURIError(f"--store {uri}: {err}") from err
    return OpenedStore(backend, uri, "qdrant", str(name), client.close)


def _open_qdrant_dir(
    uri: str, scheme: str, rest: str, collection: str | None, options: OpenOptions
) -> OpenedStore:
    path = _folder(rest, uri, "Qdrant local folder")
    if not path.is_dir() or not (path / "collection").is_dir():
        msg = f"--store {uri}: {path} is not a Qdrant local folder (no collection/ inside)"
        raise StoreURIError(msg)
    qdrant_client = _import("qdrant_client", "qdrant", uri)
    try:
        client = qdrant_client.QdrantClient(path=str(path))
    except Exception as err:  # noqa: BLE001 - e.g. the folder is locked by another process
        msg = f"--store {uri}: cannot open the Qdrant folder: {_first_line(err)}"
        raise StoreURIError(msg) from err
    return _qdrant(client, collection, uri)


def _open_qdrant_http(
    uri: str, scheme: str, rest: str, collection: str | None, options: OpenOptions
) -> OpenedStore:
    url = uri.split("+", 1)[1]
    qdrant_client = _import("qdrant_client", "qdrant", uri)
    try:
        client = qdrant_client.QdrantClient(url=url, timeout=10)
        client.get_collections()
    except Exception as err:  # noqa: BLE001 - connection errors of every kind
        msg = f"--store {uri}: cannot reach the Qdrant server at {url}: {_first_line(err)}"
        raise StoreURIError(msg) from err
    return _qdrant(client, collection, uri)


# ---------------------------------------------------------------------- FAISS
def _open_faiss(
    uri: str, scheme: str, rest: str, collection: str | None, options: OpenOptions
) -> OpenedStore:
    """A LangChain ``FAISS.save_local`` folder (``<name>.faiss`` + ``<name>.pkl``).

    The backend writes through to the saved index file, so the folder itself is tuned
    (no second ``save_local`` needed); ``--collection`` is ``save_local``'s ``index_name``.
    ``<name>.pkl`` is a pickle: it is loaded only with ``trust_pickle=True``.
    """
    path = _folder(rest, uri, "FAISS save_local folder")
    name = collection or "index"
    if not (path / f"{name}.faiss").is_file() or not (path / f"{name}.pkl").is_file():
        have = sorted(p.stem for p in path.glob("*.faiss")) if path.is_dir() else []
        msg = (
            f"--store {uri}: no {name}.faiss + {name}.pkl in {path} (a LangChain "
            f"FAISS.save_local folder); index names there: {', '.join(have) or 'none'}"
        )
        raise StoreURIError(msg)
    if not options.trust_pickle:
        msg = (
            f"--store {uri}: {path / (name + '.pkl')} is a Python pickle (LangChain's FAISS "
            "docstore), and loading a pickle runs whatever code it holds. Nothing was read. "
            "Add --trust-pickle (Python: open_store(..., trust_pickle=True)) only for a folder "
            "you made or whose maker you trust."
        )
        raise StoreURIError(msg)
    _import("faiss", "faiss", uri)
    community = _import("langchain_community.vectorstores", "faiss", uri)
    from nudge_rag.backends.faiss import from_langchain

    try:
        # index.pkl is a pickle (LangChain's format): the caller opted in (trust_pickle).
        store = community.FAISS.load_local(
            str(path), _NoEmbeddings(), index_name=name, allow_dangerous_deserialization=True
        )
        backend = from_langchain(store, folder=path, index_name=name)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise StoreURIError(f"--store {uri}: {_first_line(err)}") from err
    return OpenedStore(backend, uri, "faiss", name)


class _NoEmbeddings:
    """Stands in for the model of a loaded ``FAISS`` store: nudge-rag never embeds through it."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError("the command line embeds questions with --embed")

    def embed_query(self, text: str) -> list[float]:
        raise NotImplementedError("the command line embeds questions with --embed")


# ---------------------------------------------------------------------- pgvector
def _open_pgvector(
    uri: str, scheme: str, rest: str, collection: str | None, options: OpenOptions
) -> OpenedStore:
    """A pgvector table (``--collection data_<name>``) or LangChain collection (its name)."""
    _import("psycopg", "postgres", uri)
    from nudge_rag.backends.pgvector import PgVectorBackend

    shown = _redact(uri)
    if collection is None:
        msg = (
            f"--store {shown}: give --collection: a LangChain PGVector collection name or a "
            "table (LlamaIndex: data_<table_name>)"
        )
        raise StoreURIError(msg)
    unknown_metric = (
        f"--store {shown} --collection {collection}: the table has no HNSW or IVFFlat index "
        "to read the metric from; pass --distance cosine, dot or l2 (how your queries rank: "
        "<=>, <#> or <->)"
    )
    try:
        try:
            backend = PgVectorBackend.from_url(uri, table=collection, distance=options.distance)
        except MetricUnknownError as err:
            raise StoreURIError(unknown_metric) from err
        except ValueError as table_err:
            try:
                backend = PgVectorBackend.from_url(
                    uri, collection=collection, distance=options.distance
                )
            except MetricUnknownError as err:
                raise StoreURIError(unknown_metric) from err
            except ValueError as coll_err:
                msg = (
                    f"--store {shown}: {collection!r} is neither a table "
                    f"({_first_line(table_err)}) nor a LangChain collection "
                    f"({_first_line(coll_err)})"
                )
                raise StoreURIError(msg) from coll_err
    except StoreURIError:
        raise
    except Exception as err:  # noqa: BLE001 - connection errors of every kind
        msg = f"--store {shown}: cannot reach PostgreSQL: {_first_line(err)}"
        raise StoreURIError(msg) from err
    close = getattr(backend, "close", None)
    return OpenedStore(backend, shown, "pgvector", collection, close if callable(close) else None)


# ---------------------------------------------------------------------- Milvus Lite
def _open_milvus(
    uri: str, scheme: str, rest: str, collection: str | None, options: OpenOptions
) -> OpenedStore:
    """A Milvus Lite ``.db`` file; ``--collection NAME`` or ``NAME:VECTOR_FIELD``."""
    path = _folder(rest, uri, "Milvus Lite .db file")
    pymilvus = _import("pymilvus", "milvus", uri)
    from nudge_rag.backends.milvus import MilvusBackend

    name, field = _split_vector(collection)
    try:
        client = pymilvus.MilvusClient(uri=str(path), db_name="default")
    except Exception as err:  # noqa: BLE001 - milvus-lite raises many kinds
        msg = f"--store {uri}: cannot open the Milvus Lite file: {_first_line(err)}"
        raise StoreURIError(msg) from err
    try:
        name = _choose([str(c) for c in client.list_collections()], name, uri)
        backend = MilvusBackend(client, name, field, uri=str(path))
    except StoreURIError:
        client.close()
        raise
    except ValueError as err:
        client.close()
        raise StoreURIError(f"--store {uri}: {_first_line(err)}") from err

    def close() -> None:
        client.close()
        try:  # milvus-lite keeps the file locked by an in-process server until released
            from milvus_lite.server_manager import server_manager_instance
        except ImportError:  # pragma: no cover - other milvus-lite versions
            return
        server_manager_instance.release_server(str(path))

    return OpenedStore(backend, uri, "milvus", name, close)


# ---------------------------------------------------------------------- LanceDB
def _open_lancedb(
    uri: str, scheme: str, rest: str, collection: str | None, options: OpenOptions
) -> OpenedStore:
    """A LanceDB folder; ``--collection`` is the table."""
    path = _folder(rest, uri, "LanceDB folder")
    lancedb = _import("lancedb", "lancedb", uri)
    from nudge_rag.backends.lancedb import LanceDBBackend

    try:
        connection = lancedb.connect(str(path))
        listed = connection.table_names()
    except Exception as err:  # noqa: BLE001 - lancedb raises many kinds
        msg = f"--store {uri}: cannot open the LanceDB folder: {_first_line(err)}"
        raise StoreURIError(msg) from err
    name = _choose([str(t) for t in listed], collection, uri, "table")
    try:
        backend = LanceDBBackend(connection.open_table(name))
    except ValueError as err:
        raise StoreURIError(f"--store {uri}: {_first_line(err)}") from err
    return OpenedStore(backend, uri, "lancedb", name)


def _redact(uri: str) -> str:
    """``uri`` without a password or secret parameters (for messages)."""
    from nudge_rag._masking import mask_secrets

    return mask_secrets(uri)


#: The helpers an opener in a store module uses (the names say what they check).
choose, existing_path, need = _choose, _folder, _import
