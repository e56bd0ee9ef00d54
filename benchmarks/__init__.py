"""Side-by-side speed comparisons: `make bench` runs every module here; each prints ratios
measured in one run, after checking that the compared implementations agree.

`make bench-quick` runs them with ``BENCH_QUICK=1``: every module takes its sizes, repeats,
client counts and steps from ``size(full, quick)``, so that all of them run in about a
minute and still check that the compared implementations agree (what CI needs: a benchmark
that crashes or disagrees fails it). The quick numbers say nothing about speed.
"""
import os
import time
from collections.abc import Callable
from typing import TypeVar

QUICK = os.environ.get("BENCH_QUICK") == "1"
"""True under ``BENCH_QUICK=1`` (make bench-quick): tiny sizes, one timed run, no warm-up."""

T = TypeVar("T")


def size(full: T, quick: T) -> T:
    """``full`` (what `make bench` measures), or ``quick`` under ``BENCH_QUICK=1``."""
    return quick if QUICK else full


def best_time(run: Callable[[], object], repeats: int = 3, *, warm_up: bool = False) -> tuple[float, object]:
    """The best wall time in seconds of ``repeats`` calls of ``run()``, and the last result.

    Under ``BENCH_QUICK=1``: one call and no warm-up (the result is checked, not the time).
    """
    if QUICK:
        repeats, warm_up = 1, False
    if warm_up:
        run()
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result
