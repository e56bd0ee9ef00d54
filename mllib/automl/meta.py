"""Learning to learn: first-order MAML and Reptile on few-shot sinusoid regression.

A task is y = A sin(x - phi) with A ~ U[0.1, 5], phi ~ U[0, pi], x ~ U[-5, 5] (Finn et
al. 2017, arXiv:1703.03400, Section 5.1). The n tasks of a meta-batch are the rows of a client matrix: every
task adapts its own copy of the initialization theta at once.
"""
import math

import torch

from ..constraints import Generator, Instance, Integer, OneOf, Real, Tensor, constrain
from ..models import FlatModel, mlp
from ..runtime import generator
from .adaptive import Adam

METHODS = ("maml", "reptile", "joint")
MODEL = Instance(FlatModel)
INNER = dict(inner_steps=Integer(min=0), inner_lr=Real(gt=0))
TRAINING = dict(model=MODEL, method=OneOf(*METHODS), iterations=Integer(min=0), meta_batch=Integer(min=1),
                k=Integer(min=1), **INNER, outer_lr=Real(gt=0))  # fmt: skip


@constrain(hidden=Instance(tuple, list, description="a tuple of layer widths"))
def sinusoid_model(hidden: tuple[int, ...] = (40, 40)) -> FlatModel:
    """The regressor of Finn et al. 2017: 1 -> 40 -> 40 -> 1 with ReLU."""
    return FlatModel(mlp(1, 1, hidden=hidden))


