"""Self-checks for lab 08_heterogeneous_systems."""
import torch

from ..runtime import rand, randn
from ..systems import glm, sampling
from . import self_check


def _ridge_gaps(A, b, alpha, lam):
    return glm.coordinate_gaps(A, b, alpha, lam, "ridge")


@self_check(_ridge_gaps)
def ridge_coordinate_gaps(gen):
    """A (n, d), b (n,), alpha (d,), lam: shapes wide and tall, alpha zero, random and optimal."""
    cases = []
    for n, d, lam in [(5, 3, 1.0), (4, 8, 0.1), (10, 2, 3.0), (1, 1, 0.5), (6, 6, 2.0)]:
        A, b = randn(n, d, gen=gen).double(), randn(n, gen=gen).double()
        cases.append(dict(A=A, b=b, alpha=randn(d, gen=gen).double(), lam=lam))
    A, b = randn(6, 4, gen=gen).double(), randn(6, gen=gen).double()
    cases.append(dict(A=A, b=b, alpha=torch.zeros(4, dtype=torch.float64), lam=0.7))
    cases.append(dict(A=A, b=b, alpha=glm.solve(A, b, 0.7), lam=0.7))
    return cases


@self_check(sampling.importance_gradient)
def importance_gradient(gen):
    """grads (B, d), idx (B,) with repeats, p (n,): skewed and uniform distributions."""
    cases = []
    for n, B, d in [(5, 3, 2), (10, 10, 4), (3, 6, 1), (8, 1, 5)]:
        p = rand(n, gen=gen) + 0.05
        p = p / p.sum()
        idx = torch.multinomial(p, B, replacement=True, generator=gen)
        cases.append(dict(grads=randn(B, d, gen=gen), idx=idx, p=p))
    cases.append(dict(grads=randn(4, 3, gen=gen), idx=torch.tensor([0, 0, 2, 1]), p=torch.full((4,), 0.25)))
    return cases
