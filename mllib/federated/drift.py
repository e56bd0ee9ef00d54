"""Client drift on 1-D quadratics: trajectories of FedAvg, SCAFFOLD and MIME, and their plot (the widget)."""
import matplotlib.pyplot as plt
import torch

from ..constraints import Integer, Instance, Rule, Tensor, constrain
from ..data import Quadratics
from .algorithms import MOMENTUM, FedAvg, Mime, Scaffold, run
from .problems import LOCAL, QuadraticProblem, _one_model


@constrain(Rule("curvature", lambda curvature: bool((curvature > 0).all()),
                lambda curvature: f"curvature must be > 0 for every client, got {curvature.tolist()}"),
           Rule("centre", lambda curvature, centre: len(centre) == len(curvature),
                "centre must have shape (n,) or (n, d) for the n = {curvature.shape[0]} clients of curvature, got "
                "{centre.shape}"),
           curvature=Tensor(1, finite=True), centre=Tensor((1, 2), finite=True))  # fmt: skip
def scalar_quadratics(curvature: torch.Tensor, centre: torch.Tensor) -> QuadraticProblem:
    """n clients f_i(x) = a_i / 2 ||x - b_i||^2, equal weights; one column per independent 1-D problem.

    Args:
        curvature: (n,) a_i > 0; centre: (n,) or (n, d) b_i, client i's optimum. With d columns the
            coordinates never interact: d separate 1-D problems (e.g. d heterogeneity levels) at once.

    Raises:
        ValueError: for a non-positive curvature or shapes that do not match.
    """
    centre = centre.double().view(len(centre), -1)
    a = curvature.double()
    eye = torch.eye(centre.shape[1], dtype=torch.double)
    return QuadraticProblem(Quadratics(a.view(-1, 1, 1) * eye, a[:, None] * centre))


@constrain(_one_model("x0"), problem=Instance(QuadraticProblem), **LOCAL, rounds=Integer(min=1), x0=Tensor(1),
           momentum=MOMENTUM)  # fmt: skip
def drift_trajectories(problem: QuadraticProblem, *, local_steps: int, lr: float, rounds: int,
                       x0: torch.Tensor, momentum: float = 0.5) -> dict[str, torch.Tensor]:  # fmt: skip
    """The server models of FedAvg, SCAFFOLD and MIME, full participation, exact gradients.

    Args:
        problem: quadratic clients (``scalar_quadratics`` or any ``QuadraticProblem``).
        local_steps, lr: K and the local step size, shared by the three algorithms.
        rounds: rounds to run; x0: (d,) the initial server model.
        momentum: MIME's beta.

    Returns:
        {name: (rounds + 1, d) server model after each round, row 0 = x0}.
    """
    algorithms = [FedAvg(local_steps=local_steps, lr=lr), Scaffold(local_steps=local_steps, lr=lr),
                  Mime(local_steps=local_steps, lr=lr, momentum=momentum)]  # fmt: skip
    gen = torch.Generator()  # exact gradients: nothing is drawn but the (full) participation
    out = {}
    for algorithm in algorithms:
        history = run(algorithm, problem, x0, rounds=rounds, clients_per_round=problem.n, gen=gen,
                      metrics={"x": torch.clone})  # fmt: skip
        out[algorithm.name] = torch.stack(history["x"])
    return out


def plot_drift(trajectories: dict[str, torch.Tensor], *, optimum: float, fixed_point: float, column: int = 0,
               title: str = "") -> plt.Figure:  # fmt: skip
    """Each algorithm's server model (coordinate ``column``) against the round, with the
    optimum and FedAvg's fixed point as horizontal lines.

    Args:
        trajectories: {name: (rounds + 1, d)} as ``drift_trajectories`` returns.
        optimum, fixed_point: the values of x* and of FedAvg's limit in that coordinate.

    Returns:
        The figure (one axis).
    """
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.15, top=0.9)  # fixed layout: a slider redraws fast
    for name, xs in trajectories.items():
        ax.plot(xs[:, column].cpu().numpy(), label=name, lw=2 if name == "FedAvg" else 1.3)
    ax.axhline(optimum, color="k", ls="--", lw=1, label="optimum x*")
    ax.axhline(fixed_point, color="C0", ls=":", lw=1, label="FedAvg fixed point")
    ax.set(xlabel="communication round", ylabel="server model x", title=title or "client drift on 1-D quadratics")
    ax.legend(loc="lower right")
    return fig
