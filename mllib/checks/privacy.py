"""Self-checks for lab 07_privacy: DP-SGD's clipped noisy sum, DP-SGD built from its update with its epsilon,
pairwise masks, a membership attack."""
import math

import torch

from ..models import FlatModel, mlp
from ..privacy import accountant, dp, secure_aggregation
from ..privacy.attacks import membership_auc
from ..runtime import rand, randn
from . import Mistake, self_check

# ---- Exercise 1: the privatized sum


def _clipped(G, clip):
    return G * (clip / G.norm(dim=1, keepdim=True).clamp_min(1e-30)).clamp(max=1.0)


@self_check(
    dp.noisy_clipped_sum,
    mistakes=[
        Mistake(lambda G, c, s, z: _clipped(G.sum(0, keepdim=True), c)[0] + s * c * z,
                "you clip the summed gradient, not each example's gradient",
                "clip every row g_i of G to norm C first, then sum the rows"),
        Mistake(lambda G, c, s, z: _clipped(G, c).sum(0) + s * z, "your noise is missing the factor C",
                "the sum's sensitivity is C, so the noise is sigma * C * noise"),
        Mistake(lambda G, c, s, z: (c * G / G.norm(dim=1, keepdim=True).clamp_min(1e-12)).sum(0) + s * c * z,
                "you scale every row to norm C, also the shorter ones",
                "g_i / max(1, ||g_i|| / C) leaves a row of norm <= C as it is"),
        Mistake(lambda G, c, s, z: G.sum(0) + s * c * z, "the rows are not clipped",
                "divide each row by max(1, ||g_i|| / C) before summing"),
        Mistake(lambda G, c, s, z: (_clipped(G, c).sum(0) + s * c * z) / len(G), "you return a mean, not the sum",
                "return the noisy sum; DP-SGD divides it by the batch size later"),
    ],
)  # fmt: skip
def clip_and_noise(gen):
    """G (B, d) with rows of norm below, at and above C; sigma 0 and positive; noise (d,)."""
    cases = []
    for b, d, clip, sigma in [(4, 5, 0.5, 1.0), (1, 3, 1.0, 0.0), (8, 10, 2.0, 0.3), (16, 7, 0.1, 2.0), (5, 1, 1.0, 1.0)]:
        G = randn(b, d, gen=gen) * (0.05 + 3 * rand(b, 1, gen=gen))  # norms spread around C
        cases.append(dict(G=G, clip=clip, sigma=sigma, noise=randn(d, gen=gen)))
    G = randn(6, 4, gen=gen)
    G[2] = 0  # a zero gradient stays zero
    cases.append(dict(G=G, clip=1.0, sigma=0.5, noise=randn(4, gen=gen)))
    return cases


# ---- Exercise 2: DP-SGD, built from its update rule, with its privacy


def _epsilon(q, sigma, steps, delta):
    """The accountant's epsilon of the run as a 0-d float64 tensor (inf without noise)."""
    eps = math.inf if sigma == 0 else accountant.epsilon(q=q, sigma=sigma, steps=steps, delta=delta)
    return torch.tensor(eps, dtype=torch.float64)


def reference_dp_sgd(model, row, x, y, uniforms, noises, lr, clip, sigma, q, delta):
    for u, noise in zip(uniforms, noises, strict=True):
        take = u < q  # Poisson sampling
        G = dp.per_sample_gradients(model, row, x[take], y[take])  # (batch, d)
        row = row - lr * dp.noisy_clipped_sum(G, clip, sigma, noise) / (q * len(y))
    return row, _epsilon(q, sigma, len(noises), delta)


