"""Lecture 05: Byzantine-robust training.

Some of the n workers send arbitrary messages. ``aggregators`` replaces the mean of the
client matrix by robust rules (coordinate-wise median, trimmed mean, Krum, geometric
median, centered clipping, Zeno); ``attacks`` writes the Byzantine rows (sign flip, noise,
NaN/inf/huge values, inner-product manipulation, "a little is enough", label flip);
``training`` runs distributed SGD with worker momentum and the lecture's experiments;
``figures`` draws them.
"""
from .aggregators import (
    CenteredClipping, Zeno, coordinate_median, geometric_median, krum, krum_scores, make, mean, multi_krum,
    pairwise_sq_distances, trimmed_mean,
)  # fmt: skip
from .attacks import alie, alie_z, constant, gaussian, inner_product, label_flip, no_attack, sign_flip
from .training import (
    ATTACKS, QFFL, Grid, Run, attack_grid, byzantine_sgd, group_accuracies, group_accuracy, make_attack,
    with_minority, worker_momentum,
)  # fmt: skip

__all__ = [
    "ATTACKS", "CenteredClipping", "Grid", "QFFL", "Run", "Zeno", "alie", "alie_z", "attack_grid",
    "byzantine_sgd", "constant", "coordinate_median", "gaussian", "geometric_median", "group_accuracies",
    "group_accuracy", "inner_product", "krum", "krum_scores", "label_flip", "make", "make_attack", "mean", "multi_krum",
    "no_attack", "pairwise_sq_distances", "sign_flip", "trimmed_mean", "with_minority", "worker_momentum",
]
