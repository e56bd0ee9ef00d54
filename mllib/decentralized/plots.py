"""Figures for lecture 03: a topology drawn with its spectral gap and its gossip curve."""
import math

import matplotlib.pyplot as plt
import torch

from ..constraints import Integer, OneOf, constrain
from ..runtime import generator
from .gossip import gossip_run
from .topology import TOPOLOGIES, graph, mixing_matrix, spectral_gap


def node_positions(topology: str, n: int) -> torch.Tensor:
    """Where to draw the nodes, (n, 2): a grid for the torus, node 0 in the middle of a star,
    a circle otherwise."""
    if topology == "torus":
        r = max(k for k in range(1, math.isqrt(n) + 1) if n % k == 0)
        i = torch.arange(n)
        return torch.stack([(i % (n // r)).double(), -(i // (n // r)).double()], 1)
    angle = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
    points = torch.stack([angle.cos(), angle.sin()], 1)
    if topology == "star":
        angle = 2 * math.pi * torch.arange(n - 1, dtype=torch.float64) / (n - 1)
        points = torch.cat([torch.zeros(1, 2, dtype=torch.float64), torch.stack([angle.cos(), angle.sin()], 1)])
    return points


@constrain(topology=OneOf(*TOPOLOGIES), n=Integer(min=2), steps=Integer(min=0), seed=Integer(min=0))
def consensus_curve(topology: str, n: int, steps: int, *, seed: int = 0) -> tuple[list[float], float]:
    """Gossip from random rows (n, 4) drawn with ``seed``: the consensus distances Xi_t =
    sqrt(mean_i ||x_i - x_bar||^2) relative to Xi_0, t = 0 .. steps, and the topology's
    spectral gap (uniform weights). For symmetric W, Xi_t <= (1 - gap)^t Xi_0."""
    W = mixing_matrix(topology, n, dtype=torch.float64, gen=generator(seed))
    X = torch.randn(n, 4, generator=generator(seed), dtype=torch.float64)
    curve = gossip_run(X, W, steps)
    return [math.sqrt(c / curve[0]) for c in curve], spectral_gap(W)


def plot_topology(topology: str, n: int, steps: int = 50) -> plt.Figure:
    """Left: the graph (arrows for a directed one); right: its gossip consensus distance
    on a log scale against the rate (1 - gap)^t that the spectral gap predicts."""
    A = graph(topology, n, gen=generator(0))
    curve, gap = consensus_curve(topology, n, steps)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    pos = node_positions(topology, n)
    for i, j in A.nonzero().tolist():
        if topology == "torus" and (pos[i] - pos[j]).abs().sum() > 1.5:
            continue  # wrap-around edges of the torus are not drawn
        if topology == "exponential":
            left.annotate("", pos[i].tolist(), pos[j].tolist(), arrowprops=dict(arrowstyle="->", color="0.6", lw=0.6))
        else:
            left.plot(*pos[[i, j]].T, color="0.6", lw=0.8)
    left.scatter(*pos.T, s=40, zorder=3)
    left.set_title(f"{topology}, n={n}: spectral gap {gap:.3f}")
    left.set_xlabel("layout x (no unit)")
    left.set_ylabel("layout y (no unit)")
    left.set_aspect("equal")
    t = torch.arange(steps + 1, dtype=torch.float64)
    right.semilogy(t, [max(c, 1e-30) for c in curve], label="gossip: consensus distance / start")
    right.semilogy(t, (1 - gap) ** t, "--", label="rate (1 - gap)^t")
    right.set_ylim(1e-8, 2)
    right.set_title("gossip X <- W X from random rows")
    right.set_xlabel("gossip steps")
    right.set_ylabel("consensus distance (relative, no unit)")
    right.legend()
    fig.tight_layout()
    return fig
