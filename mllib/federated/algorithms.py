"""The algorithms: FedSGD, FedAvg, SCAFFOLD, MIME and MimeLite as local parts of the round engine.

Each algorithm is the local part of ``engine.Federated`` (its ``update``: the sampled clients'
updates U = y_i - x, (|S|, d), with its state on the object: SCAFFOLD's control variates,
MIME's momentum); the rest of a round is the engine's: uniform client selection, the weighted
mean of the updates, the server step x <- x + server_lr * mean. ``run`` configures and runs it.
"""
from collections.abc import Callable, Mapping

import torch

from .. import engine
from ..constraints import (
    ClientMatrix, Function, Generator, Generators, Indices, Instance, Integer, Real, Rule, Tensor, constrain,
)  # fmt: skip
from ..engine import Federated, History, move, uniform, weighted_mean
from ..spread import Spread
from .problems import LOCAL, PROBLEM, Problem, _one_model

SERVER_LR, MOMENTUM = Real(gt=0), Real(ge=0, lt=1)


def _one_per_row(rows: str, weights: str = "weights") -> Rule:
    """A Rule: one weight per row of the matrix argument ``rows``."""
    return Rule(weights, lambda **a: a[weights].shape == (a[rows].shape[0],),
                lambda **a: f"{weights} must have shape ({a[rows].shape[0]},), one per row of {rows}, got "
                f"{tuple(a[weights].shape)}")  # fmt: skip


def _model_of(rows: str) -> Rule:
    """A Rule: x is one row of the matrix argument ``rows``."""
    return Rule("x", lambda **a: a["x"].shape == a[rows].shape[1:],
                lambda **a: f"x must have shape ({a[rows].shape[1]},) like a row of {rows}, got {tuple(a['x'].shape)}")


@constrain(_model_of("Y"), _one_per_row("Y"), x=Tensor(1), Y=ClientMatrix(), weights=Tensor(1, finite=True),
           server_lr=Real())  # fmt: skip
def server_step(x: torch.Tensor, Y: torch.Tensor, weights: torch.Tensor, server_lr: float = 1.0) -> torch.Tensor:
    """x + server_lr * sum_i w_i (Y_i - x) / sum_i w_i (McMahan et al. 2017, Algorithm 1, server_lr = 1):
    the engine's aggregate (``weighted_mean``) and server step (``move``) written on the clients'
    models, one call (``mllib.flower``'s server app uses it).

    Args:
        x: (d,) server model; Y: (k, d) the sampled clients' models; weights: (k,) e.g. sizes.

    Returns:
        (d,) the new server model.
    """
    return move(server_lr)(x, weighted_mean(Y - x, weights))


@constrain(_model_of("Y"), c_i=ClientMatrix(), c=Tensor(1), x=Tensor(1), Y=ClientMatrix(), local_steps=Integer(min=1),
           lr=Real(gt=0))  # fmt: skip
def scaffold_control_update(c_i, c, x, Y, local_steps, lr) -> torch.Tensor:
    """SCAFFOLD's option II: c_i+ = c_i - c + (x - y_i) / (K lr) (Karimireddy et al. 2020, Alg. 1, line 12).

    Args:
        c_i: (k, d) the sampled clients' control variates; c: (d,) the server's;
        x: (d,) server model at the start of the round; Y: (k, d) the clients' models after K steps.

    Returns:
        (k, d) the new client control variates.
    """
    return c_i - c + (x - Y) / (local_steps * lr)


