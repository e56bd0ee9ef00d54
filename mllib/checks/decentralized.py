"""Self-checks for lab 03_decentralized_learning: Metropolis-Hastings weights, spectral gap, D-PSGD."""
import functools

import torch

from ..decentralized import topology
from ..decentralized.gossip import consensus_distance, gossip, gossip_alone, gossip_run
from ..decentralized.gossip import dpsgd_step as _dpsgd_step
from ..runtime import rand, randn
from . import Mistake, self_check


def _offdiagonal(A, weight):
    """W with ``weight`` (n, n) on the edges of A and the self-weights that make the rows sum to 1."""
    W = A.double() * weight
    return W + torch.diag(1 - W.sum(1))


def _degrees(A):
    degree = A.sum(1).double()
    return degree[:, None], degree[None, :]


def _mh_max_degree(A):
    return _offdiagonal(A, 1 / (1 + A.sum(1).max().double()))


def _mh_min(A):
    d_i, d_j = _degrees(A)
    return _offdiagonal(A, 1 / (1 + torch.minimum(d_i, d_j)))


def _mh_without_one(A):
    d_i, d_j = _degrees(A)
    return _offdiagonal(A, 1 / torch.maximum(d_i, d_j))


def _mh_without_self_weights(A):
    d_i, d_j = _degrees(A)
    return A.double() / (1 + torch.maximum(d_i, d_j))


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


@self_check(
    topology.metropolis_hastings,
    mistakes=[
        Mistake(_mh_max_degree, "every edge gets 1 / (1 + d_max): uniform weights, not Metropolis",
                "each edge uses its own two degrees: 1 / (1 + max(d_i, d_j))"),
        Mistake(_mh_min, "the edge weight uses min(d_i, d_j), not max(d_i, d_j)",
                "with the max, no row's off-diagonal weights can sum past 1"),
        Mistake(_mh_without_one, "the edge weight is 1 / max(d_i, d_j): the 1 + is missing",
                "1 / (1 + max(d_i, d_j)) leaves every node a positive self-weight"),
        Mistake(_mh_without_self_weights, "the diagonal is zero: rows do not sum to 1",
                "W_ii = 1 - sum_j W_ij: add torch.diag(1 - W.sum(1))"),
    ],
)  # fmt: skip
def metropolis_hastings(gen):
    """A (n, n) bool: undirected graphs with nodes of different degrees."""
    return [dict(A=A) for A in _graphs(gen)]


def _gap(W: torch.Tensor) -> torch.Tensor:
    """1 - max(|lambda_2|, |lambda_n|) as a 0-d tensor: an answer may return a float or a 0-d tensor."""
    return torch.tensor(topology.spectral_gap(W), dtype=torch.float64)


def _gap_second_only(W):
    return torch.tensor(1 - abs(float(torch.linalg.eigvalsh(W.double())[-2])), dtype=torch.float64)


def _gap_signed(W):
    eigenvalues = torch.linalg.eigvalsh(W.double())
    return torch.tensor(1 - max(float(eigenvalues[-2]), float(eigenvalues[0])), dtype=torch.float64)


def _gap_ascending_mixup(W):
    eigenvalues = torch.linalg.eigvalsh(W.double())  # ascending: [1] is the second smallest, not lambda_2
    return torch.tensor(1 - max(abs(float(eigenvalues[1])), abs(float(eigenvalues[0]))), dtype=torch.float64)


@self_check(
    _gap,
    mistakes=[
        Mistake(_gap_second_only, "this is 1 - |lambda_2|: the most negative eigenvalue is ignored",
                "gap = 1 - max(|lambda_2|, |lambda_n|); lambda_n can dominate"),
        Mistake(_gap_signed, "the eigenvalues are compared without absolute values",
                "take |lambda_2| and |lambda_n|: a negative eigenvalue also slows mixing"),
        Mistake(_gap_ascending_mixup, "eigvalsh sorts ascending: eigenvalues[1] is not lambda_2",
                "lambda_1 = eigenvalues[-1], lambda_2 = eigenvalues[-2], lambda_n = eigenvalues[0]"),
    ],
)  # fmt: skip
def spectral_gap(gen):
    """W (n, n) symmetric doubly stochastic, including ones whose most negative eigenvalue dominates."""
    cases = [dict(W=topology.from_graph(A, weights="metropolis", dtype=torch.float64)) for A in _graphs(gen)]
    for n in (3, 5):  # (J - I) / (n - 1): eigenvalues 1 and -1/(n-1), no self-weight
        cases.append(dict(W=(torch.ones(n, n, dtype=torch.float64) - torch.eye(n, dtype=torch.float64)) / (n - 1)))
    ring = topology.graph("ring", 6).double() / 2  # eigenvalue -1: gap 0
    cases.append(dict(W=ring))
    return cases


