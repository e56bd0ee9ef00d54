"""Self-checks for lab 03_decentralized_learning: Metropolis-Hastings weights, spectral gap, D-PSGD."""
import torch

from ..decentralized import topology
from ..decentralized.gossip import dpsgd_step as _dpsgd_step
from ..runtime import rand, randn
from . import self_check


def _graphs(gen: torch.Generator) -> list[torch.Tensor]:
    """Undirected graphs, regular and not: star, path, ring, complete, random ones."""
    path = topology.graph("ring", 6)
    path[0, 5] = path[5, 0] = False
    return [
        topology.graph("star", 5),
        path,
        topology.graph("ring", 7),
        topology.graph("complete", 4),
        topology.graph("erdos_renyi", 8, p=0.4, gen=gen),
        topology.graph("geometric", 10, radius=0.5, gen=gen),
        topology.graph("torus", 9),
    ]


@self_check(topology.metropolis_hastings)
def metropolis_hastings(gen):
    """A (n, n) bool: undirected graphs with nodes of different degrees."""
    return [dict(A=A) for A in _graphs(gen)]


def _gap(W: torch.Tensor) -> torch.Tensor:
    """1 - max(|lambda_2|, |lambda_n|) as a 0-d tensor: an answer may return a float or a 0-d tensor."""
    return torch.tensor(topology.spectral_gap(W), dtype=torch.float64)


@self_check(_gap)
def spectral_gap(gen):
    """W (n, n) symmetric doubly stochastic, including ones whose most negative eigenvalue dominates."""
    cases = [dict(W=topology.from_graph(A, weights="metropolis", dtype=torch.float64)) for A in _graphs(gen)]
    for n in (3, 5):  # (J - I) / (n - 1): eigenvalues 1 and -1/(n-1), no self-weight
        cases.append(dict(W=(torch.ones(n, n, dtype=torch.float64) - torch.eye(n, dtype=torch.float64)) / (n - 1)))
    ring = topology.graph("ring", 6).double() / 2  # eigenvalue -1: gap 0
    cases.append(dict(W=ring))
    return cases


@self_check(_dpsgd_step)
def dpsgd_step(gen):
    """X, G (n, d), W (n, n) (symmetric and directed), lr."""
    cases = []
    shapes = (("ring", 5, 3), ("exponential", 6, 4), ("star", 4, 2), ("exponential", 9, 1), ("complete", 3, 5))
    for name, n, d in shapes:
        W = topology.mixing_matrix(name, n)
        cases.append(dict(X=randn(n, d, gen=gen), W=W, G=randn(n, d, gen=gen), lr=float(0.05 + rand(1, gen=gen))))
    return cases
