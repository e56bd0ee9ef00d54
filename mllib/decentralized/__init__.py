"""Decentralized learning: topologies, mixing matrices, gossip and D-PSGD (lecture 03).

No server: node i keeps its own model x_i (row i of the client matrix X) and averages with
its graph neighbours, X <- W X. ``topology`` builds graphs and mixing matrices and measures
their spectral gap; ``gossip`` gives the parts of a decentralized round of the engine
(``engine.Decentralized``) and runs gossip averaging and D-PSGD with them; ``distributed``
runs the same parts as real processes with torch.distributed.
"""
from .gossip import (
    DPSGD, Gossip, GossipAveraging, Gradients, LocalUpdates, consensus_distance, dpsgd, dpsgd_step, gossip,
    gossip_alone, gossip_run, links,
)  # fmt: skip
from .topology import (
    DIRECTED, TOPOLOGIES, UNDIRECTED, WEIGHTS, check_mixing, from_graph, graph, is_connected, metropolis_hastings,
    mixing_matrix, node_traffic, spectral_gap,
)

__all__ = [
    "DIRECTED", "DPSGD", "Gossip", "GossipAveraging", "Gradients", "LocalUpdates", "TOPOLOGIES", "UNDIRECTED",
    "WEIGHTS", "check_mixing", "consensus_distance", "dpsgd", "dpsgd_step", "from_graph", "gossip", "gossip_alone",
    "gossip_run", "graph", "is_connected", "links", "metropolis_hastings", "mixing_matrix", "node_traffic",
    "spectral_gap",
]
