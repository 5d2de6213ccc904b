import json
from types import SimpleNamespace

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from nudge_rag._data import (
    DataFileError,
    EmbeddedDataset,
    RetrievalDataset,
    load_beir,
    load_embedded,
    split_dataset,
)
from nudge_rag._metrics import evaluate
from nudge_rag._queryset import QuerySet
from nudge_rag._search import search


@pytest.fixture
def toy():
    return RetrievalDataset(
        queries={"q1": "what is a", "q2": "what is b", "q3": "unanswered"},
        corpus={"d1": "a is one", "d2": "b is two", "d3": "c"},
        relevant_docs={"q1": ["d1"], "q2": ["d2", "d3"]},
    )


# ====================================================================== RetrievalDataset
def test_save_json_is_llama_index_format(toy, tmp_path):
    path = tmp_path / "ds.json"
    toy.save_json(path)
    # What EmbeddingQAFinetuneDataset.save_json writes: json.dump(model_dump(), f, indent=4)
    expected = json.dumps(
        {
            "queries": toy.queries,
            "corpus": toy.corpus,
            "relevant_docs": toy.relevant_docs,
            "mode": "text",
        },
        indent=4,
    )
    assert path.read_text() == expected


def test_json_round_trip_with_grades(tmp_path):
    ds = RetrievalDataset(
        {"q": "x"}, {"a": "A", "b": "B"}, {"q": ["a", "b"]}, relevance={"q": {"a": 2}}
    )
    path = tmp_path / "ds.json"
    ds.save_json(path)
    assert list(json.loads(path.read_text())) == [
        "queries",
        "corpus",
        "relevant_docs",
        "mode",
        "relevance",
    ]
    back = RetrievalDataset.from_json(path)
    assert back.relevance == {"q": {"a": 2}}
    assert back.grades() == {"q": {"a": 2, "b": 1}}
    assert back.source == str(path)


def test_from_json_of_llama_index_file(tmp_path):
    path = tmp_path / "llama.json"
    data = {"queries": {"u1": "q?"}, "corpus": {"n1": "t"}, "relevant_docs": {"u1": ["n1"]}}
    path.write_text(json.dumps({**data, "mode": "text"}, indent=4))
    ds = RetrievalDataset.from_json(path)
    assert ds.relevance is None and ds.mode == "text"
    assert ds.grades() == {"u1": {"n1": 1}}


def test_from_json_malformed_names_file_and_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "queries": {},\n  "corpus": {,\n}')
    with pytest.raises(ValueError, match=r"bad\.json: malformed JSON at line 3"):
        RetrievalDataset.from_json(path)


