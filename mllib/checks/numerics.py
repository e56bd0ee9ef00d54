"""Self-checks for lab 09_number_formats_and_tricks."""
import torch

from ..numerics import bits, formats, hashing
from ..runtime import rand, randn
from . import self_check


@self_check(bits.decode_ieee)
def decode_bits(gen):
    """Every pattern of FP8 E5M2, E3M4-like and FP16 (bits, E, M, bias), and random FP32 patterns."""
    cases = [dict(bits=torch.arange(256), exponent_bits=5, mantissa_bits=2, bias=15),
             dict(bits=torch.arange(256), exponent_bits=3, mantissa_bits=4, bias=3),
             dict(bits=torch.arange(2**16), exponent_bits=5, mantissa_bits=10, bias=15),
             dict(bits=torch.arange(2**16), exponent_bits=8, mantissa_bits=7, bias=127)]  # fmt: skip
    cases.append(dict(bits=torch.randint(0, 2**32, (1000,), generator=gen), exponent_bits=8, mantissa_bits=23, bias=127))
    return cases


def _bf16_cases(gen):
    ties = torch.tensor([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 2**-130 * 1.5, 3.3961e38, 3.4e38, 0.0, -0.0])
    return [dict(x=ties), dict(x=randn(50, gen=gen)), dict(x=randn(6, 7, gen=gen) * 1e-39),
            dict(x=randn(100, gen=gen) * 1e30), dict(x=(torch.randint(-2**7, 2**7, (64,), generator=gen) + 0.5) * 2**-7)]  # fmt: skip


@self_check(lambda x: formats.round_to(x, "bf16"))
def round_bf16(gen):
    """float32 tensors: exact ties, subnormals, large values that overflow, random ones."""
    return _bf16_cases(gen)


@self_check(formats.stochastic_round_grid)
def stochastic_round(gen):
    """x, step, u: values on and off the grid, u near 0 and near 1."""
    return [dict(x=randn(20, gen=gen), step=0.25, u=rand(20, gen=gen)),
            dict(x=torch.tensor([0.0, 0.5, -0.5, 1.0, -1.25]), step=0.5, u=torch.tensor([0.0, 0.99, 0.0, 0.5, 0.75])),
            dict(x=randn(4, 5, gen=gen) * 10, step=3.0, u=rand(4, 5, gen=gen)),
            dict(x=torch.tensor([0.3, -0.3, 0.3, -0.3]), step=1.0, u=torch.tensor([0.69, 0.69, 0.71, 0.71]))]  # fmt: skip


@self_check(hashing.signed_hash_vector)
def hash_trick(gen):
    """h (signed 32-bit hashes, -2^31 included), values, n_features (1, 7, 16, 1000)."""
    cases = []
    for n, m in [(5, 16), (30, 7), (100, 1000), (4, 1)]:
        h = torch.randint(-2**31, 2**31, (n,), generator=gen)
        cases.append(dict(h=h, values=randn(n, gen=gen).double(), n_features=m))
    cases.append(dict(h=torch.tensor([-2**31, 2**31 - 1, 0, -1, 5]), values=torch.ones(5, dtype=torch.float64), n_features=10))
    return cases
