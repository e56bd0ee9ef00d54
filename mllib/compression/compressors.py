"""Compressors applied row-wise to a client matrix, each counting the bits it really sends.

Every compressor maps a (k, d) matrix of updates (one row per client) to the (k, d) matrix
the server decodes, and adds to ``bits_sent`` what the k messages cost on the wire: values,
indices, norms and scales all counted, 32 bits for each float32. A compressor is a
transform for ``mllib.run_rounds(transforms=[...])``.

A ``MessageCompressor`` (all but PowerSGD, whose workers talk twice per step) also has a wire
format: ``encode(X)`` gives the tensors a worker really sends (packed sign bits, int8 levels,
values and int32 indices, 8- or 16-bit casts) and ``decode(payload, d)`` what a receiver makes
of them; ``compress`` is exactly ``decode(encode(X))``. ``ddp.compression_hook`` all-gathers
these payloads between real processes.

Honest bit counts, per row of d entries (float32 = 32 bits, an index = ceil(log2 d) bits):

| compressor | bits per row |
|---|---|
| ``Identity`` | 32 d |
| ``ScaledSign`` | d + 32 (one sign bit per entry, one float scale) |
| ``QSGD(s)`` | 32 + d (1 + ceil(log2(s + 1))) (norm, sign and level per entry) |
| ``TopK(k)`` | k (32 + ceil(log2 d)) |
| ``RandomK(k)`` | 32 k (indices from a seed the server shares: not sent) |
| ``Cast(dtype)`` | d * bits of the dtype |
"""
import abc
import math

import torch

from ..constraints import ClientMatrix, Instance, Integer, OneOf, Real, Rule, Tensor, constrain
from ..runtime import generator

INTEGER_OF_WIDTH = {1: torch.uint8, 2: torch.int16, 4: torch.int32}
CAST_BITS = {torch.float32: 32, torch.float16: 16, torch.bfloat16: 16, torch.float8_e4m3fn: 8, torch.float8_e5m2: 8}


def _k_message(k: int, d: int) -> str:
    return f"k must be between 1 and d = {d}, got {k}; pass a k in [1, {d}] or a smaller fraction"


def _k_in_rows_of(matrix: str) -> Rule:
    """k <= d, the length of the rows of the argument ``matrix``."""
    return Rule("k", lambda **a: a["k"] <= a[matrix].shape[1], lambda **a: _k_message(a["k"], a[matrix].shape[1]))


K = Integer(min=1)  # entries kept per row
SPARSITY = dict(k=K | None, fraction=Real(gt=0, le=1) | None)
ONE_OF_K_AND_FRACTION = Rule("k", lambda k, fraction: (k is None) != (fraction is None),
                             "k or fraction must be given, exactly one of them, got k={k} and fraction={fraction}")  # fmt: skip
SEED = Integer(min=0)


@constrain(d=Integer(min=1))
def index_bits(d: int) -> int:
    """Bits of one index into d entries: ceil(log2 d), at least 1."""
    return max(1, math.ceil(math.log2(d)))


MATRIX = ClientMatrix()  # the rows (n, d) a compressor is called on


def _check_matrix(X: torch.Tensor) -> None:
    """``MATRIX``'s rank check alone, with its message: it runs every round (a compressor's call,
    an encode), where the full check, which converts lists and integers, costs 25 times as much."""
    if not isinstance(X, torch.Tensor) or X.dim() != 2:
        MATRIX.fail("X", X, ValueError if isinstance(X, torch.Tensor) else TypeError)


def _check_k(k: int, d: int) -> None:
    if k > d:
        raise ValueError(_k_message(k, d))


