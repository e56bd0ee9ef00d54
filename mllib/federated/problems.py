"""Federations the algorithms run on: real data or quadratic clients, and FedAvg's fixed point.

An algorithm asks a problem for minibatches (``batch``), the sampled clients' gradients at
their rows (``grad``), the full-batch gradient at the server model (``full_grad``) and
plain local SGD (``local_sgd``), so that the same code runs on digits and on quadratics.
"""
from typing import Protocol

import torch

from ..clients import CLIENTS, MODEL, local_sgd
from ..constraints import Generator, Instance, Integer, Real, Rule, Tensor, constrain
from ..data import Quadratics
from ..engine import uniform
from ..models import FlatModel
from ..partition import Clients
from ..runtime import randn


LOCAL = dict(local_steps=Integer(min=1), lr=Real(gt=0))  # K local steps of size lr


def _one_model(x: str) -> Rule:
    """A Rule: the argument ``x`` is one model (d,) of the argument ``problem``."""
    return Rule(x, lambda **a: a[x].shape == (a["problem"].dim,),
                lambda **a: f"{x} must have shape ({a['problem'].dim},), one model of the problem, got "
                f"{tuple(a[x].shape)}")  # fmt: skip


class Problem(Protocol):
    """What an algorithm needs of a federation of n clients with models of d parameters."""

    n: int
    dim: int
    weights: torch.Tensor  # (n,) client weights p_i, summing to 1

    def batch(self, among: torch.Tensor, gen: torch.Generator):
        """One minibatch per client in ``among`` (k,), drawn from ``gen``."""

    def grad(self, Y: torch.Tensor, among: torch.Tensor, batch) -> torch.Tensor:
        """(k, d): row j is client among[j]'s gradient at Y[j] on its part of ``batch``."""

    def full_grad(self, x: torch.Tensor, among: torch.Tensor) -> torch.Tensor:
        """(d,): sum_{i in among} p_i grad f_i(x) / sum p_i on all the clients' data."""

    def local_sgd(self, X, among, *, steps, lr, gen, correction=None) -> torch.Tensor:
        """(k, d): ``steps`` SGD steps from X, each gradient plus ``correction``."""


@constrain(Rule("k", lambda n, k: k <= n,
                "k must be in [1, n], got k={k} for n={n}: no more clients per round than clients"),
           n=Integer(min=1), k=Integer(min=1), gen=Generator())  # fmt: skip
