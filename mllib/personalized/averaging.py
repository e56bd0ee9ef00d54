"""Train alone or collaborate? Weighted model averaging for mean estimation.

Client 0 wants the mean mu_0 of its own distribution (variance s0^2). It holds n0 samples;
the others hold n1 samples of a distribution with variance s1^2 whose mean is off by the
bias delta = mu_1 - mu_0. Its estimate mixes the two sample means with a collaboration
weight beta in [0, 1]:

    est(beta) = (1 - beta) * mean(own) + beta * mean(others),
    MSE(beta) = (1 - beta)^2 * s0^2/n0 + beta^2 * (s1^2/n1 + delta^2).

Grimberg, Hartley, Karimireddy, Jaggi 2021 ("Optimal model averaging: towards
personalized collaborative learning", arXiv:2110.12946) show that some beta > 0 always helps when s0^2 > 0,
find the optimal weight, and that the benefit turns negative beyond it: here MSE(beta) <
MSE(0) exactly when 0 < beta < 2 beta*. The paper mixes the local model with a global
model that includes the local data; we take the others' estimate independent of the own
samples, which makes the formulas exact.
"""
import matplotlib.pyplot as plt
import numpy as np
import torch

from ..constraints import Generator, Integer, Real, Reals, Tensor, constrain, every_entry
from ..runtime import generator

# scalars, or tensors that broadcast; NaN and inf are rejected, the ranges checked by RANGES
VAR, COUNT, ANY = Real(ge=0) | Tensor(finite=True), Real(ge=1) | Tensor(finite=True), Real() | Tensor(finite=True)
TWO_SOURCES = dict(var_own=VAR, n_own=COUNT, var_other=VAR, n_other=COUNT)
RANGES = (every_entry("var_own", lambda v: v >= 0, ">= 0"), every_entry("n_own", lambda v: v >= 1, ">= 1"),
          every_entry("var_other", lambda v: v >= 0, ">= 0"), every_entry("n_other", lambda v: v >= 1, ">= 1"))
WEIGHT = every_entry("beta", lambda v: (v > 0) & (v <= 1), "in (0, 1]")


def _float64(*values) -> list[torch.Tensor]:
    """The arguments as float64 tensors, which broadcast."""
    return [torch.as_tensor(v, dtype=torch.float64) for v in values]


@constrain(*RANGES, beta=ANY, **TWO_SOURCES, bias=ANY)
def mse_of_weight(beta, var_own, n_own, var_other, n_other, bias) -> torch.Tensor:
    """The exact mean squared error of est(beta) (Grimberg et al. 2021, arXiv:2110.12946, Section 3).

        MSE(beta) = (1 - beta)^2 s0^2/n0 + beta^2 (s1^2/n1 + delta^2).

    Args:
        beta: collaboration weight(s); the others as in ``optimal_weight``. All broadcast.

    Returns:
        float64 tensor of the broadcast shape.

    Raises:
        ValueError: for a negative variance or a sample count below 1.
    """
    v0, n0, v1, n1, delta = _float64(var_own, n_own, var_other, n_other, bias)
    beta = torch.as_tensor(beta, dtype=torch.float64)
    return (1 - beta) ** 2 * v0 / n0 + beta**2 * (v1 / n1 + delta**2)


@constrain(*RANGES, **TWO_SOURCES, bias=ANY)
def optimal_weight(var_own, n_own, var_other, n_other, bias) -> torch.Tensor:
    """The MSE-optimal collaboration weight beta* (Grimberg et al. 2021, arXiv:2110.12946).

        beta* = (s0^2/n0) / (s0^2/n0 + s1^2/n1 + delta^2),

    the weight on the others' mean that minimizes MSE(beta); 1 - beta* stays on the own
    mean. Noisy, small own data or close collaborators push beta* up; bias pushes it down.

    Args:
        var_own, n_own: own variance s0^2 >= 0 and sample count n0 >= 1.
        var_other, n_other: the others' variance s1^2 >= 0 and sample count n1 >= 1.
        bias: delta, the gap between the two means. All broadcast as tensors.

    Returns:
        beta* in [0, 1], float64, of the broadcast shape (0/0 gives beta* = 0: nothing to gain).

    Raises:
        ValueError: for a negative variance or a sample count below 1.
    """
    v0, n0, v1, n1, delta = _float64(var_own, n_own, var_other, n_other, bias)
    own, other = v0 / n0, v1 / n1 + delta**2
    total = own + other
    return torch.where(total > 0, own / total.clamp(min=1e-300), torch.zeros_like(total))


@constrain(*RANGES, WEIGHT, **TWO_SOURCES, beta=ANY)
def harmful_bias(var_own, n_own, var_other, n_other, beta) -> torch.Tensor:
    """The bias |delta| above which collaborating with weight beta > 0 does worse than alone.

    MSE(beta) > MSE(0) iff beta > 2 beta*, i.e. delta^2 > (2 - beta) s0^2/(beta n0) - s1^2/n1
    (0 when any bias hurts).
    """
    v0, n0, v1, n1, beta = _float64(var_own, n_own, var_other, n_other, beta)
    return ((2 - beta) * v0 / (beta * n0) - v1 / n1).clamp(min=0).sqrt()


