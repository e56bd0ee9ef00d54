"""Communication graphs and their mixing matrices: who talks to whom, and with what weight.

A topology on n nodes is an (n, n) boolean adjacency matrix ``A`` with ``A[i, j]`` True when
node i receives from node j (i != j); undirected graphs are symmetric. A mixing matrix W
puts weight ``W[i, j] > 0`` only on edges and the diagonal, and gossip is X <- W X on the
client matrix. W doubly stochastic keeps the average of the rows; how fast the rows agree
is set by the spectral gap (Boyd et al. 2006, "Randomized gossip algorithms", doi:10.1109/TIT.2006.874516,
Section 2).
"""
import math

import torch

from ..constraints import FloatDtype, Generator, Integer, OneOf, Real, Tensor, constrain

UNDIRECTED = ("complete", "ring", "torus", "star", "hypercube", "erdos_renyi", "geometric", "matching")
DIRECTED = ("exponential",)
TOPOLOGIES = UNDIRECTED + DIRECTED
WEIGHTS = ("uniform", "metropolis")


ADJACENCY = Tensor(2, floating=False, boolean=True, description="an (n, n) adjacency matrix")
SQUARE = Tensor(2, finite=True, description="a square (n, n) mixing matrix")
RANDOM_GRAPH = dict(gen=Generator() | None, p=Real(gt=0, le=1) | None, radius=Real(gt=0) | None)


@constrain(topology=OneOf(*TOPOLOGIES), n=Integer(min=2), **RANDOM_GRAPH)
def graph(
    topology: str, n: int, *, gen: torch.Generator | None = None, p: float | None = None, radius: float | None = None
) -> torch.Tensor:
    """The adjacency matrix of a named topology on n nodes.

    - ``complete``: every pair (n >= 2); ``ring``: i ~ i +- 1 mod n (n >= 3);
    - ``torus``: a 2-D wrap-around grid r x c with r * c = n, r, c >= 3 and r the largest
      divisor of n up to sqrt(n) (n = 9, 12, 16, ...); every node has 4 neighbours;
    - ``star``: node 0 ~ every other node (n >= 2); ``hypercube``: i ~ i XOR 2^k (n = 2^m >= 2);
    - ``erdos_renyi``: each pair independently with probability ``p`` (default 2 ln(n) / n);
    - ``geometric``: n points uniform in the unit square, linked within distance ``radius``
      (default sqrt(2 ln(n) / n)); both random graphs need ``gen`` and may be disconnected;
    - ``matching``: a uniformly random perfect matching (one round of a time-varying
      topology; n even, or one node left out when n is odd), needs ``gen``;
    - ``exponential`` (directed): i receives from i - 2^k mod n, k = 0 .. floor(log2(n - 1))
      (Assran et al. 2019, SGP; Ying et al. 2021, "Exponential graph is provably efficient", arXiv:2110.13363).

    Args:
        topology: one of ``TOPOLOGIES``.
        n: number of nodes.
        gen: CPU generator, for the random topologies.
        p, radius: parameters of ``erdos_renyi`` and ``geometric``.

    Returns:
        (n, n) bool adjacency, False on the diagonal.

    Raises:
        ValueError: for an unknown topology, n too small (or of the wrong form) for it,
            a random topology without ``gen``, or p / radius out of range.
    """
    if topology in ("erdos_renyi", "geometric", "matching") and gen is None:
        raise ValueError(f"topology {topology!r} is random: pass gen=torch.Generator")
    i = torch.arange(n)
    A = torch.zeros(n, n, dtype=torch.bool)
    if topology == "complete":
        A[:] = True
    elif topology == "ring":
        if n < 3:
            raise ValueError(f"a ring needs n >= 3 nodes, got n={n}; use 'complete' for 2 nodes")
        A[i, (i + 1) % n] = A[i, (i - 1) % n] = True
    elif topology == "torus":
        r = max(k for k in range(1, math.isqrt(n) + 1) if n % k == 0)
        if r < 3:
            raise ValueError(f"a 2-D torus needs n = r * c with r, c >= 3 (9, 12, 16, ...), got n={n}")
        c = n // r
        row, col = i // c, i % c
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            A[i, ((row + dr) % r) * c + (col + dc) % c] = True
    elif topology == "star":
        A[0, 1:] = A[1:, 0] = True
    elif topology == "hypercube":
        if n & (n - 1):
            raise ValueError(f"a hypercube needs n a power of 2 (2, 4, 8, ...), got n={n}")
        for k in range(n.bit_length() - 1):
            A[i, i ^ (1 << k)] = True
    elif topology == "erdos_renyi":
        p = 2 * math.log(n) / n if p is None else p
        upper = torch.triu(torch.rand(n, n, generator=gen) < p, diagonal=1)
        A = upper | upper.T
    elif topology == "geometric":
        radius = math.sqrt(2 * math.log(n) / n) if radius is None else radius
        points = torch.rand(n, 2, generator=gen, dtype=torch.float64)  # (n, 2)
        A = torch.cdist(points, points) <= radius
    elif topology == "matching":
        order = torch.randperm(n, generator=gen)
        a, b = order[0 : n - 1 : 2], order[1:n:2]
        A[a, b] = A[b, a] = True
    else:  # exponential
        for k in range(int(math.log2(n - 1)) + 1):
            A[i, (i - (1 << k)) % n] = True
    A.fill_diagonal_(False)
    return A


