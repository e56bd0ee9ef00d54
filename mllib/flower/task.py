"""What the Flower server, the Flower clients and the in-process simulation share.

``Settings`` is the run configuration (``[tool.flwr.app.config]`` and ``flwr run -c``).
``federation`` builds the same digits split on every machine from the seed, so each
SuperNode keeps its own partition without any data travelling. Every client draws its
minibatches from its own generator (``client_generators``): a SuperNode owns row i's
generator, and ``simulate`` hands the simulation the same n generators, which is what
makes a Flower run and the simulation give the same model.

A run is one ``engine.Federated`` (``mllib.engine``) in both places: ``server_parts`` (select
everyone, the weights, ``aggregator``, the server step) are the same objects on Flower's server
and in ``simulate``; the local part is ``mllib.LocalSGD`` (SCAFFOLD: ``federated.Scaffold``'s
update), run by each SuperNode on its row or by ``simulate`` on all rows at once, followed by
the same ``message_transforms`` (DP clipping, a Byzantine client's attack).
"""
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

import mllib
from mllib import engine, federated, privacy, robust
from mllib.clients import CLIENTS, MODEL
from mllib.constraints import Generator, Instance, Integer, OneOf, Real, Rule, constrain
from mllib.personalized import restrict

ALGORITHMS = ("fedavg", "scaffold", "dp-fedavg")
AGGREGATORS = ("mean", "median", "trimmed mean", "krum", "geometric median")
# Roles in the seed of a generator: one stream per purpose, per client.
BATCHES, ATTACK, SERVER_NOISE = 0, 1, 2


# the constraints of FlowerSettings' fields
TRAINING_CONSTRAINTS = dict(rounds=Integer(min=1), clients=Integer(min=1), local_steps=Integer(min=1), lr=Real(gt=0),
                            batch_size=Integer(min=1), seed=Integer(min=0), partition=OneOf("iid", "dirichlet"),
                            alpha=Real(gt=0))


@constrain(**TRAINING_CONSTRAINTS)
@dataclass(frozen=True)
class FlowerSettings:
    """Settings read from and written to Flower's run config, whose keys use dashes
    (``local-steps``): the training both ``Settings`` and ``secaggplus.SecAggPlusSettings`` run."""

    rounds: int = 3
    clients: int = 4
    local_steps: int = 20
    lr: float = 0.5
    batch_size: int = 32
    seed: int = 0
    partition: str = "iid"
    alpha: float = 0.5

    @classmethod
    def from_config(cls, config: Mapping):
        """From Flower's run config (``[tool.flwr.app.config]``, ``flwr run -c``); unknown keys raise."""
        names = {f.name for f in fields(cls)}
        values = {key.replace("-", "_"): value for key, value in config.items()}
        if unknown := set(values) - names:
            raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(names)}")
        return cls(**values)

    def to_config(self) -> str:
        """The settings as ``flwr run --run-config`` reads them."""
        return flower_config({key.replace("_", "-"): value for key, value in asdict(self).items()})


@constrain(Rule("aggregator", lambda algorithm, aggregator: aggregator == "mean" or algorithm == "fedavg",
                "a robust aggregator replaces FedAvg's mean; algorithm={algorithm!r} keeps its own"),
           Rule("byzantine", lambda byzantine, clients: byzantine < clients,
                "byzantine must be in [0, clients), got {byzantine} for clients={clients}"),
           **TRAINING_CONSTRAINTS, algorithm=OneOf(*ALGORITHMS), aggregator=OneOf(*AGGREGATORS), byzantine=Integer(min=0), clip=Real(gt=0),
           noise=Real(gt=0), delta=Real(gt=0, lt=1), timeout=Real(gt=0), output=Instance(str))  # fmt: skip
