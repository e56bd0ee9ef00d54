"""The cryptographic building blocks: X25519 + HKDF key agreement, the ChaCha20 PRG, pairwise
masks, authenticated encryption of shares (ChaCha20-Poly1305) and Shamir secret sharing."""
import os

import numpy as np
import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ...constraints import Instance, Integer, Rule, constrain, shown

MODULUS = 2**32  # the default modulus of ``prg`` and ``pairwise_mask`` (the lab's)
MASK_INFO = b"mllib secure aggregation mask"
# Shamir's field: the Mersenne prime 2^521 - 1, larger than every 32-byte secret.
PRIME = 2**521 - 1
SHARE_BYTES = 66  # a field element

RNG = Instance(torch.Generator, np.random.Generator, description="a torch or NumPy generator") | None
BYTES = Instance(bytes)
INDEX = Integer(min=0, max=2**32 - 1)  # a client's index travels in 4 bytes
MODULUS_BITS = Integer(min=1, max=62)
ROUTE = dict(round=Integer(min=0), sender=INDEX, recipient=INDEX)  # a sealed message's round and parties


def _bytes(name: str, length: int) -> Rule:
    """``name``, where it is bytes, holds exactly ``length`` of them (a key or a seed)."""
    return Rule(name, lambda **a: not isinstance(a[name], bytes) or len(a[name]) == length,
                lambda **a: f"{name} must be {length} bytes, got {len(a[name])}")


def _in_field(name: str) -> Rule:
    """``name`` is an element of Shamir's field, below 2^521 - 1."""
    return Rule(name, lambda **a: a[name] < PRIME,
                lambda **a: f"{name} must be a share below the field's prime 2^521 - 1, got {shown(a[name])}")


# --- randomness and keys ---------------------------------------------------------------------
@constrain(n=Integer(min=0), gen=RNG)
def random_bytes(n: int, gen: torch.Generator | np.random.Generator | None = None) -> bytes:
    """n bytes from os.urandom, or (for reproducible lectures only) from a torch or NumPy generator."""
    if gen is None:
        return os.urandom(n)
    if isinstance(gen, np.random.Generator):
        return gen.bytes(n)
    return torch.randint(0, 256, (n,), generator=gen, dtype=torch.uint8).numpy().tobytes()


@constrain(gen=RNG)
def private_key(gen: torch.Generator | np.random.Generator | None = None) -> X25519PrivateKey:
    """An X25519 private key: from os.urandom, or (for reproducible lectures only) 32 bytes drawn from ``gen``."""
    return X25519PrivateKey.from_private_bytes(random_bytes.__wrapped__(32, gen))


