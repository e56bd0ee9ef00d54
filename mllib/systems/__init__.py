"""Lecture 08: heterogeneous systems, which data on which device, and importance sampling.

``glm``: ridge regression and the Lasso in the coordinate form of Dünner et al. (2017), their
per-coordinate duality gaps and coordinate descent, and the Lasso solved on duality-gap working
sets (Celer's outer loop, ``lasso_working_sets``); ``hetero``: a simulated two-unit system
(a fast unit with a memory budget, a slow unit with all data, a cost model) and the
duality-gap working sets of DuHL against random and fixed ones; ``sampling``: importance
sampling for SGD (static by Lipschitz constants, adaptive) against uniform; ``plots``: the
lecture's figures. The runs (``TwoUnits``, ``SlowAlone``, ``ImportanceSGD``) advance one round
(one SGD step) at a time on the round engine, ``mllib.engine.run``, and return its ``History``.
"""
from . import glm, hetero, plots, sampling
from .glm import (
    LassoRun, coordinate_descent, coordinate_gaps, lasso_bound, lasso_working_sets, primal, solve, sparse_problem,
)
from .hetero import (
    METRICS, RULES, CostModel, SlowAlone, TwoUnits, objective_at, reach_table, series, simulated_time, time_to_reach,
    train_slow_alone, train_two_units,
)
from .plots import sampling_figure, selection_explorer, selection_figure
from .sampling import (
    SCHEMES, AdaptiveSampler, ImportanceSGD, check_probabilities, gradient_variance, heterogeneous_regression,
    importance_gradient, least_squares_grads, log10_mean, network_sgd, NetworkImportanceSGD, proportional, records,
    sgd,
)

__all__ = [
    "METRICS", "RULES", "SCHEMES", "AdaptiveSampler", "CostModel", "ImportanceSGD", "LassoRun", "NetworkImportanceSGD",
    "SlowAlone", "TwoUnits", "check_probabilities", "coordinate_descent", "coordinate_gaps", "gradient_variance",
    "heterogeneous_regression", "importance_gradient", "lasso_bound", "lasso_working_sets", "least_squares_grads",
    "log10_mean",
    "network_sgd", "objective_at", "primal", "proportional", "reach_table", "records", "sampling_figure",
    "selection_explorer", "selection_figure", "series", "sgd", "simulated_time", "solve", "sparse_problem",
    "time_to_reach", "train_slow_alone", "train_two_units",
]
