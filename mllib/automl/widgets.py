"""Figures of lecture 10, also behind its widgets (each returns the figure it draws)."""
import matplotlib.pyplot as plt
import torch


def plot_anytime(curves: dict[str, torch.Tensor], budgets: list[int], budget: int | None = None,
                 title: str = "best-found accuracy vs budget", show: bool = False):  # fmt: skip
    """Mean (and interquartile band) over seeds of each method's best-found accuracy.

    With ``show`` the figure is shown and None returned (what a widget callback needs).

    curves: {method: (seeds, len(budgets))}; ``budget`` draws a vertical marker there.
    """
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in curves.items():
        q = torch.nanquantile(values, torch.tensor([0.25, 0.5, 0.75]), dim=0)
        ax.plot(budgets, values.nanmean(0), marker="o", label=name)
        ax.fill_between(budgets, q[0], q[2], alpha=0.2)
    if budget is not None:
        ax.axvline(budget, color="gray", linestyle="--")
    ax.set_xscale("log")
    ax.set_xlabel("budget (training epochs, all configurations)")
    ax.set_ylabel("validation accuracy of the incumbent")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return _finish(fig, show)


def plot_zero_order(values: dict[str, torch.Tensor], title: str = "zero-order vs first-order", show: bool = False):
    """Mean objective vs iteration, log scale: values {label: (steps + 1, runs)}."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, v in values.items():
        ax.plot(v.mean(1), label=name)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("f(x_t) (mean over runs)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return _finish(fig, show)


def plot_adaptation(curves: dict[str, torch.Tensor], title: str = "few-shot adaptation on held-out sinusoids",
                    show: bool = False):
    """Query loss vs adaptation steps: curves {method: (steps + 1,)}."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, c in curves.items():
        ax.plot(range(len(c)), c, marker=".", label=name)
    ax.set_yscale("log")
    ax.set_xlabel("gradient steps on the k support points")
    ax.set_ylabel("query loss (1/2 squared error)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return _finish(fig, show)


def _finish(fig, show: bool):
    if show:
        plt.show()
        return None
    return fig
