"""The ``nudge-rag benchmark`` command: README's main job."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from nudge_rag.cli import main


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
