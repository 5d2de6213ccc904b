"""The feedback log refuses what would lose or invent data, on SQLite and PostgreSQL alike.

Each case of issue 20: a negative or non-finite purge age; an import whose query line reuses a
stored query id to mark a document that was never shown; a bad import line (JSON, fields,
encoding) named by file and line; a file that is not SQLite; NUL and lone surrogates; a
``feedback()`` that races ``purge()``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
import uuid
from datetime import timedelta

import numpy as np
import pytest

import nudge_rag._feedback as feedback_module
from nudge_rag import ArrayStore, FeedbackLog, StoreTuner, UnknownIdError, tune_from_feedback


@pytest.fixture(params=["sqlite", "postgresql"])
def log(request, tmp_path):
    if request.param == "sqlite":
        opened = FeedbackLog(tmp_path / "log.db")
    else:
        pytest.importorskip("psycopg", reason="pip install 'nudge-rag[postgres]'")
        url = request.getfixturevalue("pg_url")
        opened = FeedbackLog(url, table_prefix=f"t{uuid.uuid4().hex[:10]}_")
    with opened:
        yield opened


def _vec(seed=0):
    return np.random.default_rng(seed).standard_normal(4).astype(np.float32)


@pytest.mark.parametrize(
    "age", [timedelta(days=-1), timedelta(seconds=-0.5), -1.0, -86400, math.inf, math.nan]
)
def test_purge_refuses_a_negative_or_non_finite_age(log, age):
    qid = log.log_query(_vec(), ["a"], store="s")
    log.feedback(qid, "a")
    with pytest.raises(ValueError, match="older_than"):
        log.purge(older_than=age)
    assert log.counts() == (1, 1)  # nothing deleted
    assert log.purge(older_than=timedelta(0)) == (1, 1)  # zero: everything logged until now


def _line(**fields):
    return json.dumps(fields) + "\n"


def test_import_checks_events_against_the_stored_shown_ids(log, tmp_path):
    log.log_query(_vec(), ["a", "b"], store="s", query_id="q1", at=1.0)
    path = tmp_path / "reuse.jsonl"
    path.write_text(
        _line(
            kind="query",
            query_id="q1",
            time=2.0,
            store="s",
            text=None,
            vector=[1.0, 0, 0, 0],
            shown_ids=["never-shown"],
        )  # fmt: skip
        + _line(
            kind="feedback",
            event_id="e1",
            query_id="q1",
            doc_id="never-shown",
            relevant=True,
            weight=1.0,
            time=3.0,
        )  # fmt: skip
    )
    with pytest.raises(
        UnknownIdError, match=r"reuse\.jsonl, line 2: .*'never-shown' was not shown"
    ):
        log.import_jsonl(path)
    assert log.counts() == (1, 0)
    assert log.get_query("q1").shown_ids == ["a", "b"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{not json\n", r"line 1: malformed .*Expecting property name"),
        (b'{"kind": "query"}\n', r"line 1: malformed .*missing field 'vector'"),
        (b"[1, 2]\n", r"line 1: malformed .*expected a JSON object"),
        (b'\n{"kind": "other"}\n', r"line 2: malformed .*unknown kind 'other'"),
        (b'{"kind": "query", "text": "\xff\xfe"}\n', r"line 1: not UTF-8 text"),
        (
            _line(
                kind="feedback", event_id="e", query_id="q", doc_id="d", relevant="yes", time=1.0
            ).encode(),  # fmt: skip
            r"line 1: malformed .*relevant must be true or false",
        ),
        (
            _line(
                kind="query", query_id="q\u0000", time=1.0, store="s", vector=[1.0], shown_ids=["a"]
            ).encode(),  # fmt: skip
            r"line 1: malformed .*query_id 'q\\x00' contains a NUL",
        ),
    ],
)
def test_every_bad_import_line_names_file_and_line(log, tmp_path, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"bad\.jsonl, " + expected):
        log.import_jsonl(path)
    assert log.counts() == (0, 0)


def test_a_file_that_is_not_sqlite_is_named(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 200)
    with pytest.raises(ValueError, match=rf"location {path}: cannot use it as a SQLite"):
        FeedbackLog(path)
    assert path.read_text().startswith("these are my notes")


@pytest.mark.parametrize("bad", ["a\x00", "\x00", "x\ud800y"])
@pytest.mark.parametrize("where", ["query_id", "doc_id", "store", "text", "shown_ids"])
def test_nul_and_lone_surrogates_get_a_clear_error(log, bad, where):
    why = "NUL" if "\x00" in bad else "lone surrogate"
    qid = log.log_query(_vec(), ["a"], store="s")
    with pytest.raises(ValueError, match=f"contains a {why}"):
        if where == "doc_id":
            log.feedback(qid, bad)
        elif where == "query_id":
            log.log_query(_vec(), ["a"], store="s", query_id=bad)
        elif where == "store":
            log.log_query(_vec(), ["a"], store=bad)
        elif where == "text":
            log.log_query(_vec(), ["a"], store="s", text=bad)
        else:
            log.log_query(_vec(), ["a", bad], store="s")
    assert log.counts() == (1, 0)


def test_feedback_racing_purge_is_an_unknown_id(pg_url, monkeypatch):
    """purge() commits between feedback()'s check and its insert: UnknownIdError, not a raw
    ForeignKeyViolation (PostgreSQL, read committed)."""
    pytest.importorskip("psycopg", reason="pip install 'nudge-rag[postgres]'")
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    with (
        FeedbackLog(pg_url, table_prefix=prefix) as log,
        FeedbackLog(pg_url, table_prefix=prefix) as other,
    ):
        qid = log.log_query(_vec(), ["a"], store="s")
        real = feedback_module._check_shown
        calls = []

        def purge_then_check(query_id, doc_id, shown):
            if not calls:
                calls.append(other.purge(query_ids=[query_id]))  # another connection, committed
            real(query_id, doc_id, shown)

        monkeypatch.setattr(feedback_module, "_check_shown", purge_then_check)
        with pytest.raises(UnknownIdError, match="not in the feedback log"):
            log.feedback(qid, "a")
        assert calls == [(1, 0)] and log.counts() == (0, 0)


# ------------------------------------------------------------------------- embedder identity
def _logged_task(log, embedder, seed=0, n=30, store="s"):
    rng = np.random.default_rng(seed)
    docs = rng.standard_normal((40, 4)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    for k in range(n):
        target = k % 40
        vec = docs[target] + 0.3 * rng.standard_normal(4).astype(np.float32)
        qid = log.log_query(vec, [f"d{target}", f"d{(target + 1) % 40}"], store=store,
                            embedder=embedder)  # fmt: skip
        log.feedback(qid, f"d{target}")
    return ArrayStore([f"d{i}" for i in range(40)], docs)


def test_embedder_id_is_a_name_and_a_stable_fingerprint():
    probe = np.random.default_rng(0).standard_normal(16).astype(np.float32)
    a = FeedbackLog.embedder_id("MiniLM", probe)
    assert a.startswith("MiniLM#") and len(a) == len("MiniLM#") + 12
    assert FeedbackLog.embedder_id("MiniLM", probe * 3 + 1e-8) == a  # scale, last bits
    other = probe.copy()
    other[0] += 0.5
    assert FeedbackLog.embedder_id("MiniLM", other) != a  # same name, other weights


def test_tuning_refuses_query_vectors_of_another_model(log):
    store = _logged_task(log, "old-model#aaaaaaaaaaaa")
    before = store.vectors.copy()
    tuner = StoreTuner(store, state_dir="memory", solver_params={"gamma": 0.3})
    with pytest.raises(ValueError, match=r"old-model#aaaaaaaaaaaa \(30 queries\).*new-model#b"):
        tune_from_feedback(tuner, log, store="s", embedder="new-model#bbbbbbbbbbbb")
    np.testing.assert_array_equal(store.vectors, before)  # nothing written
    with pytest.raises(ValueError, match=r"Re-embed the logged questions .* start a new log"):
        tune_from_feedback(tuner, log, store="s", embedder="new-model#bbbbbbbbbbbb")
    result = tune_from_feedback(tuner, log, store="s", embedder="old-model#aaaaaaaaaaaa")
    assert result.changed_ids


def test_tuning_refuses_a_mix_of_models_and_the_window_counts(log):
    store = _logged_task(log, "m1#111111111111", n=10)
    tuner = StoreTuner(store, state_dir="memory", solver_params={"gamma": 0.3})
    cut = time.time()
    time.sleep(0.01)
    _logged_task(log, "m2#222222222222", n=10)
    assert log.embedders("s") == {"m1#111111111111": 10, "m2#222222222222": 10}
    with pytest.raises(ValueError, match="m1#111111111111 .*m2#222222222222"):
        tune_from_feedback(tuner, log, store="s")
    # Feedback since the model changed is all of one model: accepted.
    assert tune_from_feedback(tuner, log, store="s", since=cut, embedder="m2#222222222222")


def test_embedder_survives_export_and_import(log, tmp_path):
    _logged_task(log, "m1#111111111111", n=3)
    path = tmp_path / "out.jsonl"
    log.export_jsonl(path)
    assert all(
        json.loads(line).get("embedder") == "m1#111111111111"
        for line in path.read_text().splitlines()
        if json.loads(line)["kind"] == "query"
    )
    with FeedbackLog(tmp_path / "copy.db") as copy:
        copy.import_jsonl(path)
        assert copy.embedders() == {"m1#111111111111": 3}


def test_a_log_written_before_embedders_were_recorded_is_upgraded(tmp_path, caplog):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the tables as nudge-rag 0.1 created them
        conn.execute(
            "CREATE TABLE nudge_queries (query_id TEXT PRIMARY KEY, created REAL NOT NULL, "
            "store TEXT NOT NULL, text TEXT, dim INTEGER NOT NULL, vector BLOB NOT NULL, "
            "shown TEXT NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE nudge_events (event_id TEXT PRIMARY KEY, query_id TEXT NOT NULL "
            "REFERENCES nudge_queries (query_id) ON DELETE CASCADE, doc_id TEXT NOT NULL, "
            "relevant INTEGER NOT NULL, weight REAL NOT NULL, created REAL NOT NULL)"
        )
    with FeedbackLog(path) as log:
        store = _logged_task(log, None, n=12)
        assert log.embedders("s") == {None: 12}
        tuner = StoreTuner(store, state_dir="memory", solver_params={"gamma": 0.3})
        with caplog.at_level("WARNING"):
            tune_from_feedback(tuner, log, store="s", embedder="m#123456789012")
        assert "12 logged queries do not record which model" in caplog.text
