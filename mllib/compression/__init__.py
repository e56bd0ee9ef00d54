"""Lecture 04: communication compression on the client matrix.

Row-wise compressors that count the bits they send (``compressors``), error feedback,
PowerSGD (``powersgd``), CHOCO gossip (``choco``), DDP communication hooks (``ddp``), and
the lecture's experiments and plots (``lecture``).
"""
from .choco import (
    Choco, NaiveCompressedGossip, choco_gossip, choco_sgd, choco_step, naive_compressed_gossip, naive_step,
)  # fmt: skip
from .compressors import (
    QSGD, Cast, Compressor, ErrorFeedback, Identity, MessageCompressor, RandomK, ScaledSign, TopK,
    error_feedback_memory, index_bits, pack_bits, random_k, top_k, unpack_bits,
)  # fmt: skip
from .powersgd import (
    PowerSGD,
    flops_power_iteration,
    flops_svd,
    flops_svd_lowrank,
    orthogonalize,
    power_iteration,
    power_step,
    powersgd_round,
    powersgd_step,
    truncated_svd,
)

__all__ = [
    "Cast", "Choco", "Compressor", "ErrorFeedback", "Identity", "MessageCompressor", "NaiveCompressedGossip",
    "PowerSGD", "QSGD", "RandomK", "ScaledSign", "TopK", "choco_gossip", "choco_sgd", "choco_step",
    "error_feedback_memory", "flops_power_iteration", "flops_svd", "flops_svd_lowrank", "index_bits",
    "naive_compressed_gossip", "naive_step", "orthogonalize", "pack_bits", "power_iteration", "power_step",
    "powersgd_round",
    "powersgd_step", "random_k", "top_k", "truncated_svd", "unpack_bits",
]
