"""The command line checks everything before it writes, and every error names the flag or file.

The cases of issue 20, each run through ``nudge_rag.cli.main`` on a real LanceDB folder: the
store must hold exactly what it held before whenever the command fails.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from test_cli_stores import EMBED, CliStore, Task

from nudge_rag import BaseEmbeddingStore, WriteBack, WriteBackError
from nudge_rag._state import META, PENDING
from nudge_rag.backends._uri import open_store
from nudge_rag.cli import main

pytest.importorskip("lancedb", reason="pip install 'nudge-rag[lancedb]'")


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Task:
    return Task(tmp_path_factory.mktemp("cli_inputs_task"))


@pytest.fixture
def lance(task, tmp_path, monkeypatch, request):
    monkeypatch.setenv("NUDGE_CLI_QUESTIONS", str(task.lookup))
    monkeypatch.setenv("NUDGE_CLI_PAD", "0")
    monkeypatch.chdir(tmp_path)
    store = CliStore("lancedb", "exact", task, tmp_path, request)
    store.before = store.read(task.ids)
    return store


def _run(capsys, *argv):
    code = main(list(argv))
    got = capsys.readouterr()
    return code, got.out, " ".join(got.err.split())


def _untouched(store, task):
    assert_array_equal(store.read(task.ids), store.before)


def _tune(store, task, *extra):
    return ["tune", *store.args, "--pairs", str(task.files["train"]), *EMBED, *extra]


def test_one_question_pairs_name_val_pairs_and_gamma(lance, task, tmp_path, capsys):
    one = tmp_path / "one.jsonl"
    one.write_text(task.files["train"].read_text().splitlines()[0] + "\n")
    code, _, err = _run(capsys, "tune", *lance.args, "--pairs", str(one), *EMBED)
    assert code == 2
    assert f"--pairs {one}" in err and "--val-pairs" in err and "--gamma" in err
    assert "val=" not in err and "gamma=" not in err  # not the Python names
    _untouched(lance, task)
    code, _, err = _run(capsys, "tune", *lance.args, "--pairs", str(one), *EMBED, "--gamma", "0.1")
    assert code == 0, err  # a fixed gamma needs no choice


def test_embed_builtins_exit_is_reported_not_obeyed(lance, task, capsys):
    code, _, err = _run(capsys, *_tune(lance, task)[:-2], "--embed", "builtins:exit")
    assert code == 2
    assert "--embed 'builtins:exit'" in err and "SystemExit" in err
    _untouched(lance, task)


def test_an_embedder_that_exits_while_embedding_is_reported(lance, task, tmp_path, capsys):
    (tmp_path / "exiting_model.py").write_text("def embed(texts):\n    raise SystemExit(3)\n")
    code, _, err = _run(capsys, *_tune(lance, task)[:-2], "--embed", "exiting_model:embed")
    assert code == 2
    assert "--embed exiting_model:embed" in err and "SystemExit(3)" in err
    assert "nothing was written" in err
    _untouched(lance, task)


@pytest.mark.parametrize("command", ["tune", "evaluate"])
def test_a_huge_k_names_the_flag(lance, task, capsys, command):
    argv = _tune(lance, task) if command == "tune" else [
        "evaluate", *lance.args, "--pairs", str(task.files["test"]), *EMBED]  # fmt: skip
    code, _, err = _run(capsys, *argv, "--k", "1000000000000")
    assert code == 2
    assert "--k 1000000000000" in err and f"{len(task.ids)}" in err
    assert "allocate" not in err
    _untouched(lance, task)


@pytest.mark.parametrize("seed", ["-1", "x"])
def test_benchmark_seed_names_the_flag(capsys, seed):
    with pytest.raises(SystemExit) as info:
        main(["benchmark", "--seed", seed])
    assert info.value.code == 2
    assert "--seed" in capsys.readouterr().err


def test_benchmark_k_larger_than_the_task(capsys):
    code, _, err = _run(capsys, "benchmark", "--k", "100000000")
    assert code == 2 and "--k 100000000" in err


@pytest.mark.parametrize("kind", ["a file", "unwritable parent"])
def test_report_folder_is_checked_before_the_store_is_written(lance, task, tmp_path, capsys, kind):
    if kind == "a file":
        report = tmp_path / "report"
        report.write_text("not a folder")
        expect = "exists and is not a folder"
    else:
        parent = tmp_path / "locked"
        parent.mkdir()
        parent.chmod(0o500)
        report = parent / "report"
        expect = "cannot write there"
        import os

        if os.access(parent, os.W_OK):  # root ignores permissions
            parent.chmod(0o700)
            pytest.skip("running as root: a read-only folder is writable")
    code, _, err = _run(capsys, *_tune(lance, task), "--report", str(report), "--no-picture")
    assert code == 2, err
    assert f"--report {report}" in err and expect in err
    _untouched(lance, task)
    assert not (lance.state / "originals.npz").exists()


def test_a_damaged_meta_json_is_named_not_a_float_error(lance, task, tmp_path, capsys, caplog):
    code, _, err = _run(capsys, *_tune(lance, task))
    assert code == 0, err
    state = lance.state
    meta = json.loads((state / META).read_text())
    meta["gamma"] = "abc"
    (state / META).write_text(json.dumps(meta))
    with caplog.at_level("WARNING"):
        code, out, err = _run(capsys, "status", *lance.args)
    assert code == 0, err
    assert str(state / META) in caplog.text and "gamma is 'abc', not a number" in caplog.text
    assert "tuned" in out
    assert _run(capsys, "restore", *lance.args)[0] == 0
    _untouched(lance, task)


def test_a_state_of_another_dimension_is_refused_naming_both(lance, task, tmp_path, capsys):
    state = tmp_path / "state"
    rng = np.random.default_rng(0)
    from nudge_rag import ArrayStore

    other = ArrayStore(task.ids, rng.normal(size=(len(task.ids), 32)).astype(np.float32))
    other_wb = WriteBack(other, state)
    other_wb.apply(task.ids[:20], rng.normal(size=(20, 32)).astype(np.float32))
    for command in ("restore", "resume", "tune"):
        argv = _tune(lance, task) if command == "tune" else [command, *lance.args]
        code, _, err = _run(capsys, *argv, "--state-dir", str(state))
        assert code == 2, (command, err)
        assert "ArrayStore" in err and f"LanceDBBackend '{lance.collection}'" in err, err
        _untouched(lance, task)
    assert len(WriteBack(other, state).moved_ids()) == 20  # nothing dropped


class _FailsOnSecondWrite(BaseEmbeddingStore):
    """The opened store, refusing its second write (a store that stops taking writes)."""

    def __init__(self, inner):
        self.inner, self.calls, self.distance = inner, 0, inner.distance

    name = property(lambda self: self.inner.name)

    def default_state_dir(self):
        return self.inner.default_state_dir()

    def list_ids(self):
        return self.inner.list_ids()

    def get_vectors(self, ids):
        return self.inner.get_vectors(ids)

    def set_vectors(self, ids, vectors):
        self.calls += 1
        if self.calls == 2:
            raise ConnectionError("the store refuses writes")
        self.inner.set_vectors(ids, vectors)


def test_discard_drops_a_plan_that_cannot_finish_and_keeps_every_original(lance, task, capsys):
    opened = open_store(lance.args[1], lance.collection)
    try:
        failing = _FailsOnSecondWrite(opened.backend)
        wb = WriteBack(failing, lance.state, batch_size=10)
        ids = task.ids[:40]
        with pytest.raises(WriteBackError, match=r"discard_pending\(\)"):
            wb.apply(ids, np.roll(lance.before[:40], 1, axis=1))
    finally:
        opened.close()
    state = lance.state
    assert (state / PENDING).exists()
    code, out, err = _run(capsys, "status", *lance.args)
    assert code == 0 and "pending" in out, err
    code, out, err = _run(capsys, "discard", *lance.args)
    assert code == 0 and "dropped the interrupted write-back" in out, err
    assert not (state / PENDING).exists()
    code, out, _ = _run(capsys, "discard", *lance.args)
    assert code == 0 and "no interrupted write-back" in out
    code, out, err = _run(capsys, "restore", *lance.args)
    assert code == 0, err
    _untouched(lance, task)  # every original back, bit-exactly
