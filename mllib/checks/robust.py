"""Self-checks for lab 05_byzantine_robustness."""
import torch

from .. import robust
from ..runtime import rand, randn
from . import self_check


@self_check(robust.coordinate_median)
def coordinate_median(gen):
    """X (n, d) for odd and even n; some with a few huge rows (1e30)."""
    cases = [dict(X=randn(n, d, gen=gen)) for n, d in [(1, 3), (2, 4), (3, 1), (5, 6), (6, 6), (10, 20)]]
    for n, f in [(7, 3), (8, 3)]:
        X = randn(n, 5, gen=gen)
        X[n - f :] = 1e30
        cases.append(dict(X=X))
    return cases


@self_check(robust.krum)
def krum(gen):
    """X (n, d) with f Byzantine rows, n > 2f + 2: a tight honest cluster and far rows, or rows of mixed scales."""
    cases = []
    for n, f, d, spread in [(5, 1, 3, 1.0), (7, 2, 4, 0.1), (9, 3, 2, 0.1), (10, 2, 8, 1.0), (12, 4, 5, 0.5), (20, 6, 10, 1.0)]:
        X = spread * randn(n, d, gen=gen)
        X[n - f :] = 3 * randn(f, d, gen=gen) + 2
        perm = torch.randperm(n, generator=gen)
        cases.append(dict(X=X[perm], f=f))
    for n, f in [(7, 1), (9, 2), (12, 3), (15, 2), (15, 5), (30, 4)]:  # no cluster: rows of mixed scales
        cases.append(dict(X=randn(n, 3, gen=gen) * randn(n, 1, gen=gen).exp(), f=f))
    return cases


@self_check(robust.alie)
def alie(gen):
    """U (n, d) with the last f rows Byzantine, 1 <= f < n/2, at least 2 honest rows."""
    cases = []
    for n, f, d in [(5, 1, 3), (5, 2, 3), (10, 3, 4), (25, 5, 6), (25, 12, 6), (30, 10, 2)]:
        cases.append(dict(U=randn(n, d, gen=gen) + rand(d, gen=gen), f=f))
    return cases


@self_check(robust.worker_momentum)
def worker_momentum(gen):
    """M (n, d), G (n, d) and beta in [0, 1)."""
    return [dict(M=randn(n, d, gen=gen), G=randn(n, d, gen=gen), beta=beta)
            for (n, d), beta in zip([(1, 1), (3, 4), (5, 2), (25, 10)], [0.0, 0.5, 0.9, 0.99])]  # fmt: skip
