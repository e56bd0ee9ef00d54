"""Distributed SGD with Byzantine workers on the round engine: worker momentum, the lecture's experiments.

One step is one round of ``engine.Federated`` (Karimireddy, He, Jaggi 2021, arXiv:2012.10333, Algorithm 1 with
their worker momentum):
    1. local: every worker i draws a minibatch and computes g_i = grad f_i(x), all at once (n, d)
       (``WorkerGradients``);
    2. transform: worker momentum m_i <- beta m_i + (1 - beta) g_i (``WorkerMomentum``; beta = 0:
       plain SGD, m_i = g_i);
    3. transform: the attack overwrites the last f rows of M from the honest rows;
    4. aggregate: v = aggregate(M) (an ``Aggregator``), and the server steps x <- x - lr v
       (``engine.descend``).
``attack_grid`` runs R such trainings as one: the same configuration on stacks (R, n, d).
"""
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import torch

from ..clients import CLIENTS, MODEL, evaluate, accuracy_on
from ..constraints import Function, Generator, Indices, Instance, Integer, Integers, Real, Reals, Rule, Tensor, constrain
from ..engine import Federated, History, descend, everyone, run
from ..models import FlatModel
from ..partition import Clients
from ..runtime import generator
from ..spread import Spread, over_seeds
from . import aggregators as agg
from .attacks import ATTACKS, Transform, make_attack, samples_of
from .rules import F, check_f

BETA = Real(ge=0, lt=1)  # worker momentum
SGD = dict(steps=Integer(min=1), lr=Real(gt=0), batch_size=Integer(min=1))
FACTORIES = Instance(dict, description="a dict name -> factory of a fresh aggregator")
SEEDS = Integers(min=0)
MASK = Tensor(3, floating=False, boolean=True, description="a bool tensor of 3 dimensions")


@constrain(Rule("G", lambda M, G: M.shape == G.shape,
                lambda M, G: f"G must have the shape of M, {tuple(M.shape)}, got {tuple(G.shape)}"),
           M=Tensor(), G=Tensor(), beta=BETA)  # fmt: skip