def test_from_json_missing_keys(tmp_path):
    path = tmp_path / "partial.json"
    path.write_text(json.dumps({"queries": {}, "mode": "text"}))
    with pytest.raises(
        ValueError, match=r"partial\.json: missing key\(s\) \['corpus', 'relevant_docs'\]"
    ):
        RetrievalDataset.from_json(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        RetrievalDataset.from_json(path)


def test_from_json_unknown_ids_name_id_and_file(tmp_path):
    path = tmp_path / "ids.json"
    path.write_text(
        json.dumps({"queries": {"q": "x"}, "corpus": {"d": "y"}, "relevant_docs": {"q": ["zz"]}})
    )
    with pytest.raises(
        DataFileError, match=r"ids\.json: relevant_docs names 1 document id.*not in corpus.*'zz'"
    ):
        RetrievalDataset.from_json(path)
    path.write_text(
        json.dumps({"queries": {"q": "x"}, "corpus": {"d": "y"}, "relevant_docs": {"q7": ["d"]}})
    )
    with pytest.raises(DataFileError, match=r"ids\.json: relevant_docs names 1 query id.*'q7'"):
        RetrievalDataset.from_json(path)


def test_bad_relevance():
    with pytest.raises(ValueError, match="does not list it"):
        RetrievalDataset({"q": "x"}, {"a": "A", "b": "B"}, {"q": ["a"]}, relevance={"q": {"b": 1}})
    with pytest.raises(ValueError, match="positive integer grade, got 0"):
        RetrievalDataset({"q": "x"}, {"a": "A"}, {"q": ["a"]}, relevance={"q": {"a": 0}})
    with pytest.raises(TypeError, match="must be a list of document ids"):
        RetrievalDataset({"q": "x"}, {"a": "A"}, {"q": "a"})


def test_from_any_duck_typed(toy):
    obj = SimpleNamespace(queries=toy.queries, corpus=toy.corpus, relevant_docs=toy.relevant_docs)
    ds = RetrievalDataset.from_any(obj)
    assert ds.queries == toy.queries and ds.relevant_docs == toy.relevant_docs
    assert RetrievalDataset.from_any(vars(obj)).corpus == toy.corpus
    assert RetrievalDataset.from_any(toy) is toy
    with pytest.raises(TypeError, match="without corpus, relevant_docs"):
        RetrievalDataset.from_any(SimpleNamespace(queries={}))


def test_from_any_pydantic_model():
    pydantic = pytest.importorskip("pydantic", reason="pip install 'nudge-rag[langchain]'")

    class EmbeddingQAFinetuneDataset(pydantic.BaseModel):  # same fields as LlamaIndex's
        queries: dict[str, str]
        corpus: dict[str, str]
        relevant_docs: dict[str, list[str]]
        mode: str = "text"

    obj = EmbeddingQAFinetuneDataset(
        queries={"q": "x"}, corpus={"d": "y"}, relevant_docs={"q": ["d"]}
    )
    assert RetrievalDataset.from_any(obj).relevant_docs == {"q": ["d"]}


def test_to_relevance(toy):
    rel = toy.to_relevance()
    assert rel.to_lists() == [[0], [1, 2], []]
    rel = toy.to_relevance(doc_ids=["d3", "d2", "d1"], query_ids=["q2", "q1"])
    assert rel.to_lists() == [[0, 1], [2]]


# ---------------------------------------------------------------------- split
def _numbered(n):
    return RetrievalDataset(
        {f"q{i}": f"query {i}" for i in range(n)},
        {"d": "doc"},
        {f"q{i}": ["d"] for i in range(n)},
    )


def test_split_sizes_disjoint_and_seeded():
    ds = _numbered(101)
    train, dev, test = split_dataset(ds, (0.7, 0.1, 0.2), random_state=0)
    assert (train.n_queries, dev.n_queries, test.n_queries) == (71, 10, 20)
    ids = [set(p.queries) for p in (train, dev, test)]
    assert set.union(*ids) == set(ds.queries)
    assert sum(len(s) for s in ids) == 101
    assert train.corpus is ds.corpus
    assert set(train.relevant_docs) == set(train.queries)
    again = split_dataset(ds, (0.7, 0.1, 0.2), random_state=0)
    assert again[2].queries == test.queries
    other = split_dataset(ds, (0.7, 0.1, 0.2), random_state=1)
    assert other[2].queries != test.queries
    # original order kept inside a part
    order = list(ds.queries)
    assert [order.index(q) for q in test.queries] == sorted(order.index(q) for q in test.queries)


def test_split_keeps_grades_and_allows_empty_parts():
    ds = RetrievalDataset(
        {"a": "1", "b": "2"}, {"d": "x"}, {"a": ["d"], "b": ["d"]}, relevance={"a": {"d": 2}}
    )
    train, dev, test = split_dataset(ds, (1.0, 0.0, 0.0))
    assert train.n_queries == 2 and dev.n_queries == 0 and test.n_queries == 0
    assert train.relevance == {"a": {"d": 2}}


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.5, 0.6, -0.1), (0.3, 0.3, 0.3)])
def test_split_bad_fractions(fractions):
    with pytest.raises(ValueError, match="fractions must be three non-negative numbers"):
        split_dataset(_numbered(5), fractions)


# ====================================================================== BEIR
def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def beir_dir(tmp_path):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    _write_jsonl(
        folder / "corpus.jsonl",
        [
            {"_id": "D1", "title": "Statins", "text": "lower cholesterol."},
            {"_id": "D2", "title": "", "text": "no title here"},
            {"_id": "D3", "title": "Only", "text": "three"},
        ],
    )
    _write_jsonl(
        folder / "queries.jsonl",
        [{"_id": "Q1", "text": "statins?"}, {"_id": "Q2", "text": "x"}, {"_id": "Q3", "text": "y"}],
    )
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nQ1\tD1\t2\nQ1\tD2\t1\nQ1\tD3\t0\nQ2\tD3\t1\nQ3\tD1\t0\n"
    )
    return folder