@constrain(_k_in_rows_of("X"), X=MATRIX, k=K)
def top_k(X: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k entries of largest magnitude in each row of X (n, d), zero the rest.

    Raises:
        ValueError: for k < 1 or k > d.
    """
    idx = X.abs().topk(k, dim=1).indices  # (n, k)
    return torch.zeros_like(X).scatter_(1, idx, X.gather(1, idx))


@constrain(_k_in_rows_of("X"), Rule("u", lambda X, u: u.shape == X.shape, "u must have the shape of X, {X.shape}, got {u.shape}"),
           X=MATRIX, k=K, u=Tensor(2))
def random_k(X: torch.Tensor, k: int, u: torch.Tensor, *, unbiased: bool = True) -> torch.Tensor:
    """Keep k random entries of each row of X (n, d): those where the uniform numbers u (n, d)
    are largest (a uniformly random k-subset), scaled by d/k when ``unbiased``.

    Raises:
        ValueError: for k < 1 or k > d, or u not of X's shape.
    """
    idx = u.topk(k, dim=1).indices  # (n, k)
    scale = X.shape[1] / k if unbiased else 1.0
    return torch.zeros_like(X).scatter_(1, idx, scale * X.gather(1, idx))


@constrain(Rule("error", lambda U, error: error.shape == U.shape, "error must have the shape of U, {U.shape}, got {error.shape}"),
           _k_in_rows_of("U"), U=MATRIX, error=MATRIX, k=K)
def error_feedback_memory(U: torch.Tensor, error: torch.Tensor, k: int) -> torch.Tensor:
    """The new error memory of top-k with error feedback: e' = (U + e) - top_k(U + e, k).

    The rows sent are (U + e) - e' (Karimireddy et al. 2019, arXiv:1901.09847, Algorithm 2, lines 4-6).
    """
    p = U + error  # (n, d)
    return p - top_k(p, k)


class Compressor(abc.ABC):
    """A row-wise compressor of the client matrix that counts the bits it sends.

    Subclasses implement ``compress(X) -> (k, d)`` (what the receiver decodes) and
    ``bits_per_row(d)``. Calling the object compresses and counts.

    State:
        bits_sent: total bits of every row compressed so far.
        rows_sent: number of rows compressed so far.
    """

    unbiased = False

    def __init__(self):
        # State
        self.bits_sent = 0
        self.rows_sent = 0

    @abc.abstractmethod
    def compress(self, X: torch.Tensor) -> torch.Tensor:
        """What the receiver decodes from the rows of X (k, d), as a (k, d) matrix."""

    @abc.abstractmethod
    def bits_per_row(self, d: int) -> int:
        """The bits one row of d entries costs on the wire."""

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        """Compress the (k, d) rows of X, count their bits, return the decoded (k, d) matrix."""
        _check_matrix(X)
        out = self.compress(X)
        self.bits_sent += X.shape[0] * self.bits_per_row(X.shape[1])
        self.rows_sent += X.shape[0]
        return out

    def ratio(self, d: int) -> float:
        """How many times fewer bits than float32 a row of d entries costs: 32 d / bits."""
        return 32 * d / self.bits_per_row(d)

    def state_dict(self) -> dict:
        return {"bits_sent": self.bits_sent, "rows_sent": self.rows_sent}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MessageCompressor(Compressor):
    """A compressor whose rows are messages the workers send on their own, with a wire format.

    Subclasses implement ``encode(X)`` -> the payload, a list of tensors whose first
    dimension is the k rows, and ``decode(payload, d)`` -> (k, d); a receiver that holds
    the sender's shared seed (RandomK) decodes with its own copy of the compressor.
    """

    @abc.abstractmethod
    def encode(self, X: torch.Tensor) -> list[torch.Tensor]:
        """The tensors the rows of X (k, d) travel as."""

    @abc.abstractmethod
    def decode(self, payload: list[torch.Tensor], d: int) -> torch.Tensor:
        """The (k, d) rows a receiver decodes from ``payload``."""

    def compress(self, X):
        return self.decode(self.encode(X), X.shape[1]).to(X.dtype)


@constrain(bits=Tensor(2, integer=True, boolean=True, description="a bool matrix (k, d)"))
def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """A bool (k, d) matrix as (k, ceil(d / 8)) uint8, 8 entries per byte, first entry highest."""
    k, d = bits.shape
    padded = torch.nn.functional.pad(bits.to(torch.uint8), (0, -d % 8)).reshape(k, -1, 8)
    return (padded << torch.arange(7, -1, -1, device=bits.device, dtype=torch.uint8)).sum(2, dtype=torch.uint8)


@constrain(Rule("d", lambda packed, d: d <= 8 * packed.shape[1],
                "d must be at most 8 * {packed.shape[1]} (8 entries per byte of a row of packed), got {d}"),
           packed=Tensor(2, integer=True, description="a uint8 matrix (k, ceil(d / 8))"), d=Integer(min=1))
def unpack_bits(packed: torch.Tensor, d: int) -> torch.Tensor:
    """The inverse of ``pack_bits``: (k, ceil(d / 8)) uint8 -> bool (k, d)."""
    shifts = torch.arange(7, -1, -1, device=packed.device, dtype=torch.uint8)
    return ((packed[..., None] >> shifts) & 1).reshape(len(packed), -1)[:, :d].bool()


class Identity(MessageCompressor):
    """No compression: every entry sent as float32 (the baseline)."""

    unbiased = True

    def encode(self, X):
        return [X.clone()]

    def decode(self, payload, d):
        return payload[0]

    def bits_per_row(self, d):
        return 32 * d


class ScaledSign(MessageCompressor):
    """Scaled sign (1-bit) compression: C(x) = ||x||_1 / d * sign(x).

    The scale makes C a contraction, ||C(x) - x||^2 <= (1 - ||x||_1^2 / (d ||x||_2^2)) ||x||^2
    (Karimireddy et al. 2019, "Error feedback fixes SignSGD", arXiv:1901.09847, Lemma 8). Biased. Zeros send
    sign +1 (one bit cannot say 0).
    """

    def encode(self, X):
        return [pack_bits.__wrapped__(X >= 0), X.abs().mean(1, keepdim=True)]  # signs (k, d/8) uint8, scales (k, 1)

    def decode(self, payload, d):
        signs, scale = payload
        return torch.where(unpack_bits.__wrapped__(signs, d), scale, -scale)  # (k, d)

    def bits_per_row(self, d):
        return d + 32


class QSGD(MessageCompressor):
    """QSGD stochastic quantization with s levels (Alistarh et al. 2017, arXiv:1610.02132, Section 3.1).

    Q_s(x)_j = ||x||_2 * sign(x_j) * xi_j / s, where xi_j = l + 1 with probability
    s |x_j| / ||x||_2 - l and l otherwise, l = floor(s |x_j| / ||x||_2). Unbiased:
    E Q_s(x) = x (Lemma 3.1). Bits are counted with fixed-width codes (1 sign bit and
    ceil(log2(s + 1)) bits for the level of each entry, a float32 norm); the paper's Elias
    coding sends fewer for small s, which we do not implement.

    Args:
        s: number of quantization levels, at least 1.
        seed: seed of the compressor's own generator.

    Raises:
        ValueError: if s < 1.
    """

    unbiased = True

    @constrain(s=Integer(min=1), seed=SEED)
    def __init__(self, s: int, seed: int = 0):
        super().__init__()
        self.s = s
        self.gen = generator(seed)  # State: own generator

    def encode(self, X):
        norm = X.norm(dim=1, keepdim=True)  # (k, 1)
        level = X.abs() / norm.clamp_min(torch.finfo(X.dtype).tiny) * self.s  # (k, d) in [0, s]
        low = level.floor()
        up = torch.rand(X.shape, generator=self.gen).to(X.device) < (level - low)
        signed = X.sign() * (low + up.to(X.dtype))  # integers in [-s, s]
        return [norm, signed.to(torch.int8 if self.s <= 127 else torch.int32)]

    def decode(self, payload, d):
        norm, signed = payload
        return norm * signed.to(norm.dtype) / self.s

    def bits_per_row(self, d):
        return 32 + d * (1 + math.ceil(math.log2(self.s + 1)))

    def __repr__(self):
        return f"QSGD(s={self.s})"


class _Sparsifier(MessageCompressor):
    @constrain(ONE_OF_K_AND_FRACTION, **SPARSITY)
    def __init__(self, k: int | None = None, fraction: float | None = None):
        super().__init__()
        self.k_, self.fraction = k, fraction

    def k(self, d: int) -> int:
        """Entries kept of a row of d: k, or max(1, round(fraction * d))."""
        k = self.k_ if self.k_ is not None else max(1, round(self.fraction * d))
        _check_k(k, d)
        return k

    def __repr__(self):
        return f"{type(self).__name__}({'k=' + str(self.k_) if self.k_ else f'fraction={self.fraction:g}'})"


class TopK(_Sparsifier):
    """Top-k sparsification: keep the k entries of largest magnitude of each row.

    C(x)_j = x_j if |x_j| is among the k largest, else 0; a contraction with
    ||C(x) - x||^2 <= (1 - k/d) ||x||^2 (Stich et al. 2018, arXiv:1809.07599, Lemma A.1). Biased. Sends k
    float32 values and k indices of ceil(log2 d) bits.

    Args:
        k: entries kept per row (1 <= k <= d), or
        fraction: share of the d entries kept, rounded, at least 1.

    Raises:
        ValueError: for k < 1, k > d, or both or neither of k and fraction.
    """

    def encode(self, X):
        _check_matrix(X)  # before X.shape[1]
        k = self.k(X.shape[1])
        idx = X.abs().topk(k, dim=1).indices  # (rows, k), as top_k picks them
        return [X.gather(1, idx), idx.to(torch.int32)]

    def decode(self, payload, d):
        values, idx = payload
        return torch.zeros(len(values), d, dtype=values.dtype, device=values.device).scatter_(1, idx.long(), values)

    def bits_per_row(self, d):
        return self.k(d) * (32 + index_bits.__wrapped__(d))


class RandomK(_Sparsifier):
    """Random-k sparsification: keep k entries of each row chosen uniformly at random.

    Unbiased variant: C(x) = d/k * x * mask, so E C(x) = x (Stich et al. 2018, arXiv:1809.07599, Section 2.1);
    biased variant (``unbiased=False``): C(x) = x * mask, a contraction with
    E||C(x) - x||^2 = (1 - k/d) ||x||^2. The server draws the same indices from the shared
    seed, so only the k float32 values are sent.

    Args:
        k or fraction: as ``TopK``.
        unbiased: scale by d/k.
        seed: seed of the compressor's own generator (shared with the server).

    Raises:
        ValueError: as ``TopK``.
    """

    @constrain(**SPARSITY, seed=SEED)
    def __init__(self, k=None, fraction=None, *, unbiased: bool = True, seed: int = 0):
        super().__init__(k, fraction)
        self.unbiased = unbiased
        self.gen = generator(seed)  # State: own generator

    def encode(self, X):
        u = torch.rand(X.shape, generator=self.gen).to(X.device)  # (rows, d)
        self.indices = u.topk(self.k(X.shape[1]), dim=1).indices  # the receiver draws the same
        scale = X.shape[1] / self.indices.shape[1] if self.unbiased else 1.0
        return [scale * X.gather(1, self.indices)]  # values only

    def decode(self, payload, d):
        values = payload[0]
        return torch.zeros(len(values), d, dtype=values.dtype, device=values.device).scatter_(1, self.indices, values)

    def bits_per_row(self, d):
        return 32 * self.k(d)


class Cast(MessageCompressor):
    """Low-precision cast: round every entry to ``dtype`` (bfloat16, float16, float8) and back.

    Deterministic round-to-nearest; biased. Sends d entries of the dtype's width.

    Raises:
        ValueError: for a dtype not in CAST_BITS.
    """

    @constrain(dtype=OneOf(*CAST_BITS))
    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def encode(self, X):
        cast = X.to(self.dtype)
        return [cast.view(INTEGER_OF_WIDTH[cast.element_size()])]  # as integers: gloo carries no float8

    def decode(self, payload, d):
        return payload[0].view(self.dtype).float()

    def bits_per_row(self, d):
        return CAST_BITS[self.dtype] * d

    def __repr__(self):
        return f"Cast({str(self.dtype).removeprefix('torch.')})"


class ErrorFeedback(MessageCompressor):
    """Error feedback around any compressor (EF-SGD, Karimireddy et al. 2019, arXiv:1901.09847, Algorithm 2).

    Each row i keeps a memory e_i of what compression dropped so far:
        1. p_i = u_i + e_i          (the update plus the error of earlier rounds)
        2. delta_i = C(p_i)         (what is sent)
        3. e_i <- p_i - delta_i     (what was not sent)
    so that e_i + u_i == delta_i + e_i' holds exactly. Row i must be the same client every
    call (full participation). The bits and the wire format are those of the inner compressor.

    Args:
        inner: the compressor to wrap.

    State:
        error: (k, d) the memory, zeros before the first call.
    """

    @constrain(inner=Instance(Compressor))
    def __init__(self, inner: Compressor):
        super().__init__()
        self.inner = inner
        self.error: torch.Tensor | None = None  # State

    def corrected(self, X: torch.Tensor) -> torch.Tensor:
        """Step 1: p = X + e."""
        if self.error is None:
            self.error = torch.zeros_like(X)
        if self.error.shape != X.shape:
            raise ValueError(f"ErrorFeedback keeps one memory row per client: expected shape "
                             f"{tuple(self.error.shape)}, got {tuple(X.shape)}")  # fmt: skip
        return X + self.error

    def compress(self, X):
        p = self.corrected(X)
        delta = self.inner.compress(p)  # 2.
        self.error = p - delta  # 3.
        return delta

    def encode(self, X):
        if not isinstance(self.inner, MessageCompressor):
            raise ValueError(f"{self.inner!r} has no wire format of its own messages")
        p = self.corrected(X)
        payload = self.inner.encode(p)  # 2.
        self.error = p - self.inner.decode(payload, X.shape[1])  # 3.
        return payload

    def decode(self, payload, d):
        return self.inner.decode(payload, d)

    def bits_per_row(self, d):
        return self.inner.bits_per_row(d)

    def state_dict(self):
        return {**super().state_dict(), "error": self.error, "inner": self.inner.state_dict()}

    def __repr__(self):
        return f"ErrorFeedback({self.inner!r})"
