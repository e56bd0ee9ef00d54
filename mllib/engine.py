"""The round engine: the course's one loop over rounds, the parts a round is made of, one record.

Every collaborative algorithm of the course is an operation on the client matrix repeated in
rounds, so it is a configuration of one loop (``run``):

    for r = 1 .. rounds:
        algorithm.round(r)
        every ``eval_every`` rounds (and after the last): record the metrics, bits sent, seconds

A round at a server (``Federated``) is five parts, each replaceable:

    1. select:     S <- select(r), the clients that take part          (|S|,) indices
    2. local:      M <- local(x, S), one message per selected client   (|S|, d) updates or gradients
    3. transform:  M <- t(M) for t in transforms                       compression, momentum, attack, noise
    4. aggregate:  v <- aggregate(M, p_S)                              (d,) the mean, a robust rule, DP
    5. server:     x <- server_step(x, v)                              x + eta v, or x - lr v for gradients

A round without a server (``Decentralized``) replaces 4 and 5 by mixing with the neighbours:
X <- combine(X, M), e.g. D-PSGD's W X - lr G or CHOCO-Gossip's compressed mixing.

Parts are small callables or objects whose state lives on them (SCAFFOLD's control variates,
MIME's momentum, worker momentum, error feedback, centered clipping's centre), so the same
parts run here, on torch.distributed and on Flower. Anything else that advances in rounds
(a two-unit coordinate descent, a gossip-only average) subclasses ``Rounds`` and is run by
the same loop, recorded in the same ``History``.
"""
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from .constraints import ClientMatrix, Function, Generator, Instance, Integer, Real, Rule, Tensor, constrain

Transform = Callable[[torch.Tensor], torch.Tensor]
Metric = Callable[["Rounds"], Any]
PARTS = Instance(list, tuple, description="a list of functions (transforms)")


class Rounds(ABC):
    """An algorithm that advances one round at a time; its state lives on the object."""

    bits_sent: int = 0  # bits the clients sent so far (parts that compress count them)

    @abstractmethod
    def round(self, r: int) -> None:
        """Advance by round ``r`` (1, 2, ...)."""

    @property
    def model(self) -> torch.Tensor | None:
        """The current model: the server's (d,), or the nodes' (n, d)."""
        return None


@dataclass
class History:
    """What a run recorded, one entry per recorded round.

    ``rounds[j]`` is the round after which ``metrics[name][j]`` (also ``history.name``),
    ``bits[j]`` (bits the clients sent so far) and ``seconds[j]`` (wall time since the start)
    were taken; ``algorithm`` is the algorithm in its final state (its model, its state_dict()).
    """

    rounds: list[int] = field(default_factory=list)
    metrics: dict[str, list] = field(default_factory=dict)
    bits: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    algorithm: Rounds | None = None

    @property
    def model(self) -> torch.Tensor | None:
        """The final model: the server's (d,), or the nodes' (n, d)."""
        return None if self.algorithm is None else self.algorithm.model

    def __getitem__(self, name: str) -> list:
        """The values of one metric, one per recorded round: ``history["accuracy"]``."""
        if name not in self.metrics:
            raise KeyError(f"no metric {name!r} was recorded; recorded: {sorted(self.metrics)}")
        return self.metrics[name]

    def __getattr__(self, name: str) -> list:
        """A metric as an attribute: ``history.accuracy`` is ``history["accuracy"]``."""
        metrics = self.__dict__.get("metrics", {})
        if name in metrics:
            return metrics[name]
        raise AttributeError(f"History has no attribute or metric {name!r}; metrics: {sorted(metrics)}")

    def rounds_to(self, target: float, metric: str = "accuracy") -> int | None:
        """The first recorded round whose ``metric`` reaches ``target``, or None."""
        return next((r for r, v in zip(self.rounds, self[metric]) if v >= target), None)

    def mean_last(self, k: int, metric: str = "accuracy") -> float:
        """The mean of the last ``k`` recorded values of ``metric``.

        Raises:
            ValueError: for k outside [1, number of recorded rounds].
        """
        values = self[metric]
        if not 1 <= k <= len(values):
            raise ValueError(f"k must be in [1, {len(values)}] (the recorded rounds), got {k}")
        return float(sum(values[-k:]) / k)


@constrain(algorithm=Instance(Rounds, description="a Rounds (an engine.Federated or engine.Decentralized)"),
           rounds=Integer(min=1), metrics=Instance(Mapping, description="a dict of name -> function") | None,
           eval_every=Integer(min=1))  # fmt: skip
