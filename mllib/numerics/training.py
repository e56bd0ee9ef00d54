"""Simulated limited-precision training of a digits MLP, and compressing the trained model.

A one-hidden-layer ReLU network is trained by minibatch SGD with a hand-written backward
pass, so that every tensor can be rounded where hardware would store it:

    forward:   x, W1, h, W2 rounded to the *compute* format (the inputs of each matmul,
               accumulated in float32 as tensor cores do);
    backward:  the gradient of the logits (times the loss scale S), and every gradient
               computed from it, rounded to the *grads* format;
    update:    W <- round_master(W - lr g / S), nearest-even or stochastic.

This is mixed-precision training as in Micikevicius et al. (2018, "Mixed precision
training", arXiv:1710.03740: FP16 compute, FP32 master weights, loss scaling) and Micikevicius
et al. (2022, "FP8 formats for deep learning", arXiv:2209.05433: E4M3 forward, E5M2 gradients,
per-tensor scales); rounding the master weights themselves, with stochastic rounding to keep
small updates, follows Gupta et al. (2015, arXiv:1502.02551) and Zamirai et al. (2020, "Revisiting
BFloat16 training").
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import engine
from ..constraints import Generator, Instance, Integer, OneOf, Real, Reals, Rule, Tensor, constrain
from ..data import Dataset
from ..engine import History, Rounds
from ..runtime import generator
from .formats import (
    FORMATS, NAMES, FloatFormat, amax_scale, get_format, names_of_formats, round_to, scaled_round, torch_cast,
)

NAME = OneOf(*FORMATS)
DATA = Instance(Dataset)
HIDDEN, STEPS = Integer(min=1), Integer(min=1)
SGD = dict(lr=Real(gt=0), batch_size=Integer(min=1))
WEIGHTS = Instance(dict, description="the MLP's weights {name: tensor} (history.model)")
MLP_WEIGHTS = Rule("params", lambda params: {"W1", "b1", "W2", "b2"} <= set(params),
                   lambda params: f"params must hold the MLP's weights W1, b1, W2, b2, got the keys {list(params)}")
GENS = Instance(list, tuple, description="a list of torch.Generators, one per run")
TENSORS = Instance(dict, description="weights {name: tensor}")
ALL_TENSORS = Rule("params", lambda params: all(isinstance(w, torch.Tensor) for w in params.values()),
                   lambda params: f"params must map names to tensors, got {[type(w).__name__ for w in params.values()]}")
ONE_LABEL_PER_ROW = Rule("y", lambda x, y: len(y) == len(x),
                         "y must hold one label per row of x, {x.shape[0]}, got {y.shape[0]}")
SEEDS = Instance(range, list, tuple, description="a sequence of seeds, e.g. range(5)")


@constrain(compute=NAME, grads=NAME, master=NAME, loss_scale=Real(gt=0))
@dataclass(frozen=True)
class Precision:
    """Where training rounds, and to what.

    Attributes:
        compute: format of the matmul inputs (weights copy, input, hidden activations).
        grads: format of the back-propagated gradients.
        master: format the weights are stored in between steps.
        stochastic: stochastic rounding of the master-weight update.
        loss_scale: S, multiplies the loss gradient before rounding, divided out before the update.
        scaled: per-tensor amax scaling before every compute/grads rounding (FP8 recipe).
    """

    compute: str = "fp32"
    grads: str = "fp32"
    master: str = "fp32"
    stochastic: bool = False
    loss_scale: float = 1.0
    scaled: bool = False


@constrain(n_in=Integer(min=1), n_hidden=Integer(min=1), n_out=Integer(min=1), gen=Generator())
def init_mlp(n_in: int, n_hidden: int, n_out: int, *, gen: torch.Generator, device=None) -> dict[str, torch.Tensor]:
    """PyTorch's default Linear initialization, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from ``gen``."""
    def uniform(*shape, fan_in):
        return ((torch.rand(*shape, generator=gen) * 2 - 1) / math.sqrt(fan_in)).to(device or "cpu")

    return dict(W1=uniform(n_hidden, n_in, fan_in=n_in), b1=uniform(n_hidden, fan_in=n_in),
                W2=uniform(n_out, n_hidden, fan_in=n_hidden), b2=uniform(n_out, fan_in=n_hidden))  # fmt: skip