def test_load_beir(beir_dir):
    ds = load_beir(beir_dir, "test")
    assert ds.corpus == {
        "D1": "Statins lower cholesterol.",
        "D2": "no title here",
        "D3": "Only three",
    }
    # Q3 only has a score-0 judgement: left out
    assert ds.queries == {"Q1": "statins?", "Q2": "x"}
    assert ds.relevant_docs == {"Q1": ["D1", "D2"], "Q2": ["D3"]}
    assert ds.grades() == {"Q1": {"D1": 2, "D2": 1}, "Q2": {"D3": 1}}


def test_load_beir_malformed_line(beir_dir):
    with open(beir_dir / "corpus.jsonl", "a") as f:
        f.write('{"_id": "D4", "text": \n')
    with pytest.raises(ValueError, match=r"corpus\.jsonl:4: malformed JSON line"):
        load_beir(beir_dir)


def test_load_beir_unknown_ids(beir_dir):
    with open(beir_dir / "qrels" / "test.tsv", "a") as f:
        f.write("Q1\tNOPE\t1\nQ1\tNOPE2\t1\n")
    with pytest.raises(ValueError, match=r"test\.tsv names 2 document id.*corpus\.jsonl.*'NOPE'"):
        load_beir(beir_dir)


def test_load_beir_bad_score_and_missing_file(beir_dir):
    with open(beir_dir / "qrels" / "test.tsv", "a") as f:
        f.write("Q1\tD1\thigh\n")
    with pytest.raises(ValueError, match=r"test\.tsv:7: score must be an integer"):
        load_beir(beir_dir)
    with pytest.raises(FileNotFoundError, match=r"qrels/dev\.tsv not found; expected a BEIR"):
        load_beir(beir_dir, "dev")


# ====================================================================== embedded layouts
def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def nudge_layout(tmp_path):
    """A small nudge_split-like folder whose .npy rows are NOT in id order."""
    rng = np.random.default_rng(0)
    split_dir = tmp_path / "toyset" / "nudge_split"
    emb = split_dir / "emb" / "m"
    emb.mkdir(parents=True)
    n_docs, dim = 20, 6
    docs = _unit(rng.standard_normal((n_docs, dim)))  # docs[i] belongs to record i
    _write_jsonl(
        split_dir / "corpus.jsonl",
        [{"record_id": i, "doc_id": f"MED-{i}", "text": f"doc {i}"} for i in range(n_docs)],
    )
    perm = rng.permutation(n_docs)
    np.save(emb / "corpus.npy", docs[perm])
    (emb / "corpus.ids.json").write_text(json.dumps(perm.tolist()))
    truth = {}
    for split, n_q in (("train", 8), ("dev", 3), ("test", 5)):
        queries = _unit(rng.standard_normal((n_q, dim)))
        _write_jsonl(
            split_dir / f"queries_{split}.jsonl",
            [
                {"q_index": i, "orig_q_id": f"PLAIN-{i % 2}", "text": f"{split} {i}"}
                for i in range(n_q)
            ],
        )
        qperm = rng.permutation(n_q)
        np.save(emb / f"queries_{split}.npy", queries[qperm])
        (emb / f"queries_{split}.ids.json").write_text(json.dumps(qperm.tolist()))
        rows = [("q_index", "record_id", "rel")]
        answers = {
            i: {int(d): int(rng.integers(1, 3)) for d in rng.choice(n_docs, 2, replace=False)}
            for i in range(n_q)
        }
        rows += [(q, d, g) for q, dg in answers.items() for d, g in dg.items()]
        (split_dir / f"qrels_{split}.tsv").write_text(
            "".join("\t".join(map(str, r)) + "\n" for r in rows)
        )
        truth[split] = (queries, answers)
    return split_dir, docs, truth


