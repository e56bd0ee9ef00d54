"""Lecture 02: federated vs personalized learning.

When every client has its own task, one global model is not the goal. This package holds
the personal-model algorithms on the client matrix (``training``: local training,
fine-tuning, Ditto, interpolation, training in stages), the bias-variance analysis of
collaboration for mean estimation (``averaging``, Grimberg et al. 2021, arXiv:2110.12946), clients' Shapley
values (``shapley``), collaborative transfer learning (``transfer``) and clients that come and
go with the time of day (``availability``).
"""
from .availability import (
    available, diurnal_availability, fedavg_with_availability, participation_rates,
)
from .averaging import (
    fitted_minimizer, harmful_bias, monte_carlo_mse, mse_of_weight, optimal_weight, plot_collaboration,
)
from .shapley import CachedGame, corrupt_labels, exact_shapley, federation_game, leave_one_out, monte_carlo_shapley
from .training import (
    Ditto, ditto, ditto_update, fine_tune, fine_tune_on, forgetting, interpolate, interpolation_sweep, restrict,
    stage_selection, train_in_stages,
)
from .transfer import (
    LinearCollaboration, TransferCurve, linear_collaboration, plot_linear_collaboration, relabel, transfer_curve,
)

__all__ = [
    "CachedGame", "Ditto", "LinearCollaboration", "TransferCurve", "available", "corrupt_labels", "ditto",
    "ditto_update", "diurnal_availability", "fedavg_with_availability", "participation_rates",
    "exact_shapley", "federation_game", "fine_tune", "fine_tune_on", "fitted_minimizer", "forgetting", "harmful_bias",
    "interpolate", "interpolation_sweep", "leave_one_out", "linear_collaboration", "monte_carlo_mse",
    "monte_carlo_shapley", "mse_of_weight", "optimal_weight", "plot_collaboration", "plot_linear_collaboration",
    "relabel", "restrict", "stage_selection", "train_in_stages", "transfer_curve",
]
