"""Self-checks for lab 09_number_formats_and_tricks: decoding bits, BF16 rounding, stochastic rounding to a
format (built from its rule), the hashing trick."""
import torch

from ..numerics import bits, formats, hashing
from ..runtime import rand, randn
from . import Mistake, self_check

# ---- Exercise 1: decode a bit pattern


def _decoded(b, E, M, bias):
    return bits.decode_ieee(b, E, M, bias)


@self_check(
    bits.decode_ieee,
    mistakes=[
        Mistake(lambda b, E, M, bias: _decoded(b, E, M, bias - 1), "your exponent's bias is off by one",
                "the value is 2^(e - b) (1 + m / 2^M) with b = bias: e = b means 1.x"),
        Mistake(lambda b, E, M, bias: torch.where(((b.long() >> M) & (2**E - 1)) == 0, 0.0, _decoded(b, E, M, bias)),
                "your subnormals (exponent field 0) decode to 0", "e = 0 gives 2^(1 - b) m / 2^M, not 0"),
        Mistake(lambda b, E, M, bias: _decoded(b, E, M, bias).abs(), "the sign bit is ignored",
                "the top bit s gives the factor (-1)^s: (bits >> (E + M)) & 1"),
        Mistake(lambda b, E, M, bias: _decoded(b, E, M, bias).nan_to_num(posinf=0.0, neginf=0.0),
                "your infinities are wrong", "e = 2^E - 1 with m = 0 is +-infinity"),
    ],
)  # fmt: skip
def decode_bits(gen):
    """Every pattern of FP8 E5M2, E3M4-like and FP16 (bits, E, M, bias), and random FP32 patterns."""
    cases = [dict(bits=torch.arange(256), exponent_bits=5, mantissa_bits=2, bias=15),
             dict(bits=torch.arange(256), exponent_bits=3, mantissa_bits=4, bias=3),
             dict(bits=torch.arange(2**16), exponent_bits=5, mantissa_bits=10, bias=15),
             dict(bits=torch.arange(2**16), exponent_bits=8, mantissa_bits=7, bias=127)]  # fmt: skip
    cases.append(dict(bits=torch.randint(0, 2**32, (1000,), generator=gen), exponent_bits=8, mantissa_bits=23, bias=127))
    return cases


# ---- Exercise 2: round to BF16 on the bits


def _bf16_cases(gen):
    ties = torch.tensor([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 2**-130 * 1.5, 3.3961e38, 3.4e38, 0.0, -0.0])
    return [dict(x=ties), dict(x=randn(50, gen=gen)), dict(x=randn(6, 7, gen=gen) * 1e-39),
            dict(x=randn(100, gen=gen) * 1e30), dict(x=(torch.randint(-2**7, 2**7, (64,), generator=gen) + 0.5) * 2**-7)]  # fmt: skip


def _bits_rounded(x, add):
    """Add ``add(u)`` to the unsigned bits u of x and clear the low 16 bits."""
    u = x.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    r = (u + add(u)) & 0xFFFF0000
    return torch.where(r >= 2**31, r - 2**32, r).to(torch.int32).view(torch.float32)


@self_check(
    lambda x: formats.round_to(x, "bf16"),
    mistakes=[
        Mistake(lambda x: _bits_rounded(x, lambda u: 0), "you truncate: the low bits are cut, not rounded",
                "add 0x7FFF plus the lowest kept bit before clearing the low 16 bits"),
        Mistake(lambda x: _bits_rounded(x, lambda u: 0x8000), "your ties go away from zero, not to even",
                "add 0x7FFF + ((u >> 16) & 1): a tie goes to the neighbour with an even last bit"),
        Mistake(lambda x: x.half().float(), "you round to FP16, not BF16",
                "BF16 keeps float32's 8 exponent bits and 7 mantissa bits: the top 16 bits"),
    ],
)  # fmt: skip
def round_bf16(gen):
    """float32 tensors: exact ties, subnormals, large values that overflow, random ones."""
    return _bf16_cases(gen)


# ---- Exercise 3: stochastic rounding to a floating-point format, built from its rule


def _format(E, M, bias):
    return formats.FloatFormat("lab", E, M, bias, has_inf=True, slide_range=0.0)


def reference_stochastic_round_to_format(x, exponent_bits, mantissa_bits, bias, u):
    f = _format(exponent_bits, mantissa_bits, bias)
    z = x.double().clamp(-f.max, f.max)  # saturate
    q = formats.grid_spacing(z, f)  # 2^(e - M), e the exponent of z clamped below at 1 - b
    return torch.floor(z / q + u) * q


