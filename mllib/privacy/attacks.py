"""Privacy attacks: what a trained model or one shared gradient reveals about the training data.

- Membership inference by loss threshold (Yeom, Giacomelli, Fredrikson, Jha 2018, arXiv:1709.01604): members
  of an overfitted model's training set have lower loss than non-members.
- Gradient inversion, DLG (Zhu, Liu, Han 2019, arXiv:1906.08935, Algorithm 1): optimize a dummy input and
  label until their gradient matches the shared one.
"""
import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

from ..clients import MODEL
from ..constraints import Generator, Instance, Integer, Integers, Real, Reals, Rule, Tensor, constrain
from ..models import FlatModel
from ..runtime import randn
from .accountant import DELTA, calibrate_sigma
from .dp import ANY_CLIP, CLIP, SAMPLES, TRAINING, clip_rows, dp_sgd

LOSSES = Tensor(finite=True, description="a non-empty tensor of losses")
MEMBERSHIP = dict(member_losses=LOSSES, nonmember_losses=LOSSES)
# a batch with hard labels (B,) or soft ones (B, C), as DLG's dummy label
SOFT = {**SAMPLES, "y": Tensor((1, 2), floating=False)}


@constrain(**MEMBERSHIP)
def membership_auc(member_losses: torch.Tensor, nonmember_losses: torch.Tensor) -> float:
    """AUC of the loss-threshold attack: P(loss of a non-member > loss of a member), ties count 1/2.

    The attack guesses "member" when loss < tau; its ROC curve over all tau has this area
    (Mann-Whitney U / (m n)). 0.5 means the attack learns nothing.

    Raises:
        ValueError: if either set is empty.
    """
    a, b = member_losses.reshape(-1, 1).double(), nonmember_losses.reshape(1, -1).double()
    return float(((b > a).double() + 0.5 * (b == a).double()).mean())


@constrain(**MEMBERSHIP)
def membership_advantage(member_losses: torch.Tensor, nonmember_losses: torch.Tensor) -> float:
    """Membership advantage TPR - FPR of Yeom et al.'s threshold attack (2018, Adversary 1, Definition 4).

    The adversary knows the average training loss tau (here: the members' mean loss) and guesses
    "member" when a record's loss is below tau. Its advantage is P(guess | member) - P(guess |
    non-member); 0 means it learns nothing. Under (epsilon, delta)-DP no attack exceeds
    ``dp_advantage_bound(epsilon, delta)``.

    Raises:
        ValueError: if either set is empty.
    """
    tau = member_losses.double().mean()
    return float((member_losses.double() < tau).double().mean() - (nonmember_losses.double() < tau).double().mean())


@constrain(epsilon=Real(gt=0, infinite=True), delta=Real(ge=0, lt=1))
def dp_advantage_bound(epsilon: float, delta: float) -> float:
    """The largest TPR - FPR of any membership attack on an (epsilon, delta)-DP mechanism.

    DP bounds every test: FPR + e^eps FNR >= 1 - delta and FNR + e^eps FPR >= 1 - delta
    (Kairouz, Oh, Viswanath 2015, Theorem 2.1); their intersection gives
    TPR - FPR <= (e^eps - 1 + 2 delta) / (e^eps + 1), computed with e^-eps (finite for every eps).
    Infinite epsilon: 1.

    Raises:
        ValueError: for epsilon <= 0 (or NaN) or delta outside [0, 1).
    """
    t = math.exp(-epsilon)
    return (-math.expm1(-epsilon) + 2 * delta * t) / (1 + t)