def sample_clients(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """k of n clients drawn uniformly without replacement, sorted: (k,) int64; one draw of the
    engine's selection part ``engine.uniform(n, k, gen)``, as a round of ``run`` makes it.

    Raises:
        ValueError: if k is not in [1, n].
    """
    return uniform(n, k, gen)(0)


class DataProblem:
    """Clients holding real data, a model as a row: stochastic minibatch gradients.

    Args:
        model: the architecture.
        clients: the clients' data; client i weighs ``clients.weights[i]`` (its share of samples).
        batch_size: local minibatch size.
    """

    @constrain(model=MODEL, clients=CLIENTS, batch_size=Integer(min=1))
    def __init__(self, model: FlatModel, clients: Clients, batch_size: int):
        self.model, self.clients, self.batch_size = model, clients, batch_size
        self.n, self.dim = clients.n, model.dim
        self.weights = clients.weights.to(clients.x.device)  # (n,)

    def batch(self, among: torch.Tensor, gen: torch.Generator):
        return self.clients.batches(self.batch_size, gen, among)  # (k, B, ...), (k, B)

    def grad(self, Y: torch.Tensor, among: torch.Tensor, batch) -> torch.Tensor:
        return self.model.grad(Y, *batch)  # (k, d)

    def full_grad(self, x: torch.Tensor, among: torch.Tensor) -> torch.Tensor:
        """sum_{i in S} p_i grad f_i(x) / sum_{i in S} p_i, on all samples of the clients S: (d,)."""
        c = self.clients
        chosen = among.cpu()
        rows = torch.cat([torch.arange(int(o), int(o + s)) for o, s in zip(c.offsets[chosen], c.sizes[chosen])])
        rows = rows.to(c.x.device)  # every sample of the chosen clients
        return self.model.grad(x[None], c.x[rows][None], c.y[rows][None])[0]

    def local_sgd(self, X, among, *, steps, lr, gen, correction=None) -> torch.Tensor:
        # runs every round: the algorithm checked steps and lr once, the engine checks what it returns
        return local_sgd.__wrapped__(self.model, X, self.clients, steps=steps, lr=lr, batch_size=self.batch_size,
                                     gen=gen, among=among, correction=correction)  # fmt: skip


class QuadraticProblem:
    """Quadratic clients f_i(y) = 1/2 y^T A_i y - b_i^T y with exact gradients A_i y - b_i
    (plus ``noise`` * N(0, I) when noise > 0).

    Args:
        quadratics: A (n, d, d) and b (n, d).
        weights: (n,) client weights p_i (default: equal); normalized to sum to 1.
        noise: standard deviation of the gradient noise.
    """

    @constrain(Rule("weights", lambda quadratics, weights: weights is None or weights.shape == quadratics.b.shape[:1],
                    "weights must have shape ({quadratics.b.shape[0]},), one per client, got {weights.shape}"),
               Rule("weights", lambda weights: weights is None or bool((weights >= 0).all() and weights.sum() > 0),
                    "weights must be non-negative and not all zero"),
               quadratics=Instance(Quadratics), weights=Tensor(1, finite=True) | None, noise=Real(ge=0))  # fmt: skip
    def __init__(self, quadratics: Quadratics, weights: torch.Tensor | None = None, noise: float = 0.0):
        self.q, self.noise = quadratics, noise
        self.n, self.dim = quadratics.b.shape
        w = torch.ones(self.n, dtype=quadratics.b.dtype) if weights is None else weights.to(quadratics.b.dtype)
        self.weights = (w / w.sum()).to(quadratics.b.device)

    def batch(self, among, gen):
        return None if self.noise == 0 else self.noise * randn(len(among), self.dim, gen=gen).to(self.q.b)

    def grad(self, Y, among, batch) -> torch.Tensor:
        g = torch.einsum("kij,kj->ki", self.q.A[among], Y) - self.q.b[among]  # (k, d)
        return g if batch is None else g + batch

    def full_grad(self, x, among) -> torch.Tensor:
        p = self.weights[among]
        return p @ (torch.einsum("kij,j->ki", self.q.A[among], x) - self.q.b[among]) / p.sum()  # (d,)

    def local_sgd(self, X, among, *, steps, lr, gen, correction=None) -> torch.Tensor:
        for _ in range(steps):
            g = self.grad(X, among, self.batch(among, gen))
            X = X - lr * (g if correction is None else g + correction)
        return X

    def optimum(self) -> torch.Tensor:
        """argmin sum_i p_i f_i = (sum p_i A_i)^-1 sum p_i b_i: (d,)."""
        return torch.linalg.solve(torch.einsum("n,nij->ij", self.weights, self.q.A), self.weights @ self.q.b)


PROBLEM = Instance(DataProblem, QuadraticProblem, description="a Problem (DataProblem or QuadraticProblem)")


@constrain(problem=Instance(QuadraticProblem), **LOCAL)
def fedavg_fixed_point(problem: QuadraticProblem, *, local_steps: int, lr: float) -> torch.Tensor:
    """Where FedAvg with K exact local gradient steps and full participation converges.

    Client i's K steps map x to y_i = x_i* + M_i (x - x_i*), M_i = (I - lr A_i)^K, x_i* = A_i^-1 b_i.
    The fixed point of x <- x + server_lr * sum_i p_i (y_i - x) solves
        (sum_i p_i (I - M_i)) x = sum_i p_i (I - M_i) x_i*,
    a weighted mean of the client optima: K = 1 gives the true optimum, K -> infinity the
    plain mean of the x_i* (Charles & Konecny 2021; Malinovsky et al. 2020).
    In 1-D with f_i = a_i/2 (x - b_i)^2: x = sum p_i (1 - (1 - lr a_i)^K) b_i / sum p_i (1 - (1 - lr a_i)^K).

    Returns:
        (d,) the fixed point.

    Raises:
        ValueError: for K < 1 or lr <= 0.
    """
    A, b, p = problem.q.A, problem.q.b, problem.weights
    eye = torch.eye(problem.dim, dtype=A.dtype, device=A.device)
    M = torch.linalg.matrix_power(eye - lr * A, local_steps)  # (n, d, d)
    P = eye - M
    x_i = torch.linalg.solve(A, b)  # (n, d) client optima
    return torch.linalg.solve(torch.einsum("n,nij->ij", p, P), torch.einsum("n,nij,nj->i", p, P, x_i))
