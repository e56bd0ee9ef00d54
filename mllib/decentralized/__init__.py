"""Decentralized learning: topologies, mixing matrices, gossip and D-PSGD (lecture 03).

No server: node i keeps its own model x_i (row i of the client matrix X) and averages with
its graph neighbours, X <- W X. ``topology`` builds graphs and mixing matrices and measures
their spectral gap; ``gossip`` runs gossip averaging and D-PSGD on the client matrix;
``distributed`` runs the same algorithms as real processes with torch.distributed.
"""
from .gossip import DecentralizedHistory, consensus_distance, dpsgd, dpsgd_step, gossip, gossip_run
from .topology import (
    DIRECTED, TOPOLOGIES, UNDIRECTED, WEIGHTS, check_mixing, from_graph, graph, is_connected, metropolis_hastings,
    mixing_matrix, spectral_gap,
)

__all__ = [
    "DIRECTED", "DecentralizedHistory", "TOPOLOGIES", "UNDIRECTED", "WEIGHTS", "check_mixing", "consensus_distance",
    "dpsgd", "dpsgd_step", "from_graph", "gossip", "gossip_run", "graph", "is_connected", "metropolis_hastings",
    "mixing_matrix", "spectral_gap",
]
