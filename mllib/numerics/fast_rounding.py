"""Round-to-nearest-even of float32 tensors in a few passes of float32 and int32 arithmetic.

``formats.round_to_nearest`` computes q * round(x / q) in float64: exact, readable, and about
a dozen passes over a tensor twice the size. For a float32 x the same bits come from float32's
own rounding (IEEE 754-2019, roundTiesToEven) or from its bit pattern, with signed zeros,
subnormals, ties, overflow, infinities and NaN included (tests/test_numerics.py compares them):

- formats with float32's exponent range (BF16, TF32): round the bit pattern to M mantissa bits
  (the top bits of float32's), as torch's own BF16 cast does: add 2^(s-1) - 1 plus the lowest
  kept bit, then clear the s = 23 - M low bits. A carry moves into the exponent, and past the
  largest exponent into infinity; subnormals of the format are float32's, so they need no care.
- narrower exponents (FP16, FP8): the "magic number" add (Muller et al. 2018, "Handbook of
  floating-point arithmetic", 2nd ed.): with C = 1.5 * 2^(e+s), e the exponent of x clamped
  to the format's normal range [emin, emax + 1], x + C lands in a binade whose gap is the
  format's gap q = 2^(e-M), so float32 rounds x there itself, ties to even (C / q is even);
  (x + C) - C is exact. The clamp gives subnormals their fixed gap; overflow lands at
  2^(emax+1) or beyond. An exact zero comes out +0: x's sign bit is put back.
- integers: float32's round (ties to even), then saturation.
"""
import math

import torch

EXPONENT, SIGN = 0x7F800000, -(2**31)  # float32's exponent field and sign bit, in its int32 view


def by_bits(f) -> bool:
    """Whether the format has float32's exponent range (and infinities): its subnormals are float32's."""
    return f.min_exponent == -126 and f.max_exponent == 127 and f.has_inf and f.mantissa_bits < 23


def by_magic_number(f) -> bool:
    """Whether C = 1.5 * 2^(e+s) stays a float32 number for every e in [emin, emax + 1] (s >= 2)."""
    s = 23 - f.mantissa_bits
    return f.min_exponent >= -126 and f.max_exponent + 1 + s <= 127 and s >= 2


def nearest_by_bits(x: torch.Tensor, f) -> torch.Tensor:
    """x (float32) rounded to the float format f (``by_bits(f)``), ties to even."""
    s = 23 - f.mantissa_bits
    y = x.nan_to_num(nan=math.nan, posinf=math.inf, neginf=-math.inf)  # one quiet NaN: no carry out of it
    bits = y.view(torch.int32)
    lowest_kept = bits >> s
    bits += lowest_kept.bitwise_and_(1)
    bits += (1 << (s - 1)) - 1
    bits &= -(1 << s)
    return y


def nearest_by_magic_number(x: torch.Tensor, f) -> torch.Tensor:
    """x (float32) rounded to the float format f (``by_magic_number(f)``), ties to even."""
    s, emin, emax = 23 - f.mantissa_bits, f.min_exponent, f.max_exponent
    bits = x.view(torch.int32)
    c = (bits & EXPONENT).clamp_((emin + 127) << 23, (emax + 128) << 23).view(torch.float32)  # 2^e, clamped
    y = torch.add(x, c, alpha=1.5 * 2.0**s)  # x + C, rounded to the gap 2^(e-M)
    y.sub_(c, alpha=1.5 * 2.0**s)
    if f.has_inf:  # 2^(emax+1) and beyond overflow float32 scaled by 2^(127-emax): infinity
        y.mul_(2.0 ** (127 - emax)).mul_(2.0 ** (emax - 127))
    else:
        y.clamp_(-f.max, f.max)  # saturate, as torch's E4M3 cast does
    y.view(torch.int32).bitwise_or_(torch.bitwise_and(bits, SIGN, out=c.view(torch.int32)))  # +0 -> -0 where x < 0
    return y


def nearest_integer(x: torch.Tensor, f) -> torch.Tensor:
    """x (float32) rounded to the integer format f (at most 24 bits), ties to even, saturated."""
    return x.round().clamp_(f.min, f.max)
