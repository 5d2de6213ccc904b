"""Generate the docs pages that come from the code (run by mkdocs-gen-files at build time).

* ``cli.md``: every subcommand and flag of ``nudge-rag``, read from the argparse parser in
  ``nudge_rag/cli.py`` (so the page cannot drift from ``nudge-rag COMMAND --help``);
* ``stores/<store>.md``: one page per store module, from its ``SPEC`` (install extra,
  framework wrapper classes, ``--store`` URI forms, metric hints, what the backend does after
  writes, how exactly restore gives originals back), and the module's own docstring and
  classes rendered by mkdocstrings. Longer advice the spec does not hold is in
  ``STORE_NOTES`` below.

Run by hand to see the output: ``python docs/gen_pages.py --print``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "integrations")]

from nudge_rag import cli  # noqa: E402
from nudge_rag.backends import supported_stores  # noqa: E402
from nudge_rag.backends._spec import store_specs  # noqa: E402

# What the code does not hold as data: (metric, index advice, after writes / restore).
STORE_NOTES: dict[str, tuple[str, str, str]] = {
    "memory": (
        "LangChain's `InMemoryVectorStore` and LlamaIndex's `SimpleVectorStore` rank by cosine: "
        "use NUDGE-N. `ArrayStore` takes the metric you give it.",
        "Exact search; nothing to configure.",
        "Originals live in memory with the store object unless you give `state_dir=` (or "
        "`persist_dir=` in LlamaIndex). If you persist the store (`InMemoryVectorStore.dump`, "
        "`index.storage_context.persist`), persist it again after `fit()` / `finetune()` and "
        "give a `state_dir` so that a later process can `restore()`.",
    ),
    "chroma": (
        "Chroma's default space is `l2`. Create collections with `cosine` for NUDGE-N "
        '(`configuration={"hnsw": {"space": "cosine"}}` or '
        '`metadata={"hnsw:space": "cosine"}`) and `ip` for NUDGE-M. On `l2`, NUDGE-N is '
        "accepted only while every stored vector is unit-norm.",
        "HNSW is approximate: after tuning, Chroma's default search loses a little (about 0.3 "
        "nDCG@10 points on nfcorpus); `ef_search=400` gives the exact-search number.",
        "Writes are `collection.update` (text and metadata kept). Originals go to "
        "`<persist dir>/nudge_state/<collection>`; a Chroma server (`chroma+http://`) needs "
        "`state_dir=` / `--state-dir`. A cosine collection re-normalizes what it stores, so "
        "restored vectors equal the originals to float32 rounding (about 3e-8).",
    ),
    "qdrant": (
        "LlamaIndex and LangChain create `Distance.COSINE` collections: NUDGE-N. For NUDGE-M, "
        "create the collection with `Distance.DOT`.",
        'Qdrant\'s *local* mode searches by brute force in Python; `passive="store"` is meant '
        "for a Qdrant server. Point ids are the node ids, so LlamaIndex nodes need UUID ids "
        "(the default).",
        "Writes are `update_vectors` (payloads kept). Originals go to "
        "`<local path>/nudge_state/<collection>`; a server needs `state_dir=` / `--state-dir`. "
        "`COSINE` re-normalizes stored vectors (restore exact to float32 rounding).",
    ),
    "faiss": (
        "`IndexFlatIP` on unit vectors (LangChain `normalize_L2=True`) or `IndexFlatL2` on unit "
        "vectors for NUDGE-N; `IndexFlatIP` for NUDGE-M.",
        "Flat indexes and `IndexIVFFlat` are supported (IVF with `nprobe` below the number of "
        "lists searches part of the lists). HNSW graphs and PQ / scalar-quantized codes cannot "
        "be updated and are refused before anything is written.",
        "The index lives in memory: call `save_local(folder)` (LangChain) or "
        "`index.storage_context.persist(folder)` (LlamaIndex) again after `fit()` / "
        "`finetune()`, and give `state_dir=<folder>/nudge_state` so originals outlive the "
        "process. Or use the write-through mode (`folder=` given to the backend factory), which "
        "writes each batch into `index.faiss` in place. After a crash in memory mode use "
        "`restore()`, not `resume()`.",
    ),
    "pgvector": (
        "LangChain's `distance_strategy` is the metric (`COSINE` for NUDGE-N, `MAX_INNER_PRODUCT` "
        "for NUDGE-M); LlamaIndex's `PGVectorStore` always ranks by cosine distance (NUDGE-N).",
        "An HNSW or IVFFlat index keeps the old row versions of an `UPDATE` until a vacuum: the "
        "backend runs `VACUUM (ANALYZE)` after each fit, restore and resume (first `REINDEX "
        "INDEX CONCURRENTLY` of an HNSW index when over 2 % of rows are dead). A table with no "
        "index cannot tell its metric: pass `distance=` (CLI: `--distance`). "
        '`passive="store"` without a vector index makes every validation query a sequential '
        "scan; prefer the read mode there. Over HNSW, raise `hnsw.ef_search` in "
        "`search_params`: an approximate kNN makes validation scores optimistic (see "
        "Benchmarks).",
        "Originals, the pending plan and progress live in side tables of the same database "
        "(`nudge_originals`, `nudge_pending`, `nudge_plans`), each batch one transaction with "
        "its originals: no `state_dir` is needed, and `restore()` works from any process that "
        "can reach the database.",
    ),
    "milvus": (
        '`metric_type="COSINE"` for NUDGE-N (or `L2` / `IP` on unit vectors); `IP` for NUDGE-M.',
        "FLAT gives exact search; approximate indexes are rebuilt by Milvus as rows change.",
        "Writes are whole-row upserts followed by `flush` (every other field kept). Originals "
        "go next to a Milvus Lite `.db` file; a Milvus server needs `state_dir=` / "
        "`--state-dir`.",
    ),
    "lancedb": (
        "LangChain's `LanceDB` and LlamaIndex's `LanceDBVectorStore` search by `l2`: NUDGE-N is "
        "accepted while every vector is unit-norm (l2 then ranks like cosine). Use `dot` for "
        "NUDGE-M.",
        "A flat scan is exact; rebuild an ANN index after tuning if you use one.",
        "Writes are `merge_insert` of the id and vector columns. Every write creates a new "
        "table version, and older versions keep the tuned (or original) vectors until you "
        "clean them up (`table.optimize(cleanup_older_than=timedelta(0))`). Originals go to the "
        "LanceDB folder's `nudge_state`.",
    ),
}

# A runnable start for the stores a new user most often has (shown on their pages).
STORE_EXAMPLES: dict[str, str] = {
    "chroma": """```python
from langchain_chroma import Chroma
from langchain_nudge import NudgeRetriever

store = Chroma("docs", embeddings, persist_directory="./chroma_db",
               collection_metadata={"hnsw:space": "cosine"})   # cosine for NUDGE-N
store.add_texts(texts, ids=ids)
retriever = NudgeRetriever(vectorstore=store, k=5)
retriever.fit(pairs)           # originals in ./chroma_db/nudge_state/docs
retriever.restore()
```

