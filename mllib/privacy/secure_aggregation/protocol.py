"""The network between one server and n clients, round after round, and what a round costs."""
from collections.abc import Iterable, Mapping

import torch

from ... import engine
from ...constraints import ClientMatrix, Generator, Instance, Integer, Rule, constrain
from .fixed_point import ENCODING, FixedPoint
from .parties import SecAggClient, SecAggServer

STEPS = ("advertise keys", "share keys", "masked input", "unmask")


class SecureAggregation:
    """Secure aggregation (Bonawitz et al. 2017, doi:10.1145/3133956.3133982) of n clients' rows, threshold t,
    round after round.

    The object is the network: it holds one ``SecAggServer`` and n ``SecAggClient`` objects and
    delivers each message to its recipient, nothing else; it holds no key, seed or share. Each
    step below is one method, returning the messages the server received at that step (what a
    lecture prints); ``run_round`` runs the four in turn. Every round uses fresh keys and seeds.

    1. ``advertise_keys``: each client sends c_u^PK, s_u^PK; the server broadcasts them (U1).
    2. ``share_keys``: each client seals its shares of s_u^SK and b_u for each other client (U2).
    3. ``masked_inputs``: each client opens its shares and sends y_u (U3).
    4. ``unmask``: the survivors send shares of b_u (u in U3) and of s_v^SK (v dropped); the server
       returns the exact sum of U3's inputs.

    Args:
        n, threshold, d: n >= 2 clients, n/2 < t <= n, rows of length d.
        bound, norm, modulus_bits, fraction_bits: the ``FixedPoint`` encoding, sized from the
            bound so that the sum of the n rows cannot wrap.
        gen: None (os.urandom), or a generator for reproducible lectures.

    Raises:
        ValueError: on the constraints of ``FixedPoint`` and ``check_parties``.
    """

    @constrain(n=Integer(min=2), threshold=Integer(min=1), d=Integer(min=1), **ENCODING, gen=Generator() | None)
    def __init__(self, n: int, threshold: int, d: int, *, bound: float, norm: str = "max",
                 modulus_bits: int | None = None, fraction_bits: int | None = None,
                 gen: torch.Generator | None = None):  # fmt: skip
        self.encoding = FixedPoint(bound, n, modulus_bits=modulus_bits, fraction_bits=fraction_bits, norm=norm)
        self.server = SecAggServer(n, threshold, self.encoding, d)
        self.clients = [SecAggClient(i, n, threshold, self.encoding, d, gen=gen) for i in range(n)]
        self.n, self.threshold, self.d = n, threshold, d
        # State: the round number and the server's messages on their way to the clients
        self.round = -1
        self.in_flight: dict[int, object] = {}

    def state_dict(self) -> dict:
        """The public state: the round, and each party's ``state_dict`` (no key, seed or share)."""
        clients = [c.state_dict() for c in self.clients]
        return {"round": self.round, "server": self.server.state_dict(), "clients": clients}

    def _among(self, among: Iterable[int] | None) -> list[int]:
        if among is None:
            return sorted(self.in_flight)
        among = sorted(set(among))
        if missing := [i for i in among if i not in self.in_flight]:
            raise ValueError(f"clients {missing} have no message from the server at this step (they dropped earlier)")
        return among

    def advertise_keys(self, among: Iterable[int] | None = None) -> list:
        """Step 0: a new round; the clients in ``among`` (default: all) send fresh public keys."""
        among = range(self.n) if among is None else sorted(set(among))
        if outside := [i for i in among if not (isinstance(i, int) and 0 <= i < self.n)]:
            raise ValueError(f"among must hold client indices in [0, {self.n}), got {outside}")
        self.round += 1
        messages = [self.clients[i].advertise_keys(self.round) for i in among]
        self.in_flight = self.server.collect_keys(messages)
        return messages

    def share_keys(self, among: Iterable[int] | None = None) -> list:
        """Step 1: the clients in ``among`` (default: all still in) send their sealed shares."""
        messages = [self.clients[i].share_keys(self.in_flight[i]) for i in self._among(among)]
        self.in_flight = self.server.route_shares(messages)
        return messages

    def masked_inputs(self, X: torch.Tensor, among: Iterable[int] | None = None) -> list:
        """Step 2: client i in ``among`` sends y_i, the masked row X[i] (X is (n, d))."""
        if X.shape != (self.n, self.d):
            raise ValueError(f"X must have shape (n, d) = ({self.n}, {self.d}), got {tuple(X.shape)}")
        messages = [self.clients[i].masked_input(X[i], self.in_flight[i]) for i in self._among(among)]
        self.in_flight = self.server.collect_inputs(messages)
        return messages

    def unmask(self, among: Iterable[int] | None = None) -> torch.Tensor:
        """Step 3: the clients in ``among`` answer the server's request; the sum (d,) float64."""
        messages = [self.clients[i].unmask(self.in_flight[i]) for i in self._among(among)]
        self.in_flight = {}
        return self.server.aggregate(messages)

    def run_round(self, X: torch.Tensor, dropped: Mapping[int, str] | None = None) -> torch.Tensor:
        """One round of the four steps: the exact fixed-point sum (d,) of the rows of the clients
        that sent their masked input.

        Args:
            X: (n, d), every row within the bound.
            dropped: client -> the step it never reaches ("share keys", "masked input" or
                "unmask"; "advertise keys": it sits the round out).

        Raises:
            ValueError: if a row is outside the bound, a step name is unknown, or fewer than t
                clients remain at some step.
        """
        dropped = dict(dropped or {})
        if bad := {i: s for i, s in dropped.items() if s not in STEPS or not 0 <= i < self.n}:
            raise ValueError(f"dropped must map clients in [0, {self.n}) to one of {STEPS}, got {bad}")

        def among(step: str) -> list[int]:
            return [i for i in range(self.n) if i not in dropped or STEPS.index(dropped[i]) > STEPS.index(step)]

        self.advertise_keys(among("advertise keys"))
        self.share_keys(among("share keys"))
        self.masked_inputs(X, among("masked input"))
        return self.unmask(among("unmask"))


