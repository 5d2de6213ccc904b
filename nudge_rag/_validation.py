"""Input checks at the public boundary, written once.

Every message names the argument, what was expected and what came, in the style of
scikit-learn (``X has 5 features, but ... is expecting 4``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "check_matrix",
    "check_finite_rows",
    "check_answers",
    "check_positive_int",
    "check_gamma",
    "row_sq_norms",
    "check_csr",
]


def check_matrix(
    value: Any,
    name: str,
    *,
    dim: int | None = None,
    allow_empty: bool = False,
    copy_ok: bool = True,
    check_finite: bool = True,
) -> np.ndarray:
    """Return ``value`` as a 2-D float32 array (a view when it already is one).

    Args:
        value: array-like of shape ``(n_rows, dim)``; ``np.memmap`` is accepted and not read
            in full unless ``check_finite`` is set.
        name: the argument's name, used in error messages.
        dim: the expected number of columns, or ``None`` for any.
        allow_empty: whether zero rows are acceptable.
        copy_ok: whether a float64 (or other numeric) input may be converted to a float32 copy.
        check_finite: scan for NaN / inf.

    Raises:
        TypeError: non-numeric input.
        ValueError: wrong number of dimensions, wrong width, empty, NaN or inf.
    """
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError) as err:
            msg = f"{name} must be a 2-D numeric array, got {type(value).__name__} ({err})"
            raise TypeError(msg) from err
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        msg = f"{name} must be a numeric array (float32 or float64), got dtype {arr.dtype}"
        raise TypeError(msg)
    if arr.ndim != 2:
        msg = (
            f"{name} must be 2-D with shape (n_rows, dim), "
            f"got {arr.ndim}-D array of shape {arr.shape}"
        )
        raise ValueError(msg)
    if not allow_empty and arr.shape[0] == 0:
        msg = f"{name} is empty: expected at least one row, got shape {arr.shape}"
        raise ValueError(msg)
    if arr.shape[1] == 0:
        msg = (
            f"{name} has zero columns: expected shape (n_rows, dim) with dim >= 1, got {arr.shape}"
        )
        raise ValueError(msg)
    if dim is not None and arr.shape[1] != dim:
        msg = f"{name} has {arr.shape[1]} dimensions, but the documents have {dim}"
        raise ValueError(msg)
    if arr.dtype != np.float32:
        if np.issubdtype(arr.dtype, np.floating) and arr.size:
            big = np.abs(arr) > np.finfo(np.float32).max
            if big.any():
                row = int(np.flatnonzero(big.any(axis=1))[0])
                msg = f"{name} row {row} holds values beyond the float32 range (|x| > 3.4e38)"
                raise ValueError(msg)
        if not copy_ok:
            msg = f"{name} must be float32, got {arr.dtype}"
            raise TypeError(msg)
        if arr.dtype != np.float64:
            logger.debug("converting %s from %s to float32", name, arr.dtype)
        arr = arr.astype(np.float32)
    if check_finite:
        check_finite_rows(arr, name)
    return arr


def row_sq_norms(block: np.ndarray) -> np.ndarray:
    """Squared row norms, in one pass with no temporary.

    inf/NaN where a row is not finite (or where its squares overflow).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        return np.einsum("ij,ij->i", block, block)


def check_finite_rows(block: np.ndarray, name: str, *, offset: int = 0) -> None:
    """Raise ``ValueError`` naming the first row of ``block`` that holds NaN or inf.

    Args:
        block: ``(n_rows, dim)`` array.
        name: the argument's name.
        offset: the row number of ``block[0]`` in the caller's array.
    """
    if block.dtype.kind == "f" and block.size:
        # One pass without a temporary: a NaN or inf anywhere in a row makes its sum of
        # squares non-finite (so does a finite row whose squares overflow: checked below).
        if np.isfinite(row_sq_norms(block)).all():
            return
    elif block.dtype.kind in "iub":
        return
    finite = np.isfinite(block).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        msg = (
            f"{name} must be finite, but row {int(bad[0]) + offset} holds NaN or inf "
            f"({bad.size} such rows in rows {offset}..{offset + block.shape[0] - 1})"
        )
        raise ValueError(msg)


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an ``int`` that is at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        msg = f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})"
        raise TypeError(msg)
    if value < minimum:
        msg = f"{name} must be an integer >= {minimum}, got {value}"
        raise ValueError(msg)
    return int(value)


def check_gamma(value: Any, name: str = "gamma", *, upper: float | None = None) -> float:
    """Return ``value`` as a finite float in ``[0, upper]``.

    A list or array is refused with a message that points to ``gammas=`` (the reference
    implementation typed ``gamma`` as a list but used it as a number).
    """
    if isinstance(value, (list, tuple, np.ndarray)):
        msg = (
            f"{name} must be a single number (the fixed step size), got {type(value).__name__}; "
            "pass candidate values as gammas=[...] to search over them"
        )
        raise TypeError(msg)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        msg = f"{name} must be a number, got {value!r} ({type(value).__name__})"
        raise TypeError(msg)
    value = float(value)
    if not np.isfinite(value) or value < 0 or (upper is not None and value > upper):
        bound = f"[0, {upper}]" if upper is not None else ">= 0"
        msg = f"{name} must be a finite number in {bound}, got {value}"
        raise ValueError(msg)
    return value


