"""Secure aggregation (Bonawitz et al. 2017): the server learns the sum of the rows, nothing else.

Real cryptography from the ``cryptography`` package: X25519 Diffie-Hellman for pairwise
keys, HKDF-SHA256 to derive mask seeds, ChaCha20 to expand a 32-byte seed into a mask
(a torch seed has only 64 bits). Updates are encoded in fixed point modulo 2^32, so masks
cancel exactly; mask seeds are Shamir-shared so that the sum survives dropouts.

Simplifications (said so in the lecture): shares travel in the clear inside this process
(the paper encrypts them with a second key pair and authenticated encryption), and there
is no signature/consistency round (the paper's active-adversary variant).
"""
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

MODULUS = 2**32
FRACTION_BITS = 16
# Shamir's field: the Mersenne prime 2^521 - 1, larger than every 32-byte secret.
PRIME = 2**521 - 1


# --- fixed point modulo 2^32 ---------------------------------------------------------------
def encode(x: torch.Tensor, fraction_bits: int = FRACTION_BITS) -> torch.Tensor:
    """Fixed point: round(x * 2^f) mod 2^32, as int64 in [0, 2^32).

    Sums of up to n encoded vectors decode exactly as long as |sum| < 2^(31 - f).

    Raises:
        ValueError: if fraction_bits is not in [0, 31) or x holds values beyond 2^(31 - f).
    """
    if not 0 <= fraction_bits < 31:
        raise ValueError(f"fraction_bits must be in [0, 31), got {fraction_bits}")
    scaled = torch.round(x.double() * 2**fraction_bits)
    if scaled.numel() and scaled.abs().max() >= 2**31:
        raise ValueError(f"values up to {2 ** (31 - fraction_bits)} in magnitude fit; got {x.abs().max().item():.3g}")
    return scaled.long() % MODULUS


def decode(z: torch.Tensor, fraction_bits: int = FRACTION_BITS) -> torch.Tensor:
    """Inverse of ``encode``: residues in [0, 2^32) read as signed 32-bit, divided by 2^f (float64)."""
    signed = torch.where(z >= 2**31, z - MODULUS, z)
    return signed.double() / 2**fraction_bits


# --- key agreement and pseudo-random masks ---------------------------------------------------
def private_key(gen: torch.Generator | None = None) -> X25519PrivateKey:
    """An X25519 private key: from os.urandom, or (for reproducible lectures only) 32 bytes drawn from ``gen``."""
    if gen is None:
        return X25519PrivateKey.generate()
    raw = torch.randint(0, 256, (32,), generator=gen, dtype=torch.uint8).numpy().tobytes()
    return X25519PrivateKey.from_private_bytes(raw)


def public_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def agree(own: X25519PrivateKey, other: X25519PublicKey) -> bytes:
    """The 32-byte pairwise seed s_ij = HKDF-SHA256(X25519(own, other)), the same from both sides."""
    shared = own.exchange(other)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"mllib secure aggregation mask").derive(shared)


def prg(seed: bytes, d: int) -> torch.Tensor:
    """Expand a 32-byte seed into d uniform residues mod 2^32 (int64): the ChaCha20 keystream."""
    if len(seed) != 32:
        raise ValueError(f"seed must be 32 bytes, got {len(seed)}")
    stream = Cipher(algorithms.ChaCha20(seed, b"\0" * 16), mode=None).encryptor().update(b"\0" * (4 * d))
    return torch.from_numpy(np.frombuffer(stream, dtype="<u4").astype(np.int64))


def pairwise_mask(i: int, seeds: dict[int, bytes], d: int) -> torch.Tensor:
    """Client i's pairwise mask: sum_{j > i} PRG(s_ij) - sum_{j < i} PRG(s_ij) mod 2^32, (d,).

    Summed over all clients, each PRG(s_ij) appears once with + and once with -: the masks cancel.
    """
    mask = torch.zeros(d, dtype=torch.int64)
    for j, s in seeds.items():
        if j == i:
            raise ValueError(f"client {i} cannot hold a pairwise seed with itself")
        mask = mask + prg(s, d) if j > i else mask - prg(s, d)
    return mask % MODULUS