def test_load_embedded_aligns_rows_by_ids(nudge_layout):
    split_dir, docs, truth = nudge_layout
    ds = load_embedded(split_dir.parent, "nudge_split", "m")
    assert isinstance(ds, EmbeddedDataset)
    assert isinstance(ds.doc_embeddings, np.memmap)
    assert ds.n_docs == 20 and ds.dim == 6
    record = np.array([int(i) for i in ds.doc_ids])
    assert_allclose(ds.doc_embeddings, docs[record])
    assert ds.doc_texts == [f"doc {r}" for r in record]
    assert ds.source_doc_ids == [f"MED-{r}" for r in record]
    for split, (queries, answers) in truth.items():
        sp = ds.split(split)
        q_index = np.array([int(q) for q in sp.query_ids])
        assert_allclose(sp.query_embeddings, queries[q_index])
        assert sp.query_texts == [f"{split} {q}" for q in q_index]
        assert sp.source_query_ids == [f"PLAIN-{q % 2}" for q in q_index]
        for row, q in enumerate(q_index):
            lo, hi = sp.relevance.indptr[row], sp.relevance.indptr[row + 1]
            got = {
                ds.doc_ids[d]: int(g)
                for d, g in zip(
                    sp.relevance.indices[lo:hi], sp.relevance.grades[lo:hi], strict=True
                )
            }
            assert got == {str(d): g for d, g in answers[q].items()}
        qs = sp.queryset()
        assert isinstance(qs, QuerySet)
        assert_array_equal(qs.indices, sp.relevance.indices)


def test_load_embedded_accepts_split_folder_and_no_mmap(nudge_layout):
    split_dir, _, _ = nudge_layout
    ds = load_embedded(split_dir, model="m", mmap=False, splits=["test"])
    assert not isinstance(ds.doc_embeddings, np.memmap)
    assert list(ds.splits) == ["test"]
    with pytest.raises(KeyError, match=r"no split 'train'.*have \['test'\]"):
        _ = ds.train


