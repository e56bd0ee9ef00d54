"""Accumulation error in long sums: naive, pairwise and Kahan summation in a limited format.

Every addition is rounded to the format, as an accumulator register of that width would:
s <- round(s + x_i). Higham (1993, "The accuracy of floating point summation") bounds the
error of the naive loop by (n - 1) eps sum|x_i|, of pairwise summation by log2(n) eps
sum|x_i|, and of Kahan's compensated loop (Kahan 1965) by 2 eps sum|x_i|, independent of n.
With round-to-nearest a long naive sum *stagnates*: once the sum exceeds 2 / eps times
a term, that term rounds away; stochastic rounding keeps every term in expectation.
"""
import torch

from ..constraints import Generator, Rule, Tensor, constrain
from .formats import FMT, GEN, GEN_IF_STOCHASTIC, Format, get_format, round_to

TERMS = dict(x=Tensor(description="a tensor of terms (..., n)"), fmt=FMT)
LAST_AXIS = Rule("x", lambda x: x.dim() >= 1, "x must be a tensor of terms (..., n), got a 0-d tensor")


@constrain(LAST_AXIS, GEN_IF_STOCHASTIC, **TERMS, gen=GEN)
def naive_sum(
    x: torch.Tensor, fmt: str | Format, *, stochastic: bool = False, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Sum the last axis left to right, rounding the running sum to ``fmt`` after each addition.

    s_0 = 0; s_i = round(s_{i-1} + x_i) (nearest even, or stochastic rounding).

    Args:
        x: (..., n) float tensor; the terms are first rounded to ``fmt`` themselves.
        fmt: the accumulator's format.
        stochastic, gen: stochastic rounding of every partial sum (``round_to``).

    Returns:
        (...) float64 tensor of sums.
    """
    f = get_format(fmt)
    rounded = round_to.__wrapped__  # checked once, not at every term
    terms = rounded(x.to(torch.float64), f)
    s = torch.zeros(x.shape[:-1], dtype=torch.float64, device=x.device)  # (...)
    for i in range(x.shape[-1]):
        s = rounded(s + terms[..., i], f, stochastic=stochastic, gen=gen)
    return s


@constrain(LAST_AXIS, **TERMS)
def pairwise_sum(x: torch.Tensor, fmt: str | Format) -> torch.Tensor:
    """Sum the last axis as a balanced binary tree, rounding every partial sum to ``fmt``.

    Level by level: s <- round(s[0::2] + s[1::2]) (an odd leftover passes up unchanged),
    log2(n) levels in all.

    Returns:
        (...) float64 tensor of sums.
    """
    f = get_format(fmt)
    rounded = round_to.__wrapped__
    s = rounded(x.to(torch.float64), f)  # (..., n)
    while s.shape[-1] > 1:
        pairs = s[..., : s.shape[-1] // 2 * 2]
        merged = rounded(pairs[..., 0::2] + pairs[..., 1::2], f)
        s = torch.cat([merged, s[..., pairs.shape[-1]:]], dim=-1)
    return s[..., 0]


@constrain(LAST_AXIS, **TERMS)
def kahan_sum(x: torch.Tensor, fmt: str | Format) -> torch.Tensor:
    """Kahan's compensated summation along the last axis, every operation rounded to ``fmt``.

    For each term (Kahan 1965):
        1. y = x_i - c          (c: the low-order part lost so far)
        2. t = s + y
        3. c = (t - s) - y      (what the addition of y lost, negated)
        4. s = t

    Returns:
        (...) float64 tensor of sums.
    """
    f = get_format(fmt)
    rounded = round_to.__wrapped__
    terms = rounded(x.to(torch.float64), f)
    s = torch.zeros(x.shape[:-1], dtype=torch.float64, device=x.device)
    c = torch.zeros_like(s)
    for i in range(x.shape[-1]):
        y = rounded(terms[..., i] - c, f)
        t = rounded(s + y, f)
        c = rounded(rounded(t - s, f) - y, f)
        s = t
    return s


@constrain(LAST_AXIS, **TERMS, gen=Generator())
def summation_errors(
    x: torch.Tensor, fmt: str | Format, *, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """Relative error of every method against the float64 sum of the rounded terms.

    Args:
        x: (..., n) terms.
        fmt: the accumulator format.
        gen: for the stochastic-rounding naive sum.

    Returns:
        {"naive", "stochastic", "pairwise", "kahan"} -> (...) relative errors |s - exact| / |exact|.
    """
    exact = round_to(x.to(torch.float64), fmt).sum(-1)
    sums = dict(
        naive=naive_sum(x, fmt),
        stochastic=naive_sum(x, fmt, stochastic=True, gen=gen),
        pairwise=pairwise_sum(x, fmt),
        kahan=kahan_sum(x, fmt),
    )
    return {k: (v - exact).abs() / exact.abs() for k, v in sums.items()}
