"""The nudge-rag command line: tune, evaluate, restore and inspect a vector store.

Commands (``nudge-rag COMMAND --help`` for each)::

    nudge-rag tune     --store URI [--collection NAME] --pairs FILE [--val-pairs FILE]
                       [--variant n|m] --embed MODEL [--report DIR] [--dry-run]
                       [--batch-size N] [--state-dir DIR]
    nudge-rag evaluate --store URI [--collection NAME] --pairs FILE --embed MODEL [--k 10] [--json]
    nudge-rag restore  --store URI [--collection NAME] [--state-dir DIR]
    nudge-rag status   --store URI [--collection NAME] [--state-dir DIR] [--json]
    nudge-rag resume   --store URI [--collection NAME] [--state-dir DIR]
    nudge-rag discard  --store URI [--collection NAME] [--state-dir DIR]
    nudge-rag benchmark [--data PATH]

Exit status: 0 on success, 2 on bad usage or bad input (nothing was written), 1 on other
failures; errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from nudge_rag._data import EmbeddedDataset, load_embedded
from nudge_rag._errors import CliError, UnknownIdError, UnsupportedStoreError
from nudge_rag._masking import MaskSecretsFilter, mask_secrets
from nudge_rag._metrics import evaluate
from nudge_rag._search import search
from nudge_rag._solver import NudgeM, NudgeN
from nudge_rag._store import DISTANCES, BaseEmbeddingStore, StatefulEmbeddingStore, supports
from nudge_rag._synthetic import make_retrieval_task
from nudge_rag._tune import QUERY_ADAPTER_MODES
from nudge_rag._validation import check_positive_int

__all__ = ["main", "run_benchmark"]

logger = logging.getLogger(__name__)

_BENCHMARK_SPLITS = ("train", "dev", "test")
PROG = "nudge-rag"
#: The record of the last tune, next to the originals in the state folder.
TUNE_RECORD = "nudge_tune.json"

_DESCRIPTION = """\
NUDGE moves the document vectors stored in your vector store toward the questions they
answer (within a bound chosen on held-out questions), so retrieval improves without
touching the embedding model. The original vectors are saved first; "restore" puts them
back.

Stores (--store): chroma:DIR, chroma+http://HOST:PORT, qdrant:DIR, qdrant+http://HOST:PORT
and, where installed, faiss:DIR, postgresql://..., milvus:FILE.db, lancedb:DIR.
Pairs (--pairs): JSON lines {"question": ..., "doc_id": ...} or {"question": ...,
"doc_ids": [...]}, a CSV with a question,doc_id header, a LlamaIndex
EmbeddingQAFinetuneDataset JSON, or a BEIR folder (queries.jsonl + qrels/SPLIT.tsv).
Models (--embed): sentence-transformers:NAME_OR_PATH, or module:attr returning a LangChain
Embeddings, a LlamaIndex BaseEmbedding or a callable list[str] -> vectors.

Exit status: 0 success, 2 bad usage or input (nothing written), 1 other failures.
"""

_EPILOG = """\
example:
  nudge-rag evaluate --store chroma:./db --collection docs --pairs test.jsonl \\
      --embed sentence-transformers:./all-MiniLM-L6-v2
  nudge-rag tune --store chroma:./db --collection docs --pairs train.jsonl \\
      --embed sentence-transformers:./all-MiniLM-L6-v2 --report report/
  nudge-rag status --store chroma:./db --collection docs
  nudge-rag restore --store chroma:./db --collection docs
