"""Which store a write-back state belongs to, and where a store's originals are kept.

A state folder records what it protects in ``identity.json``: the store's kind (its backend
class), its location (its default state folder, or the URI the CLI opened), its collection or
table, the vectors' dimension and a fingerprint of a few saved originals (id and a hash of
the float32 bytes). :class:`~nudge_rag.WriteBack` refuses to act for a store that does not
match, naming both.

A store also has one *home* for its state: its own tables (pgvector), its default state
folder (``<folder>/nudge_state/...``), or the memory of the store object. When the originals
are kept elsewhere (``state_dir=`` / ``--state-dir``), the home records where
(``claimed_by.json``, or a key in the store's own meta), so a later call that forgets the
folder, or names another one, is refused instead of reading tuned vectors as originals.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nudge_rag._masking import mask_secrets

logger = logging.getLogger(__name__)

__all__ = ["IDENTITY", "CLAIM", "StoreIdentity", "fingerprint", "identity_of"]

IDENTITY = "identity.json"
CLAIM = "claimed_by.json"
#: Key under which a store that keeps its own state records a folder that holds its originals.
CLAIM_KEY = "originals_kept_in"
#: Saved originals whose hashes the identity records.
N_FINGERPRINT = 8


@dataclass(frozen=True)
class StoreIdentity:
    """What a state folder protects.

    Attributes:
        kind: the backend class, e.g. ``"ChromaBackend"``.
        location: where the store lives (its default state folder, or the URI it was opened
            with, secrets masked); ``None`` when unknown.
        collection: the collection or table (``store.name``).
        dim: the dimension of its vectors; ``None`` when not known yet.
    """

    kind: str
    location: str | None
    collection: str
    dim: int | None = None

    def describe(self) -> str:
        """One line for messages."""
        where = f" at {self.location}" if self.location else ""
        dim = f", {self.dim}-dimensional" if self.dim else ""
        return f"{self.kind} {self.collection!r}{where}{dim}"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (without the fingerprint)."""
        return {
            "kind": self.kind,
            "location": self.location,
            "collection": self.collection,
            "dim": self.dim,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> StoreIdentity:
        """Read back :meth:`as_dict` (missing keys count as unknown)."""
        dim = payload.get("dim")
        location = payload.get("location")
        return cls(
            kind=str(payload.get("kind", "")),
            location=None if location is None else str(location),
            collection=str(payload.get("collection", "")),
            dim=int(dim) if isinstance(dim, int) and not isinstance(dim, bool) else None,
        )

    @property
    def named(self) -> bool:
        """Whether the collection is a real name (not the class name a nameless store has)."""
        return bool(self.collection) and self.collection != self.kind

    def conflicts(self, other: StoreIdentity) -> list[str]:
        """What surely differs: the collection (both named) or the dimension (both known)."""
        out = []
        if self.named and other.named and self.collection != other.collection:
            out.append("collection")
        if self.dim is not None and other.dim is not None and self.dim != other.dim:
            out.append("dimension")
        return out

    def moved(self, other: StoreIdentity) -> list[str]:
        """What may differ for the same data: the backend class or the location."""
        out = []
        if self.kind and other.kind and self.kind != other.kind:
            out.append("kind")
        if self.location and other.location and self.location != other.location:
            out.append("location")
        return out


def _unwrap(store: Any) -> Any:
    """The backend under wrappers that forward to ``inner`` / ``_inner``."""
    seen = 0
    while seen < 8:
        inner = store.__dict__.get("inner", None) if hasattr(store, "__dict__") else None
        if inner is None and hasattr(store, "__dict__"):
            inner = store.__dict__.get("_inner", None)
        if inner is None:
            return store
        store, seen = inner, seen + 1
    return store


def identity_of(store: Any, dim: int | None = None) -> StoreIdentity:
    """The identity of ``store`` (see :class:`StoreIdentity`)."""
    backend = _unwrap(store)
    location: str | None = None
    try:
        default = store.default_state_dir()
    except Exception as err:  # noqa: BLE001 - a backend that cannot tell: location unknown
        logger.debug("default_state_dir() of %s failed: %s", type(backend).__name__, err)
        default = None
    if default is not None:
        location = str(Path(default).resolve())
    else:
        given = getattr(store, "location", None)
        location = mask_secrets(str(given)) if given else None
    return StoreIdentity(type(backend).__name__, location, str(store.name), dim)


def fingerprint(ids: list[str], vectors: np.ndarray) -> dict[str, str]:
    """Hashes of the first :data:`N_FINGERPRINT` saved originals, by id."""
    out = {}
    for i, row in zip(ids[:N_FINGERPRINT], vectors[:N_FINGERPRINT]):
        digest = hashlib.sha256(np.ascontiguousarray(row, dtype=np.float32).tobytes())
        out[str(i)] = digest.hexdigest()[:16]
    return out


def same_folder(a: str | os.PathLike | None, b: str | os.PathLike | None) -> bool:
    """Whether two folder paths name the same folder (resolved; missing folders by path)."""
    if a is None or b is None:
        return a is None and b is None
    return Path(a).resolve() == Path(b).resolve()
