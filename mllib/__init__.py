"""mllib: collaborative and decentralized machine learning on the client matrix.

The core (``runtime``, ``data``, ``partition``, ``models``, ``clients``) holds n clients'
models as one (n, d) tensor; one module per topic of the course builds on it.
"""
from .clients import LocalSGD, accuracy_on, evaluate, local_sgd, run_rounds, weighted_average
from .engine import History
from .data import Dataset, load
from .models import FlatModel, cnn, logistic_regression, mlp
from .partition import Clients, split, with_tasks
from .runtime import device, generator, setup

__all__ = [
    "Clients", "Dataset", "FlatModel", "History", "LocalSGD", "accuracy_on", "cnn", "device", "evaluate",
    "generator", "load", "local_sgd", "logistic_regression", "mlp", "run_rounds", "setup", "split",
    "weighted_average", "with_tasks",
]