"""


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="nudge-rag benchmark", unit="method", leave=False)


def run_benchmark(
    data: EmbeddedDataset,
    *,
    k: int = 10,
    repeat: int = 3,
    train_split: str = "train",
    val_split: str = "dev",
    test_split: str = "test",
    show_progress: bool = False,
) -> list[dict[str, Any]]:
    """Evaluate no fine-tuning, NUDGE-M and NUDGE-N on ``data``'s test split.

    Args:
        data: documents and train/dev/test query splits with embeddings.
        k: cut-off for recall and nDCG.
        repeat: fits per method; the fastest is reported (as the reference's measurements).
        train_split: split whose queries train.
        val_split: split that picks gamma.
        test_split: split that is measured.
        show_progress: show a progress bar over the methods.

    Returns:
        One row per method: ``method``, ``recall@k``, ``ndcg@k``, ``gamma``, ``seconds``.

    Raises:
        TypeError: ``k`` or ``repeat`` not an integer.
        ValueError: ``k`` or ``repeat`` below 1.
        KeyError: a split that ``data`` does not have.
    """
    k = check_positive_int(k, "k")
    repeat = check_positive_int(repeat, "repeat")
    train = data.split(train_split).queryset()
    val = data.split(val_split).queryset()
    test = data.split(test_split)
    docs = data.doc_embeddings
    bar = _progress(3, show_progress)
    rows = []

    def measure(name: str, embeddings: np.ndarray, similarity: str, **extra: Any) -> None:
        _, top = search(test.query_embeddings, embeddings, k, similarity=similarity)
        scores = evaluate(top, test.relevance, k, metrics=("recall", "ndcg"))
        rows.append({"method": name, **{m: scores[m] for m in scores}, **extra})
        if bar is not None:
            bar.update(1)

    measure("no fine-tuning", docs, "cosine", gamma=None, seconds=None)
    for name, cls in (("NUDGE-M", NudgeM), ("NUDGE-N", NudgeN)):
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            solver = cls().fit(docs, train, val)
            times.append(time.perf_counter() - start)
        measure(
            name, solver.embeddings_, solver.similarity, gamma=solver.gamma_, seconds=min(times)
        )
    if bar is not None:
        bar.close()
    return rows


def _format_table(rows: list[dict[str, Any]], k: int) -> str:
    head = f"| method | recall@{k} | nDCG@{k} | gamma | fine-tune s |"
    lines = [head, "|---|---|---|---|---|"]
    for r in rows:
        gamma = "–" if r["gamma"] is None else f"{r['gamma']:.4g}"
        secs = "–" if r["seconds"] is None else f"{r['seconds']:.3f}"
        lines.append(
            f"| {r['method']} | {100 * r[f'recall@{k}']:.1f} | {100 * r[f'ndcg@{k}']:.1f} "
            f"| {gamma} | {secs} |"
        )
    return "\n".join(lines)


def _format_table(rows: list[dict[str, Any]], k: int) -> str:
    head = f"| method | recall@{k} | nDCG@{k} | gamma | fine-tune s |"
    lines = [head, "|---|---|---|---|---|"]
    for r in rows:
        gamma = "–" if r["gamma"] is None else f"{r['gamma']:.4g}"
        secs = "–" if r["seconds"] is None else f"{r['seconds']:.3f}"
        lines.append(
            f"| {r['method']} | {100 * r[f'recall@{k}']:.1f} | {100 * r[f'ndcg@{k}']:.1f} "
            f"| {gamma} | {secs} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------- output helpers
class _Out:
    """Where the command writes: results on stdout, notes and progress on stderr."""

    def __init__(self, quiet: bool = False, progress: str = "auto"):
        self.quiet = quiet
        want = progress == "on" or (progress == "auto" and sys.stderr.isatty() and not quiet)
        self.progress = want and _have_tqdm()
        if want and not self.progress:
            self.note(
                "progress bars need tqdm, which is not installed: pip install "
                "'nudge-rag[progress]' (or pass --progress off)"
            )

    def say(self, text: str = "") -> None:
        """A result line on stdout (silenced by --quiet)."""
        if not self.quiet:
            print(text)

    def note(self, text: str) -> None:
        """A note on stderr (silenced by --quiet)."""
        if not self.quiet:
            print(f"{PROG}: {text}", file=sys.stderr)

    def bar(self, total: int, desc: str, unit: str) -> Any:
        """A tqdm bar on stderr, or ``None``."""
        if not self.progress or total <= 0:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)


def _have_tqdm() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if isinstance(err, KeyError) and not isinstance(err, UnknownIdError) and err.args:
        text = str(err.args[0])
    return " ".join(text.split())


def _exit_status(err: BaseException) -> int:
    """2 for bad usage or input (nothing was written), 1 for other failures."""
    from nudge_rag._writeback import WriteBackError, WrongStateError

    if isinstance(err, CliError):
        return err.status
    if isinstance(err, WrongStateError):  # refused before anything was done
        return 2
    if isinstance(err, WriteBackError):
        return 1
    if isinstance(err, (ValueError, KeyError, FileNotFoundError, NotADirectoryError)):
        return 2
    if isinstance(err, (UnsupportedStoreError, IsADirectoryError)):
        return 2
    return 1


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


# ---------------------------------------------------------------------- the store view
class _StoreView(BaseEmbeddingStore):
    """The opened store as the tuning flow sees it.

    Reads are counted for a progress bar; in a dry run, saved originals are read in place of
    tuned rows and writes are kept in memory.

    Args:
        inner: the backend.
        dry_run: keep ``set_vectors`` in memory (the store is never written).
        originals: ``(ids, vectors)`` saved by an earlier tune, read in their rows' place
            in a dry run (a real run gets them from the write-back).
    """

    def __init__(
        self,
        inner: Any,
        *,
        dry_run: bool = False,
        originals: tuple[list[str], np.ndarray] | None = None,
    ):
        self.inner = inner
        self.distance = inner.distance
        self.dry_run = dry_run
        self.read_bar: Any = None
        self.written: dict[str, np.ndarray] = {}
        self._originals: dict[str, np.ndarray] = {}
        if originals is not None and originals[0]:
            self._originals = dict(zip(originals[0], np.asarray(originals[1], np.float32)))

    def __getattr__(self, name: str) -> Any:  # nearest, state_owner, ... when the store has them
        if name == "inner" or (name == "writeback_state" and self.__dict__.get("dry_run")):
            raise AttributeError(name)  # a dry run keeps its write-back state in memory
        return getattr(self.inner, name)

    @property
    def name(self) -> str:  # noqa: D102
        return self.inner.name

    @property
    def is_remote(self) -> bool:  # noqa: D102
        return bool(self.inner.is_remote)

    def count(self) -> int:  # noqa: D102
        return int(self.inner.count())

    def list_ids(self) -> list[str]:  # noqa: D102
        return list(self.inner.list_ids())

    def default_state_dir(self) -> Path | None:  # noqa: D102
        return self.inner.default_state_dir()

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:  # noqa: D102
        ids = list(ids)
        vectors = np.asarray(self.inner.get_vectors(ids), dtype=np.float32)
        if self.dry_run and (self._originals or self.written):
            vectors = vectors.copy()
            for row, i in enumerate(ids):
                got = self.written.get(i, self._originals.get(i))
                if got is not None:
                    vectors[row] = got
        if self.read_bar is not None:
            self.read_bar.update(len(ids))
        return vectors

    def set_vectors(self, ids: Sequence[str], vectors: np.ndarray) -> None:  # noqa: D102
        if self.dry_run:
            self.written.update(zip([str(i) for i in ids], np.asarray(vectors, np.float32)))
            return
        self.inner.set_vectors(ids, vectors)


# ---------------------------------------------------------------------- shared steps
@contextmanager
def _opened(args: argparse.Namespace) -> Iterator[Any]:
    from nudge_rag.backends._uri import open_store

    opened = open_store(
        args.store,
        args.collection,
        distance=getattr(args, "distance", None),
        trust_pickle=getattr(args, "trust_pickle", False),
    )
    try:
        yield opened
    finally:
        opened.close()


def _read_pairs(path: str | None, split: str | None, option: str) -> Any:
    from nudge_rag._pair_files import read_pair_file

    if path is None:
        return None
    return read_pair_file(path, split=split, name=option)


def _own_state(store: Any) -> bool:
    """Whether the store keeps its write-back state itself (pgvector: tables in its database)."""
    return supports(store, StatefulEmbeddingStore)


def _state_folder(args: argparse.Namespace, store: Any) -> Path | None:
    """Where the originals are (not created): ``--state-dir`` or the store's default.

    ``None`` for a store that keeps them itself (see :func:`_own_state`).
    """
    if args.state_dir:
        return Path(args.state_dir)
    if _own_state(store):
        return None
    folder = store.default_state_dir()
    if folder is None and store.is_remote:
        msg = (
            f"{store.name} lives on a server: give --state-dir (the folder that holds, or "
            "will hold, its original vectors)"
        )
        raise CliError(msg)
    return None if folder is None else Path(folder)


def _saved_state(args: argparse.Namespace, store: Any) -> tuple[Any, str | None]:
    """A read-only look at the saved state: ``(WriteBack or None, where it lives)``."""
    from nudge_rag._writeback import WriteBack

    folder = _state_folder(args, store)
    if folder is None and _own_state(store):
        return WriteBack(store, None), f"side tables in the store's database ({store.name})"
    if folder is None:
        return None, None
    if not folder.is_dir():
        WriteBack(store, folder).check_state()  # originals kept elsewhere? (creates nothing)
        return None, str(folder)
    return WriteBack(store, folder), str(folder)


def _check_known(pairs: Any, known: set[str] | None, store: Any, option: str) -> None:
    """Every answer id of ``pairs`` is in the store (before anything is embedded)."""
    ids = pairs.doc_ids()
    if known is not None:
        unknown = [d for d in ids if d not in known]
    else:  # ask the store for the answers only: bounded, whatever the store's size
        unknown = []
        for s in range(0, len(ids), 512):
            chunk = ids[s : s + 512]
            try:
                store.get_vectors(chunk)
            except KeyError:
                unknown.extend(d for d in chunk if not _has(store, d))
    if unknown:
        msg = (
            f"{option} {pairs.source}: {len(unknown)} document id(s) are not in the store "
            f"{store.name!r}, e.g. {unknown[:3]!r}"
        )
        raise UnknownIdError(msg, unknown)


def _has(store: Any, doc_id: str) -> bool:
    try:
        store.get_vectors([doc_id])
    except KeyError:
        return False
    return True


def _store_dim(store: Any, sample_id: str) -> int:
    return int(np.asarray(store.get_vectors([sample_id])).shape[1])


def _load_embedder(args: argparse.Namespace) -> Any:
    from nudge_rag._embedders import load_embedder

    return load_embedder(args.embed, query_mode=args.embed_as, batch_size=args.embed_batch_size)


def _embed(tuner: Any, texts: list[str], embedder: Any, dim: int, out: _Out) -> np.ndarray:
    """Embed ``texts`` through the tuner's batched, cached, dimension-checked path."""
    tuner.show_progress = out.progress
    return tuner.embed_questions(texts, embedder, dim)


def _measure(store: Any, pairs: Any, vectors: np.ndarray, k: int) -> dict[str, Any]:
    from nudge_rag._report import evaluate_store

    grades = pairs.grades if pairs.graded else None
    return evaluate_store(store, vectors, pairs.answers, grades, k)


def _check_k(k: int, n_docs: int, where: str) -> None:
    """``--k`` is at most the number of stored vectors (a top-k cannot hold more)."""
    if k > n_docs:
        msg = (
            f"--k {k}: larger than the {n_docs:,} vectors in {where!r}; give --k of at most "
            f"{n_docs:,}"
        )
        raise CliError(msg)


def _check_report_folder(folder: Path) -> None:
    """``--report DIR`` can be written, checked before anything else is (the store included)."""
    if folder.exists() and not folder.is_dir():
        raise CliError(f"--report {folder}: exists and is not a folder")
    probe_dir = folder
    while not probe_dir.exists():  # the nearest existing parent must let us create it
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir() or not os.access(probe_dir, os.W_OK | os.X_OK):
        what = "" if probe_dir == folder else f" (its parent {probe_dir} is not writable)"
        raise CliError(f"--report {folder}: cannot write there{what}")
    for name in ("report.md", "report.json", "report.png"):
        target = folder / name
        if target.exists() and (target.is_dir() or not os.access(target, os.W_OK)):
            raise CliError(f"--report {folder}: {target} exists and cannot be overwritten")


# ---------------------------------------------------------------------- tune
def _cmd_tune(args: argparse.Namespace, out: _Out) -> int:
    from nudge_rag._tune import StoreTuner
    from nudge_rag._writeback import WriteBackError

    if args.report and not args.no_picture:
        try:
            import matplotlib  # noqa: F401
        except ImportError as err:
            msg = (
                "--report draws report.png with matplotlib: pip install 'nudge-rag[report]' "
                "(or add --no-picture)"
            )
            raise CliError(msg) from err
    if args.report:
        _check_report_folder(Path(args.report))
    timings: dict[str, float] = {}
    start = time.perf_counter()
    train = _read_pairs(args.pairs, args.split or "train", "--pairs")
    val = _read_pairs(args.val_pairs, args.val_split, "--val-pairs")
    test = _read_pairs(args.test_pairs, args.test_split, "--test-pairs")
    if val is None and args.gamma is None and train.n_questions < 2:
        msg = (
            f"--pairs {train.source}: {train.n_questions} question(s); choosing gamma by "
            "cross-validation needs at least 2: give --val-pairs FILE (questions that choose "
            "gamma) or a fixed --gamma G"
        )
        raise CliError(msg)
    with _opened(args) as opened:
        store = opened.backend
        _check_k(args.k, store.count(), store.name)
        params: dict[str, Any] = {}
        if args.gamma is not None:
            params["gamma"] = args.gamma
        if args.dry_run:
            saved, where = _saved_state(args, store)
            if saved is not None and saved.has_pending:
                msg = (
                    f"an interrupted write-back is pending (state in {where}): run "
                    f"'{PROG} resume' to finish it or '{PROG} restore' to undo it"
                )
                raise WriteBackError(msg)
            view = _StoreView(store, dry_run=True, originals=saved.originals() if saved else None)
            state_dir: Any = "memory"
        else:
            view = _StoreView(store)
            state_dir = args.state_dir or "auto"
        tuner = StoreTuner(
            view,
            state_dir=state_dir,
            variant=args.variant,
            solver_params=params,
            batch_size=args.batch_size,
            embed_batch_size=args.embed_batch_size,
            passive=args.passive,
            show_progress=out.progress,
            query_adapter=args.query_adapter,
        )
        ids, dim = tuner.preflight()
        known = set(ids)
        for option, pairs in (("--pairs", train), ("--val-pairs", val), ("--test-pairs", test)):
            if pairs is not None:
                _check_known(pairs, known, store, option)
        timings["read pairs + checks"] = time.perf_counter() - start
        start = time.perf_counter()
        embedder = _load_embedder(args)
        timings["load model"] = time.perf_counter() - start
        start = time.perf_counter()
        texts = list(train.questions)
        for pairs in (val, test):
            if pairs is not None:
                texts += pairs.questions
        _embed(tuner, texts, embedder, dim, out)
        timings["embed"] = time.perf_counter() - start

        # Scored before and after: held-out pairs; the training pairs only when there are
        # none (labelled in-sample: they say little about new questions).
        scored = {"validation": val} if val is not None else {}
        if test is not None:
            scored["test"] = test
        if not scored:
            scored = {"train (in-sample)": train}
        vectors = {
            name: _embed(tuner, p.questions, embedder, dim, out) for name, p in scored.items()
        }
        start = time.perf_counter()
        saved = None if args.dry_run else tuner.saved_query_adapter()
        evaluations: dict[str, dict[str, Any]] = {
            name: {"before": _measure(store, p, _adapted(saved, vectors[name]), args.k)}
            for name, p in scored.items()
        }
        timings["evaluate before"] = time.perf_counter() - start
        already = bool(view._originals) if args.dry_run else bool(tuner.writeback.moved_ids())

        view.read_bar = out.bar(store.count(), "reading stored vectors", "vector")
        try:
            result = tuner.tune(train.pairs(), None if val is None else val.pairs(), embed=embedder)
        finally:
            if view.read_bar is not None:
                view.read_bar.close()
                view.read_bar = None
        solver_times = {n: s for n, s in result.timings.items() if n != "embed"}
        timings.update(solver_times)
        if not args.dry_run:
            start = time.perf_counter()
            for name, p in scored.items():
                queries = _adapted(result.query_adapter, vectors[name])
                evaluations[name]["after"] = _measure(store, p, queries, args.k)
            timings["evaluate after"] = time.perf_counter() - start
        result.timings = timings
        summary = _tune_summary(args, opened, result, evaluations, embedder)
        summary["was_tuned"] = already
        if not args.dry_run and result.state_dir is not None:
            _write_record(result.state_dir, summary)
    context = {
        "store": opened.uri,
        "collection": opened.collection,
        "model": embedder.label,
        "training pairs": f"{train.source} ({train.n_questions} questions, {train.n_pairs} pairs)",
    }
    if already:
        context["note"] = (
            "the store was already tuned: 'before' is that tuned state (run restore first "
            "for an untuned baseline); the new tuning started from the saved originals"
        )
    if val is not None:
        context["validation pairs"] = f"{val.source} ({val.n_questions} questions)"
    if test is not None:
        context["test pairs"] = f"{test.source} ({test.n_questions} questions)"
    if args.report:
        from nudge_rag._report import write_report

        paths = write_report(
            result,
            args.report,
            evaluations=evaluations,
            k=args.k,
            context=context,
            dry_run=args.dry_run,
            picture=not args.no_picture,
        )
        summary["report"] = str(paths["md"])
    if args.json:
        summary["metrics"] = evaluations
        summary["timings"] = timings
        print(json.dumps(summary, indent=2))
    else:
        _print_tune(out, summary, evaluations, args)
    return 0


def _adapted(adapter: Any, vectors: np.ndarray) -> np.ndarray:
    """Query vectors through a saved query adapter (unchanged without one)."""
    return vectors if adapter is None else adapter.transform(vectors)


def _tune_summary(
    args: argparse.Namespace, opened: Any, result: Any, evaluations: dict, embedder: Any
) -> dict[str, Any]:
    from nudge_rag._report import _adapter_data

    changed = result.changed_ids
    return {
        "query_adapter": _adapter_data(result),
        "store": opened.uri,
        "collection": opened.collection,
        "dry_run": bool(args.dry_run),
        "variant": f"NUDGE-{result.variant.upper()}",
        "gamma": float(result.gamma),
        "gamma_chosen_by": result.method or getattr(result.solver, "gamma_chosen_by_", ""),
        "n_folds": int(result.n_folds or getattr(result.solver, "n_folds_", 0) or 0),
        "n_cv_repeats": int(getattr(result.solver, "n_cv_repeats_", 0) or 0),
        "val_score": result.val_score,
        "rows_moved": len(changed),
        "n_docs": int(result.n_docs),
        "moved_ids_sample": changed[:5],
        "n_train_questions": int(result.n_train_queries),
        "model": embedder.label,
        "tuned_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "state_dir": None if result.state_dir is None else str(result.state_dir),
    }


def _write_record(folder: Path, summary: dict[str, Any]) -> None:
    from nudge_rag._files import atomic_write_json

    record = {k: v for k, v in summary.items() if k not in ("dry_run", "moved_ids_sample")}
    atomic_write_json(Path(folder) / TUNE_RECORD, record)


def _print_tune(out: _Out, s: dict[str, Any], evaluations: dict, args: argparse.Namespace) -> None:
    how = {"cv": "cross-validation", "val": "the validation pairs", "split": "a held-out share"}
    chosen = how.get(s["gamma_chosen_by"], s["gamma_chosen_by"] or "validation")
    if s["n_folds"]:
        chosen += f", {s['n_folds']} folds"
        if s.get("n_cv_repeats", 0) > 1:
            chosen += f" x {s['n_cv_repeats']} deals"
    verb = "would move" if s["dry_run"] else "moved"
    out.say(
        f"{'dry run: ' if s['dry_run'] else ''}{s['variant']} on {s['store']} "
        f"(collection {s['collection']}): gamma {s['gamma']:.4g} (chosen by {chosen}); "
        f"{verb} {s['rows_moved']:,} of {s['n_docs']:,} stored vectors"
    )
    if s.get("was_tuned"):
        out.say(
            "  the store was already tuned: 'before' is that tuned state (restore first for an "
            "untuned baseline); the new tuning started from the saved originals"
        )
    if s["dry_run"] and s["moved_ids_sample"]:
        out.say(f"  e.g. {', '.join(map(str, s['moved_ids_sample']))}")
    k = args.k
    for name, got in evaluations.items():
        b, a = got["before"], got.get("after")
        line = f"  {name} ({b['n_queries']} questions): recall@{k} {_pct(b[f'recall@{k}'])}"
        if a:
            line += f" -> {_pct(a[f'recall@{k}'])}"
        line += f", nDCG@{k} {_pct(b[f'ndcg@{k}'])}"
        if a:
            line += f" -> {_pct(a[f'ndcg@{k}'])}"
        out.say(line)
    adapter = s.get("query_adapter")
    if adapter:
        how = "validation" if adapter["chosen_by"] == "val" else "cross-validation"
        out.say(
            f"  query adapter ({adapter['mode']}): {'kept' if adapter['kept'] else 'not kept'}; "
            f"{how} nDCG@10 {_pct(adapter['nudge'])} NUDGE alone, "
            f"{_pct(adapter['nudge+adapter'])} with the adapter (lambda {adapter['lambda']:g}, "
            f"blend {adapter['blend']:g})"
        )
    if s["dry_run"]:
        out.say("  nothing was written (dry run)")
    elif s["state_dir"]:
        out.say(
            f"  originals saved in {s['state_dir']} (undo: {PROG} restore --store {s['store']})"
        )
    if s.get("report"):
        out.say(f"  report: {s['report']}")


# ---------------------------------------------------------------------- evaluate
def _cmd_evaluate(args: argparse.Namespace, out: _Out) -> int:
    from nudge_rag._tune import StoreTuner

    pairs = _read_pairs(args.pairs, args.split or "test", "--pairs")
    with _opened(args) as opened:
        store = opened.backend
        if store.count() == 0:
            raise CliError(f"the store {store.name!r} is empty: nothing to evaluate")
        _check_k(args.k, store.count(), store.name)
        _check_known(pairs, None, store, "--pairs")
        dim = _store_dim(store, pairs.answers[0][0])
        embedder = _load_embedder(args)
        tuner = StoreTuner(store, state_dir="memory", embed_batch_size=args.embed_batch_size)
        vectors = _embed(tuner, pairs.questions, embedder, dim, out)
        adapter = None
        if not args.no_query_adapter:
            try:
                saved, _ = _saved_state(args, store)
            except CliError:  # a server store without --state-dir: no saved state to look in
                saved = None
            adapter = None if saved is None else saved.query_adapter()
        scores = _measure(store, pairs, _adapted(adapter, vectors), args.k)
    result = {
        **{k: v for k, v in scores.items() if k != "search"},
        "k": args.k,
        "graded": bool(pairs.graded),
        "search": scores["search"],
        "store": opened.uri,
        "collection": opened.collection,
        "pairs": pairs.source,
        "model": embedder.label,
        "query_adapter": adapter is not None,
    }
    if args.json:
        print(json.dumps(result))
    else:
        k = args.k
        out.say(
            f"{opened.uri} (collection {opened.collection}), {scores['n_queries']} questions "
            f"from {pairs.source}: recall@{k} {_pct(scores[f'recall@{k}'])}, nDCG@{k} "
            f"{_pct(scores[f'ndcg@{k}'])}{' (graded)' if pairs.graded else ''}, "
            f"MRR@{k} {_pct(scores[f'mrr@{k}'])} ({scores['search']}"
            f"{', saved query adapter applied' if adapter is not None else ''})"
        )
    return 0


# ---------------------------------------------------------------------- status / restore / resume
def _status(args: argparse.Namespace, store: Any, opened: Any) -> dict[str, Any]:
    wb, where = _saved_state(args, store)
    info: dict[str, Any] = {
        "store": opened.uri,
        "collection": opened.collection,
        "n_docs": store.count(),
        "distance": store.distance,
        "state_dir": where,
        "tuned": False,
        "pending": None,
        "n_originals": 0,
    }
    if wb is None:
        return info
    if callable(getattr(wb, "status", None)):
        _from_writeback_status(info, wb.status())
    else:  # an older WriteBack: read its state directly
        info["n_originals"] = len(wb.moved_ids())
        info["tuned"] = info["n_originals"] > 0
        pending = wb._state.load_pending()
        if pending is not None:
            kind, ids, _, batch_size, done = pending
            info["pending"] = {
                "kind": kind,
                "n_ids": len(ids),
                "batches_done": done,
                "n_batches": -(-len(ids) // max(batch_size, 1)),
            }
    record_path = None if wb.state_dir is None else Path(wb.state_dir) / TUNE_RECORD
    if info["tuned"] and record_path is not None and record_path.is_file():
        try:  # what the write-back does not record (the model, the folds)
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            logger.warning("unreadable %s: %s", record_path, err)
            record = {}
        keys = ("variant", "gamma", "gamma_chosen_by", "n_folds", "rows_moved", "tuned_at", "model")
        numbers = {"gamma": (int, float), "n_folds": (int,), "rows_moved": (int,)}
        for key in keys:
            value = record.get(key) if isinstance(record, dict) else None
            expect = numbers.get(key, (str,))
            if value is not None and (isinstance(value, bool) or not isinstance(value, expect)):
                logger.warning("%s: %s is %r, not a %s; ignored", record_path, key, value,
                               "number" if key in numbers else "string")  # fmt: skip
                value = None
            if info.get(key) is None:
                info[key] = value
    return info


def _from_writeback_status(info: dict[str, Any], st: Any) -> None:
    """Fill ``info`` from a :class:`~nudge_rag._writeback.WriteBackStatus`."""
    info["tuned"] = bool(st.tuned)
    info["n_originals"] = int(st.n_originals)
    if st.pending is not None:
        info["pending"] = {
            "kind": st.pending,
            "n_ids": int(st.pending_ids),
            "batches_done": int(st.batches_done),
            "n_batches": int(st.batches_total),
        }
    if st.tuned:
        variant = getattr(st, "variant", None)
        info["variant"] = None if not variant else f"NUDGE-{str(variant).upper()}"
        info["gamma"] = getattr(st, "gamma", None)
        info["gamma_chosen_by"] = getattr(st, "method", None)
        info["rows_moved"] = getattr(st, "n_tuned", None)
        info["tuned_at"] = getattr(st, "applied_at", None)
    info["locked_by"] = getattr(st, "locked_by", None)
    info["query_adapter"] = getattr(st, "query_adapter", None)
    info["next_step"] = _shell_next_step(info)


def _shell_next_step(info: dict[str, Any]) -> str:
    """What to do in this state, worded for the shell (``WriteBackStatus.next_step`` is Python)."""
    if info.get("locked_by"):
        return f"another writer is working on this store ({info['locked_by']}): wait for it"
    pending = info.get("pending")
    if pending:
        return (
            f"an interrupted {pending['kind']} waits ({pending['batches_done']} of "
            f"{pending['n_batches']} batches written): '{PROG} resume' finishes it, "
            f"'{PROG} restore' puts every original back"
        )
    if info.get("tuned"):
        return (
            f"{info['n_originals']} stored vector(s) have saved originals: '{PROG} restore' puts "
            f"them back; a new '{PROG} tune' starts from them"
        )
    return "the store holds its original vectors: nothing to do"


def _cmd_status(args: argparse.Namespace, out: _Out) -> int:
    with _opened(args) as opened:
        info = _status(args, opened.backend, opened)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    out.say(
        f"{info['store']} (collection {info['collection']}): {info['n_docs']:,} vectors, "
        f"{info['distance']}"
    )
    if info["tuned"]:
        how = [f"by {info['variant']}"] if info.get("variant") else []
        if info.get("gamma") is not None:
            how.append(f"gamma {info['gamma']:.4g}")
        if info.get("tuned_at"):
            how.append(f"at {info['tuned_at']}")
        moved = info.get("rows_moved")
        moved = f"{moved:,} rows moved, " if moved is not None else ""
        out.say(
            f"  tuned {', '.join(how) or '(no record of how)'}; "
            f"{moved}{info['n_originals']:,} originals saved"
        )
    else:
        out.say("  not tuned (no originals saved)")
    adapter = info.get("query_adapter")
    if adapter:
        out.say(
            f"  query adapter saved (lambda {adapter.get('lambda')}, blend "
            f"{adapter.get('blend')}, chosen by {adapter.get('chosen_by')}): queries through "
            "nudge-rag's retrievers and 'evaluate' are adapted; 'restore' removes it"
        )
    pending = info["pending"]
    if pending:
        out.say(
            f"  a {pending['kind']} write-back is pending: {pending['batches_done']} of "
            f"{pending['n_batches']} batches done; run '{PROG} resume' to finish it or "
            f"'{PROG} restore' to undo it"
        )
    else:
        out.say("  no write-back pending")
    if info.get("locked_by"):
        out.say(f"  another writer is working on it: {info['locked_by']}")
    where = info["state_dir"] or "nowhere (this store keeps no state folder; give --state-dir)"
    out.say(f"  originals: {where}")
    return 0


def _tuner_for_state(args: argparse.Namespace, store: Any) -> Any:
    from nudge_rag._tune import StoreTuner

    folder = _state_folder(args, store)
    if folder is None and not _own_state(store):
        msg = f"no state folder known for {store.name!r}: give --state-dir"
        raise CliError(msg)
    if folder is not None and not folder.is_dir():
        from nudge_rag._writeback import WriteBack

        WriteBack(store, folder).check_state()  # originals kept elsewhere? (creates nothing)
        return None
    return StoreTuner(store, state_dir=folder or "auto", batch_size=args.batch_size)


def _cmd_restore(args: argparse.Namespace, out: _Out) -> int:
    with _opened(args) as opened:
        store = opened.backend
        tuner = _tuner_for_state(args, store)
        n = 0 if tuner is None else tuner.restore()
        if tuner is not None and tuner.state_dir is not None:
            (Path(tuner.state_dir) / TUNE_RECORD).unlink(missing_ok=True)
    if n:
        out.say(f"restored {n:,} original vectors in {opened.uri} (collection {opened.collection})")
    else:
        out.say(
            f"nothing to restore in {opened.uri} (collection {opened.collection}): "
            "no originals saved"
        )
    return 0


def _cmd_resume(args: argparse.Namespace, out: _Out) -> int:
    with _opened(args) as opened:
        tuner = _tuner_for_state(args, opened.backend)
        done = tuner is not None and tuner.resume()
    out.say(
        "finished the interrupted write-back" if done else "no interrupted write-back to finish"
    )
    return 0


def _cmd_discard(args: argparse.Namespace, out: _Out) -> int:
    with _opened(args) as opened:
        tuner = _tuner_for_state(args, opened.backend)
        dropped = tuner is not None and tuner.discard_pending()
        where = None if tuner is None else tuner.state_dir
    if dropped:
        kept = f" in {where}" if where is not None else ""
        out.say(
            f"dropped the interrupted write-back; every saved original stays{kept} "
            f"('{PROG} restore' puts them back)"
        )
    else:
        out.say("no interrupted write-back to drop")
    return 0


# ---------------------------------------------------------------------- benchmark
def _cmd_benchmark(args: argparse.Namespace, out: _Out) -> int:
    if args.data:
        _check_split_folder(Path(args.data), args.split)
        try:  # the benchmark needs all three splits: a missing file is named here
            data = load_embedded(args.data, args.split, args.model, splits=_BENCHMARK_SPLITS)
        except (OSError, ValueError) as err:
            raise CliError(f"cannot load --data {args.data}: {_one_line(err)}") from err
        label = f"{args.data} ({args.split}, {args.model})"
    else:
        data = make_retrieval_task(random_state=args.seed)
        label = f"generated retrieval task (seed {args.seed})"
    try:
        _check_k(args.k, int(data.n_docs), label)
        rows = run_benchmark(data, k=args.k, repeat=args.repeat, show_progress=out.progress)
    except ValueError as err:  # e.g. NaN in the embeddings: one line, no traceback
        raise CliError(f"benchmark failed on {label}: {_one_line(err)}") from err
    if args.json:
        print(json.dumps({"data": label, "rows": rows}, indent=2))
    else:
        test = data.split("test")
        print(f"{label}: {data.n_docs} documents, {test.n_queries} test queries, dim {data.dim}")
        print(_format_table(rows, args.k))
    return 0


def _check_split_folder(root: Path, split: str) -> None:
    """A --data folder without --split's folder: say which split folders exist."""
    if not root.is_dir() or (root / "emb").is_dir() or (root / split).is_dir():
        return
    have = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "emb").is_dir())
    if have:
        msg = (
            f"cannot load --data {root}: no split folder {split!r} there; split folders "
            f"found: {', '.join(have)} (pass --split NAME)"
        )
    else:
        msg = (
            f"cannot load --data {root}: no split folder {split!r} and no folder with an "
            "emb/ subfolder there; expected DATA/SPLIT/emb/MODEL/ or DATA/emb/MODEL/"
        )
    raise CliError(msg)