@constrain(betas=Reals(), var_own=Real(ge=0), n_own=Integer(min=1), var_other=Real(ge=0),
           n_other=Integer(min=1), bias=Real(), trials=Integer(min=2), gen=Generator())  # fmt: skip
def monte_carlo_mse(
    betas, var_own: float, n_own: int, var_other: float, n_other: int, bias: float, *, trials: int, gen: torch.Generator
) -> torch.Tensor:
    """Monte Carlo MSE of est(beta) for each beta, with Gaussian samples.

    Each trial draws n_own samples of N(0, s0^2) and n_other of N(delta, s1^2) from ``gen``
    (on the CPU, in float64); the target is 0. The same trials serve every beta (common
    random numbers), so the estimated curve is itself a parabola in beta.

    Args:
        betas: (k,) collaboration weights.
        var_own, n_own, var_other, n_other, bias: as in ``optimal_weight``, scalars.
        trials: number of simulated data sets, >= 2.
        gen: CPU generator.

    Returns:
        (k,) float64 estimates of MSE(beta).

    Raises:
        ValueError: for trials < 2, a negative variance or a sample count below 1.
    """
    v0, n0, v1, n1, delta = _float64(var_own, n_own, var_other, n_other, bias)
    own = v0.sqrt() * torch.randn(trials, int(n0), generator=gen, dtype=torch.float64)  # (trials, n0)
    other = delta + v1.sqrt() * torch.randn(trials, int(n1), generator=gen, dtype=torch.float64)
    beta = torch.as_tensor(betas, dtype=torch.float64)[:, None]  # (k, 1)
    estimate = (1 - beta) * own.mean(1) + beta * other.mean(1)  # (k, trials)
    return estimate.pow(2).mean(1)


@constrain(betas=Reals(), mse=Reals())
def fitted_minimizer(betas, mse) -> float:
    """The minimizer -b / (2a) of the quadratic a beta^2 + b beta + c fitted to (betas, mse).

    Args:
        betas, mse: (k,) weights and their (estimated) errors, k >= 3.

    Raises:
        ValueError: when the fitted parabola is not convex (a <= 0).
    """
    a, b, _ = np.polyfit(np.asarray(betas, dtype=float), np.asarray(mse, dtype=float), 2)
    if a <= 0:
        raise ValueError("the fitted quadratic is not convex: use more trials or a wider grid of betas")
    return float(-b / (2 * a))


def plot_collaboration(
    n_own: int, noise: float, bias: float, *, var_other: float = 1.0, n_other: int = 100, trials: int = 4000,
    seed: int = 0,
) -> plt.Figure:
    """Left: MSE(beta), theory and Monte Carlo, with beta* and where collaborating hurts.
    Right: MSE alone, with the optimal weight and with naive pooling, as the bias grows."""
    var_own = noise**2
    betas = torch.linspace(0, 1, 41, dtype=torch.float64)
    theory = mse_of_weight(betas, var_own, n_own, var_other, n_other, bias)
    mc = monte_carlo_mse(betas, var_own, n_own, var_other, n_other, bias, trials=trials, gen=generator(seed))
    best = float(optimal_weight(var_own, n_own, var_other, n_other, bias))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5), layout="constrained")
    left.plot(betas, theory, label="theory")
    left.plot(betas, mc, ".", label=f"Monte Carlo ({trials} trials)")
    left.axvline(best, color="g", ls="--", label=f"optimal beta* = {best:.2f}")
    if 2 * best < 1:
        left.axvspan(2 * best, 1, color="r", alpha=0.1, label="worse than alone")
    left.set(xlabel="collaboration weight beta", ylabel="mean squared error", title="MSE of (1-beta) own + beta others")
    left.legend()
    deltas = torch.linspace(0, 2, 81, dtype=torch.float64)
    naive = n_other / (n_own + n_other)
    right.plot(deltas, torch.full_like(deltas, var_own / n_own), label="alone (beta = 0)")
    others = (var_other, n_other)
    right.plot(deltas, mse_of_weight(naive, var_own, n_own, *others, deltas), label=f"pooled (beta = {naive:.2f})")
    opt = optimal_weight(var_own, n_own, *others, deltas)
    right.plot(deltas, mse_of_weight(opt, var_own, n_own, *others, deltas), label="optimal beta*")
    hurts = float(harmful_bias(var_own, n_own, *others, naive))
    right.axvline(hurts, color="r", ls=":", label="pooling starts to hurt")
    right.set(xlabel="bias between the clients' means", ylabel="mean squared error", title="who wins as the bias grows")
    right.legend()
    fig.suptitle(
        f"own samples n0 = {n_own}, own noise s0 = {noise:g}, bias = {bias:g} "
        f"(others: n1 = {n_other}, s1 = {var_other**0.5:g})"
    )
    return fig
