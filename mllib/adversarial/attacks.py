"""FGSM and PGD (L-infinity, L2; untargeted, targeted; random start), robust accuracy.

Every attack takes a ``classifier``: any callable mapping images (B, C, H, W) in [0, 1] to
logits (B, n_classes), such as an ``nn.Module`` or ``classifier(model, row)`` for a row of
the client matrix.
"""
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..clients import MODEL
from ..constraints import Function, Generator, Integer, OneOf, Real, Rule, Tensor, constrain, shown
from ..models import FlatModel
from ..runtime import rand, randn

Classifier = Callable[[torch.Tensor], torch.Tensor]
Attack = Callable[[Classifier, torch.Tensor, torch.Tensor], torch.Tensor]
NORMS = ("inf", "2")


@constrain(model=MODEL, row=Tensor(1))
def classifier(model: FlatModel, row: torch.Tensor) -> Classifier:
    """The model whose parameters are ``row`` (d,), as a function images (B, ...) -> logits (B, C).

    Differentiable with respect to the images (and to ``row``); nothing is copied.
    """
    params = {name: p[0] for name, p in model.unflatten(row.unsqueeze(0)).items()}
    return lambda x: functional_call(model.module, params, (x,))


# a radius: one number, or one per sample (B,); NaN and inf rejected, a tensor's signs by _nonnegative
EPS = Real(ge=0) | Tensor(1, finite=True)
IMAGES = dict(f=Function(), x=Tensor(), y=Tensor(1, integer=True))
BATCH = Integer(min=1)


def _nonnegative(name: str) -> Rule:
    """Every entry of the radius ``name`` >= 0 (``EPS`` checks a number's sign, this a (B,) tensor's)."""
    return Rule(name, lambda **a: a[name] is None or bool((torch.as_tensor(a[name]) >= 0).all()),
                lambda **a: f"{name} must be >= 0 (a radius of the perturbation ball), got {shown(a[name])} "
                "with a negative entry")  # fmt: skip


RADIUS, STEP = _nonnegative("eps"), _nonnegative("step_size")


def _check(eps) -> None:
    """``RADIUS`` in a body: fgsm's, which lecture 06 shows."""
    RADIUS.check({"eps": eps})


def _per_sample(value, x: torch.Tensor) -> torch.Tensor:
    """A float or a (B,) tensor, shaped (B, 1, 1, 1) to broadcast against x (B, C, H, W)."""
    value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    return value.reshape(-1, *[1] * (x.dim() - 1)) if value.dim() else value