From the shell: `nudge-rag tune --store chroma:./chroma_db --collection docs --pairs
train.jsonl --embed sentence-transformers:MODEL_FOLDER` ([command line](../cli-guide.md)).""",
    "pgvector": """```python
from langchain_postgres import PGVector
from langchain_nudge import NudgeRetriever

store = PGVector(embeddings, connection="postgresql+psycopg://user:password@localhost/db",
                 collection_name="docs")       # distance_strategy COSINE (the default)
store.add_texts(texts, ids=ids)
retriever = NudgeRetriever(vectorstore=store, k=5)
retriever.fit(pairs)           # originals in side tables of the same database
retriever.restore()            # from any process that reaches the database
```

LlamaIndex: `PGVectorStore.from_params(..., table_name="docs", embed_dim=384)` in a
`StorageContext`, then `NudgeFinetuneEngine.from_index(index, train_pairs=pairs)`. From the
shell: `nudge-rag tune --store postgresql://user@localhost/db --collection docs ...` (a
LangChain collection, or a table).""",
}

FRAMEWORK = {"langchain": "LangChain", "llama-index": "LlamaIndex", "": "any"}


def _from_specs() -> list[dict]:
    """One dict per store from the store specs (``nudge_rag.backends._spec``)."""
    stores = []
    for spec in store_specs():
        notes = STORE_NOTES.get(spec.name)
        metric = f"Cosine (NUDGE-N): `{spec.cosine_hint}`." if spec.cosine_hint else ""
        if spec.dot_hint:
            metric += f" Inner product (NUDGE-M): `{spec.dot_hint}`."
        after = f"After writes: {spec.after_writes or 'nothing'}. Restore: {spec.restore}."
        stores.append(
            {
                "page": spec.name,
                "title": spec.label,
                "module": spec.module,
                "classes": None,
                "rows": [
                    (
                        w.framework,
                        w.class_path.rsplit(".", 1)[-1],
                        w.class_path,
                        w.extra or spec.extra,
                    )
                    for w in spec.wrappers
                ],
                "uris": [s.form for s in spec.schemes],
                "metric": (metric + (f" {notes[0]}" if notes else "")).strip(),
                "advice": notes[1] if notes else "",
                "restore": after + (f" {notes[2]}" if notes else ""),
            }
        )
    return stores


def store_pages() -> dict[str, str]:
    """The markdown of ``stores/index.md`` and one page per store."""
    stores = _from_specs()
    pages: dict[str, str] = {}
    index = [
        "# Stores",
        "",
        "Every store is reached the same way from LangChain, LlamaIndex and the command line: "
        "the framework's store object is looked up in one registry (subclasses included) and "
        "its backend reads, writes and searches the stored vectors in place. This page and the "
        "store pages are generated from that registry.",
        "",
        "| store | install | LangChain | LlamaIndex | `--store` |",
        "|---|---|---|---|---|",
    ]
    for store in stores:
        page, title, module, classes = (store[k] for k in ("page", "title", "module", "classes"))
        entries, store_uris = store["rows"], store["uris"]
        extras = sorted({e for _, _, _, e in entries if e})
        lc = ", ".join(f"`{label}`" for fw, label, _, _ in entries if fw == "langchain") or "–"
        li = ", ".join(f"`{label}`" for fw, label, _, _ in entries if fw == "llama-index") or "–"
        uri = ", ".join(f"`{u}`" for u in store_uris) or "–"
        install = ", ".join(f'`pip install "nudge-rag[{e}]"`' for e in extras)
        index.append(f"| [{title}]({page}.md) | {install} | {lc} | {li} | {uri} |")
        metric, advice, restore = store["metric"], store["advice"], store["restore"]
        lines = [f"# {title}", "", "## Install", ""]
        lines += [f'```bash\npip install "nudge-rag[{e}]"\n```\n' for e in extras]
        if page in STORE_EXAMPLES:
            lines += ["## Example", "", STORE_EXAMPLES[page], ""]
        lines += ["## Wrapper classes", "", "| framework | class | class path |", "|---|---|---|"]
        lines += [f"| {FRAMEWORK[fw]} | `{label}` | `{path}` |" for fw, label, path, _ in entries]
        lines += [
            "",
            "Subclasses of these classes use the same backend.",
            "",
            "## Command line",
            "",
        ]
        if store_uris:
            lines += ["`--store` takes " + ", ".join(f"`{u}`" for u in store_uris) + "."]
        else:
            lines += ["In-process stores have no `--store` URI: use the Python API."]
        lines += [
            "",
            "## Metric",
            "",
            metric,
            "",
            *(["## Index advice", "", advice, ""] if advice else []),
            "## After writes, and what restore needs",
            "",
            restore,
            "",
            "## Backend",
            "",
            f"::: {module}",
            "    options:",
            "      show_root_heading: false",
            *(["      members: [" + ", ".join(classes) + "]"] if classes else []),
            "      heading_level: 3",
            "",
        ]
        pages[f"stores/{page}.md"] = "\n".join(lines)
    index += [
        "",
        "Every supported framework class, with the extra that installs it (from "
        "`nudge_rag.backends.supported_stores()`):",
        "",
    ]
    index += [f"- {s}" for s in supported_stores()]
    index += [
        "",
        "Another store: implement `nudge_rag.EmbeddingStore` (subclass "
        "`nudge_rag.BaseEmbeddingStore`) and pass it as `embedding_store=`, or register a "
        "factory with `nudge_rag.backends.register_backend()`.",
        "",
    ]
    pages["stores/index.md"] = "\n".join(index)
    return pages


def _flag_row(action: argparse.Action) -> str:
    flags = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
    if action.choices:
        value = " \\| ".join(f"`{c}`" for c in action.choices)
    elif action.nargs == 0:
        value = "–"
    else:
        value = f"`{action.metavar or action.dest.upper()}`"
    if action.required:
        default = "**required**"
    elif action.default in (None, False, argparse.SUPPRESS) or action.nargs == 0:
        default = "–"
    else:
        default = f"`{action.default}`"
    text = (action.help or "").replace("|", "\\|").replace("\n", " ")
    return f"| {flags} | {value} | {default} | {text} |"


def cli_page() -> str:
    """The command-line reference, from ``nudge_rag.cli``'s parser."""
    parser = cli._parser()
    lines = [
        "# Command-line reference",
        "",
        "Generated from the parser in `nudge_rag/cli.py`; `nudge-rag COMMAND --help` prints "
        "the same. Exit status: 0 on success, 2 on bad usage or input (nothing written), 1 on "
        "other failures, 130 when interrupted.",
        "",
        "```text",
        parser.format_usage().strip(),
        "```",
        "",
        (parser.description or "").strip(),
        "",
    ]
    if parser.epilog:
        lines += ["```text", parser.epilog.strip(), "```", ""]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name, command in sub.choices.items():
        lines += [
            f"## `nudge-rag {name}`",
            "",
            helps.get(name) or "",
            "",
            (command.description or "").strip(),
            "",
            "```text",
            command.format_usage().strip(),
            "```",
            "",
            "| option | value | default | meaning |",
            "|---|---|---|---|",
        ]
        for action in command._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            lines.append(_flag_row(action))
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Write the pages through mkdocs-gen-files (or print them with ``--print``)."""
    pages = {"cli.md": cli_page(), **store_pages()}
    if "--print" in sys.argv:
        for name, text in pages.items():
            print(f"===== {name}\n{text}")  # noqa: T201
        return
    import mkdocs_gen_files

    for name, text in pages.items():
        with mkdocs_gen_files.open(name, "w") as f:
            f.write(text)
        mkdocs_gen_files.set_edit_path(name, "gen_pages.py")


main()
