"""Byzantine attacks: transforms of the client matrix (n, d) -> (n, d) that overwrite the
last f rows (the Byzantine workers) using what the first n - f honest rows send.

Each attack is applied at every step (a time-coupled adversary): ``make_attack`` checks its
options once and returns the attack's body (``__wrapped__``), which checks U and f
(``rules.check_rows``). ``label_flip`` is a data attack instead: the Byzantine workers compute
honest gradients on flipped labels.
"""
import math
import numbers
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from statistics import NormalDist

import torch

from ..clients import CLIENTS
from ..constraints import ClientMatrix, Generator, Indices, Instance, Integer, OneOf, Real, constrain
from ..partition import Clients
from ..runtime import generator, randn
from .rules import F, check_rows

Transform = Callable[[torch.Tensor], torch.Tensor]
ROWS = dict(U=ClientMatrix(), f=F)  # the messages (n, d), the last f rows Byzantine


def _split(U: torch.Tensor, f: int, name: str, *, local: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Check U (n, d) and f (``rules.check_rows``); return a copy of U and its honest rows (n - f, d).

    An attack that reads the honest rows needs one (f < n); a ``local`` attack reads none, so
    it runs on the attacker's own machine too, where U is its one row and f = n = 1
    (``mllib.flower``'s Byzantine SuperNode).
    """
    check_rows(U, f, name, need="any" if local else "honest", stacks=False, arg="U")
    return U.clone(), U[: len(U) - f]


@constrain(**ROWS)
def no_attack(U: torch.Tensor, f: int) -> torch.Tensor:
    """The identity: Byzantine rows send their honest messages (a copy of U)."""
    return _split(U, f, "no_attack")[0]


@constrain(**ROWS, scale=Real())
def sign_flip(U: torch.Tensor, f: int, scale: float = 1.0) -> torch.Tensor:
    """Sign flip: each Byzantine worker sends -scale times its own honest message.

    Args:
        U: (n, d) messages, the last f rows Byzantine.
        f: number of Byzantine rows.
        scale: multiplier of the flipped message.

    Returns:
        (n, d) a new matrix, rows n - f.. replaced by -scale * U[n - f:].
    """
    out, _ = _split(U, f, "sign_flip", local=True)
    n = len(U)
    out[n - f :] = -scale * U[n - f :]
    return out


@constrain(**ROWS, sigma=Real(ge=0), gen=Generator())
def gaussian(U: torch.Tensor, f: int, *, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise: Byzantine rows are N(0, sigma^2 I), drawn on the CPU from ``gen``.

    Raises:
        ValueError: for sigma < 0 or f out of range.
    """
    out, _ = _split(U, f, "gaussian", local=True)
    out[len(U) - f :] = sigma * randn(f, U.shape[1], gen=gen, device=U.device).to(U.dtype)
    return out


@constrain(**ROWS, value=Instance(numbers.Real, description="a number (huge, inf and NaN allowed)"))
def constant(U: torch.Tensor, f: int, value: float) -> torch.Tensor:
    """Byzantine rows filled with ``value``: huge (1e30), ``float('inf')`` or ``float('nan')``."""
    out, _ = _split(U, f, "constant", local=True)
    out[len(U) - f :] = value
    return out


@constrain(**ROWS, epsilon=Real(gt=0))
def inner_product(U: torch.Tensor, f: int, epsilon: float = 0.1) -> torch.Tensor:
    """Inner-product manipulation (Xie, Koyejo, Gupta 2019, "Fall of empires", Section 3).

    Update: every Byzantine row is -epsilon * mean(honest rows), so that the aggregate's
    inner product with the true gradient turns negative; a small epsilon hides the rows
    among the honest ones (against median and Krum), a large one overwhelms the mean.

    Args:
        U: (n, d) messages, the last f rows Byzantine.
        f: number of Byzantine rows.
        epsilon: > 0.

    Returns:
        (n, d) a new matrix.
    """
    out, honest = _split(U, f, "inner_product")
    out[len(U) - f :] = -epsilon * honest.mean(0)
    return out


@constrain(n=Integer(min=2), f=Integer(min=1))
def alie_z(n: int, f: int) -> float:
    """The z of "a little is enough" (Baruch, Baruch, Goldberg 2019, arXiv:1902.06156, Algorithm 3):
    s = floor(n/2 + 1) - f workers must be won over, z = Phi^-1((n - s) / n).

    Raises:
        ValueError: unless 0 < f < n/2 + 1 and (n - s)/n lies in (0, 1).
    """
    if n < 2 or f < 1:
        raise ValueError(f"alie_z: need n >= 2 and f >= 1, got n={n}, f={f}")
    s = math.floor(n / 2 + 1) - f
    if not 0 < (n - s) / n < 1:
        raise ValueError(f"alie_z: (n - s)/n = {(n - s) / n:g} is outside (0, 1) for n={n}, f={f}; pass f <= n/2")
    return NormalDist().inv_cdf((n - s) / n)


@constrain(**ROWS, z=Real() | None)
def alie(U: torch.Tensor, f: int, z: float | None = None) -> torch.Tensor:
    """"A little is enough" (Baruch, Baruch, Goldberg 2019, arXiv:1902.06156, Algorithm 3).

    Update, per coordinate j: every Byzantine row sends mu_j - z sigma_j, with mu and sigma
    the mean and standard deviation (unbiased, n - f - 1 in the denominator) of the honest
    rows, and z = ``alie_z(n, f)`` unless given. The paper writes mu + z sigma with the
    sign chosen by the attacker; we shift against the mean, as the course's issue asks.

    Args:
        U: (n, d) messages, the last f rows Byzantine, n - f >= 2 honest.
        f: number of Byzantine rows, >= 1.
        z: the shift in standard deviations (default: the paper's formula).

    Returns:
        (n, d) a new matrix.

    Raises:
        ValueError: for f out of range or fewer than 2 honest rows.
    """
    out, honest = _split(U, f, "alie")
    if len(honest) < 2:
        raise ValueError(f"alie: needs at least 2 honest rows for a standard deviation, got {len(honest)}")
    z = alie_z.__wrapped__(len(U), f) if z is None else z
    mu, sigma = honest.mean(0), honest.std(0)  # (d,), (d,)
    out[len(U) - f :] = mu - z * sigma
    return out


def samples_of(clients: Clients, chosen: torch.Tensor, name: str, arg: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The clients ``chosen`` as (k,) CPU indices, and (N,) True for the samples they hold
    (on the data's device), for attacks and shifts that rewrite some clients' data.

    Raises:
        ValueError: for an index outside [0, n).
    """
    chosen = torch.as_tensor(chosen, dtype=torch.int64).cpu()
    if len(chosen) and not (0 <= chosen.min() and chosen.max() < clients.n):
        raise ValueError(f"{name}: {arg} indices must be in [0, {clients.n}), got {chosen.tolist()}")
    return chosen, torch.isin(clients.owners, chosen.to(clients.owners.device)).to(clients.x.device)


@constrain(clients=CLIENTS, byzantine=Indices(empty=True))
def label_flip(clients: Clients, byzantine: torch.Tensor) -> Clients:
    """A data attack: the clients ``byzantine`` (indices) train on labels y -> C - 1 - y.

    Returns:
        New ``Clients`` (the input is unchanged).

    Raises:
        ValueError: for an index outside [0, n).
    """
    _, flipped = samples_of(clients, byzantine, "label_flip", "byzantine")
    y = torch.where(flipped, clients.n_classes - 1 - clients.y, clients.y)
    return replace(clients, y=y)


ATTACKS = ("none", "sign flip", "label flip", "noise", "NaN", "huge", "IPM", "ALIE")


@constrain(name=OneOf(*ATTACKS), f=F, gen=Generator() | None, sigma=Real(ge=0), epsilon=Real(gt=0))
def make_attack(name: str, f: int, *, gen: torch.Generator | None = None, sigma: float = 10.0,
                epsilon: float = 0.1) -> Transform:  # fmt: skip
    """A transform (n, d) -> (n, d) by name, for f Byzantine rows (see ``ATTACKS``).

    "label flip" is the identity here: flip the Byzantine clients' data with ``label_flip``
    as well (``attack_grid`` does both). "noise" draws from ``gen`` (default ``generator(0)``).
    The attack runs every step: it is the attack's body (``__wrapped__``), its options checked here once.
    """
    table = {
        "none": no_attack.__wrapped__, "sign flip": sign_flip.__wrapped__, "label flip": no_attack.__wrapped__,
        "noise": partial(gaussian.__wrapped__, sigma=sigma, gen=gen if gen is not None else generator(0)),
        "NaN": partial(constant.__wrapped__, value=float("nan")), "huge": partial(constant.__wrapped__, value=1e30),
        "IPM": partial(inner_product.__wrapped__, epsilon=epsilon), "ALIE": alie.__wrapped__,
    }  # fmt: skip
    return partial(table[name], f=f) if f else (lambda U: U)
