"""The two kinds of party: a client holds its own keys, seeds and the shares sent to it; the server
holds only the messages it received. Neither holds a reference to another party."""
from dataclasses import dataclass, field

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ...constraints import Generator, Instance, Integer, Rule, constrain
from . import primitives
from .fixed_point import FixedPoint
from .messages import (
    AdvertiseKeys, EncryptedShares, ForwardedShares, MaskedInput, PublicKeys, UnmaskRequest, UnmaskResponse,
)  # fmt: skip

# The parties call the primitives many times a round, on values they made themselves: without their checks.
agree, open_sealed, pair_info, pairwise_mask, prg, private_key, public_bytes, random_bytes, reconstruct, seal, share = (
    getattr(primitives, name).__wrapped__ for name in ("agree", "open_sealed", "pair_info", "pairwise_mask", "prg",
                                                       "private_key", "public_bytes", "random_bytes", "reconstruct",
                                                       "seal", "share"))  # fmt: skip


class RefusedRequest(ValueError):
    """An honest client refuses a message that breaks the protocol (and sends nothing)."""


# What both parties hold: n >= 2 clients, n/2 < t <= n, an encoding sized for n inputs, rows of d >= 1.
PARTIES = dict(n_clients=Integer(min=2), threshold=Integer(min=1), encoding=Instance(FixedPoint), d=Integer(min=1))
PARTY_RULES = (
    Rule("threshold", lambda n_clients, threshold: n_clients // 2 < threshold <= n_clients,
         lambda n_clients, threshold: f"threshold must be in ({n_clients // 2}, {n_clients}] for n={n_clients} clients "
         f"(t > n/2: no two disjoint groups of t clients), got {threshold}"),
    Rule("encoding", lambda n_clients, encoding: encoding.n_clients >= n_clients,
         "encoding must be sized for n_clients >= {n_clients} inputs, got n_clients={encoding.n_clients}: "
         "the sum could wrap"),
)  # fmt: skip


@constrain(*PARTY_RULES, **PARTIES)
def check_parties(n_clients: int, threshold: int, encoding: FixedPoint, d: int) -> None:
    """The constraints both parties hold (``PARTIES`` and ``PARTY_RULES``, checked before this empty body).

    Raises:
        ValueError: naming the argument, what it must be and what it got.
    """


@dataclass
class _RoundSecrets:
    """What a client keeps during one round; dropped when the round ends."""

    round: int
    cipher_key: X25519PrivateKey  # c_u^SK
    mask_key: X25519PrivateKey  # s_u^SK
    stage: str = "keys advertised"  # -> "shares sent" -> "input sent"
    keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # U1: v -> (c_v^PK, s_v^PK)
    self_seed: bytes = b""  # b_u
    held: dict[int, tuple[tuple[int, int], tuple[int, int]]] = field(default_factory=dict)  # v -> (s_v^SK, b_v) shares
    u2: tuple[int, ...] = ()  # the clients whose shares this client holds (and itself)


