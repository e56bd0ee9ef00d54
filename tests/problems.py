"""Synthetic problems with known optima that only the tests use (moved out of ``mllib.data``)."""
import torch

from mllib.data import Dataset, Quadratics
from mllib.runtime import randn


def linear_regression(
    n_samples: int, dim: int, *, noise: float = 0.0, test_fraction: float = 0.2, gen: torch.Generator
) -> tuple[Dataset, torch.Tensor]:
    """Synthetic linear regression y = <w*, x> + noise * N(0, 1), x ~ N(0, I).

    Returns:
        The dataset (x of shape (N, dim), float targets) and w* of shape (dim,): with
        noise=0 it is the exact least-squares optimum.
    """
    if n_samples < 2 or dim < 1:
        raise ValueError(f"need n_samples >= 2 and dim >= 1, got n_samples={n_samples}, dim={dim}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    w_star = randn(dim, gen=gen)
    x = randn(n_samples, dim, gen=gen)
    y = x @ w_star + noise * randn(n_samples, gen=gen)
    n_test = max(1, round(test_fraction * n_samples))
    data = Dataset("linear_regression", x[n_test:], y[n_test:], x[:n_test], y[:n_test], n_classes=None)
    return data, w_star


def logistic_regression(
    n_samples: int, dim: int, *, test_fraction: float = 0.2, gen: torch.Generator
) -> tuple[Dataset, torch.Tensor]:
    """Synthetic binary classification with P(y = 1 | x) = sigmoid(<w*, x>), x ~ N(0, I).

    Returns:
        The dataset (labels 0/1, two classes) and the generating w* of shape (dim,),
        the Bayes-optimal direction.
    """
    if n_samples < 2 or dim < 1:
        raise ValueError(f"need n_samples >= 2 and dim >= 1, got n_samples={n_samples}, dim={dim}")
    w_star = randn(dim, gen=gen)
    x = randn(n_samples, dim, gen=gen)
    y = (torch.rand(n_samples, generator=gen) < torch.sigmoid(x @ w_star)).long()
    n_test = max(1, round(test_fraction * n_samples))
    data = Dataset("logistic_regression", x[n_test:], y[n_test:], x[:n_test], y[:n_test], n_classes=2)
    return data, w_star


def client_optima(task: Quadratics) -> torch.Tensor:
    """Each client's optimum A_i^-1 b_i, (n, d)."""
    return torch.linalg.solve(task.A, task.b)
