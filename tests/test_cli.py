"""The ``nudge-rag benchmark`` command: README's main job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from nudge_rag._synthetic import make_retrieval_task
from nudge_rag.cli import main, run_benchmark


def run_json(capsys, *args):
    assert main(["benchmark", "--json", "--repeat", "1", "--progress", "off", *args]) == 0
    out = json.loads(capsys.readouterr().out)
    return {r["method"]: r for r in out["rows"]}


def test_generated_task_runs_anywhere_and_nudge_helps(capsys):
    rows = run_json(capsys)
    base = rows["no fine-tuning"]["ndcg@10"]
    assert rows["NUDGE-N"]["ndcg@10"] > base + 0.05
    assert rows["NUDGE-M"]["ndcg@10"] > base + 0.05
    assert rows["NUDGE-N"]["seconds"] > 0


# The reference nudge-ft 0.1.2 measured these on the same data (shared/data/nfcorpus/README.md).
REFERENCE = {
    "nudge_split": {
        "no fine-tuning": (30.5, 32.2),
        "NUDGE-M": (46.0, 44.2),
        "NUDGE-N": (46.1, 45.1),
    },
    "beir_split": {
        "no fine-tuning": (27.9, 29.4),
        "NUDGE-M": (32.8, 33.3),
        "NUDGE-N": (34.9, 35.0),
    },
}


@pytest.mark.parametrize("split", sorted(REFERENCE))
def test_nfcorpus_matches_the_reference_measurements(capsys, nfcorpus_dir, split):
    rows = run_json(capsys, "--data", str(nfcorpus_dir), "--split", split)
    for method, (recall, ndcg) in REFERENCE[split].items():
        assert 100 * rows[method]["recall@10"] == pytest.approx(recall, abs=0.1), method
        assert 100 * rows[method]["ndcg@10"] == pytest.approx(ndcg, abs=0.1), method


def test_table_output(capsys, nfcorpus_dir):
    assert (
        main(["benchmark", "--data", str(nfcorpus_dir), "--repeat", "1", "--progress", "off"]) == 0
    )
    out = capsys.readouterr().out
    assert "| NUDGE-N | 46.1 | 45.1 |" in out
    assert "3633 documents, 485 test queries" in out


def test_missing_data_is_a_clear_error(capsys, tmp_path):
    assert main(["benchmark", "--data", str(tmp_path / "nowhere"), "--progress", "off"]) == 2
    assert "cannot load --data" in capsys.readouterr().err


def test_console_script_is_installed():
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    res = subprocess.run(
        [sys.executable, "-m", "nudge_rag.cli", "benchmark", "--help"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode == 0 and "--data" in res.stdout


# ---------------------------------------------------------------------- bad input: exit 2, one line
def _small_layout(root):
    """A tiny nudge_split-style folder (20 documents, three query splits) under ``root``."""
    rng = np.random.default_rng(0)
    split_dir = root / "nudge_split"
    emb = split_dir / "emb" / "m"
    emb.mkdir(parents=True)
    docs = rng.standard_normal((20, 6)).astype(np.float32)
    np.save(emb / "corpus.npy", docs)
    (emb / "corpus.ids.json").write_text(json.dumps(list(range(20))))
    lines = [json.dumps({"record_id": i, "text": f"doc {i}"}) for i in range(20)]
    (split_dir / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    for split, n in (("train", 12), ("dev", 4), ("test", 4)):
        np.save(emb / f"queries_{split}.npy", rng.standard_normal((n, 6)).astype(np.float32))
        (emb / f"queries_{split}.ids.json").write_text(json.dumps(list(range(n))))
        lines = [json.dumps({"q_index": i, "text": f"{split} {i}"}) for i in range(n)]
        (split_dir / f"queries_{split}.jsonl").write_text("\n".join(lines) + "\n")
        qrels = "".join(f"{i}\t{(3 * i) % 20}\t1\n" for i in range(n))
        (split_dir / f"qrels_{split}.tsv").write_text("q_index\trecord_id\trel\n" + qrels)
    return root


def _one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_small_layout_runs(capsys, tmp_path):
    rows = run_json(capsys, "--data", str(_small_layout(tmp_path)), "--model", "m")
    assert set(rows) == {"no fine-tuning", "NUDGE-M", "NUDGE-N"}


@pytest.mark.parametrize(
    ("option", "value"), [("--k", "0"), ("--k", "-3"), ("--k", "ten"), ("--repeat", "0")]
)
def test_bad_numbers_exit_2_with_one_line(capsys, option, value):
    # was: --k 0 a ValueError traceback from search; --repeat 0 silently ran once
    with pytest.raises(SystemExit) as info:
        main(["benchmark", "--progress", "off", option, value])
    assert info.value.code == 2
    err = _one_line_error(capsys)
    assert f"argument {option}: must be an integer >= 1, got '{value}'" in err


def test_run_benchmark_checks_its_numbers():
    data = make_retrieval_task(n_docs=200, n_train=40, n_dev=10, n_test=10, random_state=0)
    with pytest.raises(ValueError, match="repeat must be an integer >= 1, got 0"):
        run_benchmark(data, repeat=0)
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):
        run_benchmark(data, k=0)


def test_missing_dev_qrels_is_named(capsys, tmp_path):
    root = _small_layout(tmp_path)
    (root / "nudge_split" / "qrels_dev.tsv").unlink()  # was: KeyError traceback
    assert main(["benchmark", "--data", str(root), "--model", "m", "--progress", "off"]) == 2
    err = _one_line_error(capsys)
    assert "cannot load --data" in err and "qrels_dev.tsv" in err


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("emb/m/corpus.npy", b"", r"corpus\.npy: empty file \(0 bytes\)"),
        ("qrels_test.tsv", b"0\t1\t1\n1\t\xff\t1\n", r"qrels_test\.tsv:2: not valid UTF-8"),
        ("queries_dev.jsonl", b'{"q_index": null, "text": "x"}\n', r"queries_dev\.jsonl:1: "),
    ],
)
def test_bad_files_exit_2_with_one_line_naming_the_file(capsys, tmp_path, name, content, expected):
    root = _small_layout(tmp_path)
    (root / "nudge_split" / name).write_bytes(content)
    assert main(["benchmark", "--data", str(root), "--model", "m", "--progress", "off"]) == 2
    assert re.search(expected, _one_line_error(capsys))


def test_nan_embeddings_exit_2_with_one_line(capsys, tmp_path):
    root = _small_layout(tmp_path)
    npy = root / "nudge_split" / "emb" / "m" / "corpus.npy"
    docs = np.load(npy)
    docs[3, 1] = np.nan
    np.save(npy, docs)
    assert main(["benchmark", "--data", str(root), "--model", "m", "--progress", "off"]) == 2
    assert "row 3 holds NaN" in _one_line_error(capsys)
