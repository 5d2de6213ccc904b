"""A state folder belongs to one store: no wrong folder, in any order of calls, loses an original.

The scenario of issue 20: ``tune --state-dir A``, then ``status``/``tune``/``restore``
without it, and ``restore --collection other --state-dir A``; each is refused naming the
right place (or both stores), and a later call with the right folder restores every
original bit-exactly. Through the command line (one process per command, a real Chroma
folder) and through Python (``StoreTuner``/``WriteBack`` with the wrong ``state_dir=``).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from test_cli_stores import EMBED, CliStore, Task, run_cli

from nudge_rag import ArrayStore, StoreTuner, WriteBack, WriteBackError
from nudge_rag._identity import CLAIM, IDENTITY
from nudge_rag._writeback import SUSPECT_MIN, WrongStateError


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Task:
    return Task(tmp_path_factory.mktemp("safety_task"))


def _add_table(path, name, task):
    import lancedb
    import pyarrow as pa

    data = pa.table(
        {
            "id": task.ids,
            "text": [f"text {i}" for i in task.ids],
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(task.docs.ravel()), task.docs.shape[1]
            ),
        }
    )
    lancedb.connect(path).create_table(name, data=data)


def test_cli_wrong_state_dir_never_loses_an_original(task, tmp_path, request):
    store = CliStore("lancedb", "exact", task, tmp_path, request)
    where, name = store.args, store.collection
    _add_table(store.path, "other", task)
    before = store.read(task.ids)
    state_a = tmp_path / "A"
    tune = ["tune", *where, "--pairs", str(task.files["train"]), *EMBED, "--json"]
    got = run_cli(task, *tune, "--state-dir", str(state_a))
    assert got.returncode == 0, got.stderr
    tuned = store.read(task.ids)
    assert not np.array_equal(tuned, before)
    ident = json.loads((state_a / IDENTITY).read_text())
    assert ident["kind"] == "LanceDBBackend" and ident["collection"] == name
    assert ident["dim"] == task.docs.shape[1] and len(ident["fingerprint"]) == 8
    # Every call without the folder, or with it for another collection, is refused.
    other = [a if a != name else "other" for a in where]
    for args in (
        ["status", *where],
        [*tune],  # a second tune with the default folder
        ["restore", *where],
        ["resume", *where],
        [
            "tune",
            *where,
            "--pairs",
            str(task.files["train"]),
            *EMBED,
            "--state-dir",
            str(tmp_path / "B"),
        ],
        ["restore", *other, "--state-dir", str(state_a)],
        ["status", *other, "--state-dir", str(state_a)],
    ):
        res = run_cli(task, *args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        line = res.stderr.strip()
        assert str(state_a) in line or f"'{name}'" in line, (args, line)
        if "other" in args:
            assert f"'{name}'" in line and "'other'" in line, line  # both stores named
        else:
            assert f"--state-dir {state_a}" in line, line
        assert_array_equal(store.read(task.ids), tuned)  # nothing written
    # The right folder restores every original, bit-exactly.
    res = run_cli(task, "restore", *where, "--state-dir", str(state_a))
    assert res.returncode == 0, res.stderr
    assert_array_equal(store.read(task.ids), before)
    # The default folder no longer points at A: a plain status works again.
    assert not (store.state / CLAIM).exists()
    res = run_cli(task, "status", *where, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["tuned"] is False, res.stderr


def test_cli_default_folder_in_use_refuses_another_state_dir(task, tmp_path, request):
    store = CliStore("chroma", "hnsw", task, tmp_path, request)
    where = store.args
    before = store.read(task.ids)
    tune = ["tune", *where, "--pairs", str(task.files["train"]), *EMBED, "--json"]
    assert run_cli(task, *tune).returncode == 0
    tuned = store.read(task.ids)
    res = run_cli(task, "restore", *where, "--state-dir", str(tmp_path / "elsewhere"))
    assert res.returncode == 2 and "leave state_dir out" in res.stderr, res.stderr
    assert_array_equal(store.read(task.ids), tuned)
    assert run_cli(task, "restore", *where).returncode == 0
    np.testing.assert_allclose(store.read(task.ids), before, atol=1e-6)  # Chroma re-normalizes


# ------------------------------------------------------------------------- Python
class NamedStore(ArrayStore):
    """An in-memory store with a collection name."""

    def __init__(self, ids, vectors, name="docs"):
        super().__init__(ids, vectors)
        self._name = name

    @property
    def name(self):
        return self._name


def _store(n=40, dim=8, seed=0, name="docs"):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return NamedStore([f"d{i}" for i in range(n)], vectors, name)


def _pairs(store, n=30):
    return [(f"q{i}", store.ids[i % len(store.ids)]) for i in range(n)]


def _embed(store):
    rng = np.random.default_rng(9)
    table = {}

    def embed(texts):
        out = []
        for t in texts:
            if t not in table:
                k = int(t[1:]) % len(store.ids)
                v = store.get_vectors([store.ids[k]])[0] + 0.3 * rng.normal(size=8)
                table[t] = (v / np.linalg.norm(v)).astype(np.float32)
            out.append(table[t])
        return np.asarray(out)

    return embed


def test_python_wrong_state_dir_never_loses_an_original(tmp_path):
    store = _store()
    originals = store.vectors.copy()
    embed = _embed(store)
    a, b = tmp_path / "A", tmp_path / "B"
    StoreTuner(store, state_dir=a, solver_params={"gamma": 0.5}).tune(_pairs(store), embed=embed)
    tuned = store.vectors.copy()
    assert not np.array_equal(tuned, originals)
    wrong = StoreTuner(store, state_dir=b, solver_params={"gamma": 0.5})
    for call in (wrong.restore, wrong.resume, wrong.writeback.status, wrong.writeback.read_corpus):
        with pytest.raises(WrongStateError, match=f"kept in {a}"):
            call()
    with pytest.raises(WrongStateError, match=f"state_dir='{a}'"):
        wrong.tune(_pairs(store), embed=embed)
    assert_array_equal(store.vectors, tuned)
    # The state of A is refused for another store (another collection name), naming both.
    other = _store(name="other")
    with pytest.raises(WrongStateError, match=r"belongs to NamedStore 'docs'.*'other'"):
        WriteBack(other, a).restore()
    assert_array_equal(other.vectors, originals)
    n_saved = len(WriteBack(store, a).moved_ids())
    assert n_saved > 0 and StoreTuner(store, state_dir=a).restore() == n_saved
    assert_array_equal(store.vectors, originals)  # every original, bit-exactly
    # Restored: A no longer claims the store, and B may be used now.
    StoreTuner(store, state_dir=b, solver_params={"gamma": 0.5}).tune(_pairs(store), embed=embed)
    assert StoreTuner(store, state_dir=b).restore() > 0
    assert_array_equal(store.vectors, originals)


def test_python_most_ids_missing_stops_and_names_the_owner(tmp_path):
    store = _store(n=40)
    wb = WriteBack(store, tmp_path)
    ids = store.ids[: SUSPECT_MIN + 4]
    wb.apply(ids, np.roll(store.get_vectors(ids), 1, axis=1))
    saved_ids, saved = wb.originals()
    # Same kind and name, other ids: a store this folder does not belong to (an older state
    # without identity.json is caught by the same rule).
    (tmp_path / IDENTITY).unlink()
    stranger = NamedStore([f"x{i}" for i in range(40)], store.vectors.copy())
    for call in ("restore", "apply"):
        wb2 = WriteBack(stranger, tmp_path)
        with pytest.raises(WrongStateError, match=r"14 of the 14 ids saved .* are not in"):
            wb2.restore() if call == "restore" else wb2.apply(["x1"], stranger.get_vectors(["x1"]))
    assert WriteBack(store, tmp_path).moved_ids() == saved_ids
    assert_array_equal(WriteBack(store, tmp_path).originals()[1], saved)
    # A few ids really deleted are dropped id by id (positive evidence), the rest restored.
    keep = store.ids[2:]
    smaller = NamedStore(keep, store.get_vectors(keep))
    wb3 = WriteBack(smaller, tmp_path)
    assert wb3.restore() == len(saved_ids) - 2
    assert sorted(wb3.last_report.missing_ids) == sorted(store.ids[:2])


def test_identity_moved_store_is_accepted_on_its_fingerprint(tmp_path):
    store = _store()
    wb = WriteBack(store, tmp_path / "s")
    wb.apply(store.ids[:3], np.roll(store.get_vectors(store.ids[:3]), 1, axis=1))
    path = tmp_path / "s" / IDENTITY
    payload = json.loads(path.read_text())
    payload["location"] = "/somewhere/else"
    path.write_text(json.dumps(payload))
    store.location = "/new/place"  # type: ignore[attr-defined]
    WriteBack(store, tmp_path / "s").status()  # same vectors: accepted, location updated
    assert json.loads(path.read_text())["location"] == "/new/place"
    moved = _store(seed=5)
    moved.location = "/third"  # type: ignore[attr-defined]
    with pytest.raises(WriteBackError, match="location differ"):
        WriteBack(moved, tmp_path / "s").restore()


# ------------------------------------------------------------------------- exact names and ids
@pytest.mark.parametrize(
    ("bad", "why"),
    [("MED-x\x00", "NUL"), ("a\x00b", "NUL"), ("lone\ud800", "lone surrogate")],
)
def test_ids_that_cannot_be_stored_exactly_are_refused_before_any_write(tmp_path, bad, why):
    ids = ["d0", bad, "d2"]
    rng = np.random.default_rng(1)
    store = ArrayStore(ids, rng.normal(size=(3, 4)).astype(np.float32))
    before = store.vectors.copy()
    tuner = StoreTuner(store, state_dir=tmp_path / "s", solver_params={"gamma": 0.5})
    embed = lambda texts: store.get_vectors([bad] * len(texts)) + 0.1  # noqa: E731
    with pytest.raises(ValueError, match=rf"document id {re.escape(repr(bad))} contains a {why}"):
        tuner.tune([("q1", bad), ("q2", bad), ("q3", "d0")], embed=embed)
    assert_array_equal(store.vectors, before)
    assert not (tmp_path / "s" / "originals.npz").exists()


def test_pgvector_schema_with_a_double_quote_tunes_status_restores(pg_url, tmp_path):
    psycopg = pytest.importorskip("psycopg")
    from nudge_rag.backends.pgvector import PgVectorBackend

    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(30, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"d{i}" for i in range(30)]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute('DROP SCHEMA IF EXISTS "we""ird" CASCADE')
        conn.execute('CREATE SCHEMA "we""ird"')
        conn.execute('CREATE TABLE "we""ird".t (id text PRIMARY KEY, embedding vector(8))')
        with conn.cursor() as cur:
            cur.executemany(
                'INSERT INTO "we""ird".t VALUES (%s, %s::vector)',
                [(i, str(v.tolist())) for i, v in zip(ids, vectors)],
            )
    pairs = [(f"q{k}", ids[k % 30]) for k in range(40)]
    table = {f"q{k}": vectors[k % 30] + 0.2 * rng.normal(size=8) for k in range(40)}

    def embed(texts):
        return np.asarray([table[t] for t in texts], dtype=np.float32)

    def read(backend):
        return backend.get_vectors(ids)

    with PgVectorBackend.from_url(pg_url, table='"we""ird".t', distance="cosine") as backend:
        assert backend.schema == 'we"ird' and backend.table == "t"
        before = read(backend)
        result = StoreTuner(backend, solver_params={"gamma": 0.5}).tune(pairs, embed=embed)
        assert result.changed_ids
    with PgVectorBackend.from_url(pg_url, table='"we""ird".t', distance="cosine") as backend:
        status = WriteBack(backend).status()  # the issue: "not tuned"
        assert status.tuned and status.n_originals == len(result.changed_ids)
        again = StoreTuner(backend, solver_params={"gamma": 0.5})
        assert sorted(again.writeback.moved_ids()) == sorted(result.changed_ids)
        assert again.restore() == len(result.changed_ids)
        assert_array_equal(read(backend), before)
        assert not WriteBack(backend).status().tuned