@constrain(key=Instance(X25519PrivateKey, X25519PublicKey))
def public_bytes(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key (of a private key's public key)."""
    if isinstance(key, X25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@constrain(_bytes("other", 32), own=Instance(X25519PrivateKey), other=Instance(X25519PublicKey, bytes), info=BYTES)
def agree(own: X25519PrivateKey, other: X25519PublicKey | bytes, info: bytes = MASK_INFO) -> bytes:
    """The 32-byte pairwise secret HKDF-SHA256(X25519(own, other), info), the same from both sides.

    The protocol binds the round and the pair into ``info`` (``pair_info``), so that no two
    rounds or pairs share a secret even if a key were reused.
    """
    if isinstance(other, bytes):
        other = X25519PublicKey.from_public_bytes(other)
    shared = own.exchange(other)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


@constrain(purpose=Instance(str), round=Integer(min=0), i=INDEX, j=INDEX)
def pair_info(purpose: str, round: int, i: int, j: int) -> bytes:
    """HKDF's ``info`` for the secret of clients {i, j} in ``round``: symmetric in i and j."""
    return f"mllib secure aggregation {purpose}|round {round}|pair {min(i, j)} {max(i, j)}".encode()


# --- the PRG and the masks -------------------------------------------------------------------
@constrain(_bytes("seed", 32), seed=BYTES, d=Integer(min=0), modulus_bits=MODULUS_BITS)
def prg(seed: bytes, d: int, modulus_bits: int = 32) -> torch.Tensor:
    """Expand a 32-byte seed into d uniform residues mod 2^k (int64, (d,)): the ChaCha20 keystream,
    4 bytes per residue for k <= 32 (then masked to k bits), 8 bytes beyond."""
    width = 4 if modulus_bits <= 32 else 8
    stream = Cipher(algorithms.ChaCha20(seed, b"\0" * 16), mode=None).encryptor().update(b"\0" * (width * d))
    words = np.frombuffer(stream, dtype="<u4" if width == 4 else "<u8") & np.uint64(2**modulus_bits - 1)
    return torch.from_numpy(words.astype(np.int64))


@constrain(i=INDEX, seeds=Instance(dict, description="a dict {client j: 32-byte seed s_ij}"), d=Integer(min=0),
           modulus_bits=MODULUS_BITS)  # fmt: skip
def pairwise_mask(i: int, seeds: dict[int, bytes], d: int, modulus_bits: int = 32) -> torch.Tensor:
    """Client i's pairwise mask: sum_{j > i} PRG(s_ij) - sum_{j < i} PRG(s_ij) mod 2^k, (d,).

    Summed over all clients, each PRG(s_ij) appears once with + and once with -: the masks cancel.
    """
    mask = torch.zeros(d, dtype=torch.int64)
    for j, s in seeds.items():
        if j == i:
            raise ValueError(f"client {i} cannot hold a pairwise seed with itself")
        mask = (mask + prg(s, d, modulus_bits)) if j > i else (mask - prg(s, d, modulus_bits))  # prg checks each seed
        mask = mask % 2**modulus_bits
    return mask


# --- authenticated encryption of the shares ----------------------------------------------------
@constrain(_bytes("key", 32), _in_field("key_share"), _in_field("seed_share"), key=BYTES, **ROUTE,
           key_share=Integer(min=0), seed_share=Integer(min=0))  # fmt: skip
def seal(key: bytes, round: int, sender: int, recipient: int, key_share: int, seed_share: int) -> bytes:
    """ChaCha20-Poly1305 of the two shares a sender gives a recipient; the round and both indices
    are bound in as associated data (a ciphertext moved to another round or pair fails to open)."""
    plaintext = b"".join(v.to_bytes(4, "big") for v in (sender, recipient))
    plaintext += key_share.to_bytes(SHARE_BYTES, "big") + seed_share.to_bytes(SHARE_BYTES, "big")
    return ChaCha20Poly1305(key).encrypt(sender.to_bytes(12, "big"), plaintext, _header(round, sender, recipient))


@constrain(_bytes("key", 32), key=BYTES, **ROUTE, ciphertext=BYTES)
def open_sealed(key: bytes, round: int, sender: int, recipient: int, ciphertext: bytes) -> tuple[int, int]:
    """The (key share, seed share) inside ``seal``'s ciphertext.

    Raises:
        ValueError: if the ciphertext was not sealed for this round, sender and recipient.
    """
    try:
        plaintext = ChaCha20Poly1305(key).decrypt(sender.to_bytes(12, "big"), ciphertext,
                                                  _header(round, sender, recipient))  # fmt: skip
    except InvalidTag:
        raise ValueError(f"the shares from client {sender} to client {recipient} in round {round} "
                         f"do not authenticate") from None
    if (int.from_bytes(plaintext[:4], "big"), int.from_bytes(plaintext[4:8], "big")) != (sender, recipient):
        raise ValueError(f"the shares from client {sender} name another sender or recipient")
    return int.from_bytes(plaintext[8 : 8 + SHARE_BYTES], "big"), int.from_bytes(plaintext[8 + SHARE_BYTES :], "big")


def _header(round: int, sender: int, recipient: int) -> bytes:
    return f"mllib secure aggregation shares|round {round}|{sender} -> {recipient}".encode()


# --- Shamir secret sharing over GF(2^521 - 1) -------------------------------------------------
@constrain(Rule("threshold", lambda n, threshold: threshold <= n,
                "threshold must be in [1, n_clients={n}], got {threshold}"),
           Rule("secret", lambda secret: len(secret) <= SHARE_BYTES - 2,
                lambda secret: f"secret must be at most 64 bytes (an element of the field), got {len(secret)}"),
           secret=BYTES, n=Integer(min=1), threshold=Integer(min=1), rng=RNG)  # fmt: skip
def share(secret: bytes, n: int, threshold: int, rng: np.random.Generator | None = None) -> list[tuple[int, int]]:
    """Shamir (1979): shares (x, p(x)) for x = 1..n of a random polynomial of degree threshold - 1 with p(0) = secret.

    Any ``threshold`` shares determine the secret; fewer reveal nothing about it.

    Raises:
        ValueError: unless 1 <= threshold <= n.
    """
    s = int.from_bytes(secret, "big")
    coefs = [int.from_bytes(random_bytes.__wrapped__(SHARE_BYTES, rng), "big") % PRIME for _ in range(threshold - 1)]
    poly = [s, *coefs]
    return [(x, sum(c * pow(x, k, PRIME) for k, c in enumerate(poly)) % PRIME) for x in range(1, n + 1)]


@constrain(shares=Instance(list, tuple, description="a list of shares (x, p(x))"), threshold=Integer(min=1),
           length=Integer(min=1, max=SHARE_BYTES - 2))  # fmt: skip
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
