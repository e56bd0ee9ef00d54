"""Collaborative transfer learning, and collaboration with under- and over-parameterized models."""
from collections.abc import Sequence
from dataclasses import dataclass, replace

import matplotlib.pyplot as plt
import torch

from ..clients import CLIENTS, LOCAL_SGD, MODEL, evaluate, local_sgd
from ..constraints import Generator, Indices, Integer, Real, Rule, Tensor, constrain
from ..models import FlatModel
from ..partition import Clients
from ..runtime import randn
from .training import ONE_MODEL, _one_model, restrict

COUNTS = Tensor(1, integer=True, description="a list of integers")


@constrain(Rule("label_map", lambda clients, label_map: sorted(label_map.tolist()) == list(range(clients.n_classes)),
                lambda clients, label_map: f"label_map must be a permutation of 0..{clients.n_classes - 1}, got "
                f"{label_map.tolist()}"),
           clients=CLIENTS, label_map=Indices())  # fmt: skip
def relabel(clients: Clients, label_map: Sequence[int]) -> Clients:
    """Every client calls class k by the name label_map[k], in training and test data alike.

    Composes with a label map the clients already have (``mllib.with_tasks``).

    Raises:
        ValueError: if ``label_map`` is not a permutation of range(n_classes).
    """
    new = label_map.to(clients.y.device)
    old = clients.label_maps
    if old is None:
        old = torch.arange(clients.n_classes, device=new.device).expand(clients.n, -1)
    return replace(clients, y=new[clients.y], label_maps=new[old])


@dataclass(frozen=True)
class TransferCurve:
    """A client's accuracy with n samples: fine-tuned from a pre-trained model, or alone."""

    sample_counts: list[int]
    fine_tuned: torch.Tensor  # (k,)
    alone: torch.Tensor  # (k,)


@constrain(Rule("sample_counts", lambda target, sample_counts: bool((sample_counts >= 1).all())
                and int(sample_counts.max()) <= int(target.sizes[0]),
                lambda target, sample_counts: f"sample_counts must be in [1, {int(target.sizes[0])}], the samples of "
                f"client 0 of target, got {sample_counts.tolist()}"),
           _one_model("pretrained"), _one_model("x0"), model=MODEL, pretrained=ONE_MODEL, target=CLIENTS,
           sample_counts=COUNTS, **(LOCAL_SGD | dict(gen=Generator())), x0=ONE_MODEL | None)  # fmt: skip
def transfer_curve(
    model: FlatModel,
    pretrained: torch.Tensor,
    target: Clients,
    sample_counts: Sequence[int],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    gen: torch.Generator,
    x0: torch.Tensor | None = None,
) -> TransferCurve:
    """Fine-tune a pre-trained model on a client's first m samples, against training alone.

    For each m in ``sample_counts``, client 0 of ``target`` keeps m of its samples (nested
    random subsets: one shuffle drawn from ``gen``, then the first m); the
    same ``steps`` SGD steps run from ``pretrained`` (collaborative transfer: Yosinski et
    al. 2014; Yu et al. 2020) and from the fresh initialization ``x0``. All 2k runs are one
    client matrix. Accuracy is on the client's own test distribution.
    """
    counts = sample_counts.tolist()
    k = len(counts)
    x0 = model.init(gen, target.x.device) if x0 is None else x0
    target = restrict(target, [0])
    order = torch.randperm(int(target.sizes[0]), generator=gen).to(target.x.device)
    target = replace(target, x=target.x[order], y=target.y[order.to(target.y.device)])
    few = restrict(target, [0] * (2 * k), counts + counts)
    X = torch.cat([pretrained.expand(k, -1), x0.expand(k, -1)])  # (2k, d)
    trained = local_sgd(model, X, few, steps=steps, lr=lr, batch_size=batch_size, gen=gen)
    accuracy = evaluate(model, trained, few)
    return TransferCurve(counts, accuracy[:k], accuracy[k:])


@dataclass(frozen=True)
class LinearCollaboration:
    """Excess test risk ||w_hat_i - w_i||^2 (clients' mean) of three estimators, per dimension."""

    dims: list[int]
    local: torch.Tensor  # (k,) min-norm least squares on the own samples
    pooled: torch.Tensor  # (k,) min-norm least squares on everyone's samples
    personalized: torch.Tensor  # (k,) pooled, then the smallest change that fits the own samples


@constrain(Rule("dims", lambda dims: bool((dims >= 1).all()), lambda dims: f"dims must be >= 1, got {dims.tolist()}"),
           dims=COUNTS, n_clients=Integer(min=1), n_samples=Integer(min=1), bias=Real(ge=0), noise=Real(ge=0),
           gen=Generator())  # fmt: skip
def linear_collaboration(
    dims: Sequence[int], *, n_clients: int, n_samples: int, bias: float, noise: float, gen: torch.Generator
) -> LinearCollaboration:
    """Linear clients with fewer or more parameters than samples: alone, pooled, or both.

    Client i has w_i = w_0 + bias * z_i with w_0 ~ N(0, I/d), z_i ~ N(0, I/d), inputs
    x ~ N(0, I_d) and labels y = <w_i, x> + noise * N(0, 1); its excess test risk is
    ||w_hat - w_i||^2. Local: the min-norm least-squares fit of the own n_samples (it
    interpolates them when d > n_samples). Pooled: the same on all clients' samples.
    Personalized: w_pool + X_i^+ (y_i - X_i w_pool), the fit of the own samples closest to
    the pooled model, which gradient descent from w_pool reaches (the implicit bias of
    fine-tuning an over-parameterized linear model).
    """
    dims = dims.tolist()
    local, pooled, personal = [], [], []
    for d in dims:
        w = (randn(d, gen=gen) + bias * randn(n_clients, d, gen=gen)) / d**0.5  # (n, d)
        x = randn(n_clients, n_samples, d, gen=gen)  # (n, m, d)
        y = torch.einsum("nmd,nd->nm", x, w) + noise * randn(n_clients, n_samples, gen=gen)
        pinv = torch.linalg.pinv(x)  # (n, d, m)
        w_local = torch.einsum("ndm,nm->nd", pinv, y)
        w_pool = torch.linalg.pinv(x.reshape(-1, d)) @ y.reshape(-1)  # (d,)
        w_pers = w_pool + torch.einsum("ndm,nm->nd", pinv, y - x @ w_pool)
        for out, est in ((local, w_local), (pooled, w_pool), (personal, w_pers)):
            out.append(float((est - w).pow(2).sum(1).mean()))
    return LinearCollaboration(dims, torch.tensor(local), torch.tensor(pooled), torch.tensor(personal))


def plot_linear_collaboration(result: LinearCollaboration, n_samples: int) -> plt.Figure:
    """Excess risk of the three estimators against the number of parameters."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name in ("local", "pooled", "personalized"):
        ax.plot(result.dims, getattr(result, name), "o-", label=name)
    ax.axvline(n_samples, color="k", ls=":", label="parameters = own samples")
    ax.set(xscale="log", yscale="log", xlabel="parameters d", ylabel="excess test risk (squared error)")
    ax.set_title("linear clients: under- vs over-parameterized")
    ax.legend()
    return fig
