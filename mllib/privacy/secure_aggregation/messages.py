"""The protocol's messages: everything that crosses the network, and so everything the server sees.

Each step of Bonawitz et al. (2017, Fig. 4) is one message from each client to the server and
one from the server to each client. ``str(message)`` is one line saying what it carries (bytes
abbreviated to their first 4 bytes in hex); ``nbytes`` is the size of its payload.
"""
from dataclasses import dataclass

import torch


def _hex(data: bytes) -> str:
    return f"{data[:4].hex()}..({len(data)} B)"


@dataclass(frozen=True)
class AdvertiseKeys:
    """Step 0, client -> server: a client's two fresh public keys for this round."""

    round: int
    sender: int
    cipher_public: bytes  # c_u^PK: agrees the keys that encrypt the shares
    mask_public: bytes  # s_u^PK: agrees the pairwise mask seeds

    @property
    def nbytes(self) -> int:
        return len(self.cipher_public) + len(self.mask_public)

    def __str__(self) -> str:
        return (f"round {self.round} AdvertiseKeys   client {self.sender} -> server: "
                f"c^PK {_hex(self.cipher_public)}, s^PK {_hex(self.mask_public)}")  # fmt: skip


@dataclass(frozen=True)
class PublicKeys:
    """Step 1, server -> every client in U1: the public keys of all clients that advertised them."""

    round: int
    keys: dict[int, tuple[bytes, bytes]]  # client -> (c^PK, s^PK)

    @property
    def nbytes(self) -> int:
        return sum(len(c) + len(s) for c, s in self.keys.values())

    def __str__(self) -> str:
        return f"round {self.round} PublicKeys      server -> client: the key pairs of clients {sorted(self.keys)}"


@dataclass(frozen=True)
class EncryptedShares:
    """Step 1, client -> server: for each other client v, the shares of s_u^SK and b_u for v,
    encrypted with the key u and v agreed (the server relays them, it cannot open them)."""

    round: int
    sender: int
    ciphertexts: dict[int, bytes]  # recipient -> ciphertext

    @property
    def nbytes(self) -> int:
        return sum(len(c) for c in self.ciphertexts.values())

    def __str__(self) -> str:
        first = _hex(next(iter(self.ciphertexts.values()))) if self.ciphertexts else "-"
        return (f"round {self.round} EncryptedShares client {self.sender} -> server: "
                f"{len(self.ciphertexts)} ciphertexts for clients {sorted(self.ciphertexts)}, "
                f"e.g. {first}")  # fmt: skip


@dataclass(frozen=True)
class ForwardedShares:
    """Step 2, server -> client v: the ciphertexts the other clients in U2 sealed for v."""

    round: int
    recipient: int
    ciphertexts: dict[int, bytes]  # sender -> ciphertext

    @property
    def nbytes(self) -> int:
        return sum(len(c) for c in self.ciphertexts.values())

    def __str__(self) -> str:
        return (f"round {self.round} ForwardedShares server -> client {self.recipient}: "
                f"ciphertexts from clients {sorted(self.ciphertexts)}")  # fmt: skip


@dataclass(frozen=True)
class MaskedInput:
    """Step 2, client -> server: y_u = x_u + PRG(b_u) + sum_v +-PRG(s_uv) mod 2^k, (d,) int64."""

    round: int
    sender: int
    y: torch.Tensor
    modulus_bits: int

    @property
    def nbytes(self) -> int:
        return self.y.numel() * -(-self.modulus_bits // 8)

    def __str__(self) -> str:
        return self.summary()

    def summary(self, values: bool = True) -> str:
        """One line; with ``values=False`` without y's first residues (they move with the input's last bits)."""
        head = "[" + ", ".join(str(v) for v in self.y[:3].tolist()) + ", ...] " if values else ""
        return (f"round {self.round} MaskedInput     client {self.sender} -> server: "
                f"y = {head}({self.y.numel()} residues mod 2^{self.modulus_bits})")  # fmt: skip


@dataclass(frozen=True)
class UnmaskRequest:
    """Step 3, server -> every client in U3: who survived (U3: their y arrived) and who dropped
    (U2 minus U3). An honest client answers one request per round, and only a consistent one."""

    round: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return 4 * (len(self.survivors) + len(self.dropped))

    def __str__(self) -> str:
        return (f"round {self.round} UnmaskRequest   server -> client: survivors {list(self.survivors)}, "
                f"dropped {list(self.dropped)}")  # fmt: skip


@dataclass(frozen=True)
class UnmaskResponse:
    """Step 3, client -> server: its share of b_u for every survivor u and of s_v^SK for every
    dropped v, never both for one client. A share is (x, p(x)) of Shamir's polynomial."""

    round: int
    sender: int
    seed_shares: dict[int, tuple[int, int]]  # survivor -> share of its self-mask seed b
    key_shares: dict[int, tuple[int, int]]  # dropped -> share of its mask key s^SK

    @property
    def nbytes(self) -> int:
        return (4 + 66) * (len(self.seed_shares) + len(self.key_shares))

    def __str__(self) -> str:
        return (f"round {self.round} UnmaskResponse  client {self.sender} -> server: shares of b for clients "
                f"{sorted(self.seed_shares)}, of s^SK for clients {sorted(self.key_shares)}")  # fmt: skip


Message = AdvertiseKeys | PublicKeys | EncryptedShares | ForwardedShares | MaskedInput | UnmaskRequest | UnmaskResponse
