"""Self-checks for lab 01_federated_learning: a FedAvg round, a SCAFFOLD round (built from its
update rule), MimeLite's local step."""
import functools

import torch

from .. import federated
from ..data import Quadratics
from ..engine import everyone
from ..runtime import rand, randn
from . import Mistake, self_check


def quadratic_fedavg_round(x, A, b, weights, local_steps, lr, server_lr):
    """One FedAvg round with full participation on quadratic clients with exact gradients (reference):
    one round of the engine's ``Federated`` with FedAvg as its local part."""
    problem = federated.QuadraticProblem(Quadratics(A, b), weights=weights)
    algorithm = federated.FedAvg(local_steps=local_steps, lr=lr, server_lr=server_lr)
    federation = algorithm.federation(problem, x, select=everyone(len(b)), gen=torch.Generator())
    federation.round(1)
    return federation.x


def _fedavg_unweighted(x, A, b, weights, local_steps, lr, server_lr):
    return quadratic_fedavg_round(x, A, b, torch.ones_like(weights), local_steps, lr, server_lr)


def _fedavg_one_local_step(x, A, b, weights, local_steps, lr, server_lr):
    return quadratic_fedavg_round(x, A, b, weights, 1, lr, server_lr)


def _fedavg_without_server_lr(x, A, b, weights, local_steps, lr, server_lr):
    return quadratic_fedavg_round(x, A, b, weights, local_steps, lr, 1.0)


def _fedavg_gradient_sign(x, A, b, weights, local_steps, lr, server_lr):
    return quadratic_fedavg_round(x, A, -b, weights, local_steps, lr, server_lr)


def _spd(n, d, gen):
    q = randn(n, d, d, gen=gen)
    return q @ q.transpose(1, 2) / d + 0.5 * torch.eye(d)  # (n, d, d), eigenvalues >= 0.5


@self_check(
    quadratic_fedavg_round,
    mistakes=[
        Mistake(_fedavg_unweighted, "the clients' weights are ignored (a plain mean)",
                "average the updates with weights w_i / sum(w): weights @ (Y - x) / weights.sum()"),
        Mistake(_fedavg_one_local_step, "every client takes one local step, not local_steps",
                "repeat the gradient step local_steps = K times before averaging"),
        Mistake(_fedavg_without_server_lr, "the server step ignores server_lr",
                "x + server_lr * (weighted mean of Y - x)"),
        Mistake(_fedavg_gradient_sign, "the gradient has the wrong sign: it is A y - b",
                "grad f_i(y) = A_i y - b_i; the step subtracts it: Y - lr * (A Y - b)"),
    ],
)  # fmt: skip
def fedavg_round(gen):
    """x (d,), A (n, d, d), b (n, d), unequal weights (n,), K in {1, 2, 5}, lr, server_lr."""
    cases = []
    for n, d, K, server_lr in [(3, 2, 2, 1.0), (1, 1, 1, 1.0), (4, 3, 5, 1.0), (5, 2, 3, 0.5), (2, 4, 1, 2.0)]:
        cases.append(dict(x=randn(d, gen=gen), A=_spd(n, d, gen), b=randn(n, d, gen=gen),
                          weights=0.5 + 3 * rand(n, gen=gen), local_steps=K, lr=0.1, server_lr=server_lr))  # fmt: skip
    return cases


def quadratic_scaffold_round(x, c, C, A, b, weights, local_steps, lr, server_lr):
    """One SCAFFOLD round with full participation on quadratic clients (reference): one round of the
    engine's ``Federated`` with ``federated.Scaffold`` as its local part, from the control
    variates c (d,) and C (n, d); returns (x+, c+, C+)."""
    problem = federated.QuadraticProblem(Quadratics(A, b), weights=weights)
    algorithm = federated.Scaffold(local_steps=local_steps, lr=lr, server_lr=server_lr)
    algorithm.c, algorithm.c_clients = c, C
    federation = algorithm.federation(problem, x, select=everyone(len(b)), gen=torch.Generator())
    federation.round(1)
    return federation.x, algorithm.c, algorithm.c_clients


