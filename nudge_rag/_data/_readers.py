"""File readers shared by the dataset loaders: JSON, JSON lines, qrels TSV, ids and ``.npy``.

Every problem with a file's content raises :class:`DataFileError` (a ``ValueError``) whose
message names the file, the line (or byte offset) where it applies, what was expected and
what came; a missing file raises ``FileNotFoundError`` with the layout expected.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nudge_rag._errors import DataFileError

logger = logging.getLogger(__name__)

__all__ = [
    "DataFileError",
    "check_known",
    "first_existing",
    "iter_jsonl",
    "load_npy",
    "read_ids",
    "read_json",
    "qrels_line_numbers",
    "read_qrels",
    "read_texts",
    "require_file",
]

N_SHOWN = 5  # ids named in an error message


def _error(
    path: Path, what: str, *, line: int | None = None, offset: int | None = None
) -> DataFileError:
    """A :class:`DataFileError` reading ``path:line: what`` (or ``path: what``)."""
    where = f"{path}:{line}" if line is not None else str(path)
    return DataFileError(f"{where}: {what}", path, line, offset)


# ---------------------------------------------------------------------- files and folders
def require_file(path: Path, layout: str) -> Path:
    """Return ``path`` if it is a file; otherwise raise naming it and the ``layout`` expected.

    Raises:
        FileNotFoundError: no such file.
        DataFileError: ``path`` is a folder.
    """
    if path.is_dir():
        raise _error(path, f"is a folder, not a file; {layout}")
    if not path.is_file():
        msg = f"{path} not found; {layout}"
        raise FileNotFoundError(msg)
    return path


def first_existing(paths: Sequence[Path]) -> Path | None:
    """The first of ``paths`` that is a file, or ``None``."""
    return next((p for p in paths if p.is_file()), None)


def _read_bytes(path: Path, expected: str) -> bytes:
    require_file(path, expected)
    with open(path, "rb") as f:
        return f.read()


def _decode(path: Path, data: bytes, *, line: int | None = None, base: int = 0) -> str:
    """``data`` as UTF-8 text (a leading byte-order mark dropped); errors name the byte."""
    try:
        return data.decode("utf-8-sig" if base == 0 else "utf-8")
    except UnicodeDecodeError as err:
        offset = base + err.start
        if line is None:
            line = data.count(b"\n", 0, err.start) + 1
        bad = data[err.start : err.start + 1]
        raise _error(
            path,
            f"not valid UTF-8 text: byte {bad!r} at byte offset {offset} ({err.reason}); "
            "expected the file in UTF-8",
            line=line,
            offset=offset,
        ) from None


# ---------------------------------------------------------------------- JSON
def read_json(path: Path, expected: str) -> Any:
    """Parse a whole JSON file.

    Args:
        path: the file.
        expected: what the file should hold, for messages (``"a JSON list of ids"``).

    Raises:
        FileNotFoundError: no such file.
        DataFileError: a folder, bytes that are not UTF-8, malformed or too deeply nested JSON.
    """
    text = _decode(path, _read_bytes(path, f"expected {expected}"))
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        msg = f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        offset = len(text[: err.pos].encode("utf-8"))
        raise DataFileError(msg, path, err.lineno, offset) from None
    except RecursionError:
        msg = f"{path}: JSON nested too deeply to read; expected {expected}"
        raise DataFileError(msg, path) from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of each non-blank line of a JSON-lines file.

    Raises:
        FileNotFoundError: no such file.
        DataFileError: a folder, a line that is not UTF-8, malformed JSON, or not an object.
    """
    require_file(path, "expected a JSON-lines file (one JSON object per line)")
    with open(path, "rb") as f:
        offset = 0
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError:
                line = _decode(path, raw, line=lineno, base=offset)  # raises, naming the byte
            offset += len(raw)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                what = f"malformed JSON line (column {err.colno}: {err.msg})"
                raise _error(path, what, line=lineno) from None
            except RecursionError:
                what = "JSON nested too deeply to read; expected one JSON object per line"
                raise _error(path, what, line=lineno) from None
            if not isinstance(record, dict):
                what = f"expected a JSON object, got {_json_kind(record)}"
                raise _error(path, what, line=lineno)
            yield lineno, record


def _json_kind(value: Any) -> str:
    """The JSON name of a parsed value's type (``null``, ``list`` ...)."""
    if value is None:
        return "null"
    return {bool: "boolean", dict: "object", list: "list", str: "string"}.get(
        type(value), type(value).__name__
    )


def _show(value: Any) -> str:
    """A parsed JSON value as it reads in the file, cut to 80 characters."""
    try:
        return f"{json.dumps(value):.80}"
    except (TypeError, ValueError, RecursionError):  # pragma: no cover - parsed JSON dumps
        return f"{value!r:.80}"


def _is_id(value: Any) -> bool:
    """Whether a parsed JSON value is an id: a non-blank string or an integer."""
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, int) and not isinstance(value, bool)


