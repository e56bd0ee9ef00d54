"""Distributed SGD with Byzantine workers: one step per round, worker momentum, experiments.

One step (Karimireddy, He, Jaggi 2021, Algorithm 1 with their worker momentum):
    1. every worker i draws a minibatch and computes g_i = grad f_i(x), all at once (n, d);
    2. worker momentum: m_i <- beta m_i + (1 - beta) g_i (beta = 0: plain SGD, m_i = g_i);
    3. the attack overwrites the last f rows of M from the honest rows;
    4. the server aggregates: v = aggregate(M), and steps x <- x - lr v.
"""
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import torch

from ..clients import evaluate, test_accuracy
from ..models import FlatModel
from ..partition import Clients
from ..runtime import generator
from ..spread import Spread, over_seeds
from . import aggregators as agg
from . import attacks as atk

Transform = Callable[[torch.Tensor], torch.Tensor]


def worker_momentum(M: torch.Tensor, G: torch.Tensor, beta: float) -> torch.Tensor:
    """Worker momentum (Karimireddy, He, Jaggi 2021, Algorithm 1, line 4), for all workers.

    Update: M <- beta M + (1 - beta) G, row by row.

    Args:
        M: (n, d) the workers' momenta.
        G: (n, d) their new stochastic gradients.
        beta: momentum in [0, 1).

    Returns:
        (n, d) the new momenta; M and G are not modified.

    Raises:
        ValueError: for beta outside [0, 1) or shapes that differ.
    """
    if not 0 <= beta < 1:
        raise ValueError(f"worker_momentum: beta must be in [0, 1), got {beta}")
    if M.shape != G.shape:
        raise ValueError(f"worker_momentum: M and G must have the same shape, got {tuple(M.shape)} and {tuple(G.shape)}")
    return beta * M + (1 - beta) * G