def worker_momentum(M: torch.Tensor, G: torch.Tensor, beta: float) -> torch.Tensor:
    """Worker momentum (Karimireddy, He, Jaggi 2021, arXiv:2012.10333, Algorithm 1, line 4), for all workers.

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
    return beta * M + (1 - beta) * G


class WorkerMomentum:
    """Worker momentum as a message transform of ``engine.Federated``: G (n, d) -> M (n, d).

    Update: M <- beta M + (1 - beta) G (``worker_momentum``), from M = 0.

    Args:
        beta: in [0, 1); or a sequence of R betas, one per run, for stacks G (R, n, d)
            (``attack_grid``): then M <- beta_r M + (1 - beta_r) G per run r.
        update: (M, G, beta) -> the new M, for one beta (default ``worker_momentum``; the lab
            passes its own).

    State: ``M``, the workers' momenta, the shape of G (None before the first call).

    Raises:
        ValueError: for a beta outside [0, 1).
    """

    @constrain(beta=BETA | Reals(ge=0, lt=1), update=Function())
    def __init__(self, beta: float | Sequence[float],
                 update: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] = worker_momentum):  # fmt: skip
        self.per_run = isinstance(beta, tuple)  # the checked beta: a float, or a tuple of floats
        self.beta = list(beta) if self.per_run else beta
        self.update = worker_momentum.__wrapped__ if update is worker_momentum else update  # every round: beta checked once
        # State
        self.M: torch.Tensor | None = None

    def __call__(self, G: torch.Tensor) -> torch.Tensor:
        M = torch.zeros_like(G) if self.M is None else self.M
        if not self.per_run:
            self.M = self.update(M, G, self.beta)
            return self.M
        beta = torch.tensor(self.beta, device=G.device).view(-1, 1, 1)  # (R, 1, 1)
        keep = torch.tensor([1 - b for b in self.beta], device=G.device).view(-1, 1, 1)  # 1 - beta_r, as Python computes it
        self.M = beta * M + keep * G
        return self.M

    def state_dict(self) -> dict:
        return {"beta": self.beta, "M": self.M}


class WorkerGradients:
    """The local part of distributed SGD: every worker's stochastic gradient at the server
    model, (x (d,), S (n,)) -> G (n, d), one minibatch per worker drawn from ``gen``.

    Args:
        model, clients: the architecture and the workers' data.
        batch_size: samples per worker and step.
        gen: CPU generator for the minibatches.
        observe: called with (x, minibatches) before the gradients are computed: the
            aggregator's ``observe`` (Zeno scores at x, q-FFL reads the workers' losses).
    """

    @constrain(model=MODEL, clients=CLIENTS, batch_size=Integer(min=1), gen=Generator(), observe=Function() | None)
    def __init__(self, model: FlatModel, clients: Clients, *, batch_size: int, gen: torch.Generator,
                 observe: Callable | None = None):  # fmt: skip
        self.model, self.clients, self.batch_size, self.gen, self.observe = model, clients, batch_size, gen, observe

    def __call__(self, x: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        xb, yb = self.clients.batches(self.batch_size, self.gen, S)  # (n, B, ...), (n, B)
        if self.observe is not None:
            self.observe(x, (xb, yb))
        return self.model.grad(x.expand(len(S), -1), xb, yb)  # (n, d)


@constrain(model=MODEL, clients=CLIENTS, **SGD, aggregate=Function(), attack=Function(), momentum=BETA,
           momentum_update=Function(), gen=Generator(), x0=Tensor(1) | None, eval_every=Integer(min=1) | None,
           test=Instance(tuple, list, description="a pair (x_test, y_test)") | None)  # fmt: skip
def byzantine_sgd(
    model: FlatModel,
    clients: Clients,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    aggregate: agg.Aggregator | Callable[[torch.Tensor], torch.Tensor],
    attack: Transform = lambda U: U,
    momentum: float = 0.0,
    momentum_update: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] = worker_momentum,
    gen: torch.Generator,
    x0: torch.Tensor | None = None,
    eval_every: int | None = None,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> History:
    """Distributed SGD with a robust aggregator, an attack and worker momentum, on the round
    engine (see the module): ``engine.run`` of an ``engine.Federated`` whose rounds are steps.

    Args:
        model: the architecture; clients: the n workers' data (the last f are Byzantine).
        steps, lr, batch_size: SGD's hyperparameters, one step per round.
        aggregate: an ``Aggregator`` (Zeno and q-FFL observe the model and batches each step),
            or a plain function (n, d) -> (d,) (``Custom``).
        attack: (n, d) -> (n, d), writes the Byzantine rows (``make_attack``, or a
            ``functools.partial`` of an attack).
        momentum: worker momentum beta in [0, 1) (0: none).
        momentum_update: (M, G, beta) -> new M (default ``worker_momentum``; the lab passes its own).
        gen: CPU generator (initialization and minibatches).
        x0: (d,) the initial model (default: ``model.init(gen)``).
        eval_every: record test accuracy every this many steps (default: only at the end).
        test: (x_test, y_test) (default: the clients' shared test set).

    Returns:
        The ``engine.History``: metric "accuracy" (test accuracy, a NaN model scoring as the
        zero model) after the recorded steps ``rounds``; ``model`` the final x (d,).

    Raises:
        ValueError: for steps < 1 or lr <= 0.
    """
    device = clients.x.device
    x = model.init(gen, device) if x0 is None else x0.to(device)
    x_test, y_test = (clients.x_test, clients.y_test) if test is None else test
    aggregator = agg.as_aggregator(aggregate)
    federation = Federated(
        x, select=everyone(clients.n), weights=clients.sizes.to(device),
        local=WorkerGradients(model, clients, batch_size=batch_size, gen=gen, observe=aggregator.observe),  # 1.
        transforms=[*([WorkerMomentum(momentum, momentum_update)] if momentum else []), attack],  # 2., 3.
        aggregate=aggregator, server_step=descend(lr),  # 4.
    )  # fmt: skip
    accuracy = lambda f: accuracy_on(model, f.x.nan_to_num(0.0), x_test, y_test)  # noqa: E731
    return run(federation, steps, metrics={"accuracy": accuracy}, eval_every=eval_every or steps)


@dataclass
class Grid:
    """Test accuracy for every seed x momentum x attack x aggregator, and each aggregator's final
    state (its ``state_dict`` after training, e.g. what centered clipping clipped)."""

    seeds: list[int]
    momenta: list[float]
    attacks: list[str]
    aggregators: list[str]
    accuracy: torch.Tensor  # (len(seeds), len(momenta), len(attacks), len(aggregators))
    f: int = 0  # the last f workers are Byzantine
    states: dict[str, dict] = field(default_factory=dict)  # aggregator name -> its state_dict, runs stacked

    def __getitem__(self, key: tuple[float, str, str]) -> Spread:
        """The accuracies of one momentum x attack x aggregator over the seeds."""
        beta, attack, aggregator = key
        i, j, k = self.momenta.index(beta), self.attacks.index(attack), self.aggregators.index(aggregator)
        return Spread(self.accuracy[:, i, j, k].tolist())

    def clipped(self, key: tuple[float, str, str]) -> dict[str, Spread]:
        """For a ``CenteredClipping`` aggregator: the share of the steps at which it clipped a row,
        averaged over the honest rows and over the Byzantine rows, over the seeds.

        Returns:
            {"honest": Spread, "Byzantine": Spread} (no "Byzantine" for f = 0).

        Raises:
            ValueError: for an aggregator that counted no clipping.
        """
        beta, attack, aggregator = key
        state = self.states.get(aggregator, {})
        if state.get("clipped") is None:
            raise ValueError(f"aggregator {aggregator!r} counted no clipping; only CenteredClipping does")
        share = (state["clipped"].double() / state["calls"]).cpu()  # (R, n), R = seeds x momenta x attacks
        runs = share.view(len(self.seeds), len(self.momenta), len(self.attacks), -1)[
            :, self.momenta.index(beta), self.attacks.index(attack)]  # (seeds, n)  # fmt: skip
        honest = runs.shape[-1] - self.f
        shares = {"honest": Spread(runs[:, :honest].mean(1).tolist())}
        return shares | ({"Byzantine": Spread(runs[:, honest:].mean(1).tolist())} if self.f else {})

    def ran(self, beta: float, aggregator: str) -> bool:
        """Whether ``aggregator`` ran with worker momentum ``beta`` (a joined grid has NaN where it did not)."""
        return not self.accuracy[:, self.momenta.index(beta), :, self.aggregators.index(aggregator)].isnan().all()

    def join(self, other: "Grid") -> "Grid":
        """This grid with ``other``'s aggregators as more columns, for one table: the same seeds,
        attacks and f; a momentum ``other`` did not run is NaN there."""
        if (other.seeds, other.attacks, other.f) != (self.seeds, self.attacks, self.f) or not set(other.momenta) <= set(self.momenta):
            raise ValueError("other must have the same seeds, attacks and f, and momenta among this grid's")
        s, m, a, _ = self.accuracy.shape
        columns = torch.full((s, m, a, len(other.aggregators)), math.nan, dtype=self.accuracy.dtype)
        columns[:, [self.momenta.index(b) for b in other.momenta]] = other.accuracy
        return replace(self, aggregators=[*self.aggregators, *other.aggregators], states=self.states | other.states,
                       accuracy=torch.cat([self.accuracy, columns], dim=-1))  # fmt: skip

    def spreads(self) -> dict[tuple[float, str, str], Spread]:
        """(momentum, attack, aggregator) -> its ``Spread`` over the seeds, for every cell."""
        return {(b, a, g): self[b, a, g] for b in self.momenta for a in self.attacks for g in self.aggregators}


class StackedGradients:
    """The local part of R runs at once: (x (R, d), S (n,)) -> G (R, n, d), every worker's
    stochastic gradient in every run, the label-flipping workers' on flipped labels.

    The runs come in blocks of ``per_seed``, one block per generator in ``gens``: the runs of
    a block see the same minibatches, drawn from their generator.

    Args:
        model, clients, batch_size: as ``WorkerGradients``.
        gens: one CPU generator per block of runs.
        per_seed: runs per block.
        flip: (R, 1, 1) bool, the runs whose Byzantine workers flip their labels.
        byzantine: (1, n, 1) bool, the Byzantine workers.
        observe: called with (x (R, d), (x (R, n, B, ...), y (R, n, B))) before the gradients
            are computed: the aggregator's ``observe`` (Zeno scores each run at its model).
    """

    @constrain(model=MODEL, clients=CLIENTS, batch_size=Integer(min=1),
               gens=Instance(list, tuple, description="a list of torch.Generators, one per block of runs"),
               per_seed=Integer(min=1), flip=MASK, byzantine=MASK, observe=Function() | None)  # fmt: skip
    def __init__(self, model: FlatModel, clients: Clients, *, batch_size: int, gens: Sequence[torch.Generator],
                 per_seed: int, flip: torch.Tensor, byzantine: torch.Tensor, observe: Callable | None = None):  # fmt: skip
        self.model, self.clients, self.batch_size, self.gens, self.per_seed = model, clients, batch_size, gens, per_seed
        self.flipped = flip & byzantine  # (R, n, 1)
        self.observe = observe

    def __call__(self, x: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        R, n = len(x), len(S)
        xb, yb = zip(*(self.clients.batches(self.batch_size, gen, S) for gen in self.gens))  # per seed (n, B, ...), (n, B)
        xb = torch.stack(xb).repeat_interleave(self.per_seed, 0)  # (R, n, B, ...)
        yb = torch.stack(yb).repeat_interleave(self.per_seed, 0)  # (R, n, B)
        Y = torch.where(self.flipped, self.clients.n_classes - 1 - yb, yb)  # (R, n, B)
        if self.observe is not None:
            self.observe(x, (xb, Y))
        G = self.model.grad(x.repeat_interleave(n, 0), xb.flatten(0, 1), Y.flatten(0, 1))  # (R * n, d)
        return G.view(R, n, -1)


class PerRun:
    """A message transform of R runs at once: run r's attack on its matrix, (R, n, d) -> (R, n, d)."""

    @constrain(transforms=Instance(list, tuple, description="a list of transforms, one per run"))
    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, M: torch.Tensor) -> torch.Tensor:
        return torch.stack([transform(M[r]) for r, transform in enumerate(self.transforms)])


