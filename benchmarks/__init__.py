"""Side-by-side speed comparisons: `make bench` runs every module here; each prints ratios
measured in one run, after checking that the compared implementations agree."""
import time
from collections.abc import Callable


def best_time(run: Callable[[], object], repeats: int = 3, *, warm_up: bool = False) -> tuple[float, object]:
    """The best wall time in seconds of ``repeats`` calls of ``run()``, and the last result."""
    if warm_up:
        run()
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result
