"""Lecture 11: the playground, one simulation on the client matrix that composes the topics.

A round runs a fixed pipeline, each stage taken from its topic's module (nothing re-implemented):

| # | stage | from | what it does to the (n, d) client matrix of updates U |
|---|---|---|---|
| 1 | local steps | ``mllib.local_sgd`` (+ ``robust.WorkerMomentum``) | U = local_sgd(x) - x, then M <- beta M + (1 - beta) U |
| 2 | compression | ``mllib.compression`` (``TopK``, ``QSGD``, ..., ``ErrorFeedback``) | U <- C(U), bits counted |
| 3 | attack | ``mllib.robust.make_attack`` | the last f rows overwritten |
| 4 | aggregation | ``mllib.robust.make``, or gossip ``mllib.decentralized.gossip`` / ``compression.choco_step`` | (n, d) -> (d,), or X <- W (X + U) |
| 5 | DP noise | ``mllib.privacy`` (``dp_fedavg_aggregate``, ``clip_rows``) | clip rows to C, add N(0, (sigma C / n)^2 I) |

The DP noise's guarantee is reported beside it wherever it appears (``dp_epsilon``: the RDP
accountant of ``mllib.privacy`` at the config's delta).

Every run is a configuration of the round engine (``mllib.engine``), recorded in its ``History``.
With a server the round is ``mllib.run_rounds`` (``engine.Federated``; McMahan et al. 2017, FedAvg)
with stages 1-3 as its ``transforms`` and 4-5 as its ``aggregate``; with a topology it is
``engine.Decentralized``, D-PSGD with local steps (Lian et al. 2017): X <- W (X + U)
(``decentralized.Gossip``), and with a compressor the nodes gossip their models with CHOCO-Gossip
(Koloskova et al. 2019): X <- X + U, then one ``compression.choco_step`` (``compression.Choco``:
each node sends C(X - X_hat) to its neighbours). With f = 0, no compression, no momentum and no
noise the server playground *is* ``run_rounds``.
"""
from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from . import compression, decentralized, engine, privacy, robust
from .clients import evaluate, run_rounds
from .constraints import Function, Generator, Instance, Integer, OneOf, Real, Rule, constrain
from .data import Dataset
from .engine import History
from .models import FlatModel, mlp
from .partition import split
from .runtime import generator, randn
from .spread import Spread

PIPELINE = ("local steps", "compression", "attack", "aggregation", "DP noise")
PARTITIONS = ("iid", "dirichlet", "shards")
TOPOLOGIES = ("server", "complete", "ring", "star")
COMPRESSORS = ("none", "top-k 10%", "random-k 10%", "sign", "qsgd 4 levels", "bfloat16")
# CHOCO-Gossip needs a contraction: not the unbiased random-k and QSGD (whose variance exceeds ||x||^2).
GOSSIP_COMPRESSORS = ("none", "top-k 10%", "sign", "bfloat16")
ATTACKS = tuple(a for a in robust.ATTACKS if a != "huge")
AGGREGATORS = ("mean", "median", "trimmed mean", "krum", "geometric median", "centered clipping")


@constrain(partition=OneOf(*PARTITIONS), alpha=Real(gt=0), n_clients=Integer(min=2), topology=OneOf(*TOPOLOGIES),
           local_steps=Integer(min=1), compressor=OneOf(*COMPRESSORS), attack=OneOf(*ATTACKS), f=Integer(min=0),
           aggregator=OneOf(*AGGREGATORS), momentum=Real(ge=0, lt=1), dp_sigma=Real(ge=0), dp_clip=Real(gt=0),
           dp_delta=Real(gt=0, lt=1), choco_gamma=Real(gt=0, le=1), rounds=Integer(min=1), lr=Real(gt=0),
           batch_size=Integer(min=1), hidden=Integer(min=1), seed=Integer(min=0))  # fmt: skip