def _dpsgd_transposed(X, W, G, lr):
    return W.T @ X - lr * G


def _dpsgd_mix_after_step(X, W, G, lr):
    return W @ (X - lr * G)


def _dpsgd_ascent(X, W, G, lr):
    return W @ X + lr * G


@self_check(
    _dpsgd_step,
    mistakes=[
        Mistake(_dpsgd_transposed, "this mixes with W^T: row i must average with row i of W",
                "X_new = W @ X: node i takes sum_j W_ij x_j"),
        Mistake(_dpsgd_mix_after_step, "the gradient step is mixed too: W (X - lr G)",
                "Lian et al. 2017 mix the models and step with the local gradient: W X - lr G"),
        Mistake(_dpsgd_ascent, "the gradient step goes uphill",
                "subtract the gradients: W @ X - lr * G"),
    ],
)  # fmt: skip
def dpsgd_step(gen):
    """X, G (n, d), W (n, n) (symmetric and directed), lr."""
    cases = []
    shapes = (("ring", 5, 3), ("exponential", 6, 4), ("star", 4, 2), ("exponential", 9, 1), ("complete", 3, 5))
    for name, n, d in shapes:
        W = topology.mixing_matrix(name, n)
        cases.append(dict(X=randn(n, d, gen=gen), W=W, G=randn(n, d, gen=gen), lr=float(0.05 + rand(1, gen=gen))))
    return cases


def reference_metropolis_gossip(X, A, steps):
    """Gossip ``steps`` times with Metropolis-Hastings weights on the graph A (reference): the
    consensus distances Xi_t^2 = (1/n) sum_i ||x_i - x_bar||^2 for t = 0 .. steps, (steps + 1,) float64."""
    W = topology.metropolis_hastings(A).to(X.dtype)
    return torch.tensor(gossip_run(X, W, steps), dtype=torch.float64)


def _metropolis_gossip_variant(X, A, steps, *, weights="metropolis", squared=True, first=True):
    """Gossip with one of the students' mistakes switched on (the defaults are the reference)."""
    d_i, d_j = _degrees(A)
    W = {"metropolis": lambda: _offdiagonal(A, 1 / (1 + torch.maximum(d_i, d_j))),
         "max_degree": lambda: _mh_max_degree(A),
         "no_self": lambda: _mh_without_self_weights(A)}[weights]().to(X.dtype)  # fmt: skip
    distances = []
    for step in range(steps + 1):
        if step:
            X = W @ X
        spread = (X - X.mean(0)).pow(2).sum(1).mean()
        distances.append(spread if squared else spread.sqrt())
    return torch.stack(distances[0 if first else 1 :]).double()


def _metropolis_gossip_mistake(**switch):
    return functools.partial(_metropolis_gossip_variant, **switch)


@self_check(
    reference_metropolis_gossip,
    mistakes=[
        Mistake(_metropolis_gossip_mistake(weights="max_degree"), "every edge gets 1 / (1 + d_max), not Metropolis",
                "node i gives neighbour j the weight 1 / (1 + max(d_i, d_j))"),
        Mistake(_metropolis_gossip_mistake(weights="no_self"), "the self-weights W_ii are missing",
                "node i keeps W_ii = 1 - sum of its neighbours' weights"),
        Mistake(_metropolis_gossip_mistake(squared=False), "this is the root of the consensus distance",
                "Xi^2 = (1/n) sum_i ||x_i - x_bar||^2: no square root"),
        Mistake(_metropolis_gossip_mistake(first=False), "the distance before the first step is missing",
                "return steps + 1 values: t = 0 (before gossiping) up to t = steps"),
    ],
    forbid=[topology.metropolis_hastings, topology.from_graph, topology.mixing_matrix, gossip, gossip_run,
            gossip_alone, consensus_distance],
)  # fmt: skip
def metropolis_gossip(gen):
    """X (n, d) float64, A (n, n) bool (graphs with nodes of different degrees), steps."""
    return [dict(X=randn(len(A), 3, gen=gen).double(), A=A, steps=steps)
            for A, steps in zip(_graphs(gen), [3, 1, 5, 2, 4, 6, 3])]  # fmt: skip