def sinusoid_tasks(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n tasks: amplitudes A (n,) in [0.1, 5] and phases phi (n,) in [0, pi]."""
    u = torch.rand(2, n, generator=gen)
    return 0.1 + 4.9 * u[0], math.pi * u[1]


def sinusoid_batch(amplitude, phase, k: int, gen: torch.Generator, device=None):
    """k points of each task: x (n, k, 1) uniform in [-5, 5], y (n, k)."""
    x = 10 * torch.rand(len(amplitude), k, 1, generator=gen) - 5
    y = amplitude[:, None] * torch.sin(x[..., 0] - phase[:, None])
    return x.to(device), y.to(device)


def adapt(model: FlatModel, X: torch.Tensor, x, y, *, steps: int, lr: float) -> torch.Tensor:
    """Each task's ``steps`` gradient steps on its support set: phi <- phi - lr grad L_task(phi).

    X: (n, d) starting rows (the initialization, repeated); x (n, k, 1), y (n, k). Returns (n, d).
    """
    for _ in range(steps):
        X = X - lr * model.grad(X, x, y)
    return X


@constrain(model=MODEL, theta=Tensor((1, 2)), x=Tensor(3), y=Tensor(2), x_query=Tensor(3), y_query=Tensor(2),
           method=OneOf(*METHODS), **INNER)  # fmt: skip
def meta_step(model: FlatModel, theta: torch.Tensor, x, y, x_query, y_query, *, method: str,
              inner_steps: int, inner_lr: float) -> torch.Tensor:  # fmt: skip
    """One meta-gradient (a direction to descend) for the initialization theta (d,).

    - ``"maml"``, first-order MAML (Finn et al. 2017, arXiv:1703.03400, Section 5.2 "first-order approximation"):
      the mean over tasks of grad L_query(phi_i), phi_i = adapted theta.
    - ``"reptile"`` (Nichol, Achiam and Schulman 2018, arXiv:1803.02999, Algorithm 2): theta - mean_i phi_i,
      with phi_i after ``inner_steps`` steps on the task's support and query points together.
    - ``"joint"``: joint pre-training, the mean over tasks of grad L_task(theta).

    Several initializations at once (one per seed): theta (S, d) and S n tasks, the i-th
    block of n tasks for theta[i]; each direction averages over its own block.

    Args:
        theta: (d,), or (S, d) for S initializations.
        x, y: support sets (n, k, 1), (n, k) (S n tasks for S initializations);
            x_query, y_query: query sets of the same tasks.

    Returns:
        The direction, of theta's shape; an outer optimizer steps theta <- theta - lr * direction.

    Raises:
        ValueError: for an unknown method, or a number of tasks that is not a multiple of S.
    """
    thetas = theta.reshape(-1, theta.shape[-1])  # (S, d)
    if len(x) % len(thetas):
        raise ValueError(f"x must hold n tasks per initialization, got {len(x)} tasks for {len(thetas)}")
    rows = thetas.repeat_interleave(len(x) // len(thetas), 0)  # (S n, d) one copy per task

    def per_initialization(t):  # (S n, d) -> theta's shape: the mean over each block of tasks
        return t.view(len(thetas), -1, t.shape[-1]).mean(1).view(theta.shape)

    if method == "maml":
        phi = adapt(model, rows, x, y, steps=inner_steps, lr=inner_lr)
        return per_initialization(model.grad(phi, x_query, y_query))
    if method == "reptile":
        xs, ys = torch.cat([x, x_query], 1), torch.cat([y, y_query], 1)
        phi = adapt(model, rows, xs, ys, steps=inner_steps, lr=inner_lr)
        return theta - per_initialization(phi)
    return per_initialization(model.grad(rows, torch.cat([x, x_query], 1), torch.cat([y, y_query], 1)))  # joint


@constrain(model=MODEL, theta=Tensor(1), x=Tensor(3), y=Tensor(2), **INNER, outer_lr=Real(gt=0))
def reptile_update(model: FlatModel, theta: torch.Tensor, x, y, inner_steps: int, inner_lr: float,
                   outer_lr: float) -> torch.Tensor:  # fmt: skip
    """One Reptile meta-step with plain SGD outer steps (Nichol et al. 2018, arXiv:1803.02999, Algorithm 2, batched).

    phi_i = theta after ``inner_steps`` SGD steps (``inner_lr``) on task i's points;
    theta <- theta + outer_lr * (1/n sum_i phi_i - theta).

    Args:
        theta: (d,) the initialization; x (n, k, 1), y (n, k) the n tasks' points.

    Returns:
        The new theta (d,); theta itself is not modified.
    """
    phi = adapt(model, theta.expand(len(x), -1), x, y, steps=inner_steps, lr=inner_lr)  # (n, d)
    return theta + outer_lr * (phi.mean(0) - theta)


@constrain(**TRAINING, gen=Generator())
def meta_train(model: FlatModel, method: str, *, iterations: int, meta_batch: int, k: int, inner_steps: int,
               inner_lr: float, outer_lr: float, gen: torch.Generator, device=None) -> torch.Tensor:  # fmt: skip
    """Meta-train an initialization with Adam on ``meta_step``'s direction (as the Reptile paper
    suggests, Section 3).

    Per iteration: draw ``meta_batch`` tasks with 2k points each (k support, k query) from
    ``gen``; theta <- Adam step on ``meta_step``'s direction.

    Args:
        model: the regressor (``sinusoid_model``).
        method: one of ``METHODS``.
        iterations, meta_batch, k: meta-iterations >= 0, tasks per iteration >= 1, support points >= 1.
        inner_steps, inner_lr: the adaptation of each task; outer_lr: Adam's learning rate.
        gen: CPU generator of the initialization and the tasks.

    Returns:
        theta (d,).

    Raises:
        ValueError: for iterations < 0, meta_batch < 1, k < 1 or an unknown method.
    """
    return _meta_train(model, method, [gen], iterations=iterations, meta_batch=meta_batch, k=k, inner_steps=inner_steps,
                       inner_lr=inner_lr, outer_lr=outer_lr, device=device)[0]  # fmt: skip


@constrain(**TRAINING, seeds=Instance(range, list, tuple, description="a sequence of seeds, e.g. range(5)"))
def meta_train_seeds(model: FlatModel, method: str, *, seeds, iterations: int, meta_batch: int, k: int,
                     inner_steps: int, inner_lr: float, outer_lr: float, device=None) -> torch.Tensor:  # fmt: skip
    """``meta_train`` once per seed, all seeds trained together (their tasks side by side).

    Seed s draws its initialization and its tasks from ``mllib.generator(s)`` alone: row i is
    ``meta_train(..., gen=mllib.generator(seeds[i]))``, up to the last bits of batched products.

    Args:
        seeds: the seeds (at least one), e.g. ``range(5)``; the other arguments as in ``meta_train``.

    Returns:
        (S, d): one initialization per seed.

    Raises:
        ValueError: for no seed, or the arguments ``meta_train`` rejects.
    """
    gens = [generator(s) for s in seeds]
    if not gens:
        raise ValueError("seeds must name at least one seed, got none")
    return _meta_train(model, method, gens, iterations=iterations, meta_batch=meta_batch, k=k, inner_steps=inner_steps,
                       inner_lr=inner_lr, outer_lr=outer_lr, device=device)  # fmt: skip


def _meta_train(model: FlatModel, method: str, gens: list[torch.Generator], *, iterations: int, meta_batch: int,
                k: int, inner_steps: int, inner_lr: float, outer_lr: float, device=None) -> torch.Tensor:  # fmt: skip
    """The S = len(gens) runs of ``meta_train`` as rows of theta (S, d)."""
    theta = torch.stack([model.init(g, device) for g in gens])  # (S, d)
    outer = Adam(outer_lr)
    for _ in range(iterations):
        batches = [sinusoid_batch(*sinusoid_tasks(meta_batch, g), 2 * k, g, device) for g in gens]
        x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])  # (S n, 2k, 1), (S n, 2k)
        direction = meta_step.__wrapped__(model, theta, x[:, :k], y[:, :k], x[:, k:], y[:, k:], method=method,
                              inner_steps=inner_steps, inner_lr=inner_lr)  # fmt: skip
        theta = outer.step(theta, direction)
    return theta


@torch.no_grad()
@constrain(model=MODEL, theta=Tensor(1), tasks=Integer(min=1), k=Integer(min=1), steps=Integer(min=0), lr=Real(gt=0),
           gen=Generator())  # fmt: skip
def adaptation_curve(model: FlatModel, theta: torch.Tensor, *, tasks: int, k: int, steps: int, lr: float,
                     gen: torch.Generator, device=None) -> torch.Tensor:  # fmt: skip
    """Mean query loss (1/2 squared error, 100 points) on held-out tasks after 0..steps
    adaptation steps from theta on k support points: (steps + 1,)."""
    amp, phase = sinusoid_tasks(tasks, gen)
    x, y = sinusoid_batch(amp, phase, k, gen, device)
    xq, yq = sinusoid_batch(amp, phase, 100, gen, device)
    X = theta.expand(tasks, -1)
    losses = [model.loss(X, xq, yq).mean()]
    for _ in range(steps):
        X = adapt(model, X, x, y, steps=1, lr=lr)
        losses.append(model.loss(X, xq, yq).mean())
    return torch.stack(losses).cpu()
