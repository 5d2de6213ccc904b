"""``nudge-rag tune --query-adapter`` / ``evaluate`` / ``status`` / ``restore`` (one process each).

The adapter the command line saves must be the Python API's (same data, same choice), and
``evaluate`` must apply it (or not, with ``--no-query-adapter``); ``restore`` removes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_cli_stores import EMBED, CliStore, K, LookupEmbeddings, ok_json, run_cli, task  # noqa: F401

from nudge_rag import ArrayStore, Relevance, StoreTuner, evaluate, search


def exact(data, docs, queries, split="test"):
    _, answers, grades, _ = data.splits[split]
    rows = {d: i for i, d in enumerate(data.ids)}
    rel = Relevance.from_lists([[rows[d] for d in a] for a in answers], grades)
    _, top = search(queries, docs, K, similarity="cosine")
    return evaluate(top, rel, K, metrics=("recall", "ndcg", "mrr"))


def test_tune_with_query_adapter_evaluate_status_restore(task, tmp_path, request):  # noqa: F811
    args = CliStore("chroma", "hnsw", task, tmp_path, request).args
    python = StoreTuner(ArrayStore(task.ids, task.docs), state_dir="memory", query_adapter="on")
    expected = python.tune(
        task.pairs("train"),
        task.pairs("dev"),
        embed=LookupEmbeddings(task.lookup, False).embed_documents,
    )
    adapter = expected.query_adapter
    tuned_docs = task.docs.copy()
    tuned_docs[[int(i) for i in expected.changed_ids]] = expected.solver.changed_embeddings_
    test_queries = task.splits["test"][3]
    report = tmp_path / "report"
    files = task.files
    tuned = ok_json(
        run_cli(
            task,
            "tune",
            *args,
            "--pairs",
            str(files["train"]),
            "--val-pairs",
            str(files["dev"]),
            "--test-pairs",
            str(files["test"]),
            *EMBED,
            "--embed-as",
            "document",
            "--query-adapter",
            "on",
            "--json",
            "--report",
            str(report),
            "--no-picture",
        )
    )
    chosen = tuned["query_adapter"]
    assert chosen["mode"] == "on" and chosen["kept"] is True and chosen["chosen_by"] == "val"
    assert (chosen["lambda"], chosen["blend"]) == (adapter.lambda_, adapter.blend_)
    assert chosen["nudge"] == pytest.approx(adapter.base_score_)
    assert chosen["nudge+adapter"] == pytest.approx(adapter.val_score_)
    with_adapter = exact(task, tuned_docs, adapter.transform(test_queries))
    alone = exact(task, tuned_docs, test_queries)
    after = tuned["metrics"]["test"]["after"]
    assert after[f"ndcg@{K}"] == pytest.approx(with_adapter[f"ndcg@{K}"], abs=1e-6)
    md = (report / "report.md").read_text()
    assert "NUDGE + adapter" in md and "NUDGE alone" in md
    assert json.loads((report / "report.json").read_text())["query_adapter"]["kept"] is True

    def run_evaluate(*extra):
        return ok_json(
            run_cli(
                task, "evaluate", *args, "--pairs", str(files["test"]), *EMBED, "--json", *extra
            )
        )

    evaluated = run_evaluate()
    assert evaluated["query_adapter"] is True
    assert evaluated[f"ndcg@{K}"] == pytest.approx(with_adapter[f"ndcg@{K}"], abs=1e-6)
    plain = run_evaluate("--no-query-adapter")
    assert plain["query_adapter"] is False
    assert plain[f"ndcg@{K}"] == pytest.approx(alone[f"ndcg@{K}"], abs=1e-6)

    status = ok_json(run_cli(task, "status", *args, "--json"))
    assert status["query_adapter"]["lambda"] == adapter.lambda_
    assert Path(status["state_dir"], "query_adapter.json").is_file()
    text = run_cli(task, "status", *args)
    assert "query adapter saved" in text.stdout

    assert run_cli(task, "restore", *args, "--quiet").returncode == 0
    status = ok_json(run_cli(task, "status", *args, "--json"))
    assert status["tuned"] is False and not Path(status["state_dir"], "query_adapter.json").exists()
    back = run_evaluate()
    assert back["query_adapter"] is False
    before = exact(task, task.docs, test_queries)
    assert back[f"ndcg@{K}"] == pytest.approx(before[f"ndcg@{K}"], abs=1e-6)
    assert np.isfinite(back[f"ndcg@{K}"])