def test_load_embedded_missing_pieces(nudge_layout, tmp_path):
    split_dir, _, _ = nudge_layout
    with pytest.raises(FileNotFoundError, match=r"no embeddings for model 'other'.*\['m'\]"):
        load_embedded(split_dir, model="other")
    with pytest.raises(FileNotFoundError, match="beir_split/emb not found"):
        load_embedded(split_dir.parent, "beir_split", "m")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_embedded(tmp_path / "nowhere")
    (split_dir / "emb" / "m" / "queries_dev.ids.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"queries_dev\.ids\.json not found"):
        load_embedded(split_dir, model="m")


def test_load_embedded_mismatches(nudge_layout):
    split_dir, _, _ = nudge_layout
    emb = split_dir / "emb" / "m"
    ids = json.loads((emb / "corpus.ids.json").read_text())
    (emb / "corpus.ids.json").write_text(json.dumps(ids[:-1]))
    with pytest.raises(
        ValueError, match=r"corpus\.npy has 20 rows, but corpus\.ids\.json lists 19"
    ):
        load_embedded(split_dir, model="m")
    (emb / "corpus.ids.json").write_text(json.dumps(ids))
    with open(split_dir / "qrels_test.tsv", "a") as f:
        f.write("0\t999\t1\n")
    with pytest.raises(ValueError, match=r"qrels_test\.tsv names 1 document id.*'999'"):
        load_embedded(split_dir, model="m")


def test_load_embedded_beir_layout_with_shared_query_matrix(beir_dir):
    rng = np.random.default_rng(0)
    emb = beir_dir / "emb" / "mini"
    emb.mkdir(parents=True)
    docs = _unit(rng.standard_normal((3, 4)))
    np.save(emb / "corpus.npy", docs)
    (emb / "corpus.ids.json").write_text(json.dumps(["D1", "D2", "D3"]))
    queries = _unit(rng.standard_normal((3, 4)))
    np.save(emb / "queries.npy", queries)
    (emb / "queries.ids.json").write_text(json.dumps(["Q3", "Q2", "Q1"]))
    ds = load_embedded(beir_dir, model="mini")
    assert list(ds.splits) == ["test"]
    test = ds.test
    # queries of the split = those in its qrels (Q3 has only a score-0 row but is judged)
    assert test.query_ids == ["Q1", "Q2", "Q3"]
    assert_allclose(test.query_embeddings, queries[[2, 1, 0]])
    assert test.relevance.to_lists() == [[0, 1], [2], []]
    assert test.query_texts[0] == "statins?"
    assert ds.doc_texts[0] == "Statins lower cholesterol."


# ====================================================================== every file error named
# Issue 14, defect 6: each case ended in a traceback or an anonymous error before.
def test_zero_byte_npy_names_the_file(nudge_layout):
    split_dir, _, _ = nudge_layout
    npy = split_dir / "emb" / "m" / "corpus.npy"
    npy.write_bytes(b"")  # was: EOFError "No data left in file"
    with pytest.raises(DataFileError, match=r"corpus\.npy: empty file \(0 bytes\); expected a "):
        load_embedded(split_dir, model="m")


@pytest.mark.parametrize("mmap", [True, False])
def test_truncated_npy_names_file_and_sizes(nudge_layout, mmap):
    split_dir, _, _ = nudge_layout
    npy = split_dir / "emb" / "m" / "corpus.npy"
    data = npy.read_bytes()
    npy.write_bytes(data[:-100])  # was: "mmap length is greater than file size", no file
    expected = (
        r"corpus\.npy: truncated: the header declares a \(20, 6\) float32 array "
        rf"\({len(data)} bytes in all\), but the file has {len(data) - 100} bytes"
    )
    with pytest.raises(DataFileError, match=expected) as info:
        load_embedded(split_dir, model="m", mmap=mmap)
    assert info.value.path == npy and info.value.offset == len(data) - 100


def test_npy_that_is_not_an_array_file(nudge_layout):
    split_dir, _, _ = nudge_layout
    npy = split_dir / "emb" / "m" / "queries_dev.npy"
    npy.write_bytes(b"not numpy at all")
    with pytest.raises(DataFileError, match=r"queries_dev\.npy: not a \.npy file"):
        load_embedded(split_dir, model="m")
    np.save(npy, np.array([["a", "b"]], dtype=object), allow_pickle=True)
    with pytest.raises(DataFileError, match=r"queries_dev\.npy: holds Python objects"):
        load_embedded(split_dir, model="m")
    np.save(npy, np.zeros((3, 6), dtype=np.int32))
    with pytest.raises(DataFileError, match=r"queries_dev\.npy: expected float32 query emb"):
        load_embedded(split_dir, model="m")


@pytest.mark.parametrize(
    "name",
    ["corpus.jsonl", "queries_test.jsonl", "qrels_test.tsv", "emb/m/queries_test.ids.json"],
)
def test_non_utf8_bytes_name_file_line_and_offset(nudge_layout, name):
    split_dir, _, _ = nudge_layout
    path = split_dir / name
    lines = path.read_bytes().split(b"\n")
    row = min(2, len(lines) - 1)  # third line (the ids file has one)
    lines[row] = lines[row][:3] + b"\xff" + lines[row][3:]
    path.write_bytes(b"\n".join(lines))
    offset = sum(len(line) + 1 for line in lines[:row]) + 3
    expected = (
        rf"{name.split('/')[-1]}:{row + 1}: not valid UTF-8 text: byte b'\\xff' at byte "
        rf"offset {offset}"
    )
    with pytest.raises(DataFileError, match=expected) as info:  # was: bare UnicodeDecodeError
        _ = load_embedded(split_dir, model="m").doc_texts  # corpus texts load on first access
    assert (info.value.path, info.value.line, info.value.offset) == (path, row + 1, offset)


def test_missing_split_file_is_named_when_the_split_is_asked_for(nudge_layout):
    split_dir, _, _ = nudge_layout
    (split_dir / "qrels_dev.tsv").unlink()
    with pytest.raises(FileNotFoundError, match=r"no qrels for split 'dev'.*qrels_dev\.tsv"):
        load_embedded(split_dir, model="m", splits=["train", "dev", "test"])
    ds = load_embedded(split_dir, model="m")  # by default: the splits that have qrels
    assert list(ds.splits) == ["train", "test"]


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "null"), (1.5, "1.5"), (["D4"], '\\["D4"\\]'), ("  ", '"  "'), (True, "true")],
)
def test_id_that_is_no_id_is_refused(beir_dir, value, shown):
    with open(beir_dir / "corpus.jsonl", "a") as f:
        f.write(json.dumps({"_id": value, "text": "four"}) + "\n")
    # was: null became the id "None"
    expected = (
        rf"corpus\.jsonl:4: field '_id' must be a non-empty string or an integer id, got {shown}"
    )
    with pytest.raises(DataFileError, match=expected) as info:
        load_beir(beir_dir)
    assert info.value.line == 4


