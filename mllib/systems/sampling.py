"""Importance sampling of data points for SGD, static and adaptive, against uniform sampling.

For f(x) = 1/n sum_i f_i(x), SGD with a distribution p over the n examples steps along

    g = grad f_i(x) / (n p_i),   i ~ p,

which is unbiased: E g = sum_i p_i grad f_i / (n p_i) = grad f(x). Its variance is

    E ||g - grad f||^2 = 1/n^2 sum_i ||grad f_i(x)||^2 / p_i - ||grad f(x)||^2,

smallest for p_i proportional to ||grad f_i(x)|| (Zhao and Zhang 2015, "Stochastic
optimization with importance sampling", arXiv:1401.2753, Section 3; Needell, Srebro, Ward 2014,
arXiv:1310.5715). Unknown gradient norms are replaced by a bound: for least squares
f_i = 1/2 (<a_i, x> - b_i)^2 the per-example smoothness L_i = ||a_i||^2 ("static" sampling,
p_i proportional to L_i), or by the norms last seen during training ("adaptive": p_i
proportional to the remembered ||grad f_i||, mixed with uniform so that no p_i vanishes; a
simplified form of the adaptive schemes of Stich, Raj and Jaggi 2017, "Safe adaptive importance
sampling", arXiv:1711.02637, without their safe bounds).

word2vec's negative sampling (Mikolov et al. 2013, arXiv:1310.4546) is sampling by importance too:
negative words are drawn from the unigram distribution raised to the 3/4 power instead of
uniformly.
"""
import torch

from .. import engine
from ..clients import MODEL
from ..constraints import Generator, Indices, Instance, Integer, OneOf, Probability, Real, Rule, Tensor, constrain
from ..data import Dataset
from ..engine import History, Rounds
from .glm import SAMPLES, SPREAD, TARGETS

SCHEMES = ("uniform", "lipschitz", "adaptive")
# finite entries (NaN passes every comparison of check_probabilities); its body checks the rest
PROBABILITIES = Tensor(finite=True, description="a distribution")
MIX = Real(gt=0, le=1)  # the share of uniform that keeps every p_i > 0
STEPPING = dict(batch=Integer(min=1), lr=Real(ge=0), mix=MIX, gen=Generator())
RECORDS = dict(history=Instance(History), metric=Instance(str))


@constrain(p=PROBABILITIES, n=Integer(min=1) | None)
def check_probabilities(p: torch.Tensor, n: int | None = None) -> None:
    """Raise ValueError unless p is a 1-d distribution (non-negative, sums to one), of length n."""
    if p.ndim != 1 or (n is not None and len(p) != n):
        raise ValueError(f"p must have shape ({n if n is not None else 'n'},), got {tuple(p.shape)}")
    if (p < 0).any():
        raise ValueError(f"p must be non-negative, got a minimum of {float(p.min()):.4g}")
    total = float(p.double().sum())
    if abs(total - 1) > 1e-6:
        raise ValueError(f"p must sum to one, got a sum of {total:.6g}; divide by p.sum()")


@constrain(scores=Tensor((1, 2)), mix=Probability())
def proportional(scores: torch.Tensor, *, mix: float = 0.0) -> torch.Tensor:
    """p_i = (1 - mix) s_i / sum_j s_j + mix / n: sampling proportional to non-negative scores.

    Args:
        scores: (n,) or (runs, n), one distribution per row (normalized along the last axis).

    Raises:
        ValueError: for negative scores, scores that are all zero (in some row), or mix outside [0, 1].
    """
    total = scores.sum(-1, keepdim=True)
    if (scores < 0).any() or not bool((total > 0).all()):
        raise ValueError("scores must be non-negative with a positive sum")
    return (1 - mix) * scores / total + mix / scores.shape[-1]


@constrain(grads=Tensor(2), idx=Indices(), p=PROBABILITIES)
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


@constrain(G=Tensor(2), p=PROBABILITIES)
def gradient_variance(G: torch.Tensor, p: torch.Tensor) -> float:
    """Exact variance of the one-sample estimate: 1/n^2 sum_i ||G_i||^2 / p_i - ||mean G||^2.

    Args:
        G: (n, d) all per-example gradients at one point. p: (n,) the distribution.
    """
    check_probabilities.__wrapped__(p, len(G))
    return float(_variances(G.double(), p.double()))