@dataclass(frozen=True)
class Settings(FlowerSettings):
    """One federated run on the digits (an MLP 64-64-10), FedAvg by default.

    Attributes:
        rounds, clients: rounds, and clients (SuperNodes) that all take part in each one.
        local_steps, lr, batch_size: each client's local SGD.
        seed: seeds the split, the initial model and every generator.
        partition, alpha: "iid" or "dirichlet" (with concentration alpha).
        algorithm: "fedavg", "scaffold" (option II control variates) or "dp-fedavg"
            (client-level clipping to ``clip`` and Gaussian noise ``noise`` * clip).
        aggregator: FedAvg's server rule: "mean" (weighted by client size) or a robust
            rule of ``mllib.robust`` expecting ``byzantine`` Byzantine clients.
        delta: the DP delta the accountant reports epsilon at.
        timeout: seconds the server waits for the SuperNodes each round.
        output: where the server saves the final model and accuracies (.npz), or "".
    """

    algorithm: str = "fedavg"
    aggregator: str = "mean"
    byzantine: int = 0
    clip: float = 1.0
    noise: float = 1.0
    delta: float = 1e-5
    timeout: float = 60.0
    output: str = ""


SETTINGS = Instance(Settings)
ATTACK_NAME = OneOf(*robust.ATTACKS)  # lecture 05's attacks, "none" included
PARTITION = dict(settings=SETTINGS, partition=Integer(min=0))
OF_THE_CLIENTS = Rule("partition", lambda settings, partition: partition < settings.clients,
                      "partition must be in [0, {settings.clients}), got {partition}")


@constrain(values=Instance(Mapping, description="a dict key -> value"))
def flower_config(values: Mapping) -> str:
    """``key=value`` pairs separated by spaces, strings quoted: Flower's --run-config and --node-config."""
    return " ".join(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}" for key, value in values.items())


@constrain(seed=Integer(min=0), role=Integer(min=0), index=Integer(min=0))
def derived_generator(seed: int, role: int, index: int = 0) -> torch.Generator:
    """A CPU generator for one purpose of one party, independent of all others (NumPy's SeedSequence)."""
    return mllib.generator(int(np.random.SeedSequence([seed, role, index]).generate_state(1)[0]))


@constrain(OF_THE_CLIENTS, **PARTITION)
def batch_generator(settings: Settings, partition: int) -> torch.Generator:
    """Client ``partition``'s minibatch generator, on its SuperNode and in the simulation alike."""
    return derived_generator(settings.seed, BATCHES, partition)


@constrain(settings=SETTINGS)
def client_generators(settings: Settings) -> list[torch.Generator]:
    """Every client's minibatch generator (``batch_generator``), in partition order."""
    return [batch_generator(settings, i) for i in range(settings.clients)]


@constrain(settings=SETTINGS)
def federation(settings: Settings) -> tuple[mllib.FlatModel, mllib.Clients]:
    """The model and the split of the digits into ``settings.clients`` clients, the same on every machine."""
    gen = mllib.generator(settings.seed)
    data = mllib.load("digits", gen=gen)
    clients = mllib.split(data, settings.clients, settings.partition, alpha=settings.alpha, gen=gen)
    return mllib.FlatModel(mllib.mlp(data.n_features, data.n_classes, hidden=(64,))), clients


@constrain(OF_THE_CLIENTS, **PARTITION)
def client_share(settings: Settings, partition: int) -> tuple[mllib.FlatModel, mllib.Clients]:
    """The model and the one client a SuperNode holds (its node config's partition-id)."""
    model, clients = federation(settings)
    return model, restrict(clients, [partition])


@constrain(model=MODEL, settings=SETTINGS)
def initial_model(model: mllib.FlatModel, settings: Settings) -> torch.Tensor:
    """The server's model before round 1, drawn from the seed (the same on every machine)."""
    return model.init(mllib.generator(settings.seed))


