"""Fixed point modulo 2^k, sized from a declared bound so that the aggregate cannot wrap."""
import math
from dataclasses import dataclass

import torch

from ...constraints import Integer, OneOf, Real, Rule, constrain

NORMS = ("max", "l2")
MAX_MODULUS_BITS = 54  # sums up to 2^53 in magnitude: exact in float64 when decoded
MAX_FRACTION_BITS = 62
# The encoding's arguments (``SecureAggregation`` takes them too)
ENCODING = dict(bound=Real(gt=0), norm=OneOf(*NORMS), modulus_bits=Integer(min=2, max=MAX_MODULUS_BITS) | None,
                fraction_bits=Integer(min=0, max=MAX_FRACTION_BITS) | None)  # fmt: skip


def _num(x: float) -> str:
    """x briefly (20000, 0.5), but every digit when brevity would hide a difference."""
    return f"{x:g}" if float(f"{x:g}") == x else repr(float(x))


@constrain(Rule("bound", lambda bound: bound <= 2**53,
                "bound must be at most 2^53: no modulus up to 2^54 holds a larger input, got {bound}"),
           **ENCODING, n_clients=Integer(min=1))  # fmt: skip
@dataclass(frozen=True)
class FixedPoint:
    """Fixed point modulo 2^k whose sum of ``n_clients`` inputs within ``bound`` never wraps.

    Encoding: q = round(x * 2^f) mod 2^k (int64 residues in [0, 2^k)); a residue r decodes
    to (r - 2^k if r >= 2^(k-1) else r) / 2^f. Masks are uniform mod 2^k and cancel exactly.

    Sizing (the overflow argument, held by ``encode``): every input has |x_c| <= B in every
    coordinate (``norm="max"``; ``norm="l2"`` checks ||x||_2 <= B, which implies it), so
    |q_c| <= q_max = floor(B 2^f + 1/2) and any sum of at most n inputs lies in
    [-n q_max, n q_max]. It decodes exactly iff n q_max <= 2^(k-1) - 1. Given k (default 32),
    f is the largest that fits; given f, k is the smallest; given both, they must fit.
    An input beyond the bound raises in ``encode``, before any mask is added.

    Attributes:
        bound: B in (0, 2^53], the declared bound of every input (a value bound or a clipping norm).
        n_clients: n >= 1, the most inputs that are ever summed.
        modulus_bits: k in [2, 54]; derived when None.
        fraction_bits: f in [0, 62]; derived when None.
        norm: "max" (|x_c| <= B for each coordinate c) or "l2" (||x||_2 <= B).

    Raises:
        ValueError: for a bound that is not finite and > 0, n_clients < 1, an unknown norm,
            bits out of range, or a bound that no modulus up to 2^54 (or the given one) can hold;
            the message says which modulus_bits or fraction_bits would fit.
    """

    bound: float
    n_clients: int
    modulus_bits: int | None = None
    fraction_bits: int | None = None
    norm: str = "max"

    def __post_init__(self):
        k, f = self.modulus_bits, self.fraction_bits
        if f is None:
            k = 32 if k is None else k
            f = next((f for f in range(MAX_FRACTION_BITS, -1, -1) if self._fits(k, f)), None)
            if f is None:
                raise ValueError(f"bound={_num(self.bound)} summed over n_clients={self.n_clients} wraps modulo 2^{k} "
                                 f"even with 0 fraction bits; pass modulus_bits >= {self._smallest_k(0)}")  # fmt: skip
        elif k is None:
            k = self._smallest_k(f)
            if k > MAX_MODULUS_BITS:
                raise ValueError(f"bound={_num(self.bound)} summed over n_clients={self.n_clients} with "
                                 f"fraction_bits={f} needs a modulus beyond 2^{MAX_MODULUS_BITS}; pass fewer "
                                 f"fraction_bits")  # fmt: skip
        elif not self._fits(k, f):
            raise ValueError(f"bound={_num(self.bound)} summed over n_clients={self.n_clients} with fraction_bits={f} "
                             f"wraps modulo 2^{k}; pass modulus_bits >= {self._smallest_k(f)} or leave one of them "
                             f"None")  # fmt: skip
        object.__setattr__(self, "modulus_bits", k)
        object.__setattr__(self, "fraction_bits", f)

    def _q_max(self, f: int) -> int:
        return math.floor(math.ldexp(self.bound, f) + 0.5)

    def _fits(self, k: int, f: int) -> bool:
        return self.n_clients * self._q_max(f) <= 2 ** (k - 1) - 1

    def _smallest_k(self, f: int) -> int:
        return max(2, (self.n_clients * self._q_max(f)).bit_length() + 1)

    @property
    def modulus(self) -> int:
        """2^k."""
        return 2**self.modulus_bits

    @property
    def step(self) -> float:
        """The quantization step 2^-f: each input is rounded to within step / 2."""
        return 2.0**-self.fraction_bits

    @property
    def limit(self) -> float:
        """The largest |sum| the encoding must hold: n q_max 2^-f (n B, up to rounding)."""
        return self.n_clients * self._q_max(self.fraction_bits) * self.step

    def __str__(self) -> str:
        return (f"inputs within {_num(self.bound)} ({self.norm} norm) in steps of 2^-{self.fraction_bits} modulo "
                f"2^{self.modulus_bits}: sums of up to {self.n_clients} inputs (|sum| <= {_num(self.limit)}) "
                f"never wrap")  # fmt: skip

    def check(self, x: torch.Tensor) -> None:
        """Raise unless x is finite and within the declared bound.

        Raises:
            ValueError: naming the bound, the input's size and what to do instead.
        """
        x = torch.as_tensor(x).detach().double().cpu()
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"x must be finite, got {x[~torch.isfinite(x)][0].item()}")
        if not x.numel():
            return
        size, what = (x.abs().max(), "max |x_c|") if self.norm == "max" else (x.norm(), "||x||_2")
        if size > self.bound:
            raise ValueError(f"input outside the declared bound: {what} = {_num(size.item())} > bound "
                             f"{_num(self.bound)}; clip the input or declare a larger bound (the sum of "
                             f"{self.n_clients} inputs must not wrap modulo 2^{self.modulus_bits})")  # fmt: skip

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """round(x 2^f) mod 2^k, int64 (d,) in [0, 2^k), after ``check``.

        Raises:
            ValueError: if x is not finite or outside the bound.
        """
        self.check(x)
        x = torch.as_tensor(x).detach().double().cpu()
        return torch.round(x * 2.0**self.fraction_bits).long() % self.modulus

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Residues mod 2^k (int64) read as signed k-bit integers, times 2^-f: float64."""
        z = torch.as_tensor(z) % self.modulus
        signed = torch.where(z >= self.modulus // 2, z - self.modulus, z)
        return signed.double() * self.step