@dataclass(frozen=True)
class Config:
    """One playground setting (defaults: the lecture's default run).

    Topics: data (partition, alpha, n_clients), server or gossip topology, local steps, compressor
    (with error feedback; on a topology, CHOCO-Gossip with consensus step ``choco_gamma``), attack
    with f Byzantine clients (the last f), aggregator, worker momentum, client-level DP (noise
    multiplier sigma, clip C, reported as (epsilon, dp_delta)-DP). Training: rounds, lr,
    batch_size, hidden, seed. Each option is checked here; how they combine, by ``validate``.
    """

    partition: str = "dirichlet"
    alpha: float = 1.0
    n_clients: int = 10
    topology: str = "server"
    local_steps: int = 5
    compressor: str = "none"
    error_feedback: bool = False
    attack: str = "none"
    f: int = 0
    aggregator: str = "mean"
    momentum: float = 0.0
    dp_sigma: float = 0.0
    dp_clip: float = 1.0
    dp_delta: float = 1e-5
    choco_gamma: float = 0.5
    rounds: int = 30
    lr: float = 0.1
    batch_size: int = 16
    hidden: int = 32
    seed: int = 0


CONFIG = Instance(Config, description="a playground.Config")
RESULTS = Instance(Mapping, description="a dict seed -> History (run_seeds)")
SAME_SEEDS = Rule("others", lambda results, others: list(results) == list(others),
                  lambda results, others: f"results and others must be runs of the same seeds, got {list(results)} and "
                  f"{list(others)}")  # fmt: skip


@constrain(aggregator=OneOf(*AGGREGATORS), n_clients=Integer(min=1))
def max_f(aggregator: str, n_clients: int) -> int:
    """The largest number of Byzantine clients the aggregator's own condition accepts.

    Krum needs n > 2f + 2 (Blanchard et al. 2017); the others f < n/2 (breakdown point 1/2).
    The mean has no such guarantee: one bad row moves it anywhere. The playground still lets it
    face f < n/2 attackers, to show exactly that.
    """
    return robust.rules.max_f(n_clients, "krum" if aggregator == "krum" else "half")


@constrain(config=CONFIG)
def allowed(config: Config) -> dict[str, tuple]:
    """The values each option may take given the others (what the widgets offer)."""
    gossip = config.topology != "server"
    return {
        "partition": PARTITIONS, "topology": TOPOLOGIES, "attack": ATTACKS,
        "compressor": GOSSIP_COMPRESSORS if gossip else COMPRESSORS,
        "aggregator": ("mean",) if gossip else AGGREGATORS,
        "f": tuple(range(max_f.__wrapped__(config.aggregator, config.n_clients) + 1)),  # checked by Config
        # CHOCO's public copies X_hat already keep what compression held back
        "error_feedback": (False,) if gossip or config.compressor == "none" else (False, True),
    }  # fmt: skip


@constrain(config=CONFIG)
def validate(config: Config) -> Config:
    """Check how the options of a ``Config`` combine (each alone is checked by ``Config``); return it.

    Raises:
        ValueError: naming the option, the value received and what to pass.
    """
    c = config
    options = allowed.__wrapped__(c)  # c is checked
    if c.topology != "server":
        if c.aggregator != "mean":
            raise ValueError(f"aggregator={c.aggregator!r} needs a server; with topology={c.topology!r} pass 'mean'")
        if c.compressor not in options["compressor"]:
            raise ValueError(f"compressor={c.compressor!r} is not a contraction, which CHOCO-Gossip needs; with "
                             f"topology={c.topology!r} pass one of {options['compressor']}")  # fmt: skip
        if c.error_feedback:
            raise ValueError("error_feedback=True needs a server (CHOCO-Gossip keeps its own memory); pass False")
        if c.dp_sigma > 0:
            raise ValueError(f"dp_sigma={c.dp_sigma} needs a server (the noise is added to the aggregate); pass 0")
    if not 0 <= c.f <= options["f"][-1]:
        raise ValueError(
            f"f={c.f} Byzantine clients of n_clients={c.n_clients} is more than aggregator={c.aggregator!r} "
            f"tolerates; pass f in [0, {options['f'][-1]}]"
        )
    if c.error_feedback and c.compressor == "none":
        raise ValueError("error_feedback=True needs a compressor; pass compressor='top-k 10%' or error_feedback=False")
    return c