def read_texts(
    path: Path,
    id_keys: Sequence[str],
    *,
    source_key: str | None = None,
    kind: str = "document",
) -> dict[str, tuple[str, str | None]]:
    """``{id: (text, source id)}`` from a JSON-lines file; text is ``title + " " + text``.

    Args:
        path: the file.
        id_keys: the id field names tried, in order, on the first record; every record must
            then have that field.
        source_key: a field with an original id to keep (``None``: none).
        kind: ``"document"`` or ``"query"``; query texts must not be blank.

    Raises:
        DataFileError: a missing or non-id ``id`` (``null``, a float, a list, blank), a
            missing or non-string ``text``, a blank query, or a duplicate id (line named).
    """
    out: dict[str, tuple[str, str | None]] = {}
    id_key: str | None = None
    for lineno, record in iter_jsonl(path):
        if id_key is None:
            id_key = next((key for key in id_keys if key in record), None)
            if id_key is None:
                what = f"no id field; expected one of {list(id_keys)}, got fields {list(record)}"
                raise _error(path, what, line=lineno)
        if id_key not in record:
            raise _error(path, f"missing id field {id_key!r}", line=lineno)
        raw_id = record[id_key]
        if not _is_id(raw_id):
            what = (
                f"field {id_key!r} must be a non-empty string or an integer id, got {_show(raw_id)}"
            )
            raise _error(path, what, line=lineno)
        if "text" not in record:
            raise _error(path, "missing field 'text'", line=lineno)
        text, title = record["text"], record.get("title")
        if not isinstance(text, str):
            what = f"field 'text' must be a string, got {_show(text)}"
            raise _error(path, what, line=lineno)
        if title is not None and not isinstance(title, str):
            what = f"field 'title' must be a string, got {_show(title)}"
            raise _error(path, what, line=lineno)
        if kind == "query" and not text.strip():
            what = f"query {raw_id!r} has a blank 'text'; expected the question"
            raise _error(path, what, line=lineno)
        key = str(raw_id)
        if key in out:
            raise _error(path, f"duplicate id {key!r}", line=lineno)
        source = record.get(source_key) if source_key and source_key != id_key else None
        if source is not None and not _is_id(source):
            what = (
                f"field {source_key!r} must be a non-empty string or an integer id, got "
                f"{_show(source)}"
            )
            raise _error(path, what, line=lineno)
        out[key] = (f"{title} {text}" if title else text, None if source is None else str(source))
    return out


def read_ids(path: Path) -> list[str]:
    """A JSON list of ids (non-empty strings or integers), as unique strings.

    Raises:
        FileNotFoundError: no such file.
        DataFileError: not a list, an entry that is no id, or an id listed twice.
    """
    expected = "a JSON list with the id of each embedding row, next to the .npy"
    ids = read_json(path, expected)
    if not isinstance(ids, list):
        what = f"expected a JSON list of ids (one per embedding row), got {_json_kind(ids)}"
        raise _error(path, what)
    kinds = set(map(type, ids))
    if not kinds <= {str, int} or (str in kinds and not all(map(_is_id, ids))):
        pos = next(i for i, value in enumerate(ids) if not _is_id(value))
        what = f"entry {pos} must be a non-empty string or an integer id, got {_show(ids[pos])}"
        raise _error(path, what)
    out = [str(i) for i in ids]
    if len(set(out)) != len(out):
        first: dict[str, int] = {}
        for pos, value in enumerate(out):
            if value in first:
                what = (
                    f"id {value!r} is listed twice (entries {first[value]} and {pos}); each "
                    "embedding row needs its own id"
                )
                raise _error(path, what)
            first[value] = pos
    return out