class SecAggClient:
    """One client of Bonawitz et al. (2017, Fig. 4): holds its own keys and the shares sent to it.

    Every round it draws fresh key pairs (c_u, s_u) and a fresh self-mask seed b_u; the round
    number is bound into every key derivation and ciphertext, and rounds must increase, so no
    mask is ever used twice. It refuses (``RefusedRequest``) any message that would make it
    reveal more than the protocol allows:

    - public keys from the server that misstate its own, repeat a key, or list fewer than t clients;
    - forwarded ciphertexts that do not authenticate, or fewer than t - 1 of them;
    - an unmask request that names a client both as survivor and as dropped, names itself as
      dropped, disagrees with the clients whose shares it holds, lists fewer than t survivors,
      or comes after it already answered one in this round. So it never sends both of a client's
      secrets (b_v and s_v^SK), which together would unmask x_v.

    Args:
        index: this client's index in [0, n).
        n_clients, threshold: n and t, n/2 < t <= n.
        encoding: the fixed-point encoding (sized for n inputs within its bound).
        d: the length of the input vector.
        gen: None (keys and seeds from os.urandom), or a generator for reproducible lectures
            (this client's own stream is seeded from it once, here).

    Raises:
        ValueError: on constraints ``check_parties`` states, or an index outside [0, n).
    """

    @constrain(*PARTY_RULES, Rule("index", lambda index, n_clients: index < n_clients,
                                  "index must be an integer in [0, {n_clients}), got {index}"),
               **PARTIES, index=Integer(min=0), gen=Generator() | None)  # fmt: skip
    def __init__(self, index: int, n_clients: int, threshold: int, encoding: FixedPoint, d: int, *,
                 gen: torch.Generator | None = None):  # fmt: skip
        self.index, self.n, self.threshold, self.encoding, self.d = index, n_clients, threshold, encoding, d
        # State
        self._rng = None if gen is None else np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))
        self._last_round: int | None = None
        self._secrets: _RoundSecrets | None = None

    def state_dict(self) -> dict:
        """The client's public state: its last round and stage (never a key or a share)."""
        stage = "idle" if self._secrets is None else self._secrets.stage
        return {"index": self.index, "round": self._last_round, "stage": stage}

    def _refuse(self, why: str) -> RefusedRequest:
        return RefusedRequest(f"client {self.index} refuses: {why}")

    def _current(self, round: int, stage: str, step: str) -> _RoundSecrets:
        s = self._secrets
        if s is None and round == self._last_round:
            raise self._refuse(f"a {step} message for round {round}, which is over for it (its secrets are gone)")
        if s is None or s.round != round:
            raise self._refuse(f"a {step} message for round {round}, but its round is {self._last_round}")
        if s.stage != stage:
            raise self._refuse(f"a {step} message in round {round} at stage {s.stage!r}")
        return s

    # Step 0 ------------------------------------------------------------------------------------
    def advertise_keys(self, round: int) -> AdvertiseKeys:
        """Draw this round's key pairs (c_u, s_u) and send their public halves.

        Raises:
            ValueError: if ``round`` is not an integer above every round this client took part in.
        """
        if isinstance(round, bool) or not isinstance(round, int) or round < 0:
            raise ValueError(f"round must be an integer >= 0, got {round!r}")
        if self._last_round is not None and round <= self._last_round:
            raise ValueError(f"client {self.index} already took part in round {self._last_round}: rounds must increase "
                             f"(fresh keys and masks every round), got round {round}")  # fmt: skip
        self._last_round = round
        self._secrets = _RoundSecrets(round, private_key(self._rng), private_key(self._rng))
        return AdvertiseKeys(round, self.index, public_bytes(self._secrets.cipher_key),
                             public_bytes(self._secrets.mask_key))  # fmt: skip

    # Step 1 ------------------------------------------------------------------------------------
    def share_keys(self, keys: PublicKeys) -> EncryptedShares:
        """Shamir-share s_u^SK and a fresh self-mask seed b_u (t of n), and seal each other client's
        two shares with the key agreed from c_u^SK and its c_v^PK.

        Raises:
            RefusedRequest: see the class.
        """
        s = self._current(keys.round, "keys advertised", "public keys")
        mine = (public_bytes(s.cipher_key), public_bytes(s.mask_key))
        if keys.keys.get(self.index) != mine:
            raise self._refuse("the public keys misstate its own keys")
        if len(keys.keys) < self.threshold:
            raise self._refuse(f"only {len(keys.keys)} clients advertised keys, fewer than t={self.threshold}")
        if any(not 0 <= v < self.n for v in keys.keys):
            raise self._refuse(f"the public keys name clients outside [0, {self.n})")
        flat = [k for pair in keys.keys.values() for k in pair]
        if len(set(flat)) != len(flat):
            raise self._refuse("two public keys are identical")
        s.keys, s.self_seed = dict(keys.keys), random_bytes(32, self._rng)
        key_shares = share(s.mask_key.private_bytes_raw(), self.n, self.threshold, self._rng)  # x = v + 1 for client v
        seed_shares = share(s.self_seed, self.n, self.threshold, self._rng)
        s.held[self.index] = (key_shares[self.index], seed_shares[self.index])
        ciphertexts = {}
        for v, (cipher_public, _) in sorted(s.keys.items()):
            if v != self.index:
                key = agree(s.cipher_key, cipher_public, pair_info("shares", s.round, self.index, v))
                ciphertexts[v] = seal(key, s.round, self.index, v, key_shares[v][1], seed_shares[v][1])
        s.stage = "shares sent"
        return EncryptedShares(s.round, self.index, ciphertexts)

    # Step 2 ------------------------------------------------------------------------------------
    def masked_input(self, x: torch.Tensor, shares: ForwardedShares) -> MaskedInput:
        """Open the shares sent to it, then send y_u = x_u + PRG(b_u) + sum_{v in U2, v > u} PRG(s_uv)
        - sum_{v in U2, v < u} PRG(s_uv) mod 2^k, where s_uv = HKDF(X25519(s_u^SK, s_v^PK), round, pair).

        Args:
            x: this client's input (d,), within the encoding's bound.
            shares: the server's ``ForwardedShares`` for this client.

        Raises:
            ValueError: if x has another shape, is not finite or is outside the bound (before any
                masking), or if this client already masked an input in this round.
            RefusedRequest: see the class.
        """
        x = torch.as_tensor(x)
        if x.shape != (self.d,):
            raise ValueError(f"x must have shape ({self.d},), got {tuple(x.shape)}")
        if self._secrets is not None and self._secrets.round == shares.round and self._secrets.stage == "input sent":
            raise ValueError(f"client {self.index} already masked its input in round {shares.round}: a second "
                             f"masked vector under the same masks would reveal x1 - x2; start a new round")  # fmt: skip
        q = self.encoding.encode(x)  # raises outside the bound, before any mask
        s = self._current(shares.round, "shares sent", "forwarded shares")
        if shares.recipient != self.index:
            raise self._refuse(f"forwarded shares addressed to client {shares.recipient}")
        if unknown := set(shares.ciphertexts) - (set(s.keys) - {self.index}):
            raise self._refuse(f"forwarded shares from clients {sorted(unknown)} that did not advertise keys")
        if len(shares.ciphertexts) + 1 < self.threshold:
            raise self._refuse(f"shares from {len(shares.ciphertexts)} other clients, fewer than "
                               f"t - 1 = {self.threshold - 1}")  # fmt: skip
        for v, ciphertext in shares.ciphertexts.items():
            key = agree(s.cipher_key, s.keys[v][0], pair_info("shares", s.round, self.index, v))
            try:
                key_y, seed_y = open_sealed(key, s.round, v, self.index, ciphertext)
            except ValueError as error:
                raise self._refuse(str(error)) from None
            s.held[v] = ((self.index + 1, key_y), (self.index + 1, seed_y))
        s.u2 = tuple(sorted({*shares.ciphertexts, self.index}))
        k = self.encoding.modulus_bits
        seeds = {v: agree(s.mask_key, s.keys[v][1], pair_info("mask", s.round, self.index, v)) for v in s.u2
                 if v != self.index}  # fmt: skip
        y = (q + prg(s.self_seed, self.d, k)) % self.encoding.modulus
        y = (y + pairwise_mask(self.index, seeds, self.d, k)) % self.encoding.modulus
        s.stage = "input sent"
        return MaskedInput(s.round, self.index, y, k)

    # Step 3 ------------------------------------------------------------------------------------
    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Send its share of b_u for each survivor u and of s_v^SK for each dropped v, once per round;
        then forget this round's secrets.

        Raises:
            RefusedRequest: see the class.
        """
        if self._secrets is None and request.round == self._last_round:
            raise self._refuse(f"it already answered the unmask request of round {request.round} "
                               f"(one answer per round)")  # fmt: skip
        s = self._current(request.round, "input sent", "unmask request")
        survivors, dropped = set(request.survivors), set(request.dropped)
        if both := survivors & dropped:
            raise self._refuse(f"the request names clients {sorted(both)} both as survivors and as dropped; "
                               f"their self-mask seeds and mask keys together would unmask their inputs")  # fmt: skip
        if self.index in dropped:
            raise self._refuse("the request names this client as dropped, but it sent its masked input")
        if survivors | dropped != set(s.u2):
            raise self._refuse(f"the request names clients {sorted(survivors | dropped)}, but the round's "
                               f"clients are {list(s.u2)}")  # fmt: skip
        if len(survivors) < self.threshold:
            raise self._refuse(f"only {len(survivors)} survivors, fewer than t={self.threshold}")
        response = UnmaskResponse(s.round, self.index, {u: s.held[u][1] for u in sorted(survivors)},
                                  {v: s.held[v][0] for v in sorted(dropped)})  # fmt: skip
        self._secrets = None  # the round is over: its keys, seeds and shares are gone
        return response


class SecAggServer:
    """The server of Bonawitz et al. (2017, Fig. 4): it holds only the messages it received.

    Each step takes the clients' messages of one kind and returns the messages it sends back,
    one per client (``received`` and ``sent`` keep them all: its whole view). It follows the
    protocol (honest but curious) and checks what it receives: one message per client and
    round, rounds that increase, at least t clients at every step (U1 >= U2 >= U3 >= U5 >= t).

    Args:
        n_clients, threshold, encoding, d: as the clients'.

    Raises:
        ValueError: on constraints ``check_parties`` states.
    """

    @constrain(*PARTY_RULES, **PARTIES)
    def __init__(self, n_clients: int, threshold: int, encoding: FixedPoint, d: int):
        self.n, self.threshold, self.encoding, self.d = n_clients, threshold, encoding, d
        # State: its view, and this round's bookkeeping (derived from the view alone)
        self.received: list = []
        self.sent: list[tuple[int, object]] = []  # (recipient, message)
        self.round: int | None = None
        self._stage = "idle"
        self._keys: dict[int, tuple[bytes, bytes]] = {}  # U1
        self._u2: tuple[int, ...] = ()
        self._inputs: dict[int, torch.Tensor] = {}  # U3

    def state_dict(self) -> dict:
        return {"round": self.round, "stage": self._stage, "received": len(self.received), "sent": len(self.sent)}

    def view(self, round: int | None = None, *, values: bool = True) -> str:
        """What the server received (in ``round``, or in all rounds), one message a line; with
        ``values=False``, masked inputs without their first residues (for outputs compared across CPUs)."""
        shown = [m for m in self.received if round is None or m.round == round]
        return "\n".join(m.summary(values) if isinstance(m, MaskedInput) else str(m) for m in shown)

    def _receive(self, messages, kind: type, stage: str, allowed) -> dict:
        messages = list(messages)
        if self._stage != stage:
            raise ValueError(f"the server expects {stage!r} messages now, not {kind.__name__} (stage {self._stage!r})")
        by_sender = {}
        for m in messages:
            if not isinstance(m, kind) or m.round != self.round:
                raise ValueError(f"expected {kind.__name__} messages of round {self.round}, got {m}")
            if m.sender in by_sender or m.sender not in allowed:
                raise ValueError(f"unexpected {kind.__name__} from client {m.sender} in round {self.round}")
            by_sender[m.sender] = m
        self.received.extend(messages)
        if len(by_sender) < self.threshold:
            self._stage = "halted"
            raise ValueError(f"only {len(by_sender)} clients sent {kind.__name__} in round {self.round}, fewer than "
                             f"threshold={self.threshold}: the round stops here")  # fmt: skip
        return by_sender

    def _send(self, messages: dict[int, object]) -> dict[int, object]:
        self.sent.extend(messages.items())
        return messages

    # Step 0 -> 1 -------------------------------------------------------------------------------
    def collect_keys(self, messages) -> dict[int, PublicKeys]:
        """Start a round: collect ``AdvertiseKeys`` (U1) and broadcast them to U1."""
        messages = list(messages)
        rounds = {m.round for m in messages}
        if len(rounds) != 1 or (self.round is not None and min(rounds) <= self.round):
            raise ValueError(f"AdvertiseKeys must start one new round after round {self.round}, "
                             f"got rounds {sorted(rounds)}")  # fmt: skip
        self.round, self._stage = rounds.pop(), "keys"
        self._keys, self._u2, self._inputs = {}, (), {}
        by_sender = self._receive(messages, AdvertiseKeys, "keys", range(self.n))
        self._keys = {u: (m.cipher_public, m.mask_public) for u, m in sorted(by_sender.items())}
        self._stage = "shares"
        return self._send({u: PublicKeys(self.round, dict(self._keys)) for u in self._keys})

    # Step 1 -> 2 -------------------------------------------------------------------------------
    def route_shares(self, messages) -> dict[int, ForwardedShares]:
        """Collect ``EncryptedShares`` (U2) and forward each ciphertext to its recipient in U2."""
        by_sender = self._receive(messages, EncryptedShares, "shares", self._keys)
        self._u2 = tuple(sorted(by_sender))
        for u, m in by_sender.items():
            if set(m.ciphertexts) != set(self._keys) - {u}:
                raise ValueError(f"client {u} sealed shares for {sorted(m.ciphertexts)}, "
                                 f"not for every other client of U1")  # fmt: skip
        self._stage = "inputs"
        forwarded = {v: {u: by_sender[u].ciphertexts[v] for u in self._u2 if u != v} for v in self._u2}
        return self._send({v: ForwardedShares(self.round, v, sealed) for v, sealed in forwarded.items()})

    # Step 2 -> 3 -------------------------------------------------------------------------------
    def collect_inputs(self, messages) -> dict[int, UnmaskRequest]:
        """Collect ``MaskedInput`` (U3) and ask U3 for the shares that remove the masks."""
        by_sender = self._receive(messages, MaskedInput, "inputs", self._u2)
        for u, m in by_sender.items():
            y = m.y
            if y.shape != (self.d,) or y.dtype != torch.int64 or bool(((y < 0) | (y >= self.encoding.modulus)).any()):
                raise ValueError(f"client {u}'s masked input must be (d,) = ({self.d},) int64 residues mod 2^"
                                 f"{self.encoding.modulus_bits}")  # fmt: skip
        self._inputs = {u: by_sender[u].y for u in sorted(by_sender)}
        request = UnmaskRequest(self.round, tuple(self._inputs), tuple(u for u in self._u2 if u not in self._inputs))
        self._stage = "unmask"
        return self._send({u: request for u in self._inputs})

    # Step 3 ------------------------------------------------------------------------------------
    def aggregate(self, messages) -> torch.Tensor:
        """Collect ``UnmaskResponse`` (U5), reconstruct b_u (u in U3) and s_v^SK (v in U2 minus U3), and
        remove the masks: z = sum_{u in U3} (y_u - PRG(b_u)) + sum_{v dropped} pairwise_mask(v, s_vu for u in U3).

        Returns:
            the sum of the survivors' inputs (d,), float64, exact in the fixed-point encoding.

        Raises:
            ValueError: with fewer than t responses, or shares that do not reconstruct.
        """
        by_sender = self._receive(messages, UnmaskResponse, "unmask", self._inputs)
        dropped = [v for v in self._u2 if v not in self._inputs]
        k, m = self.encoding.modulus_bits, self.encoding.modulus
        z = torch.zeros(self.d, dtype=torch.int64)
        for u, y in self._inputs.items():
            b_u = reconstruct([r.seed_shares[u] for r in by_sender.values() if u in r.seed_shares], self.threshold)
            z = (z + y - prg(b_u, self.d, k)) % m
        for v in dropped:
            s_v = X25519PrivateKey.from_private_bytes(
                reconstruct([r.key_shares[v] for r in by_sender.values() if v in r.key_shares], self.threshold)
            )  # fmt: skip
            seeds = {u: agree(s_v, self._keys[u][1], pair_info("mask", self.round, u, v)) for u in self._inputs}
            z = (z + pairwise_mask(v, seeds, self.d, k)) % m  # the survivors' masks toward v sum to -(v's own)
        self._stage = "done"
        return self.encoding.decode(z)
