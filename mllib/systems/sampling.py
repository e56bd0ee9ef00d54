"""Importance sampling of data points for SGD, static and adaptive, against uniform sampling.

For f(x) = 1/n sum_i f_i(x), SGD with a distribution p over the n examples steps along

    g = grad f_i(x) / (n p_i),   i ~ p,

which is unbiased: E g = sum_i p_i grad f_i / (n p_i) = grad f(x). Its variance is

    E ||g - grad f||^2 = 1/n^2 sum_i ||grad f_i(x)||^2 / p_i - ||grad f(x)||^2,

smallest for p_i proportional to ||grad f_i(x)|| (Zhao and Zhang 2015, "Stochastic
optimization with importance sampling", Section 3; Needell, Srebro, Ward 2014). Unknown
gradient norms are replaced by a bound: for least squares f_i = 1/2 (<a_i, x> - b_i)^2 the
per-example smoothness L_i = ||a_i||^2 ("static" sampling, p_i proportional to L_i), or by the
norms last seen during training ("adaptive": p_i proportional to the remembered ||grad f_i||,
mixed with uniform so that no p_i vanishes; a simplified form of the adaptive schemes of
Stich, Raj and Jaggi 2017, "Safe adaptive importance sampling", without their safe bounds).

word2vec's negative sampling (Mikolov et al. 2013) is sampling by importance too: negative
words are drawn from the unigram distribution raised to the 3/4 power instead of uniformly.
"""
from dataclasses import dataclass

import torch

SCHEMES = ("uniform", "lipschitz", "adaptive")


def check_probabilities(p: torch.Tensor, n: int | None = None) -> None:
    """Raise ValueError unless p is a 1-d distribution (non-negative, sums to one), of length n."""
    if p.ndim != 1 or (n is not None and len(p) != n):
        raise ValueError(f"p must have shape ({n if n is not None else 'n'},), got {tuple(p.shape)}")
    if (p < 0).any():
        raise ValueError(f"p must be non-negative, got a minimum of {float(p.min()):.4g}")
    total = float(p.double().sum())
    if abs(total - 1) > 1e-6:
        raise ValueError(f"p must sum to one, got a sum of {total:.6g}; divide by p.sum()")


def proportional(scores: torch.Tensor, *, mix: float = 0.0) -> torch.Tensor:
    """p_i = (1 - mix) s_i / sum_j s_j + mix / n: sampling proportional to non-negative scores.

    Raises:
        ValueError: for negative scores, scores that are all zero, or mix outside [0, 1].
    """
    if not 0 <= mix <= 1:
        raise ValueError(f"mix must be in [0, 1], got {mix}")
    if (scores < 0).any() or not float(scores.sum()) > 0:
        raise ValueError("scores must be non-negative with a positive sum")
    return (1 - mix) * scores / scores.sum() + mix / len(scores)


