"""Number formats for deep learning: their bit layouts, and rounding any tensor into them.

A binary floating-point format with E exponent bits, M mantissa bits and bias b stores
sign s, exponent field e and mantissa field m as the value

    (-1)^s * 2^(e - b) * (1 + m / 2^M)      for a normal number (0 < e),
    (-1)^s * 2^(1 - b) * (m / 2^M)          for a subnormal one (e = 0).

Everything else (range, smallest normal and subnormal, machine epsilon) follows from
E, M and b, and the way the format spends its top exponent: IEEE 754 (2019) style formats
keep it for infinity and NaN; the "FN" ("finite, NaN") E4M3 of Micikevicius et al. (2022,
"FP8 formats for deep learning", arXiv:2209.05433) has no infinity and one NaN pattern, so it reaches 448.
"""
import math
from dataclasses import dataclass

import torch

from ..constraints import Generator, Instance, Integer, OneOf, Real, Rule, Tensor, constrain
from . import fast_rounding

# Bit counts that float64, which every rounding computes in, holds exactly: E <= 11, M <= 52.
LAYOUT = dict(exponent_bits=Integer(min=1, max=11), mantissa_bits=Integer(min=1, max=52), bias=Integer())
DESCRIPTION = dict(name=Instance(str), slide_range=Real(ge=0), torch_dtype=Instance(torch.dtype) | None)


@constrain(**LAYOUT, **DESCRIPTION)
@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: bit counts, bias and what the top exponent holds.

    Attributes:
        name: the short name (``"fp16"``, ``"fp8_e4m3"``, ...).
        exponent_bits, mantissa_bits: E and M; the format has 1 + E + M bits.
        bias: b, the exponent field of 1.0.
        has_inf: IEEE style (top exponent = inf and NaN) if True; "FN" style (top exponent
            holds numbers, only all-ones is NaN, no infinity) if False.
        slide_range: the bound R of the range +-R the lecture slide gives, shown beside the exact
            max (the slide rounds the 16- and 8-bit ranges up to powers of two; its E4M3 is the
            IEEE-style one, max 240).
        torch_dtype: torch's dtype for the format, or None where torch has none (TF32, E3M4).
    """

    name: str
    exponent_bits: int
    mantissa_bits: int
    bias: int
    has_inf: bool
    slide_range: float
    torch_dtype: torch.dtype | None = None

    @property
    def bits(self) -> int:
        """Sign, exponent and mantissa bits together (TF32: 19 significant bits)."""
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def min_exponent(self) -> int:
        """Exponent of the smallest normal number, 1 - b."""
        return 1 - self.bias

    @property
    def max_exponent(self) -> int:
        """Exponent of the largest finite number: 2^E - 2 - b (IEEE) or 2^E - 1 - b (FN)."""
        return 2**self.exponent_bits - (2 if self.has_inf else 1) - self.bias

    @property
    def max(self) -> float:
        """Largest finite value: (2 - 2^-M) 2^emax (IEEE); (2 - 2^(1-M)) 2^emax for FN (all-ones is NaN)."""
        top = 2 - 2.0 ** (-self.mantissa_bits if self.has_inf else 1 - self.mantissa_bits)
        return math.ldexp(top, self.max_exponent)

    @property
    def smallest_normal(self) -> float:
        """2^(1 - b), torch.finfo's ``tiny``."""
        return math.ldexp(1.0, self.min_exponent)

    @property
    def smallest_subnormal(self) -> float:
        """2^(1 - b - M): the gap between 0 and the first positive number."""
        return math.ldexp(1.0, self.min_exponent - self.mantissa_bits)

    @property
    def eps(self) -> float:
        """Machine epsilon 2^-M: the gap between 1 and the next number."""
        return math.ldexp(1.0, -self.mantissa_bits)

    @property
    def special_values(self) -> str:
        """What the format spends on infinity and NaN."""
        if self.has_inf:
            return "+-inf (exponent all ones, mantissa 0), NaN (exponent all ones, mantissa not 0)"
        return "no inf; NaN only at exponent and mantissa all ones"


@constrain(**DESCRIPTION, bits=Integer(min=2, max=32), special_values=Instance(str))
@dataclass(frozen=True)
class IntFormat:
    """A two's complement integer format (INT8), used with a scale: x ~ scale * q."""

    name: str
    bits: int
    slide_range: float
    torch_dtype: torch.dtype | None = None
    special_values: str = "none"

    @property
    def max(self) -> float:
        return float(2 ** (self.bits - 1) - 1)

    @property
    def min(self) -> float:
        return float(-(2 ** (self.bits - 1)))

    @property
    def eps(self) -> float:
        """The gap between 1 and the next integer."""
        return 1.0