# --- Shamir secret sharing over GF(2^521 - 1) -------------------------------------------------
def share(secret: bytes, n: int, threshold: int, rng: np.random.Generator | None = None) -> list[tuple[int, int]]:
    """Shamir (1979): shares (x, p(x)) for x = 1..n of a random polynomial of degree threshold - 1 with p(0) = secret.

    Any ``threshold`` shares determine the secret; fewer reveal nothing about it.

    Raises:
        ValueError: unless 1 <= threshold <= n.
    """
    if not 1 <= threshold <= n:
        raise ValueError(f"threshold must be in [1, n_clients={n}], got {threshold}")
    s = int.from_bytes(secret, "big")
    if rng is None:
        coefs = [int.from_bytes(os.urandom(66), "big") % PRIME for _ in range(threshold - 1)]
    else:
        coefs = [int.from_bytes(rng.bytes(66), "big") % PRIME for _ in range(threshold - 1)]
    poly = [s, *coefs]
    return [(x, sum(c * pow(x, k, PRIME) for k, c in enumerate(poly)) % PRIME) for x in range(1, n + 1)]


def reconstruct(shares: list[tuple[int, int]], threshold: int, length: int = 32) -> bytes:
    """Lagrange interpolation at 0 from ``threshold`` (or more) shares.

    Raises:
        ValueError: with fewer than ``threshold`` distinct shares, or shares that interpolate to no
            ``length``-byte secret (too few or mixed shares).
    """
    points = dict(shares)
    if len(points) < threshold:
        raise ValueError(f"need at least threshold={threshold} shares to reconstruct, got {len(points)}")
    xs = list(points)[:threshold]
    secret = 0
    for xi in xs:
        num, den = 1, 1
        for xj in xs:
            if xj != xi:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        secret = (secret + points[xi] * num * pow(den, -1, PRIME)) % PRIME
    if secret >= 2 ** (8 * length):  # wrong or mixed shares give a random field element
        raise ValueError(f"these shares do not reconstruct a {length}-byte secret; pass shares of one secret")
    return secret.to_bytes(length, "big")


# --- the protocol ------------------------------------------------------------------------------
@dataclass
class Client:
    """One client's secrets: its mask key pair, its self-mask seed b_i, and the shares it holds for others."""

    index: int
    key: X25519PrivateKey
    self_seed: bytes
    held_key_shares: dict[int, tuple[int, int]] = field(default_factory=dict)   # j -> share of s_j^SK
    held_seed_shares: dict[int, tuple[int, int]] = field(default_factory=dict)  # j -> share of b_j


