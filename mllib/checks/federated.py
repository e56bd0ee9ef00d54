"""Self-checks for lab 01_federated_learning."""
import torch

from .. import federated
from ..data import Quadratics
from ..engine import everyone
from ..runtime import rand, randn
from . import self_check


def quadratic_fedavg_round(x, A, b, weights, local_steps, lr, server_lr):
    """One FedAvg round with full participation on quadratic clients with exact gradients (reference):
    one round of the engine's ``Federated`` with FedAvg as its local part."""
    problem = federated.QuadraticProblem(Quadratics(A, b), weights=weights)
    algorithm = federated.FedAvg(local_steps=local_steps, lr=lr, server_lr=server_lr)
    federation = algorithm.federation(problem, x, select=everyone(len(b)), gen=torch.Generator())
    federation.round(1)
    return federation.x


def _spd(n, d, gen):
    q = randn(n, d, d, gen=gen)
    return q @ q.transpose(1, 2) / d + 0.5 * torch.eye(d)  # (n, d, d), eigenvalues >= 0.5


@self_check(quadratic_fedavg_round)
def fedavg_round(gen):
    """x (d,), A (n, d, d), b (n, d), unequal weights (n,), K in {1, 2, 5}, lr, server_lr."""
    cases = []
    for n, d, K, server_lr in [(1, 1, 1, 1.0), (3, 2, 2, 1.0), (4, 3, 5, 1.0), (5, 2, 3, 0.5), (2, 4, 1, 2.0)]:
        cases.append(dict(x=randn(d, gen=gen), A=_spd(n, d, gen), b=randn(n, d, gen=gen),
                          weights=0.5 + 3 * rand(n, gen=gen), local_steps=K, lr=0.1, server_lr=server_lr))  # fmt: skip
    return cases


@self_check(federated.scaffold_control_update)
def scaffold_control_update(gen):
    """c_i (k, d), c (d,), x (d,), Y (k, d), K, lr."""
    cases = []
    for k, d, K, lr in [(1, 1, 1, 0.1), (3, 4, 5, 0.05), (5, 2, 10, 0.2), (2, 6, 3, 1.0)]:
        cases.append(dict(c_i=randn(k, d, gen=gen), c=randn(d, gen=gen), x=randn(d, gen=gen),
                          Y=randn(k, d, gen=gen), local_steps=K, lr=lr))  # fmt: skip
    return cases


@self_check(federated.momentum_step)
def mimelite_step(gen):
    """Y (k, d), g (k, d), m (d,), lr, momentum in {0, 0.5, 0.9}."""
    cases = []
    for k, d, lr, beta in [(1, 1, 0.1, 0.9), (3, 4, 0.05, 0.5), (5, 2, 0.3, 0.0), (2, 6, 1.0, 0.9)]:
        cases.append(dict(Y=randn(k, d, gen=gen), g=randn(k, d, gen=gen), m=randn(d, gen=gen), lr=lr, momentum=beta))
    return cases
