"""CHOCO-Gossip and CHOCO-SGD (Koloskova, Stich, Jaggi 2019, arXiv:1902.00340): gossip with compressed messages.

n nodes hold the rows of X (n, d) and talk only to their neighbours in a mixing matrix W
(n, n, doubly stochastic, lecture 03). Each node also keeps public copies X_hat of every
node's model, updated only by the compressed differences the nodes send.

The gossip parts (``Choco``, ``NaiveCompressedGossip``) are lecture 03's ``Gossip`` with
another step, so they run alone (``decentralized.gossip_alone``) or as the combine part of
the round engine's ``Decentralized`` (CHOCO-SGD, the playground's gossip).
"""
from collections.abc import Callable

import torch

from ..constraints import ClientMatrix, Function, Instance, Integer, Real, Rule, constrain
from ..decentralized import Gossip, gossip_alone
from ..decentralized.gossip import MIXING, MIXINGS, SQUARE, SQUARE_OR_SCHEDULE, Mixing
from ..engine import Decentralized, run
from .compressors import Compressor

PART = dict(compressor=Instance(Compressor), gamma=Real(gt=0, le=1))  # gamma: the consensus step size
STEP = dict(X=ClientMatrix(), W=MIXING, **PART)
RUN = dict(**STEP, steps=Integer(min=1))


@constrain(SQUARE, Rule("X_hat", lambda X, X_hat: X_hat.shape == X.shape, "X_hat must have the shape of X, {X.shape}, "
                        "got {X_hat.shape}"), **STEP, X_hat=ClientMatrix())
