"""Robust aggregators against memory bandwidth: n = 50 rows of d = 10^6 (200 MB of float32).

An aggregator must read the client matrix at least once, so the time of one pass over it
(``X.sum(0)``) is the floor. Each aggregator's time is printed as a multiple of that pass,
from one run, after its output is compared with an independent implementation (NumPy /
SciPy, or a direct formula).

Run: ``make bench`` (or ``python -m benchmarks.robust``).
"""

import numpy as np
import torch
from scipy import stats

import mllib
from benchmarks import best_time, record, size
from mllib import robust

N, D, F = 50, size(1_000_000, 10_000), 10


def krum_direct(X, f):
    """Krum from explicit differences, one row at a time (no Gram matrix)."""
    D = torch.stack([(X - row).pow(2).sum(1) for row in X])
    D.fill_diagonal_(float("inf"))
    return X[D.sort(1).values[:, : len(X) - f - 2].sum(1).argmin()]


def weiszfeld_direct(X, iterations=8, nu=1e-6):
    """Smoothed Weiszfeld steps from the coordinate-wise median, each distance the norm of the
    difference X_i - v (an (n, d) temporary per step)."""
    v = torch.from_numpy(np.median(X.numpy(), 0))
    for _ in range(iterations):
        beta = 1 / torch.linalg.vector_norm(X - v, dim=1).clamp_min(nu)
        v = beta @ X / beta.sum()
    return v


def main() -> None:
    mllib.setup(seed=0)
    X = torch.randn(N, D, generator=mllib.generator(0))
    A = X.numpy()
    aggregators = {  # each through the one protocol: robust.make(name, F) is an Aggregator
        "mean": (lambda X: robust.make("mean", F)(X), lambda: A.mean(0)),
        "coordinate median": (lambda X: robust.make("median", F)(X), lambda: np.median(A, 0)),
        "trimmed mean": (lambda X: robust.make("trimmed mean", F)(X), lambda: stats.trim_mean(A, F / N, axis=0)),
        "Krum": (lambda X: robust.make("krum", F)(X), lambda: krum_direct(X, F).numpy()),
        "geometric median (8 Weiszfeld steps)": (lambda X: robust.make("geometric median", F)(X),
                                                 lambda: weiszfeld_direct(X).numpy()),
        "centered clipping (1 step)": (lambda X: robust.make("centered clipping", F, tau=1.0)(X), None),
    }
    read, _ = best_time(lambda: X.sum(0), 5)
    print(f"client matrix {N} x {D:,} float32 ({X.numel() * 4 / 1e6:.0f} MB), 1 thread; one pass: {read * 1e3:.0f} ms "
          f"({X.numel() * 4 / read / 1e9:.1f} GB/s)")
    print(f"{'aggregator':>38} {'x one pass':>11} {'checked against':>16}")
    for name, (function, reference) in aggregators.items():
        took, out = best_time(lambda: function(X), 2)
        if reference is not None:
            expected = torch.as_tensor(reference(), dtype=torch.float32)
            assert torch.allclose(out, expected, atol=1e-5), f"{name} differs from its reference"
            against = {"Krum": "direct distances", "geometric median (8 Weiszfeld steps)": "direct Weiszfeld"}.get(
                name, "numpy/scipy")
        else:
            expected = robust.mean(X * (1.0 / torch.linalg.vector_norm(X, dim=1, keepdim=True)).clamp(max=1.0))
            assert torch.allclose(out, expected, atol=1e-5), f"{name} differs from one clipped mean"
            against = "clipped mean"
        print(f"{name:>38} {took / read:10.1f}x {against:>16}")
        if name != "mean":
            record(f"{name.split(' (')[0]} vs one pass over the client matrix", ours_s=took, reference_s=read,
                   reference=f"X.sum(0), one pass over {N} x {D:,} float32", n=N, d=D)  # fmt: skip


if __name__ == "__main__":
    main()