# ---------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message`` and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for integers ``>= minimum``, checked where the number enters."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            msg = f"must be an integer >= {minimum}, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


def _gamma(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value) or value < 0:
        msg = f"must be a number >= 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="print only errors (and --json)")
    common.add_argument("-v", "--verbose", action="store_true", help="log what nudge-rag does")
    common.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="progress bars on stderr (default: when stderr is a terminal; needs tqdm)",
    )
    return common


def _store_args(parser: argparse.ArgumentParser, state: bool = True) -> None:
    from nudge_rag.backends._uri import supported_schemes

    parser.add_argument(
        "--store", required=True, metavar="URI", help=", ".join(supported_schemes())
    )
    parser.add_argument(
        "--collection", metavar="NAME", help="collection or table (needed when there are several)"
    )
    parser.add_argument(
        "--distance",
        choices=DISTANCES,
        help="how the store ranks, for a store that does not record it (a pgvector table "
        "without an HNSW or IVFFlat index); a store that records it must agree",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="faiss:DIR only: allow loading the folder's index.pkl, a Python pickle "
        "(LangChain's docstore). Loading a pickle runs whatever code it holds, so it is "
        "refused unless you pass this; pass it only for a folder you made or trust",
    )
    if state:
        parser.add_argument(
            "--state-dir",
            metavar="DIR",
            help="where the original vectors are kept (default: next to the store's files; "
            "needed for stores on a server)",
        )