def mlp_logits(params: dict[str, torch.Tensor], x: torch.Tensor, compute: str = "fp32", scaled: bool = False) -> torch.Tensor:
    """Logits (B, C) of the MLP on x (B, n_in), matmul inputs rounded to ``compute``."""
    q = _rounder(compute, scaled)
    h = torch.relu(q(x) @ q(params["W1"]).T + params["b1"])  # (B, H)
    return q(h) @ q(params["W2"]).T + params["b2"]  # (B, C)


@constrain(MLP_WEIGHTS, ONE_LABEL_PER_ROW, params=WEIGHTS, x=Tensor(2), y=Tensor(1, floating=False),
           compute=NAME)  # fmt: skip
def mlp_accuracy(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, compute: str = "fp32",
                 scaled: bool = False) -> float:  # fmt: skip
    """Fraction of x (B, n_in) classified as y (B,)."""
    return (mlp_logits(params, x, compute, scaled).argmax(1) == y).float().mean().item()


def _rounder(fmt: str, scaled: bool, per_row: bool = False):
    """Round to ``fmt`` (per-tensor amax scaled if ``scaled``; with ``per_row``, one scale per
    entry of the leading axis: one tensor per seed)."""
    if fmt == "fp32":
        return lambda t: t
    if scaled and per_row:
        return lambda t: _fast(t / (s := _row_scale(t, fmt)), fmt) * s
    if scaled:
        return lambda t: _fast(t / (s := amax_scale.__wrapped__(t, fmt)).float(), fmt) * s.float()
    return lambda t: _fast(t, fmt)


def _row_scale(t: torch.Tensor, fmt: str) -> torch.Tensor:
    """``amax_scale(t[i], fmt)`` for every i at once, shaped to broadcast against t: (S, 1, ...), float32."""
    amax = t.detach().abs().to(torch.float64).nan_to_num(0.0, posinf=0.0).flatten(1).amax(1)  # (S,)
    s = torch.where(amax > 0, amax / get_format.__wrapped__(fmt).max, torch.ones_like(amax))
    return s.float().view(-1, *[1] * (t.dim() - 1))


def _fast(t: torch.Tensor, fmt: str, *, stochastic: bool = False, gen: torch.Generator | None = None) -> torch.Tensor:
    """``round_to`` through torch's own cast where torch has the dtype (``torch_cast``: bit for
    bit the same, tests/test_numerics.py checks it, and 10x faster); ``round_to`` otherwise."""
    f = get_format.__wrapped__(fmt)  # every step: fmt checked by Precision
    if fmt == "fp32" and t.dtype == torch.float32 and not stochastic:
        return t
    if not stochastic and isinstance(f, FloatFormat) and f.torch_dtype is not None:
        return torch_cast.__wrapped__(t, f)
    return round_to.__wrapped__(t, f, stochastic=stochastic, gen=gen)