@constrain(name=OneOf(*COMPRESSORS), seed=Integer(min=0))
def make_compressor(name: str, error_feedback: bool = False, seed: int = 0) -> compression.Compressor:
    """A fresh compressor of ``mllib.compression`` by playground name, optionally with error feedback."""
    table = {
        "none": compression.Identity, "top-k 10%": lambda: compression.TopK(fraction=0.1),
        "random-k 10%": lambda: compression.RandomK(fraction=0.1, seed=seed), "sign": compression.ScaledSign,
        "qsgd 4 levels": lambda: compression.QSGD(4, seed=seed), "bfloat16": lambda: compression.Cast(torch.bfloat16),
    }  # fmt: skip
    inner = table[name]()
    return compression.ErrorFeedback(inner) if error_feedback else inner


@constrain(config=CONFIG, gen=Generator())
def make_aggregate(config: Config, gen: torch.Generator):
    """Stages 4 and 5: the aggregator of ``mllib.robust`` then client-level DP noise of ``mllib.privacy``.

    None for the plain size-weighted mean without noise (``run_rounds``'s default, FedAvg).
    With DP: rows clipped to C (``privacy.clip_rows``), aggregated, plus N(0, (sigma C / n)^2 I);
    for the mean this is ``privacy.dp_fedavg_aggregate`` (McMahan et al. 2018).
    """
    c = config
    if c.dp_sigma == 0:
        return None if c.aggregator == "mean" else robust.make(c.aggregator, c.f)
    if c.aggregator == "mean":
        return privacy.dp_fedavg_aggregate(clip=c.dp_clip, sigma=c.dp_sigma, gen=gen)
    robust_agg = robust.make(c.aggregator, c.f)

    def aggregate(U: torch.Tensor) -> torch.Tensor:
        noise = randn(U.shape[1], gen=gen, device=U.device)  # (d,)
        return robust_agg(privacy.clip_rows.__wrapped__(U, c.dp_clip)) + c.dp_sigma * c.dp_clip / len(U) * noise

    return aggregate


@constrain(config=CONFIG)
def dp_epsilon(config: Config) -> float | None:
    """The epsilon of the playground's client-level DP at the config's delta, for the mean aggregator.

    Every round every client's update is clipped to C and the mean gets N(0, (sigma C / n)^2 I):
    a Gaussian mechanism of noise multiplier sigma on the sum (McMahan et al. 2018, DP-FedAvg),
    with every client in every round (sampling rate q = 1, no amplification), composed over
    the rounds by ``privacy.epsilon`` (RDP; Mironov 2017, Balle et al. 2020 for the conversion).

    Returns:
        epsilon, math.inf without noise (sigma = 0), or None for a robust aggregator: the noise is
        calibrated to the mean's sensitivity C / n, and one client moves a median by more.

    Raises:
        ValueError: for a delta outside (0, 1) (from the accountant).
    """
    c = config
    if c.aggregator != "mean":
        return None
    if c.dp_sigma == 0:
        return math.inf
    return privacy.epsilon(q=1.0, sigma=c.dp_sigma, steps=c.rounds, delta=c.dp_delta)


@constrain(config=CONFIG)
def describe_dp(config: Config) -> str:
    """Stage 5 in words: sigma and C with the (epsilon, delta) they give (``dp_epsilon``)."""
    c = config
    if c.dp_sigma == 0:
        return "none (sigma = 0): no privacy guarantee"
    eps = dp_epsilon(c)
    guarantee = (f"epsilon = {eps:.1f} at delta = {c.dp_delta:g} over {c.rounds} rounds" if eps is not None else
                 f"no epsilon: the noise is sized for the mean, and one client moves the {c.aggregator} further")  # fmt: skip
    return f"sigma = {c.dp_sigma:g}, clip C = {c.dp_clip:g}: {guarantee}"


