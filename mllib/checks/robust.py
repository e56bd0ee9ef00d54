"""Self-checks for lab 05_byzantine_robustness: coordinate-wise median, Krum (built from its
definition), the ALIE attack, worker momentum."""
import torch

from .. import robust
from ..robust import aggregators, rules
from ..runtime import rand, randn
from . import Mistake, self_check


def _lower_median(X):
    return X.sort(0).values[(len(X) - 1) // 2]


def _upper_median(X):
    return X.sort(0).values[len(X) // 2]


def _median_of_rows(X):
    return X.sort(1).values[:, X.shape[1] // 2]


@self_check(
    robust.coordinate_median,
    mistakes=[
        Mistake(_lower_median, "for even n this is the lower middle value, not the midpoint",
                "with n even, s[n//2 - 1] is only the lower middle value: average it with s[n//2]"),
        Mistake(_upper_median, "for even n this is the upper middle value, not the midpoint",
                "with n even, s[n//2] is only the upper middle value: average it with s[n//2 - 1]"),
        Mistake(_median_of_rows, "this is the median of each row, not of each column",
                "sort along dim 0 (over the workers): X.sort(0).values"),
    ],
)  # fmt: skip
def coordinate_median(gen):
    """X (n, d) for odd and even n; some with a few huge rows (1e30)."""
    cases = [dict(X=randn(n, d, gen=gen)) for n, d in [(4, 3), (1, 3), (2, 4), (3, 1), (5, 6), (6, 6), (10, 20)]]
    for n, f in [(7, 3), (8, 3)]:
        X = randn(n, 5, gen=gen)
        X[n - f :] = 1e30
        cases.append(dict(X=X))
    return cases


def _krum_with(X, f, *, neighbours, power=2):
    """Krum with ``neighbours`` nearest other rows and distances to the ``power`` (a student's variant)."""
    D = torch.cdist(X.double(), X.double()).pow(power)
    D.fill_diagonal_(float("inf"))
    return X[D.sort(1).values[:, :neighbours].sum(1).argmin()]


def _krum_n_minus_f(X, f):
    return _krum_with(X, f, neighbours=len(X) - f)


def _krum_unsquared(X, f):
    return _krum_with(X, f, neighbours=len(X) - f - 2, power=1)


def _krum_counting_itself(X, f):
    D = torch.cdist(X.double(), X.double()).pow(2)
    return X[D.sort(1).values[:, : len(X) - f - 2].sum(1).argmin()]


def _krum_all_rows(X, f):
    return _krum_with(X, f, neighbours=len(X) - 1)


@self_check(
    robust.krum,
    mistakes=[
        Mistake(_krum_n_minus_f, "each row is scored with n - f neighbours, not the paper's n - f - 2",
                "Blanchard et al. 2017 sum over the n - f - 2 nearest other rows"),
        Mistake(_krum_unsquared, "the score sums distances, not squared distances",
                "Krum's score is sum_j ||X_i - X_j||^2: square each distance"),
        Mistake(_krum_counting_itself, "a row counts itself (distance 0) among its nearest neighbours",
                "leave row i out of its own neighbours, e.g. put inf on the diagonal"),
        Mistake(_krum_all_rows, "each row is scored against all other rows, not its nearest ones",
                "sort each row's distances and keep the n - f - 2 smallest"),
    ],
    forbid=[rules.krum, rules.krum_scores, rules.multi_krum, rules.pairwise_sq_distances, aggregators.Krum,
            aggregators.MultiKrum],
)  # fmt: skip
def krum(gen):
    """X (n, d) with f Byzantine rows, n > 2f + 2: first a fixed matrix on which each mistake picks another
    row, then a tight honest cluster and far rows, or rows of mixed scales."""
    fixed = torch.Generator().manual_seed(289)
    cases = [dict(X=torch.randn(9, 2, generator=fixed) * torch.randn(9, 1, generator=fixed).exp(), f=2)]
    for n, f, d, spread in [(5, 1, 3, 1.0), (7, 2, 4, 0.1), (9, 3, 2, 0.1), (10, 2, 8, 1.0), (12, 4, 5, 0.5), (20, 6, 10, 1.0)]:
        X = spread * randn(n, d, gen=gen)
        X[n - f :] = 3 * randn(f, d, gen=gen) + 2
        perm = torch.randperm(n, generator=gen)
        cases.append(dict(X=X[perm], f=f))
    for n, f in [(7, 1), (9, 2), (12, 3), (15, 2), (15, 5), (30, 4)]:  # no cluster: rows of mixed scales
        cases.append(dict(X=randn(n, 3, gen=gen) * randn(n, 1, gen=gen).exp(), f=f))
    return cases


def _alie_rows(U, f, value):
    out = U.clone()
    out[len(U) - f :] = value
    return out


def _alie_plus(U, f):
    honest = U[: len(U) - f]
    return _alie_rows(U, f, honest.mean(0) + robust.alie_z(len(U), f) * honest.std(0))


def _alie_population_std(U, f):
    honest = U[: len(U) - f]
    return _alie_rows(U, f, honest.mean(0) - robust.alie_z(len(U), f) * honest.std(0, correction=0))


def _alie_all_rows(U, f):
    return _alie_rows(U, f, U.mean(0) - robust.alie_z(len(U), f) * U.std(0))


@self_check(
    robust.alie,
    mistakes=[
        Mistake(_alie_plus, "the Byzantine rows are mu + z sigma; ALIE sends mu - z sigma",
                "Baruch et al. 2019 shift every coordinate down: mu - z * sigma"),
        Mistake(_alie_population_std, "sigma is the population std; use the unbiased one",
                "honest.std(0) (correction 1), as the reference does"),
        Mistake(_alie_all_rows, "mu and sigma come from all rows; the attacker uses the honest rows only",
                "honest = U[: n - f]; mu = honest.mean(0), sigma = honest.std(0)"),
    ],
)  # fmt: skip
def alie(gen):
    """U (n, d) with the last f rows Byzantine, 1 <= f < n/2, at least 2 honest rows."""
    cases = []
    for n, f, d in [(5, 1, 3), (5, 2, 3), (10, 3, 4), (25, 5, 6), (25, 12, 6), (30, 10, 2)]:
        cases.append(dict(U=randn(n, d, gen=gen) + rand(d, gen=gen), f=f))
    return cases


def _momentum_undamped(M, G, beta):
    return beta * M + G


def _momentum_swapped(M, G, beta):
    return (1 - beta) * M + beta * G


def _momentum_gradient_only(M, G, beta):
    return G.clone()


@self_check(
    robust.worker_momentum,
    mistakes=[
        Mistake(_momentum_undamped, "the gradient is missing its factor 1 - beta",
                "m <- beta m + (1 - beta) g keeps m at the scale of the gradients"),
        Mistake(_momentum_swapped, "beta and 1 - beta are swapped",
                "the old momentum weighs beta (close to 1), the new gradient 1 - beta"),
        Mistake(_momentum_gradient_only, "the old momentum M is ignored",
                "average over time: beta * M + (1 - beta) * G"),
    ],
)  # fmt: skip
def worker_momentum(gen):
    """M (n, d), G (n, d) and beta in [0, 1) (0.5 first, where the swap shows nothing)."""
    return [dict(M=randn(n, d, gen=gen), G=randn(n, d, gen=gen), beta=beta)
            for (n, d), beta in zip([(3, 4), (1, 1), (5, 2), (25, 10)], [0.9, 0.5, 0.0, 0.99])]  # fmt: skip