def _scaffold_variant(x, c, C, A, b, weights, local_steps, lr, server_lr, *, correction=1.0, denominator_K=True,
                      control_sign=1.0, server_variate="weighted"):  # fmt: skip
    """A SCAFFOLD round with one of the students' mistakes switched on (the defaults are the paper's)."""
    Y = x.expand(len(b), -1)
    for _ in range(local_steps):
        Y = Y - lr * (torch.einsum("nij,nj->ni", A, Y) - b + correction * (c - C))
    C_new = C - c + control_sign * (x - Y) / (local_steps * lr if denominator_K else lr)
    p = weights / weights.sum()
    shares = {"weighted": p, "mean": torch.full_like(p, 1 / len(p)), "frozen": torch.zeros_like(p)}[server_variate]
    return x + server_lr * p @ (Y - x), c + shares @ (C_new - C), C_new


def _scaffold_mistake(**switch):
    return functools.partial(_scaffold_variant, **switch)


@self_check(
    quadratic_scaffold_round,
    mistakes=[
        Mistake(_scaffold_mistake(correction=-1.0), "the drift correction has the wrong sign",
                "each local step adds c - c_i to the gradient: y - lr * (grad + c - c_i)"),
        Mistake(_scaffold_mistake(denominator_K=False), "the control update divides by lr, not by K * lr",
                "option II: c_i+ = c_i - c + (x - y_i) / (K * lr): the mean gradient over the K steps"),
        Mistake(_scaffold_mistake(control_sign=-1.0), "the control update uses y_i - x instead of x - y_i",
                "x - y_i = lr * (sum of the K corrected gradients), so (x - y_i) / (K lr) is their mean"),
        Mistake(_scaffold_mistake(server_variate="frozen"), "the server's control variate c is never updated",
                "after the clients: c+ = c + sum_i p_i (c_i+ - c_i), with p_i = w_i / sum(w)"),
        Mistake(_scaffold_mistake(server_variate="mean"), "the server's c moves by a plain mean, not the weighted one",
                "c+ = c + sum_i p_i (c_i+ - c_i) with p_i = w_i / sum(w), as for the model"),
    ],
    forbid=[federated.Scaffold, federated.scaffold_control_update, federated.control_variate_step],
)  # fmt: skip
def scaffold_round(gen):
    """x (d,), c (d,), C (n, d) (zero once), A (n, d, d), b (n, d), unequal weights (n,), K, lr, server_lr."""
    cases = []
    for n, d, K, server_lr in [(3, 2, 3, 1.0), (1, 1, 1, 1.0), (4, 3, 5, 1.0), (5, 2, 2, 0.5), (2, 4, 4, 2.0)]:
        cases.append(dict(x=randn(d, gen=gen), c=randn(d, gen=gen), C=randn(n, d, gen=gen), A=_spd(n, d, gen),
                          b=randn(n, d, gen=gen), weights=0.5 + 3 * rand(n, gen=gen), local_steps=K, lr=0.1,
                          server_lr=server_lr))  # fmt: skip
    cases[0]["c"], cases[0]["C"] = cases[0]["c"] * 0, cases[0]["C"] * 0  # the first round: all variates zero
    return cases


def _mimelite_swapped(Y, g, m, lr, momentum):
    return Y - lr * (momentum * g + (1 - momentum) * m)


def _mimelite_without_momentum(Y, g, m, lr, momentum):
    return Y - lr * g


def _mimelite_without_damping(Y, g, m, lr, momentum):
    return Y - lr * ((1 - momentum) * g + m)


@self_check(
    federated.momentum_step,
    mistakes=[
        Mistake(_mimelite_swapped, "beta and 1 - beta are swapped",
                "the gradient weighs (1 - beta), the server's momentum beta"),
        Mistake(_mimelite_without_momentum, "the step ignores the server's momentum m",
                "MimeLite applies the server's optimizer: y - lr * ((1 - beta) g + beta m)"),
        Mistake(_mimelite_without_damping, "the momentum term is missing its factor beta",
                "both terms are weighted: (1 - beta) * g + beta * m"),
    ],
)  # fmt: skip
def mimelite_step(gen):
    """Y (k, d), g (k, d), m (d,), lr, momentum in {0.5, 0.9, 0}."""
    cases = []
    for k, d, lr, beta in [(3, 4, 0.05, 0.5), (1, 1, 0.1, 0.9), (5, 2, 0.3, 0.0), (2, 6, 1.0, 0.9)]:
        cases.append(dict(Y=randn(k, d, gen=gen), g=randn(k, d, gen=gen), m=randn(d, gen=gen), lr=lr, momentum=beta))
    return cases