class LimitedPrecisionSGD(Rounds):
    """S runs of SGD on the MLP with every tensor rounded as ``precision`` says, one step a round.

    Step, on a minibatch (x, y) of each run drawn from its own generator, for all runs at once:
        1. forward with rounded matmul inputs (``mlp_logits``);
        2. d logits = S (softmax - onehot(y)) / B, rounded to grads; back-propagate, rounding
           each gradient (dW2, db2, dh, dW1, db1) to grads;
        3. g = gradient / S; a run whose g is not finite skips the step;
        4. W <- round_master(W - lr g) (stochastic if asked, from the run's generator).
    The runs are stacked on a leading axis (one batched matmul per step); each run's
    per-tensor scales come from its own tensors.

    Args:
        data: a ``Dataset`` (images are flattened).
        precision: the ``Precision`` configuration.
        gens: one CPU generator per run: its initialization, minibatches and stochastic roundings.
        hidden, lr, batch_size: network width and SGD settings.
        init: starting weights {name: (S, ...)} instead of a fresh initialization (fine-tuning).
        masks: {name: (S, ...) bool} entries kept; the others are held at zero after every step
            (retraining a pruned network, Han et al. 2015, Sec. 3).

    State: ``params`` {name: (S, ...)} the master weights; ``skipped`` (S,) steps skipped so
    far; ``loss`` (S,) the last step's training loss; ``underflow`` (S,) the last step's fraction
    of nonzero float32 gradient entries of W1 rounded to 0.

    Raises:
        ValueError: for no generator, unless hidden, batch_size >= 1 and lr > 0.
    """

    @constrain(Rule("gens", lambda gens: len(gens) > 0 and all(isinstance(g, torch.Generator) for g in gens),
                    "gens must hold one torch.Generator per run, at least one, got {gens}"),
               data=DATA, precision=Instance(Precision), gens=GENS, hidden=HIDDEN, **SGD, init=WEIGHTS | None,
               masks=WEIGHTS | None)
    def __init__(self, data: Dataset, precision: Precision, gens: list[torch.Generator], *, hidden: int, lr: float,
                 batch_size: int, init: dict[str, torch.Tensor] | None = None,
                 masks: dict[str, torch.Tensor] | None = None):  # fmt: skip
        self.data, self.precision, self.gens = data, precision, gens
        self.lr, self.batch_size = lr, batch_size
        self.x_all = data.x_train.flatten(1)  # (N, n_in)
        if init is None:
            runs = [init_mlp(self.x_all.shape[1], hidden, data.n_classes, gen=g, device=data.x_train.device) for g in gens]
        else:
            runs = unstack(init)
        self.masks = masks or {}
        self.qc = _rounder(precision.compute, precision.scaled, per_row=True)
        self.qg = _rounder(precision.grads, precision.scaled, per_row=True)
        # State
        self.params = {k: _fast(torch.stack([r[k] for r in runs]), precision.master) for k in runs[0]}  # (S, ...)
        self.skipped = torch.zeros(len(gens), dtype=torch.long)
        self.loss: torch.Tensor | None = None
        self.underflow: torch.Tensor | None = None

    def round(self, r: int) -> None:
        p, params, qc, qg, data = self.precision, self.params, self.qc, self.qg, self.data
        n, device = len(self.x_all), self.x_all.device
        idx = torch.stack([torch.randint(n, (self.batch_size,), generator=g) for g in self.gens]).to(device)  # (S, B)
        x, y = qc(self.x_all[idx]), data.y_train[idx]  # (S, B, n_in), (S, B)
        # 1. forward
        W1, W2 = qc(params["W1"]), qc(params["W2"])  # (S, H, n_in), (S, C, H)
        z1 = x @ W1.mT + params["b1"][:, None]  # (S, B, H)
        h = qc(torch.relu(z1))
        logits = h @ W2.mT + params["b2"][:, None]  # (S, B, C)
        self.loss = F.cross_entropy(logits.mT, y, reduction="none").mean(1)  # (S,)
        # 2. backward, scaled by S and rounded
        dlogits = qg((torch.softmax(logits, -1) - F.one_hot(y, data.n_classes)) * (p.loss_scale / self.batch_size))
        dW2, db2 = qg(dlogits.mT @ h), qg(dlogits.sum(1))  # (S, C, H), (S, C)
        dh = qg(dlogits @ W2) * (z1 > 0)  # (S, B, H)
        exact_dW1 = dh.mT @ x  # (S, H, n_in)
        dW1, db1 = qg(exact_dW1), qg(dh.sum(1))
        nonzero = exact_dW1 != 0
        self.underflow = ((dW1 == 0) & nonzero).flatten(1).sum(1) / nonzero.flatten(1).sum(1).clamp(min=1)
        # 3. unscale; a run whose gradient is not finite skips the step
        grads = {k: g / p.loss_scale for k, g in dict(W1=dW1, b1=db1, W2=dW2, b2=db2).items()}
        finite = torch.stack([g.flatten(1).isfinite().all(1) for g in grads.values()]).all(0)  # (S,)
        self.skipped = self.skipped + ~finite.cpu()
        # 4. update the master weights (stochastic rounding draws from each run's own generator)
        for k, w in params.items():
            new = w - self.lr * grads[k]
            if p.stochastic:
                new = torch.stack([_fast(row, p.master, stochastic=True, gen=g) for row, g in zip(new, self.gens)])
            else:
                new = _fast(new, p.master)
            if k in self.masks:
                new = new * self.masks[k]  # pruned connections stay pruned
            params[k] = torch.where(finite.view(-1, *[1] * (w.dim() - 1)), new, w)

    @property
    def model(self) -> dict[str, torch.Tensor]:
        """The master weights of every run, {name: (S, ...)} (``unstack`` splits them per run)."""
        return self.params

    def accuracies(self) -> list[float]:
        """Each run's accuracy on the test set, in the compute format (``mlp_accuracy``)."""
        x_test, y_test = self.data.x_test.flatten(1), self.data.y_test
        p = self.precision
        return [mlp_accuracy(params, x_test, y_test, p.compute, p.scaled) for params in unstack(self.params)]


