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

    Args:
        scores: (n,) or (runs, n), one distribution per row (normalized along the last axis).

    Raises:
        ValueError: for negative scores, scores that are all zero (in some row), or mix outside [0, 1].
    """
    if not 0 <= mix <= 1:
        raise ValueError(f"mix must be in [0, 1], got {mix}")
    total = scores.sum(-1, keepdim=True)
    if (scores < 0).any() or not bool((total > 0).all()):
        raise ValueError("scores must be non-negative with a positive sum")
    return (1 - mix) * scores / total + mix / scores.shape[-1]


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
    return float(_variances(G.double(), p.double()))


def _variances(G: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``gradient_variance`` of each run at once: G (..., n, d), p (..., n) -> (...)."""
    norms = G.pow(2).sum(-1)  # (..., n)
    spent = torch.where(norms > 0, norms / p, torch.zeros_like(norms)).sum(-1)
    return spent / G.shape[-2] ** 2 - G.mean(-2).pow(2).sum(-1)


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
    """Independent SGD runs of one scheme, recorded every ``every`` steps.

    Fields:
        scheme: the sampling scheme. steps: (T,) the recorded steps.
        suboptimality: (runs, T) f(x) - f*. variance: (runs, T) the estimator's exact
        one-sample variance under the current p (``gradient_variance``).
    """

    scheme: str
    steps: torch.Tensor
    suboptimality: torch.Tensor
    variance: torch.Tensor

    def log10_mean(self, field: str, *, start: int = 0) -> float:
        """The mean of log10 ``field`` over the runs and the records at steps >= ``start``.

        That is the log10 of their geometric mean. A run at a large step can burst for a while
        (adaptive sampling with stale norms): an arithmetic mean over a run is then set by one
        burst, and whether a burst comes depends on the last bits of the arithmetic; the mean of
        the logs moves far less.

        Args:
            field: "suboptimality" or "variance".
            start: the first step to include (e.g. ``steps // 2``: the second half of the run).

        Raises:
            ValueError: for another field, or a start after the last recorded step.
        """
        if field not in ("suboptimality", "variance"):
            raise ValueError(f"field must be 'suboptimality' or 'variance', got {field!r}")
        kept = self.steps >= start
        if not kept.any():
            raise ValueError(f"start must be at most the last recorded step {int(self.steps[-1])}, got {start}")
        return float(getattr(self, field)[:, kept].log10().mean())


class AdaptiveSampler:
    """Sampling proportional to the last seen gradient norms, mixed with uniform.

    p = (1 - mix) m / sum(m) + mix / n, where m_i is the norm of grad f_i observed the last
    time example i was sampled (initially ``initial``, e.g. the Lipschitz bounds). ``initial``
    of shape (runs, n) keeps one memory per independent run.

    State:
        memory: (n,) or (runs, n) the remembered gradient norms.
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
        """Remember ``norms`` for the examples ``idx``: both (B,), or (runs, B) for a (runs, n) memory."""
        self.memory.scatter_(-1, idx, norms.double())

    def state_dict(self) -> dict:
        return {"memory": self.memory.clone(), "mix": self.mix}


def sgd(A: torch.Tensor, b: torch.Tensor, *, scheme: str, steps: int, batch: int, lr: float,
        every: int = 10, mix: float = 0.2, runs: int = 1, gen: torch.Generator) -> SGDTrace:  # fmt: skip
    """Mini-batch SGD on least squares 1/(2n) ||A x - b||^2 with a sampling scheme, ``runs`` runs at once.

    x <- x - lr * mean_b grad f_{i_b}(x) / (n p_{i_b}),  i_b ~ p with replacement, where p is
    uniform, proportional to L_i = ||a_i||^2 ("lipschitz"), or ``AdaptiveSampler`` started at L_i.
    The step size ``lr`` is the same for every scheme. Every ``every`` steps it records f(x) - f*
    and the exact one-sample variance under the current p (``gradient_variance``). The runs
    start at x = 0 and differ only in their draws (each its own row of indices and, for
    "adaptive", its own memory).

    Args:
        A: (n, d) the examples; b: (n,) the targets.
        runs: independent runs, batched as the rows of x (runs, d).

    Returns:
        An ``SGDTrace`` with (runs, T) records.

    Raises:
        ValueError: for an unknown scheme, steps < 1, batch < 1 or runs < 1.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if steps < 1 or batch < 1 or runs < 1:
        raise ValueError(f"steps, batch and runs must be >= 1, got steps={steps}, batch={batch}, runs={runs}")
    A, b = A.double(), b.double()
    n, d = A.shape
    x_star = torch.linalg.lstsq(A, b[:, None]).solution[:, 0]
    loss = lambda x: 0.5 * (x @ A.T - b).pow(2).mean(-1)  # noqa: E731  (..., d) -> (...)
    f_star = float(loss(x_star))
    lipschitz = A.pow(2).sum(1)  # (n,)
    sampler = AdaptiveSampler(lipschitz.expand(runs, n), mix=mix) if scheme == "adaptive" else None
    fixed = torch.full((n,), 1.0 / n, dtype=torch.float64) if scheme == "uniform" else proportional(lipschitz)
    fixed = fixed.expand(runs, n)
    x = torch.zeros(runs, d, dtype=torch.float64)
    recorded, sub, var = [], [], []
    for t in range(steps + 1):
        p = sampler.probabilities() if sampler else fixed  # (runs, n)
        if t % every == 0:
            recorded.append(t)
            sub.append(loss(x) - f_star)
            var.append(_variances((x @ A.T - b)[..., None] * A, p))  # all (runs, n, d) gradients
        if t == steps:
            break
        idx = torch.multinomial(p, batch, replacement=True, generator=gen)  # (runs, batch)
        rows = A[idx]  # (runs, batch, d)
        residual = (rows * x[:, None]).sum(-1) - b[idx]  # (runs, batch)
        grads = residual[..., None] * rows  # (runs, batch, d)
        weights = 1 / (n * p.gather(-1, idx))  # (runs, batch)
        x = x - lr * (weights[..., None] * grads).mean(1)  # importance_gradient of each run
        if sampler:
            sampler.update(idx, grads.norm(dim=-1))
    return SGDTrace(scheme, torch.tensor(recorded), torch.stack(sub, 1), torch.stack(var, 1))