def _sr_variant(kind):
    """Stochastic rounding with one mistake of ``kind``; otherwise as the reference."""

    def wrong(x, E, M, bias, u):
        f = _format(E, M, bias)
        z = x.double() if kind == "no saturation" else x.double().clamp(-f.max, f.max)
        e = torch.floor(torch.log2(z.abs())).clamp(min=-1100)  # log2(0) = -inf
        if kind == "frexp exponent":
            e = e + 1
        if kind != "no subnormals":
            e = e.clamp(min=1 - bias)
        q = 2.0 ** (e - M) if kind != "fixed step" else torch.full_like(z, 2.0**-M)
        return torch.round(z / q) * q if kind == "nearest" else torch.floor(z / q + u) * q

    return wrong


@self_check(
    reference_stochastic_round_to_format,
    mistakes=[
        Mistake(_sr_variant("nearest"), "you round to nearest: u is never used",
                "use the uniforms: floor(x / q + u) * q rounds up with probability (x - down) / q"),
        Mistake(_sr_variant("fixed step"), "your grid step does not grow with |x|",
                "the gap is q = 2^(e - M), e = floor(log2 |x|): it doubles with every binade"),
        Mistake(_sr_variant("frexp exponent"), "your grid is twice too coarse: the exponent is one too big",
                "e = floor(log2 |x|); torch.frexp's exponent is e + 1 (its mantissa is in [0.5, 1))"),
        Mistake(_sr_variant("no subnormals"), "below the normal range your grid keeps shrinking",
                "subnormals share the gap of the smallest binade: clamp e to at least 1 - b"),
        Mistake(_sr_variant("no saturation"), "values beyond the largest finite number are not saturated",
                "clamp x to [-max, max] first, max = (2 - 2^-M) 2^(2^E - 2 - b)"),
    ],
    forbid=[formats.round_to, formats.stochastic_round_grid, formats.round_to_nearest, formats.grid_spacing],
)  # fmt: skip
def stochastic_round_to_format(gen):
    """float64 x over many binades (subnormals, normals, beyond max), formats E5M2, E4M3 (IEEE style),
    BF16 and FP16, and u (x's shape) uniform in [0, 1)."""
    cases = []
    for E, M, bias, scale in [(5, 2, 15, 1.0), (4, 3, 7, 100.0), (8, 7, 127, 1e-3), (5, 10, 15, 1e4)]:
        x = randn(40, gen=gen).double() * scale * 2.0 ** (20 * rand(40, gen=gen).double() - 10)
        x[:4] = torch.tensor([0.0, 1.0, -1.0, 1e9], dtype=torch.float64)  # exact, on the grid, and beyond max
        x[4] = 2.0 ** (-bias - M + 1) / 3  # a subnormal
        cases.append(dict(x=x, exponent_bits=E, mantissa_bits=M, bias=bias, u=rand(40, gen=gen).double()))
    return cases


# ---- Exercise 4: the signed hashing trick


def _hashed(h, v, m, index=lambda h, m: h.to(torch.int64).abs() % m, sign=lambda h: torch.where(h >= 0, 1.0, -1.0)):
    return torch.zeros(m, dtype=v.dtype).index_add_(0, index(h, m), sign(h).to(v.dtype) * v)


@self_check(
    hashing.signed_hash_vector,
    mistakes=[
        Mistake(lambda h, v, m: _hashed(h, v, m, sign=lambda h: torch.ones_like(h)), "you add every value with sign +1",
                "a negative hash h subtracts its value: sign(h) * value"),
        Mistake(lambda h, v, m: _hashed(h, v, m, index=lambda h, m: h % m), "your index is h mod m, not |h| mod m",
                "Python's and torch's % of a negative h is positive but not |h| mod m: take h.abs() first"),
        Mistake(lambda h, v, m: _hashed(h, torch.ones_like(v), m), "you count features instead of adding their values",
                "add sign(h) * value, not sign(h)"),
        Mistake(lambda h, v, m: -_hashed(h, v, m), "your signs are flipped",
                "sign(h) = +1 for h >= 0 and -1 otherwise"),
    ],
)  # fmt: skip
def hash_trick(gen):
    """h (signed 32-bit hashes, -2^31 included), values, n_features (1, 7, 16, 1000)."""
    cases = []
    for n, m in [(5, 16), (30, 7), (100, 1000), (4, 1)]:
        h = torch.randint(-2**31, 2**31, (n,), generator=gen)
        cases.append(dict(h=h, values=randn(n, gen=gen).double(), n_features=m))
    cases.append(dict(h=torch.tensor([-2**31, 2**31 - 1, 0, -1, 5]), values=torch.ones(5, dtype=torch.float64), n_features=10))
    return cases
