"""Self-checks for lab 06_adversarial_examples: FGSM, PGD (built from its update), an adversarial-training epoch."""
import torch
import torch.nn.functional as F

from .. import adversarial
from ..models import FlatModel, mlp
from ..runtime import rand, randn
from . import Mistake, self_check


class TinyClassifier:
    """A random linear classifier on small images, with a short description for messages."""

    def __init__(self, side: int, n_classes: int, gen: torch.Generator, dtype: torch.dtype = torch.float32):
        self.side, self.n_classes = side, n_classes
        self.weight = randn(n_classes, side * side, gen=gen).to(dtype)
        self.bias = randn(n_classes, gen=gen).to(dtype)

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


def _gradient(f, x, y):
    """The gradient of the summed cross-entropy with respect to the images (B, ...)."""
    x = x.detach().clone().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(f(x), y, reduction="sum"), x)[0]


# ---- Exercise 1: FGSM


def reference_fgsm(f, x, y, eps):
    return adversarial.fgsm(f, x, y, eps)


def _fgsm_variant(direction=lambda g: g.sign(), sign=1.0, clip=True):
    def wrong(f, x, y, eps):
        moved = x + sign * eps * direction(_gradient(f, x, y))
        return moved.clamp(0, 1) if clip else moved

    return wrong


@self_check(
    reference_fgsm,
    mistakes=[
        Mistake(_fgsm_variant(sign=-1.0), "your step lowers the loss: the image moves against the gradient",
                "an attack ascends the loss: x + eps * sign(grad)"),
        Mistake(_fgsm_variant(clip=False), "some pixels leave [0, 1]: the result is not clipped",
                "an image has pixels in [0, 1]: clamp(0, 1) after the step"),
        Mistake(_fgsm_variant(direction=lambda g: g), "you step along the gradient itself, not its sign",
                "the L-infinity step moves every pixel by exactly eps: eps * grad.sign()"),
    ],
)  # fmt: skip
def fgsm(gen):
    """f, images (B, 1, s, s) in [0, 1], labels (B,), eps."""
    cases = []
    for b, side, classes, eps in [(4, 4, 3, 0.3), (1, 2, 2, 0.1), (8, 5, 10, 0.05), (3, 3, 4, 0.0), (6, 4, 5, 1.0)]:
        f = TinyClassifier(side, classes, gen)
        y = torch.randint(0, classes, (b,), generator=gen)
        cases.append(dict(f=f, x=_images(b, side, gen), y=y, eps=eps))
    return cases


# ---- Exercise 2: PGD, built from its update rule


def reference_pgd(f, x, y, eps, norm, steps, step_size, start):
    x_adv = (x + eps * start).clamp(0, 1)
    for _ in range(steps):
        grad, _ = adversarial.input_gradient(f, x_adv, y)
        x_adv = adversarial.pgd_step(x_adv, grad, x, eps, step_size, norm)
    return x_adv.detach()


def _per_image_norm(t):
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (t.dim() - 1))


def _direction(grad, norm):
    return grad.sign() if norm == "inf" else grad / _per_image_norm(grad)


def _project(delta, eps, norm):
    return delta.clamp(-eps, eps) if norm == "inf" else delta * (eps / _per_image_norm(delta)).clamp(max=1)


def _pgd_variant(kind):
    """PGD with one mistake of ``kind``; otherwise the update of ``reference_pgd``."""

    def wrong(f, x, y, eps, norm, steps, step_size, start):
        x_adv = x if kind == "no start" else (x + eps * start).clamp(0, 1)
        for _ in range(steps):
            grad = _gradient(f, x_adv, y)
            if kind == "raw gradient":
                direction = grad
            elif kind == "batch norm" and norm == "2":
                direction = grad / grad.norm()
            else:
                direction = _direction(grad, norm)
            moved = x_adv + (-step_size if kind == "descends" else step_size) * direction
            center = x_adv if kind == "projects around x_adv" else x
            projected = moved if kind == "no projection" else center + _project(moved - center, eps, norm)
            x_adv = projected if kind == "no clip" else projected.clamp(0, 1)
        return x_adv.detach()

    return wrong