@constrain(A=ADJACENCY)
def is_connected(A: torch.Tensor) -> bool:
    """Whether every node reaches every other along the edges of A (as a directed graph)."""
    n = A.shape[0]
    reach = torch.eye(n, dtype=torch.bool) | A.cpu()
    for _ in range(max(1, math.ceil(math.log2(n)))):  # squaring doubles the path length
        reach = (reach.double() @ reach.double()) > 0
    return bool(reach.all())


@constrain(W=Tensor(2, floating=False, boolean=True, description="an (n, n) mixing or adjacency matrix"))
def node_traffic(W: torch.Tensor) -> torch.Tensor:
    """Model copies each node sends and receives in one gossip step X <- W X.

    Node i receives x_j from every j != i with W_ij != 0 and sends x_i to every j != i with
    W_ji != 0: traffic_i = #{j != i: W_ij != 0} + #{j != i: W_ji != 0}. The centre of a star
    is a federated server: it receives and sends n - 1 models per round, 2 (n - 1) in all;
    on a ring every node handles 4 whatever n, on a 2-D torus 8 (Lian et al. 2017, arXiv:1705.09056, Section 1:
    the busiest node is the bottleneck of a centralized topology).

    Args:
        W: (n, n) mixing matrix (or adjacency: only its non-zero pattern counts).

    Returns:
        (n,) int64: the copies of the model node i sends plus those it receives per step.

    Raises:
        ValueError: if W is not a square matrix.
    """
    if W.dim() != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be a square (n, n) matrix, got shape {tuple(W.shape)}")
    links = W.detach().cpu().ne(0).fill_diagonal_(False)  # links[i, j]: i receives from j
    return links.sum(1) + links.sum(0)  # received + sent


