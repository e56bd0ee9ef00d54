"""Differential privacy: Laplace and Gaussian mechanisms, DP-SGD, DP-FedAvg.

DP-SGD (Abadi et al. 2016, arXiv:1607.00133, Algorithm 1) has two paths to the sum of clipped per-sample
gradients: ``per_sample_gradients`` (the readable reference: ``torch.func.vmap`` of
``grad``, one (B, d) matrix) and ``ghost_clipped_sum`` (never materializes it: for a linear
layer the per-sample weight gradient is the outer product g_i a_i^T, whose norm is
||g_i|| ||a_i||; Lee & Kifer 2021, Li et al. 2022).
"""
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from scipy import optimize, stats
from torch.func import functional_call, grad, vmap

from ..clients import MODEL, run_rounds
from ..constraints import (
    ClientMatrix, Generator, Instance, Integer, OneOf, Real, Reals, Rule, Tensor, constrain, every_entry,
)
from ..data import Dataset
from ..models import FlatModel, loss_gradient
from ..partition import split
from ..runtime import rand, randn


def _check_positive(name: str, value: float, hint: str) -> None:
    """``gaussian_sigma``'s checks in its body, which lecture 07 shows (``BUDGET`` checks them first)."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}; {hint}")


# A privacy budget (epsilon, delta) of a query of sensitivity D: gaussian_sigma computes e^epsilon
# and searches sigma in [e^-20 D, e^20 D], so these bounds keep both within floats. A clipping norm
# C: finite where noise sigma C is added, inf (no clipping) where only clipping is; a noise
# multiplier sigma; dp_sgd's per-row C or sigma as a (n,) tensor.
BUDGET = dict(sensitivity=Real(ge=1e-15, le=1e15), epsilon=Real(ge=1e-6, le=700), delta=Real(gt=0, lt=1))
CLIP, ANY_CLIP, SIGMA = Real(gt=0), Real(gt=0, infinite=True), Real(ge=0)
METHODS = ("ghost", "vmap")
# one model row (d,) and a batch: inputs (B, ...), integer labels (B,)
SAMPLES = dict(model=MODEL, row=Tensor(1), x=Tensor(), y=Tensor(1, floating=False))
TRAINING = dict(data=Instance(Dataset), model=MODEL)


# --- mechanisms ------------------------------------------------------------------------------
@constrain(value=Tensor(), sensitivity=Real(gt=0), epsilon=Real(gt=0), gen=Generator())
def laplace_mechanism(value: torch.Tensor, *, sensitivity: float, epsilon: float, gen: torch.Generator) -> torch.Tensor:
    """value + Laplace(0, sensitivity / epsilon) noise per coordinate: epsilon-DP for L1 sensitivity
    ``sensitivity`` (Dwork, McSherry, Nissim, Smith 2006). ``value`` has any shape; a number gives a 0-d tensor.

    Raises:
        ValueError: if sensitivity or epsilon is <= 0.
    """
    u = rand(value.numel(), gen=gen, device=value.device).view_as(value) - 0.5  # uniform in [-1/2, 1/2)
    return value - sensitivity / epsilon * torch.sign(u) * torch.log1p(-2 * u.abs())


@constrain(**BUDGET)
def gaussian_sigma(*, sensitivity: float, epsilon: float, delta: float) -> float:
    """The smallest noise std of an (epsilon, delta)-DP Gaussian mechanism (analytic Gaussian).

    Balle & Wang 2018, Theorem 8: N(0, s^2) noise on an L2-sensitivity-D query is (eps, delta)-DP
    iff Phi(D/(2s) - eps s/D) - e^eps Phi(-D/(2s) - eps s/D) <= delta; solved by root finding.
    (The classical sqrt(2 ln(1.25/delta)) D / eps of Dwork & Roth 2014 holds only for eps < 1.)

    Raises:
        ValueError: for epsilon <= 0, sensitivity <= 0 or delta outside (0, 1).
    """
    _check_positive("epsilon", epsilon, "pass the privacy budget, e.g. 1.0")
    _check_positive("sensitivity", sensitivity, "pass the L2 sensitivity of the query")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}; pass e.g. 1e-5")

    def excess(log_s: float) -> float:
        s = math.exp(log_s)
        a, b = sensitivity / (2 * s), epsilon * s / sensitivity
        return stats.norm.cdf(a - b) - math.exp(epsilon) * stats.norm.cdf(-a - b) - delta

    return math.exp(optimize.brentq(excess, math.log(sensitivity) - 20, math.log(sensitivity) + 20, xtol=1e-12))


@constrain(value=Tensor(), **BUDGET, gen=Generator())
def gaussian_mechanism(
    value: torch.Tensor, *, sensitivity: float, epsilon: float, delta: float, gen: torch.Generator
) -> torch.Tensor:
    """The Gaussian mechanism: M(D) = f(D) + N(0, sigma^2 I), (epsilon, delta)-DP (Dwork & Roth 2014,
    doi:10.1561/0400000042, Sec. 3.5.3).

    sigma is the smallest that suffices for a query of L2 sensitivity D (``gaussian_sigma``:
    Balle & Wang 2018, Theorem 8).

    Args:
        value: the query's answer f(D), any shape (a number gives a 0-d tensor); sensitivity: its L2 sensitivity D > 0.
        epsilon, delta: the privacy budget; gen: CPU generator of the noise.

    Returns:
        value plus independent noise N(0, sigma^2) on every coordinate, same shape.

    Raises:
        ValueError: for epsilon <= 0, sensitivity <= 0 or delta outside (0, 1).
    """
    sigma = gaussian_sigma(sensitivity=sensitivity, epsilon=epsilon, delta=delta)
    return value + sigma * randn(value.numel(), gen=gen, device=value.device).view_as(value)


# --- clipping --------------------------------------------------------------------------------
@constrain(G=Tensor(2), clip=ANY_CLIP)
def clip_rows(G: torch.Tensor, clip: float) -> torch.Tensor:
    """Each row g_i scaled to g_i / max(1, ||g_i|| / C) (Abadi et al. 2016, Algorithm 1, step "clip").

    Args:
        G: (B, d) per-sample gradients (or (n, d) client updates).
        clip: the norm bound C > 0.

    Returns:
        (B, d), every row of norm <= C; G is not modified.

    Raises:
        ValueError: if clip <= 0 or G is not 2-D.
    """
    return G * clip_factors(G.norm(dim=1), clip).unsqueeze(1)


def clip_factors(norms: torch.Tensor, clip: float) -> torch.Tensor:
    """min(1, C / ||g_i||) for each norm (B,): exactly 1 where ||g_i|| <= C (torch computes C / x
    as C * (1 / x), which can round C / C below 1), a zero gradient included."""
    return torch.where(norms > clip, clip / norms, 1.0)


# --- per-sample gradients ---------------------------------------------------------------------
@constrain(**SAMPLES)
def per_sample_gradients(model: FlatModel, row: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The gradient of each sample's loss at ``row``: (B, d), via vmap(grad(functional_call)).

    Args:
        row: (d,) parameters; x: (B, ...) inputs; y: (B,) integer labels.
    """
    params = {k: v[0] for k, v in model.unflatten(row.unsqueeze(0)).items()}

    def loss(p, xi, yi):
        return F.cross_entropy(functional_call(model.module, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([grads[name].flatten(1) for name in model.names], dim=1)


def _as_rows(value, n: int, like: torch.Tensor, name: str) -> torch.Tensor:
    """A float or (n,) tensor as an (n,) tensor on ``like``'s device."""
    t = torch.as_tensor(value, dtype=like.dtype).to(like.device).expand(n) if torch.as_tensor(value).dim() == 0 \
        else torch.as_tensor(value, dtype=like.dtype).to(like.device)
    if t.shape != (n,):
        raise ValueError(f"{name} must be a float or have shape ({n},), got shape {tuple(t.shape)}")
    return t


@constrain(model=MODEL, X=ClientMatrix(), x=Tensor(), y=Tensor(2, floating=False), clip=ANY_CLIP | Tensor(1),
           weights=Tensor(2) | None)  # fmt: skip
@torch.no_grad()
def ghost_clipped_sum(
    model: FlatModel, X: torch.Tensor, x: torch.Tensor, y: torch.Tensor, clip, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of a client matrix: sum_i w_i clip_C(grad l_i), without per-sample gradients.

    1. forward, keeping each linear layer's input a_i (n, B, in);
    2. backward of the summed per-sample losses, keeping each linear layer's output gradient g_i (n, B, out);
    3. per-sample norms: ||grad l_i||^2 = sum over layers ||g_i||^2 (||a_i||^2 + 1)  (weight and bias);
    4. factors c_i = w_i min(1, C / ||grad l_i||); layer gradients sum_i c_i g_i a_i^T and sum_i c_i g_i.
    An MLP sample's layer gradients g_i a_i^T do not depend on the other samples, so step 4
    reuses step 2's g_i instead of the second backward pass of Li et al. 2022's ghost
    clipping (the norm identity is Lee & Kifer 2021, Sec. 4; Goodfellow 2015).

    Args:
        model: an nn.Sequential of Flatten/Linear/ReLU/Tanh/Sigmoid.
        X: (n, d) one model per row; x: (n, B, ...) inputs; y: (n, B) integer labels.
        clip: C > 0, a float or (n,) per row (inf: no clipping).
        weights: (n, B) sample weights, e.g. Poisson-sampling indicators (default all 1).

    Returns:
        ((n, d) clipped gradient sums, (n, B) per-sample gradient norms).

    Raises:
        ValueError: for C <= 0 or a module the ghost path does not support.
    """
    n = y.shape[0]
    clip = _as_rows(clip, n, X, "clip")
    if not (clip > 0).all():
        raise ValueError(f"clip must be > 0, got {clip.tolist()}; pass the clipping norm C, e.g. 1.0")
    # steps 1-2: each sample's d(loss_i)/d(logits_i), not averaged over the batch
    saved = model.linear_backprop(X, x, lambda logits: loss_gradient(logits, y, mean=False))
    norms_sq = sum(  # step 3, (n, B)
        torch.linalg.vector_norm(d, dim=-1).square() * (torch.linalg.vector_norm(inp, dim=-1).square() + 1)
        for _, inp, d in saved
    )
    norms = norms_sq.sqrt()
    c = clip_factors(norms, clip.unsqueeze(1))  # step 4, (n, B)
    if weights is not None:
        c = c * weights
    G = torch.empty_like(X)  # every entry is a linear layer's weight or bias (the stack has no others)
    grads = model.unflatten(G)
    for name, inp, d in saved:  # copied in: bmm's out= into G's strided views (n > 1) gives other bits
        cd = d * c.unsqueeze(-1)  # (n, B, out)
        grads[f"{name}.weight"].copy_(torch.bmm(cd.transpose(1, 2), inp))  # (n, out, in)
        grads[f"{name}.bias"].copy_(cd.sum(1))
    return G, norms


@constrain(**SAMPLES, clip=ANY_CLIP, method=OneOf(*METHODS))
def clipped_sum(
    model: FlatModel, row: torch.Tensor, x: torch.Tensor, y: torch.Tensor, clip: float, method: str = "ghost"
) -> torch.Tensor:
    """sum_i clip_C(grad l_i) (d,) for one model row (d,) and a batch x (B, ...), y (B,).

    ``method``: "ghost" (``ghost_clipped_sum``, MLPs) or "vmap" (``per_sample_gradients``, any module).
    """
    if method == "ghost":
        return ghost_clipped_sum.__wrapped__(model, row.unsqueeze(0), x.unsqueeze(0), y.unsqueeze(0), clip)[0][0]
    return clip_rows.__wrapped__(per_sample_gradients.__wrapped__(model, row, x, y), clip).sum(0)


@constrain(**SAMPLES, clip=CLIP, sigma=SIGMA, expected_batch=Real(gt=0), gen=Generator(), method=OneOf(*METHODS))
def dp_sgd_gradient(
    model: FlatModel, row: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *,
    clip: float, sigma: float, expected_batch: float, gen: torch.Generator, method: str = "ghost",
) -> torch.Tensor:  # fmt: skip
    """The DP-SGD gradient (Abadi et al. 2016, Algorithm 1): (sum_i clip_C(g_i) + N(0, sigma^2 C^2 I)) / L.

    L is the expected batch size q N under Poisson sampling (the sum's sensitivity is C
    whatever the batch's realized size), as in Opacus.

    Raises:
        ValueError: if clip <= 0, sigma < 0 or expected_batch <= 0.
    """
    total = clipped_sum.__wrapped__(model, row, x, y, clip, method)
    noise = randn(model.dim, gen=gen, device=row.device)
    return (total + sigma * clip * noise) / expected_batch


@constrain(Rule("X", lambda model, X, y: tuple(X.shape) == (len(y), model.dim),
                lambda model, X, y: f"X must have shape ({len(y)}, {model.dim}), one row per data set in y, "
                                    f"got {tuple(X.shape)}"),
           every_entry("sigma", lambda v: v >= 0, ">= 0"), every_entry("clip", lambda v: v > 0, "> 0"),
           model=MODEL, X=ClientMatrix(), x=Tensor(), y=Tensor(2, floating=False), steps=Integer(min=0),
           lr=Real(ge=0), q=Real(gt=0, le=1), clip=ANY_CLIP | Tensor(1), sigma=SIGMA | Tensor(1, finite=True),
           gen=Generator())  # fmt: skip
def dp_sgd(
    model: FlatModel, X: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, steps: int, lr: float, q: float,
    clip, sigma, gen: torch.Generator,
) -> torch.Tensor:  # fmt: skip
    """Train n models at once by DP-SGD with Poisson sampling, each on its own data; returns (n, d).

    Each step, for every row at once (Abadi et al. 2016, arXiv:1607.00133, Algorithm 1):
        1. sample each example with probability q (Poisson sampling);
        2. clip each sampled example's gradient to norm C (``ghost_clipped_sum``);
        3. add N(0, sigma^2 C^2 I) to the sum; 4. divide by the expected batch size q N;
        5. X <- X - lr * gradient.
    A row with clip=inf and sigma=0 is the non-private baseline (SGD on the same batches).
    Privacy of a row: ``accountant.epsilon(q=q, sigma=sigma, steps=steps, delta=...)``.

    Args:
        X: (n, d) initial models; x: (n, N, ...) each row's training inputs; y: (n, N).
        clip, sigma: floats or (n,) tensors, per row.

    Raises:
        ValueError: for q outside (0, 1], sigma < 0, clip <= 0 or shapes that disagree.
    """
    n, size = y.shape
    sigma = _as_rows(sigma, n, X, "sigma")
    clip = _as_rows(clip, n, X, "clip")
    std = torch.where(sigma > 0, sigma * clip, torch.zeros_like(sigma)).unsqueeze(1)  # (n, 1)
    for _ in range(steps):
        take = (rand(n, size, gen=gen, device=X.device) < q).to(X.dtype)  # 1.
        total, _ = ghost_clipped_sum.__wrapped__(model, X, x, y, clip, take)  # 2.
        noise = std * randn(n, model.dim, gen=gen, device=X.device)  # 3.
        X = X - lr * (total + noise) / (q * size)  # 4., 5.
    return X


@constrain(clip=CLIP, sigma=SIGMA, gen=Generator())
def dp_fedavg_aggregate(*, clip: float, sigma: float, gen: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """A server step for ``run_rounds(aggregate=...)``: client-level DP (McMahan et al. 2018, DP-FedAvg).

    U (m, d) -> (sum_i clip_C(U_i) + N(0, sigma^2 C^2 I)) / m: each client's whole update is
    clipped to C, so one client changes the sum by at most C.

    Raises:
        ValueError: if clip <= 0 or sigma < 0.
    """

    def aggregate(U: torch.Tensor) -> torch.Tensor:
        total = clip_rows.__wrapped__(U, clip).sum(0)  # (d,): the engine checked U's shape
        return (total + sigma * clip * randn(U.shape[1], gen=gen, device=U.device)) / len(U)

    return aggregate


@constrain(**TRAINING, sigmas=Reals(ge=0), clip=CLIP, n_clients=Integer(min=1), rounds=Integer(min=1),
           local_steps=Integer(min=0), lr=Real(ge=0), batch_size=Integer(min=1), gen=Generator())  # fmt: skip
def dp_fedavg_accuracy(
    data, model: FlatModel, *, sigmas: list[float], clip: float, n_clients: int, rounds: int, local_steps: int,
    lr: float, batch_size: int, gen: torch.Generator,
) -> dict[float, float]:  # fmt: skip
    """Accuracy of DP-FedAvg (``dp_fedavg_aggregate``) after ``rounds`` rounds at each noise multiplier.

    Every run starts from a copy of ``gen``'s state, which draws the iid split into
    ``n_clients`` clients, the initial model, the minibatches and the noise; the noise is drawn
    also at sigma = 0, so the runs share the split, the model and the batches, and differ by
    the noise alone (paired runs: their differences do not include the seed's luck). All
    clients take part in every round.

    Args:
        data: a classification data set; model: the client model.
        sigmas: noise multipliers >= 0 (0: FedAvg with client-level clipping only).
        clip, n_clients, rounds, local_steps, lr, batch_size: as in ``dp_fedavg_aggregate``,
            ``mllib.split`` and ``mllib.run_rounds``.
        gen: CPU generator; it is not advanced.

    Returns:
        {sigma: final accuracy (mean client accuracy, weighted by client size)}.

    Raises:
        ValueError: for no sigmas, a sigma < 0 or clip <= 0.
    """
    accuracy = {}
    for sigma in sigmas:
        run_gen = torch.Generator().set_state(gen.get_state())
        clients = split(data, n_clients, "iid", gen=run_gen)
        history = run_rounds(model, clients, rounds=rounds, local_steps=local_steps, lr=lr, batch_size=batch_size,
                             gen=run_gen, eval_every=rounds,
                             aggregate=dp_fedavg_aggregate(clip=clip, sigma=sigma, gen=run_gen))  # fmt: skip
        accuracy[sigma] = history.accuracy[-1]
    return accuracy


@constrain(Rule("noise", lambda G, noise: noise.shape == (G.shape[1],),
                "noise must have shape ({G.shape[1]},), one draw per column of G, got {noise.shape}"),
           G=Tensor(2), clip=CLIP, sigma=SIGMA, noise=Tensor(1))  # fmt: skip
def noisy_clipped_sum(G: torch.Tensor, clip: float, sigma: float, noise: torch.Tensor) -> torch.Tensor:
    """sum_i clip_C(g_i) + sigma C noise: DP-SGD's privatized sum (Abadi et al. 2016, Algorithm 1).

    Args:
        G: (B, d) per-sample gradients; clip: C > 0; sigma: noise multiplier >= 0;
        noise: (d,) standard normal draws.

    Returns:
        (d,) the noisy sum; divide by the (expected) batch size for the gradient.
    """
    return clip_rows.__wrapped__(G, clip).sum(0) + sigma * clip * noise


@constrain(**TRAINING, epsilons=Reals(gt=0), steps=Integer(min=1), lr=Real(ge=0), q=Real(gt=0, le=1), clip=CLIP,
           delta=Real(gt=0, lt=1), gen=Generator(), seeds=Integer(min=1))  # fmt: skip
def privacy_utility(
    data, model: FlatModel, *, epsilons: list[float], steps: int, lr: float, q: float, clip: float,
    delta: float, gen: torch.Generator, seeds: int = 1,
) -> tuple[list[float], torch.Tensor]:  # fmt: skip
    """Test accuracy of DP-SGD on the whole training set at each epsilon, and without DP (first).

    Each seed draws one initial model, from which every configuration starts (paired runs);
    each (seed, configuration) row then draws its own Poisson batches and noise. All
    seeds x (1 + len(epsilons)) models train at once as the rows of one client matrix
    (``dp_sgd``); sigma for each epsilon from ``accountant.calibrate_sigma``.

    Args:
        data: a classification data set; model: an MLP (``ghost_clipped_sum``).
        epsilons: privacy budgets > 0, at ``delta``, for ``steps`` steps at Poisson rate ``q``.
        steps, lr, q, clip: DP-SGD's (``dp_sgd``); the row without DP is not clipped.
        gen: CPU generator: the initial models, then every row's batches and noise.
        seeds: independent runs >= 1.

    Returns:
        (sigmas with 0.0 first, (1 + len(epsilons), seeds) test accuracies).

    Raises:
        ValueError: for no epsilons, an epsilon <= 0 or seeds < 1.
    """
    from .accountant import calibrate_sigma

    sigmas = [0.0] + [calibrate_sigma(target_epsilon=e, delta=delta, q=q, steps=steps) for e in epsilons]
    configs, device = len(sigmas), data.x_train.device
    n = seeds * configs  # row r: seed r // configs, configuration r % configs
    X0 = torch.stack([model.init(gen, device) for _ in range(seeds)]).repeat_interleave(configs, 0)  # (n, d)
    x, y = data.x_train.expand(n, *data.x_train.shape), data.y_train.expand(n, -1)
    clips = torch.tensor([float("inf")] + [clip] * len(epsilons)).repeat(seeds)
    X = dp_sgd(model, X0, x, y, steps=steps, lr=lr, q=q, clip=clips, sigma=torch.tensor(sigmas).repeat(seeds), gen=gen)
    accuracy = model.accuracy(X, data.x_test.expand(n, *data.x_test.shape), data.y_test.expand(n, -1))
    return sigmas, accuracy.reshape(seeds, configs).T
