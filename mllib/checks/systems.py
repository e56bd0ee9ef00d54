"""Self-checks for lab 08_heterogeneous_systems: per-coordinate duality gaps, gap-selected working sets (built
from their update), the importance-sampled gradient."""
import torch

from ..runtime import rand, randn
from ..systems import glm, sampling
from . import Mistake, self_check

# ---- Exercise 1: the per-coordinate duality gaps of ridge regression


def _ridge_gaps(A, b, alpha, lam):
    return glm.coordinate_gaps(A, b, alpha, lam, "ridge")


def _u(A, b, alpha):
    return A.T @ (A @ alpha - b)


@self_check(
    _ridge_gaps,
    mistakes=[
        Mistake(lambda A, b, a, lam: (lam * a + _u(A, b, a)) / (2 * lam), "the square is missing",
                "gap_i = (lam alpha_i + u_i)^2 / (2 lam)"),
        Mistake(lambda A, b, a, lam: (lam * a - _u(A, b, a)) ** 2 / (2 * lam), "the residual has the wrong sign",
                "w = A alpha - b (not b - A alpha), and u = A^T w"),
        Mistake(lambda A, b, a, lam: _u(A, b, a) ** 2 / (2 * lam), "the regularizer's term lam * alpha_i is missing",
                "g_i(alpha_i) + g_i^*(-u_i) + alpha_i u_i simplifies to (lam alpha_i + u_i)^2 / (2 lam)"),
        Mistake(lambda A, b, a, lam: lam / 2 * a**2, "you return g_i(alpha_i) only, not the whole gap",
                "add the conjugate g_i^*(-u_i) = u_i^2 / (2 lam) and the cross term alpha_i u_i"),
    ],
)  # fmt: skip
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


# ---- Exercise 2: coordinate descent on gap-selected working sets, built from its update rule


def reference_gap_working_sets(A, b, lam, alpha, rounds, budget, epochs):
    alpha, norms = alpha.clone(), A.pow(2).sum(0)
    w = A @ alpha - b
    for _ in range(rounds):
        gaps = glm.coordinate_gaps(A, b, alpha, lam, "ridge")
        chosen = torch.sort(torch.topk(gaps, budget).indices).values
        for _ in range(epochs):
            glm.coordinate_descent(A, alpha, w, chosen.tolist(), lam, "ridge", norms)
    return alpha


def _working_sets_variant(kind):
    """The working-set solver with one mistake of ``kind``; otherwise as ``reference_gap_working_sets``."""

    def wrong(A, b, lam, alpha, rounds, budget, epochs):
        alpha, norms = alpha.clone(), A.pow(2).sum(0)
        w = A @ alpha - b
        gaps = (lam * alpha + A.T @ w) ** 2 / (2 * lam)
        for _ in range(rounds):
            if kind != "gaps once":
                gaps = (lam * alpha + A.T @ w) ** 2 / (2 * lam)
            chosen = torch.sort(torch.topk(gaps, budget, largest=kind != "smallest").indices).values
            for _ in range(epochs):
                stale = A.T @ w  # u at the start of the pass
                for i in chosen.tolist():
                    u = float(stale[i]) if kind == "stale residual" else float(A[:, i] @ w)
                    denominator = norms[i] if kind == "no lam below" else norms[i] + lam
                    numerator = u if kind == "no lam above" else u + lam * alpha[i]
                    new = alpha[i] - numerator / denominator
                    w = w + A[:, i] * (new - alpha[i])
                    alpha[i] = new
        return alpha

    return wrong


@self_check(
    reference_gap_working_sets,
    mistakes=[
        Mistake(_working_sets_variant("smallest"), "you update the coordinates with the smallest gaps",
                "the working set holds the budget coordinates of LARGEST gap: torch.topk(gaps, budget)"),
        Mistake(_working_sets_variant("gaps once"), "your working set is chosen once, not every round",
                "recompute the gaps from the current alpha at the start of each round"),
        Mistake(_working_sets_variant("stale residual"), "you update the coordinates with a stale residual",
                "after changing alpha_i, update w += a_i (new - old) before the next coordinate"),
        Mistake(_working_sets_variant("no lam below"), "the denominator of your update is missing lam",
                "exact minimization along i: divide by ||a_i||^2 + lam"),
        Mistake(_working_sets_variant("no lam above"), "the numerator of your update is missing lam * alpha_i",
                "the derivative along i is u_i + lam alpha_i"),
    ],
    forbid=[glm.coordinate_descent, glm.coordinate_gaps, glm.solve],
)  # fmt: skip
def gap_working_sets(gen):
    """Float64 ridge problems A (n, d), b (n,), lam, a start alpha (d,), rounds, budget <= d, epochs."""
    cases = []
    for n, d, lam, rounds, budget, epochs, zero in [(8, 6, 0.5, 3, 2, 1, True), (5, 7, 1.0, 2, 3, 2, False),
                                                    (10, 4, 0.1, 4, 1, 1, True), (6, 5, 2.0, 2, 5, 3, False)]:  # fmt: skip
        A, b = randn(n, d, gen=gen).double(), randn(n, gen=gen).double()
        alpha = torch.zeros(d, dtype=torch.float64) if zero else randn(d, gen=gen).double()
        cases.append(dict(A=A, b=b, lam=lam, alpha=alpha, rounds=rounds, budget=budget, epochs=epochs))
    return cases


# ---- Exercise 3: the importance-sampled gradient


@self_check(
    sampling.importance_gradient,
    mistakes=[
        Mistake(lambda g, i, p: g.mean(0), "the gradients are not reweighted",
                "divide each sampled gradient by n * p_i, or the estimate favours likely examples"),
        Mistake(lambda g, i, p: (g * (len(p) * p[i])[:, None]).mean(0), "you multiply by n * p_i instead of dividing",
                "the weight of a sampled gradient is 1 / (n p_i)"),
        Mistake(lambda g, i, p: (g / p[i][:, None]).mean(0), "the factor 1/n is missing",
                "the weight is 1 / (n p_i): with uniform p it is 1"),
        Mistake(lambda g, i, p: (g / (len(p) * p[i])[:, None]).sum(0), "you sum over the batch instead of averaging",
                "average the B reweighted gradients: .mean(0)"),
    ],
)  # fmt: skip
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