@constrain(config=CONFIG, data=Instance(Dataset), gen=Generator() | None)
def run(config: Config, data, gen: torch.Generator | None = None) -> History:
    """Run the playground pipeline on ``data`` (a ``mllib.Dataset``).

    Consumes ``gen`` (default ``generator(config.seed)``) exactly as
    ``split(data, n, partition, alpha=alpha, gen=gen)`` then ``run_rounds(..., gen=gen)`` would;
    attacks, random compressors and DP noise draw from their own generators seeded from the config.

    Returns:
        The ``History`` of every round: metrics "client_accuracy" ((n,) each client's test
        accuracy) and "accuracy" (their mean weighted by client size), ``bits`` (cumulative bits
        sent by the clients); ``model`` is the server's (d,), or with gossip the nodes' (n, d).

    Raises:
        ValueError: for an invalid config (see ``validate``).
    """
    c = validate(config)
    gen = generator(c.seed) if gen is None else gen
    clients = split(data, c.n_clients, c.partition, alpha=c.alpha, gen=gen)
    byzantine = torch.arange(c.n_clients - c.f, c.n_clients)
    if c.attack == "label flip" and c.f:
        clients = robust.attacks.label_flip(clients, byzantine)
    model = FlatModel(mlp(data.n_features, data.n_classes, hidden=(c.hidden,)))
    # 1. local steps (+ worker momentum); 2. compression; 3. attack
    momenta = [robust.WorkerMomentum(c.momentum)] if c.momentum > 0 else []
    compressor = make_compressor(c.compressor, c.error_feedback, seed=c.seed + 1)
    attack = robust.make_attack(c.attack, c.f, gen=generator(c.seed + 2))
    if c.topology == "server":
        return run_rounds(
            model, clients, rounds=c.rounds, local_steps=c.local_steps, lr=c.lr, batch_size=c.batch_size, gen=gen,
            transforms=[*momenta, compressor, attack], aggregate=make_aggregate(c, generator(c.seed + 3)),
        )  # fmt: skip
    # 4. gossip: D-PSGD with local steps, every node sends its model (CHOCO: its compressed
    # change) to each neighbour
    W = decentralized.mixing_matrix(c.topology, c.n_clients)  # (n, n)
    X = model.init(gen, clients.x.device).expand(c.n_clients, -1).clone()  # (n, d)
    local = decentralized.LocalUpdates(model, clients, steps=c.local_steps, lr=c.lr, batch_size=c.batch_size, gen=gen)
    mixing = decentralized.Gossip(W) if c.compressor == "none" else compression.Choco(W, compressor, c.choco_gamma)
    nodes = engine.Decentralized(X, local=local, transforms=[*momenta, attack], combine=mixing)
    history = engine.run(nodes, c.rounds, metrics={"client_accuracy": lambda a: evaluate(model, a.X, clients)})
    weights = clients.weights.to(X.device)
    history.metrics["accuracy"] = [float(a @ weights) for a in history["client_accuracy"]]
    return history


@constrain(Rule("seeds", lambda seeds: len(seeds) > 0, "seeds must name at least one seed, got none"), config=CONFIG,
           data=Instance(Dataset), seeds=Instance(Sequence, description="a sequence of seeds"))  # fmt: skip
def run_seeds(config: Config, data, seeds: Sequence[int]) -> dict[int, History]:
    """``run`` once per seed: ``config`` with its ``seed`` replaced, so that the split, the
    initial model, the minibatches and the draws of the attack, the compressor and the DP
    noise all change from run to run.

    Args:
        config: the setting; data: a ``mllib.Dataset``; seeds: e.g. ``range(5)``.

    Returns:
        seed -> its run's ``History``, in the order of ``seeds``.

    Raises:
        ValueError: for no seed, or an invalid config (see ``validate``).
    """
    return {s: run(replace(config, seed=s), data) for s in seeds}


@constrain(Rule("results", lambda results: len(results) > 0, "results must hold at least one run, got none"),
           results=RESULTS)  # fmt: skip
def final_accuracy(results: Mapping[int, History]) -> Spread:
    """The final mean client accuracy of each run, over the seeds.

    Args:
        results: seed -> ``History`` (``run_seeds``).

    Returns:
        A ``Spread`` (median [min–max]) of their last "accuracy".

    Raises:
        ValueError: for no result.
    """
    return Spread(h.accuracy[-1] for h in results.values())


@constrain(SAME_SEEDS, results=RESULTS, others=RESULTS)
def paired_difference(results: Mapping[int, History], others: Mapping[int, History]) -> Spread:
    """Final accuracy of ``results`` minus that of ``others``, seed by seed: each difference
    compares two settings on the same split and initial model.

    Args:
        results, others: ``run_seeds`` of two settings, over the same seeds.

    Returns:
        A ``Spread`` of the differences, one per seed.

    Raises:
        ValueError: if the two are not of the same seeds, or are empty.
    """
    return Spread(results[s].accuracy[-1] - others[s].accuracy[-1] for s in results)