@self_check(
    reference_pgd,
    mistakes=[
        Mistake(_pgd_variant("descends"), "your steps lower the loss: they move against the gradient",
                "an attack ascends: x_t + alpha * sign(grad)"),
        Mistake(_pgd_variant("no projection"), "your iterate leaves the eps ball around x: no projection",
                "after each step, clamp x_adv - x to [-eps, eps] (L-inf) or rescale it to norm eps (L2)"),
        Mistake(_pgd_variant("projects around x_adv"), "you project around the last iterate, not the clean image x",
                "the ball is centred on the clean x: project x_adv + step - x, then add x back"),
        Mistake(_pgd_variant("no start"), "you start from x itself, not from x + eps * start",
                "step 0 of the update: x_0 = clip(x + eps * start, 0, 1)"),
        Mistake(_pgd_variant("no clip"), "some pixels leave [0, 1]: the iterate is not clipped",
                "after projecting, clamp every iterate to [0, 1]"),
        Mistake(_pgd_variant("raw gradient"), "you step along the raw gradient, not the steepest direction",
                "L-inf: sign(grad); L2: grad divided by its own L2 norm"),
        Mistake(_pgd_variant("batch norm"), "your L2 step divides by the norm of the whole batch",
                "normalize each image's gradient by its own norm: flatten(1).norm(dim=1)"),
    ],
    forbid=[adversarial.pgd, adversarial.pgd_step, adversarial.project],
)  # fmt: skip
def pgd(gen):
    """Float64 linear classifiers, images (B, 1, s, s) in [0, 1], eps, norm, steps, step size,
    and a start (B, 1, s, s) in the unit ball of the norm. The first case steps beyond eps."""
    cases = []
    for b, side, eps, norm, steps, step in [(3, 4, 0.05, "inf", 3, 0.2), (4, 3, 0.3, "2", 3, 0.5),
                                            (2, 5, 0.1, "inf", 5, 0.05), (5, 4, 1.0, "2", 2, 0.8),
                                            (1, 2, 0.0, "inf", 2, 0.1), (6, 6, 0.2, "inf", 1, 0.2)]:  # fmt: skip
        f = TinyClassifier(side, 4, gen, torch.float64)
        x = _images(b, side, gen).double()
        if norm == "inf":
            start = 2 * rand(b, 1, side, side, gen=gen).double() - 1
        else:
            z = randn(b, 1, side, side, gen=gen).double()
            start = z / _per_image_norm(z) * rand(b, 1, 1, 1, gen=gen).double()
        y = torch.randint(0, 4, (b,), generator=gen)
        cases.append(dict(f=f, x=x, y=y, eps=eps, norm=norm, steps=steps, step_size=step, start=start))
    return cases


# ---- Exercise 3: one epoch of adversarial training


def reference_adversarial_epoch(model, row, x, y, order, attack, lr, batch_size):
    return adversarial.adversarial_epoch(model, row, x, y, order, attack=attack, lr=lr, batch_size=batch_size)


def _epoch_variant(kind):
    def wrong(model, row, x, y, order, attack, lr, batch_size):
        start = row
        for idx in order.split(batch_size):
            attacked = adversarial.classifier(model, start if kind == "first row" else row)
            x_adv = x[idx] if kind == "clean" else attack(attacked, x[idx], y[idx])
            step = lr * model.grad(row[None], x_adv[None], y[idx][None])[0]
            row = row + step if kind == "ascends" else row - step
            if kind == "one batch":
                break
        return row

    return wrong


@self_check(
    reference_adversarial_epoch,
    mistakes=[
        Mistake(_epoch_variant("clean"), "you train on the clean batch: the attacked one is never used",
                "step on the loss at x_adv = attack(adv.classifier(model, row), x[idx], y[idx])"),
        Mistake(_epoch_variant("ascends"), "your SGD step raises the loss: the sign is flipped",
                "the outer min descends: row - lr * grad"),
        Mistake(_epoch_variant("one batch"), "you stop after the first minibatch",
                "an epoch loops over every chunk of order.split(batch_size)"),
        Mistake(_epoch_variant("first row"), "you attack the starting model, not the current row",
                "build adv.classifier(model, row) inside the loop, from the row you just updated"),
    ],
)  # fmt: skip
def adversarial_epoch(gen):
    """A tiny MLP on 4x4 images; the permutation and the attack are given."""
    cases = []
    for n, batch, eps, lr in [(10, 3, 0.2, 0.5), (8, 4, 0.1, 0.5), (12, 12, 0.0, 1.0), (9, 2, 0.3, 0.3)]:
        model = FlatModel(mlp(16, 3, hidden=(5,)))
        cases.append(dict(
            model=model, row=model.init(gen), x=_images(n, 4, gen), y=torch.randint(0, 3, (n,), generator=gen),
            order=torch.randperm(n, generator=gen), attack=FGSMAttack(eps), lr=lr, batch_size=batch,
        ))  # fmt: skip
    return cases
