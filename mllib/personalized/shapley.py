"""Incentives: what each client contributes to the federation.

A cooperative game v maps a coalition S (a frozenset of clients) to a value, here the
validation accuracy of the model the clients of S train together. Client i's Shapley value
(Shapley 1953) averages its marginal contribution v(S + i) - v(S) over the orders in which
the clients can arrive:

    phi_i = sum_{S subset N - {i}} |S|! (n - |S| - 1)! / n! * (v(S + {i}) - v(S)).

Data Shapley (Ghorbani and Zou 2019, "Data Shapley: equitable valuation of data for machine
learning", arXiv:1904.02868, Algorithm 1, truncation left out) estimates it by Monte Carlo over random
permutations; Wang et al. 2020 ("A principled approach to data valuation for federated
learning") apply it to clients.
"""
import itertools
import math
from collections.abc import Callable, Iterable, Sequence

from dataclasses import replace

import torch

from ..clients import CLIENTS, MODEL, accuracy_on, run_rounds
from ..constraints import Function, Generator, Instance, Integer, Probability, Rule, Tensor, constrain
from ..models import FlatModel
from ..partition import Clients
from ..runtime import generator
from .training import FEDAVG, restrict

Game = Callable[[frozenset], float]
GAME, PLAYERS = Function(), Integer(min=1)


class CachedGame:
    """A game whose coalition values are computed once each and then looked up.

    Config: ``value`` (frozenset -> float). State: ``cache`` (coalition -> value) and
    ``evaluations``, the number of distinct coalitions computed.
    """

    @constrain(value=GAME)
    def __init__(self, value: Game):
        self.value = value
        # State
        self.cache: dict[frozenset, float] = {}

    @property
    def evaluations(self) -> int:
        return len(self.cache)

    def __call__(self, coalition: Iterable[int]) -> float:
        key = frozenset(int(i) for i in coalition)
        if key not in self.cache:
            self.cache[key] = float(self.value(key))
        return self.cache[key]

    def state_dict(self) -> dict:
        return {"cache": dict(self.cache)}


@constrain(Rule("client", lambda clients, client: client < clients.n,
                "client must be in [0, {clients.n}), got {client}"),
           clients=CLIENTS, client=Integer(min=0), fraction=Probability(), gen=Generator())  # fmt: skip
def corrupt_labels(clients: Clients, client: int, fraction: float, gen: torch.Generator) -> Clients:
    """A copy of ``clients`` where client ``client`` has a ``fraction`` of its labels replaced
    by uniformly random ones (a noisy data owner). The test distributions are unchanged.

    Raises:
        ValueError: for a client index out of range or a fraction outside [0, 1].
    """
    start, size = int(clients.offsets[client]), int(clients.sizes[client])
    flip = torch.rand(size, generator=gen) < fraction
    noise = torch.randint(0, clients.n_classes, (size,), generator=gen)
    y = clients.y.clone()
    y[start : start + size] = torch.where(flip.to(y.device), noise.to(y.device), y[start : start + size])
    return replace(clients, y=y)


@constrain(game=GAME, n_players=Integer(min=1, max=16))
def exact_shapley(game: Game, n_players: int) -> torch.Tensor:
    """Shapley values by enumerating all 2^n coalitions (Shapley 1953).

    Args:
        game: coalition (frozenset of player indices) -> value; wrap a costly one in
            ``CachedGame`` so that each coalition is computed once.
        n_players: n, at most 16.

    Returns:
        (n,) float64; they sum to v(all) - v(empty) (efficiency).

    Raises:
        ValueError: for n outside [1, 16].
    """
    phi = torch.zeros(n_players, dtype=torch.float64)
    for i in range(n_players):
        others = [j for j in range(n_players) if j != i]
        for size in range(n_players):
            share = math.factorial(size) * math.factorial(n_players - size - 1) / math.factorial(n_players)
            for S in itertools.combinations(others, size):
                phi[i] += share * (game(frozenset(S) | {i}) - game(frozenset(S)))
    return phi


@constrain(game=GAME, n_players=PLAYERS, permutations=Integer(min=1), gen=Generator())
def monte_carlo_shapley(game: Game, n_players: int, *, permutations: int, gen: torch.Generator) -> torch.Tensor:
    """Permutation-sampling Shapley estimates (Castro, Gomez, Tejada 2009; Ghorbani and Zou 2019, arXiv:1904.02868).

    For each of ``permutations`` random orders pi: walk through pi, adding one client at a
    time, and credit each client with v(before + i) - v(before).

    Returns:
        (permutations, n) float64: row k is the running mean after k + 1 permutations;
        the last row is the estimate. Unbiased for every k.
    """
    marginals = torch.zeros(permutations, n_players, dtype=torch.float64)
    for k in range(permutations):
        coalition: frozenset = frozenset()
        before = game(coalition)
        for i in torch.randperm(n_players, generator=gen).tolist():
            coalition = coalition | {i}
            after = game(coalition)
            marginals[k, i] = after - before
            before = after
    return marginals.cumsum(0) / torch.arange(1, permutations + 1, dtype=torch.float64)[:, None]


@constrain(game=GAME, n_players=PLAYERS)
def leave_one_out(game: Game, n_players: int) -> torch.Tensor:
    """Each client's leave-one-out value v(N) - v(N - {i}): (n,) float64."""
    everyone = frozenset(range(n_players))
    return torch.tensor([game(everyone) - game(everyone - {i}) for i in range(n_players)], dtype=torch.float64)


@constrain(Rule("y_val", lambda x_val, y_val: len(y_val) == len(x_val),
                "y_val must hold one label per row of x_val, {x_val.shape[0]}, got {y_val.shape}"),
           model=MODEL, clients=CLIENTS, x_val=Tensor(), y_val=Tensor(1, integer=True),
           **FEDAVG, seed=Integer(min=0),
           free_riders=Instance(Sequence, description="a list of client indices"))  # fmt: skip
def federation_game(
    model: FlatModel,
    clients: Clients,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    rounds: int,
    local_steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    free_riders: Sequence[int] = (),
) -> CachedGame:
    """The game v(S) = validation accuracy of FedAvg trained by the clients of S alone.

    Every coalition starts from the same initialization and draws its minibatches from a
    generator seeded by ``seed`` and the coalition itself, so that v(S) does not depend on
    the order in which coalitions are evaluated. v(empty) is the initial model's accuracy.
    A free-rider sends the global model back (a zero update) but is still counted with
    its size in the average.

    Args:
        x_val, y_val: (M, ...) and (M,) the validation set.
        free_riders: indices of the clients that contribute nothing.
    """
    x0 = model.init(generator(seed), clients.x.device)
    riders = {int(i) for i in free_riders}

    def value(coalition: frozenset) -> float:
        if not coalition:
            return accuracy_on(model, x0, x_val, y_val)
        members = sorted(coalition)
        mask = torch.tensor([i not in riders for i in members], dtype=x0.dtype, device=x0.device)[:, None]
        code = sum(1 << i for i in members)
        history = run_rounds(
            model, restrict(clients, members), rounds=rounds, local_steps=local_steps, lr=lr,
            batch_size=batch_size, gen=generator(seed * 1_000_003 + code), x0=x0, eval_every=rounds,
            transforms=[lambda U: U * mask],
        )  # fmt: skip
        return accuracy_on(model, history.model, x_val, y_val)

    return CachedGame(value)
