"""Secure aggregation (Bonawitz et al. 2017, Fig. 4): the server learns the sum of the rows, nothing else.

Real cryptography from the ``cryptography`` package: X25519 Diffie-Hellman and HKDF-SHA256 for
pairwise secrets, ChaCha20 to expand a 32-byte seed into a mask, ChaCha20-Poly1305 to seal the
Shamir shares that travel through the server. Inputs are encoded in fixed point modulo 2^k, so
the masks cancel exactly. One round, for clients u with input x_u:

0. each client draws fresh key pairs (c_u, s_u) and sends c_u^PK, s_u^PK (``AdvertiseKeys``);
1. it draws a fresh self-mask seed b_u, Shamir-shares s_u^SK and b_u (any t of n shares
   reconstruct), and seals each other client's two shares under HKDF(X25519(c_u, c_v))
   (``EncryptedShares``); the server forwards each ciphertext to its recipient;
2. it sends y_u = x_u + PRG(b_u) + sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv) mod 2^k with
   s_uv = HKDF(X25519(s_u^SK, s_v^PK), round, pair) (``MaskedInput``);
3. the server names the survivors U3 and the dropped (``UnmaskRequest``); each survivor sends its
   share of b_u for u in U3 and of s_v^SK for v dropped (``UnmaskResponse``); the server
   reconstructs them, removes the masks and decodes the exact sum of U3's inputs.

Threat model, and where the code holds it:

- **Honest-but-curious server.** It follows the protocol and tries to learn from what it sees.
  ``SecAggServer`` holds only the messages it received (``received``, printable with ``view``);
  it never holds a client object, and the shares it relays are sealed for their recipients.
  What it sees: public keys, ciphertexts, masked vectors uniform mod 2^k, and the shares of
  exactly one secret per client: the sum of U3's inputs and nothing else.
- **A server that lies about dropouts** (claims u dropped to get s_u^SK, then asks for b_u too)
  gets nothing more: an honest ``SecAggClient`` refuses (``RefusedRequest``) a request that names
  a client both ways, names itself dropped, disagrees with the clients whose shares it holds,
  lists fewer than t survivors, or comes after its one answer of the round. With t > n/2 no two
  disjoint groups of t honest clients exist, so even a server that tells different clients
  different stories cannot collect t shares of both secrets of one client. With c colluding
  clients it can when n + c >= 2t: against an active server colluding with clients, Bonawitz
  et al. add a consistency round with signatures (not implemented here).
- **Dropouts up to n - t.** Clients may drop at any step; the server proceeds while at least t
  clients remain at every step (U1 >= U2 >= U3 >= U5 >= t) and raises otherwise; a dropped
  client's pairwise masks are rebuilt from t shares of its s_v^SK.
- **Up to t - 1 colluding clients** (with or without the server) learn nothing about an honest
  client's b_u or s_u^SK: Shamir shares below the threshold reveal nothing, and ``reconstruct``
  refuses fewer than t. Hence ``threshold`` must be in (n/2, n].
- **Nothing reused across rounds.** Each round draws fresh key pairs and b_u; the round number
  is bound into every HKDF derivation and every ciphertext's associated data; rounds must
  increase, and a client masks one input per round (a second raises); after answering the unmask
  request it forgets the round's secrets.
- **No overflow.** ``FixedPoint`` sizes the modulus and fraction bits from the declared bound and
  n so that no sum of n inputs within the bound wraps; an input outside the bound raises before
  any mask is added.

Not modelled: authenticated channels between clients and server (a PKI), malicious clients that
send wrong shares or out-of-range inputs, and what the sum itself reveals (that is lecture 07's
differential privacy). Keys drawn from ``gen`` are for reproducible lectures only: pass gen=None
(os.urandom) for real use.

Modules: ``fixed_point`` (the encoding), ``primitives`` (key agreement, PRG, masks, sealing,
Shamir), ``messages`` (what crosses the network), ``parties`` (``SecAggClient``, ``SecAggServer``),
``protocol`` (``SecureAggregation``, the network; ``SecAggRounds``, its rounds on the round engine;
``protocol_cost``, and ``secaggplus_cost`` for Flower's SecAgg+).
"""
from .fixed_point import FixedPoint
from .messages import (
    AdvertiseKeys, EncryptedShares, ForwardedShares, MaskedInput, Message, PublicKeys, UnmaskRequest, UnmaskResponse,
)  # fmt: skip
from .parties import RefusedRequest, SecAggClient, SecAggServer, check_parties
from .primitives import (
    MODULUS, agree, open_sealed, pair_info, pairwise_mask, prg, private_key, public_bytes, random_bytes, reconstruct,
    seal, share,
)  # fmt: skip
from .protocol import STEPS, SecAggRounds, SecureAggregation, protocol_cost, secaggplus_cost

__all__ = [
    "MODULUS", "STEPS", "AdvertiseKeys", "EncryptedShares", "FixedPoint", "ForwardedShares", "MaskedInput", "Message",
    "PublicKeys", "RefusedRequest", "SecAggClient", "SecAggRounds", "SecAggServer", "SecureAggregation",
    "UnmaskRequest", "UnmaskResponse", "agree", "check_parties", "open_sealed", "pair_info", "pairwise_mask", "prg", "private_key",
    "protocol_cost", "public_bytes", "random_bytes", "reconstruct", "seal", "secaggplus_cost", "share",
]
