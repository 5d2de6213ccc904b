"""``nudge-rag`` command line: ``nudge-rag benchmark [--data PATH]``.

Runs no fine-tuning, NUDGE-M and NUDGE-N on a dataset with precomputed embeddings and prints
recall@k, nDCG@k and fine-tune time on its test split. Without ``--data`` it generates a
retrieval task, so it runs on any machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import numpy as np

from nudge_rag._data import EmbeddedDataset, load_embedded
from nudge_rag._metrics import evaluate
from nudge_rag._search import search
from nudge_rag._solver import NudgeM, NudgeN
from nudge_rag._synthetic import make_retrieval_task
from nudge_rag._validation import check_positive_int

__all__ = ["main", "run_benchmark"]

logger = logging.getLogger(__name__)

_BENCHMARK_SPLITS = ("train", "dev", "test")


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


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nudge-rag", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser(
        "benchmark",
        help="compare no fine-tuning, NUDGE-M and NUDGE-N on a test split",
        description=(
            "Load documents and train/dev/test queries with precomputed embeddings, fine-tune "
            "with NUDGE-M and NUDGE-N (gamma chosen on dev) and print recall@k / nDCG@k on "
            "test. --data takes a folder in the nfcorpus layout (DATA/SPLIT/emb/MODEL/...) or a "
            "BEIR folder with an emb/MODEL/ folder of corpus.npy + corpus.ids.json and "
            "queries[_SPLIT].npy + ids (see nudge_rag.load_embedded). Without --data a "
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
        "--seed", type=int, default=0, help="seed of the generated task (default: 0)"
    )
    bench.add_argument(
        "--json", action="store_true", help="print the rows as JSON instead of a table"
    )
    bench.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="progress bar (default: on a TTY)",
    )
    bench.add_argument("-v", "--verbose", action="store_true", help="log what the solvers do")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nudge-rag`` command."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.data:
        try:  # the benchmark needs all three splits: a missing file is named here
            data = load_embedded(args.data, args.split, args.model, splits=_BENCHMARK_SPLITS)
        except (OSError, ValueError) as err:
            print(f"nudge-rag: cannot load --data {args.data}: {err}", file=sys.stderr)
            return 2
        label = f"{args.data} ({args.split}, {args.model})"
    else:
        data = make_retrieval_task(random_state=args.seed)
        label = f"generated retrieval task (seed {args.seed})"
    show = args.progress == "on" or (args.progress == "auto" and sys.stderr.isatty())
    try:
        rows = run_benchmark(data, k=args.k, repeat=args.repeat, show_progress=show)
    except ValueError as err:  # e.g. NaN in the embeddings: one line, no traceback
        print(f"nudge-rag: benchmark failed on {label}: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"data": label, "rows": rows}, indent=2))
    else:
        test = data.split("test")
        print(f"{label}: {data.n_docs} documents, {test.n_queries} test queries, dim {data.dim}")
        print(_format_table(rows, args.k))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
