"""Gossip averaging and D-PSGD on the client matrix, with consensus tracking."""
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..models import FlatModel
from ..partition import Clients

Mixing = torch.Tensor | Callable[[int], torch.Tensor]


def _check_pair(X: torch.Tensor, W: torch.Tensor) -> None:
    if X.dim() != 2:
        raise ValueError(f"X must be a client matrix of shape (n, d), got shape {tuple(X.shape)}")
    if W.shape != (X.shape[0], X.shape[0]):
        n = X.shape[0]
        raise ValueError(f"W must have shape ({n}, {n}) for X with {n} rows, got {tuple(W.shape)}")


def gossip(X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """One gossip step: every node replaces its row by a weighted mean of its neighbours'.

    Update: X <- W X, i.e. x_i <- sum_j W_ij x_j (Boyd et al. 2006, "Randomized gossip
    algorithms"; Xiao & Boyd 2004). With W doubly stochastic the mean row is kept.

    Args:
        X: (n, d) client matrix.
        W: (n, n) mixing matrix (moved to X's device and dtype).

    Returns:
        (n, d) the mixed matrix; X is not modified.

    Raises:
        ValueError: if X is not 2-D or W is not (n, n).
    """
    _check_pair(X, W)
    return W.to(device=X.device, dtype=X.dtype) @ X  # (n, d)


def consensus_distance(X: torch.Tensor) -> float:
    """Mean squared distance of the rows to their average: (1/n) sum_i ||x_i - x_bar||^2.

    The consensus distance Xi^2 of Kong et al. 2021 ("Consensus control for decentralized
    deep learning", eq. (2)); zero exactly when all nodes agree.

    Args:
        X: (n, d) client matrix.

    Returns:
        Xi^2 as a float.
    """
    if X.dim() != 2:
        raise ValueError(f"X must be a client matrix of shape (n, d), got shape {tuple(X.shape)}")
    X = X.double()
    return float((X - X.mean(0)).pow(2).sum(1).mean())


def gossip_run(X: torch.Tensor, W: Mixing, steps: int) -> list[float]:
    """Gossip ``steps`` times and record the consensus distance before each step and after the last.

    Args:
        X: (n, d) client matrix.
        W: (n, n) mixing matrix, or a function t -> W_t for a time-varying topology.
        steps: number of gossip steps (>= 0).

    Returns:
        ``steps + 1`` consensus distances Xi_t^2, t = 0 .. steps.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    out = [consensus_distance(X)]
    for t in range(steps):
        X = gossip(X, W(t) if callable(W) else W)
        out.append(consensus_distance(X))
    return out


def dpsgd_step(X: torch.Tensor, W: torch.Tensor, G: torch.Tensor, lr: float) -> torch.Tensor:
    """One step of D-PSGD: average with the neighbours and take a local gradient step.

    Update (Lian et al. 2017, "Can decentralized algorithms outperform centralized
    algorithms?", Algorithm 1, steps 4-6): X_{k+1} = W X_k - lr * G(X_k), where row i of
    G is node i's stochastic gradient at its own model x_i, computed before mixing.

    Args:
        X: (n, d) client matrix.
        W: (n, n) mixing matrix.
        G: (n, d) stochastic gradients at X.
        lr: step size gamma.

    Returns:
        (n, d) the next client matrix; the inputs are not modified.

    Raises:
        ValueError: for mismatched shapes or a negative lr.
    """
    _check_pair(X, W)
    if G.shape != X.shape:
        raise ValueError(f"G must have the shape of X, {tuple(X.shape)}, got {tuple(G.shape)}")
    if lr < 0:
        raise ValueError(f"lr must be >= 0, got {lr}")
    return gossip(X, W) - lr * G


@dataclass
class DecentralizedHistory:
    """What a D-PSGD run recorded, per evaluated step."""

    steps: list[int] = field(default_factory=list)
    consensus: list[float] = field(default_factory=list)  # Xi^2 of the client matrix
    accuracy: list[float] = field(default_factory=list)  # test accuracy of each node's model, mean over nodes
    average_accuracy: list[float] = field(default_factory=list)  # test accuracy of the averaged model x_bar
    X: torch.Tensor | None = None  # (n, d) final client matrix


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
) -> DecentralizedHistory:
    """Decentralized parallel SGD on the client matrix (Lian et al. 2017, Algorithm 1).

    Every node starts from the same x0; step k (k = 0 .. steps - 1):
        1. each node draws a minibatch of its own data (``clients.batches``);
        2. each node computes its stochastic gradient G_i at its own x_i;
        3. gossip and descend: X <- W_k X - lr * G  (``dpsgd_step``).
    Accuracies are on the shared test set (each node's view of it, ``clients.test_sets``):
    the mean over nodes of each node's own model, and the averaged model x_bar.

    Args:
        model: the architecture.
        clients: n clients' data, one per node.
        W: (n, n) mixing matrix, or a function k -> W_k (time-varying topology).
        steps, lr, batch_size: SGD's hyperparameters.
        gen: CPU generator for init and minibatches.
        x0: (d,) common initial model (default ``model.init(gen)``).
        eval_every: record every this many steps (and at step 0 and the end).

    Returns:
        A ``DecentralizedHistory``; ``.X`` is the final (n, d) client matrix.
    """
    if steps < 0 or eval_every < 1:
        raise ValueError(f"steps must be >= 0 and eval_every >= 1, got steps={steps}, eval_every={eval_every}")
    device = clients.x.device
    x = model.init(gen, device) if x0 is None else x0.to(device)
    X = x.expand(clients.n, -1).clone()  # (n, d)
    history = DecentralizedHistory()

    x_test, y_test = clients.test_sets()  # (n, M, ...), (n, M)

    def record(k: int) -> None:
        history.steps.append(k)
        history.consensus.append(consensus_distance(X))
        history.accuracy.append(float(model.accuracy(X, x_test, y_test).mean()))
        history.average_accuracy.append(float(model.accuracy(X.mean(0).expand_as(X), x_test, y_test).mean()))

    record(0)
    for k in range(steps):
        xb, yb = clients.batches(batch_size, gen)  # 1. (n, B, ...), (n, B)
        G = model.grad(X, xb, yb)  # 2. (n, d)
        X = dpsgd_step(X, W(k) if callable(W) else W, G, lr)  # 3.
        if (k + 1) % eval_every == 0 or k + 1 == steps:
            record(k + 1)
    history.X = X
    return history
