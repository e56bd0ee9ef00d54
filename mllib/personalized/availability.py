"""Clients that come and go: availability patterns as the round engine's selection part, and
FedAvg's weights for known participation probabilities (lecture 02).

In a deployed federation a phone takes part only while it is idle, charging and on Wi-Fi,
mostly at night in its own time zone (Bonawitz et al. 2019, "Towards federated learning at
scale", Section 9): the set of active clients follows the day. A client online with
probability q_i contributes to FedAvg's average about q_i times as often as an always-on
client, so FedAvg minimizes sum_i q_i p_i f_i instead of sum_i p_i f_i (Wang & Ji 2022,
"A unified analysis of federated learning with arbitrary client participation", arXiv:2205.13648).
"""
import math
from collections.abc import Callable, Sequence

import torch

from ..clients import CLIENTS, MODEL, LocalSGD, evaluate
from ..constraints import Function, Generator, Indices, Integer, Reals, Rule, constrain
from ..engine import Federated, History, run
from ..models import FlatModel
from ..partition import Clients
from .training import FEDAVG, ONE_MODEL, _one_model

Availability = Callable[[int], torch.Tensor]  # r -> (n,) probability that each client is online in round r


@constrain(Rule("zones", lambda zones, peaks: bool((zones >= 0).all() and (zones < len(peaks)).all()),
                lambda zones, peaks: f"zones must give each client a zone in [0, {len(peaks)}), got {zones.tolist()}"),
           zones=Indices(), peaks=Reals(gt=0, le=1), period=Integer(min=1))  # fmt: skip
def diurnal_availability(zones: Sequence[int], peaks: Sequence[float], period: int) -> Availability:
    """A day of ``period`` rounds: each time zone is online most at its own hour, as much as its peak.

    Client i of time zone z_i (of Z zones) is online in round r with probability
        q_i(r) = peaks[z_i] * (1 + cos(2 pi (r / period - z_i / Z))) / 2,
    so zone z peaks at round z * period / Z of every day and is offline half a day later
    (diurnal participation: Bonawitz et al. 2019, Section 9; Eichner et al. 2019, "Semi-cyclic
    stochastic gradient descent").

    Args:
        zones: (n,) each client's time zone, integers in [0, Z).
        peaks: (Z,) each zone's availability at its peak, in (0, 1].
        period: rounds per day, >= 1.

    Returns:
        r -> (n,) float64 probabilities q_i(r).

    Raises:
        ValueError: for a zone outside [0, Z), a peak outside (0, 1] or a period < 1.
    """
    zone, peak = zones.cpu(), torch.tensor(peaks, dtype=torch.float64)
    phase = zone.double() / len(peak)  # (n,) the zone's hour, as a fraction of the day
    return lambda r: peak[zone] * (1 + torch.cos(2 * math.pi * (r / period - phase))) / 2


@constrain(availability=Function(), gen=Generator())
def available(availability: Availability, gen: torch.Generator) -> Callable[[int], torch.Tensor]:
    """The selection part of clients that come and go: in round r each client is online
    independently with probability q_i(r), and the round takes every online client.

    Rule: u_i ~ U(0, 1) from ``gen``; S = {i : u_i < q_i(r)}, sorted. When nobody is online
    the round waits for the client that would come first, argmin_i u_i / q_i, so that a
    round never has an empty average.

    Args:
        availability: r -> (n,) probabilities (e.g. ``diurnal_availability``), not all zero.
        gen: CPU generator of the draws.

    Returns:
        r -> (|S|,) int64 indices of round r's clients (for ``engine.Federated``'s ``select``).
    """

    def select(r: int) -> torch.Tensor:
        q = availability(r)
        u = torch.rand(len(q), generator=gen, dtype=q.dtype)
        online = (u < q).nonzero().flatten()
        return online if len(online) else (u / q).argmin().reshape(1)

    return select


@constrain(availability=Function(), rounds=Integer(min=1))
def participation_rates(availability: Availability, rounds: int) -> torch.Tensor:
    """Each client's mean availability over rounds 1 .. ``rounds``: q_bar_i, (n,) float64."""
    return torch.stack([availability(r) for r in range(1, rounds + 1)]).mean(0)


@constrain(_one_model("x0"), model=MODEL, clients=CLIENTS, availability=Function(), **FEDAVG,
           gen=Generator(), x0=ONE_MODEL)  # fmt: skip
def fedavg_with_availability(
    model: FlatModel,
    clients: Clients,
    availability: Availability,
    *,
    rounds: int,
    local_steps: int,
    lr: float,
    batch_size: int,
    gen: torch.Generator,
    x0: torch.Tensor,
    reweight: bool = False,
) -> History:
    """FedAvg over the clients online in each round (``available``), plainly or reweighted.

    Round r: S = the online clients; each runs ``local_steps`` SGD steps from x (``LocalSGD``);
    x <- x + sum_{i in S} w_i U_i / sum_{i in S} w_i, with
        plain FedAvg:  w_i = p_i (its share of the data): it minimizes sum_i q_bar_i p_i f_i;
        reweighted:    w_i = p_i / q_bar_i, q_bar_i the client's known mean availability, so that
                       every client counts as much as its data over time (inverse participation
                       probabilities: Wang & Ji 2024, "A lightweight method for tackling unknown
                       participation statistics in federated averaging" (FedAU), which
                       estimates q_bar_i when it is not known).

    Args:
        model, clients: the architecture and the clients' data.
        availability: r -> (n,) probabilities of being online (``diurnal_availability``).
        rounds: >= 1; local_steps, lr, batch_size: FedAvg's local SGD.
        gen: CPU generator of the availability draws and the minibatches.
        x0: (d,) the initial server model.
        reweight: divide each client's weight by its mean availability over the run.

    Returns:
        The ``engine.History``, recorded every round, with metric "client_accuracy" ((n,) each
        client's accuracy on its own test distribution); ``history.model`` is the final server
        model (d,).
    """
    device = clients.x.device
    weights = clients.sizes.double()
    if reweight:
        weights = weights / participation_rates(availability, rounds)
    federation = Federated(
        x0.to(device), select=available(availability, gen), weights=weights.to(device),
        local=LocalSGD(model, clients, steps=local_steps, lr=lr, batch_size=batch_size, gen=gen),
    )  # fmt: skip
    metrics = {"client_accuracy": lambda f: evaluate(model, f.x, clients)}
    return run(federation, rounds, metrics=metrics)