class SecureAggregation:
    """Bonawitz et al. 2017 (Fig. 4, semi-honest): n clients, threshold t, vectors of length d.

    Round 0 (advertise keys): each client i publishes its X25519 public key.
    Round 1 (share keys): i Shamir-shares its private key s_i^SK and its self-mask seed b_i, t of n.
    Round 2 (masked input): y_i = x_i + PRG(b_i) + sum_{j>i} PRG(s_ij) - sum_{j<i} PRG(s_ij) mod 2^32.
    Round 3 (unmask): the survivors U send, for each other client, a share of b_j if j is in U,
        or a share of s_j^SK if j dropped, never both; the server removes the masks:
        z = sum_{i in U} y_i - sum_{i in U} PRG(b_i) + (pairwise masks between U and the dropped).

    Config: ``n``, ``threshold``, ``d``, ``fraction_bits``; keys come from ``gen`` (reproducible
    lectures) or os.urandom (gen=None).

    State:
        clients: each client's secrets; public: the public keys; revealed: per client, which
        secret the server has asked for ("seed" or "key").

    Raises:
        ValueError: if threshold is not in (n/2, n] (the paper needs t > n/2 against a
            semi-honest server) or d < 1.
    """

    def __init__(self, n: int, threshold: int, d: int, gen: torch.Generator | None = None, fraction_bits: int = FRACTION_BITS):
        if n < 2:
            raise ValueError(f"secure aggregation needs n >= 2 clients, got {n}")
        if not n // 2 < threshold <= n:
            raise ValueError(f"threshold must be in ({n // 2}, {n}] for n={n} clients, got {threshold}")
        if d < 1:
            raise ValueError(f"d must be >= 1, got {d}")
        self.n, self.threshold, self.d, self.fraction_bits = n, threshold, d, fraction_bits
        seed = None if gen is None else int(torch.randint(0, 2**62, (1,), generator=gen))
        rng = None if gen is None else np.random.default_rng(seed)
        # State
        self.clients = [
            Client(i, private_key(gen), os.urandom(32) if rng is None else rng.bytes(32)) for i in range(n)
        ]
        self.public = {c.index: c.key.public_key() for c in self.clients}  # Round 0
        self.revealed: dict[int, str] = {}
        for c in self.clients:  # Round 1
            key_bytes = c.key.private_bytes_raw()
            for (x, y), holder in zip(share(key_bytes, n, threshold, rng), self.clients):
                holder.held_key_shares[c.index] = (x, y)
            for (x, y), holder in zip(share(c.self_seed, n, threshold, rng), self.clients):
                holder.held_seed_shares[c.index] = (x, y)

    def state_dict(self) -> dict:
        return {"public": {i: public_bytes(k) for i, k in self.public.items()}, "revealed": dict(self.revealed)}

    def mask(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Round 2: client i's masked input y_i (d,) int64 residues mod 2^32 of a float vector x (d,)."""
        if x.shape != (self.d,):
            raise ValueError(f"x must have shape ({self.d},), got {tuple(x.shape)}")
        c = self.clients[i]
        seeds = {j: agree(c.key, pub) for j, pub in self.public.items() if j != i}
        y = encode(x.cpu(), self.fraction_bits) + prg(c.self_seed, self.d) + pairwise_mask(i, seeds, self.d)
        return y % MODULUS

    def _reveal(self, j: int, what: str, survivors: list[int]) -> bytes:
        """Collect survivors' shares of client j's self seed ("seed") or private key ("key")."""
        if self.revealed.get(j, what) != what:
            raise ValueError(f"the server already holds client {j}'s {self.revealed[j]}; revealing both unmasks x_{j}")
        self.revealed[j] = what
        held = [
            (self.clients[h].held_seed_shares if what == "seed" else self.clients[h].held_key_shares)[j]
            for h in survivors
        ]  # fmt: skip
        return reconstruct(held, self.threshold)

    def aggregate(self, masked: dict[int, torch.Tensor]) -> torch.Tensor:
        """Round 3: the exact sum (d,) float64 of the surviving clients' inputs.

        Args:
            masked: client index -> y_i for the clients whose masked input arrived (the survivors).

        Raises:
            ValueError: if fewer than ``threshold`` clients survived (not enough shares).
        """
        survivors = sorted(masked)
        if len(survivors) < self.threshold:
            raise ValueError(
                f"only {len(survivors)} clients survived, fewer than threshold={self.threshold}: the sum cannot be unmasked"
            )
        dropped = [j for j in range(self.n) if j not in masked]
        z = torch.stack([masked[i] for i in survivors]).sum(0)  # (d,)
        for i in survivors:  # self masks of survivors
            z = z - prg(self._reveal(i, "seed", survivors), self.d)
        for j in dropped:  # pairwise masks a survivor i shared with dropped j: recompute from s_j^SK
            key_j = X25519PrivateKey.from_private_bytes(self._reveal(j, "key", survivors))
            seeds = {i: agree(key_j, self.public[i]) for i in survivors}
            z = z + pairwise_mask(j, seeds, self.d)  # survivors' masks toward j sum to -(j's own mask toward them)
        return decode(z % MODULUS, self.fraction_bits)