Format = FloatFormat | IntFormat

FORMATS: dict[str, Format] = {
    "fp32": FloatFormat("fp32", 8, 23, 127, True, 3.4e38, torch.float32),
    "tf32": FloatFormat("tf32", 8, 10, 127, True, 3.4e38),
    "fp16": FloatFormat("fp16", 5, 10, 15, True, 65536.0, torch.float16),
    "bf16": FloatFormat("bf16", 8, 7, 127, True, 3.4e38, torch.bfloat16),
    "fp8_e5m2": FloatFormat("fp8_e5m2", 5, 2, 15, True, 65536.0, torch.float8_e5m2),
    "fp8_e4m3": FloatFormat("fp8_e4m3", 4, 3, 7, False, 256.0, torch.float8_e4m3fn),
    "fp8_e3m4": FloatFormat("fp8_e3m4", 3, 4, 3, True, 16.0),
    "int8": IntFormat("int8", 8, 128.0, torch.int8),
}
# A format object first: the library's own calls pass one, and it is accepted at once.
FMT = Instance(FloatFormat, IntFormat, description="a format (FloatFormat or IntFormat)") | OneOf(*FORMATS)
VALUES = Tensor(description="a tensor of values to round")
GEN = Generator() | None  # what stochastic rounding draws from
NAMES = Instance(list, tuple, description="a list of format names")
GEN_IF_STOCHASTIC = Rule("gen", lambda stochastic, gen: gen is not None or not stochastic,
                         "gen must be a torch.Generator for stochastic rounding, got None")  # fmt: skip


def names_of_formats(argument: str) -> Rule:
    """The rule that ``argument`` (a list, or None) holds only names of ``FORMATS``."""
    return Rule(argument, lambda **a: a[argument] is None or set(a[argument]) <= set(FORMATS),
                lambda **a: f"{argument} must be names of FORMATS, {list(FORMATS)}, got {a[argument]!r}")


def _torch_typed(fmt) -> bool:
    f = get_format(fmt)
    return isinstance(f, FloatFormat) and f.torch_dtype is not None


@constrain(fmt=FMT)
def get_format(fmt: str | Format) -> Format:
    """The format named ``fmt`` (a key of ``FORMATS``), or ``fmt`` itself if already one.

    Raises:
        ValueError: for an unknown name.
    """
    return fmt if isinstance(fmt, FloatFormat | IntFormat) else FORMATS[fmt]


@constrain(Rule("z", lambda z: z.dtype == torch.float64, "z must be a float64 tensor, got dtype {z.dtype}"),
           z=VALUES, fmt=FMT)
def grid_spacing(z: torch.Tensor, fmt: str | Format) -> torch.Tensor | float:
    """The gap q between the neighbours of ``fmt`` around each entry of z (float64).

    q = 2^(e - M), with e the exponent of z's leading bit clamped to [1 - b, emax + 1]:
    below the normal range the subnormals keep the gap 2^(1 - b - M); beyond max, q is the
    gap just above max. INT8: q = 1.

    Args:
        z: (...) float64 tensor; fmt: a name in ``FORMATS`` or a format.

    Returns:
        (...) float64 tensor of powers of two (1.0 for an integer format).
    """
    f = get_format(fmt)
    if isinstance(f, IntFormat):
        return 1.0
    e = ((z.view(torch.int64) >> 52) & 0x7FF) - 1023  # float64's exponent field: zero lands on the clamp
    e = e.clamp(min=f.min_exponent, max=f.max_exponent + 1)
    return ((e + (1023 - f.mantissa_bits)) << 52).view(torch.float64)  # 2^(e - M), built from its bits


def _as_float64(x: torch.Tensor) -> tuple[torch.Tensor, torch.dtype]:
    """x in float64 (exact: every float dtype embeds in it), and the dtype to return."""
    return x.to(torch.float64), x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