def run(algorithm: Rounds, rounds: int, *, metrics: Mapping[str, Metric] | None = None, eval_every: int = 1,
        record_start: bool = False, progress: bool = False) -> History:  # fmt: skip
    """The loop over rounds: ``rounds`` rounds of ``algorithm``, recorded every ``eval_every``.

    Args:
        algorithm: any ``Rounds``, e.g. a ``Federated`` or ``Decentralized`` configuration.
        rounds: how many rounds, >= 1.
        metrics: name -> function of the algorithm (read its model) recorded after every
            ``eval_every``-th round and after the last one.
        eval_every: >= 1.
        record_start: also record before the first round (as round 0).
        progress: show a progress bar (scripts only: not in a compared notebook cell).

    Returns:
        The ``History``; ``History.algorithm`` is ``algorithm`` after the last round.

    Raises:
        TypeError: for rounds or eval_every that are not integers.
        ValueError: for rounds or eval_every < 1.
    """
    metrics = dict(metrics or {})
    history = History(metrics={name: [] for name in metrics}, algorithm=algorithm)
    start = time.perf_counter()

    def record(r: int) -> None:
        history.rounds.append(r)
        for name, metric in metrics.items():
            history.metrics[name].append(metric(algorithm))
        history.bits.append(algorithm.bits_sent)
        history.seconds.append(time.perf_counter() - start)

    if record_start:
        record(0)
    for r in tqdm(range(1, rounds + 1), desc="rounds", disable=not progress):
        algorithm.round(r)
        if r % eval_every == 0 or r == rounds:
            record(r)
    return history


def _name(part) -> str:
    return getattr(part, "__name__", type(part).__name__)


def _expect(result, shape: tuple, dtype: torch.dtype, part, role: str) -> torch.Tensor:
    """``result`` if a part a user plugged in returned a tensor of ``shape`` and ``dtype``; else a
    ValueError naming the part. A shape comparison per round, cheap beside the round itself."""
    if not isinstance(result, torch.Tensor) or result.shape != shape or result.dtype != dtype:
        got = f"shape {tuple(result.shape)} and dtype {result.dtype}" if isinstance(result, torch.Tensor) else repr(result)
        raise ValueError(f"{role} {_name(part)} must return a tensor of shape {tuple(shape)} and dtype {dtype}, got {got}")
    return result


def _messages_shape(x: torch.Tensor, S: torch.Tensor, M) -> tuple:
    """The shape of the local part's messages: (|S|, d); for stacked runs, x (runs, d), either
    (runs * |S|, d) or (runs, |S|, d), as ``M`` lays them out."""
    if x.dim() == 1:
        return (len(S), len(x))
    runs, d = x.shape
    return (runs, len(S), d) if getattr(M, "ndim", 2) == 3 else (runs * len(S), d)


# ------------------------------------------------------------------------------ selection
@constrain(n=Integer(min=1))
def everyone(n: int) -> Callable[[int], torch.Tensor]:
    """Full participation: every round selects all n clients, (n,) indices 0 .. n-1."""
    everybody = torch.arange(n)
    return lambda r: everybody


@constrain(Rule("k", lambda n, k: k <= n, "k (clients per round) must be in [1, n_clients={n}], got {k}; sample at "
                "most all clients"), n=Integer(min=1), k=Integer(min=1), gen=Generator())  # fmt: skip
def uniform(n: int, k: int, gen: torch.Generator) -> Callable[[int], torch.Tensor]:
    """Each round, k of n clients uniformly without replacement, sorted: (k,) indices.

    Raises:
        ValueError: if k is not in [1, n].
    """
    return lambda r: torch.randperm(n, generator=gen)[:k].sort().values