@constrain(**IMAGES)
def input_gradient(f: Classifier, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of each sample's cross-entropy with respect to its input, and the losses.

    Returns:
        (B, ...) gradients of the summed loss (so each row is that sample's own gradient)
        and (B,) the per-sample losses.
    """
    x = x.detach().requires_grad_(True)
    losses = F.cross_entropy(f(x), y, reduction="none")  # (B,)
    (g,) = torch.autograd.grad(losses.sum(), x)
    return g, losses.detach()


@constrain(**IMAGES, eps=EPS)
def fgsm(f: Classifier, x: torch.Tensor, y: torch.Tensor, eps: float, *, targeted: bool = False) -> torch.Tensor:
    """Fast gradient sign method: one step of size eps along the sign of the input gradient.

    x_adv = clip_[0,1](x + eps * sign(grad_x L(f(x), y))); targeted (y is the target class):
    x_adv = clip_[0,1](x - eps * sign(grad_x L(f(x), y))).

    Args:
        f: classifier, images (B, C, H, W) -> logits (B, n_classes).
        x: (B, C, H, W) images in [0, 1].
        y: (B,) true labels (untargeted) or target labels (targeted).
        eps: L-infinity radius, >= 0.

    Returns:
        (B, C, H, W) adversarial images; x is not modified.

    Raises:
        ValueError: for eps < 0.

    Reference: Goodfellow, Shlens and Szegedy 2015, "Explaining and harnessing adversarial
    examples", arXiv:1412.6572, Eq. (1) "fast gradient sign method".
    """
    _check(eps)
    g, _ = input_gradient(f, x, y)
    direction = -g.sign() if targeted else g.sign()
    return (x + _per_sample(eps, x) * direction).clamp(0, 1).detach()


@constrain(RADIUS, delta=Tensor(), eps=EPS, norm=OneOf(*NORMS))
def project(delta: torch.Tensor, eps, norm: str = "inf") -> torch.Tensor:
    """The nearest point of the eps ball to each perturbation: (B, ...) -> (B, ...).

    L-infinity: clamp every coordinate to [-eps, eps]. L2: delta * min(1, eps / ||delta||_2),
    the norm taken over all but the first axis.
    """
    return _project(delta, eps, norm)


def _image_norms(t: torch.Tensor) -> torch.Tensor:
    """Each image's L2 norm, at least 1e-12 (a zero image divides safely): (B, ...) -> (B, 1, 1, 1)."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (t.dim() - 1))


def _project(delta: torch.Tensor, eps, norm: str, out: torch.Tensor | None = None) -> torch.Tensor:
    """``project``, written into ``out`` (None: a new tensor; ``delta`` itself: in place)."""
    eps = _per_sample(eps, delta)
    if norm == "inf":  # two passes: torch.clamp with tensor bounds is not vectorized (5x slower)
        return torch.maximum(torch.minimum(delta, eps, out=out), -eps, out=out)
    return torch.mul(delta, torch.clamp(eps / _image_norms(delta), max=1.0), out=out)


@constrain(RADIUS, STEP, Rule("x", lambda x_adv, grad, x: x_adv.shape == grad.shape == x.shape,
                                "x, x_adv and grad must have one shape, got {x.shape}, {x_adv.shape}, {grad.shape}"),
           x_adv=Tensor(), grad=Tensor(), x=Tensor(), eps=EPS, step_size=EPS, norm=OneOf(*NORMS))  # fmt: skip
def pgd_step(
    x_adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, eps, step_size, norm: str = "inf"
) -> torch.Tensor:
    """One step of projected gradient ascent on the input, back into the ball and [0, 1].

    x_adv <- clip_[0,1](x + Proj_eps(x_adv + step_size * s - x)), with the steepest-ascent
    direction s = sign(grad) for L-infinity and s = grad / ||grad||_2 for L2. The clip
    keeps the point in the ball: for x in [0, 1] it only shrinks |x_adv - x|.

    Args:
        x_adv: (B, ...) current iterate; grad: (B, ...) the loss gradient there;
        x: (B, ...) the clean images; eps, step_size: floats or (B,) tensors.

    Returns:
        (B, ...) the next iterate.
    """
    return _pgd_step(x_adv, grad, x, eps, step_size, norm)


def _pgd_step(x_adv, grad, x, eps, step_size, norm: str, out: torch.Tensor | None = None) -> torch.Tensor:
    """``pgd_step``, every intermediate written into ``out`` (None: new tensors). ``pgd`` passes
    the gradient, which it owns: its steps then allocate no image-sized tensor, and on one CPU
    thread the step's seven passes over the images take about half as long."""
    if norm == "inf":
        direction = torch.sign(grad, out=out)
    else:
        direction = torch.div(grad, _image_norms(grad), out=out)
    moved = torch.add(x_adv, torch.mul(direction, _per_sample(step_size, x), out=out), out=out)
    delta = _project(torch.sub(moved, x, out=out), eps, norm, out=out)
    return torch.clamp(torch.add(x, delta, out=out), 0, 1, out=out)


@constrain(RADIUS, STEP, **IMAGES, eps=EPS, norm=OneOf(*NORMS), steps=Integer(min=1), step_size=EPS | None,
           gen=Generator() | None)  # fmt: skip
def pgd(
    f: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    eps,
    *,
    norm: str = "inf",
    steps: int = 10,
    step_size=None,
    random_start: bool = False,
    targeted: bool = False,
    keep_best: bool = False,
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient descent on the input (Madry et al. 2018), L-infinity or L2.

    1. x_0 = x, or (random_start) x plus a uniform point of the ball, clipped to [0, 1].
    2. For t = 0 .. steps-1: x_{t+1} = pgd_step(x_t, +-grad_x L(f(x_t), y), x), ascending
       the loss of the true label (untargeted) or descending that of the target (targeted).
    3. Return x_steps, or with ``keep_best`` each sample's best iterate x_1 .. x_steps:
       successful before unsuccessful, then the larger (untargeted) or smaller (targeted) loss.

    Madry et al. return the last iterate, as torchattacks does; ``keep_best`` makes the
    attack monotone: with the same step size, more steps never succeed on fewer inputs.
    The L2 random start is uniform in the ball (radius eps * u^(1/n)); torchattacks
    draws the radius as eps * u instead.

    Args:
        f: classifier, images (B, C, H, W) -> logits (B, n_classes).
        x: (B, C, H, W) images in [0, 1]; y: (B,) true or (targeted) target labels.
        eps: radius of the ball, a float or a (B,) tensor, >= 0.
        norm: "inf" or "2". steps: >= 1.
        step_size: default 2.5 * eps / steps (Madry et al., Appendix).
        gen: CPU generator for the random start (required with ``random_start``).

    Returns:
        (B, C, H, W) adversarial images in the eps ball around x and in [0, 1].

    Raises:
        ValueError: for eps < 0, an unknown norm, steps < 1, a negative step size,
            or a random start without a generator.

    Reference: Madry, Makelov, Schmidt, Tsipras and Vladu 2018, "Towards deep learning
    models resistant to adversarial attacks", arXiv:1706.06083, Section 2.1 (the PGD attack, Eq. (2.1)).
    """
    if step_size is None:
        step_size = 2.5 * torch.as_tensor(eps) / steps
    if random_start and gen is None:
        raise ValueError("random_start=True needs gen, a CPU torch.Generator for the start point")
    x = x.detach()
    x_adv = x
    if random_start:  # 1. a uniform point of the ball
        if norm == "inf":
            start = (2 * rand(*x.shape, gen=gen, device=x.device) - 1) * _per_sample(eps, x)
        else:
            z = randn(*x.shape, gen=gen, device=x.device)
            n = z[0].numel()
            radius = rand(len(x), gen=gen, device=x.device).pow(1 / n).view(-1, *[1] * (x.dim() - 1))
            start = project.__wrapped__(z / z.flatten(1).norm(dim=1).view_as(radius) * radius * _per_sample(eps, x), eps, norm)
        x_adv = (x + start).clamp(0, 1)
    sign = -1.0 if targeted else 1.0
    best, best_score = None, None
    for t in range(steps + keep_best):  # 2. ascend; with keep_best, one more pass scores x_steps
        g, losses = input_gradient.__wrapped__(f, x_adv, y)
        if keep_best and t > 0:  # score x_t (t >= 1): (success, signed loss), lexicographic
            with torch.no_grad():
                hit = f(x_adv).argmax(1) == y
            success = hit if targeted else ~hit
            score = success.to(x.dtype) * 1e6 + sign * losses.clamp(max=1e5)
            if best is None:
                best, best_score = x_adv, score
            else:
                better = score > best_score
                best = torch.where(better.view(-1, *[1] * (x.dim() - 1)), x_adv, best)
                best_score = torch.where(better, score, best_score)
        if t < steps:  # the step overwrites g, which nothing else holds (contiguous: no expanded gradient)
            g = g.contiguous()
            if targeted:
                g.neg_()
            x_adv = _pgd_step(x_adv, g, x, eps, step_size, norm, out=g)
    return (best if keep_best else x_adv).detach()  # 3.


@constrain(**IMAGES, batch_size=BATCH)
@torch.no_grad()
def accuracy(f: Classifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Plain accuracy of f on (x, y), by batches."""
    correct = sum(int((f(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    return correct / len(y)


@constrain(**IMAGES, x_adv=Tensor())
@torch.no_grad()
def transfer_rate(f: Classifier, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    """The share of the images f classifies correctly that it misclassifies once perturbed.

    Papernot, McDaniel and Goodfellow 2016 ("Transferability in machine learning", arXiv:1605.07277,
    Section 3) measure transferability so: examples x_adv crafted on a source model, evaluated
    on a target f that the attacker never queried for gradients; images f already gets wrong
    are left out. The source may be a substitute trained on f's labels alone, the black-box
    attack of Papernot, McDaniel, Goodfellow, Jha, Celik and Swami 2017 ("Practical black-box
    attacks against machine learning", arXiv:1602.02697).

    Args:
        f: the target classifier; x_adv, x: (B, C, H, W) perturbed and clean images; y: (B,) labels.

    Returns:
        mis-classified on x_adv among correct on x, in [0, 1].

    Raises:
        ValueError: if the shapes of x_adv and x differ, or f classifies no image of x correctly.
    """
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv must have the shape of x {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    correct = f(x).argmax(1) == y  # (B,)
    if not correct.any():
        raise ValueError("f classifies no image of x correctly: no transfer rate to measure")
    return float((f(x_adv[correct]).argmax(1) != y[correct]).double().mean())


@constrain(**IMAGES, attack=Function() | None, batch_size=BATCH)
def robust_accuracy(
    f: Classifier, x: torch.Tensor, y: torch.Tensor, attack: Attack | None = None, *, batch_size: int = 1000
) -> float:
    """Accuracy on the attacked inputs: the share of (x_i, y_i) still classified y_i after
    ``attack(f, x_i, y_i)``; with no attack, the clean accuracy.

    An input the model already gets wrong counts as broken. Robust accuracy under one
    attack is an upper bound on the true robust accuracy (Madry et al. 2018, Section 2).
    """
    if attack is None:
        return accuracy.__wrapped__(f, x, y, batch_size)
    adv = torch.cat([attack(f, xb, yb) for xb, yb in zip(x.split(batch_size), y.split(batch_size))])
    return accuracy.__wrapped__(f, adv, y, batch_size)


@constrain(**IMAGES, high=Real(gt=0), iterations=Integer(min=0))
def minimal_epsilon(
    f: Classifier, x: torch.Tensor, y: torch.Tensor, *, high: float = 1.0, iterations: int = 12, **pgd_options
) -> torch.Tensor:
    """Per image, the smallest eps (to within high / 2^iterations) at which PGD flips it.

    Bisection on each image's radius at once (PGD takes a (B,) tensor of radii); an image
    already misclassified gets 0, one PGD cannot flip within ``high`` gets ``high``.

    Returns:
        (B,) radii.
    """
    low_eps = torch.zeros(len(x), device=x.device)
    high_eps = torch.full((len(x),), float(high), device=x.device)
    with torch.no_grad():
        wrong = f(x).argmax(1) != y
    for _ in range(iterations):
        mid = (low_eps + high_eps) / 2
        adv = pgd(f, x, y, mid, **pgd_options)
        with torch.no_grad():
            flipped = f(adv).argmax(1) != y
        high_eps = torch.where(flipped, mid, high_eps)
        low_eps = torch.where(flipped, low_eps, mid)
    return torch.where(wrong, torch.zeros_like(high_eps), high_eps)