@constrain(A=ADJACENCY, weights=OneOf(*WEIGHTS), dtype=FloatDtype())
def from_graph(A: torch.Tensor, *, weights: str = "uniform", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The mixing matrix of a graph, with uniform (maximum-degree) or Metropolis-Hastings weights.

    Undirected graph, degree d_i, d_max = max_i d_i (Xiao & Boyd 2004, "Fast linear
    iterations for distributed averaging", Section 4.1 and eq. (23)):
        uniform:    W_ij = 1 / (d_max + 1) on edges, W_ii = 1 - d_i / (d_max + 1);
        metropolis: W_ij = 1 / (1 + max(d_i, d_j)) on edges, W_ii = 1 - sum_{j != i} W_ij.
    On a regular graph (ring, torus, hypercube, complete) both are 1 / (d + 1) everywhere.
    Directed graph where every node has the same in- and out-degree d (exponential graph):
    uniform W_ij = 1 / (d + 1) on edges and the diagonal; Metropolis is for undirected graphs.

    Args:
        A: (n, n) bool adjacency, A[i, j] when i receives from j.
        weights: ``"uniform"`` or ``"metropolis"``.
        dtype: the dtype of the result (computed in float64).

    Returns:
        (n, n) doubly stochastic W, symmetric when A is.

    Raises:
        ValueError: for an unknown weighting, Metropolis on a directed graph, or a directed
            graph whose in- and out-degrees differ (no uniform doubly stochastic W).
    """
    A = A.cpu().bool().clone().fill_diagonal_(False)
    E = A.double()
    d_in, d_out = E.sum(1), E.sum(0)  # (n,)
    if not torch.equal(A, A.T):
        if weights == "metropolis":
            raise ValueError("weights='metropolis' needs an undirected (symmetric) graph; use weights='uniform'")
        if not (torch.all(d_in == d_in[0]) and torch.all(d_out == d_in[0])):
            raise ValueError("a directed graph needs equal in- and out-degrees at every node for a doubly stochastic W")
    if weights == "uniform":
        W = E / (d_in.max() + 1)
    else:
        W = E / (1 + torch.maximum(d_in[:, None], d_in[None, :]))
    W += torch.diag(1 - W.sum(1))
    return W.to(dtype)


@constrain(A=ADJACENCY)
def metropolis_hastings(A: torch.Tensor) -> torch.Tensor:
    """Metropolis-Hastings weights of an undirected graph, in float64 (the lab's exercise).

    W_ij = 1 / (1 + max(d_i, d_j)) on edges, W_ii = 1 - sum_{j != i} W_ij (Xiao & Boyd
    2004, eq. (23)); doubly stochastic and symmetric on any undirected graph.

    Args:
        A: (n, n) symmetric bool adjacency.

    Returns:
        (n, n) float64 W.
    """
    return from_graph(A, weights="metropolis", dtype=torch.float64)


@constrain(topology=OneOf(*TOPOLOGIES), n=Integer(min=2), weights=OneOf(*WEIGHTS), **RANDOM_GRAPH,
           dtype=FloatDtype())  # fmt: skip
def mixing_matrix(
    topology: str,
    n: int,
    *,
    weights: str = "uniform",
    gen: torch.Generator | None = None,
    p: float | None = None,
    radius: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The doubly stochastic mixing matrix of a named topology: ``from_graph(graph(...))``.

    Args:
        topology: one of ``TOPOLOGIES`` (see ``graph``).
        n: number of nodes.
        weights: ``"uniform"`` (maximum-degree) or ``"metropolis"`` (Metropolis-Hastings).
        gen: CPU generator, for the random topologies.
        p, radius: parameters of ``erdos_renyi`` and ``geometric``.
        dtype: dtype of the result.

    Returns:
        (n, n) doubly stochastic W on the CPU (symmetric for undirected topologies).

    Raises:
        ValueError: for bad arguments (see ``graph`` and ``from_graph``), or a random graph
            that came out disconnected (gossip would never reach consensus); ``matching`` is
            disconnected by design and allowed.
    """
    A = graph(topology, n, gen=gen, p=p, radius=radius)
    if topology != "matching" and not is_connected(A):
        raise ValueError(
            f"the {topology!r} graph on n={n} nodes is disconnected, so gossip cannot reach consensus; "
            "draw again or pass a larger p / radius"
        )
    return from_graph(A, weights=weights, dtype=dtype)


@constrain(W=SQUARE, A=ADJACENCY | None, atol=Real(ge=0))
def check_mixing(
    W: torch.Tensor, A: torch.Tensor | None = None, *, connected: bool = True, atol: float = 1e-5
) -> None:
    """Raise ValueError unless W is a valid mixing matrix (for the graph A, if given).

    Valid: square, non-negative, rows and columns summing to 1 (doubly stochastic),
    zero off the edges of A, symmetric when A is, and (if ``connected``) a connected graph.

    Raises:
        ValueError: naming the first property that fails and by how much.
    """
    if W.dim() != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"W must be a square (n, n) matrix, got shape {tuple(W.shape)}")
    W = W.detach().cpu().double()
    if (W < -atol).any():
        raise ValueError(f"W must be non-negative, got a smallest entry {W.min().item():.3g}")
    for name, sums in (("rows", W.sum(1)), ("columns", W.sum(0))):
        if (sums - 1).abs().max() > atol:
            raise ValueError(
                f"W is not doubly stochastic: its {name} sum to values in [{sums.min().item():.4g}, "
                f"{sums.max().item():.4g}], not 1; use mixing_matrix(...) or from_graph(A, weights='metropolis')"
            )
    support = (W.abs() > atol).fill_diagonal_(False)
    if A is not None:
        if A.shape != W.shape:
            raise ValueError(f"A must have the shape of W, {tuple(W.shape)}, got {tuple(A.shape)}")
        off = support & ~A.cpu().bool()
        if off.any():
            i, j = (int(v) for v in off.nonzero()[0])
            raise ValueError(
                f"W does not match the graph: W[{i}, {j}] = {W[i, j].item():.3g} but {i} and {j} are not linked"
            )
        if torch.equal(A.cpu().bool(), A.cpu().bool().T) and (W - W.T).abs().max() > atol:
            raise ValueError("the graph is undirected but W is not symmetric")
    if connected and not is_connected(support):
        raise ValueError("the graph of W is disconnected, so gossip cannot reach consensus")


@constrain(W=SQUARE)
def spectral_gap(W: torch.Tensor) -> float:
    """The spectral gap of a mixing matrix: how much one gossip step shrinks disagreement.

    Symmetric W with eigenvalues 1 = l_1 >= l_2 >= ... >= l_n: gap = 1 - max(|l_2|, |l_n|)
    (Boyd et al. 2006, doi:10.1109/TIT.2006.874516; Koloskova et al. 2019, arXiv:1902.00340, CHOCO-SGD,
    Assumption 1). Non-symmetric W (directed graphs): gap = 1 - sigma_2(W), its second-largest
    singular value, which bounds ||W x - mean|| <= sigma_2 ||x - mean|| (Assran et al. 2019;
    Ying et al. 2021, arXiv:2110.13363). Computed in float64.

    Args:
        W: (n, n) doubly stochastic mixing matrix.

    Returns:
        The gap in [0, 1]: 1 for the complete graph with uniform weights, 0 when disconnected.

    Raises:
        ValueError: if W is not a doubly stochastic square matrix.
    """
    check_mixing.__wrapped__(W, connected=False)  # W checked by spectral_gap's constraint
    W = W.detach().cpu().double()
    if W.shape[0] == 1:
        return 1.0
    if torch.allclose(W, W.T, atol=1e-10):
        second = torch.linalg.eigvalsh(W).abs().sort(descending=True).values[1]
    else:
        second = torch.linalg.svdvals(W)[1]
    return float((1 - second).clamp(0, 1))
