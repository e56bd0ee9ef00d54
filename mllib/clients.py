"""The client matrix: n clients' models as one (n, d) tensor, trained and evaluated at once.

Every collaborative algorithm of the course is an operation on such a matrix; this module
holds local training, evaluation, the weighted average, and the round loop into which the
later topics plug a compressor, an attack, noise or a robust aggregator.
"""
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .models import FlatModel
from .partition import Clients

Transform = Callable[[torch.Tensor], torch.Tensor]


def weighted_average(X: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted mean of the rows of a client matrix: sum_i w_i X_i / sum_i w_i.

    With w_i = n_i (client sizes) this is federated averaging's server step (McMahan et
    al. 2017, Algorithm 1).

    Args:
        X: (n, d) client matrix.
        weights: (n,) non-negative weights, not all zero; they need not sum to 1.

    Returns:
        (d,) the average row.

    Raises:
        ValueError: for a matrix that is not 2-D, weights of the wrong length, negative
            weights or weights summing to zero.
    """
    if X.dim() != 2:
        raise ValueError(f"X must be a client matrix of shape (n_clients, d), got shape {tuple(X.shape)}")
    if weights.shape != (X.shape[0],):
        raise ValueError(f"weights must have shape ({X.shape[0]},), one per row of X, got {tuple(weights.shape)}")
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("weights must be non-negative and not all zero")
    w = weights.to(X.dtype)
    return (w @ X) / w.sum()


def local_sgd(
    model: FlatModel,
    X: torch.Tensor,
    clients: Clients,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    gen: torch.Generator | Sequence[torch.Generator],
    among: torch.Tensor | None = None,
    correction: torch.Tensor | None = None,
) -> torch.Tensor:
    """``steps`` SGD steps on every client at once, each on its own minibatches.

    Update, for every row i at once: X_i <- X_i - lr * (g_i(X_i; batch_i) + correction_i),
    where ``correction`` (n, d) is an optional drift correction (SCAFFOLD's c - c_i).

    Args:
        model: the architecture.
        X: (k, d) client matrix; row j belongs to client ``among[j]`` (default: all n).
        clients: the clients' data.
        steps, lr, batch_size: local SGD's hyperparameters.
        gen: CPU generator for the minibatches, or one per client (see ``Clients.batches``).
        among: (k,) indices of the clients that train.
        correction: (k, d) or (d,) term added to every gradient.

    Returns:
        The (k, d) client matrix after the steps; X itself is not modified.
    """
    rows = clients.n if among is None else len(among)
    if X.shape != (rows, model.dim):
        raise ValueError(f"X must have shape ({rows}, {model.dim}) for these clients, got {tuple(X.shape)}")
    if steps < 0 or lr < 0:
        raise ValueError(f"steps and lr must be >= 0, got steps={steps}, lr={lr}")
    for _ in range(steps):
        xb, yb = clients.batches(batch_size, gen, among)
        g = model.grad(X, xb, yb)
        if correction is not None:
            g += correction
        X = torch.add(X, g, alpha=-lr)
    return X


def evaluate(model: FlatModel, X: torch.Tensor, clients: Clients) -> torch.Tensor:
    """Each client's accuracy on its own test distribution: (n,).

    Args:
        X: (n, d) one model per client, or a single model (d,) that every client uses.
    """
    if X.dim() == 1:
        X = X.expand(clients.n, -1)
    x, y = clients.test_sets()
    return model.accuracy(X, x, y, clients.test_weights)


def test_accuracy(model: FlatModel, row: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor) -> float:
    """Plain accuracy of one model (d,) on a test set (M, ...)."""
    return float(model.accuracy(row.unsqueeze(0), x_test.unsqueeze(0), y_test.unsqueeze(0))[0])


@dataclass
class History:
    """What a run of rounds recorded: per evaluated round, each client's test accuracy."""

    rounds: list[int] = field(default_factory=list)
    client_accuracy: list[torch.Tensor] = field(default_factory=list)  # each (n,)
    weights: torch.Tensor | None = None  # (n,) client shares, for the mean
    model: torch.Tensor | None = None  # (d,) the final server model

    @property
    def accuracy(self) -> list[float]:
        """Mean client accuracy per evaluated round, weighted by client size."""
        return [float(a @ self.weights) for a in self.client_accuracy]


def run_rounds(
    model: FlatModel,
    clients: Clients,
    *,
    rounds: int,
    local_steps: int,
    lr: float,
    batch_size: int,
    gen: torch.Generator,
    x0: torch.Tensor | None = None,
    participation: float = 1.0,
    transforms: Sequence[Transform] = (),
    aggregate: Callable[[torch.Tensor], torch.Tensor] | None = None,
    server_lr: float = 1.0,
    eval_every: int = 1,
    progress: bool = False,
    batch_gen: Sequence[torch.Generator] | None = None,
) -> History:
    """Federated rounds on the client matrix, with plug-in steps for later topics.

    One round (FedAvg, McMahan et al. 2017, Algorithm 1, with a server step size):
        1. sample S, a share ``participation`` of the n clients, without replacement;
        2. broadcast: every sampled client starts from the server model x;
        3. local training: ``local_steps`` SGD steps each (``local_sgd``);
        4. updates: U = Y - x, shape (|S|, d);
        5. transforms: U <- t(U) for each t in order (compression, attack, noise, ...);
        6. aggregate: delta = aggregate(U), by default the mean weighted by client size;
        7. server step: x <- x + server_lr * delta.

    Args:
        x0: (d,) the initial server model (default: ``model.init(gen)``).
        transforms: functions (|S|, d) -> (|S|, d) applied to the updates.
        aggregate: function (|S|, d) -> (d,), e.g. a robust aggregator.
        eval_every: evaluate each client's accuracy every this many rounds (and at the end).
        batch_gen: one generator per client for the minibatches, as on separate machines
            (``mllib.flower`` runs so); default: ``gen`` draws them for all clients.

    Returns:
        The ``History``; ``History.model`` is the final server model.
    """
    if not 0 < participation <= 1:
        raise ValueError(f"participation must be in (0, 1], got {participation}")
    if rounds < 1 or eval_every < 1:
        raise ValueError(f"rounds and eval_every must be >= 1, got rounds={rounds}, eval_every={eval_every}")
    device = clients.x.device
    x = model.init(gen, device) if x0 is None else x0.to(device)
    history = History(weights=clients.weights.to(device))
    n_sampled = max(1, round(participation * clients.n))
    for r in tqdm(range(1, rounds + 1), desc="rounds", disable=not progress):
        sampled = torch.randperm(clients.n, generator=gen)[:n_sampled].sort().values
        X = x.expand(n_sampled, -1)
        Y = local_sgd(model, X, clients, steps=local_steps, lr=lr, batch_size=batch_size, gen=batch_gen or gen,
                      among=sampled)  # fmt: skip
        U = Y - X
        for transform in transforms:
            U = transform(U)
        delta = weighted_average(U, clients.sizes[sampled].to(device)) if aggregate is None else aggregate(U)
        x = x + server_lr * delta
        if r % eval_every == 0 or r == rounds:
            history.rounds.append(r)
            history.client_accuracy.append(evaluate(model, x, clients))
    history.model = x
    return history