def _variances(G: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``gradient_variance`` of each run at once: G (..., n, d), p (..., n) -> (...)."""
    norms = G.pow(2).sum(-1)  # (..., n)
    spent = torch.where(norms > 0, norms / p, torch.zeros_like(norms)).sum(-1)
    return spent / G.shape[-2] ** 2 - G.mean(-2).pow(2).sum(-1)


@constrain(TARGETS, Rule("x", lambda A, x: x.shape == (A.shape[1],),
                        "x must have shape ({A.shape[1]},), one per column of A, got {x.shape}"),
           **SAMPLES, x=Tensor(1))  # fmt: skip
def least_squares_grads(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-example gradients of f_i(x) = 1/2 (<a_i, x> - b_i)^2: (n, d) rows (<a_i, x> - b_i) a_i."""
    return (A @ x - b)[:, None] * A


@constrain(n=Integer(min=1), d=Integer(min=1), spread=SPREAD, noise=Real(ge=0), gen=Generator())
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


class AdaptiveSampler:
    """Sampling proportional to the last seen gradient norms, mixed with uniform.

    p = (1 - mix) m / sum(m) + mix / n, where m_i is the norm of grad f_i observed the last
    time example i was sampled (initially ``initial``, e.g. the Lipschitz bounds). ``initial``
    of shape (runs, n) keeps one memory per independent run.

    State:
        memory: (n,) or (runs, n) the remembered gradient norms.
    """

    @constrain(initial=Tensor((1, 2)), mix=MIX)
    def __init__(self, initial: torch.Tensor, *, mix: float = 0.2):
        self.mix = mix
        # State
        self.memory = initial.double().clone()

    def probabilities(self) -> torch.Tensor:
        return proportional.__wrapped__(self.memory, mix=self.mix)

    def update(self, idx: torch.Tensor, norms: torch.Tensor) -> None:
        """Remember ``norms`` for the examples ``idx``: both (B,), or (runs, B) for a (runs, n) memory."""
        self.memory.scatter_(-1, idx, norms.double())

    def state_dict(self) -> dict:
        return {"memory": self.memory.clone(), "mix": self.mix}


class ImportanceSGD(Rounds):
    """``runs`` independent runs of mini-batch SGD on least squares 1/(2n) ||A x - b||^2, one step a round.

    Step, for every run at once: x <- x - lr * mean_b grad f_{i_b}(x) / (n p_{i_b}), i_b ~ p with
    replacement (``importance_gradient``), where p is uniform, proportional to L_i = ||a_i||^2
    ("lipschitz"), or an ``AdaptiveSampler`` started at L_i ("adaptive"). The runs start at
    x = 0 and differ only in their draws (each its own row of indices and, for "adaptive", its
    own memory).

    Args:
        A: (n, d) the examples; b: (n,) the targets.
        scheme: one of ``SCHEMES``. batch: examples per step, >= 1. lr: the step size.
        mix: the adaptive sampler's share of uniform. runs: >= 1, the rows of x.
        gen: CPU generator for the indices.

    State: ``x`` (runs, d); ``sampler`` (for "adaptive") with its (runs, n) memory.

    Raises:
        ValueError: for an unknown scheme, batch < 1 or runs < 1.
    """

    @constrain(TARGETS, **SAMPLES, scheme=OneOf(*SCHEMES), **STEPPING, runs=Integer(min=1))
    def __init__(self, A: torch.Tensor, b: torch.Tensor, *, scheme: str, batch: int, lr: float, mix: float = 0.2,
                 runs: int = 1, gen: torch.Generator):  # fmt: skip
        self.A, self.b = A.double(), b.double()
        self.scheme, self.batch, self.lr, self.gen = scheme, batch, lr, gen
        n, d = self.A.shape
        x_star = torch.linalg.lstsq(self.A, self.b[:, None]).solution[:, 0]
        self.f_star = float(self.loss(x_star))
        lipschitz = self.A.pow(2).sum(1)  # (n,)
        uniform = torch.full((n,), 1.0 / n, dtype=torch.float64)
        self.fixed = (uniform if scheme == "uniform" else proportional(lipschitz)).expand(runs, n)
        # State
        self.sampler = AdaptiveSampler(lipschitz.expand(runs, n), mix=mix) if scheme == "adaptive" else None
        self.x = torch.zeros(runs, d, dtype=torch.float64)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = 1/(2n) ||A x - b||^2 of each row: (..., d) -> (...)."""
        return 0.5 * (x @ self.A.T - self.b).pow(2).mean(-1)

    def probabilities(self) -> torch.Tensor:
        """The current sampling distribution of each run: (runs, n)."""
        return self.sampler.probabilities() if self.sampler else self.fixed

    def round(self, r: int) -> None:
        A, b, x, p = self.A, self.b, self.x, self.probabilities()
        idx = torch.multinomial(p, self.batch, replacement=True, generator=self.gen)  # (runs, batch)
        rows = A[idx]  # (runs, batch, d)
        residual = (rows * x[:, None]).sum(-1) - b[idx]  # (runs, batch)
        grads = residual[..., None] * rows  # (runs, batch, d)
        weights = 1 / (len(A) * p.gather(-1, idx))  # (runs, batch)
        self.x = x - self.lr * (weights[..., None] * grads).mean(1)  # importance_gradient of each run
        if self.sampler:
            self.sampler.update(idx, grads.norm(dim=-1))

    @property
    def model(self) -> torch.Tensor:
        return self.x

    def suboptimality(self) -> torch.Tensor:
        """f(x) - f* of each run: (runs,)."""
        return self.loss(self.x) - self.f_star

    def variance(self) -> torch.Tensor:
        """The exact one-sample variance under the current p of each run (``gradient_variance``): (runs,)."""
        return _variances((self.x @ self.A.T - self.b)[..., None] * self.A, self.probabilities())  # (runs, n, d) grads


@constrain(TARGETS, **SAMPLES, scheme=OneOf(*SCHEMES), steps=Integer(min=1), **STEPPING,
           every=Integer(min=1), runs=Integer(min=1))  # fmt: skip
def sgd(A: torch.Tensor, b: torch.Tensor, *, scheme: str, steps: int, batch: int, lr: float,
        every: int = 10, mix: float = 0.2, runs: int = 1, gen: torch.Generator) -> History:  # fmt: skip
    """Mini-batch SGD on least squares with a sampling scheme, ``runs`` runs at once: ``steps`` rounds
    of ``ImportanceSGD`` (one SGD step each) on the round engine.

    The step size ``lr`` is the same for every scheme. At step 0, every ``every`` steps and after
    the last it records, for each run, f(x) - f* and the exact one-sample variance under the
    current p (``gradient_variance``).

    Args:
        A: (n, d) the examples; b: (n,) the targets.
        scheme, batch, lr, mix, gen: as ``ImportanceSGD``.
        steps: >= 1. every: >= 1.
        runs: independent runs, batched as the rows of x (runs, d).

    Returns:
        The ``engine.History``: ``history.rounds`` the recorded steps, metrics "suboptimality"
        and "variance", each a (runs,) tensor per recorded step (``records`` stacks them into
        (runs, T)); ``history.algorithm.scheme`` the scheme, ``history.model`` x (runs, d).

    Raises:
        ValueError: for an unknown scheme, steps, every, batch or runs < 1.
    """
    run = ImportanceSGD(A, b, scheme=scheme, batch=batch, lr=lr, mix=mix, runs=runs, gen=gen)
    return engine.run(run, steps, metrics={"suboptimality": ImportanceSGD.suboptimality,
                                           "variance": ImportanceSGD.variance},
                      eval_every=every, record_start=True)  # fmt: skip


@constrain(**RECORDS)
def records(history: History, metric: str) -> torch.Tensor:
    """One metric of an ``sgd`` run, every run's records side by side: (runs, T).

    Raises:
        KeyError: for a metric the run did not record.
    """
    return torch.stack(history[metric], 1)


@constrain(**RECORDS, start=Integer(min=0))
def log10_mean(history: History, metric: str, *, start: int = 0) -> float:
    """The mean of log10 ``metric`` over the runs of an ``sgd`` run and its records at steps >= ``start``.

    That is the log10 of their geometric mean. A run at a large step can burst for a while
    (adaptive sampling with stale norms): an arithmetic mean over a run is then set by one
    burst, and whether a burst comes depends on the last bits of the arithmetic; the mean of
    the logs moves far less.

    Args:
        metric: "suboptimality" or "variance".
        start: the first step to include (e.g. ``steps // 2``: the second half of the run).

    Raises:
        KeyError: for a metric the run did not record.
        ValueError: for a start after the last recorded step.
    """
    kept = torch.tensor(history.rounds) >= start
    if not kept.any():
        raise ValueError(f"start must be at most the last recorded step {history.rounds[-1]}, got {start}")
    return float(records(history, metric)[:, kept].log10().mean())


NETWORK = dict(model=MODEL, data=Instance(Dataset), scheme=OneOf("uniform", "norm"), **STEPPING, refresh=Integer(min=1))


class NetworkImportanceSGD(Rounds):
    """SGD on a neural network, beyond GLMs: examples drawn uniformly or by their gradient norms.

    Every ``refresh`` steps the per-example gradients G (n, d) at the current model set p:
    uniform, or ("norm") p_i = (1 - mix) ||G_i|| / sum_j ||G_j|| + mix / n, the variance-optimal
    distribution of Zhao and Zhang (2015, arXiv:1401.2753) mixed with uniform so that no p_i vanishes (for deep
    networks: Katharopoulos and Fleuret 2018, "Not all samples are created equal", arXiv:1803.00942). Each step
    draws i_1..i_B ~ p with replacement and moves x <- x - lr ``importance_gradient``(G_batch, idx, p).

    Args:
        model: a ``FlatModel`` (float64 parameters keep the runs portable); data: its data set.
        scheme: "uniform" or "norm". batch: examples per step, >= 1. lr: the step size.
        refresh: steps between two computations of p, >= 1. mix: the share of uniform in p.
        gen: CPU generator for the initial model, then the draws.

    State: ``x`` (d,) the model; ``p`` (n,) the current distribution; ``variance`` the exact
    one-sample variance of the gradient estimate under p at the last refresh (``gradient_variance``).

    Raises:
        ValueError: for an unknown scheme, batch or refresh < 1, or mix outside (0, 1].
    """

    @constrain(**NETWORK)
    def __init__(self, model, data, *, scheme: str, batch: int, lr: float, refresh: int, mix: float = 0.2,
                 gen: torch.Generator):  # fmt: skip
        self.net, self.scheme, self.batch, self.lr, self.refresh, self.mix = model, scheme, batch, lr, refresh, mix
        dtype = model.init(gen).dtype
        self.x_all, self.y_all, self.gen = data.x_train.to(dtype), data.y_train, gen
        # State
        self.x = model.init(gen, self.x_all.device)
        self.p: torch.Tensor | None = None
        self.variance: float | None = None

    def per_example_gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """grad f_i at the current model for each example: (B, ...), (B,) -> (B, d); each example is
        one row of a client matrix of copies of x, so one batched backward pass gives them all."""
        return self.net.grad(self.x.expand(len(y), -1), x[:, None], y[:, None])

    def refresh_probabilities(self) -> None:
        """p and its gradient variance from every example's gradient at the current model."""
        G = self.per_example_gradients(self.x_all, self.y_all)  # (n, d)
        n = len(G)
        uniform = torch.full((n,), 1.0 / n, dtype=G.dtype, device=G.device)
        self.p = uniform if self.scheme == "uniform" else proportional.__wrapped__(G.norm(dim=1), mix=self.mix)
        self.variance = gradient_variance.__wrapped__(G, self.p)

    def round(self, r: int) -> None:
        if (r - 1) % self.refresh == 0:
            self.refresh_probabilities()
        idx = torch.multinomial(self.p.cpu(), self.batch, replacement=True, generator=self.gen).to(self.x.device)
        G = self.per_example_gradients(self.x_all[idx], self.y_all[idx])  # (B, d)
        self.x = self.x - self.lr * importance_gradient.__wrapped__(G, idx, self.p)

    @property
    def model(self) -> torch.Tensor:
        return self.x

    def training_loss(self) -> float:
        """The mean loss over all training examples at the current model."""
        return float(self.net.loss(self.x[None], self.x_all[None], self.y_all[None])[0])


@constrain(**NETWORK, steps=Integer(min=1))
def network_sgd(model, data, *, scheme: str, steps: int, batch: int, lr: float, refresh: int, mix: float = 0.2,
                gen: torch.Generator) -> History:  # fmt: skip
    """``steps`` rounds of ``NetworkImportanceSGD`` on the round engine, recording the training
    loss and the gradient variance under p after every ``refresh`` steps and after the last.

    Returns:
        The ``engine.History``: metrics "loss" and "variance" (floats), ``history.algorithm.x`` the model.

    Raises:
        ValueError: as ``NetworkImportanceSGD``, or for steps < 1.
    """
    run = NetworkImportanceSGD(model, data, scheme=scheme, batch=batch, lr=lr, refresh=refresh, mix=mix, gen=gen)
    return engine.run(run, steps, metrics={"loss": NetworkImportanceSGD.training_loss,
                                           "variance": lambda sgd: sgd.variance}, eval_every=refresh)  # fmt: skip