def choco_step(
    X: torch.Tensor, X_hat: torch.Tensor, W: torch.Tensor, compressor: Compressor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One CHOCO-Gossip step (Koloskova et al. 2019, Algorithm 1, lines 3-8) in matrix form:
    Q = C(X - X_hat) (each node compresses its change); X_hat <- X_hat + Q (every neighbour
    updates its copy); X <- X + gamma (W - I) X_hat (gossip on the public copies).

    Args:
        X, X_hat: (n, d) the models and their public copies. W: (n, n) mixing matrix.
        compressor: a contraction. gamma: consensus step size in (0, 1].

    Returns:
        The new X and X_hat, (n, d) each.
    """
    W = W.to(X.device, X.dtype)
    X_hat = X_hat + compressor(X - X_hat)
    return X + gamma * (W @ X_hat - X_hat), X_hat


@constrain(SQUARE, **STEP)
def naive_step(X: torch.Tensor, W: torch.Tensor, compressor: Compressor, gamma: float) -> torch.Tensor:
    """One step of gossip on compressed models (Koloskova et al. 2019, Section 3's strawman):
    X <- X + gamma (W - I) C(X).

    Args:
        X: (n, d) models. W: (n, n) mixing matrix. compressor, gamma: as ``choco_step``.

    Returns:
        (n, d) the new X.
    """
    C = compressor(X)
    return X + gamma * (W.to(X.device, X.dtype) @ C - C)


class Choco(Gossip):
    """CHOCO-Gossip as a gossip part (Koloskova et al. 2019, arXiv:1902.00340, Algorithm 1): ``step(X, r)`` is one
    ``choco_step`` with W_{r-1}; as a combine part, (X, U, r) -> step(X + U, r): the local
    updates first, then the compressed gossip (CHOCO-SGD, Algorithm 2).

    Args:
        W: (n, n) mixing matrix, or k -> W_k.
        compressor: a contraction (top-k, scaled sign, biased random-k); it counts its rows.
        gamma: consensus step size in (0, 1].

    State: ``X_hat`` (n, d) the public copies (zero before the first step); ``bits_sent``:
    every directed link carries one compressed message per round.
    """

    @constrain(SQUARE_OR_SCHEDULE, W=MIXINGS, **PART)
    def __init__(self, W: Mixing, compressor: Compressor, gamma: float):
        super().__init__(W, bits_per_row=compressor.bits_per_row)
        self.compressor, self.gamma = compressor, gamma
        # State
        self.X_hat: torch.Tensor | None = None

    def step(self, X: torch.Tensor, r: int) -> torch.Tensor:
        if self.X_hat is None:
            self.X_hat = torch.zeros_like(X)
        X, self.X_hat = choco_step.__wrapped__(X, self.X_hat, self.mixing(r, X), self.compressor, self.gamma)
        return X

    def state_dict(self) -> dict:
        return {"X_hat": self.X_hat, "bits_sent": self.bits_sent}


class NaiveCompressedGossip(Gossip):
    """Gossip on compressed models as a gossip part: ``step(X, r)`` is one ``naive_step`` with W_{r-1}.

    Args: W, compressor, gamma as ``Choco``. State: ``bits_sent``.
    """

    @constrain(SQUARE_OR_SCHEDULE, W=MIXINGS, **PART)
    def __init__(self, W: Mixing, compressor: Compressor, gamma: float):
        super().__init__(W, bits_per_row=compressor.bits_per_row)
        self.compressor, self.gamma = compressor, gamma

    def step(self, X: torch.Tensor, r: int) -> torch.Tensor:
        return naive_step.__wrapped__(X, self.mixing(r, X), self.compressor, self.gamma)


@constrain(SQUARE, **RUN)
def choco_gossip(
    X: torch.Tensor, W: torch.Tensor, compressor: Compressor, *, gamma: float, steps: int
) -> tuple[torch.Tensor, list[float]]:
    """CHOCO-Gossip (Koloskova et al. 2019, arXiv:1902.00340, Algorithm 1) in matrix form.

    With X_hat = 0 at the start, each step (``choco_step``, run by the engine as ``Choco``):
        1. Q = C(X - X_hat)             (each node compresses its change, (n, d))
        2. X_hat <- X_hat + Q           (every neighbour updates its copy)
        3. X <- X + gamma (W - I) X_hat (gossip on the public copies)
    The average of the rows is preserved (W doubly stochastic) and X reaches consensus at
    a linear rate for gamma small enough (Theorem 2).

    Args:
        X: (n, d) initial values. W: (n, n) mixing matrix. compressor: a contraction
        (top-k, scaled sign, biased random-k). gamma: consensus step size in (0, 1].
        steps: >= 1.

    Returns:
        X after ``steps`` steps, and the consensus distance (``decentralized.consensus_distance``)
        before each step and after the last.

    Raises:
        ValueError: for X not 2-D, W not (n, n), gamma outside (0, 1] or steps < 1.
    """
    history = gossip_alone(X, Choco(W, compressor, gamma), steps)
    return history.model, history["consensus"]


@constrain(SQUARE, **RUN)
def naive_compressed_gossip(
    X: torch.Tensor, W: torch.Tensor, compressor: Compressor, *, gamma: float, steps: int
) -> tuple[torch.Tensor, list[float]]:
    """Gossip that sends compressed models instead of models: X <- X + gamma (W - I) C(X).

    Preserves the average but stalls: its fixed points are the X with (W - I) C(X) = 0,
    e.g. rows whose compressions agree, not rows that agree (Koloskova et al. 2019, Section 3).
    Same arguments, returns and errors as ``choco_gossip``.
    """
    history = gossip_alone(X, NaiveCompressedGossip(W, compressor, gamma), steps)
    return history.model, history["consensus"]


@constrain(SQUARE, grad=Function(), **RUN, lr=Real(ge=0))
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
    """CHOCO-SGD (Koloskova et al. 2019, arXiv:1902.00340, Algorithm 2) in matrix form, on the round engine.

    With X_hat = 0 at the start, each step (one round of ``engine.Decentralized``):
        1. U = -lr * grad(X)            (local part: each node's SGD step, (n, d))
        2. X <- X + U;  Q = C(X - X_hat);  X_hat <- X_hat + Q
        3. X <- X + gamma (W - I) X_hat (2.-3.: the combine part ``Choco``)

    Args:
        grad: maps X (n, d) to each node's stochastic gradient at its row, (n, d).
        X, W, compressor, gamma, steps: as ``choco_gossip``. lr: SGD step size.

    Returns:
        X (n, d) after ``steps`` steps; the input is not modified.

    Raises:
        ValueError: as ``choco_gossip``.
    """
    nodes = Decentralized(X, local=lambda X: -lr * grad(X), combine=Choco(W, compressor, gamma))  # 1., 2.-3.
    return run(nodes, steps).model


__all__ = [
    "Choco", "NaiveCompressedGossip", "choco_gossip", "choco_sgd", "choco_step", "naive_compressed_gossip",
    "naive_step",
]
