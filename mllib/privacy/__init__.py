"""Lecture 07: privacy. Secure aggregation, differential privacy with RDP accounting, attacks.

- ``secure_aggregation``: Bonawitz et al. 2017 with X25519, HKDF, ChaCha20 and Shamir sharing, the server
  and each client a separate object exchanging explicit messages, fixed point sized from a declared bound;
- ``dp``: Laplace/Gaussian mechanisms, DP-SGD (vmap reference and ghost-norm fast path), DP-FedAvg;
- ``accountant``: RDP of the subsampled Gaussian, Balle et al. 2020's conversion, sigma calibration;
- ``attacks``: loss-threshold membership inference, DLG gradient inversion;
- ``plots``: the lecture's widget figures.
"""
from .accountant import ORDERS, RDPAccountant, calibrate_sigma, compute_rdp, epsilon, rdp_to_epsilon
from .attacks import (
    InversionResult, MembershipResult, dlg, dp_advantage_bound, inversion_experiment, membership_advantage,
    membership_auc, membership_experiment, reconstruction_error, sample_gradient, sample_losses,
)  # fmt: skip
from .dp import (
    clip_rows, clipped_sum, dp_fedavg_accuracy, dp_fedavg_aggregate, dp_sgd, dp_sgd_gradient, gaussian_mechanism,
    gaussian_sigma, ghost_clipped_sum, laplace_mechanism, noisy_clipped_sum, per_sample_gradients, privacy_utility,
)  # fmt: skip
from .plots import clip_noise_summary, plot_clip_noise, plot_reconstructions, plot_tradeoff
from .secure_aggregation import (
    MODULUS, AdvertiseKeys, EncryptedShares, FixedPoint, ForwardedShares, MaskedInput, PublicKeys, RefusedRequest,
    SecAggClient, SecAggServer, SecureAggregation, UnmaskRequest, UnmaskResponse, agree, pairwise_mask, private_key,
    prg, protocol_cost, reconstruct, secaggplus_cost, share,
)  # fmt: skip

__all__ = [
    "AdvertiseKeys", "EncryptedShares", "FixedPoint", "ForwardedShares", "InversionResult", "MODULUS",
    "MaskedInput", "MembershipResult", "ORDERS", "PublicKeys", "RDPAccountant", "RefusedRequest", "SecAggClient",
    "SecAggServer", "SecureAggregation", "UnmaskRequest", "UnmaskResponse", "agree", "calibrate_sigma",
    "clip_noise_summary", "clip_rows", "clipped_sum", "compute_rdp", "dlg", "dp_fedavg_accuracy",
    "dp_fedavg_aggregate", "dp_sgd", "dp_advantage_bound", "dp_sgd_gradient", "epsilon", "gaussian_mechanism",
    "gaussian_sigma", "ghost_clipped_sum", "inversion_experiment", "laplace_mechanism", "membership_advantage",
    "membership_auc", "membership_experiment", "noisy_clipped_sum", "pairwise_mask", "per_sample_gradients",
    "plot_clip_noise", "plot_reconstructions", "plot_tradeoff", "prg", "privacy_utility", "private_key",
    "protocol_cost", "rdp_to_epsilon", "reconstruct", "reconstruction_error", "sample_gradient", "sample_losses",
    "secaggplus_cost", "share",
]