@constrain(**SAMPLES)
def sample_losses(model: FlatModel, row: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each sample's cross-entropy loss under one model (d,): (M,)."""
    logits = model.forward(row.unsqueeze(0), x.unsqueeze(0))[0]
    return F.cross_entropy(logits, y, reduction="none")


@dataclass
class MembershipResult:
    """AUCs, advantages and test accuracies, each (configs, seeds); config 0 is non-private."""

    epsilons: list[float]  # inf first, then the DP budgets
    auc: torch.Tensor
    accuracy: torch.Tensor
    advantage: torch.Tensor


@constrain(**TRAINING, epsilons=Reals(gt=0), seeds=Integer(min=1), members=Integer(min=1, max=100),
           nonmembers=Integer(min=1), steps=Integer(min=1), lr=Real(ge=0), q=Real(gt=0, le=1), clip=CLIP, delta=DELTA)
def membership_experiment(
    data, model: FlatModel, *, epsilons: list[float], seeds: int, members: int = 100, nonmembers: int = 300,
    steps: int = 200, lr: float = 0.5, q: float = 0.5, clip: float = 1.0, delta: float = 1e-5,
) -> MembershipResult:  # fmt: skip
    """Loss-threshold membership AUC and advantage of models trained on ``members`` digits, without DP and at each epsilon.

    For each seed: draw ``members`` training images and ``nonmembers`` test images; train
    non-privately (SGD on the same Poisson batches) and by DP-SGD with sigma calibrated to
    each epsilon (same q and steps); score the attack on members vs non-members. All
    (seed, config) models train at once as the rows of one client matrix.

    Raises:
        ValueError: if members is not in [1, 100] (a small, overfitted training set), or an epsilon <= 0.
    """
    sigmas = [0.0] + [calibrate_sigma(target_epsilon=e, delta=delta, q=q, steps=steps) for e in epsilons]
    clips = [float("inf")] + [clip] * len(epsilons)
    configs, device = len(sigmas), data.x_train.device
    gen = torch.Generator().manual_seed(1000)
    picks = [
        (torch.randperm(len(data.y_train), generator=gen)[:members], torch.randperm(len(data.y_test), generator=gen)[:nonmembers])
        for _ in range(seeds)
    ]  # fmt: skip
    xm = torch.stack([data.x_train[m.to(device)] for m, _ in picks]).repeat_interleave(configs, 0)  # (seeds*configs, members, ...)
    ym = torch.stack([data.y_train[m.to(device)] for m, _ in picks]).repeat_interleave(configs, 0)
    X0 = torch.stack([model.init(gen, device) for _ in range(seeds)]).repeat_interleave(configs, 0)
    rows = dict(sigma=torch.tensor(sigmas * seeds), clip=torch.tensor(clips * seeds))
    X = dp_sgd(model, X0, xm, ym, steps=steps, lr=lr, q=q, gen=gen, **rows)
    auc, advantage, acc = torch.zeros(configs, seeds), torch.zeros(configs, seeds), torch.zeros(configs, seeds)
    for r, row in enumerate(X):
        s, c = divmod(r, configs)
        test = picks[s][1].to(device)
        losses = sample_losses(model, row, xm[r], ym[r]), sample_losses(model, row, data.x_test[test], data.y_test[test])
        auc[c, s], advantage[c, s] = membership_auc(*losses), membership_advantage(*losses)
        acc[c, s] = (model.forward(row[None], data.x_test[None])[0].argmax(1) == data.y_test).float().mean()
    return MembershipResult([float("inf"), *epsilons], auc, acc, advantage)


# --- gradient inversion -------------------------------------------------------------------------
@constrain(**SOFT)
def sample_gradient(model: FlatModel, row: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The gradient (d,) of the mean loss of a batch x (B, ...) with labels y (B,) or soft labels (B, C).

    Built with torch.func, so that it can itself be differentiated (DLG needs that).
    """
    params = {k: v[0] for k, v in model.unflatten(row.unsqueeze(0)).items()}

    def loss(p):
        logits = functional_call(model.module, p, (x,))
        if y.dtype.is_floating_point:  # soft labels, as DLG's dummy label
            return -(y * F.log_softmax(logits, -1)).sum(-1).mean()
        return F.cross_entropy(logits, y)

    g = grad(loss)(params)
    return torch.cat([g[name].flatten() for name in model.names])


@constrain(Rule("target", lambda row, target: target.shape == row.shape,
                "target must have the shape of row, {row.shape}: one gradient of the model, got {target.shape}"),
           model=MODEL, row=Tensor(1), target=Tensor(1), shape=Integers(min=1), n_classes=Integer(min=1), gen=Generator(),
           iterations=Integer(min=1), clip=ANY_CLIP | None)  # fmt: skip
def dlg(
    model: FlatModel, row: torch.Tensor, target: torch.Tensor, shape: tuple[int, ...], *, n_classes: int,
    gen: torch.Generator, iterations: int = 100, clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Deep Leakage from Gradients (Zhu et al. 2019, Algorithm 1): reconstruct one sample from its gradient.

    Minimize ||grad l(F(x'), y'; row) - target||^2 over a dummy input x' (1, *shape) and dummy
    soft label y' = softmax(z') with L-BFGS. If the victim clipped its gradient to C, the
    attacker clips its dummy gradient the same way (``clip``): clipping hides the scale only.

    Args:
        row: (d,) the shared model; target: (d,) the observed gradient.
        shape: one input's shape, e.g. (1, 8, 8).

    Returns:
        (x' (1, *shape), y' (C,)) the reconstruction and the recovered label distribution.
    """
    x_dummy = randn(1, *shape, gen=gen, device=row.device).mul(0.1).add(0.5).requires_grad_(True)
    z_dummy = randn(1, n_classes, gen=gen, device=row.device).requires_grad_(True)
    optimizer = torch.optim.LBFGS([x_dummy, z_dummy], lr=1.0, max_iter=iterations, history_size=100,
                                  line_search_fn="strong_wolfe")  # fmt: skip

    def closure():
        optimizer.zero_grad()
        g = sample_gradient.__wrapped__(model, row, x_dummy, torch.softmax(z_dummy, -1))
        if clip is not None:
            g = clip_rows.__wrapped__(g.unsqueeze(0), clip)[0]
        distance = (g - target).pow(2).sum()
        distance.backward()
        return distance

    optimizer.step(closure)
    return x_dummy.detach(), torch.softmax(z_dummy.detach(), -1)[0]


@constrain(Rule("x_hat", lambda x_hat, x: x_hat.shape == x.shape,
                "x_hat must have the shape of x, {x.shape}, got {x_hat.shape}"), x_hat=Tensor(), x=Tensor())
def reconstruction_error(x_hat: torch.Tensor, x: torch.Tensor) -> float:
    """Mean squared error between a reconstruction and the original, pixel values clipped to [0, 1]."""
    return float((x_hat.clamp(0, 1) - x).pow(2).mean())


@dataclass
class InversionResult:
    """DLG against one victim under each defence (one seed of ``inversion_experiment``)."""

    original: torch.Tensor  # (1, *shape) the victim's input
    images: dict[str, torch.Tensor]  # defence -> (1, *shape) the reconstruction
    errors: dict[str, float]  # defence -> its ``reconstruction_error``
    mean_input_error: float  # the error of the training set's mean input: a guess without the gradient


@constrain(Rule("batch", lambda data, batch: batch <= len(data.y_train),
                "batch must be in [2, {data.y_train.shape[0]}] (the victim and others), got {batch}"),
           Rule("noises", lambda noises: all(isinstance(s, numbers.Real) and 0 <= s < math.inf for s in noises),
                "noises must be finite noise multipliers >= 0, got {noises}"),
           **TRAINING, clip=Real(gt=0), noises=Instance(tuple, list, description="a sequence of noise multipliers"),
           batch=Integer(min=2), gen=Generator(), iterations=Integer(min=1))  # fmt: skip
def inversion_experiment(
    data, model: FlatModel, *, clip: float, noises: tuple[float, ...], batch: int, gen: torch.Generator,
    iterations: int = 200,
) -> InversionResult:  # fmt: skip
    """DLG (``dlg``) against one random victim, without defence and behind each defence.

    From ``gen``, in this order: the shared model (``model.init``), a random batch of ``batch``
    training examples whose first is the victim, one noise draw per noise level, and DLG's
    dummy inputs. The defences (the keys of ``images`` and ``errors``):

    - "no defence": the victim's gradient g;
    - f"clipped, C={clip:g}": g scaled to norm at most C (the attacker clips its dummy gradient too);
    - f"clip + noise {s:g}" for each s in ``noises``: the clipped g + N(0, (s C)^2) per coordinate,
      the Gaussian mechanism of DP-SGD (Abadi et al. 2016) on one example;
    - f"mean of {batch}": the mean gradient of the batch, as in FedSGD (Zhu et al. 2019, Sec. 4.2).

    Args:
        data: a data set with x_train (N, *shape) and y_train (N,).
        model: a twice-differentiable model (DLG differentiates its gradient).
        clip: the clipping norm C > 0. noises: noise multipliers s >= 0. batch: 1 < batch <= N.

    Returns:
        An ``InversionResult``.

    Raises:
        ValueError: if clip <= 0, a noise < 0, or batch is not in [2, N].
    """
    device = data.x_train.device
    row = model.init(gen, device)
    picked = torch.randperm(len(data.y_train), generator=gen)[:batch].to(device)  # picked[0]: the victim
    x, y = data.x_train[picked[:1]], data.y_train[picked[:1]]
    g = sample_gradient(model, row, x, y)
    clipped = clip_rows(g.unsqueeze(0), clip)[0]
    targets = {"no defence": (g, None), f"clipped, C={clip:g}": (clipped, clip)}
    for s in noises:
        targets[f"clip + noise {s:g}"] = (clipped + s * clip * randn(model.dim, gen=gen, device=device), clip)
    targets[f"mean of {batch}"] = (sample_gradient(model, row, data.x_train[picked], data.y_train[picked]), None)
    images = {
        name: dlg(model, row, target, tuple(x.shape[1:]), n_classes=int(data.y_train.max()) + 1, gen=gen,
                  iterations=iterations, clip=c)[0]
        for name, (target, c) in targets.items()
    }  # fmt: skip
    errors = {name: reconstruction_error(image, x) for name, image in images.items()}
    return InversionResult(x, images, errors, reconstruction_error(data.x_train.mean(0, keepdim=True), x))