@constrain(Rule("options", lambda options: all(len(values) > 0 for values in options.values()),
                "options must give every name at least one value, got {options}"),
           options=Instance(Mapping, description="a dict name -> values"), is_valid=Function(), tries=Integer(min=1),
           seed=Integer())  # fmt: skip
def pairwise(options: dict[str, tuple], is_valid, *, tries: int = 1000, seed: int = 0) -> list[dict]:
    """A small set of valid settings covering every valid pair of option values (all-pairs testing).

    1. candidates: for each pair of values of two options, random completions of the other
       options until one is valid (at most ``tries``);
    2. greedy: keep the candidate covering the most pairs not yet covered, until none adds one.
    A pair without a valid completion found is left out.

    Args:
        options: name -> the values to try.
        is_valid: setting (dict name -> value) -> bool.
    """
    rng = random.Random(seed)
    names = list(options)
    pool = []
    for a, b in itertools.combinations(names, 2):
        for va, vb in itertools.product(options[a], options[b]):
            for _ in range(tries):
                setting = {k: rng.choice(options[k]) for k in names} | {a: va, b: vb}
                if is_valid(setting):
                    pool.append(setting)
                    break

    def pairs(s):
        return {((a, s[a]), (b, s[b])) for a, b in itertools.combinations(names, 2)}

    covered, chosen = set(), []
    while pool:
        best = max(pool, key=lambda s: len(pairs(s) - covered))
        gain = pairs(best) - covered
        if not gain:
            break
        covered |= gain
        chosen.append(best)
    return chosen


@constrain(config=CONFIG)
def is_valid(config: Config) -> bool:
    """Whether ``validate`` accepts the config."""
    try:
        validate.__wrapped__(config)  # config is checked
    except ValueError:
        return False
    return True


@constrain(config=CONFIG)
def describe(config: Config) -> str:
    """The pipeline as one line per stage, with the settings the config gives each."""
    c = config
    server = c.topology == "server"
    rows = [
        f"1. local steps : {c.local_steps} SGD steps, lr {c.lr}, worker momentum {c.momentum}",
        f"2. compression : {c.compressor}" + (" + error feedback" if c.error_feedback else ""),
        f"3. attack      : {c.attack}, f = {c.f} of {c.n_clients} clients",
        f"4. aggregation : {c.aggregator} at the server" if server else f"4. aggregation : gossip on a {c.topology}",
        f"5. DP noise    : {describe_dp(c)}",
    ]
    return "\n".join(rows)


def plot(results: History | Sequence[History], labels: Sequence[str] | None = None):
    """Accuracy vs rounds and vs bits sent (Mbit) for one or more runs (``History``); returns the figure."""
    import matplotlib.pyplot as plt

    results = [results] if isinstance(results, History) else list(results)
    labels = labels or [f"run {i}" for i in range(len(results))]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    for res, label in zip(results, labels):
        a.plot(res.rounds, res.accuracy, label=label)
        b.plot([x / 1e6 for x in res.bits], res.accuracy, label=label)
    a.set(title="Accuracy per round", xlabel="round", ylabel="mean client test accuracy", ylim=(0, 1))
    b.set(title="Accuracy per bit sent", xlabel="bits sent by the clients (Mbit)", ylabel="mean client test accuracy",
          ylim=(0, 1))  # fmt: skip
    a.legend()
    b.legend()
    fig.tight_layout()
    return fig


