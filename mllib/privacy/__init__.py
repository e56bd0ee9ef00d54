"""Lecture 07: privacy. Secure aggregation, differential privacy with RDP accounting, attacks.

- ``secure_aggregation``: Bonawitz et al. 2017 with X25519, HKDF, ChaCha20 and Shamir sharing;
- ``dp``: Laplace/Gaussian mechanisms, DP-SGD (vmap reference and ghost-norm fast path), DP-FedAvg;
- ``accountant``: RDP of the subsampled Gaussian, Balle et al. 2020's conversion, sigma calibration;
- ``attacks``: loss-threshold membership inference, DLG gradient inversion;
- ``plots``: the lecture's widget figures.
"""
from .accountant import ORDERS, RDPAccountant, calibrate_sigma, compute_rdp, epsilon, rdp_to_epsilon
from .attacks import (
    MembershipResult, dlg, membership_auc, membership_experiment, reconstruction_error, sample_gradient, sample_losses,
)  # fmt: skip
from .dp import (
    clip_rows, clipped_sum, dp_fedavg_aggregate, dp_sgd, dp_sgd_gradient, gaussian_mechanism, gaussian_sigma,
    ghost_clipped_sum, laplace_mechanism, noisy_clipped_sum, per_sample_gradients, privacy_utility,
)  # fmt: skip
from .plots import clip_noise_summary, plot_clip_noise, plot_reconstructions, plot_tradeoff
from .secure_aggregation import (
    MODULUS, SecureAggregation, agree, decode, encode, pairwise_mask, private_key, prg, reconstruct, share,
)  # fmt: skip

__all__ = [
    "MODULUS", "ORDERS", "MembershipResult", "RDPAccountant", "SecureAggregation", "agree", "calibrate_sigma",
    "clip_noise_summary", "clip_rows", "clipped_sum", "compute_rdp", "decode", "dlg", "dp_fedavg_aggregate",
    "dp_sgd", "dp_sgd_gradient", "encode", "epsilon", "gaussian_mechanism", "gaussian_sigma", "ghost_clipped_sum",
    "laplace_mechanism", "membership_auc", "membership_experiment", "noisy_clipped_sum", "pairwise_mask",
    "per_sample_gradients", "plot_clip_noise", "plot_reconstructions", "plot_tradeoff", "privacy_utility",
    "private_key", "prg", "rdp_to_epsilon", "reconstruct", "reconstruction_error", "sample_gradient",
    "sample_losses", "share",
]
