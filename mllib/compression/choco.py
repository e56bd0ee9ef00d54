"""CHOCO-Gossip and CHOCO-SGD (Koloskova, Stich, Jaggi 2019): gossip with compressed messages.

n nodes hold the rows of X (n, d) and talk only to their neighbours in a mixing matrix W
(n, n, doubly stochastic, lecture 03). Each node also keeps public copies X_hat of every
node's model, updated only by the compressed differences the nodes send.
"""
from collections.abc import Callable

import torch

from .compressors import Compressor


def _check(X: torch.Tensor, W: torch.Tensor, gamma: float, steps: int) -> None:
    if X.dim() != 2:
        raise ValueError(f"X must have shape (n_nodes, d), got {tuple(X.shape)}")
    if W.shape != (X.shape[0], X.shape[0]):
        raise ValueError(f"W must have shape ({X.shape[0]}, {X.shape[0]}), one row per node, got {tuple(W.shape)}")
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma (consensus step size) must be in (0, 1], got {gamma}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")


def consensus_error(X: torch.Tensor) -> float:
    """Mean squared distance of the rows to their average: 1/n sum_i ||x_i - x_bar||^2."""
    return float((X - X.mean(0)).pow(2).sum(1).mean())


def choco_step(
    X: torch.Tensor, X_hat: torch.Tensor, W: torch.Tensor, compressor: Compressor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One CHOCO-Gossip step (Koloskova et al. 2019, Algorithm 1, lines 3-8) in matrix form:
    Q = C(X - X_hat) (each node compresses its change); X_hat <- X_hat + Q (every neighbour
    updates its copy); X <- X + gamma (W - I) X_hat (gossip on the public copies).

    Returns:
        The new X and X_hat, (n, d) each.
    """
    W = W.to(X.device, X.dtype)
    X_hat = X_hat + compressor(X - X_hat)
    return X + gamma * (W @ X_hat - X_hat), X_hat


def choco_gossip(
    X: torch.Tensor, W: torch.Tensor, compressor: Compressor, *, gamma: float, steps: int
) -> tuple[torch.Tensor, list[float]]:
    """CHOCO-Gossip (Koloskova et al. 2019, Algorithm 1) in matrix form.

    With X_hat = 0 at the start, each step:
        1. Q = C(X - X_hat)             (each node compresses its change, (n, d))
        2. X_hat <- X_hat + Q           (every neighbour updates its copy)
        3. X <- X + gamma (W - I) X_hat (gossip on the public copies)
    The average of the rows is preserved (W doubly stochastic) and X reaches consensus at
    a linear rate for gamma small enough (Theorem 2).

    Args:
        X: (n, d) initial values. W: (n, n) mixing matrix. compressor: a contraction
        (top-k, scaled sign, biased random-k). gamma: consensus step size in (0, 1].

    Returns:
        X after ``steps`` steps, and the consensus error before each step and after the last.
    """
    _check(X, W, gamma, steps)
    W = W.to(X.device, X.dtype)
    X_hat = torch.zeros_like(X)
    errors = [consensus_error(X)]
    for _ in range(steps):
        X, X_hat = choco_step(X, X_hat, W, compressor, gamma)  # 1.-3.
        errors.append(consensus_error(X))
    return X, errors


def naive_compressed_gossip(
    X: torch.Tensor, W: torch.Tensor, compressor: Compressor, *, gamma: float, steps: int
) -> tuple[torch.Tensor, list[float]]:
    """Gossip that sends compressed models instead of models: X <- X + gamma (W - I) C(X).

    Preserves the average but stalls: its fixed points are the X with (W - I) C(X) = 0,
    e.g. rows whose compressions agree, not rows that agree (Koloskova et al. 2019, Section 3).
    Same arguments and returns as ``choco_gossip``.
    """
    _check(X, W, gamma, steps)
    W = W.to(X.device, X.dtype)
    errors = [consensus_error(X)]
    for _ in range(steps):
        C = compressor(X)
        X = X + gamma * (W @ C - C)
        errors.append(consensus_error(X))
    return X, errors


def choco_sgd(
    grad: Callable[[torch.Tensor], torch.Tensor],
    X: torch.Tensor,
    W: torch.Tensor,
    compressor: Compressor,
    *,
    lr: float,
    gamma: float,
    steps: int,
) -> torch.Tensor:
    """CHOCO-SGD (Koloskova et al. 2019, Algorithm 2) in matrix form.

    With X_hat = 0 at the start, each step:
        1. X <- X - lr * grad(X)        (local stochastic gradient step, (n, d))
        2. Q = C(X - X_hat);  X_hat <- X_hat + Q
        3. X <- X + gamma (W - I) X_hat

    Args:
        grad: maps X (n, d) to each node's stochastic gradient at its row, (n, d).
        X, W, compressor, gamma, steps: as ``choco_gossip``. lr: SGD step size.

    Returns:
        X (n, d) after ``steps`` steps; the input is not modified.
    """
    _check(X, W, gamma, steps)
    W = W.to(X.device, X.dtype)
    X_hat = torch.zeros_like(X)
    for _ in range(steps):
        X = X - lr * grad(X)  # 1.
        X, X_hat = choco_step(X, X_hat, W, compressor, gamma)  # 2.-3.
    return X
