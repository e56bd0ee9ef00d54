"""Bit patterns: encode a number in a format, decode a pattern, and tabulate the formats.

The value of sign s, exponent field e and mantissa field m (IEEE 754-2019, Sec. 3.4):

    e = 0:               (-1)^s 2^(1 - b) (m / 2^M)          (zero and subnormals)
    0 < e < top:         (-1)^s 2^(e - b) (1 + m / 2^M)      (normal numbers)
    e = top (all ones):  inf if m = 0, else NaN              (IEEE style)
                         a normal number unless m is all ones (then NaN)   ("FN" style E4M3)
"""
import math
import numbers

import torch

from ..constraints import Instance, Integer, Rule, Tensor, constrain
from .formats import FMT, FORMATS, LAYOUT, NAMES, FloatFormat, Format, IntFormat, get_format, names_of_formats, round_to

NUMBER = Instance(numbers.Real, description="a real number (inf and nan allowed)")  # a value to show, not a setting


@constrain(Rule("bits", lambda bits, fmt: bits < 2 ** get_format(fmt).bits,
                lambda bits, fmt: f"bits must lie in [0, 2^{get_format(fmt).bits}) for {get_format(fmt).name}, got {bits}"),
           bits=Integer(min=0), fmt=FMT)
def decode(bits: int, fmt: str | Format) -> float:
    """The value of the bit pattern ``bits`` (sign bit first) in ``fmt``.

    Args:
        bits: an integer 0 <= bits < 2^(number of bits of fmt).
        fmt: a format name or object; INT8 patterns are two's complement.

    Returns:
        A Python float (inf and nan included).

    Raises:
        ValueError: for an unknown format or a pattern out of range.
    """
    f = get_format(fmt)
    if isinstance(f, IntFormat):
        return float(bits - 2**f.bits if bits >= 2 ** (f.bits - 1) else bits)
    M, E = f.mantissa_bits, f.exponent_bits
    sign = -1.0 if bits >> (E + M) else 1.0
    e = (bits >> M) & (2**E - 1)
    m = bits & (2**M - 1)
    top = 2**E - 1
    if e == top and f.has_inf:
        return sign * math.inf if m == 0 else math.nan
    if e == top and m == 2**M - 1:  # FN: the one NaN pattern
        return math.nan
    if e == 0:
        return sign * math.ldexp(m, f.min_exponent - M)
    return sign * math.ldexp(2**M + m, e - f.bias - M)


@constrain(value=NUMBER, fmt=FMT)
def encode(value: float, fmt: str | Format) -> int:
    """The bit pattern of ``value`` rounded to ``fmt`` (nearest even; see ``round_to``).

    Returns:
        An integer whose binary digits are sign, exponent and mantissa fields.
    """
    f = get_format(fmt)
    v = round_to(torch.tensor([float(value)], dtype=torch.float64), f).item()
    if isinstance(f, IntFormat):
        if math.isnan(v):
            raise ValueError(f"{f.name} has no NaN; got value={value!r}")
        return int(v) % 2**f.bits
    M, E = f.mantissa_bits, f.exponent_bits
    sign = int(math.copysign(1.0, v) < 0)
    if math.isnan(v):
        return (2 ** (E + M) - 1) if not f.has_inf else (2**E - 1) << M | 1 << (M - 1)
    mag = abs(v)
    if math.isinf(mag):
        return sign << (E + M) | (2**E - 1) << M
    if mag < f.smallest_normal:
        return sign << (E + M) | int(mag / f.smallest_subnormal)
    m, e = math.frexp(mag)  # mag = m 2^e, m in [0.5, 1)
    return sign << (E + M) | (e - 1 + f.bias) << M | int((2 * m - 1) * 2**M)


@constrain(value=NUMBER, fmt=FMT)
def bit_string(value: float, fmt: str | Format) -> str:
    """``value``'s pattern in ``fmt`` as 'sign exponent mantissa' groups of 0s and 1s."""
    f = get_format(fmt)
    bits = format(encode(value, f), f"0{f.bits}b")
    if isinstance(f, IntFormat):
        return bits
    return f"{bits[0]} {bits[1:1 + f.exponent_bits]} {bits[1 + f.exponent_bits:]}"


