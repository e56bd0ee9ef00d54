"""The client matrix: n clients' models as one (n, d) tensor, trained and evaluated at once.

Every collaborative algorithm of the course is an operation on such a matrix; this module
holds local training, evaluation, the weighted average, and the round loop into which the
later topics plug a compressor, an attack, noise or a robust aggregator.
"""
from collections.abc import Callable, Sequence

import torch

from .constraints import ClientMatrix, Function, Generator, Generators, Instance, Integer, Real, Rule, Tensor, constrain
from .engine import Federated, History, move, run, uniform
from .models import FlatModel
from .partition import Clients

Transform = Callable[[torch.Tensor], torch.Tensor]


@constrain(Rule("weights", lambda X, weights: weights.shape == (X.shape[0],),
                "weights must have shape ({X.shape[0]},), one per row of X, got {weights.shape}"),
           Rule("weights", lambda weights: bool((weights >= 0).all() and weights.sum() > 0),
                "weights must be non-negative and not all zero"),
           X=ClientMatrix(), weights=Tensor(1, finite=True))  # fmt: skip
def weighted_average(X: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted mean of the rows of a client matrix: sum_i w_i X_i / sum_i w_i.

    With w_i = n_i (client sizes) this is federated averaging's server step (McMahan et
    al. 2017, arXiv:1602.05629, Algorithm 1).

    Args:
        X: (n, d) client matrix.
        weights: (n,) non-negative weights, not all zero; they need not sum to 1.

    Returns:
        (d,) the average row.

    Raises:
        ValueError: for a matrix that is not 2-D, weights of the wrong length, negative
            weights or weights summing to zero.
    """
    w = weights.to(X.dtype)
    return (w @ X) / w.sum()


def _rows(model, X, clients, among) -> tuple[int, int]:
    return clients.n if among is None else len(among), model.dim


MODEL, CLIENTS = Instance(FlatModel), Instance(Clients)
LOCAL_SGD = dict(steps=Integer(min=0), lr=Real(ge=0), batch_size=Integer(min=1), gen=Generators())


@constrain(Rule("X", lambda model, X, clients, among: X.shape == _rows(model, X, clients, among),
                lambda model, X, clients, among: f"X must have shape {_rows(model, X, clients, among)} for these "
                f"clients and this model, got shape {tuple(X.shape)}"), model=MODEL, X=ClientMatrix(), clients=CLIENTS, **LOCAL_SGD,
           among=Tensor(1, floating=False) | None, correction=Tensor((1, 2)) | None)  # fmt: skip
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
    for step in range(steps):
        xb, yb = clients.batches(batch_size, gen, among)
        g = model.grad(X, xb, yb)
        if correction is not None:
            g += correction
        if step == 0:
            X = torch.add(X, g, alpha=-lr)  # a new matrix: the caller's X stays as it was
        else:
            X.add_(g, alpha=-lr)
    return X


@constrain(model=MODEL, X=Tensor((1, 2)), clients=CLIENTS)
def evaluate(model: FlatModel, X: torch.Tensor, clients: Clients) -> torch.Tensor:
    """Each client's accuracy on its own test distribution: (n,).

    Args:
        X: (n, d) one model per client, or a single model (d,) that every client uses.
    """
    if X.dim() == 1:
        X = X.expand(clients.n, -1)
    x, y = clients.held_out_sets()
    return model.accuracy(X, x, y, clients.test_weights)


@constrain(model=MODEL, row=Tensor(1), x_test=Tensor(), y_test=Tensor(1, floating=False))
def accuracy_on(model: FlatModel, row: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor) -> float:
    """Plain accuracy of one model (d,) on a test set (M, ...)."""
    return float(model.accuracy(row.unsqueeze(0), x_test.unsqueeze(0), y_test.unsqueeze(0))[0])


class LocalSGD:
    """The local update of FedAvg: K SGD steps of every selected client from the server model,
    sent as the update U = y_i - x (McMahan et al. 2017, arXiv:1602.05629, Algorithm 1, ClientUpdate).

    A part of ``engine.Federated``: (x (d,), S (|S|,)) -> U (|S|, d).

    Args:
        model, clients: the architecture and the clients' data.
        steps, lr, batch_size: local SGD's hyperparameters.
        gen: CPU generator for the minibatches, or one per client (see ``Clients.batches``).
    """

    @constrain(model=MODEL, clients=CLIENTS, **LOCAL_SGD)
    def __init__(self, model: FlatModel, clients: Clients, *, steps: int, lr: float, batch_size: int,
                 gen: torch.Generator | Sequence[torch.Generator]):  # fmt: skip
        self.model, self.clients, self.gen = model, clients, gen
        self.steps, self.lr, self.batch_size = steps, lr, batch_size

    def __call__(self, x: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        X = x.expand(len(S), -1)  # broadcast
        # checked once at construction, not every round
        Y = local_sgd.__wrapped__(self.model, X, self.clients, steps=self.steps, lr=self.lr,
                                  batch_size=self.batch_size, gen=self.gen, among=S)  # fmt: skip
        return Y - X


@constrain(Rule("x0", lambda model, x0: x0 is None or x0.shape == (model.dim,),
                "x0 must have shape (model.dim,) = ({model.dim},), got {x0.shape}"),
           model=MODEL, clients=CLIENTS, rounds=Integer(min=1), local_steps=Integer(min=0), lr=Real(ge=0),
           batch_size=Integer(min=1), gen=Generator(), x0=Tensor(1) | None, participation=Real(gt=0, le=1),
           transforms=Instance(list, tuple, description="a list of functions"), aggregate=Function() | None,
           server_lr=Real(), eval_every=Integer(min=1), batch_gen=Instance(list, tuple) | None)  # fmt: skip
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
    """FedAvg on the round engine, with plug-in steps for later topics.

    One round (FedAvg, McMahan et al. 2017, arXiv:1602.05629, Algorithm 1, with a server step size), each step
    a part of ``engine.Federated``:
        1. sample S, a share ``participation`` of the n clients, without replacement;
        2. local training: every sampled client starts from x and takes ``local_steps`` SGD
           steps (``LocalSGD``), sending its update U = y - x, shape (|S|, d);
        3. transforms: U <- t(U) for each t in order (compression, attack, noise, ...);
        4. aggregate: delta = aggregate(U), by default the mean weighted by client size;
        5. server step: x <- x + server_lr * delta.

    Args:
        x0: (d,) the initial server model (default: ``model.init(gen)``).
        transforms: functions (|S|, d) -> (|S|, d) applied to the updates.
        aggregate: function (|S|, d) -> (d,), e.g. a robust aggregator.
        eval_every: evaluate each client's accuracy every this many rounds (and at the end).
        batch_gen: one generator per client for the minibatches, as on separate machines
            (``mllib.flower`` runs so); default: ``gen`` draws them for all clients.

    Returns:
        The ``History`` with metrics "client_accuracy" ((n,) per recorded round) and
        "accuracy" (their mean weighted by client size); ``History.model`` is the final x.
    """
    device = clients.x.device
    x = model.init(gen, device) if x0 is None else x0.to(device)
    federation = Federated(
        x, select=uniform(clients.n, max(1, round(participation * clients.n)), gen), weights=clients.sizes.to(device),
        local=LocalSGD(model, clients, steps=local_steps, lr=lr, batch_size=batch_size, gen=batch_gen or gen),
        transforms=transforms, aggregate=None if aggregate is None else lambda U, p: aggregate(U),
        server_step=move(server_lr),
    )  # fmt: skip
    history = run(federation, rounds, metrics={"client_accuracy": lambda f: evaluate(model, f.x, clients)},
                  eval_every=eval_every, progress=progress)  # fmt: skip
    weights = clients.weights.to(device)
    history.metrics["accuracy"] = [float(a @ weights) for a in history["client_accuracy"]]
    return history