# Recorded after every step: each run's training loss, its fraction of W1's gradient entries
# lost to underflow, and its steps skipped so far (each (S,), one entry per run).
METRICS = {"loss": lambda sgd: sgd.loss, "underflow": lambda sgd: sgd.underflow, "skipped": lambda sgd: sgd.skipped}


@constrain(Rule("params", lambda params: len(params) > 0, "params must map names to stacked weights, got {params}"),
           params=WEIGHTS)
def unstack(params: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The weights of S runs, {name: (S, ...)}, as one dict {name: tensor} per run."""
    return [{k: w[i] for k, w in params.items()} for i in range(len(next(iter(params.values()))))]


@constrain(data=DATA, precision=Instance(Precision), hidden=HIDDEN, steps=STEPS, **SGD, gen=Generator())
def train_limited(
    data: Dataset, precision: Precision, *, hidden: int, steps: int, lr: float, batch_size: int, gen: torch.Generator
) -> History:
    """Train the MLP by SGD with every tensor rounded as ``precision`` says: one run of
    ``LimitedPrecisionSGD``, ``steps`` rounds (one step each) on the round engine.

    Args:
        data: a ``Dataset`` (images are flattened).
        precision: the ``Precision`` configuration.
        hidden, steps, lr, batch_size: network width and SGD settings.
        gen: CPU generator for the initialization, the minibatches and stochastic rounding.

    Returns:
        The ``engine.History`` of ``METRICS`` after every step, each a (1,) tensor;
        ``history.algorithm.accuracies()`` the test accuracy in the compute format,
        ``history.model`` the weights {name: (1, ...)}.

    Raises:
        ValueError: unless steps, batch_size, hidden >= 1 and lr > 0.
    """
    return _train(data, precision, [gen], hidden=hidden, steps=steps, lr=lr, batch_size=batch_size)


@constrain(Rule("seeds", lambda seeds: len(seeds) > 0, "seeds must name at least one seed, got {seeds}"),
           data=DATA, precision=Instance(Precision), seeds=SEEDS, hidden=HIDDEN, steps=STEPS, **SGD)
def train_limited_seeds(
    data: Dataset, precision: Precision, *, seeds, hidden: int, steps: int, lr: float, batch_size: int
) -> History:
    """``train_limited`` once per seed, all seeds trained together (one batched matmul per step).

    Seed s draws its initialization, minibatches and stochastic roundings from
    ``mllib.generator(s)`` alone, and its per-tensor scales from its own tensors: the run of
    seed s is ``train_limited(..., gen=mllib.generator(s))``, up to the last bits of the
    batched matrix products.

    Args:
        data, precision, hidden, steps, lr, batch_size: as in ``train_limited``.
        seeds: the seeds (at least one), e.g. ``range(5)``.

    Returns:
        The ``engine.History`` of ``METRICS`` after every step, each an (S,) tensor with one
        entry per seed in the order of ``seeds``; ``history.algorithm.accuracies()`` one
        accuracy per seed, ``history.model`` the weights {name: (S, ...)}.

    Raises:
        ValueError: for no seed, or the settings ``train_limited`` rejects.
    """
    return _train(data, precision, [generator(s) for s in seeds], hidden=hidden, steps=steps, lr=lr,
                  batch_size=batch_size)  # fmt: skip


def _train(data: Dataset, p: Precision, gens: list[torch.Generator], *, hidden: int, steps: int, lr: float,
           batch_size: int) -> History:  # fmt: skip
    """The S = len(gens) runs of ``train_limited`` on the round engine."""
    sgd = LimitedPrecisionSGD(data, p, gens, hidden=hidden, lr=lr, batch_size=batch_size)
    return engine.run(sgd, steps, metrics=METRICS)


@constrain(w=Tensor(floating=False), sparsity=Real(ge=0, lt=1))
def magnitude_prune(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero the fraction ``sparsity`` of entries of w with the smallest magnitude (Han et al. 2015)."""
    k = int(round(sparsity * w.numel()))
    if k == 0:
        return w.clone()
    threshold = w.abs().flatten().sort().values[k - 1]  # sort: deterministic on CUDA too
    return torch.where(w.abs() > threshold, w, torch.zeros_like(w))


@constrain(MLP_WEIGHTS, Rule("gens", lambda params, gens: len(gens) == len(params["W1"]),
                             lambda params, gens: f"gens must hold one generator per run ({len(params['W1'])}), "
                                                  f"got {len(gens)}"),
           params=WEIGHTS, data=DATA, sparsity=Real(ge=0, lt=1), steps=STEPS, **SGD, gens=GENS)
def prune_and_retrain(
    params: dict[str, torch.Tensor], data: Dataset, sparsity: float, *, steps: int, lr: float, batch_size: int,
    gens: list[torch.Generator],
) -> History:  # fmt: skip
    """Magnitude-prune S trained networks, then retrain the connections that are left (Han et al. 2015).

    Han, Pool, Tran and Dally 2015 ("Learning both weights and connections", arXiv:1506.02626, Sec. 3): train,
    prune each weight matrix's smallest-magnitude entries, retrain the remaining weights with
    the pruned ones held at zero. Here: ``magnitude_prune`` of W1 and W2 of every run, then
    ``steps`` FP32 SGD steps of ``LimitedPrecisionSGD`` from the pruned weights, with masks.

    Args:
        params: the trained weights of S runs, {name: (S, ...)} (``history.model``).
        data: the training and test data; sparsity: in [0, 1).
        steps, lr, batch_size: the retraining SGD; gens: S generators for its minibatches.

    Returns:
        The retraining's ``engine.History``; ``history.algorithm.accuracies()`` one test accuracy
        per run, ``history.model`` the retrained weights (each W as sparse as pruned).

    Raises:
        ValueError: for a sparsity outside [0, 1), one generator per run missing, or bad SGD settings.
    """
    pruned = {k: torch.stack([magnitude_prune(w, sparsity) for w in W]) if k.startswith("W") else W.clone()
              for k, W in params.items()}  # fmt: skip
    masks = {k: w != 0 for k, w in pruned.items() if k.startswith("W")}
    sgd = LimitedPrecisionSGD(data, Precision(), gens, hidden=pruned["W1"].shape[1], lr=lr, batch_size=batch_size,
                              init=pruned, masks=masks)  # fmt: skip
    return engine.run(sgd, steps, metrics=METRICS)


@constrain(ALL_TENSORS, params=TENSORS, value_bits=Integer(min=1))
def compressed_bytes(params: dict[str, torch.Tensor], value_bits: int, *, sparse: bool) -> int:
    """Storage in bytes: each tensor's kept values at ``value_bits`` bits, plus for a sparse
    model a 1-bit mask per entry, plus 4 bytes of scale per tensor when value_bits < 32."""
    total = 0
    for w in params.values():
        kept = int((w != 0).sum()) if sparse else w.numel()
        total += math.ceil(kept * value_bits / 8) + (math.ceil(w.numel() / 8) if sparse else 0)
        total += 4 if value_bits < 32 else 0
    return total


@constrain(ALL_TENSORS, params=TENSORS, sparsity=Real(ge=0, lt=1), fmt=NAME)
def compress(params: dict[str, torch.Tensor], sparsity: float, fmt: str = "fp32") -> dict[str, torch.Tensor]:
    """Magnitude-prune the weight matrices to ``sparsity``, then round every tensor per-tensor
    scaled to ``fmt`` (INT8: symmetric quantization with scale amax / 127)."""
    out = {}
    for k, w in params.items():
        w = magnitude_prune(w, sparsity) if k.startswith("W") else w
        out[k] = w if fmt == "fp32" else scaled_round(w, fmt)[0]
    return out


@constrain(MLP_WEIGHTS, names_of_formats("fmts"), params=WEIGHTS, data=DATA, sparsities=Reals(ge=0, lt=1), fmts=NAMES)
def compression_sweep(params: dict[str, torch.Tensor], data: Dataset, sparsities, fmts=("fp32", "int8")) -> list[dict]:
    """Accuracy against bytes for every (sparsity, format): rows with sparsity, fmt, bytes, accuracy."""
    rows = []
    x, y = data.x_test.flatten(1), data.y_test
    for fmt in fmts:
        bits = 32 if fmt == "fp32" else get_format(fmt).bits
        for s in sparsities:
            c = compress(params, s, fmt)
            rows.append(dict(sparsity=s, fmt=fmt, bytes=compressed_bytes(c, bits, sparse=s > 0), accuracy=mlp_accuracy(c, x, y)))
    return rows
