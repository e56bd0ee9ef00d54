"""Figures of lecture 08, drawn from precomputed runs (the widgets only re-time and redraw)."""
import matplotlib.pyplot as plt

from ..engine import History
from .hetero import CostModel, series, simulated_time
from .sampling import records


def selection_figure(traces: dict[str, History], cost: CostModel, optimum: float, slow: History | None = None,
                     *, title: str = "") -> plt.Figure:  # fmt: skip
    """Relative suboptimality (P - P*) / (P(0) - P*) against simulated time, one line per rule.

    Args:
        traces: {rule: History} ``train_two_units`` runs of one budget. cost: the cost model
            that times them. optimum: P*. slow: an optional ``train_slow_alone`` run drawn dashed.

    Raises:
        ValueError: for no traces.
    """
    if not traces:
        raise ValueError("traces must hold at least one run to draw")
    relative = lambda t: (series(t, "objective") - optimum) / (t.objective[0] - optimum)  # noqa: E731
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for rule, trace in {**traces, **({"slow unit alone": slow} if slow is not None else {})}.items():
        ax.semilogy(simulated_time(trace, cost), relative(trace).clamp(min=1e-12), "--" if trace is slow else "-",
                    label=rule)  # fmt: skip
    ax.set_xlim(0, max(float(simulated_time(t, cost)[-1]) for t in traces.values()))  # the slow unit runs longer
    lowest = min(float(relative(t).min()) for t in traces.values())
    ax.set_ylim(max(lowest / 2, 1e-12), 2.0)
    budget = next(iter(traces.values())).algorithm.budget
    ax.set(xlabel="simulated time (fast-unit coordinate updates)", ylabel="(P - P*) / (P(0) - P*)",
           title=title or f"budget {budget} coordinates, slow/fast {cost.slow_update / cost.fast_update:g}x, "
                          f"swap {cost.swap:g}")  # fmt: skip
    ax.legend()
    return fig


def sampling_figure(traces: list[History]) -> plt.Figure:
    """Two panels: the gradient estimate's variance and the suboptimality against SGD steps.

    One line per ``sgd`` run: the geometric mean over its runs (one run's burst shows without
    hiding the other runs).
    """
    fig, (var, sub) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    geometric = lambda v: 10 ** v.log10().mean(0)  # noqa: E731  (runs, T) -> (T,)
    for trace in traces:
        scheme = trace.algorithm.scheme
        var.semilogy(trace.rounds, geometric(records(trace, "variance")), label=scheme)
        sub.semilogy(trace.rounds, geometric(records(trace, "suboptimality").clamp(min=1e-12)), label=scheme)
    runs = len(records(traces[0], "variance")) if traces else 0
    over = f" (geometric mean of {runs} runs)" if runs > 1 else ""
    var.set(xlabel="SGD step", ylabel="variance of the one-sample gradient", title=f"gradient estimate variance{over}")
    sub.set(xlabel="SGD step", ylabel="f(x) - f*", title=f"convergence{over}")
    var.legend()
    sub.legend()
    return fig


def selection_explorer(runs: dict[int, dict[str, History]], optimum: float, slow: History | None = None):
    """The widget's callback: (budget, slow_over_fast, swap) -> ``selection_figure`` of that budget.

    The runs are precomputed; moving a slider only re-times them under a new ``CostModel``.
    """

    def draw(budget: int, slow_over_fast: float, swap: float) -> plt.Figure:
        if budget not in runs:
            raise ValueError(f"budget must be one of the precomputed {sorted(runs)}, got {budget}")
        return selection_figure(runs[budget], CostModel(1.0, slow_over_fast, swap), optimum, slow)

    return draw