def check_answers(
    answers: Any,
    name: str,
    *,
    n_queries: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn answers into CSR ``(indptr, indices)`` int64 arrays, one row per query.

    Accepted: a sequence of sequences of ints (``[[3, 7], [1]]``), a ``scipy.sparse`` matrix of
    shape ``(n_queries, n_docs)`` whose non-zeros mark answers, or an ``(indptr, indices)`` pair.
    Range checks against the corpus size happen in :func:`check_answer_range`.
    """
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy is a dependency
        sp = None
    if sp is not None and sp.issparse(answers):
        csr = sp.csr_matrix(answers)
        csr.sum_duplicates()
        csr.eliminate_zeros()
        if csr.shape[0] != n_queries:
            msg = f"{name} has {csr.shape[0]} rows, but there are {n_queries} query embeddings"
            raise ValueError(msg)
        indptr = csr.indptr.astype(np.int64)
        indices = csr.indices.astype(np.int64)
        return indptr, indices
    if (
        isinstance(answers, tuple)
        and len(answers) == 2
        and all(isinstance(a, np.ndarray) for a in answers)
    ):
        indptr = np.asarray(answers[0], dtype=np.int64)
        indices = np.asarray(answers[1], dtype=np.int64)
        if indptr.ndim != 1 or indptr.size != n_queries + 1 or indptr[0] != 0:
            msg = (
                f"{name} as (indptr, indices) needs indptr of length n_queries + 1 = "
                f"{n_queries + 1} starting at 0, got length {indptr.size}"
            )
            raise ValueError(msg)
        if np.any(np.diff(indptr) < 0) or indptr[-1] != indices.size:
            msg = f"{name}: indptr must be non-decreasing and end at len(indices) = {indices.size}"
            raise ValueError(msg)
        return indptr, indices
    if isinstance(answers, (str, bytes)) or not isinstance(answers, Sequence):
        if not isinstance(answers, np.ndarray):
            msg = (
                f"{name} must be a list with one list of answer rows per query, a scipy.sparse "
                f"matrix or an (indptr, indices) pair, got {type(answers).__name__}"
            )
            raise TypeError(msg)
    if len(answers) != n_queries:
        msg = f"{name} has {len(answers)} entries, but there are {n_queries} query embeddings"
        raise ValueError(msg)
    fast = _plain_int_lists(answers)
    if fast is not None:
        return fast
    lengths = np.empty(n_queries, dtype=np.int64)
    flat: list[int] = []
    for i, row in enumerate(answers):
        if isinstance(row, (int, np.integer)) and not isinstance(row, bool):
            row = (row,)
        try:
            row_arr = np.asarray(row)
        except (TypeError, ValueError) as err:  # ragged or odd objects
            msg = f"{name}[{i}] must be a list of integer row indices, got {row!r}"
            raise TypeError(msg) from err
        if row_arr.size and not np.issubdtype(row_arr.dtype, np.integer):
            if (
                np.issubdtype(row_arr.dtype, np.floating)
                and np.all(np.isfinite(row_arr))
                and np.all(np.abs(row_arr) < 2.0**62)
                and np.all(row_arr == np.round(row_arr))
            ):
                row_arr = row_arr.astype(np.int64)
            else:
                msg = (
                    f"{name}[{i}] must hold integer row indices, got {row!r} "
                    f"(dtype {row_arr.dtype}); map document ids to rows first"
                )
                raise TypeError(msg)
        row_arr = row_arr.reshape(-1)
        lengths[i] = row_arr.size
        flat.extend(row_arr.tolist())
    indptr = np.zeros(n_queries + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return indptr, np.asarray(flat, dtype=np.int64)


def _plain_int_lists(answers: Sequence[Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """CSR arrays for the common case, lists of Python ints, without a loop per query.

    Returns ``None`` for anything else (numpy rows, floats, bools, scalars, nested lists),
    which the general path then checks row by row with precise messages.
    """
    try:
        lengths = np.fromiter(map(len, answers), dtype=np.int64, count=len(answers))
        flat = list(itertools.chain.from_iterable(answers))
    except TypeError:  # a scalar or other non-sized entry
        return None
    if flat and set(map(type, flat)) != {int}:  # exact type: no bool, float or numpy scalar
        return None
    indptr = np.zeros(len(answers) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    try:
        indices = np.fromiter(flat, dtype=np.int64, count=len(flat))
    except OverflowError:
        return None
    return indptr, indices


def check_answer_range(indices: np.ndarray, indptr: np.ndarray, name: str, n_docs: int) -> None:
    """Raise ``ValueError`` for an answer row outside ``[0, n_docs)``, naming query and value."""
    if indices.size == 0:
        return
    bad = np.flatnonzero((indices < 0) | (indices >= n_docs))
    if bad.size:
        pos = int(bad[0])
        query = int(np.searchsorted(indptr, pos, side="right") - 1)
        value = int(indices[pos])
        hint = " (negative indices are not allowed)" if value < 0 else ""
        msg = (
            f"{name}[{query}] names document row {value}, but the documents have rows "
            f"0..{n_docs - 1}{hint}; {bad.size} answer(s) out of range in all"
        )
        raise ValueError(msg)


def check_csr(
    indptr: Any, indices: Any, name: str, *, n_queries: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return CSR ``(indptr, indices)`` as int64 arrays after checking their structure.

    Row ``i`` of the structure is ``indices[indptr[i]:indptr[i + 1]]``: the document rows of
    query ``i``. Range checks against the corpus size happen in :func:`check_answer_range`.

    Args:
        indptr: ``(n_queries + 1,)`` int array, non-decreasing, starting at 0.
        indices: ``(n_pairs,)`` int array of document rows (``>= 0``).
        name: the argument's name, used in error messages.
        n_queries: the number of rows expected, or ``None`` for any.

    Raises:
        TypeError: non-integer arrays.
        ValueError: arrays not 1-D, an ``indptr`` of the wrong length, not starting at 0,
            decreasing or not ending at ``len(indices)``, or a negative document row.
    """
    indptr = _int_vector(indptr, f"{name} indptr")
    indices = _int_vector(indices, f"{name} indices")
    wrong_length = n_queries is not None and indptr.size != n_queries + 1
    if indptr.size == 0 or indptr[0] != 0 or wrong_length:
        expected = "n_queries + 1" if n_queries is None else f"n_queries + 1 = {n_queries + 1}"
        msg = (
            f"{name}: indptr must start with 0 and have length {expected}, got length "
            f"{indptr.size} starting {indptr[:3].tolist()}"
        )
        raise ValueError(msg)
    if indptr[-1] != indices.size or (indptr.size > 1 and np.any(indptr[1:] < indptr[:-1])):
        msg = (
            f"{name}: indptr must be non-decreasing and end at len(indices) = {indices.size}, "
            f"got last value {int(indptr[-1])}"
        )
        raise ValueError(msg)
    if indices.size and indices.min() < 0:
        pos = int(np.argmin(indices))
        query = int(np.searchsorted(indptr, pos, side="right") - 1)
        msg = (
            f"{name}[{query}] names document row {int(indices[pos])}; negative indices are "
            "not allowed"
        )
        raise ValueError(msg)
    return indptr, indices


def _int_vector(value: Any, name: str) -> np.ndarray:
    """``value`` as a 1-D int64 array; integral floats are accepted, other dtypes refused."""
    arr = np.asarray(value)
    if arr.ndim != 1:
        msg = f"{name} must be a 1-D integer array, got shape {arr.shape}"
        raise ValueError(msg)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if (
            np.issubdtype(arr.dtype, np.floating)
            and np.all(np.isfinite(arr))
            and np.all(np.abs(arr) < 2.0**62)
            and np.all(arr == np.round(arr))
        ):
            return arr.astype(np.int64)
        msg = f"{name} must hold integers, got dtype {arr.dtype}"
        raise TypeError(msg)
    return arr.astype(np.int64, copy=False)


def check_storable_ids(ids: Sequence[str], name: str = "ids") -> None:
    """Refuse ids that cannot be saved and read back exactly (before anything is written).

    A NUL character is dropped at the end of a numpy string (``originals.npz``) and refused
    by PostgreSQL text; a lone surrogate cannot be encoded as UTF-8 (JSON, SQL, most
    stores). Either would leave a document that ``restore()`` cannot find again.

    Args:
        ids: the ids (already strings).
        name: the argument name, for the message.

    Raises:
        ValueError: naming the first such id (as ``repr``) and what is wrong with it.
    """
    joined = "".join(ids)
    bad_nul = "\x00" in joined
    try:
        joined.encode("utf-8")
        bad_utf8 = False
    except UnicodeEncodeError:
        bad_utf8 = True
    if not (bad_nul or bad_utf8):
        return
    for doc_id in ids:
        if "\x00" in doc_id:
            msg = (
                f"{name}: document id {doc_id!r} contains a NUL character, which cannot be saved "
                "and read back exactly (numpy drops a trailing NUL, PostgreSQL refuses it); "
                "nothing was written. Rename the document in the store."
            )
            raise ValueError(msg)
        try:
            doc_id.encode("utf-8")
        except UnicodeEncodeError:
            msg = (
                f"{name}: document id {doc_id!r} contains a lone surrogate (not valid Unicode "
                "text), which cannot be saved as UTF-8; nothing was written. Rename the "
                "document in the store."
            )
            raise ValueError(msg) from None