@constrain(settings=SETTINGS)
def aggregator(settings: Settings) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The server's aggregate, part 4 of ``engine.Federated``: (U (k, d), p (k,)) -> (d,).

    FedAvg and SCAFFOLD: the engine's ``weighted_mean``; a robust rule of ``mllib.robust``
    (it ignores p); DP-FedAvg: ``privacy.dp_fedavg_aggregate`` (noise from the server's generator).
    """
    if settings.algorithm == "dp-fedavg":
        dp = privacy.dp_fedavg_aggregate(clip=settings.clip, sigma=settings.noise,
                                         gen=derived_generator(settings.seed, SERVER_NOISE))  # fmt: skip
        return lambda U, p: dp(U)
    if settings.aggregator == "mean":
        return engine.weighted_mean
    rule = robust.make(settings.aggregator, settings.byzantine)
    return lambda U, p: rule(U)


@constrain(settings=SETTINGS, clients=CLIENTS)
def server_parts(settings: Settings, clients: mllib.Clients) -> dict:
    """The server's parts of ``engine.Federated``, the same objects on Flower's server and in ``simulate``.

    Returns:
        {"select": ``engine.everyone(n)``: every client in every round; "weights": (n,) the
        clients' sizes (as ``mllib.run_rounds``), SCAFFOLD: their shares p_i (as
        ``federated.run``); "aggregate": ``aggregator(settings)``; "server_step": x <- x + v
        (``engine.move(1.0)``)}.
    """
    weights = clients.weights if settings.algorithm == "scaffold" else clients.sizes
    return {"select": engine.everyone(clients.n), "weights": weights.to(clients.x.device),
            "aggregate": aggregator(settings), "server_step": engine.move(1.0)}  # fmt: skip


@constrain(settings=SETTINGS, attack=ATTACK_NAME, gen=Generator())
def message_transforms(settings: Settings, attack: str, gen: torch.Generator) -> list:
    """What the clients do to their updates before sending them, part 3 of ``engine.Federated``:
    DP-FedAvg's client-level clipping to norm C (``privacy.clip_rows``), then, with ``attack``,
    lecture 05's attack on the last row (drawing from ``gen``). Each (k, d) -> (k, d)."""
    transforms = []
    if settings.algorithm == "dp-fedavg":
        transforms.append(lambda U: privacy.clip_rows.__wrapped__(U, settings.clip))  # norm <= C; Settings checked clip
    if attack != "none":
        transforms.append(attacker(attack, gen))
    return transforms


@constrain(attack=ATTACK_NAME, gen=Generator())
def attacker(attack: str, gen: torch.Generator):
    """A Byzantine client's attack from lecture 05, a local one (the node sees no other
    client's update): U (k, d) -> U with its last row replaced."""
    return robust.make_attack(attack, 1, gen=gen)


@constrain(OF_THE_CLIENTS, **PARTITION)
def attack_generator(settings: Settings, partition: int) -> torch.Generator:
    """Client ``partition``'s generator for its attack, on its SuperNode and in the simulation alike."""
    return derived_generator(settings.seed, ATTACK, partition)


@constrain(settings=SETTINGS, rounds=Integer(min=0))
def epsilon(settings: Settings, rounds: int) -> float:
    """DP-FedAvg's epsilon after ``rounds`` rounds with every client taking part (q = 1)."""
    return privacy.epsilon(q=1.0, sigma=settings.noise, steps=rounds, delta=settings.delta)


@constrain(settings=SETTINGS, attack=ATTACK_NAME)
def simulate(settings: Settings, attack: str = "none") -> torch.Tensor:
    """The run in one process: the final server model (d,).

    The same ``engine.Federated`` as Flower's server (``server_parts``, ``message_transforms``),
    with the local part run here on all rows at once: ``mllib.LocalSGD`` (SCAFFOLD: the update
    of ``federated.Scaffold``), each client drawing from its own generator. With ``attack``, the
    last client is Byzantine.
    """
    model, clients = federation(settings)
    x0, gens = initial_model(model, settings).to(clients.x.device), client_generators(settings)
    if settings.algorithm == "scaffold":
        scaffold = federated.Scaffold(local_steps=settings.local_steps, lr=settings.lr)
        local = federated.ClientUpdate(scaffold, federated.DataProblem(model, clients, settings.batch_size), gens)
    else:
        local = mllib.LocalSGD(model, clients, steps=settings.local_steps, lr=settings.lr,
                               batch_size=settings.batch_size, gen=gens)  # fmt: skip
    transforms = message_transforms(settings, attack, attack_generator(settings, clients.n - 1))
    rounds = engine.Federated(x0, local=local, transforms=transforms, **server_parts(settings, clients))
    return engine.run(rounds, settings.rounds).model
