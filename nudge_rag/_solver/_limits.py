"""Block sizes and numeric tolerances shared by the solver modules.

Read as ``_limits.NAME`` at call time (not imported by name), so that a test can change a
block size in one place.
"""

from __future__ import annotations

#: nudge-ft divides slopes by ``(g_dif + 1e-8)``; keeping it reproduces its gamma.
SLOPE_EPS = 1e-8

#: Above this many passive scores (n_passive x n_val), NUDGE-M first finds the intervals
#: without the passive rows so that hopeless queries can stop the streaming pass early.
EARLY_STOP_SCORES = 1 << 26

#: Elements per dense score block (float32): bounds memory at ~16 MB per block.
BLOCK_ELEMENTS = 1 << 22

#: Scores per block in the streaming pass over the corpus (one float32 buffer, ~64 MB).
STREAM_BLOCK = 1 << 24

#: Pruning keeps rows whose upper bound is within this of the lower bound, so that float32
#: rounding of the per-gamma scores never drops a row that ties for top-1.
BOUND_SLACK = 1e-6

#: NUDGE-N pruning takes its lower bounds from the rows within this of a query's best S.
NEAR_BEST = 0.05

#: Elements per temporary in passes that chain several element-wise steps (256 KB of
#: float32, so that the temporaries stay in a core's cache).
CACHE_ELEMENTS = 1 << 16
