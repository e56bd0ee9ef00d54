"""Self-checks for lab 02_personalized_learning: Ditto's proximal update, a Ditto round (built from
its update rule), the optimal collaboration weight, fine-tuning."""
import functools

import torch

from ..models import FlatModel, mlp
from ..personalized import training
from ..personalized.averaging import optimal_weight as _optimal_weight
from ..runtime import rand, randn
from . import Mistake, self_check


def _ditto_explicit(V, w, G, lr, lam):
    return V - lr * (G + lam * (V - w))


def _ditto_undivided(V, w, G, lr, lam):
    return V - lr * G + lr * lam * w


def _ditto_pushed_away(V, w, G, lr, lam):
    return (V - lr * G - lr * lam * w) / (1 + lr * lam)


@self_check(
    training.ditto_update,
    mistakes=[
        Mistake(_ditto_explicit, "a gradient step on the penalty, not the proximal step",
                "solve v+ = v - lr (g + lam (v+ - w)) for v+: divide by 1 + lr * lam"),
        Mistake(_ditto_undivided, "the division by 1 + lr * lam is missing",
                "(v - lr g + lr lam w) / (1 + lr lam): with a huge lam every row must land on w"),
        Mistake(_ditto_pushed_away, "the penalty pushes v away from w: the sign of lr * lam * w",
                "the penalty lam/2 ||v - w||^2 pulls v toward w: + lr * lam * w"),
    ],
)  # fmt: skip
def ditto_update(gen):
    """V (n, d), w (d,), G (n, d), lr, lam: lam = 0 (local SGD), moderate, and huge."""
    cases = []
    for (n, d), lr, lam in [((3, 4), 0.5, 1.0), ((1, 1), 0.1, 0.0), ((5, 2), 0.1, 10.0), ((4, 6), 0.05, 1e6),
                            ((2, 3), 1.0, 0.3), ((6, 5), 0.2, 3.0)]:  # fmt: skip
        cases.append(dict(V=randn(n, d, gen=gen), w=randn(d, gen=gen), G=randn(n, d, gen=gen), lr=lr, lam=lam))
    return cases


def _ditto_round_variant(model, w, V, xb, yb, xp, yp, weights, lr, lam, *, anchor="w", personal_at="v",
                         step="proximal", average="weighted"):  # fmt: skip
    """A Ditto round, the paper's (the defaults) or with one of the students' mistakes switched on."""
    Y = w.expand(len(V), -1)
    for x, y in zip(xb, yb):
        Y = Y - lr * model.grad(Y, x, y)
    for x, y in zip(xp, yp):
        G = model.grad(V if personal_at == "v" else Y, x, y)
        target = w if anchor == "w" else Y
        proximal = (V - lr * G + lr * lam * target) / (1 + lr * lam)  # mistakes may not call the forbidden functions
        V = proximal if step == "proximal" else _ditto_explicit(V, target, G, lr, lam)
    shares = weights / weights.sum() if average == "weighted" else torch.full_like(weights, 1 / len(weights))
    return shares @ Y, V


def reference_ditto_round(model, w, V, xb, yb, xp, yp, weights, lr, lam):
    """One Ditto round (Li et al. 2021, arXiv:2012.04221, Algorithm 1) with every client, on given minibatches:
    FedAvg's local SGD from w (``fine_tune_on``) averaged by weight, and proximal personal steps
    (``ditto_update``) toward the round's w; returns (w+ (d,), V+ (n, d))."""
    Y = training.fine_tune_on(model, w, xb, yb, lr)
    for x, y in zip(xp, yp):
        V = training.ditto_update(V, w, model.grad(V, x, y), lr, lam)
    return weights @ Y / weights.sum(), V


def _ditto_round_mistake(**switch):
    return functools.partial(_ditto_round_variant, **switch)


@self_check(
    reference_ditto_round,
    mistakes=[
        Mistake(_ditto_round_mistake(anchor="y"), "the personal models are pulled toward y_i, not the round's w",
                "Ditto's penalty lam/2 ||v_i - w||^2 uses the global model w the server sent"),
        Mistake(_ditto_round_mistake(personal_at="y"), "the personal gradient is taken at y_i, not at v_i",
                "each personal step needs grad f_i at the personal model: model.grad(V, x, y)"),
        Mistake(_ditto_round_mistake(step="explicit"), "the personal step is a gradient step, not the proximal one",
                "v+ = (v - lr g + lr lam w) / (1 + lr lam), stable for any lam"),
        Mistake(_ditto_round_mistake(average="mean"), "the new global model is a plain mean, not the weighted one",
                "w+ = sum_i p_i y_i with p_i = weights_i / sum(weights)"),
    ],
    forbid=[training.ditto_update, training.fine_tune_on, training.Ditto, training.ditto],
)  # fmt: skip
def ditto_round(gen):
    """A small MLP (4 -> 5 -> 3); w (d,), V (n, d); K global and P personal steps' batches
    xb (K, n, B, 4), yb (K, n, B), xp (P, n, B, 4), yp (P, n, B); unequal weights (n,); lr; lam."""
    model = FlatModel(mlp(4, 3, hidden=(5,)))
    cases = []
    for n, K, P, batch, lr, lam in [(3, 2, 2, 4, 0.3, 1.0), (1, 1, 1, 2, 0.5, 0.0), (4, 3, 2, 5, 0.2, 10.0),
                                    (5, 1, 3, 3, 0.1, 0.5), (2, 2, 4, 2, 1.0, 2.0)]:  # fmt: skip
        cases.append(dict(
            model=model, w=model.init(gen), V=0.3 * randn(n, model.dim, gen=gen),
            xb=randn(K, n, batch, 4, gen=gen), yb=(3 * rand(K, n, batch, gen=gen)).long(),
            xp=randn(P, n, batch, 4, gen=gen), yp=(3 * rand(P, n, batch, gen=gen)).long(),
            weights=0.5 + 3 * rand(n, gen=gen), lr=lr, lam=lam,
        ))  # fmt: skip
    return cases