@constrain(Rule("attacks", lambda attacks: set(attacks) <= set(ATTACKS),
                lambda attacks: f"attacks must be names from {ATTACKS}, got {list(attacks)}"),
           Rule("average_last", lambda average_last, steps: average_last <= steps,
                "average_last must be in [1, steps={steps}], got {average_last}"),
           model=MODEL, clients=CLIENTS, f=F, attacks=Instance(list, tuple, description="a list of attack names"),
           aggregators=FACTORIES, momenta=Reals(ge=0, lt=1), **SGD, seeds=SEEDS, sigma=Real(ge=0), epsilon=Real(gt=0),
           average_last=Integer(min=1))  # fmt: skip
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

    For each aggregator the R = len(seeds) * len(momenta) * len(attacks) runs train at once,
    as one ``engine.Federated`` on stacks: the server model is (R, d), the workers'
    gradients one (R * n, d) client matrix (``StackedGradients``), worker momentum has one
    beta per run, each run has its attack (``PerRun``) and the aggregator gets the stack
    (R, n, d) (an aggregator that observes, as Zeno, sees the R models and minibatches each
    step). The runs of one seed start from the same initialization and see the same
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
        The ``Grid`` of test accuracies (a NaN model scores as the zero model), with each
        aggregator's final ``state_dict`` (e.g. centered clipping's counts, ``Grid.clipped``).

    Raises:
        ValueError: for f outside [0, n/2), average_last outside [1, steps], or no seed.
    """
    check_f(f, clients.n, "attack_grid")
    seeds = list(seeds)
    device = clients.x.device
    runs = [(beta, attack) for beta in momenta for attack in attacks]  # the runs of one seed
    n_seeds, per_seed, n = len(seeds), len(runs), clients.n
    R = n_seeds * per_seed
    flip = torch.tensor([a == "label flip" for _, a in runs], device=device).repeat(n_seeds).view(R, 1, 1)
    byzantine = (torch.arange(n) >= n - f).to(device).view(1, n, 1)
    x_test = clients.x_test.expand(R, *clients.x_test.shape)
    y_test = clients.y_test.expand(R, -1)
    accuracy = lambda fed: model.accuracy(fed.x.nan_to_num(0.0), x_test, y_test).cpu()  # noqa: E731 (R,)
    acc = torch.zeros(len(aggregators), R)
    states = {}
    for k, (name, factory) in enumerate(aggregators.items()):
        gens = [generator(seed) for seed in seeds]
        attack = PerRun([make_attack(a, f, gen=generator(seed + 1), sigma=sigma, epsilon=epsilon)
                         for seed in seeds for _, a in runs])  # fmt: skip
        x = torch.stack([model.init(gen, device) for gen in gens]).repeat_interleave(per_seed, 0)  # (R, d)
        aggregator = agg.as_aggregator(factory())
        federation = Federated(
            x, select=everyone(n), weights=torch.ones(n, device=device),
            local=StackedGradients(model, clients, batch_size=batch_size, gens=gens, per_seed=per_seed, flip=flip,
                                   byzantine=byzantine, observe=aggregator.observe),
            transforms=[WorkerMomentum([b for _ in seeds for b, _ in runs]), attack],
            aggregate=aggregator, server_step=descend(lr),
        )  # fmt: skip
        if steps > average_last:  # the first steps unrecorded, then the last average_last with their accuracy
            run(federation, steps - average_last)
        for a in run(federation, average_last, metrics={"accuracy": accuracy}).accuracy:
            acc[k] += a / average_last
        states[name] = aggregator.state_dict()
    shape = (n_seeds, len(momenta), len(attacks), len(aggregators))
    return Grid(seeds, list(momenta), list(attacks), list(aggregators), acc.T.reshape(shape), f, states)


@constrain(clients=CLIENTS, minority=Indices(empty=True), quarter_turns=Integer())
def with_minority(clients: Clients, minority: torch.Tensor, quarter_turns: int = 2) -> Clients:
    """Clients ``minority`` (indices) see their images, train and test, turned by
    ``quarter_turns`` quarter turns: honest clients from another distribution.

    Raises:
        ValueError: for an index outside [0, n).
    """
    minority, mine = samples_of(clients, minority, "with_minority", "minority")
    rotations = torch.zeros(clients.n, dtype=torch.int64)
    rotations[minority] = quarter_turns
    x = torch.where(mine.view(-1, *[1] * (clients.x.dim() - 1)), torch.rot90(clients.x, quarter_turns, dims=(-2, -1)), clients.x)
    return replace(clients, x=x, rotations=rotations)


@constrain(model=MODEL, x=Tensor(1), clients=CLIENTS, minority=Indices())
def group_accuracy(model: FlatModel, x: torch.Tensor, clients: Clients, minority: torch.Tensor) -> tuple[float, float]:
    """Mean test accuracy of the majority and of the minority clients at model x (d,)."""
    acc = evaluate(model, x, clients).cpu()  # (n,)
    mine = torch.zeros(clients.n, dtype=torch.bool)
    mine[torch.as_tensor(minority).cpu()] = True
    return float(acc[~mine].mean()), float(acc[mine].mean())


@constrain(model=MODEL, clients=CLIENTS, minority=Indices(), aggregators=FACTORIES, **SGD, seeds=SEEDS)
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
        aggregators: name -> factory of a fresh ``Aggregator`` (``QFFL`` too: it observes
            the workers' losses each step), or of a plain function (n, d) -> (d,).
        steps, lr, batch_size: SGD's hyperparameters, one step per round.
        seeds: one run per aggregator and seed.

    Returns:
        name -> {"majority": Spread, "minority": Spread} of the mean test accuracies of the
        two groups' clients at the final model (``group_accuracy``).

    Raises:
        ValueError: for no seed, or what ``byzantine_sgd`` raises.
    """

    def one(factory: Callable[[], agg.Aggregator], seed: int) -> dict[str, float]:
        x = byzantine_sgd(model, clients, steps=steps, lr=lr, batch_size=batch_size, aggregate=factory(),
                          gen=generator(seed)).model  # fmt: skip
        majority, minority_accuracy = group_accuracy.__wrapped__(model, x, clients, minority)
        return {"majority": majority, "minority": minority_accuracy}

    return {name: over_seeds(partial(one, factory), seeds) for name, factory in aggregators.items()}
