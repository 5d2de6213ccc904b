"""NUDGE-N and NUDGE-M solvers (Zeighami et al., arXiv 2409.02343), in numpy.

Without validation queries, gamma is chosen by K-fold cross-validation over the training
queries (the folds share the corpus pass and the training sums), then every query is used
for the final fit.

Notation (per document row ``j`` that answers training queries): ``v_j`` is the
unit-normalised document embedding and ``g_j`` the sum of the embeddings of the training
queries it answers. NUDGE-N moves ``v_j`` on the unit sphere toward ``g_j``; NUDGE-M adds
``gamma * unit(g_j)``. Documents that answer no training or validation query never move;
they matter only through their best score per validation query, computed once in a
streaming pass over the corpus.

Where things are:

* ``_base``: the estimator base (hyperparameters, :func:`fit_solver`, the fitted
  attributes, ``transform``);
* ``_problem``: the problem built once from the inputs (active rows, training sums) and the
  passes over the corpus (streaming the passive rows, writing the output);
* ``_scoring``: validation queries scored against the active rows (``(S, T)`` blocks,
  recall@k per candidate gamma);
* ``_nudge_n``: NUDGE-N (the gamma grid, the arcs that bound each row's score, pruning);
* ``_nudge_m``: NUDGE-M (each validation pair's winning interval, the sweep);
* ``_cv``: the folds of the cross-validation that chooses gamma without ``val``;
* ``_limits``: block sizes and tolerances; ``_progress``: optional tqdm bars.

Large arrays are touched in cache-sized blocks and as few times as possible: on a 2-core
machine most of a small fit is memory traffic, not arithmetic.
"""

from nudge_rag._solver._base import NotFittedError, fit_solver
from nudge_rag._solver._nudge_m import NudgeM
from nudge_rag._solver._nudge_n import DEFAULT_GAMMAS, NudgeN

__all__ = ["NudgeN", "NudgeM", "NotFittedError", "DEFAULT_GAMMAS", "fit_solver"]
