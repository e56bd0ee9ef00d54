"""Gossip averaging and D-PSGD on the client matrix, as configurations of the round engine.

A round without a server (``engine.Decentralized``): every node computes a message from its own
row (the local part), then mixes with its neighbours (the combine part). This module's parts:

| part | role | what it does to the (n, d) client matrix X |
|---|---|---|
| ``Gradients`` | local | G_i = grad f_i(x_i; its minibatch) |
| ``LocalUpdates`` | local | U_i = (K local SGD steps from x_i) - x_i |
| ``Gossip`` | combine | X <- W (X + U); its ``step`` is the gossip alone, X <- W X |
| ``DPSGD`` | combine | X <- W X - lr G (``dpsgd_step``) |

``GossipAveraging`` runs a gossip part alone, without training. The parts take the mixing as
``mix``: ``gossip`` (W X) on the client matrix; a torch.distributed rank passes its exchange
with the neighbours (``distributed.Exchange``), so the processes run the same parts.
"""
from collections.abc import Callable

import torch

from ..clients import CLIENTS, LOCAL_SGD, MODEL, local_sgd
from ..constraints import ClientMatrix, Function, Generator, Instance, Integer, Real, Rule, Tensor, constrain
from ..engine import Decentralized, History, Rounds, run
from ..models import FlatModel
from ..partition import Clients

Mixing = torch.Tensor | Callable[[int], torch.Tensor]


MIXING = Tensor(2, finite=True, description="a mixing matrix (n, n)")
SQUARE = Rule("W", lambda X, W: W.shape == (X.shape[0], X.shape[0]),
              lambda X, W: f"W must have shape ({len(X)}, {len(X)}) for X with {len(X)} rows, got {tuple(W.shape)}")
MIXINGS = MIXING | Function()  # a matrix, or k -> W_k
# a fixed W is square; a schedule's W_k are checked as the rounds draw them (``Gossip.mixing``)
SQUARE_OR_SCHEDULE = Rule("W", lambda W: callable(W) or W.shape[0] == W.shape[1],
                          "W must be a square mixing matrix (n, n), got shape {W.shape}")