# ---------------------------------------------------------------------- qrels
def read_qrels(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Query ids, document ids and int64 grades of a tab-separated qrels file.

    The first non-blank line is a header when its third field is not a number (``score``,
    ``rel``); a numeric first line is data. Scores must be integers (``1`` or ``1.0``).
    :func:`qrels_line_numbers` gives the line of each returned row.

    Raises:
        FileNotFoundError: no such file.
        DataFileError: a folder, bytes that are not UTF-8, a line without three fields, an
            empty id, or a score that is not an integer (line named).
    """
    text = _decode(path, _read_bytes(path, _QRELS_LAYOUT))
    qids: list[str] = []
    dids: list[str] = []
    grades: list[int] = []
    maybe_header = True
    for lineno, line in enumerate(text.split("\n"), start=1):
        fields = line.split("\t")
        if len(fields) != 3:
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 3:
                what = (
                    "expected 3 tab-separated fields (query-id, corpus-id, score), "
                    f"got {len(fields)}"
                )
                raise _error(path, what, line=lineno)
        query_id, doc_id, score = fields
        try:
            grade = int(score)
        except ValueError:
            grade = _integral(score)
            if grade is None:
                if maybe_header and not _is_number(score):
                    maybe_header = False
                    continue  # the header
                what = f"score must be an integer, got {score.strip()!r}"
                raise _error(path, what, line=lineno) from None
        maybe_header = False
        query_id, doc_id = query_id.strip(), doc_id.strip()
        if not query_id or not doc_id:
            what = f"empty {'corpus-id' if query_id else 'query-id'} field"
            raise _error(path, what, line=lineno)
        qids.append(query_id)
        dids.append(doc_id)
        grades.append(grade)
    return qids, dids, np.asarray(grades, dtype=np.int64)


def qrels_line_numbers(path: Path) -> np.ndarray:
    """``(n_rows,)`` int64: the line of each row :func:`read_qrels` returns (for messages)."""
    text = _decode(path, _read_bytes(path, _QRELS_LAYOUT))
    lines = []
    maybe_header = True
    for lineno, line in enumerate(text.split("\n"), start=1):
        fields = line.split("\t")
        if len(fields) != 3:
            if not line.strip():
                continue
            fields = line.split()
        if maybe_header and _integral(fields[2]) is None and not _is_number(fields[2]):
            maybe_header = False
            continue
        maybe_header = False
        lines.append(lineno)
    return np.asarray(lines, dtype=np.int64)


_QRELS_LAYOUT = "expected a qrels file (query-id, corpus-id, score per line)"


def _integral(field: str) -> int | None:
    """``field`` as an integer grade (``"2"``, ``"2.0"``), or ``None``."""
    try:
        return int(field)
    except ValueError:
        pass
    try:
        value = float(field)
    except ValueError:
        return None
    if np.isfinite(value) and value == round(value):
        return int(value)
    return None


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------- .npy
def load_npy(path: Path, *, mmap: bool, what: str = "embeddings") -> np.ndarray:
    """A 2-D float32 array from a ``.npy`` file, checked before it is mapped or read.

    Args:
        path: the file.
        mmap: open with ``mmap_mode="r"`` instead of reading it.
        what: what the rows are, for messages.

    Raises:
        FileNotFoundError: no such file.
        DataFileError: an empty, truncated or non-``.npy`` file, an array that is not 2-D
            with at least one row and column, or not floating point.
    """
    expected = f"expected a .npy array of {what} with shape (n_rows, dim), saved by numpy.save"
    require_file(path, expected)
    size = path.stat().st_size
    if size == 0:
        raise _error(path, f"empty file (0 bytes); {expected}", offset=0)
    shape, dtype, data_start = _npy_header(path, expected)
    if dtype.hasobject:
        raise _error(path, f"holds Python objects (dtype {dtype}); {expected} (float32)")
    n_bytes = data_start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < n_bytes:
        what_came = (
            f"truncated: the header declares a {shape} {dtype} array ({n_bytes} bytes in all), "
            f"but the file has {size} bytes"
        )
        raise _error(path, what_came, offset=size)
    if len(shape) != 2:
        raise _error(path, f"expected a 2-D (n_rows, dim) array, got shape {shape}")
    if shape[0] == 0 or shape[1] == 0:
        raise _error(path, f"holds no {what}: shape {shape}; {expected}")
    if not np.issubdtype(dtype, np.floating):
        raise _error(path, f"expected float32 {what}, got dtype {dtype}")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:  # the header was fine: report numpy's words
        raise _error(path, f"cannot read the array ({err}); {expected}") from err
    if arr.dtype != np.float32:
        logger.warning("%s holds %s; converting to float32 in memory", path, arr.dtype)
        arr = np.asarray(arr, dtype=np.float32)
    return arr


def _npy_header(path: Path, expected: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, byte offset of the data)`` from a ``.npy`` header."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        try:
            version = fmt.read_magic(f)
        except ValueError as err:
            raise _error(path, f"not a .npy file ({err}); {expected}", offset=0) from None
        try:
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(f)
            else:  # version 3.0 (utf-8 field names): let numpy read it
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
                return arr.shape, arr.dtype, int(arr.offset)
        except (ValueError, EOFError, OSError) as err:
            raise _error(path, f"unreadable .npy header ({err}); {expected}", offset=0) from None
        return tuple(shape), np.dtype(dtype), f.tell()


# ---------------------------------------------------------------------- ids
def check_known(
    ids: Any,
    known: Mapping[Any, Any],
    where: str,
    kind: str,
    known_as: str,
    *,
    path: Path | None = None,
) -> None:
    """Raise naming the first few ``ids`` that are not keys of ``known``.

    Args:
        ids: the ids to check.
        known: the ids that exist, as mapping keys.
        where: who names the ids (an argument or a file), the start of the message.
        kind: ``"query"`` or ``"document"``.
        known_as: where the known ids come from.
        path: the file that names the ids, if any: then :class:`DataFileError` is raised.

    Raises:
        ValueError: some ids are unknown (:class:`DataFileError` when ``path`` is given).
    """
    unknown = list(dict.fromkeys(i for i in ids if i not in known))
    if unknown:
        msg = (
            f"{where} names {len(unknown)} {kind} id(s) that are not in {known_as}, e.g. "
            f"{unknown[:N_SHOWN]!r}"
        )
        raise ValueError(msg) if path is None else DataFileError(msg, path)