def _embed_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--embed",
        required=True,
        metavar="MODEL",
        help="the model that embedded the documents: sentence-transformers:NAME_OR_PATH or "
        "module:attr (a LangChain Embeddings, a LlamaIndex BaseEmbedding, or a callable)",
    )
    parser.add_argument(
        "--embed-as",
        choices=("query", "document"),
        default="query",
        help="embed questions as a search does (query, the default: embed_query / "
        "get_query_embedding / encode_query, so models with a query instruction such as BGE or "
        "E5 are right without a flag) or in batches as documents (document: faster, the same "
        "vectors for symmetric models such as MiniLM). The command line cannot tell whether a "
        "model is symmetric, so it defaults to the form that is always right; the Python APIs "
        "default to the batch form for speed (NudgeRetriever(query_embedding='query') and "
        "NudgeFinetuneEngine(query_embedding='query') switch)",
    )
    parser.add_argument(
        "--embed-batch-size",
        type=_int_at_least(1),
        default=64,
        metavar="N",
        help="questions per embedding call (default: 64)",
    )


def _parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg_version = version("nudge-rag")
    except PackageNotFoundError:  # a source checkout
        from nudge_rag import __version__ as pkg_version
    parser = _Parser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {pkg_version}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common()

    tune = sub.add_parser(
        "tune",
        parents=[common],
        help="tune the stored document vectors from (question, document) pairs",
        description="Embed the training questions, choose the step size on held-out questions, "
        "save the original vectors and write the moved ones into the store. Prints recall@k and "
        "nDCG@k before and after, through the store's own search.",
    )
    _store_args(tune)
    tune.add_argument("--pairs", required=True, metavar="FILE", help="training pairs")
    tune.add_argument(
        "--val-pairs",
        metavar="FILE",
        help="validation pairs that choose gamma (default: cross-validation on --pairs)",
    )
    tune.add_argument(
        "--test-pairs", metavar="FILE", help="held-out pairs measured before and after (report)"
    )
    tune.add_argument(
        "--split", metavar="NAME", help="qrels split of a BEIR --pairs folder (default: train)"
    )
    tune.add_argument(
        "--val-split", default="dev", metavar="NAME", help="... of --val-pairs (default: dev)"
    )
    tune.add_argument(
        "--test-split", default="test", metavar="NAME", help="... of --test-pairs (default: test)"
    )
    tune.add_argument(
        "--variant",
        choices=("n", "m"),
        default="n",
        help="n: NUDGE-N, unit-norm output for cosine stores (default); m: NUDGE-M, for "
        "dot-product stores",
    )
    tune.add_argument(
        "--gamma", type=_gamma, metavar="G", help="a fixed step size instead of choosing one"
    )
    _embed_args(tune)
    tune.add_argument(
        "--report", metavar="DIR", help="write report.md, report.json, report.png there"
    )
    tune.add_argument("--no-picture", action="store_true", help="--report without report.png")
    tune.add_argument(
        "--dry-run",
        action="store_true",
        help="do everything except the write; say what would change",
    )
    tune.add_argument(
        "--batch-size",
        type=_int_at_least(1),
        default=512,
        metavar="N",
        help="vectors per store read/write request (default: 512)",
    )
    tune.add_argument(
        "--passive",
        choices=("auto", "read", "store"),
        default="auto",
        help="read every stored vector (read) or ask the store's index for the rest (store); "
        "auto: store from 200k documents",
    )
    tune.add_argument(
        "--k",
        type=_int_at_least(1),
        default=10,
        help="cut-off of the before/after scores (default: 10)",
    )
    tune.add_argument(
        "--query-adapter",
        choices=QUERY_ADAPTER_MODES,
        default="off",
        help="after NUDGE, also fit a linear map of the query embeddings, saved with the "
        "vectors: on, auto (kept only when validation shows a gain) or off (default)",
    )
    tune.add_argument("--json", action="store_true", help="print the outcome as one JSON object")

    ev = sub.add_parser(
        "evaluate",
        parents=[common],
        help="recall@k, nDCG@k and MRR@k of (question, document) pairs through the store's search",
        description="Embed the questions and search the store with them as an app's retriever "
        "does; graded relevance where the pairs carry grades. recall@k = relevant documents in "
        "the top k / min(#relevant, k) (the NUDGE paper's definition).",
    )
    _store_args(ev)
    ev.add_argument("--pairs", required=True, metavar="FILE", help="the pairs to score")
    ev.add_argument(
        "--split", metavar="NAME", help="qrels split of a BEIR --pairs folder (default: test)"
    )
    _embed_args(ev)
    ev.add_argument("--k", type=_int_at_least(1), default=10, help="cut-off (default: 10)")
    ev.add_argument(
        "--no-query-adapter",
        action="store_true",
        help="score without the query adapter saved with the tuned vectors (NUDGE alone)",
    )
    ev.add_argument("--json", action="store_true", help="print one JSON object")

    restore = sub.add_parser(
        "restore",
        parents=[common],
        help="put the original vectors back",
        description="Write every saved original vector back into the store, then forget them.",
    )
    _store_args(restore)
    restore.add_argument(
        "--batch-size",
        type=_int_at_least(1),
        default=512,
        metavar="N",
        help="vectors per write (default: 512)",
    )

    status = sub.add_parser(
        "status",
        parents=[common],
        help="is the store tuned, how, when; is a write-back pending",
        description="Say whether the store is tuned (variant, gamma, when, rows moved), whether "
        "a write-back is pending, and where the originals are.",
    )
    _store_args(status)
    status.add_argument("--json", action="store_true", help="print one JSON object")

    resume = sub.add_parser(
        "resume",
        parents=[common],
        help="finish a write-back that was interrupted",
        description="Finish an interrupted tune or restore (after a crash or a failed request).",
    )
    _store_args(resume)
    resume.add_argument(
        "--batch-size", type=_int_at_least(1), default=512, metavar="N", help=argparse.SUPPRESS
    )

    discard = sub.add_parser(
        "discard",
        parents=[common],
        help="drop an interrupted write-back that cannot finish, keeping every original",
        description="Drop a pending tune or restore plan that can no longer be written (resume "
        "keeps failing, e.g. the store refuses the writes) without writing anything. Every saved "
        "original is kept: 'restore' still puts every one back, and the next tune starts from "
        "them.",
    )
    _store_args(discard)
    discard.add_argument(
        "--batch-size", type=_int_at_least(1), default=512, metavar="N", help=argparse.SUPPRESS
    )

    bench = sub.add_parser(
        "benchmark",
        parents=[common],
        help="compare no fine-tuning, NUDGE-M and NUDGE-N on a test split",
        description=(
            "Load documents and train/dev/test queries with precomputed embeddings, fine-tune "
            "with NUDGE-M and NUDGE-N (gamma chosen on dev) and print recall@k / nDCG@k on "
            "test. --data takes a folder in the nfcorpus layout (DATA/SPLIT/emb/MODEL/...) or a "
            "BEIR folder with an emb/MODEL/ folder of corpus.npy + corpus.ids.json and "
            "queries[_SPLIT].npy + ids (see nudge_rag.data.load_embedded). Without --data a "
            "generated task is used."
        ),
    )
    bench.add_argument("--data", help="dataset folder (default: a generated retrieval task)")
    bench.add_argument(
        "--split", default="nudge_split", help="split folder under --data (default: nudge_split)"
    )
    bench.add_argument(
        "--model",
        default="all-MiniLM-L6-v2",
        help="embedding folder under emb/ (default: all-MiniLM-L6-v2)",
    )
    bench.add_argument(
        "--k", type=_int_at_least(1), default=10, help="cut-off for recall and nDCG (default: 10)"
    )
    bench.add_argument(
        "--repeat",
        type=_int_at_least(1),
        default=3,
        help="fits per method, fastest reported (default: 3)",
    )
    bench.add_argument(
        "--seed",
        type=_int_at_least(0),
        default=0,
        help="seed of the generated task, an integer >= 0 (default: 0)",
    )
    bench.add_argument(
        "--json", action="store_true", help="print the rows as JSON instead of a table"
    )
    return parser


_COMMANDS = {
    "tune": _cmd_tune,
    "evaluate": _cmd_evaluate,
    "restore": _cmd_restore,
    "status": _cmd_status,
    "resume": _cmd_resume,
    "discard": _cmd_discard,
    "benchmark": _cmd_benchmark,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nudge-rag`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # no password or token in any log line
        if not any(isinstance(f, MaskSecretsFilter) for f in handler.filters):
            handler.addFilter(MaskSecretsFilter())
    out = _Out(quiet=args.quiet, progress=args.progress)
    try:
        return _COMMANDS[args.command](args, out)
    except KeyboardInterrupt:
        hint = ""
        if args.command in ("tune", "restore", "resume", "discard"):
            hint = f" (if a write had started: '{PROG} status' tells; then '{PROG} resume')"
        print(f"{PROG}: interrupted{hint}", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every failure is one line and a status
        if args.verbose:
            logger.exception("%s failed", args.command)
        status = _exit_status(err)
        message = mask_secrets(_one_line(err))
        if "resume()" in message and "restore()" in message:  # the library's words for the CLI's
            also = f" or '{PROG} discard'" if "discard_pending()" in message else ""
            message += f" [from the command line: '{PROG} resume' or '{PROG} restore'{also}]"
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