def _dp_sgd_variant(kind):
    """DP-SGD with one mistake of ``kind``; otherwise the update of ``reference_dp_sgd``."""

    def wrong(model, row, x, y, uniforms, noises, lr, clip, sigma, q, delta):
        for u, noise in zip(uniforms, noises, strict=True):
            take = {"every example": torch.ones_like(u, dtype=torch.bool), "1 - q": u > q}.get(kind, u < q)
            G = dp.per_sample_gradients(model, row, x[take], y[take])
            if kind == "clips the sum":
                total = _clipped(G.sum(0, keepdim=True), clip)[0]
            elif kind == "no clipping":
                total = G.sum(0)
            elif kind == "all rows to C":
                total = (clip * G / G.norm(dim=1, keepdim=True).clamp_min(1e-12)).sum(0)
            else:
                total = _clipped(G, clip).sum(0)
            total = total + (sigma * noise if kind == "noise without C" else sigma * clip * noise)
            batch = {"realized batch": max(int(take.sum()), 1), "data set size": len(y)}.get(kind, q * len(y))
            row = row - lr * total / batch
        steps = 1 if kind == "one step" else len(noises)
        return row, _epsilon(1.0 if kind == "no amplification" else q, sigma, steps, delta)

    return wrong


def _tiny_classifier_data(n, gen):
    x = randn(n, 4, gen=gen).double() * 2
    return x, torch.randint(0, 3, (n,), generator=gen)


@self_check(
    reference_dp_sgd,
    mistakes=[
        Mistake(_dp_sgd_variant("every example"), "you use every example at each step, not a Poisson sample",
                "example i is in step t's batch when uniforms[t, i] < q: x[take], y[take]"),
        Mistake(_dp_sgd_variant("1 - q"), "your batch holds each example with probability 1 - q, not q",
                "uniforms[t, i] is uniform in [0, 1): keep example i when uniforms[t, i] < q"),
        Mistake(_dp_sgd_variant("clips the sum"), "you clip the summed gradient, not each example's gradient",
                "per-sample gradients (B, d) first, clip each row to norm C, then sum"),
        Mistake(_dp_sgd_variant("no clipping"), "the per-example gradients are not clipped",
                "scale each row g_i by min(1, C / ||g_i||) before summing"),
        Mistake(_dp_sgd_variant("all rows to C"), "you scale every gradient to norm C, also the shorter ones",
                "g_i / max(1, ||g_i|| / C) leaves a gradient of norm <= C as it is"),
        Mistake(_dp_sgd_variant("noise without C"), "your noise is missing the factor C",
                "the clipped sum's sensitivity is C: add sigma * C * noises[t]"),
        Mistake(_dp_sgd_variant("realized batch"), "you divide by the realized batch size, not q * N",
                "the realized size depends on who is in the data: divide by the expected size q * len(y)"),
        Mistake(_dp_sgd_variant("data set size"), "you divide by the data set size N, not q * N",
                "the expected batch size is q * N"),
        Mistake(_dp_sgd_variant("one step"), "your epsilon counts one step, not all T steps",
                "every step releases a noisy sum: the accountant composes steps=len(noises) of them"),
        Mistake(_dp_sgd_variant("no amplification"), "your epsilon ignores the sampling (q = 1)",
                "each example is used with probability q only: pass q to the accountant"),
    ],
    forbid=[dp.dp_sgd, dp.dp_sgd_gradient, dp.clipped_sum, dp.ghost_clipped_sum, dp.noisy_clipped_sum, dp.clip_rows,
            dp.clip_factors],
)  # fmt: skip
def dp_sgd(gen):
    """A tiny float64 MLP (4 -> 5 -> 3) on N examples; uniforms (T, N) in [0, 1) for Poisson
    sampling with probability q; noises (T, d) standard normal; clip around the per-example
    norms; sigma 0 (no privacy) and positive; q = 1 (every example) and below."""
    cases = []
    for n, steps, lr, clip, sigma, q, delta in [(12, 3, 0.5, 0.5, 1.0, 0.5, 1e-5), (8, 2, 1.0, 1.0, 0.0, 0.7, 1e-5),
                                                (20, 4, 0.2, 0.3, 2.0, 0.3, 1e-3), (6, 1, 0.5, 10.0, 0.5, 1.0, 1e-6)]:  # fmt: skip
        model = FlatModel(mlp(4, 3, hidden=(5,)).double())
        x, y = _tiny_classifier_data(n, gen)
        cases.append(dict(model=model, row=model.init(gen).double(), x=x, y=y, uniforms=rand(steps, n, gen=gen).double(),
                          noises=randn(steps, model.dim, gen=gen).double(), lr=lr, clip=clip, sigma=sigma, q=q,
                          delta=delta))  # fmt: skip
    return cases