# ------------------------------------------------------------------------------ server step
@constrain(server_lr=Real())
def move(server_lr: float = 1.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The server step for update messages: x <- x + server_lr * v (FedAvg: server_lr = 1)."""
    return lambda x, v: x + server_lr * v


@constrain(lr=Real(ge=0))
def descend(lr: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The server step for gradient messages: x <- x - lr * v (distributed SGD)."""
    return lambda x, v: x - lr * v


@constrain(Rule("weights", lambda M, weights: weights.shape == (M.shape[0],),
                "weights must have shape ({M.shape[0]},), one per row of M, got {weights.shape}"),
           Rule("weights", lambda weights: bool((weights >= 0).all() and weights.sum() > 0),
                "weights must be non-negative and not all zero"),
           M=ClientMatrix(), weights=Tensor(1, finite=True))  # fmt: skip
def weighted_mean(M: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The default aggregate: sum_i p_i M_i / sum_i p_i, (|S|, d) -> (d,) (McMahan et al. 2017, arXiv:1602.05629)."""
    w = weights.to(M.dtype)
    return (w @ M) / w.sum()


@constrain(x0=Tensor((1, 2), description="a server model (d,), or one per run (runs, d)"), local=Function(),
           select=Function(), weights=Tensor(1, floating=False), transforms=PARTS, aggregate=Function() | None,
           server_step=Function() | None)  # fmt: skip
class Federated(Rounds):
    """Rounds at a server: select, local, transforms, aggregate, server step (see the module).

    Args:
        x0: (d,) the initial server model.
        local: (x, S) -> (|S|, d) the selected clients' messages (updates or gradients);
            an object may keep per-client state across rounds (SCAFFOLD's c_i).
        select: r -> (|S|,) the clients of round r (``everyone(n)``, ``uniform(n, k, gen)``).
        weights: (n,) the clients' shares p_i, given to ``aggregate`` for the selected clients.
        transforms: functions (|S|, d) -> (|S|, d) applied to the messages in order.
        aggregate: (M, p_S) -> (d,); by default ``weighted_mean``. A robust aggregator
            ignores p_S (``mllib.robust.Aggregator``).
        server_step: (x, v) -> x; by default ``move(1.0)``.

    Each round checks the shape and dtype of what each part returns (a comparison, no copy): a
    wrong one is a ValueError naming the part and the shape expected.

    State: ``x`` (d,) the server model; ``bits_sent`` from the transforms that count bits.
    """

    def __init__(self, x0: torch.Tensor, *, local: Callable, select: Callable[[int], torch.Tensor],
                 weights: torch.Tensor, transforms: Sequence[Transform] = (),
                 aggregate: Callable | None = None, server_step: Callable | None = None):  # fmt: skip
        self.local, self.select, self.weights = local, select, weights
        self.transforms = list(transforms)
        # the default runs unchecked, as the user's parts do: what each part returns is checked in ``round``
        self.aggregate = weighted_mean.__wrapped__ if aggregate is None else aggregate
        self.server_step = move(1.0) if server_step is None else server_step
        # State
        self.x = x0

    def round(self, r: int) -> None:
        x = self.x
        S = self.select(r).to(x.device)  # 1.
        M = self.local(x, S)  # 2.
        M = _expect(M, _messages_shape(x, S, M), x.dtype, self.local, "the local part")
        for transform in self.transforms:  # 3.
            M = _expect(transform(M), M.shape, x.dtype, transform, "the transform")
        v = _expect(self.aggregate(M, self.weights[S]), x.shape, x.dtype, self.aggregate, "aggregate")  # 4. (d,)
        self.x = _expect(self.server_step(x, v), x.shape, x.dtype, self.server_step, "server_step")  # 5.

    @property
    def model(self) -> torch.Tensor:
        return self.x

    @property
    def bits_sent(self) -> int:
        return sum(getattr(t, "bits_sent", 0) for t in self.transforms)

    def state_dict(self) -> dict:
        return {"x": self.x, **getattr(self.local, "state_dict", dict)()}


@constrain(X0=ClientMatrix(stack=True), local=Function(), combine=Function(), transforms=PARTS)
class Decentralized(Rounds):
    """Rounds without a server: every node computes a message from its own row, the messages
    are transformed, and the nodes combine with their neighbours.

    Args:
        X0: (n, d) the nodes' initial models.
        local: X -> (n, d) the nodes' messages (gradients at their rows, or local updates).
        combine: (X, M, r) -> X, the mixing (``mllib.decentralized`` and ``mllib.compression``
            provide D-PSGD's, local-steps-then-gossip's and CHOCO-Gossip's).
        transforms: functions (n, d) -> (n, d) applied to the messages in order.

    State: ``X`` (n, d) the nodes' models; ``bits_sent`` from ``combine`` if it counts them.
    """

    def __init__(self, X0: torch.Tensor, *, local: Callable, combine: Callable,
                 transforms: Sequence[Transform] = ()):  # fmt: skip
        self.local, self.combine, self.transforms = local, combine, list(transforms)
        # State
        self.X = X0

    def round(self, r: int) -> None:
        M = _expect(self.local(self.X), self.X.shape, self.X.dtype, self.local, "the local part")  # (n, d)
        for transform in self.transforms:
            M = _expect(transform(M), self.X.shape, self.X.dtype, transform, "the transform")
        self.X = _expect(self.combine(self.X, M, r), self.X.shape, self.X.dtype, self.combine, "combine")

    @property
    def model(self) -> torch.Tensor:
        return self.X

    @property
    def bits_sent(self) -> int:
        return getattr(self.combine, "bits_sent", 0)
