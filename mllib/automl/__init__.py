"""Lecture 10: meta-learning and AutoML.

- ``search``: grid, random search, successive halving and Hyperband replayed on a table of
  learning curves trained all at once on the client matrix.
- ``optuna_replay``: the same replay through Optuna's random sampler and HyperbandPruner
  (imported on its own: ``from mllib.automl import optuna_replay``).
- ``zeroorder``: finite differences, Gaussian smoothing, zero-order SGD.
- ``adaptive``: SGD, AdaGrad, Adam and hypergradient descent as step-size learners.
- ``meta``: first-order MAML and Reptile on few-shot sinusoid regression.
- ``nas``: architecture search with function-preserving warm start (Net2Net).
"""
from .adaptive import SGD, AdaGrad, Adam, HypergradientSGD, optimize
from .meta import adaptation_curve, meta_step, meta_train, meta_train_seeds, reptile_update, sinusoid_model
from .nas import architecture_search, deepen, mutate, widen
from .search import (
    CurveTable, anytime_curves, bergstra_objective, best_found, grid_configs, grid_points, hyperband_schedule,
    learning_curves, random_search, sample_configs, search_trace, successive_halving,
)  # fmt: skip
from .zeroorder import (
    finite_difference_gradient, gaussian_smoothing_gradient, gradient_descent, quadratic, ridge_validation_loss,
    smoothing_estimate, steps_to_reach, zo_sgd,
)  # fmt: skip
from .widgets import plot_anytime, plot_zero_order