# ---- Exercise 3: secure aggregation's pairwise masks


def _signed_masks(i, seeds, d):
    return [secure_aggregation.prg(s, d) if j > i else -secure_aggregation.prg(s, d) for j, s in seeds.items()]


@self_check(
    secure_aggregation.pairwise_mask,
    mistakes=[
        Mistake(lambda i, seeds, d: sum(secure_aggregation.prg(s, d) for s in seeds.values()) % 2**32,
                "you add every PRG(s_ij); the masks cannot cancel", "add PRG(s_ij) for j > i, subtract it for j < i"),
        Mistake(lambda i, seeds, d: (-sum(_signed_masks(i, seeds, d))) % 2**32, "your signs are swapped",
                "client i adds the masks shared with clients j > i and subtracts those with j < i"),
        Mistake(lambda i, seeds, d: sum(_signed_masks(i, seeds, d)), "some values fall outside [0, 2^32)",
                "reduce the sum modulo 2^32: mask % 2**32"),
    ],
)  # fmt: skip
def pairwise_mask(gen):
    """Client i of n with 32-byte seeds shared with every other client; vectors of length d."""
    cases = []
    for n, i, d in [(2, 0, 3), (2, 1, 3), (4, 2, 6), (5, 0, 5), (5, 4, 2), (6, 3, 8)]:
        seeds = {j: bytes(torch.randint(0, 256, (32,), generator=gen, dtype=torch.uint8).tolist()) for j in range(n) if j != i}
        cases.append(dict(i=i, seeds=seeds, d=d))
    return cases


# ---- Exercise 4: the loss-threshold membership attack


def loss_threshold_auc_reference(member_losses: torch.Tensor, nonmember_losses: torch.Tensor) -> torch.Tensor:
    """``membership_auc`` as a 0-d float64 tensor."""
    return torch.tensor(membership_auc(member_losses, nonmember_losses), dtype=torch.float64)


@self_check(
    loss_threshold_auc_reference,
    mistakes=[
        Mistake(lambda m, n: 1 - loss_threshold_auc_reference(m, n), "your AUC is reversed: 1 - AUC",
                "a member has the smaller loss: count pairs where the non-member's loss is larger"),
        Mistake(lambda m, n: (n[None, :] >= m[:, None]).double().mean(), "you count a tie as a full win",
                "a tie counts 1/2, not 1: compare with >, then add 1/2 for each pair of equal losses"),
        Mistake(lambda m, n: (n[None, :] > m[:, None]).double().mean(), "you count a tie as a loss",
                "a tie counts 1/2, not 0: to the pairs where the non-member's loss is larger, add 1/2 per tie"),
    ],
)  # fmt: skip
def loss_threshold_auc(gen):
    """Member and non-member losses of different sizes, overlapping, separated, and with ties."""
    cases = []
    for m, k, shift in [(3, 4, 0.0), (10, 20, 1.0), (50, 30, -0.5), (1, 7, 2.0), (25, 25, 0.0)]:
        cases.append(dict(member_losses=rand(m, gen=gen), nonmember_losses=rand(k, gen=gen) + shift))
    ties = torch.tensor([0.0, 1.0, 1.0, 2.0])
    cases.append(dict(member_losses=ties, nonmember_losses=torch.tensor([1.0, 1.0, 3.0])))
    return cases
