"""Adversarial training (Madry et al. 2018, arXiv:1706.06083): SGD on the attacked minibatches of one row."""
import torch

from ..clients import MODEL
from ..constraints import Function, Generator, Indices, Integer, Integers, Real, Rule, Tensor, constrain
from ..models import FlatModel
from .attacks import BATCH, Attack, classifier

TRAINING = dict(model=MODEL, row=Tensor(1), x=Tensor(), y=Tensor(1, integer=True), lr=Real(ge=0), batch_size=BATCH)


@constrain(**TRAINING, order=Indices(), attack=Function())
def adversarial_epoch(
    model: FlatModel,
    row: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    order: torch.Tensor,
    *,
    attack: Attack,
    lr: float,
    batch_size: int,
) -> torch.Tensor:
    """One epoch of adversarial training: SGD on the loss at the attacked minibatch.

    For each minibatch B of ``order`` (consecutive chunks of ``batch_size``; the last may
    be shorter): x_adv = attack(f_w, x_B, y_B), the inner maximization, then
    w <- w - lr * grad_w L(f_w(x_adv), y_B), the outer minimization.

    Args:
        model: the architecture; row: (d,) its parameters.
        x: (N, C, H, W) training images; y: (N,) labels; order: (N,) a permutation of range(N).
        attack: (f, x, y) -> x_adv, e.g. ``functools.partial(pgd, eps=0.1, steps=3)``.

    Returns:
        (d,) the row after the epoch; ``row`` is not modified.

    Reference: Madry et al. 2018, arXiv:1706.06083, Eq. (2.1) and Section 4 (training on PGD examples only).
    """
    for idx in order.split(batch_size):
        xb, yb = x[idx], y[idx]
        x_adv = attack(classifier.__wrapped__(model, row.detach()), xb, yb)  # inner max
        row = row - lr * model.grad(row[None], x_adv[None], yb[None])[0]  # outer min
    return row


@constrain(**TRAINING, attack=Function() | None, epochs=Integer(min=0), gen=Generator())
def adversarial_training(
    model: FlatModel,
    row: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    attack: Attack | None,
    epochs: int,
    lr: float,
    batch_size: int,
    gen: torch.Generator,
) -> torch.Tensor:
    """``epochs`` epochs of ``adversarial_epoch``, each over a fresh permutation from ``gen``.

    ``attack=None`` is standard training (the attack that returns its input).
    """
    attack = attack or (lambda f, xb, yb: xb)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen).to(y.device)
        row = adversarial_epoch.__wrapped__(model, row, x, y, order, attack=attack, lr=lr, batch_size=batch_size)
    return row


@constrain(Rule("channels", lambda channels: len(channels) == 2,
                "channels must be a pair (c1, c2) of the two convolutions, got {channels}"),
           n_classes=Integer(min=1), channels=Integers(min=1))  # fmt: skip
def small_cnn(n_classes: int = 10, channels: tuple[int, int] = (8, 16)) -> torch.nn.Sequential:
    """A CNN for (1, 28, 28) images: two 4x4 convolutions of stride 2 with ReLU, then a linear layer.

    Strided convolutions instead of ``mllib.cnn``'s max-pooling: on one CPU thread max-pooling
    took a quarter of a training step, and attacks back-propagate to the input many times.
    """
    c1, c2 = channels
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, c1, 4, stride=2, padding=1), torch.nn.ReLU(),  # (c1, 14, 14)
        torch.nn.Conv2d(c1, c2, 4, stride=2, padding=1), torch.nn.ReLU(),  # (c2, 7, 7)
        torch.nn.Flatten(), torch.nn.Linear(c2 * 49, n_classes),
    )  # fmt: skip
