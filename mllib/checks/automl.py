"""Self-checks for lab 10_automl_and_meta_learning."""
import torch

from ..automl import meta, search, zeroorder
from ..runtime import randn
from . import self_check


class Quadratic:
    """f(x) = 1/2 x^T A x + b^T x on rows x (m, d), with a readable repr for check messages."""

    def __init__(self, A: torch.Tensor, b: torch.Tensor):
        self.A, self.b = A, b

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((X @ self.A) * X).sum(-1) + X @ self.b

    def __repr__(self) -> str:
        return f"Quadratic(d={len(self.b)})"


@self_check(search.hyperband_schedule)
def hyperband_schedule(gen):
    """(R, eta) pairs, the paper's R = 81, eta = 3 among them."""
    return [dict(max_resource=r, eta=e) for r, e in [(81, 3), (27, 3), (1, 3), (16, 2), (100, 4), (30, 3), (243, 3)]]


@self_check(zeroorder.smoothing_estimate)
def smoothing_estimate(gen):
    """Quadratics in d = 1..6 at n points, S directions each."""
    cases = []
    for n, s, d, mu in [(1, 1, 1, 0.5), (3, 2, 4, 0.1), (2, 5, 6, 1.0), (4, 1, 3, 0.01)]:
        A = randn(d, d, gen=gen)
        f = Quadratic(A @ A.T, randn(d, gen=gen))
        cases.append(dict(f=f, x=randn(n, d, gen=gen), mu=mu, u=randn(n, s, d, gen=gen)))
    return cases


@self_check(meta.reptile_update)
def reptile_update(gen):
    """A small sinusoid regressor, n tasks of k points, 1-3 inner steps."""
    model = meta.sinusoid_model(hidden=(8,))
    cases = []
    for n, k, steps, lr, eps in [(1, 5, 1, 0.01, 1.0), (4, 10, 3, 0.02, 0.1), (3, 4, 2, 0.05, 0.5)]:
        amp, phase = meta.sinusoid_tasks(n, gen)
        x, y = meta.sinusoid_batch(amp, phase, k, gen)
        cases.append(dict(model=model, theta=model.init(gen), x=x, y=y, inner_steps=steps, inner_lr=lr, outer_lr=eps))
    return cases