def test_text_that_is_no_string_is_refused(beir_dir):
    with open(beir_dir / "queries.jsonl", "a") as f:
        f.write(json.dumps({"_id": "Q4", "text": None}) + "\n")
    with pytest.raises(
        DataFileError, match=r"queries\.jsonl:4: field 'text' must be a string, got null"
    ):
        load_beir(beir_dir)


def test_ids_file_entries_must_be_unique_ids(nudge_layout):
    split_dir, _, _ = nudge_layout
    ids_path = split_dir / "emb" / "m" / "corpus.ids.json"
    ids = json.loads(ids_path.read_text())
    ids_path.write_text(json.dumps([*ids[:3], None, *ids[4:]]))
    with pytest.raises(DataFileError, match=r"corpus\.ids\.json: entry 3 must be .* got null"):
        load_embedded(split_dir, model="m")
    ids_path.write_text(json.dumps([*ids[:3], ids[0], *ids[4:]]))
    with pytest.raises(
        DataFileError, match=r"corpus\.ids\.json: id '\d+' is listed twice \(entries 0 and 3\)"
    ):
        load_embedded(split_dir, model="m")


def test_headerless_qrels_keeps_its_first_row(beir_dir):
    # was: int("1.0") failed on line 1, so the row was skipped as a "header"
    (beir_dir / "qrels" / "test.tsv").write_text("Q1\tD1\t1.0\nQ2\tD3\t2\n")
    ds = load_beir(beir_dir)
    assert ds.grades() == {"Q1": {"D1": 1}, "Q2": {"D3": 2}}
    (beir_dir / "qrels" / "test.tsv").write_text("Q1\tD1\t0.5\nQ2\tD3\t2\n")
    with pytest.raises(DataFileError, match=r"test\.tsv:1: score must be an integer, got '0\.5'"):
        load_beir(beir_dir)


def test_headerless_qrels_in_the_embedded_layout(nudge_layout):
    split_dir, _, truth = nudge_layout
    path = split_dir / "qrels_test.tsv"
    rows = path.read_text().splitlines()[1:]  # drop the header, write the first score as 2.0
    first = rows[0].split("\t")
    rows[0] = "\t".join([first[0], first[1], f"{first[2]}.0"])
    path.write_text("\n".join(rows) + "\n")
    ds = load_embedded(split_dir, model="m", splits="test")
    assert ds.test.relevance.n_pairs == sum(len(a) for a in truth["test"][1].values())


def test_repeated_judgement_names_both_lines(nudge_layout):
    split_dir, _, _ = nudge_layout
    path = split_dir / "qrels_test.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(
        DataFileError, match=rf"qrels_test\.tsv:{len(lines) + 1}: .* again \(first on line 2\)"
    ):
        load_embedded(split_dir, model="m")


def test_splits_takes_one_name_or_a_list(nudge_layout):
    split_dir, _, _ = nudge_layout
    ds = load_embedded(split_dir, model="m", splits="train")  # was: "t", "r", "a", ...
    assert list(ds.splits) == ["train"]
    for bad in ([], [""], ["train", 3]):
        with pytest.raises(ValueError, match="splits must be a split name"):
            load_embedded(split_dir, model="m", splits=bad)
    with pytest.raises(TypeError, match="splits must be a split name or a list"):
        load_embedded(split_dir, model="m", splits=3)


def test_from_json_on_a_folder(tmp_path):
    with pytest.raises(DataFileError, match=r"is a folder, not a file"):  # was IsADirectoryError
        RetrievalDataset.from_json(tmp_path)


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        # was TypeError: unhashable type: 'list'
        ({"relevant_docs": {"q": [["d"]]}}, r"relevant_docs\['q'\] must be a list of document ids"),
        # was AttributeError: 'list' object has no attribute 'items'
        ({"relevance": {"q": ["d"]}}, r"relevance\['q'\] must be a dict \{doc_id: grade\}"),
        ({"queries": {"q": None}}, r"queries\['q'\] must be a non-empty string, got None"),
        ({"corpus": ["d"]}, r"corpus must be a dict, got list"),
        ({"relevant_docs": {"q": None}}, r"relevant_docs\['q'\] must be a list of document ids"),
    ],
)
def test_from_json_wrong_kinds_of_values_name_the_file(tmp_path, patch, match):
    path = tmp_path / "odd.json"
    data = {"queries": {"q": "x"}, "corpus": {"d": "y"}, "relevant_docs": {"q": ["d"]}}
    path.write_text(json.dumps({**data, **patch}))
    with pytest.raises(DataFileError, match=rf"odd\.json: {match}") as info:
        RetrievalDataset.from_json(path)
    assert info.value.path == path


