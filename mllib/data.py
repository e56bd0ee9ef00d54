"""Datasets that ship offline: scikit-learn's digits, an MNIST subset, and random quadratics.

Images are float32 tensors in [0, 1] of shape (N, 1, H, W); labels are int64 (N,).
"""
from dataclasses import dataclass, replace
from importlib import resources

import numpy as np
import torch

from .constraints import Generator, Integer, OneOf, Real, constrain
from .runtime import randn

DATASETS = ("digits", "mnist")


@dataclass(frozen=True)
class Dataset:
    """A train/test split. ``n_classes`` is None for regression targets."""

    name: str
    x_train: torch.Tensor  # (N, ...)
    y_train: torch.Tensor  # (N,)
    x_test: torch.Tensor  # (M, ...)
    y_test: torch.Tensor  # (M,)
    n_classes: int | None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_features(self) -> int:
        return int(np.prod(self.input_shape))

    def to(self, device: torch.device | str) -> "Dataset":
        move = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_test", "y_test")}
        return replace(self, **move)


def _images_and_labels(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images / 16.0, bunch.target  # 16 grey levels
    with resources.files("mllib.datasets").joinpath("mnist_5k.npz").open("rb") as f:
        arrays = np.load(f)
        return arrays["images"] / 255.0, arrays["labels"]


@constrain(name=OneOf(*DATASETS), test_fraction=Real(gt=0, lt=1), gen=Generator())
def load(name: str = "digits", *, test_fraction: float = 0.2, gen: torch.Generator) -> Dataset:
    """Load a bundled image dataset, shuffled by ``gen`` and split into train and test.

    Args:
        name: "digits" (1797 images of 8 x 8, scikit-learn) or "mnist" (5000 images of
            28 x 28, see ``mllib/datasets/README.md``).
        test_fraction: share of the images held out for testing, in (0, 1).
        gen: CPU generator for the shuffle.

    Raises:
        ValueError: for an unknown name or a test_fraction outside (0, 1).
    """
    images, labels = _images_and_labels(name)
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1)  # (N, 1, H, W)
    y = torch.tensor(labels, dtype=torch.int64)
    order = torch.randperm(len(y), generator=gen)
    n_test = round(test_fraction * len(y))
    test, train = order[:n_test], order[n_test:]
    return Dataset(name, x[train], y[train], x[test], y[test], n_classes=10)


@dataclass(frozen=True)
class Quadratics:
    """Client i minimizes f_i(x) = 1/2 x^T A_i x - b_i^T x; the federation minimizes their mean.

    The optimum of f_i is A_i^-1 b_i, that of the mean is (mean A)^-1 (mean b):
    a synthetic task whose optima are known in closed form.
    """

    A: torch.Tensor  # (n, d, d), symmetric positive definite
    b: torch.Tensor  # (n, d)

    def loss(self, X: torch.Tensor) -> torch.Tensor:
        """Each client's loss at its row of X (n, d) -> (n,)."""
        return 0.5 * torch.einsum("ni,nij,nj->n", X, self.A, X) - (self.b * X).sum(1)

    def grad(self, X: torch.Tensor) -> torch.Tensor:
        """Each client's gradient at its row of X (n, d) -> (n, d)."""
        return torch.einsum("nij,nj->ni", self.A, X) - self.b

    def optimum(self) -> torch.Tensor:  # (d,)
        return torch.linalg.solve(self.A.mean(0), self.b.mean(0))


@constrain(n_clients=Integer(min=1), dim=Integer(min=1), heterogeneity=Real(ge=0), condition=Real(ge=1),
           gen=Generator())  # fmt: skip
def quadratics(
    n_clients: int, dim: int, *, heterogeneity: float = 1.0, condition: float = 10.0, gen: torch.Generator
) -> Quadratics:
    """Random strongly convex quadratics whose client optima spread with ``heterogeneity``.

    A_i = Q_i diag(eigenvalues in [1, condition]) Q_i^T with a random rotation Q_i, and
    b_i = A_i (x0 + heterogeneity * z_i), z_i ~ N(0, I): heterogeneity 0 gives every
    client the same optimum x0.
    """
    q, _ = torch.linalg.qr(randn(n_clients, dim, dim, gen=gen))
    eig = torch.linspace(1.0, condition, dim).expand(n_clients, dim)
    A = q @ torch.diag_embed(eig) @ q.transpose(1, 2)
    A = 0.5 * (A + A.transpose(1, 2))
    optima = randn(dim, gen=gen) + heterogeneity * randn(n_clients, dim, gen=gen)
    return Quadratics(A, torch.einsum("nij,nj->ni", A, optima))
