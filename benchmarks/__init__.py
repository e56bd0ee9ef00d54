"""Side-by-side speed comparisons: `make bench` runs every module here; each prints ratios
measured in one run, after checking that the compared implementations agree.

Each comparison the course sets a goal for (``GOALS``, the table of issue #25) is also
``record``ed: `make bench` writes them all to ``benchmarks/results.json`` (one entry per
comparison: name, ours_s, reference, reference_s, ratio, goal, met, with the machine's CPU
model and thread count), and ``python -m benchmarks.table`` writes the README's performance
table from that file.

`make bench-quick` runs them with ``BENCH_QUICK=1``: every module takes its sizes, repeats,
client counts and steps from ``size(full, quick)``, so that all of them run in about a
minute and still check that the compared implementations agree (what CI needs: a benchmark
that crashes or disagrees fails it). The quick numbers say nothing about speed.
"""
import json
import math
import os
import pathlib
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

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


def taking_turns(runs: list[Callable[[], object]], repeats: int) -> list[tuple[float, object]]:
    """``best_time`` of each run, the runs taking turns ``repeats`` times: a change of the
    machine's load hits every run alike (run one after another, one may get a quiet minute and
    the next a busy one)."""
    best = [(math.inf, None)] * len(runs)
    for _ in range(repeats):
        best = [min(old, best_time(run, 1), key=lambda timed: timed[0]) for old, run in zip(best, runs)]
    return best


RESULTS = pathlib.Path(__file__).with_name("results.json")


@dataclass(frozen=True)
class Goal:
    """What a comparison must reach: ``ratio`` (as ``ratio_of`` says) at least or at most ``bound``."""

    ratio_of: str  # "reference / ours" (a speed-up) or "ours / reference" (a multiple of a floor)
    at_least: bool
    bound: float

    def __str__(self) -> str:
        return f"{self.ratio_of} {'>=' if self.at_least else '<='} {self.bound:g}"

    def met(self, ratio: float) -> bool:
        return ratio >= self.bound if self.at_least else ratio <= self.bound


SPEEDUP, MULTIPLE = "reference / ours", "ours / reference"
GOALS = {  # the goals of issue #25, one per comparison `make bench` reports
    **{f"vectorized clients vs a deep-copy loop, {n} clients": Goal(SPEEDUP, True, 20) for n in (10, 100, 1000)},
    "vectorized local step vs one matmul of the same FLOPs": Goal(MULTIPLE, False, 3),
    "FedAvg steady round vs Flower's simulation engine": Goal(SPEEDUP, True, 50),
    **{f"{name} round vs a per-client loop": Goal(SPEEDUP, True, 20) for name in ("SCAFFOLD", "MIME")},
    "Ditto personal steps vs a per-client loop": Goal(SPEEDUP, True, 20),
    **{f"{name} vs one pass over the client matrix": Goal(MULTIPLE, False, bound) for name, bound in (
        ("coordinate median", 10), ("trimmed mean", 10), ("Krum", 10), ("geometric median", 20),
        ("centered clipping", 20))},
    **{f"rounding to {fmt} vs torch's cast": Goal(MULTIPLE, False, 2) for fmt in ("bf16", "fp16", "fp8_e4m3", "fp8_e5m2")},
    "stochastic rounding to bf16 vs torch's cast": Goal(MULTIPLE, False, 3),
    "Lasso with duality-gap working sets vs scikit-learn's Lasso": Goal(MULTIPLE, False, 3),
    "PGD vs torchattacks": Goal(SPEEDUP, True, 1.0),
    "DP-SGD step (ghost clipping) vs Opacus ghost clipping": Goal(SPEEDUP, True, 2),
    "DP-SGD step (ghost clipping) vs a plain non-private step": Goal(MULTIPLE, False, 2),
    "time per round, 10,000 clients vs 1,000 (cohort of 100)": Goal(MULTIPLE, False, 1.5),
}  # fmt: skip


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def record(name: str, *, ours_s: float, reference: str, reference_s: float, **extra) -> dict:
    """Add one comparison with a goal to ``results.json`` (replacing an entry of the same name).

    Nothing is written under ``BENCH_QUICK=1``: quick sizes say nothing about speed.

    Args:
        name: a key of ``GOALS``. ours_s: the library's seconds. reference: what it is compared
            with. reference_s: that reference's seconds. extra: other facts worth keeping (e.g.
            peak memory), stored as they are.

    Raises:
        KeyError: for a name without a goal.
    """
    goal = GOALS[name]
    ratio = reference_s / ours_s if goal.ratio_of == SPEEDUP else ours_s / reference_s
    entry = dict(name=name, ours_s=ours_s, reference=reference, reference_s=reference_s, ratio=round(ratio, 3),
                 goal=str(goal), met=goal.met(ratio), cpu=cpu_model(), threads=torch.get_num_threads(), **extra)  # fmt: skip
    if not QUICK:
        entries = [e for e in (json.loads(RESULTS.read_text()) if RESULTS.exists() else []) if e["name"] != name]
        RESULTS.write_text(json.dumps(sorted([*entries, entry], key=lambda e: list(GOALS).index(e["name"])), indent=1)
                           + "\n")  # fmt: skip
    return entry