@constrain(x=VALUES, fmt=FMT)
def round_to_nearest(x: torch.Tensor, fmt: str | Format) -> torch.Tensor:
    """Round every entry of ``x`` to the nearest value of ``fmt``, ties to even.

    With q = ``grid_spacing`` the gap between neighbours around x, the result is
    q * round_half_even(x / q). Division by a power of two is exact in float64, so the only
    rounding is the one asked for (bit for bit torch's casts where torch has the type;
    tests/test_numerics.py checks it).

    Overflow follows torch 2.13's casts: IEEE-style formats round to +-inf once x reaches
    max + q/2 (the tie goes to the even neighbour 2^(emax+1)); FP8 E4M3 (FN) *saturates* to
    +-448, infinity included, where ml_dtypes, torch 2.11 (seen) and the OCP FP8 spec's
    non-saturating mode give NaN (``torch_cast`` saturates on every torch version). NaN stays NaN.
    INT8 rounds to an integer and saturates to [-128, 127].

    Args:
        x: a tensor of any shape (bf16 and fp8 inputs are read as float32, integers become float32).
        fmt: a name in ``FORMATS`` or a ``FloatFormat``/``IntFormat``.

    Returns:
        A tensor of x's shape and dtype (float32 for half, bf16, fp8 inputs) whose values
        all lie in ``fmt``.

    Raises:
        ValueError: for an unknown format.

    Reference: IEEE 754-2019, Sec. 4.3.1 (roundTiesToEven).
    """
    f = get_format.__wrapped__(fmt)  # .__wrapped__: without the checks this call already made
    z, dtype = _as_float64(x)
    q = grid_spacing.__wrapped__(z, f)  # the gap between fmt's neighbours around z
    y = torch.round(z / q) * q  # torch.round: half to even
    if isinstance(f, IntFormat) or not f.has_inf:
        y = y.clamp(-f.max - (isinstance(f, IntFormat)), f.max)  # INT8: [-128, 127]; E4M3: saturate as torch does
        y = torch.where(torch.isnan(z), z, y)
    else:
        # overflow (and inf, nan: inf / q = inf) -> +-inf; nan stays nan (nan > max is False)
        y = torch.where(y.abs() > f.max, z * math.inf, y)
    return y.to(dtype)