def test_from_json_deeply_nested(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"queries": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(
        DataFileError, match=r"deep\.json: JSON nested too deeply"
    ):  # RecursionError
        RetrievalDataset.from_json(path)


def test_from_json_non_utf8(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"queries": {"q": "caf\xe9"},\n "corpus": {}, "relevant_docs": {}}')
    with pytest.raises(
        DataFileError,
        match=r"latin1\.json:1: not valid UTF-8 text: byte b'\\xe9' at byte offset 22",
    ):
        RetrievalDataset.from_json(path)


def test_blank_question_is_refused_as_in_pairs(tmp_path):
    # was accepted here while normalize_pairs refuses the same question
    with pytest.raises(ValueError, match=r"queries\['q2'\] must be a non-empty string, got ' '"):
        RetrievalDataset({"q1": "what?", "q2": " "}, {"d": "x"}, {"q1": ["d"]})
    RetrievalDataset({"q": "x"}, {"d": ""}, {"q": ["d"]})  # an empty document text is data
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    _write_jsonl(beir / "corpus.jsonl", [{"_id": "D", "text": "x"}])
    _write_jsonl(beir / "queries.jsonl", [{"_id": "Q", "text": "y"}, {"_id": "B", "text": "\t"}])
    (beir / "qrels" / "test.tsv").write_text("Q\tD\t1\n")
    with pytest.raises(DataFileError, match=r"queries\.jsonl:2: query 'B' has a blank 'text'"):
        load_beir(beir)


def test_data_file_error_is_a_value_error_and_pickles(tmp_path):
    import pickle

    path = tmp_path / "x.json"
    path.write_text("[1,")
    with pytest.raises(ValueError) as info:
        RetrievalDataset.from_json(path)
    err = info.value
    assert isinstance(err, DataFileError) and err.path == path and err.line == 1
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.path, back.line, back.offset) == (str(err), err.path, 1, err.offset)


# ====================================================================== real data
def test_nfcorpus_nudge_split_counts_and_untuned_metrics(nfcorpus_dir):
    ds = load_embedded(nfcorpus_dir, "nudge_split")
    assert ds.n_docs == 3633 and ds.dim == 384
    assert ds.doc_embeddings.dtype == np.float32
    assert {s: sp.n_queries for s, sp in ds.splits.items()} == {
        "train": 1702,
        "dev": 242,
        "test": 485,
    }
    assert ds.test.relevance.n_pairs == 12542
    assert set(np.unique(ds.test.relevance.grades)) == {1, 2}
    _, rows = search(ds.test.query_embeddings, ds.doc_embeddings, 10, similarity="cosine")
    scores = evaluate(rows, ds.test.relevance, 10)
    # reference values (data README, nudge-ft calc_metrics_batch): 30.5 / 32.2
    assert_allclose(scores["recall@10"], 0.3047267, atol=1e-6)
    assert_allclose(scores["ndcg@10"], 0.322, atol=1e-3)


def test_nfcorpus_beir_split_reuses_corpus(nfcorpus_dir):
    ds = load_embedded(nfcorpus_dir / "beir_split")
    assert ds.n_docs == 3633
    assert {s: sp.n_queries for s, sp in ds.splits.items()} == {
        "train": 2590,
        "dev": 324,
        "test": 323,
    }
    _, rows = search(ds.test.query_embeddings, ds.doc_embeddings, 10)
    scores = evaluate(rows, ds.test.relevance, 10)
    # reference values (data README): 27.9 / 29.4
    assert_allclose(scores["recall@10"], 0.2793110, atol=1e-6)
    assert_allclose(scores["ndcg@10"], 0.294, atol=1e-3)
