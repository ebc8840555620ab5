"""OpenMP threads for the pipeline's gradient boosting: one on small data, all on large; and how
many fits ``train`` runs at once (one per core on small data, where each fit has one thread).

HistGradientBoosting opens an OpenMP parallel region per tree node when it fits and per tree
when it predicts. On small data each region is too short to pay for its threads: on the default
16,000 training rows a fit costs 0.8 CPU-s on one thread and 7 CPU-s on two (the waiting thread
spins), and on a busy machine every region also waits for a descheduled thread. On large data
the regions are long and the threads pay.
"""

from __future__ import annotations

import os

from threadpoolctl import threadpool_limits

PARALLEL_FROM_ROWS = 200_000
"""Fewer rows than this run on one OpenMP thread."""


def limit_openmp(rows: int) -> threadpool_limits:
    """Limit OpenMP to one thread for work on fewer than :data:`PARALLEL_FROM_ROWS` rows.

    Usable as a context manager; without ``with`` the limit holds for the rest of the process.
    """
    return threadpool_limits(limits=1 if rows < PARALLEL_FROM_ROWS else None, user_api="openmp")


def concurrent_fits(rows: int) -> int:
    """How many fits on ``rows`` rows to run at once: one per core where each fit runs on one
    OpenMP thread (the booster's Cython loops release the GIL, so threads of one process
    overlap), else one (each fit already uses every core)."""
    return (os.cpu_count() or 1) if rows < PARALLEL_FROM_ROWS else 1