def _controls(config: Config) -> dict:
    """One ipywidgets control per option the panel offers, showing ``config``."""
    import ipywidgets as widgets

    return {
        "partition": widgets.Dropdown(options=PARTITIONS, value=config.partition, description="partition"),
        "alpha": widgets.FloatLogSlider(value=config.alpha, base=10, min=-1, max=2, description="alpha"),
        "n_clients": widgets.IntSlider(value=config.n_clients, min=4, max=30, description="clients"),
        "topology": widgets.Dropdown(options=TOPOLOGIES, value=config.topology, description="topology"),
        "local_steps": widgets.IntSlider(value=config.local_steps, min=1, max=20, description="local steps"),
        "compressor": widgets.Dropdown(options=COMPRESSORS, value=config.compressor, description="compressor"),
        "error_feedback": widgets.Checkbox(value=config.error_feedback, description="error feedback"),
        "attack": widgets.Dropdown(options=ATTACKS, value=config.attack, description="attack"),
        "aggregator": widgets.Dropdown(options=AGGREGATORS, value=config.aggregator, description="aggregator"),
        "f": widgets.IntSlider(value=config.f, min=0, max=max_f(config.aggregator, config.n_clients), description="f"),
        "momentum": widgets.FloatSlider(value=config.momentum, min=0, max=0.95, step=0.05, description="momentum"),
        "dp_sigma": widgets.FloatSlider(value=config.dp_sigma, min=0, max=2, step=0.1, description="DP sigma"),
        "rounds": widgets.IntSlider(value=config.rounds, min=5, max=100, description="rounds"),
    }  # fmt: skip


@constrain(data=Instance(Dataset), config=CONFIG | None)
class Panel:
    """The widget panel's state: ``widgets`` (option name -> its control), ``results`` (every run the
    Run button made, a ``History`` each) and ``configs`` (their ``Config``s); ``box`` is the
    ``ipywidgets.VBox`` shown, and a notebook displays the panel as it.

    The controls only offer valid values (``update_options``, after each change); ``current()`` is
    the ``Config`` they show (``config``'s other fields kept), and ``run`` is the Run button's callback.
    """

    def __init__(self, data, config: Config | None = None):
        import ipywidgets as widgets

        self.data, self.config = data, config or Config()
        self.widgets = _controls(self.config)
        self.results: list[History] = []
        self.configs: list[Config] = []
        self.dp_label = widgets.Label()  # the DP noise's (epsilon, delta), beside its slider
        self.button, self.out = widgets.Button(description="Run"), widgets.Output()
        for name in ("n_clients", "aggregator", "topology", "compressor", "dp_sigma", "rounds"):
            self.widgets[name].observe(self.update_options, names="value")
        self.button.on_click(self.run)
        self.update_options()
        controls = list(self.widgets.values())
        right = widgets.VBox([*controls[7:], self.dp_label, self.button])
        self.box = widgets.VBox([widgets.HBox([widgets.VBox(controls[:7]), right]), self.out])

    def current(self) -> Config:
        """The ``Config`` the controls show."""
        return replace(self.config, **{k: v.value for k, v in self.widgets.items()})

    def update_options(self, _change=None):
        """Offer only what ``allowed`` allows given the other controls; show the DP noise's (epsilon, delta)."""
        w, c = self.widgets, self.current()
        options = allowed(c)
        w["f"].max = options["f"][-1]
        gossip = c.topology != "server"
        for name in ("compressor", "aggregator"):
            w[name].options = options[name]
        w["dp_sigma"].disabled = gossip
        if gossip:
            w["dp_sigma"].value = 0.0
        w["error_feedback"].disabled = options["error_feedback"] == (False,)  # no compressor, or gossip
        if w["error_feedback"].disabled:
            w["error_feedback"].value = False
        self.dp_label.value = "DP: " + describe_dp(self.current())

    def run(self, _button=None):
        """Run the current config (``run``), record it, and redraw the last three runs (``plot``)."""
        import matplotlib.pyplot as plt

        c = self.current()
        last = run(c, self.data)
        self.results.append(last)
        self.configs.append(c)
        first = max(len(self.results) - 3, 0)
        with self.out:
            self.out.clear_output(wait=True)
            print(describe(c))
            print(f"final accuracy {last.accuracy[-1]:.2f}, bits sent {last.bits[-1] / 1e6:.2f} Mbit")
            plot(self.results[first:], [f"run {i}" for i in range(first, len(self.results))])
            plt.show()

    def _repr_mimebundle_(self, **kwargs):  # a cell that ends with the panel shows its box
        return self.box._repr_mimebundle_(**kwargs)


__all__ = [
    "AGGREGATORS", "ATTACKS", "COMPRESSORS", "Config", "PARTITIONS", "PIPELINE", "Panel", "TOPOLOGIES",
    "allowed", "describe", "describe_dp", "dp_epsilon", "final_accuracy", "is_valid", "make_aggregate", "make_compressor", "max_f",
    "paired_difference", "pairwise", "plot", "run", "run_seeds", "validate",
]