@constrain(names_of_formats("names"), value=NUMBER, names=NAMES | None)
def bit_rows(value: float, names: list[str] | None = None) -> list[dict]:
    """For the bit-layout explorer: ``value`` in every format.

    Returns:
        One dict per format: name, bits (grouped string), stored (the value the pattern
        decodes to) and rel_error (|stored - value| / |value|, 0 for value 0; inf when
        the format overflows).
    """
    rows = []
    for name in names or list(FORMATS):
        f = get_format(name)
        if isinstance(f, IntFormat) and math.isnan(value):
            rows.append(dict(name=name, bits="(no NaN)", stored=math.nan, rel_error=math.nan))
            continue
        stored = decode(encode(value, f), f)
        if stored == value or math.isnan(value):
            err = 0.0
        elif value == 0 or math.isinf(stored) or math.isinf(value):
            err = math.inf
        else:
            err = abs(stored - value) / abs(value)
        rows.append(dict(name=name, bits=bit_string(value, f), stored=stored, rel_error=err))
    return rows


def bit_table(value: float) -> str:
    """``bit_rows(value)`` as a fixed-width text table (what the widget prints)."""
    lines = [f"{value!r} in every format", f"{'format':<9} {'sign exponent mantissa':<36} {'stored value':>14} {'rel. error':>10}"]
    for r in bit_rows(value):
        lines.append(f"{r['name']:<9} {r['bits']:<36} {r['stored']:>14.7g} {r['rel_error']:>10.2g}")
    return "\n".join(lines)


def format_table() -> str:
    """The range/precision table of every format, the exact max beside the slide's rounded +-R."""
    head = (f"{'format':<9} {'bits':>4} {'E':>2} {'M':>2} {'bias':>4} {'max':>10} {'slide range':>11} "
            f"{'min normal':>10} {'min subnormal':>13} {'eps':>9}  special values")  # fmt: skip
    lines = [head]
    for f in FORMATS.values():
        if isinstance(f, IntFormat):
            lines.append(f"{f.name:<9} {f.bits:>4} {'':>2} {'':>2} {'':>4} {f.max:>10.5g} {f'+-{f.slide_range:g}':>11} "
                         f"{1.0:>10.3g} {1.0:>13.3g} {f.eps:>9.3g}  {f.special_values}")  # fmt: skip
            continue
        lines.append(
            f"{f.name:<9} {f.bits:>4} {f.exponent_bits:>2} {f.mantissa_bits:>2} {f.bias:>4} {f.max:>10.5g} "
            f"{f'+-{f.slide_range:g}':>11} {f.smallest_normal:>10.3g} {f.smallest_subnormal:>13.3g} {f.eps:>9.3g}  "
            f"{'no inf' if not f.has_inf else 'inf, NaN'}"
        )
    return "\n".join(lines)


def finfo_rows() -> list[tuple[str, dict, dict]]:
    """(name, ours, torch.finfo's) for every float format torch has: bits, max, tiny, eps."""
    rows = []
    for f in FORMATS.values():
        if isinstance(f, FloatFormat) and f.torch_dtype is not None:
            t = torch.finfo(f.torch_dtype)
            ours = dict(bits=f.bits, max=f.max, tiny=f.smallest_normal, eps=f.eps)
            rows.append((f.name, ours, dict(bits=t.bits, max=t.max, tiny=t.tiny, eps=t.eps)))
    return rows


@constrain(bits=Tensor(integer=True, description="a tensor of integer bit patterns"), **LAYOUT)
def decode_ieee(bits: torch.Tensor, exponent_bits: int, mantissa_bits: int, bias: int) -> torch.Tensor:
    """Decode integer bit patterns (any shape) of an IEEE-style format into float64 values.

    Vectorized ``decode`` (see the module docstring for the rule), for formats whose all-ones
    exponent holds inf and NaN.

    Returns:
        float64 tensor of bits' shape.
    """
    bits = bits.to(torch.int64)
    M, E = mantissa_bits, exponent_bits
    sign = 1 - 2 * ((bits >> (E + M)) & 1).double()
    e = (bits >> M) & (2**E - 1)
    m = (bits & (2**M - 1)).double()
    two = torch.full_like(m, 2.0)
    normal = two.pow(e.double() - bias) * (1 + m / 2**M)
    subnormal = two.pow(float(1 - bias)) * (m / 2**M)
    special = torch.where(m == 0, torch.full_like(m, math.inf), torch.full_like(m, math.nan))
    value = torch.where(e == 0, subnormal, torch.where(e == 2**E - 1, special, normal))
    return sign * value
