"""Self-checks for lab 10_automl_and_meta_learning: Hyperband's schedule, successive halving (built from its
rule), a zero-order gradient, a Reptile step."""
import math

import torch

from ..automl import meta, search, zeroorder
from ..runtime import rand, randn
from . import Mistake, self_check


class Quadratic:
    """f(x) = 1/2 x^T A x + b^T x on rows x (m, d), with a readable repr for check messages."""

    def __init__(self, A: torch.Tensor, b: torch.Tensor):
        self.A, self.b = A, b

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((X @ self.A) * X).sum(-1) + X @ self.b

    def __repr__(self) -> str:
        return f"Quadratic(d={len(self.b)})"


# ---- Exercise 1: Hyperband's brackets


def _schedule(R, eta, s_max=None, rung=lambda n, r, i, eta: (n // eta**i, round(r * eta**i))):
    """Hyperband's brackets with a given s_max and rung rule (the reference's by default)."""
    if s_max is None:
        s_max = next(s for s in range(64) if eta ** (s + 1) > R)
    return [[rung(math.ceil((s_max + 1) / (s + 1) * eta**s), R / eta**s, i, eta) for i in range(s + 1)]
            for s in range(s_max, -1, -1)]  # fmt: skip


@self_check(
    search.hyperband_schedule,
    mistakes=[
        Mistake(lambda R, eta: _schedule(R, eta)[::-1], "your brackets come in reverse order",
                "start with the most aggressive bracket, s = s_max, down to s = 0"),
        Mistake(lambda R, eta: _schedule(R, eta, rung=lambda n, r, i, eta: (n // eta**i, R)),
                "every rung gets the full resource R", "rung i trains with r_i = r eta^i, r = R eta^-s"),
        Mistake(lambda R, eta: _schedule(R, eta, s_max=int(math.log(R, eta))),
                "your s_max is wrong where log_eta R is an integer", "math.log(243, 3) is 4.999...: count with integers"),
        Mistake(lambda R, eta: _schedule(R, eta, rung=lambda n, r, i, eta: (math.ceil(n / eta**i), round(r * eta**i))),
                "your rungs keep ceil(n / eta^i) configurations", "rung i keeps floor(n eta^-i): n // eta**i"),
    ],
)  # fmt: skip
def hyperband_schedule(gen):
    """(R, eta) pairs, the paper's R = 81, eta = 3 among them."""
    return [dict(max_resource=r, eta=e) for r, e in [(81, 3), (27, 3), (1, 3), (16, 2), (100, 4), (30, 3), (243, 3)]]


# ---- Exercise 2: successive halving, built from its rule


def _halving_variant(kind):
    """Successive halving with one mistake of ``kind``; otherwise as ``search.successive_halving``."""

    def wrong(curves, configs, min_resource, eta):
        R = curves.shape[1]
        alive, r, cost = configs, min_resource, 0
        while True:
            r = min(r, R)
            cost += len(alive) * r
            score = curves[alive, min(r, R - 1) if kind == "off by one" else r - 1]
            if r >= R or len(alive) == 1:
                best = int(torch.sort(-score, stable=True).indices[0])
                return (best if kind == "position" else int(alive[best])), cost
            keep = max(math.ceil(len(alive) / eta) if kind == "ceil" else len(alive) // eta, 1)
            alive = alive[torch.sort(score if kind == "worst" else -score, stable=True).indices[:keep]]
            r = r + 1 if kind == "no growth" else r * eta

    return wrong


@self_check(
    search.successive_halving,
    mistakes=[
        Mistake(_halving_variant("worst"), "you keep the configurations with the LOWEST accuracy",
                "sort by decreasing accuracy: keep the best floor(n_i / eta)"),
        Mistake(_halving_variant("ceil"), "you keep ceil(n_i / eta) configurations, not floor",
                "keep max(n_i // eta, 1)"),
        Mistake(_halving_variant("no growth"), "the resource per configuration does not grow by eta",
                "after each rung, r_{i+1} = eta * r_i"),
        Mistake(_halving_variant("off by one"), "you read the accuracy one epoch late: curves[:, r]",
                "after r epochs the accuracy is curves[c, r - 1]"),
        Mistake(_halving_variant("position"), "you return the winner's position among the survivors",
                "return the configuration's index, configs[...], not its place in the rung"),
    ],
    forbid=[search.successive_halving],
)  # fmt: skip
def successive_halving(gen):
    """Learning-curve tables (n, R) with rising curves, subsets of configurations in shuffled order,
    r_0 and eta; one race stops at R before a single configuration is left."""
    cases = []
    for n, R, chosen, r0, eta in [(12, 9, 9, 1, 3), (20, 8, 16, 1, 2), (10, 27, 10, 1, 3), (6, 4, 6, 2, 2),
                                  (30, 5, 27, 1, 3)]:  # fmt: skip
        curves = (rand(n, R, gen=gen) * 0.1 + torch.linspace(0, 1, R) * rand(n, 1, gen=gen)).double()
        configs = torch.randperm(n, generator=gen)[:chosen]
        cases.append(dict(curves=curves, configs=configs, min_resource=r0, eta=eta))
    return cases


# ---- Exercise 3: the Gaussian-smoothing gradient estimate


def _smoothing(f, x, mu, u, reduce=lambda t: t.mean(1), scale=True, baseline=True):
    n, s, d = u.shape
    moved = f((x.unsqueeze(1) + mu * u).reshape(n * s, d)).view(n, s)
    diff = moved - f(x).unsqueeze(1) if baseline else moved
    return reduce(((diff / mu) if scale else diff).unsqueeze(-1) * u)


@self_check(
    zeroorder.smoothing_estimate,
    mistakes=[
        Mistake(lambda f, x, mu, u: _smoothing(f, x, mu, u, scale=False), "the division by mu is missing",
                "the finite difference is (f(x + mu u) - f(x)) / mu"),
        Mistake(lambda f, x, mu, u: _smoothing(f, x, mu, u, baseline=False), "you forgot to subtract f(x)",
                "use the difference f(x + mu u) - f(x): its mean is the same, its variance far smaller"),
        Mistake(lambda f, x, mu, u: _smoothing(f, x, mu, u, reduce=lambda t: t.sum(1)),
                "you sum over the S directions instead of averaging", "average over the directions: mean over axis 1"),
    ],
)  # fmt: skip
def smoothing_estimate(gen):
    """Quadratics in d = 1..6 at n points, S directions each."""
    cases = []
    for n, s, d, mu in [(3, 2, 4, 0.1), (1, 1, 1, 0.5), (2, 5, 6, 1.0), (4, 1, 3, 0.01)]:
        A = randn(d, d, gen=gen)
        f = Quadratic(A @ A.T, randn(d, gen=gen))
        cases.append(dict(f=f, x=randn(n, d, gen=gen), mu=mu, u=randn(n, s, d, gen=gen)))
    return cases


# ---- Exercise 4: one Reptile meta-step


def _adapted(model, theta, x, y, steps, lr):
    return meta.adapt(model, theta.expand(len(x), -1), x, y, steps=steps, lr=lr)


@self_check(
    meta.reptile_update,
    mistakes=[
        Mistake(lambda m, th, x, y, s, lr, eps: th - eps * (_adapted(m, th, x, y, s, lr).mean(0) - th),
                "your meta-step moves theta away from the adapted weights", "theta + outer_lr * (mean phi - theta)"),
        Mistake(lambda m, th, x, y, s, lr, eps: _adapted(m, th, x, y, s, lr).mean(0),
                "you return the mean adapted weights, without the outer step",
                "interpolate: theta + outer_lr * (mean_i phi_i - theta)"),
        Mistake(lambda m, th, x, y, s, lr, eps: th + eps * (_adapted(m, th, x, y, 1, lr).mean(0) - th),
                "your tasks take one inner step, not inner_steps", "loop inner_steps times: phi <- phi - inner_lr * grad"),
        Mistake(lambda m, th, x, y, s, lr, eps: th + eps * (_adapted(m, th, x, y, s, lr).sum(0) - th),
                "you sum the adapted weights over tasks instead of averaging", "mean over the n tasks: phi.mean(0)"),
    ],
)  # fmt: skip
def reptile_update(gen):
    """A small sinusoid regressor, n tasks of k points, 1-3 inner steps."""
    model = meta.sinusoid_model(hidden=(8,))
    cases = []
    for n, k, steps, lr, eps in [(4, 10, 3, 0.02, 0.1), (1, 5, 1, 0.01, 1.0), (3, 4, 2, 0.05, 0.5)]:
        amp, phase = meta.sinusoid_tasks(n, gen)
        x, y = meta.sinusoid_batch(amp, phase, k, gen)
        cases.append(dict(model=model, theta=model.init(gen), x=x, y=y, inner_steps=steps, inner_lr=lr, outer_lr=eps))
    return cases