@constrain(GEN_IF_STOCHASTIC, x=VALUES, fmt=FMT, gen=GEN)
def round_to(
    x: torch.Tensor, fmt: str | Format, *, stochastic: bool = False, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Round every entry of ``x`` into ``fmt``: to nearest even (``round_to_nearest``), or stochastically.

    Stochastic rounding (Gupta et al. 2015, "Deep learning with limited numerical precision",
    arXiv:1502.02551, Eq. 5) rounds up with probability (x - down) / q, so E[round(x)] = x:
    floor(x / q + u) q, u ~ U[0, 1), q = ``grid_spacing``. It saturates at +-max so that it
    stays unbiased for every |x| <= max.

    Nearest rounding of float32, FP16 and BF16 tensors takes ``fast_rounding``'s float32 and
    int32 arithmetic (same bits, several times faster); float64 and integer tensors, and FP32
    as a format, take ``round_to_nearest``'s float64 arithmetic.

    Args:
        x: a tensor of any shape (bf16 and fp8 inputs are read as float32, integers become float32).
        fmt: a name in ``FORMATS`` or a ``FloatFormat``/``IntFormat``.
        stochastic: stochastic instead of nearest-even rounding.
        gen: the CPU generator stochastic rounding draws u from (required then).

    Returns:
        A tensor of x's shape and dtype (float32 for half, bf16, fp8 inputs) whose values
        all lie in ``fmt``.

    Raises:
        ValueError: for an unknown format, or stochastic without ``gen``.
    """
    f = get_format.__wrapped__(fmt)  # checked by the call; runs every step of sums, training
    if stochastic:
        return _round_stochastic(x, f, gen)
    if x.dtype in (torch.float32, torch.float16, torch.bfloat16) and not x.requires_grad:  # autograd: float64
        if isinstance(f, IntFormat) and f.bits <= 24:  # its integers are float32 numbers
            return fast_rounding.nearest_integer(x.float(), f)
        if isinstance(f, FloatFormat) and fast_rounding.by_bits(f):
            return fast_rounding.nearest_by_bits(x.float(), f)
        if isinstance(f, FloatFormat) and fast_rounding.by_magic_number(f):
            return fast_rounding.nearest_by_magic_number(x.float(), f)
    return round_to_nearest.__wrapped__(x, f)


def _round_stochastic(x: torch.Tensor, f: Format, gen: torch.Generator) -> torch.Tensor:
    """floor(clamp(x, +-max) / q + u) q, u ~ U[0, 1) from ``gen``: ``round_to``'s stochastic rounding."""
    z, dtype = _as_float64(x)
    q = grid_spacing.__wrapped__(z, f)  # the gap around the unclamped z
    u = torch.rand(z.shape, generator=gen, dtype=torch.float64).to(z.device)
    y = z.clamp(-f.max, f.max).div_(q).add_(u).floor_().mul_(q)  # on fmt's grid, or 2^(emax+1) for IEEE formats
    if isinstance(f, FloatFormat) and f.has_inf:  # as nearest rounding: overflow is infinite
        y.masked_fill_(y > f.max, math.inf).masked_fill_(y < -f.max, -math.inf)
    return y.to(dtype)


TORCH_TYPED = Rule("fmt", _torch_typed, lambda fmt: f"fmt must be a float format torch has a dtype for, "
                   f"{[n for n in FORMATS if _torch_typed(n)]}, got {get_format(fmt).name}; use round_to")


@constrain(TORCH_TYPED, x=VALUES, fmt=FMT)
def torch_cast(x: torch.Tensor, fmt: str | Format) -> torch.Tensor:
    """``x`` cast to ``fmt``'s torch dtype and back to x's dtype: ``round_to`` bit for bit, faster.

    Formats without infinity are clipped to +-max first, because torch's E4M3 cast of an
    overflow is version-dependent: 2.13 saturates, 2.11 gives NaN. NaN stays NaN.

    Raises:
        ValueError: if torch has no dtype for ``fmt``.
    """
    f = get_format.__wrapped__(fmt)  # checked by the call; runs every step of sums, training
    saturated = x if f.has_inf else x.clamp(-f.max, f.max)
    return saturated.to(f.torch_dtype).to(x.dtype)


@constrain(x=VALUES, fmt=FMT, margin=Real(gt=0))
def amax_scale(x: torch.Tensor, fmt: str | Format, *, margin: float = 1.0) -> torch.Tensor:
    """Per-tensor scale s = amax(|x|) / (margin * max(fmt)), so that x / s just fits the format.

    The recipe of Micikevicius et al. (2022, arXiv:2209.05433, Sec. 3) for FP8 and of symmetric INT8
    quantization (Jacob et al. 2018): one float scale per tensor, chosen from its largest
    magnitude. An all-zero (or all-NaN) tensor gets s = 1.

    Returns:
        A 0-dim float64 tensor on x's device.
    """
    f = get_format.__wrapped__(fmt)  # checked by the call; runs every step of sums, training
    amax = x.detach().abs().to(torch.float64).nan_to_num(0.0, posinf=0.0).max()
    return torch.where(amax > 0, amax / (margin * f.max), torch.ones_like(amax))


@constrain(GEN_IF_STOCHASTIC, x=VALUES, fmt=FMT, scale=Real(gt=0) | None, gen=GEN)
def scaled_round(
    x: torch.Tensor,
    fmt: str | Format,
    scale: float | torch.Tensor | None = None,
    *,
    stochastic: bool = False,
    gen: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor scaled rounding: s * round_to(x / s, fmt), with s from ``amax_scale`` by default.

    Args:
        x: float tensor of any shape.
        fmt: the format the scaled values are stored in (FP8 or INT8 typically).
        scale: s > 0 and finite, or None for amax scaling.
        stochastic, gen: as in ``round_to``.

    Returns:
        (the dequantized tensor, of x's dtype, and the scale s as a 0-dim float64 tensor).

    Raises:
        ValueError: for a scale that is not finite and positive, or an unknown format.
    """
    f = get_format(fmt)
    s = amax_scale.__wrapped__(x, f) if scale is None else torch.tensor(scale, dtype=torch.float64, device=x.device)
    return (round_to.__wrapped__(x.to(torch.float64) / s, f, stochastic=stochastic, gen=gen) * s).to(
        x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    ), s


@constrain(TORCH_TYPED, x=VALUES, fmt=FMT)
def cast_like_torch(x: torch.Tensor, fmt: str | Format) -> torch.Tensor:
    """Round through torch's own dtype: ``x.to(dtype).float()`` (for comparison with ``round_to``).

    Raises:
        ValueError: if torch has no float dtype for ``fmt`` (TF32, E3M4, INT8).
    """
    return x.to(get_format.__wrapped__(fmt).torch_dtype).to(torch.float32)


@constrain(Rule("u", lambda x, u: u.shape == x.shape, "u must have x's shape {x.shape}, got {u.shape}"),
           x=VALUES, step=Real(gt=0), u=Tensor(description="a tensor of uniform numbers in [0, 1)"))
def stochastic_round_grid(x: torch.Tensor, step: float, u: torch.Tensor) -> torch.Tensor:
    """Stochastic rounding to the grid step * Z with given uniforms u in [0, 1) (x's shape).

    floor(x / step + u) * step: rounds up with probability (x - down) / step, so that
    E_u[result] = x (Gupta et al. 2015, arXiv:1502.02551, Eq. 5).

    Raises:
        ValueError: for step not finite and positive, or u of another shape.
    """
    return torch.floor(x / step + u) * step