class SecAggRounds(engine.Rounds):
    """Round after round of ``SecureAggregation`` on fixed rows, as the round engine runs it
    (``SecureAggregation`` keeps its own round number, ``round``: this wrapper is the engine's view).

    Args:
        protocol: the network of one server and n clients.
        X: (n, d) the clients' rows, within the protocol's bound.

    State: ``total`` (d,) the last round's sum; the protocol's own (round number, parties).
    """

    @constrain(Rule("X", lambda protocol, X: X.shape == (protocol.n, protocol.d),
                    "X must have shape (n, d) = ({protocol.n}, {protocol.d}), one row per client, got {X.shape}"),
               protocol=Instance(SecureAggregation), X=ClientMatrix())  # fmt: skip
    def __init__(self, protocol: SecureAggregation, X: torch.Tensor):
        self.protocol, self.X = protocol, X
        # State
        self.total: torch.Tensor | None = None

    def round(self, r: int) -> None:
        self.total = self.protocol.run_round(self.X)

    @property
    def model(self) -> torch.Tensor | None:
        return self.total

    @property
    def bits_sent(self) -> int:
        """Bits of the clients' messages to the server so far."""
        return 8 * sum(m.nbytes for m in self.protocol.server.received)


@constrain(n_clients=Integer(min=2), d=Integer(min=1), threshold=Integer(min=1) | None, rounds=Integer(min=1),
           gen=Generator() | None)  # fmt: skip
def protocol_cost(n_clients: int, d: int, *, threshold: int | None = None, rounds: int = 2,
                  gen: torch.Generator | None = None) -> dict:  # fmt: skip
    """Messages, bytes and seconds per round of the course's protocol, in this process (no network).

    Runs ``rounds`` rounds of ``SecureAggregation`` (threshold n // 2 + 1 unless given) on random
    rows within bound 1 on the round engine (``SecAggRounds``), and counts what crosses the
    network: each client's message to the server and the server's to each client at each of the
    four steps (7 n: the server's first step has no request), the payload bytes, and the
    pairwise ciphertexts (n (n - 1): every pair shares).

    Args:
        n_clients, d: clients and the length of their rows.
        threshold: t, n/2 < t <= n (default n // 2 + 1).
        rounds: rounds to run and average over, >= 1.
        gen: for the rows and the clients' keys (None: os.urandom keys, torch's default rows).

    Returns:
        {"clients", "messages", "ciphertexts", "bytes", "seconds"}: per round; seconds is the mean.

    Raises:
        ValueError: for rounds that is not an integer >= 1, or the constraints of ``SecureAggregation``.
    """
    threshold = n_clients // 2 + 1 if threshold is None else threshold
    protocol = SecureAggregation(n_clients, threshold, d, bound=1.0, gen=gen)
    X = torch.rand(n_clients, d, generator=gen) * 2 - 1
    history = engine.run(SecAggRounds(protocol, X), rounds, eval_every=rounds)
    server = protocol.server
    messages = server.received + [m for _, m in server.sent]
    ciphertexts = sum(len(m.ciphertexts) for m in server.received if hasattr(m, "ciphertexts"))
    return {"clients": n_clients, "messages": len(messages) // rounds, "ciphertexts": ciphertexts // rounds,
            "bytes": sum(m.nbytes for m in messages) // rounds, "seconds": history.seconds[-1] / rounds}  # fmt: skip


@constrain(Rule("num_shares", lambda n_clients, num_shares: num_shares <= n_clients,
                "num_shares must be an integer in [2, n_clients={n_clients}], got {num_shares}"),
           n_clients=Integer(min=2), num_shares=Integer(min=2))  # fmt: skip
def secaggplus_cost(n_clients: int, num_shares: int) -> dict:
    """Messages and sealed shares per round of SecAgg+ (Bell et al. 2020) as Flower 1.42 runs it.

    SecAgg+ is Bonawitz et al. (2017) on a sparse graph: each client shares keys and masks with
    its ``num_shares - 1`` neighbours instead of all n - 1 others. Flower's ``SecAggPlusWorkflow``
    runs four stages (setup, share keys, collect masked vectors, unmask), each one message from the
    server to every sampled node and one reply: 8 n messages (the course's ``protocol_cost``: 7 n,
    its first step needs no request). Each node seals its shares for each neighbour:
    n (num_shares - 1) ciphertexts (the course: n (n - 1), every pair). Counted, not run: these
    are the counts that ``benchmarks/secure_aggregation.py`` and ``tests/test_flower.py`` measure
    on a deployment (without dropouts).

    Args:
        n_clients: n >= 2 nodes, all sampled.
        num_shares: k in [2, n], the neighbourhood size (Flower's ``num_shares``, the node included).

    Returns:
        {"clients", "messages", "ciphertexts"}: per round.

    Raises:
        ValueError: for n < 2 or k outside [2, n].
    """
    return {"clients": n_clients, "messages": 8 * n_clients, "ciphertexts": n_clients * (num_shares - 1)}
