"""Lecture 05: Byzantine-robust training.

Some of the n workers send arbitrary messages. ``rules`` holds the robust rules' arithmetic
on the client matrix (coordinate-wise median, trimmed mean, Krum, geometric median, centered
clipping, q-FFL); ``aggregators`` gives every rule one protocol (``Aggregator``: f and options
at construction, state on the object, ``make(name, f)`` the factory, ``Mean`` the baseline);
``attacks`` writes the Byzantine rows (sign flip, noise, NaN/inf/huge values, inner-product
manipulation, "a little is enough", label flip); ``training`` runs distributed SGD with worker
momentum on the round engine and the lecture's experiments; ``figures`` draws them.
"""
from .aggregators import (
    AGGREGATORS, QFFL, Aggregator, CenteredClipping, CoordinateMedian, Custom, GeometricMedian, Krum, Mean, MultiKrum,
    TrimmedMean, Zeno, as_aggregator, make,
)  # fmt: skip
from .attacks import (
    ATTACKS, alie, alie_z, constant, gaussian, inner_product, label_flip, make_attack, no_attack, sign_flip,
)  # fmt: skip
from .rules import (
    centered_clipping, check_rows, coordinate_median, geometric_median, krum, krum_scores, mean, multi_krum,
    pairwise_sq_distances, q_ffl, trimmed_mean,
)  # fmt: skip
from .training import (
    Grid, PerRun, StackedGradients, WorkerGradients, WorkerMomentum, attack_grid, byzantine_sgd, group_accuracies,
    group_accuracy, with_minority, worker_momentum,
)  # fmt: skip

__all__ = [
    "AGGREGATORS", "ATTACKS", "Aggregator", "CenteredClipping", "CoordinateMedian", "Custom", "GeometricMedian", "Grid",
    "Krum", "Mean", "MultiKrum", "PerRun", "QFFL", "StackedGradients", "TrimmedMean", "WorkerGradients",
    "WorkerMomentum", "Zeno", "alie", "alie_z", "as_aggregator", "attack_grid", "byzantine_sgd", "centered_clipping",
    "check_rows", "constant", "coordinate_median", "gaussian", "geometric_median", "group_accuracies",
    "group_accuracy", "inner_product", "krum", "krum_scores", "label_flip", "make", "make_attack", "mean",
    "multi_krum", "no_attack", "pairwise_sq_distances", "q_ffl", "sign_flip", "trimmed_mean", "with_minority",
    "worker_momentum",
]