def _weight_on_own(var_own, n_own, var_other, n_other, bias):
    return 1 - _optimal_weight(var_own, n_own, var_other, n_other, bias)


def _weight_without_sample_sizes(var_own, n_own, var_other, n_other, bias):
    return var_own / (var_own + var_other + bias**2)


def _weight_bias_not_squared(var_own, n_own, var_other, n_other, bias):
    own = var_own / n_own
    return own / (own + var_other / n_other + bias.abs())


def _weight_without_bias(var_own, n_own, var_other, n_other, bias):
    own = var_own / n_own
    return own / (own + var_other / n_other)


@self_check(
    _optimal_weight,
    mistakes=[
        Mistake(_weight_on_own, "this is 1 - beta, the weight of the client's own mean",
                "beta weighs the others' mean: it grows with the own variance s0^2 / n0"),
        Mistake(_weight_without_sample_sizes, "the variances of the means ignore the sample sizes",
                "a mean of n samples of variance s^2 has variance s^2 / n"),
        Mistake(_weight_bias_not_squared, "the bias enters unsquared",
                "the MSE of a biased estimate adds bias^2: own / (own + s1^2 / n1 + bias**2)"),
        Mistake(_weight_without_bias, "the others' bias is ignored",
                "the others' mean is off by delta: its MSE is s1^2 / n1 + delta^2"),
    ],
)  # fmt: skip
def optimal_weight(gen):
    """Per-client tensors var_own, n_own, var_other, n_other, bias (bias of both signs, and 0)."""
    cases = []
    for k in (3, 1, 5, 8):
        cases.append(dict(
            var_own=0.1 + 2 * rand(k, gen=gen), n_own=(1 + 20 * rand(k, gen=gen)).floor(),
            var_other=0.1 + 2 * rand(k, gen=gen), n_other=(1 + 200 * rand(k, gen=gen)).floor(),
            bias=randn(k, gen=gen),
        ))  # fmt: skip
    cases.append(dict(var_own=rand(4, gen=gen) + 0.5, n_own=rand(4, gen=gen).mul(10).ceil(),
                      var_other=rand(4, gen=gen), n_other=rand(4, gen=gen).mul(50).ceil(), bias=rand(4, gen=gen) * 0))
    return cases


def _fine_tune_averaged(model, w, xb, yb, lr):
    V = w.expand(xb.shape[1], -1)
    for x, y in zip(xb, yb):
        V = V - lr * model.grad(V, x, y).mean(0)
    return V


def _fine_tune_ascent(model, w, xb, yb, lr):
    return training.fine_tune_on(model, w, xb, yb, -lr)


def _fine_tune_first_batch_only(model, w, xb, yb, lr):
    return training.fine_tune_on(model, w, xb[:1], yb[:1], lr)


@self_check(
    training.fine_tune_on,
    mistakes=[
        Mistake(_fine_tune_averaged, "the clients' gradients are averaged: that trains one shared model",
                "each row steps with its own gradient: V - lr * model.grad(V, x, y), no mean"),
        Mistake(_fine_tune_ascent, "the step goes up the gradient",
                "descend: V - lr * gradient"),
        Mistake(_fine_tune_first_batch_only, "only the first step's batches are used",
                "loop over all T steps: for x, y in zip(xb, yb)"),
    ],
)  # fmt: skip
def fine_tune(gen):
    """A small MLP (4 -> 5 -> 3), the global model w, T steps of n clients' batches (T = 0 too)."""
    model = FlatModel(mlp(4, 3, hidden=(5,)))
    cases = []
    for steps, n, batch, lr in [(3, 4, 5, 0.2), (0, 3, 2, 0.1), (1, 1, 4, 0.5), (5, 2, 3, 0.1), (2, 6, 2, 1.0)]:
        cases.append(dict(
            model=model, w=model.init(gen), xb=randn(steps, n, batch, 4, gen=gen),
            yb=(3 * rand(steps, n, batch, gen=gen)).long(), lr=lr,
        ))  # fmt: skip
    return cases
