"""Self-checks for lab 06_adversarial_examples: FGSM, the PGD L-infinity step, an adversarial-training epoch."""
import torch

from .. import adversarial
from ..models import FlatModel, mlp
from ..runtime import rand, randn
from . import self_check


class TinyClassifier:
    """A random linear classifier on small images, with a short description for messages."""

    def __init__(self, side: int, n_classes: int, gen: torch.Generator):
        self.side, self.n_classes = side, n_classes
        self.weight = randn(n_classes, side * side, gen=gen)
        self.bias = randn(n_classes, gen=gen)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T + self.bias

    def __repr__(self) -> str:
        return f"linear classifier on 1x{self.side}x{self.side} images, {self.n_classes} classes"


class FGSMAttack:
    """FGSM of radius eps as an attack (f, x, y) -> x_adv."""

    def __init__(self, eps: float):
        self.eps = eps

    def __call__(self, f, x, y):
        return adversarial.fgsm(f, x, y, self.eps)

    def __repr__(self) -> str:
        return f"FGSM(eps={self.eps})"


def _images(b: int, side: int, gen: torch.Generator) -> torch.Tensor:
    """(b, 1, side, side) in [0, 1], a third of the pixels exactly 0 or 1 (as on MNIST)."""
    x = rand(b, 1, side, side, gen=gen)
    return torch.where(x < 0.2, 0.0, torch.where(x > 0.87, 1.0, x))


def reference_fgsm(f, x, y, eps):
    return adversarial.fgsm(f, x, y, eps)


@self_check(reference_fgsm)
def fgsm(gen):
    """f, images (B, 1, s, s) in [0, 1], labels (B,), eps."""
    cases = []
    for b, side, classes, eps in [(1, 2, 2, 0.1), (4, 4, 3, 0.3), (8, 5, 10, 0.05), (3, 3, 4, 0.0), (6, 4, 5, 1.0)]:
        f = TinyClassifier(side, classes, gen)
        y = torch.randint(0, classes, (b,), generator=gen)
        cases.append(dict(f=f, x=_images(b, side, gen), y=y, eps=eps))
    return cases


def reference_pgd_linf_step(x_adv, grad, x, eps, step_size):
    return adversarial.pgd_step(x_adv, grad, x, eps, step_size, "inf")


@self_check(reference_pgd_linf_step)
def pgd_linf_step(gen):
    """x_adv inside the ball around x, a gradient, x in [0, 1], eps, step_size."""
    cases = []
    for shape, eps, step in [((1, 1, 2, 2), 0.1, 0.05), ((3, 1, 4, 4), 0.3, 0.1), ((5, 1, 3, 3), 0.05, 0.2),
                             ((2, 1, 5, 5), 0.2, 0.2), ((4, 1, 4, 4), 0.0, 0.1)]:  # fmt: skip
        x = _images(shape[0], shape[-1], gen)
        x_adv = (x + eps * (2 * rand(*shape, gen=gen) - 1)).clamp(0, 1)
        cases.append(dict(x_adv=x_adv, grad=randn(*shape, gen=gen), x=x, eps=eps, step_size=step))
    return cases


def reference_adversarial_epoch(model, row, x, y, order, attack, lr, batch_size):
    return adversarial.adversarial_epoch(model, row, x, y, order, attack=attack, lr=lr, batch_size=batch_size)


@self_check(reference_adversarial_epoch)
def adversarial_epoch(gen):
    """A tiny MLP on 4x4 images; the permutation and the attack are given."""
    cases = []
    for n, batch, eps, lr in [(8, 4, 0.1, 0.5), (10, 3, 0.2, 0.1), (12, 12, 0.0, 1.0), (9, 2, 0.3, 0.3)]:
        model = FlatModel(mlp(16, 3, hidden=(5,)))
        cases.append(dict(
            model=model, row=model.init(gen), x=_images(n, 4, gen), y=torch.randint(0, 3, (n,), generator=gen),
            order=torch.randperm(n, generator=gen), attack=FGSMAttack(eps), lr=lr, batch_size=batch,
        ))  # fmt: skip
    return cases