@constrain(_one_per_row("delta"), c=Tensor(1), delta=ClientMatrix(), weights=Tensor(1, finite=True))
def control_variate_step(c: torch.Tensor, delta: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """SCAFFOLD's server control variate: c + sum_{i in S} p_i (c_i+ - c_i) (Alg. 1, line 17, with
    the clients' shares p_i in place of 1/N, so that c stays sum_i p_i c_i).

    Args:
        c: (d,); delta: (k, d) the sampled clients' c_i+ - c_i; weights: (k,) their shares p_i.
    """
    return c + weights.to(delta.dtype) @ delta


@constrain(Rule("g", lambda Y, g: g.shape == Y.shape, "g must have the shape of Y, {Y.shape}, got {g.shape}"),
           Rule("m", lambda Y, m: m.shape == Y.shape[1:],
                "m must have shape ({Y.shape[1]},) like a row of Y, got {m.shape}"),
           Y=ClientMatrix(), g=ClientMatrix(), m=Tensor(1), lr=Real(gt=0), momentum=MOMENTUM)  # fmt: skip
def momentum_step(Y, g, m, lr, momentum) -> torch.Tensor:
    """One local step of MIME/MimeLite with SGD+momentum as base optimizer, state frozen:
    y <- y - lr ((1 - beta) g + beta m) (Karimireddy et al. 2020, "Mime", arXiv:2008.03606, Algorithm 1 with
    SGD + momentum as base algorithm). MimeLite passes g = g_i(y; batch); MIME the corrected
    g = g_i(y; batch) - g_i(x; batch) + c. This is the (1 - beta) form of momentum; code that
    uses m <- beta m + g instead (e.g. FedJAX) differs by a factor 1 / (1 - beta) in lr.

    Args:
        Y: (k, d) client models; g: (k, d) gradients; m: (d,) the frozen server momentum.

    Returns:
        (k, d) the models after the step.
    """
    return Y - lr * ((1 - momentum) * g + momentum * m)


@constrain(_one_model("x"), problem=PROBLEM, x=Tensor(1), S=Indices(), **LOCAL, gen=Generators() | None)
def fedavg_update(problem: Problem, x: torch.Tensor, S: torch.Tensor, *, local_steps: int, lr: float,
                  gen) -> torch.Tensor:  # fmt: skip
    """FedAvg's clients in one round, all at once (McMahan et al. 2017, Algorithm 1, ClientUpdate):
    y_i <- x, then K times y_i <- y_i - lr * g_i(y_i; batch), and each sends U_i = y_i - x.

    Args:
        problem: the federation; S: (|S|,) the sampled clients; x: (d,) the server model.
        local_steps: K; lr: the local step size; gen: CPU generator of the minibatches, one per
            client, or None for exact gradients.

    Returns:
        (|S|, d) the updates U; the server averages them (``engine.weighted_mean``).
    """
    X = x.expand(len(S), -1)  # (|S|, d): every sampled client starts from the server model
    Y = X
    for _ in range(local_steps):
        G = problem.grad(Y, S, problem.batch(S, gen))  # (|S|, d): each client's minibatch gradient
        Y = Y - lr * G  # one local SGD step of every client
    return Y - X  # (|S|, d): the updates U_i = y_i - x


# ----------------------------------------------------------------------------- algorithms
class FedAvg:
    """Federated averaging (McMahan et al. 2017, arXiv:1602.05629, Algorithm 1) with a server learning rate.

    Round: 1. y_i <- K local SGD steps of size lr from x, for i in S (``update``, the local part:
              ``fedavg_update``);
           2. each client sends U_i = y_i - x;
           3. x <- x + server_lr * sum_{i in S} p_i U_i / sum_{i in S} p_i, p_i = client share
              (the engine's ``weighted_mean`` and ``move(server_lr)``).

    Args:
        local_steps: K >= 1 local steps per round.
        lr: local step size, > 0.
        server_lr: the server's step along the averaged update, > 0 (1: plain averaging).

    Raises:
        ValueError: for K < 1, lr <= 0 or server_lr <= 0.
    """

    name = "FedAvg"

    @constrain(**LOCAL, server_lr=SERVER_LR)
    def __init__(self, *, local_steps: int, lr: float, server_lr: float = 1.0):
        self.local_steps, self.lr, self.server_lr = local_steps, lr, server_lr

    def update(self, problem: Problem, x: torch.Tensor, S: torch.Tensor, gen) -> torch.Tensor:
        """The local part: the clients S (|S|,) of ``problem`` start from the server model x (d,)
        and draw their minibatches from ``gen``. Returns their updates U = y_i - x, (|S|, d)."""
        # fedavg_update's checks ran once, when this algorithm and the run were built: not every round
        return fedavg_update.__wrapped__(problem, x, S, local_steps=self.local_steps, lr=self.lr, gen=gen)

    def federation(self, problem: Problem, x0: torch.Tensor, *, select: Callable[[int], torch.Tensor],
                   gen) -> Federated:  # fmt: skip
        """This algorithm on ``problem`` as a configuration of the round engine.

        Args:
            problem: the federation (``DataProblem``, ``QuadraticProblem``).
            x0: (d,) the initial server model.
            select: r -> (|S|,) the clients of round r (``engine.uniform``, ``engine.everyone``).
            gen: CPU generator for the local minibatches, or one per client.

        Returns:
            An ``engine.Federated`` whose local part is ``update`` (its state: this object's),
            whose aggregate is the mean weighted by ``problem.weights`` and whose server step
            is ``engine.move(server_lr)``; ``engine.run`` runs it.
        """
        return Federated(x0, local=ClientUpdate(self, problem, gen), select=select, weights=problem.weights,
                         server_step=move(self.server_lr))  # fmt: skip

    def state_dict(self) -> dict:
        return {}


class ClientUpdate:
    """An algorithm's ``update`` bound to a problem and a minibatch generator: the local part
    (x (d,), S (|S|,)) -> U (|S|, d) of ``engine.Federated``. Its state is the algorithm's."""

    @constrain(algorithm=Instance(FedAvg), problem=PROBLEM, gen=Generators() | None)
    def __init__(self, algorithm: FedAvg, problem: Problem, gen):
        self.algorithm, self.problem, self.gen = algorithm, problem, gen

    def __call__(self, x: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        return self.algorithm.update(self.problem, x, S, self.gen)

    def state_dict(self) -> dict:
        return self.algorithm.state_dict()


class FedSGD(FedAvg):
    """FedSGD: FedAvg with one local step, i.e. minibatch SGD with |S| * B samples per step."""

    name = "FedSGD"

    @constrain(lr=LOCAL["lr"], server_lr=SERVER_LR)
    def __init__(self, *, lr: float, server_lr: float = 1.0):
        super().__init__(local_steps=1, lr=lr, server_lr=server_lr)


class Scaffold(FedAvg):
    """SCAFFOLD (Karimireddy et al. 2020, arXiv:1910.06378, Algorithm 1, option II control variates).

    Round, for i in S:  1. y_i <- x;  2. K times y_i <- y_i - lr (g_i(y_i) - c_i + c);
        3. c_i+ <- c_i - c + (x - y_i) / (K lr);
        4. x <- x + server_lr * sum_{i in S} p_i (y_i - x) / sum_{i in S} p_i (the engine's);
        5. c <- c + sum_{i in S} p_i (c_i+ - c_i).
    With equal client sizes p_i = 1/N and step 5 is the paper's c += |S|/N * mean(delta c_i);
    with unequal sizes it keeps c = sum_i p_i c_i, the control variate of the weighted
    objective (the paper assumes equal weights). Control variates start at zero.

    Args:
        local_steps, lr, server_lr: as for ``FedAvg``.
        control_update: (c_i, c, x, Y, K, lr) -> c_i+, by default ``scaffold_control_update``.

    State: ``c`` (d,), ``c_clients`` (n, d), created on the first round.
    """

    name = "SCAFFOLD"

    @constrain(**LOCAL, server_lr=SERVER_LR, control_update=Function())
    def __init__(self, *, local_steps: int, lr: float, server_lr: float = 1.0,
                 control_update: Callable = scaffold_control_update):  # fmt: skip
        super().__init__(local_steps=local_steps, lr=lr, server_lr=server_lr)
        self.control_update = getattr(control_update, "__wrapped__", control_update)  # checked here, not every round
        # State
        self.c: torch.Tensor | None = None
        self.c_clients: torch.Tensor | None = None

    def update(self, problem, x, S, gen):
        """Steps 1, 2, 3 and 5 for the clients S; returns U = y_i - x, (|S|, d)."""
        if self.c is None:
            self.c, self.c_clients = torch.zeros_like(x), x.new_zeros(problem.n, len(x))
        X = x.expand(len(S), -1)  # 1.
        c_i = self.c_clients[S]  # (|S|, d)
        Y = problem.local_sgd(X, S, steps=self.local_steps, lr=self.lr, gen=gen, correction=self.c - c_i)  # 2.
        c_new = self.control_update(c_i, self.c, x, Y, self.local_steps, self.lr)  # 3.
        self.c = control_variate_step.__wrapped__(self.c, c_new - c_i, problem.weights[S])  # 5.
        self.c_clients = self.c_clients.index_copy(0, S.to(x.device), c_new)
        return Y - X

    def state_dict(self) -> dict:
        return {"c": self.c, "c_clients": self.c_clients}


class Mime(FedAvg):
    """MIME and MimeLite with SGD+momentum as the base optimizer (Karimireddy et al. 2020,
    "Mime: Mimicking centralized stochastic algorithms in federated learning", arXiv:2008.03606, Algorithm 1).

    Round:  1. c <- sum_{i in S} p_i grad f_i(x) / sum p_i, full-batch gradients at x;
        2. K times, for i in S, with the momentum m frozen and one minibatch b for both gradients:
           MIME:     y_i <- y_i - lr ((1 - beta)(g_i(y_i; b) - g_i(x; b) + c) + beta m)
           MimeLite: y_i <- y_i - lr ((1 - beta) g_i(y_i; b) + beta m);
        3. x <- x + server_lr * sum_{i in S} p_i (y_i - x) / sum p_i (the engine's);
        4. m <- (1 - beta) c + beta m (the full-batch gradient at the old x, not the model delta).

    Args:
        local_steps, lr, server_lr: as for ``FedAvg``.
        momentum: beta in [0, 1).
        lite: MimeLite (no SVRG correction) instead of MIME.
        step: (Y, g, m, lr, beta) -> Y, the local step, by default ``momentum_step``.

    State: ``m`` (d,), zero at the start.

    Raises:
        ValueError: for momentum outside [0, 1), K < 1, lr <= 0 or server_lr <= 0.
    """

    @constrain(**LOCAL, momentum=MOMENTUM, server_lr=SERVER_LR, step=Function())
    def __init__(self, *, local_steps: int, lr: float, momentum: float = 0.9, server_lr: float = 1.0,
                 lite: bool = False, step: Callable = momentum_step):  # fmt: skip
        super().__init__(local_steps=local_steps, lr=lr, server_lr=server_lr)
        self.momentum, self.lite = momentum, lite
        self.step = getattr(step, "__wrapped__", step)  # checked here, not every local step
        self.name = "MimeLite" if lite else "MIME"
        # State
        self.m: torch.Tensor | None = None

    def local_update(self, problem, x, sampled, c, gen) -> torch.Tensor:
        """Step 2: the K local steps of the sampled clients, (|S|, d); reads m, never writes it."""
        m = torch.zeros_like(x) if self.m is None else self.m
        X = x.expand(len(sampled), -1)
        Y = X
        for _ in range(self.local_steps):
            batch = problem.batch(sampled, gen)
            g = problem.grad(Y, sampled, batch)  # (|S|, d)
            if not self.lite:
                g = g - problem.grad(X, sampled, batch) + c  # same minibatch for both gradients
            Y = self.step(Y, g, m, self.lr, self.momentum)
        return Y

    def update(self, problem, x, S, gen):
        """Steps 1, 2 and 4 for the clients S; returns U = y_i - x, (|S|, d)."""
        c = problem.full_grad(x, S)  # 1. (d,)
        Y = self.local_update(problem, x, S, c, gen)  # 2.
        m = torch.zeros_like(x) if self.m is None else self.m
        self.m = (1 - self.momentum) * c + self.momentum * m  # 4.
        return Y - x

    def state_dict(self) -> dict:
        return {"m": self.m}


@constrain(Rule("clients_per_round", lambda problem, clients_per_round: clients_per_round <= problem.n,
                "clients_per_round must be in [1, n_clients={problem.n}], got {clients_per_round}; sample at most "
                "all clients"),
           _one_model("x0"), algorithm=Instance(FedAvg), problem=PROBLEM, x0=Tensor(1), rounds=Integer(min=1),
           clients_per_round=Integer(min=1), gen=Generators(), metrics=Instance(Mapping) | None,
           eval_every=Integer(min=1), sample_gen=Generator() | None)  # fmt: skip
def run(algorithm: FedAvg, problem: Problem, x0: torch.Tensor, *, rounds: int, clients_per_round: int, gen,
        metrics: Mapping[str, Callable[[torch.Tensor], object]] | None = None, eval_every: int = 1,
        sample_gen: torch.Generator | None = None) -> History:  # fmt: skip
    """``rounds`` rounds of ``algorithm`` on the round engine, each on ``clients_per_round``
    clients sampled uniformly without replacement (``engine.uniform``).

    Args:
        algorithm: ``FedAvg``, ``FedSGD``, ``Scaffold`` or ``Mime``; its state carries on.
        problem: the federation (``DataProblem``, ``QuadraticProblem``).
        x0: (d,) the initial server model; not modified.
        rounds: >= 1.
        clients_per_round: in [1, n].
        gen: CPU generator for the minibatches (and the sampling, unless ``sample_gen``), or one
            per client.
        metrics: name -> function of the server model x (d,) (an accuracy, a distance, x
            itself), recorded at round 0, every ``eval_every`` rounds and after the last.
        eval_every: >= 1.
        sample_gen: CPU generator for the sampling alone: seeded alike, it gives several
            algorithms the very same clients in every round.

    Returns:
        The ``engine.History``: ``history.rounds``, each metric by name (``history.accuracy``
        for metrics={"accuracy": ...}), ``history.model`` the final server model (d,).

    Raises:
        ValueError: for rounds < 1, eval_every < 1 or clients_per_round outside [1, n].
    """
    federation = algorithm.federation(problem, x0, select=uniform(problem.n, clients_per_round, sample_gen or gen),
                                      gen=gen)  # fmt: skip
    at_server = {name: (lambda f, metric=metric: metric(f.x)) for name, metric in (metrics or {}).items()}
    return engine.run(federation, rounds, metrics=at_server, eval_every=eval_every, record_start=True)


@constrain(Rule("scores", lambda scores: len(scores) > 0,
                "scores must hold at least one learning rate's Spread, got none"),
           scores=Instance(Mapping, description="a dict learning rate -> Spread"), decimals=Integer(min=0))  # fmt: skip
def best_rate(scores: dict[float, Spread], *, decimals: int = 2) -> float:
    """The learning rate whose score (e.g. the late accuracy) has the highest median over seeds,
    the medians compared as printed, rounded to ``decimals``: rates that tie there differ by
    less than the table shows, and the smallest of them is kept (large rates make training
    chaotic: its outcome then moves with the last bits of the arithmetic).

    Rule: argmax over lr of round(median_seeds score(lr), decimals), ties to the smallest lr;
    a grid search with several seeds per point, as federated optimizers are tuned (e.g.
    Reddi et al. 2021, "Adaptive Federated Optimization").

    Args:
        scores: learning rate -> ``Spread`` of a score to maximize, one value per seed.
        decimals: the precision at which medians are compared, that of the printed table.

    Returns:
        The chosen rate, a key of ``scores``.

    Raises:
        ValueError: for an empty ``scores`` or a negative ``decimals``.
    """
    return min(scores, key=lambda lr: (-round(scores[lr].median, decimals), lr))
