"""Lecture 00: why collaborate? Each client alone against one model trained on pooled data."""
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch

from .clients import evaluate, local_sgd
from .constraints import Generator, Instance, Integer, Real, Reals, constrain
from .data import Dataset
from .models import FlatModel
from .partition import Clients, split


@dataclass(frozen=True)
class AloneVsPooled:
    """One Dirichlet(alpha) split: each client's accuracy alone and with the pooled model."""

    alpha: float
    label_counts: torch.Tensor  # (n, C) training labels per client
    alone: torch.Tensor  # (n,) own model, on the client's test distribution
    pooled: torch.Tensor  # (n,) pooled model, on the client's test distribution
    alone_everywhere: torch.Tensor  # (n,) own model, on the whole test set


@constrain(data=Instance(Dataset), model=Instance(FlatModel), n_clients=Integer(min=1), alphas=Reals(gt=0),
           steps=Integer(min=1), lr=Real(gt=0), batch_size=Integer(min=1), gen=Generator())  # fmt: skip
def alone_vs_pooled(
    data: Dataset,
    model: FlatModel,
    *,
    n_clients: int,
    alphas: Sequence[float],
    steps: int,
    lr: float,
    batch_size: int,
    gen: torch.Generator,
) -> list[AloneVsPooled]:
    """Train every client alone and one model on the union of their data, for each alpha.

    All models start from the same initialization and take the same number of SGD steps
    of the same batch size; the pooled model is trained once, since the union of the
    clients' data is the whole training set whatever the split.

    Returns:
        One ``AloneVsPooled`` per alpha, in the order given.
    """
    x0 = model.init(gen, data.x_train.device)
    pool = split(data, 1, "iid", gen=gen)
    pooled_row = local_sgd(model, x0[None], pool, steps=steps, lr=lr, batch_size=batch_size, gen=gen)[0]
    results = []
    for alpha in alphas:
        clients = split(data, n_clients, "dirichlet", alpha=alpha, gen=gen)
        alone = local_sgd(
            model, x0.expand(n_clients, -1), clients, steps=steps, lr=lr, batch_size=batch_size, gen=gen
        )
        everywhere = model.accuracy(alone, data.x_test.expand(n_clients, *data.x_test.shape), data.y_test.expand(n_clients, -1))
        results.append(
            AloneVsPooled(alpha, clients.label_counts(), evaluate(model, alone, clients), evaluate(model, pooled_row, clients), everywhere)
        )
    return results


def plot_label_counts(clients: Clients, ax: plt.Axes | None = None, *, show: int = 20) -> plt.Axes:
    """Stacked bars: how many samples of each label the first ``show`` clients hold."""
    ax = ax or plt.figure(figsize=(6, 3)).gca()
    _stacked_labels(clients.label_counts()[:show], ax)
    return ax


def plot_alone_vs_pooled(result: AloneVsPooled, *, show: int = 20) -> plt.Figure:
    """Left: the first ``show`` clients' labels; right: their accuracy alone and pooled."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
    # A fixed layout (a slider redraws fast); wspace leaves room for the label legend between the panels.
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.15, top=0.82, wspace=0.55)
    _stacked_labels(result.label_counts[:show], left)
    shown = min(show, len(result.alone))
    clients = np.arange(shown)
    right.bar(clients - 0.2, result.alone[:shown].cpu().numpy(), width=0.4, label="alone")
    right.bar(clients + 0.2, result.pooled[:shown].cpu().numpy(), width=0.4, label="pooled data")
    right.plot(clients, result.alone_everywhere[:shown].cpu().numpy(), "k.", label="alone, on all digits")
    right.set(xlabel="client", ylabel="test accuracy", ylim=(0, 1.05), xticks=_client_ticks(shown))
    right.set_title("accuracy on each client's own test distribution")
    right.legend(loc="lower left", framealpha=0.9)
    fig.suptitle(f"Dirichlet(alpha={result.alpha:g}) split: the first {len(clients)} of {len(result.alone)} clients")
    return fig


def _stacked_labels(counts: torch.Tensor, ax: plt.Axes) -> None:
    n, n_classes = counts.shape
    counts = counts.cpu().numpy()
    bottom = np.zeros(n)
    for label in range(n_classes):  # label k in colour Ck of the (colour-blind-safe) cycle
        ax.bar(np.arange(n), counts[:, label], bottom=bottom, label=str(label))
        bottom += counts[:, label]
    ax.set(xlabel="client", ylabel="training samples", title="labels held by each client", xticks=_client_ticks(n))
    ax.legend(title="label", ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _client_ticks(n: int) -> range:
    """At most 10 client numbers on an axis: more would overlap at the course's 11 pt."""
    return range(0, n, max(1, -(-n // 10)))
