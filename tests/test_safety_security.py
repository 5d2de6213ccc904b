"""Files in a state folder cannot attack their user, and no secret is ever shown.

* ``writer.lock`` or a state file that is a symbolic link is never written (or read)
  through: the lock link is replaced by a regular file, a state-file link is refused.
* A FAISS folder's ``index.pkl`` is not unpickled unless the caller opts in
  (``--trust-pickle``; Python callers pass ``allow_dangerous_deserialization=True`` to
  LangChain themselves).
* Passwords in URLs (``user:pw@`` and ``?password=``, ``sslpassword=``, tokens) are masked
  in every error message and log line (one helper: :func:`nudge_rag._masking.mask_secrets`).
"""

from __future__ import annotations

import logging
import os
import pickle

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from nudge_rag import ArrayStore, WriteBack, WriteBackError
from nudge_rag._lock import LOCK_FILE
from nudge_rag._masking import MaskSecretsFilter, mask_secrets
from nudge_rag._state import ORIGINALS
from nudge_rag.cli import main


def _store(n=12, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return ArrayStore([f"d{i}" for i in range(n)], vectors)


def test_a_lock_file_symlink_is_replaced_never_written_through(tmp_path, caplog):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious data\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / LOCK_FILE).symlink_to(victim)
    store = _store()
    originals = store.vectors.copy()
    wb = WriteBack(store, state)
    with caplog.at_level(logging.WARNING, logger="nudge_rag._lock"):
        wb.apply(["d1", "d2"], np.roll(originals[[1, 2]], 1, axis=1))
        assert wb.restore() == 2
    assert victim.read_text() == "precious data\n"  # not truncated, not overwritten
    assert not (state / LOCK_FILE).is_symlink() and (state / LOCK_FILE).is_file()
    assert "symbolic link" in caplog.text and "replaced it with a regular lock file" in caplog.text
    assert_array_equal(store.vectors, originals)


def test_a_lock_link_in_place_before_restore_leaves_its_target_alone(tmp_path):
    store = _store()
    originals = store.vectors.copy()
    state = tmp_path / "state"
    WriteBack(store, state).apply(["d3"], np.roll(originals[[3]], 1, axis=1))
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"\x00\x01keep me")
    (state / LOCK_FILE).unlink()
    (state / LOCK_FILE).symlink_to(victim)
    assert WriteBack(store, state).restore() == 1  # the case: restore truncated it
    assert victim.read_bytes() == b"\x00\x01keep me"
    assert_array_equal(store.vectors, originals)


def test_a_state_file_symlink_is_refused(tmp_path):
    store = _store()
    state = tmp_path / "state"
    wb = WriteBack(store, state)
    wb.apply(["d1"], np.roll(store.get_vectors(["d1"]), 1, axis=1))
    real = tmp_path / "elsewhere.npz"
    os.replace(state / ORIGINALS, real)
    (state / ORIGINALS).symlink_to(real)
    before = store.vectors.copy()
    with pytest.raises(WriteBackError, match=r"originals\.npz is a symbolic link"):
        WriteBack(store, state).restore()
    assert_array_equal(store.vectors, before)  # nothing written
    (state / ORIGINALS).unlink()
    dangling = state / ORIGINALS
    dangling.symlink_to(tmp_path / "missing.npz")  # a dangling link is not "no file"
    with pytest.raises(WriteBackError, match="symbolic link"):
        WriteBack(store, state).restore()


class _Boom:
    """Unpickling it creates a marker file: what a crafted index.pkl could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_faiss_index_pkl_is_not_unpickled_without_trust_pickle(tmp_path, capsys):
    folder = tmp_path / "faiss"
    folder.mkdir()
    marker = tmp_path / "pwned"
    (folder / "index.faiss").write_bytes(b"not read")
    (folder / "index.pkl").write_bytes(pickle.dumps(_Boom(str(marker))))
    pytest.importorskip("faiss")
    for command in (["status"], ["restore"], ["resume"]):
        code = main([*command, "--store", f"faiss:{folder}"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "--trust-pickle" in err and "pickle" in err and "index.pkl" in err
        assert not marker.exists()


def test_help_says_why_trust_pickle_exists(capsys):
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--trust-pickle" in out and "runs whatever code it holds" in out


@pytest.mark.parametrize(
    ("text", "secrets"),
    [
        ("postgresql://me:pw1@db:5432/x", ["pw1"]),
        ("postgresql://me@db/x?sslmode=require&password=pw2", ["pw2"]),
        ("postgresql://db/x?sslpassword=pw3&application_name=a", ["pw3"]),
        ("host=db password='p w4' dbname=x", ["p w4", "w4"]),
        ("chroma+http://h:8000/?token=tk5&x=1", ["tk5"]),
        ("https://h/?access_token=tk6#frag", ["tk6"]),
        ("qdrant+https://u:pw7@h:6333/?api_key=ak7", ["pw7", "ak7"]),
    ],
)
def test_mask_secrets_hides_every_form(text, secrets):
    shown = mask_secrets(text)
    for secret in secrets:
        assert secret not in shown, shown
    assert "***" in shown


def test_mask_secrets_keeps_what_is_not_secret():
    url = "postgresql://me@db:5432/x?sslmode=require&application_name=app"
    assert mask_secrets(url) == url
    assert mask_secrets("sslkey=/path/key.pem") == "sslkey=/path/key.pem"


def test_cli_masks_a_password_given_as_a_query_parameter(capsys):
    pytest.importorskip("psycopg")
    url = "postgresql://me:pw1@127.0.0.1:1/db?password=pw2&sslpassword=pw3&connect_timeout=2"
    code = main(["status", "--store", url, "--collection", "t"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "cannot reach PostgreSQL" in err
    for secret in ("pw1", "pw2", "pw3"):
        assert secret not in err, err


def test_log_lines_are_masked_by_the_cli_filter(caplog):
    record = logging.LogRecord(
        "nudge_rag.x",
        logging.WARNING,
        __file__,
        1,
        "cannot reach %s",
        ("u://a:pw@h?token=t1",),
        None,
    )
    MaskSecretsFilter().filter(record)
    assert record.getMessage() == "cannot reach u://a:***@h?token=***"


def test_feedback_log_and_pgvector_reprs_hide_secrets():
    pytest.importorskip("psycopg")
    from nudge_rag._feedback import _Postgres
    from nudge_rag.backends.pgvector import _where

    url = "postgresql://me:pw1@db/x?password=pw2"
    for shown in (repr(_Postgres(url)), _where(url)):
        assert "pw1" not in shown and "pw2" not in shown, shown


def test_a_lock_file_hard_link_is_replaced_never_truncated(tmp_path, caplog):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious data\n")
    state = tmp_path / "state"
    state.mkdir()
    os.link(victim, state / LOCK_FILE)
    store = _store()
    with caplog.at_level(logging.WARNING, logger="nudge_rag._lock"):
        WriteBack(store, state).apply(["d1"], np.roll(store.get_vectors(["d1"]), 1, axis=1))
    assert victim.read_text() == "precious data\n"
    assert os.stat(state / LOCK_FILE).st_nlink == 1
    assert "hard link" in caplog.text
