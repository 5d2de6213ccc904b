"""Optional tqdm progress bars for the solver's long passes (``show_progress=True``)."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("nudge_rag._solver")


class _NoBar:
    """Stands in for a tqdm bar when progress is off."""

    def update(self, n: int = 1) -> None:
        """Ignore progress."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "it") -> Any:
    """A tqdm bar over ``total`` steps when ``enabled`` and tqdm is installed, else a no-op.

    tqdm is imported here, on first use, so that ``import nudge_rag`` does not load it.
    """
    if not enabled or total <= 0:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        logger.warning("show_progress=True needs tqdm (pip install tqdm): no progress bar shown")
        return _NoBar()
    return tqdm(total=total, desc=desc, unit=unit, leave=False)
