"""Build a Chroma folder and pair files from the nfcorpus data, for the command line.

Puts the stored MiniLM document vectors of ``nudge_split`` (``emb/all-MiniLM-L6-v2``) and
their texts into a persistent Chroma collection (cosine), keyed by the NFCorpus document ids
(``MED-10``, ...), and writes ``train.jsonl``, ``dev.jsonl`` and ``test.jsonl``: one line per
question, ``{"question": ..., "doc_ids": [...], "grades": [...]}`` from the split's queries and
qrels (grades 1 and 2). No model is run: the vectors are the ones already stored.

    python examples/nfcorpus_to_chroma.py --data ../shared/data/nfcorpus --out /tmp/nf

Then ``examples/cli_nfcorpus.sh`` runs the commands on it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

MODEL = "all-MiniLM-L6-v2"


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def build(data: Path, out: Path, collection: str = "nfcorpus", ef: int | None = None) -> None:
    """Write ``out/chroma`` (the collection) and ``out/{train,dev,test}.jsonl``.

    ``ef`` sets HNSW's ``ef_construction`` and ``ef_search`` (Chroma's default: 100).
    """
    import chromadb

    split_dir = data / "nudge_split"
    records = {str(r["record_id"]): r for r in _jsonl(split_dir / "corpus.jsonl")}
    emb = split_dir / "emb" / MODEL
    vectors = np.load(emb / "corpus.npy")
    row_ids = [str(i) for i in json.loads((emb / "corpus.ids.json").read_text())]
    doc_id = {rid: str(records[rid]["doc_id"]) for rid in row_ids}

    folder = out / "chroma"
    if folder.exists():
        shutil.rmtree(folder)
    client = chromadb.PersistentClient(path=str(folder))
    hnsw: dict = {"space": "cosine"}
    if ef is not None:
        hnsw.update(ef_construction=ef, ef_search=ef)
    col = client.create_collection(collection, configuration={"hnsw": hnsw})
    for s in range(0, len(row_ids), 1000):
        rows = row_ids[s : s + 1000]
        col.add(
            ids=[doc_id[r] for r in rows],
            embeddings=vectors[s : s + 1000],
            documents=[records[r]["text"] for r in rows],
        )
    print(f"{folder}: collection {collection!r} with {col.count()} documents ({hnsw})")

    for split in ("train", "dev", "test"):
        questions = {
            str(q["q_index"]): q["text"] for q in _jsonl(split_dir / f"queries_{split}.jsonl")
        }
        judged: dict[str, dict[str, int]] = {}
        with open(split_dir / f"qrels_{split}.tsv", encoding="utf-8") as f:
            next(f)  # header: q_index record_id rel
            for line in f:
                q, r, grade = line.split()
                if int(grade) > 0:
                    judged.setdefault(q, {})[doc_id[r]] = int(grade)
        path = out / f"{split}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for q, docs in judged.items():
                line = {
                    "question": questions[q],
                    "doc_ids": list(docs),
                    "grades": list(docs.values()),
                }
                f.write(json.dumps(line) + "\n")
        print(f"{path}: {len(judged)} questions, {sum(map(len, judged.values()))} pairs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the nfcorpus folder")
    parser.add_argument("--out", type=Path, required=True, help="folder to write to")
    parser.add_argument("--ef", type=int, help="HNSW ef_construction and ef_search (default 100)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    build(args.data, args.out, ef=args.ef)


if __name__ == "__main__":
    main()
