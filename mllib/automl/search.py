"""Hyperparameter search on a table of learning curves: grid, random, successive halving, Hyperband.

Training a configuration is the expensive part, so the course trains a table of learning
curves once (configurations x epochs, every configuration a row of a client matrix, all
trained at once) and replays every search method on it over many seeds. A method that
"trains configuration c for r epochs" reads ``curves[c, r - 1]`` and pays r epochs.
"""
import math
from dataclasses import dataclass

import torch

from ..constraints import Generator, Indices, Instance, Integer, OneOf, Real, Reals, Rule, Tensor, constrain
from ..data import Dataset
from ..models import FlatModel, mlp


METHODS = ("random", "halving", "hyperband")
ETA = Integer(min=2)  # the fraction 1/eta of configurations survives a rung
CURVES = Tensor(2, description="a table of learning curves (n_configs, epochs)")
# A budget in epochs. A replay loops once per training it pays for, so a budget of 1e15 would
# run for ages: 10^4 epochs, over ten times lecture 10's largest (32 R = 864), replays in about
# a second (Optuna's in seconds), whatever the table.
MAX_BUDGET = 1e4
BUDGET, BUDGETS = Real(ge=1, le=MAX_BUDGET), Reals(ge=1, le=MAX_BUDGET)


@constrain(max_resource=Integer(min=1), eta=ETA)
def hyperband_schedule(max_resource: int, eta: int = 3) -> list[list[tuple[int, int]]]:
    """Hyperband's brackets: for each bracket s, the rungs (n_i configurations, r_i resource each).

    Li et al. 2018, arXiv:1603.06560, Algorithm 1: s_max = floor(log_eta R); for s = s_max, ..., 0:
    n = ceil((s_max + 1) / (s + 1) * eta^s), r = R eta^-s; rung i keeps
    n_i = floor(n eta^-i) configurations and trains each with r_i = r eta^i.

    Args:
        max_resource: R, the most resource (epochs) one configuration may get, >= 1.
        eta: the halving rate, an integer >= 2.

    Returns:
        A list of brackets, most aggressive first; each a list of (n_i, r_i) pairs.

    Raises:
        ValueError: if R < 1 or eta < 2.
    """
    s_max = 0
    while eta ** (s_max + 1) <= max_resource:  # integer floor(log_eta R), no rounding error
        s_max += 1
    brackets = []
    for s in range(s_max, -1, -1):
        n = math.ceil((s_max + 1) / (s + 1) * eta**s)
        r = max_resource / eta**s
        brackets.append([(n // eta**i, round(r * eta**i)) for i in range(s + 1)])
    return brackets


@constrain(curves=CURVES, configs=Indices(), min_resource=Integer(min=1), eta=ETA, max_resource=Integer(min=1) | None)
def successive_halving(curves: torch.Tensor, configs: torch.Tensor, min_resource: int, eta: int = 3,
                       max_resource: int | None = None) -> tuple[int, int]:  # fmt: skip
    """Successive halving (Jamieson and Talwalkar 2016, arXiv:1502.07943) replayed on a table of learning curves.

    Train all n configurations with r_0 = ``min_resource`` epochs, keep the best
    floor(n_i / eta), multiply the resource by eta, repeat until one is left or the
    resource reaches R. Ties go to the earlier configuration.

    Args:
        curves: (n_configs, R) validation accuracy after each epoch.
        configs: (n,) indices of the configurations to race.
        min_resource: r_0 >= 1 epochs in the first rung.
        eta: the halving rate, an integer >= 2.
        max_resource: R (default: the table's number of epochs).

    Returns:
        (index of the winner, epochs spent), counting each rung as n_i r_i epochs as in
        Li et al. 2018 (no resuming from the previous rung).

    Raises:
        ValueError: if eta < 2, min_resource < 1 or configs is empty.
    """
    R = curves.shape[1] if max_resource is None else max_resource
    alive, r, cost = configs, min_resource, 0
    while True:
        r = min(r, R)
        cost += len(alive) * r
        score = curves[alive, r - 1]  # (n_i,)
        keep = max(len(alive) // eta, 1)
        if r >= R or len(alive) == 1:
            return int(alive[_argmax(score)]), cost
        order = torch.sort(-score, stable=True).indices[:keep]
        alive, r = alive[order], r * eta


def _argmax(score: torch.Tensor) -> int:
    return int(torch.sort(-score, stable=True).indices[0])


@constrain(curves=CURVES, pool=Indices(), budget=BUDGET, gen=Generator())
def random_search(curves: torch.Tensor, pool: torch.Tensor, budget: int, gen: torch.Generator) -> list[tuple[int, int]]:
    """Random search (Bergstra and Bengio 2012) replayed on a table of learning curves.

    Repeat while the budget allows: draw a configuration c uniformly from ``pool`` (with
    replacement across draws), train it R epochs (its accuracy is curves[c, R - 1]), pay R.
    The incumbent after a budget B is the best of the floor(B / R) drawn (``best_found``).

    Args:
        curves: (n_configs, R) validation accuracies; pool: (m,) indices to draw from.
        budget: total epochs, in [1, 10^4]; gen: CPU generator for the draws.

    Returns:
        [(epochs spent so far, configuration trained to R)], one entry per draw.

    Raises:
        ValueError: for a budget outside [1, 10^4], an empty pool or a table that is not 2-D.
    """
    R = curves.shape[1]
    trace, spent = [], 0
    while spent + R <= budget:
        drawn = pool[torch.randperm(len(pool), generator=gen)[0]]  # 1. a configuration, uniformly
        spent += R  # 2. trained for the full R epochs
        trace.append((spent, int(drawn)))
    return trace


@constrain(method=OneOf(*METHODS), curves=CURVES, pool=Indices(), budget=BUDGET, gen=Generator(), eta=ETA)
def search_trace(method: str, curves: torch.Tensor, pool: torch.Tensor, budget: int, gen: torch.Generator,
                 eta: int = 3) -> list[tuple[int, int]]:  # fmt: skip
    """Replay one search method until it has spent ``budget`` epochs.

    - ``"random"`` (Bergstra and Bengio 2012): ``random_search``.
    - ``"halving"``: repeat Hyperband's most aggressive bracket (successive halving).
    - ``"hyperband"`` (Li et al. 2018, arXiv:1603.06560, Algorithm 1): cycle through all brackets.

    Each bracket draws its configurations uniformly without replacement from ``pool``.

    Args:
        method: "random", "halving" or "hyperband".
        curves: (n_configs, R) validation accuracies.
        pool: (m,) indices of the configurations random draws come from.
        budget: total epochs, in [1, 10^4].
        gen: CPU generator for the draws.
        eta: the halving rate.

    Returns:
        [(epochs spent so far, configuration trained to R)] after each completed full training.

    Raises:
        ValueError: for an unknown method, a budget outside [1, 10^4] or eta < 2.
    """
    if method == "random":
        return random_search(curves, pool, budget, gen)
    R = curves.shape[1]
    brackets = hyperband_schedule(R, eta)
    if method == "halving":
        brackets = brackets[:1]
    trace, spent, b = [], 0, 0
    while True:
        rungs = brackets[b % len(brackets)]
        n, r0 = rungs[0]
        drawn = pool[torch.randperm(len(pool), generator=gen)[: min(n, len(pool))]]
        winner, cost = successive_halving(curves, drawn, r0, eta, R)
        if spent + cost > budget:
            return trace
        spent += cost
        trace.append((spent, winner))
        b += 1


@constrain(curves=CURVES, trace=Instance(list, tuple), budgets=Reals(ge=0))
def best_found(curves: torch.Tensor, trace: list[tuple[int, int]], budgets: list[int]) -> torch.Tensor:
    """The incumbent's accuracy after R epochs at each budget.

    Args:
        curves: (n_configs, R) validation accuracies.
        trace: ``search_trace``'s [(epochs spent, configuration)].
        budgets: increasing budgets in epochs.

    Returns:
        (len(budgets),) the best final accuracy among the configurations completed within
        each budget; NaN before the first one.
    """
    out = torch.full((len(budgets),), float("nan"))
    final = curves[:, -1]
    for j, budget in enumerate(budgets):
        done = [c for spent, c in trace if spent <= budget]
        if done:
            out[j] = final[torch.tensor(done)].max()
    return out


@constrain(curves=CURVES, pool=Indices(), budgets=BUDGETS, seeds=Integer(min=1),
           methods=Instance(tuple, list, description="a tuple of method names"), eta=ETA)  # fmt: skip
def anytime_curves(curves, pool, budgets, seeds, methods=("random", "halving", "hyperband"), eta=3):
    """Best-found accuracy vs budget for each method, replayed with seeds 0..seeds-1.

    Args:
        curves: (n_configs, R) validation accuracies; pool: (m,) indices to draw from.
        budgets: budgets in epochs; seeds: number of replays >= 1; methods: see ``search_trace``.

    Returns:
        {method: (seeds, len(budgets))} as in ``best_found``.
    """
    out = {}
    for m in methods:
        rows = []
        for seed in range(seeds):
            gen = torch.Generator().manual_seed(seed)
            rows.append(best_found(curves, search_trace(m, curves, pool, max(budgets), gen, eta), budgets))
        out[m] = torch.stack(rows)
    return out


@dataclass
class CurveTable:
    """Learning curves of MLP configurations on a dataset.

    lr, width, weight_decay: (n,) each configuration's hyperparameters;
    accuracy: (n, epochs) validation accuracy after each epoch.
    """

    lr: torch.Tensor
    width: torch.Tensor
    weight_decay: torch.Tensor
    accuracy: torch.Tensor


@constrain(n=Integer(min=1), gen=Generator(), widths=Reals(ge=1), lr_range=Reals(gt=0), wd_range=Reals(gt=0))
def sample_configs(n: int, gen: torch.Generator, widths=(16, 32, 64), lr_range=(1e-2, 2.0),
                   wd_range=(1e-5, 1e-1)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """n random configurations (Bergstra and Bengio 2012): lr and weight decay log-uniform in
    their ranges, width uniform among ``widths``. Returns (lr (n,), width (n,), wd (n,))."""
    u = torch.rand(3, n, generator=gen)
    lr = lr_range[0] * (lr_range[1] / lr_range[0]) ** u[0]
    wd = wd_range[0] * (wd_range[1] / wd_range[0]) ** u[1]
    width = torch.tensor(widths)[(u[2] * len(widths)).long().clamp(max=len(widths) - 1)]
    return lr, width, wd


@constrain(lrs=Reals(gt=0), widths=Reals(ge=1), wds=Reals(ge=0))
def grid_configs(lrs, widths, wds) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The full grid lrs x widths x wds as three (n,) tensors."""
    g = torch.cartesian_prod(torch.tensor(lrs, dtype=torch.float), torch.tensor(widths, dtype=torch.float),
                             torch.tensor(wds, dtype=torch.float))  # fmt: skip
    return g[:, 0], g[:, 1].long(), g[:, 2]


@constrain(Rule("lr", lambda lr, width, weight_decay: len(lr) == len(width) == len(weight_decay),
                lambda lr, width, weight_decay: "lr, width and weight_decay must have one entry per configuration, "
                f"got {len(lr)}, {len(width)}, {len(weight_decay)}"),
           data=Instance(Dataset), lr=Tensor(1, finite=True), width=Indices(), weight_decay=Tensor(1, finite=True),
           epochs=Integer(min=1), batch_size=Integer(min=1), gen=Generator())  # fmt: skip
def learning_curves(data: Dataset, lr, width, weight_decay, *, epochs: int, batch_size: int,
                    gen: torch.Generator) -> CurveTable:  # fmt: skip
    """Train every configuration (a one-hidden-layer MLP) for ``epochs`` epochs, all at once.

    Configurations of the same width are the rows of one client matrix X (n_w, d_w); each
    step all rows see the same minibatch and take X <- X - lr * (grad + wd * X) with their
    own lr and wd. Validation accuracy on ``data.x_test`` after every epoch.

    Returns:
        A ``CurveTable`` with accuracy (n, epochs).

    Raises:
        ValueError: if epochs < 1 or the hyperparameter tensors differ in length.
    """
    device = data.x_train.device
    acc = torch.zeros(len(lr), epochs)
    n_train = len(data.y_train)
    order = [torch.randperm(n_train, generator=gen) for _ in range(epochs)]  # shared by all configurations
    for w in sorted(set(width.tolist())):
        rows = (width == w).nonzero().squeeze(1)
        model = FlatModel(mlp(data.n_features, data.n_classes, hidden=(w,)))
        X = torch.stack([model.init(gen, device) for _ in rows])  # (n_w, d_w)
        step = lr[rows].to(device).unsqueeze(1)  # (n_w, 1)
        decay = weight_decay[rows].to(device).unsqueeze(1)
        xv = data.x_test.unsqueeze(0).expand(len(rows), *data.x_test.shape)
        yv = data.y_test.unsqueeze(0).expand(len(rows), -1)
        for e in range(epochs):
            for idx in order[e].to(device).split(batch_size):
                xb = data.x_train[idx].unsqueeze(0).expand(len(rows), *data.x_train[idx].shape)
                yb = data.y_train[idx].unsqueeze(0).expand(len(rows), -1)
                X = X - step * (model.grad(X, xb, yb) + decay * X)
            X = torch.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)  # a diverged run predicts one class
            acc[rows, e] = model.accuracy(X, xv, yv).cpu()
    return CurveTable(lr, width, weight_decay, acc)


@constrain(Rule("U", lambda U: U.shape[1] == 2, "U must have 2 columns (two hyperparameters), got shape {U.shape}"),
           U=Tensor(2))
def bergstra_objective(U: torch.Tensor) -> torch.Tensor:
    """A function of two hyperparameters in [0, 1]^2 where only the first matters much.

    f(u) = exp(-((u_0 - 0.63) / 0.08)^2) + 0.05 * u_1: Bergstra and Bengio 2012, Figure 1.
    U: (n, 2) -> (n,).
    """
    return torch.exp(-(((U[:, 0] - 0.63) / 0.08) ** 2)) + 0.05 * U[:, 1]


@constrain(per_axis=Integer(min=1), dims=Integer(min=1))
def grid_points(per_axis: int, dims: int = 2) -> torch.Tensor:
    """The grid of per_axis^dims points at the cell centres of [0, 1]^dims: (per_axis^dims, dims)."""
    axis = (torch.arange(per_axis) + 0.5) / per_axis
    return torch.cartesian_prod(*[axis] * dims).view(-1, dims)
