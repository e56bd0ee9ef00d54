"""Results over seeds: a training outcome is reported as median [min–max], never as one run.

Training amplifies the last-bit differences between CPUs, BLAS libraries and GPUs, so one
seed's accuracy is not a reproducible number; its distribution over seeds is. A notebook
runs several seeds (each varying initialization, client sampling and batch order), keeps
the results in a ``Spread`` and prints it at the precision the spread allows::

    accuracy = over_seeds(lambda seed: train(seed=seed), seeds=range(5))
    print(f"FedAvg: {accuracy:.2f}")        # FedAvg: 0.92 [0.90–0.94]
    assert accuracy.low > baseline.high     # a claim holds only beyond the spread
"""
import math
import statistics
from collections.abc import Callable, Iterable, Sequence

from .constraints import Function, Instance, Rule, constrain


@constrain(values=Instance(Iterable, description="numbers, one per seed (a list, a generator)"))
class Spread:
    """The results of one experiment over several seeds.

    Args:
        values: one finite number per seed (at least one).

    Raises:
        TypeError: if ``values`` is not iterable.
        ValueError: if ``values`` is empty or holds NaN or an infinity.
    """

    def __init__(self, values: Iterable[float]):
        self.values = tuple(float(v) for v in values)
        if not self.values:
            raise ValueError("values must hold one result per seed, got none")
        if not all(math.isfinite(v) for v in self.values):
            raise ValueError(f"values must be finite numbers, got {self.values}")

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation over the seeds (0 for a single seed)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def decimals(self) -> int:
        """Decimals the spread justifies: down to the first significant digit of ``std``."""
        return max(0, -math.floor(math.log10(self.std))) if self.std > 0 else 3

    def __format__(self, spec: str) -> str:
        """``median [min–max]``, each number formatted with ``spec`` (default: ``.{decimals}f``)."""
        spec = spec or f".{self.decimals}f"
        return f"{self.median:{spec}} [{self.low:{spec}}–{self.high:{spec}}]"

    def __str__(self) -> str:
        return format(self, "")

    def __repr__(self) -> str:
        return f"Spread({list(self.values)})"


@constrain(Rule("seeds", lambda seeds: len(seeds) > 0, "seeds must name at least one seed, got none"),
           run=Function(), seeds=Instance(Sequence, description="a sequence of seeds, e.g. range(5)"))  # fmt: skip
def over_seeds(run: Callable[[int], float | dict], seeds: Sequence[int]) -> Spread | dict:
    """Run ``run(seed)`` for every seed and gather the results.

    Args:
        run: one experiment; returns a number, or a dict of numbers (several results of the
            same seed, e.g. one per method).
        seeds: the seeds, e.g. ``range(5)``.

    Returns:
        A ``Spread``, or for dict results a dict of ``Spread`` with the same keys.

    Raises:
        ValueError: if ``seeds`` is empty, or the runs return dicts with other keys.
    """
    results = [run(seed) for seed in seeds]
    if not isinstance(results[0], dict):
        return Spread(results)
    keys = list(results[0])
    if any(list(r) != keys for r in results):
        raise ValueError(f"every run must return the same keys, {keys}")
    return {k: Spread(r[k] for r in results) for k in keys}
