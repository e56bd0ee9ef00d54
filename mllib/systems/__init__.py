"""Lecture 08: heterogeneous systems, which data on which device, and importance sampling.

``glm``: ridge regression and the Lasso in the coordinate form of Dünner et al. (2017), their
per-coordinate duality gaps and coordinate descent; ``hetero``: a simulated two-unit system
(a fast unit with a memory budget, a slow unit with all data, a cost model) and the
duality-gap working sets of DuHL against random and fixed ones; ``sampling``: importance
sampling for SGD (static by Lipschitz constants, adaptive) against uniform; ``plots``: the
lecture's figures.
"""
from . import glm, hetero, plots, sampling
from .glm import coordinate_descent, coordinate_gaps, lasso_bound, primal, solve, sparse_problem
from .hetero import (
    RULES, CostModel, Trace, objective_at, reach_table, simulated_time, time_to_reach, train_slow_alone,
    train_two_units,
)
from .plots import sampling_figure, selection_explorer, selection_figure
from .sampling import (
    SCHEMES, AdaptiveSampler, SGDTrace, check_probabilities, gradient_variance, heterogeneous_regression,
    importance_gradient, least_squares_grads, proportional, sgd,
)

__all__ = [
    "RULES", "SCHEMES", "AdaptiveSampler", "CostModel", "SGDTrace", "Trace", "check_probabilities",
    "coordinate_descent", "coordinate_gaps", "gradient_variance", "heterogeneous_regression",
    "importance_gradient", "lasso_bound", "least_squares_grads", "objective_at", "primal", "proportional",
    "reach_table", "sampling_figure", "selection_explorer", "selection_figure", "sgd", "simulated_time", "solve",
    "sparse_problem", "time_to_reach", "train_slow_alone", "train_two_units",
]