@constrain(SQUARE, X=ClientMatrix(), W=MIXING)
def gossip(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """One gossip step: every node replaces its row by a weighted mean of its neighbours'.

    Update: X <- W X, i.e. x_i <- sum_j W_ij x_j (Boyd et al. 2006, "Randomized gossip
    algorithms", doi:10.1109/TIT.2006.874516; Xiao & Boyd 2004). With W doubly stochastic the mean
    row is kept.

    Args:
        X: (n, d) client matrix.
        W: (n, n) mixing matrix (moved to X's device and dtype).

    Returns:
        (n, d) the mixed matrix; X is not modified.

    Raises:
        ValueError: if X is not 2-D or W is not (n, n).
    """
    return W.to(device=X.device, dtype=X.dtype) @ X  # (n, d)


@constrain(X=ClientMatrix())
def consensus_distance(X: torch.Tensor) -> float:
    """Mean squared distance of the rows to their average: (1/n) sum_i ||x_i - x_bar||^2.

    The consensus distance Xi^2 of Kong et al. 2021 ("Consensus control for decentralized
    deep learning", eq. (2)); zero exactly when all nodes agree. Computed in float64.

    Args:
        X: (n, d) client matrix.

    Returns:
        Xi^2 as a float.

    Raises:
        ValueError: if X is not 2-D.
    """
    X = X.double()
    return float((X - X.mean(0)).pow(2).sum(1).mean())


@constrain(W=MIXING)
def links(W: torch.Tensor) -> int:
    """Directed links of a mixing matrix (W_ij != 0, i != j): the messages of one gossip step."""
    return int(W.ne(0).sum() - W.diagonal().ne(0).sum())


@constrain(Rule("G", lambda X, G: G.shape == X.shape, "G must have the shape of X, {X.shape}, got {G.shape}"),
           X=ClientMatrix(), W=MIXING, G=ClientMatrix(), lr=Real(ge=0), mix=Function())  # fmt: skip
def dpsgd_step(
    X: torch.Tensor, W: torch.Tensor, G: torch.Tensor, lr: float, *, mix: Callable = gossip
) -> torch.Tensor:
    """One step of D-PSGD: average with the neighbours and take a local gradient step.

    Update (Lian et al. 2017, "Can decentralized algorithms outperform centralized
    algorithms?", arXiv:1705.09056, Algorithm 1, steps 4-6): X_{k+1} = W X_k - lr * G(X_k), where row i of
    G is node i's stochastic gradient at its own model x_i, computed before mixing.

    Args:
        X: (n, d) client matrix.
        W: (n, n) mixing matrix.
        G: (n, d) stochastic gradients at X.
        lr: step size gamma.
        mix: (X, W) -> W X: ``gossip``; a torch.distributed rank passes its exchange with
            its neighbours, X and G then being its own row (1, d).

    Returns:
        (n, d) the next client matrix; the inputs are not modified.

    Raises:
        ValueError: for mismatched shapes or a negative lr.
    """
    return mix(X, W) - lr * G


# ------------------------------------------------------------------------------ parts
class Gradients:
    """Every node's stochastic gradient at its own row: a local part, X (k, d) -> G (k, d).

    1. every node draws a minibatch of ``batch_size`` of its own data (``Clients.batches``);
    2. G_i = grad f_i(x_i; batch_i), all rows at once.

    Args:
        model, clients: the architecture and the n nodes' data.
        batch_size: samples per node and step.
        gen: CPU generator of the minibatches.
        rows: the nodes whose rows X holds (default all n). The minibatches of all n nodes
            are drawn anyway, so that a torch.distributed rank (``slice(rank, rank + 1)``)
            draws what the simulation draws.
    """

    @constrain(model=MODEL, clients=CLIENTS, batch_size=Integer(min=1), gen=Generator(), rows=Instance(slice) | None)
    def __init__(self, model: FlatModel, clients: Clients, *, batch_size: int, gen: torch.Generator,
                 rows: slice | None = None):  # fmt: skip
        self.model, self.clients, self.batch_size, self.gen, self.rows = model, clients, batch_size, gen, rows

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        xb, yb = self.clients.batches(self.batch_size, self.gen)  # 1. (n, B, ...), (n, B)
        if self.rows is not None:
            xb, yb = xb[self.rows], yb[self.rows]
        return self.model.grad(X, xb, yb)  # 2. (k, d)


class LocalUpdates:
    """K local SGD steps at every node from its own row, sent as the update U_i = y_i - x_i:
    a local part, X (n, d) -> U (n, d) (local steps then gossip: Lian et al. 2017 with
    Wang & Joshi 2018, "Cooperative SGD").

    Args:
        model, clients: the architecture and the n nodes' data.
        steps, lr, batch_size: local SGD's hyperparameters (``mllib.local_sgd``).
        gen: CPU generator of the minibatches.
    """

    @constrain(model=MODEL, clients=CLIENTS, **LOCAL_SGD)
    def __init__(self, model: FlatModel, clients: Clients, *, steps: int, lr: float, batch_size: int,
                 gen: torch.Generator):  # fmt: skip
        self.model, self.clients, self.gen = model, clients, gen
        self.steps, self.lr, self.batch_size = steps, lr, batch_size

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        # checked once at construction, not every round
        Y = local_sgd.__wrapped__(self.model, X, self.clients, steps=self.steps, lr=self.lr,
                                  batch_size=self.batch_size, gen=self.gen)  # fmt: skip
        return Y - X


class Gossip:
    """Gossip with the neighbours, a combine part: (X, U, r) -> W_{r-1} (X + U).

    Every node applies its local update U_i, then averages with its neighbours (D-PSGD with
    local steps, on a topology that may change every round: Koloskova et al. 2020, arXiv:2003.10422).
    ``step(X, r)`` is the gossip alone, X <- W_{r-1} X (Boyd et al. 2006, doi:10.1109/TIT.2006.874516),
    which ``GossipAveraging`` runs without training; subclasses (CHOCO-Gossip) replace it.

    Args:
        W: (n, n) mixing matrix, or a function k -> W_k (round r mixes with W_{r-1}).
        mix: (X, W) -> W X: ``gossip``, or a torch.distributed rank's exchange.
        bits_per_row: d -> bits of one message of d entries (default 32 d: float32).

    State: ``bits_sent``: every directed link of W carries one message per round.
    """

    @constrain(SQUARE_OR_SCHEDULE, W=MIXINGS, mix=Function(), bits_per_row=Function() | None)
    def __init__(self, W: Mixing, *, mix: Callable = gossip, bits_per_row: Callable[[int], int] | None = None):
        self.W, self.mix = W, getattr(mix, "__wrapped__", mix)  # W checked here once, not every round
        self.bits_per_row = (lambda d: 32 * d) if bits_per_row is None else bits_per_row
        # State
        self.bits_sent = 0

    def mixing(self, r: int, X: torch.Tensor) -> torch.Tensor:
        """W_{r-1} (n, n), the mixing of round r for X; counts the messages of X's rows it carries.

        Raises:
            ValueError: if a schedule's W_{r-1} is not a square matrix (a comparison per round;
            a fixed W was checked at construction).
        """
        W = self.W(r - 1) if callable(self.W) else self.W
        if not (isinstance(W, torch.Tensor) and W.dim() == 2 and W.shape[0] == W.shape[1]):
            got = f"shape {tuple(W.shape)}" if isinstance(W, torch.Tensor) else repr(W)
            raise ValueError(f"the mixing of round {r} must be a square matrix (n, n), got {got}")
        self.bits_sent += links.__wrapped__(W) * self.bits_per_row(X.shape[1])
        return W

    def step(self, X: torch.Tensor, r: int) -> torch.Tensor:
        """The gossip of round r alone: X (n, d) -> W_{r-1} X."""
        return self.mix(X, self.mixing(r, X))

    def __call__(self, X: torch.Tensor, U: torch.Tensor, r: int) -> torch.Tensor:
        return self.step(X + U, r)

    def state_dict(self) -> dict:
        return {"bits_sent": self.bits_sent}


class DPSGD(Gossip):
    """D-PSGD's combine part: (X, G, r) -> W_{r-1} X - lr G (``dpsgd_step``; Lian et al. 2017,
    arXiv:1705.09056, Algorithm 1). Args: W and mix as ``Gossip``; lr: the step size."""

    @constrain(SQUARE_OR_SCHEDULE, W=MIXINGS, lr=Real(ge=0), mix=Function())
    def __init__(self, W: Mixing, lr: float, *, mix: Callable = gossip):
        super().__init__(W, mix=mix)
        self.lr = lr

    def __call__(self, X: torch.Tensor, G: torch.Tensor, r: int) -> torch.Tensor:
        return dpsgd_step.__wrapped__(X, self.mixing(r, X), G, self.lr, mix=self.mix)


class GossipAveraging(Rounds):
    """Gossip alone, without training: round r is one ``step(X, r)`` of a gossip part
    (``Gossip``; CHOCO-Gossip's ``compression.Choco``), run by ``engine.run``.

    Args:
        X0: (n, d) the nodes' initial values.
        part: the gossip part, with ``step(X, r) -> X`` and ``bits_sent``.

    State: ``X`` (n, d) the nodes' values.
    """

    @constrain(X0=ClientMatrix(), part=Instance(Gossip))
    def __init__(self, X0: torch.Tensor, part: Gossip):
        self.part = part
        # State
        self.X = X0

    def round(self, r: int) -> None:
        self.X = self.part.step(self.X, r)

    @property
    def model(self) -> torch.Tensor:
        return self.X

    @property
    def bits_sent(self) -> int:
        return self.part.bits_sent


@constrain(X=ClientMatrix(), part=Instance(Gossip), steps=Integer(min=1))
def gossip_alone(X: torch.Tensor, part: Gossip, steps: int) -> History:
    """``steps`` rounds of a gossip part alone (``GossipAveraging``), recording the consensus
    distance before the first step and after each.

    Args:
        X: (n, d) the nodes' initial values.
        part: ``Gossip``, or a subclass (CHOCO-Gossip, naive compressed gossip).
        steps: gossip steps, >= 1.

    Returns:
        The ``History``: rounds 0 .. steps, metric "consensus" (Xi_t^2), ``model`` the final X.

    Raises:
        ValueError: for steps that are not an integer >= 1, or X not 2-D.
    """
    return run(GossipAveraging(X, part), steps, metrics={"consensus": lambda a: consensus_distance(a.X)},
               record_start=True)  # fmt: skip


@constrain(X=ClientMatrix(), W=MIXINGS, steps=Integer(min=1))
def gossip_run(X: torch.Tensor, W: Mixing, steps: int) -> list[float]:
    """Gossip ``steps`` times and record the consensus distance before each step and after the last.

    Update per step t = 0 .. steps - 1: X <- W_t X (``gossip``), as ``gossip_alone`` of ``Gossip(W)``.

    Args:
        X: (n, d) client matrix.
        W: (n, n) mixing matrix, or a function t -> W_t for a time-varying topology.
        steps: number of gossip steps (>= 1).

    Returns:
        ``steps + 1`` consensus distances Xi_t^2, t = 0 .. steps.

    Raises:
        ValueError: for steps < 1, X not 2-D or a W not (n, n).
    """
    return gossip_alone(X, Gossip(W), steps)["consensus"]


@constrain(model=MODEL, clients=CLIENTS, W=MIXINGS, steps=Integer(min=1), lr=Real(ge=0), batch_size=Integer(min=1),
           gen=Generator(), x0=Tensor(1) | None, eval_every=Integer(min=1))  # fmt: skip
def dpsgd(
    model: FlatModel,
    clients: Clients,
    W: Mixing,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    gen: torch.Generator,
    x0: torch.Tensor | None = None,
    eval_every: int = 10,
) -> History:
    """Decentralized parallel SGD on the client matrix (Lian et al. 2017, arXiv:1705.09056, Algorithm 1).

    Every node starts from the same x0; step k (k = 0 .. steps - 1), one round of
    ``engine.Decentralized``:
        1. each node draws a minibatch of its own data (``Gradients``);
        2. each node computes its stochastic gradient G_i at its own x_i;
        3. gossip and descend: X <- W_k X - lr * G  (``DPSGD``, ``dpsgd_step``).
    Accuracies are on the shared test set (each node's view of it, ``clients.held_out_sets``):
    the mean over nodes of each node's own model, and the averaged model x_bar.

    Args:
        model: the architecture.
        clients: n clients' data, one per node.
        W: (n, n) mixing matrix, or a function k -> W_k (time-varying topology).
        steps, lr, batch_size: SGD's hyperparameters (steps >= 1).
        gen: CPU generator for init and minibatches.
        x0: (d,) common initial model (default ``model.init(gen)``).
        eval_every: record every this many steps (and at step 0 and the end).

    Returns:
        The ``History`` (``rounds`` are steps 0, eval_every, ..., steps) with metrics
        "consensus" (Xi^2 of the client matrix), "accuracy" (each node's own model, mean over
        nodes) and "average_accuracy" (the averaged model x_bar); ``model`` is the final
        (n, d) client matrix.

    Raises:
        ValueError: for steps or eval_every that are not integers >= 1.
    """
    device = clients.x.device
    x = model.init(gen, device) if x0 is None else x0.to(device)
    X = x.expand(clients.n, -1).clone()  # (n, d)
    x_test, y_test = clients.held_out_sets()  # (n, M, ...), (n, M)
    metrics = {
        "consensus": lambda a: consensus_distance(a.X),
        "accuracy": lambda a: float(model.accuracy(a.X, x_test, y_test).mean()),
        "average_accuracy": lambda a: float(model.accuracy(a.X.mean(0).expand_as(a.X), x_test, y_test).mean()),
    }
    nodes = Decentralized(X, local=Gradients(model, clients, batch_size=batch_size, gen=gen), combine=DPSGD(W, lr))
    return run(nodes, steps, metrics=metrics, eval_every=eval_every, record_start=True)
