"""Lecture 01: federated learning on the client matrix: FedSGD, FedAvg, SCAFFOLD, MIME, MimeLite.

A round samples S of the n clients without replacement, broadcasts the server model x,
lets every sampled client run K local steps from it (all at once, one row each of a
(|S|, d) client matrix), and moves x along the size-weighted mean of the updates. Each
algorithm is the local part of the round engine's ``Federated`` (``mllib.engine``); ``run``
configures it and returns the engine's ``History``.

The algorithms only ask a ``Problem`` for minibatches and gradients, so the same code
runs on real data (``DataProblem``: a ``FlatModel`` on ``Clients``) and on quadratic
clients with exact gradients (``QuadraticProblem``), where client drift has a closed form
(``fedavg_fixed_point``).
"""
from .algorithms import (
    ClientUpdate, FedAvg, FedSGD, Mime, Scaffold, best_rate, control_variate_step, fedavg_update, momentum_step, run,
    scaffold_control_update, server_step,
)  # fmt: skip
from .drift import drift_trajectories, plot_drift, scalar_quadratics
from .problems import DataProblem, QuadraticProblem, fedavg_fixed_point, sample_clients

__all__ = [
    "ClientUpdate", "DataProblem", "FedAvg", "FedSGD", "Mime", "QuadraticProblem", "Scaffold", "best_rate",
    "control_variate_step", "drift_trajectories", "fedavg_fixed_point", "fedavg_update", "momentum_step", "plot_drift",
    "run", "sample_clients", "scaffold_control_update", "scalar_quadratics", "server_step",
]