def importance_gradient(grads: torch.Tensor, idx: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The importance-sampled gradient estimate of a mini-batch: mean_b grads_b / (n p_{idx_b}).

    Args:
        grads: (B, d) per-example gradients of the sampled examples.
        idx: (B,) their indices in 0..n-1 (drawn from p, with replacement).
        p: (n,) the sampling distribution.

    Returns:
        (d,) unbiased estimate of the full gradient 1/n sum_i grad f_i.

    Raises:
        ValueError: if p is not a distribution or the shapes do not match.
    """
    check_probabilities(p)
    if grads.ndim != 2 or idx.shape != (grads.shape[0],):
        raise ValueError(f"grads must be (B, d) and idx (B,), got {tuple(grads.shape)} and {tuple(idx.shape)}")
    weights = 1 / (len(p) * p[idx])  # (B,)
    return (weights[:, None] * grads).mean(0)


def gradient_variance(G: torch.Tensor, p: torch.Tensor) -> float:
    """Exact variance of the one-sample estimate: 1/n^2 sum_i ||G_i||^2 / p_i - ||mean G||^2.

    Args:
        G: (n, d) all per-example gradients at one point. p: (n,) the distribution.
    """
    check_probabilities(p, len(G))
    G, p = G.double(), p.double()
    norms = G.pow(2).sum(1)  # (n,)
    spent = torch.where(norms > 0, norms / p, torch.zeros_like(norms)).sum()
    return float(spent / len(G) ** 2 - G.mean(0).pow(2).sum())


def least_squares_grads(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-example gradients of f_i(x) = 1/2 (<a_i, x> - b_i)^2: (n, d) rows (<a_i, x> - b_i) a_i."""
    return (A @ x - b)[:, None] * A


def heterogeneous_regression(n: int, d: int, *, spread: float = 1.0, noise: float = 0.5,
                             gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Least squares with rows of very different norms: a_i = exp(spread z_i) N(0, I / d).

    Returns:
        A (n, d) and b = A x_true + noise N(0, 1), float64 on the CPU.
    """
    A = torch.randn(n, d, generator=gen, dtype=torch.float64) / d**0.5
    A = A * torch.exp(spread * torch.randn(n, 1, generator=gen, dtype=torch.float64))
    x_true = torch.randn(d, generator=gen, dtype=torch.float64)
    return A, A @ x_true + noise * torch.randn(n, generator=gen, dtype=torch.float64)


@dataclass
class SGDTrace:
    """An SGD run: suboptimality f(x) - f* and the estimator's exact variance, every ``every`` steps."""

    scheme: str
    steps: torch.Tensor
    suboptimality: torch.Tensor
    variance: torch.Tensor


class AdaptiveSampler:
    """Sampling proportional to the last seen gradient norms, mixed with uniform.

    p = (1 - mix) m / sum(m) + mix / n, where m_i is the norm of grad f_i observed the last
    time example i was sampled (initially ``initial``, e.g. the Lipschitz bounds).

    State:
        memory: (n,) the remembered gradient norms.
    """

    def __init__(self, initial: torch.Tensor, *, mix: float = 0.2):
        if not 0 < mix <= 1:
            raise ValueError(f"mix must be in (0, 1] so that every p_i > 0, got {mix}")
        self.mix = mix
        # State
        self.memory = initial.double().clone()

    def probabilities(self) -> torch.Tensor:
        return proportional(self.memory, mix=self.mix)

    def update(self, idx: torch.Tensor, norms: torch.Tensor) -> None:
        self.memory[idx] = norms.double()

    def state_dict(self) -> dict:
        return {"memory": self.memory.clone(), "mix": self.mix}


def sgd(A: torch.Tensor, b: torch.Tensor, *, scheme: str, steps: int, batch: int, lr: float,
        every: int = 10, mix: float = 0.2, gen: torch.Generator) -> SGDTrace:  # fmt: skip
    """Mini-batch SGD on least squares 1/(2n) ||A x - b||^2 with a sampling scheme.

    x <- x - lr * mean_b grad f_{i_b}(x) / (n p_{i_b}),  i_b ~ p with replacement, where p is
    uniform, proportional to L_i = ||a_i||^2 ("lipschitz"), or ``AdaptiveSampler`` started at L_i.
    The step size ``lr`` is the same for every scheme. Every ``every`` steps it records f(x) - f*
    and the exact one-sample variance under the current p (``gradient_variance``).

    Raises:
        ValueError: for an unknown scheme, steps < 1 or batch < 1.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got steps={steps}, batch={batch}")
    A, b = A.double(), b.double()
    n, d = A.shape
    x_star = torch.linalg.lstsq(A, b[:, None]).solution[:, 0]
    loss = lambda x: float(0.5 * (A @ x - b).pow(2).mean())  # noqa: E731
    f_star = loss(x_star)
    lipschitz = A.pow(2).sum(1)  # (n,)
    sampler = AdaptiveSampler(lipschitz, mix=mix) if scheme == "adaptive" else None
    fixed = torch.full((n,), 1.0 / n, dtype=torch.float64) if scheme == "uniform" else proportional(lipschitz)
    x = torch.zeros(d, dtype=torch.float64)
    recorded, sub, var = [], [], []
    for t in range(steps + 1):
        p = sampler.probabilities() if sampler else fixed
        if t % every == 0:
            recorded.append(t)
            sub.append(loss(x) - f_star)
            var.append(gradient_variance(least_squares_grads(A, b, x), p))
        if t == steps:
            break
        idx = torch.multinomial(p, batch, replacement=True, generator=gen)  # (batch,)
        grads = least_squares_grads(A[idx], b[idx], x)  # (batch, d)
        x = x - lr * importance_gradient(grads, idx, p)
        if sampler:
            sampler.update(idx, grads.norm(dim=1))
    as_tensor = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return SGDTrace(scheme, torch.tensor(recorded), as_tensor(sub), as_tensor(var))
