"""Pictures for lecture 05: aggregators of points in the plane, the attack x aggregator
heatmaps, and majority vs minority accuracy (medians and ranges over seeds)."""
import matplotlib.pyplot as plt
import numpy as np
import torch

from ..constraints import Rule, Tensor, constrain
from ..spread import Spread
from . import rules
from .training import Grid


@constrain(Rule("byzantine", lambda honest, byzantine: byzantine.shape[1] == honest.shape[1],
                "byzantine must have the d = {honest.shape[1]} columns of honest, got shape {byzantine.shape}"),
           honest=Tensor(2, description="points of shape (m, d)"),
           byzantine=Tensor(2, empty=True, description="points of shape (f, d)"))  # fmt: skip
def aggregate_points(honest: torch.Tensor, byzantine: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean, coordinate-wise median and geometric median of honest (m, 2) and Byzantine
    (f, 2) points in the plane, with f < (m + f)/2. Returns name -> (2,)."""
    X, f = torch.cat([honest, byzantine]).double(), len(byzantine)
    return {
        "mean": rules.mean(X, f),
        "coordinate-wise median": rules.coordinate_median(X, f),
        "geometric median": rules.geometric_median(X, f, iterations=100, nu=1e-9),
    }


def plot_points(honest: torch.Tensor, byzantine: torch.Tensor, limits: float = 12.0) -> plt.Figure:
    """Honest and Byzantine points and the three aggregates, for the lecture's slider."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(*honest.T.numpy(), c="C0", label="honest")
    ax.scatter(*byzantine.T.numpy(), c="C1", marker="x", s=80, label="Byzantine")
    for (name, point), marker, colour in zip(aggregate_points(honest, byzantine).items(), "osD", ["k", "C3", "C5"]):
        ax.scatter(*point.numpy(), marker=marker, s=140, facecolors="none", edgecolors=colour, linewidths=2, label=name)
    ax.set(xlim=(-limits, limits), ylim=(-4, 4), xlabel="coordinate 1", ylabel="coordinate 2",
           title=f"{len(honest)} honest points, {len(byzantine)} Byzantine")  # fmt: skip
    ax.legend(loc="lower left")
    return fig


def plot_grid(grid: Grid) -> plt.Figure:
    """One heatmap of test accuracy (attack x aggregator), the median over the grid's seeds,
    per worker momentum; a cell that did not run (NaN, see ``Grid.join``) says so."""
    fig, axes = plt.subplots(1, len(grid.momenta), figsize=(4.5 * len(grid.momenta) + 1, 4.2), layout="constrained",
                             squeeze=False)  # fmt: skip
    for ax, beta, acc in zip(axes[0], grid.momenta, grid.accuracy.median(0).values.numpy()):
        image = ax.imshow(acc, vmin=0, vmax=1, cmap="viridis")  # colour-blind safe, dark = low
        for (i, j), value in np.ndenumerate(acc):
            text, colour = ("not run", "k") if np.isnan(value) else (f"{value:.2f}", "w" if value < 0.6 else "k")
            ax.text(j, i, text, ha="center", va="center", color=colour)
        ax.set_xticks(range(len(grid.aggregators)), grid.aggregators, rotation=35, ha="right")
        ax.set_yticks(range(len(grid.attacks)), grid.attacks)
        ax.set(xlabel="aggregator", ylabel="attack", title=f"worker momentum beta = {beta:g}")
    label = "test accuracy" + (f" (median over {len(grid.seeds)} seeds)" if len(grid.seeds) > 1 else "")
    fig.colorbar(image, ax=axes[0].tolist(), label=label, shrink=0.8)
    return fig


def plot_groups(results: dict[str, dict[str, Spread]]) -> plt.Figure:
    """Bars of majority and minority test accuracy per aggregator: the median over the seeds,
    with the range [min, max] as error bars (``group_accuracies``'s result)."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    names = list(results)
    at = np.arange(len(names))
    for shift, group, label in [(-0.2, "majority", "majority clients"), (0.2, "minority", "minority clients (rotated digits)")]:
        spreads = [results[name][group] for name in names]
        medians = np.array([s.median for s in spreads])
        ranges = np.array([[s.median - s.low for s in spreads], [s.high - s.median for s in spreads]])
        ax.bar(at + shift, medians, width=0.4, yerr=ranges, capsize=3, label=label)
    ax.set_xticks(at, names)
    ax.set(xlabel="aggregator", ylabel="mean test accuracy", ylim=(0, 1.25), title="who the aggregator serves (median and range over seeds)")
    ax.legend(loc="upper center", ncol=2)
    return fig