class QFFL:
    """q-FFL's server step (Li, Sanjabi, Beirami, Smith 2020, "Fair resource allocation in
    federated learning", Algorithm 1, q-FedSGD), an aggregator that favours high-loss clients.

    Update with F_k the loss of worker k at x and g_k its gradient, L = 1/lr:
        Delta_k = F_k^q g_k,  h_k = q F_k^(q-1) ||g_k||^2 + L F_k^q,
        x <- x - sum_k Delta_k / sum_k h_k,
    returned as v = sum_k Delta_k / (lr sum_k h_k) for the loop's x <- x - lr v.
    q = 0 is the mean. Usage: ``QFFL(model, q, lr).at(x, batch)``.
    """

    def __init__(self, model: FlatModel, q: float, lr: float):
        if q < 0 or lr <= 0:
            raise ValueError(f"QFFL: need q >= 0 and lr > 0, got q={q}, lr={lr}")
        self.model, self.q, self.lr = model, q, lr

    def at(self, x: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> agg.Aggregator:
        xb, yb = batch
        with torch.no_grad():
            F = self.model.loss(x.expand(len(xb), -1), xb, yb).clamp_min(1e-12)  # (n,)

        def aggregate(G: torch.Tensor) -> torch.Tensor:
            Fq = F.pow(self.q)  # (n,)
            h = self.q * F.pow(self.q - 1) * G.pow(2).sum(1) + Fq / self.lr  # (n,)
            return (Fq @ G) / (self.lr * h.sum())

        return aggregate


@dataclass
class Run:
    """One training run: test accuracy over the steps and the final model."""

    steps: list[int]
    accuracy: list[float]
    model: torch.Tensor  # (d,)

    def mean_last(self, k: int) -> float:
        """Mean test accuracy over the last k evaluations: under attack, one step's accuracy
        jumps by tens of points from step to step."""
        if not 1 <= k <= len(self.accuracy):
            raise ValueError(f"mean_last: k must be in [1, {len(self.accuracy)}], got k={k}")
        return sum(self.accuracy[-k:]) / k


def byzantine_sgd(
    model: FlatModel,
    clients: Clients,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    aggregate: agg.Aggregator,
    attack: Transform = lambda U: U,
    momentum: float = 0.0,
    momentum_update: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] = worker_momentum,
    gen: torch.Generator,
    x0: torch.Tensor | None = None,
    eval_every: int | None = None,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Run:
    """Distributed SGD with a robust aggregator, an attack and worker momentum (see module).

    Args:
        model: the architecture; clients: the n workers' data (the last f are Byzantine).
        steps, lr, batch_size: SGD's hyperparameters, one step per round.
        aggregate: (n, d) -> (d,), or an object with ``at(x, batch)`` returning one (Zeno, q-FFL).
        attack: (n, d) -> (n, d), writes the Byzantine rows (``functools.partial`` of an attack).
        momentum: worker momentum beta in [0, 1).
        momentum_update: (M, G, beta) -> new M (default ``worker_momentum``; the lab passes its own).
        gen: CPU generator (initialization and minibatches).
        x0: (d,) the initial model (default: ``model.init(gen)``).
        eval_every: record test accuracy every this many steps (default: only at the end).
        test: (x_test, y_test) (default: the clients' shared test set).

    Returns:
        A ``Run``.
    """
    if steps < 1 or lr <= 0:
        raise ValueError(f"byzantine_sgd: need steps >= 1 and lr > 0, got steps={steps}, lr={lr}")
    device = clients.x.device
    x = model.init(gen, device) if x0 is None else x0.to(device)
    x_test, y_test = (clients.x_test, clients.y_test) if test is None else test
    M = torch.zeros(clients.n, model.dim, device=device)
    run = Run([], [], x)
    for t in range(1, steps + 1):
        xb, yb = clients.batches(batch_size, gen)  # step 1
        G = model.grad(x.expand(clients.n, -1), xb, yb)  # (n, d)
        M = momentum_update(M, G, momentum) if momentum else G  # step 2
        S = attack(M)  # step 3, (n, d)
        aggregator = aggregate.at(x, (xb, yb)) if hasattr(aggregate, "at") else aggregate
        x = x - lr * aggregator(S)  # step 4
        if (eval_every and t % eval_every == 0) or t == steps:
            run.steps.append(t)
            run.accuracy.append(test_accuracy(model, x.nan_to_num(0.0), x_test, y_test))
    run.model = x
    return run


ATTACKS = ("none", "sign flip", "label flip", "noise", "NaN", "huge", "IPM", "ALIE")


def make_attack(name: str, f: int, *, gen: torch.Generator | None = None, sigma: float = 10.0,
                epsilon: float = 0.1) -> Transform:  # fmt: skip
    """A transform (n, d) -> (n, d) by name, for f Byzantine rows (see ``ATTACKS``).

    "label flip" is the identity here: flip the Byzantine clients' data with
    ``attacks.label_flip`` as well (``attack_grid`` does both).
    """
    table = {
        "none": atk.no_attack, "sign flip": atk.sign_flip, "label flip": atk.no_attack,
        "noise": partial(atk.gaussian, sigma=sigma, gen=gen if gen is not None else generator(0)),
        "NaN": partial(atk.constant, value=float("nan")), "huge": partial(atk.constant, value=1e30),
        "IPM": partial(atk.inner_product, epsilon=epsilon), "ALIE": atk.alie,
    }  # fmt: skip
    if name not in table:
        raise ValueError(f"unknown attack name={name!r}; choose one of {ATTACKS}")
    return partial(table[name], f=f) if f else (lambda U: U)


@dataclass
class Grid:
    """Test accuracy for every seed x momentum x attack x aggregator."""

    seeds: list[int]
    momenta: list[float]
    attacks: list[str]
    aggregators: list[str]
    accuracy: torch.Tensor  # (len(seeds), len(momenta), len(attacks), len(aggregators))

    def __getitem__(self, key: tuple[float, str, str]) -> Spread:
        """The accuracies of one momentum x attack x aggregator over the seeds."""
        beta, attack, aggregator = key
        i, j, k = self.momenta.index(beta), self.attacks.index(attack), self.aggregators.index(aggregator)
        return Spread(self.accuracy[:, i, j, k].tolist())

    def spreads(self) -> dict[tuple[float, str, str], Spread]:
        """(momentum, attack, aggregator) -> its ``Spread`` over the seeds, for every cell."""
        return {(b, a, g): self[b, a, g] for b in self.momenta for a in self.attacks for g in self.aggregators}


def attack_grid(
    model: FlatModel,
    clients: Clients,
    *,
    f: int,
    attacks: Sequence[str],
    aggregators: dict[str, Callable[[], agg.Aggregator]],
    momenta: Sequence[float],
    steps: int,
    lr: float,
    batch_size: int,
    seeds: Sequence[int] = (0,),
    sigma: float = 10.0,
    epsilon: float = 0.1,
    average_last: int = 1,
) -> Grid:
    """``byzantine_sgd`` for every seed x momentum x attack x aggregator, the last f workers Byzantine.

    For each aggregator the R = len(seeds) * len(momenta) * len(attacks) runs train at once:
    their gradients are one (R * n, d) client matrix and the aggregator gets the stack
    (R, n, d). The runs of one seed start from the same initialization and see the same
    minibatches (both from ``generator(seed)``), as ``byzantine_sgd`` with
    ``gen=generator(seed)`` does; the noise attack draws from ``generator(seed + 1)``.

    Args:
        attacks: names from ``ATTACKS``.
        aggregators: name -> factory of a fresh aggregator taking (R, n, d) stacks.
        momenta: worker momentum values (0 = none).
        seeds: one run of every cell per seed (initialization, minibatches, noise).
        sigma, epsilon: the noise attack's scale and inner-product manipulation's epsilon.
        average_last: report the mean test accuracy over the last this many steps (under
            attack, one step's accuracy jumps by tens of points from step to step).

    Returns:
        The ``Grid`` of test accuracies (a NaN model scores as the zero model).

    Raises:
        ValueError: for f outside [0, n/2), average_last outside [1, steps], or no seed.
    """
    if not 0 <= f < clients.n / 2:
        raise ValueError(f"attack_grid: f must be in [0, n/2) = [0, {clients.n / 2:g}), got f={f}")
    if not 1 <= average_last <= steps:
        raise ValueError(f"attack_grid: average_last must be in [1, steps={steps}], got {average_last}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("attack_grid: seeds must name at least one seed, got none")
    device = clients.x.device
    runs = [(beta, attack) for beta in momenta for attack in attacks]  # the runs of one seed
    n_seeds, per_seed, n = len(seeds), len(runs), clients.n
    R = n_seeds * per_seed
    beta = torch.tensor([b for b, _ in runs], device=device).repeat(n_seeds).view(R, 1, 1)
    keep = torch.tensor([1 - b for b, _ in runs], device=device).repeat(n_seeds).view(R, 1, 1)
    flip = torch.tensor([a == "label flip" for _, a in runs], device=device).repeat(n_seeds).view(R, 1, 1)
    byzantine = (torch.arange(n) >= n - f).to(device).view(1, n, 1)
    x_test = clients.x_test.expand(R, *clients.x_test.shape)
    y_test = clients.y_test.expand(R, -1)
    acc = torch.zeros(len(aggregators), R)
    for k, factory in enumerate(aggregators.values()):
        aggregate, gens = factory(), [generator(seed) for seed in seeds]
        transforms = [make_attack(a, f, gen=generator(seed + 1), sigma=sigma, epsilon=epsilon)
                      for seed in seeds for _, a in runs]  # fmt: skip
        x = torch.stack([model.init(gen, device) for gen in gens]).repeat_interleave(per_seed, 0)  # (R, d)
        M = torch.zeros(R, n, model.dim, device=device)
        for t in range(1, steps + 1):
            xb, yb = zip(*(clients.batches(batch_size, gen) for gen in gens))  # per seed (n, B, ...), (n, B)
            xb = torch.stack(xb).repeat_interleave(per_seed, 0)  # (R, n, B, ...)
            yb = torch.stack(yb).repeat_interleave(per_seed, 0)  # (R, n, B)
            Y = torch.where(flip & byzantine, clients.n_classes - 1 - yb, yb)  # (R, n, B)
            G = model.grad(x.repeat_interleave(n, 0), xb.flatten(0, 1), Y.flatten(0, 1))  # (R * n, d)
            M = beta * M + keep * G.view(R, n, -1)  # (R, n, d)
            S = torch.stack([attack(M[r]) for r, attack in enumerate(transforms)])  # (R, n, d)
            x = x - lr * aggregate(S)
            if t > steps - average_last:
                acc[k] += model.accuracy(x.nan_to_num(0.0), x_test, y_test).cpu() / average_last
    shape = (n_seeds, len(momenta), len(attacks), len(aggregators))
    return Grid(seeds, list(momenta), list(attacks), list(aggregators), acc.T.reshape(shape))


def with_minority(clients: Clients, minority: torch.Tensor, quarter_turns: int = 2) -> Clients:
    """Clients ``minority`` (indices) see their images, train and test, turned by
    ``quarter_turns`` quarter turns: honest clients from another distribution."""
    minority = torch.as_tensor(minority, dtype=torch.int64).cpu()
    rotations = torch.zeros(clients.n, dtype=torch.int64)
    rotations[minority] = quarter_turns
    owner = torch.repeat_interleave(torch.arange(clients.n), clients.sizes.cpu())
    mine = torch.isin(owner, minority).to(clients.x.device)
    x = torch.where(mine.view(-1, *[1] * (clients.x.dim() - 1)), torch.rot90(clients.x, quarter_turns, dims=(-2, -1)), clients.x)
    return replace(clients, x=x, rotations=rotations)


def group_accuracy(model: FlatModel, x: torch.Tensor, clients: Clients, minority: torch.Tensor) -> tuple[float, float]:
    """Mean test accuracy of the majority and of the minority clients at model x (d,)."""
    acc = evaluate(model, x, clients).cpu()  # (n,)
    mine = torch.zeros(clients.n, dtype=torch.bool)
    mine[torch.as_tensor(minority).cpu()] = True
    return float(acc[~mine].mean()), float(acc[mine].mean())


def group_accuracies(
    model: FlatModel,
    clients: Clients,
    minority: torch.Tensor,
    aggregators: dict[str, Callable[[], agg.Aggregator]],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seeds: Sequence[int],
) -> dict[str, dict[str, Spread]]:
    """Majority and minority test accuracy after ``byzantine_sgd`` without an attack, for
    every aggregator, over seeds: what a robust aggregator costs an honest minority.

    Each run draws its initialization and minibatches from ``generator(seed)``.

    Args:
        model: the architecture.
        clients: the n workers' data, the minority's transformed (``with_minority``).
        minority: (m,) indices of the minority clients.
        aggregators: name -> factory of a fresh aggregator (n, d) -> (d,), or of an object
            with ``at(x, batch)`` (``QFFL``).
        steps, lr, batch_size: SGD's hyperparameters, one step per round.
        seeds: one run per aggregator and seed.

    Returns:
        name -> {"majority": Spread, "minority": Spread} of the mean test accuracies of the
        two groups' clients at the final model (``group_accuracy``).

    Raises:
        ValueError: for no seed, or what ``byzantine_sgd`` raises.
    """

    def run(factory: Callable[[], agg.Aggregator], seed: int) -> dict[str, float]:
        x = byzantine_sgd(model, clients, steps=steps, lr=lr, batch_size=batch_size, aggregate=factory(),
                          gen=generator(seed)).model  # fmt: skip
        majority, minority_accuracy = group_accuracy(model, x, clients, minority)
        return {"majority": majority, "minority": minority_accuracy}

    return {name: over_seeds(partial(run, factory), seeds) for name, factory in aggregators.items()}
