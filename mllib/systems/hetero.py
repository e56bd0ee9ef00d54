"""A simulated two-unit system and duality-gap-based working sets (DuHL).

A fast unit (an accelerator with little memory) holds only ``budget`` columns of A; a slow
unit (the host, with much memory) holds all of them. Dünner, Parnell and Jaggi (2017,
"Efficient use of limited-memory accelerators for linear learning on heterogeneous
systems", Algorithm 1, DuHL) let the fast unit run coordinate descent on its working set
while the slow unit computes the duality gaps of the other coordinates, and keep on the
fast unit the coordinates with the largest gaps: those with the most left to gain.

One round t of the simulation:

1. the fast unit makes ``updates`` coordinate-descent steps on coordinates drawn uniformly
   from its working set S_t, then refreshes the gaps of S_t (cost ``budget`` updates);
2. at the same time the slow unit recomputes ``refresh`` gaps of coordinates outside S_t,
   from the state at the start of the round (stale, as in the paper);
3. the new working set S_{t+1}: the ``budget`` largest gaps ("gap"), a uniformly random set
   ("random"), or S_t unchanged ("fixed"); every column that enters is copied in.

The round takes max(fast work, slow work) + swaps * swap time (the ``CostModel``); the
slow unit refreshes ``refresh`` gaps per round (round-robin), so its gap memory is stale.
Simplification: the paper's units run asynchronously and the slow unit refreshes gaps
continuously; here the rounds are synchronous, which keeps the run deterministic.
"""
from dataclasses import dataclass

import torch

from . import glm

RULES = ("gap", "random", "fixed")


@dataclass(frozen=True)
class CostModel:
    """Times of one operation on each unit, in units of one fast-unit coordinate update.

    Attributes:
        fast_update: one coordinate update (or gap) on the fast unit.
        slow_update: one coordinate update (or gap) on the slow unit; slow_update / fast_update
            is the speed ratio of the two units.
        swap: copying one column of A into the fast unit's memory.
    """

    fast_update: float = 1.0
    slow_update: float = 10.0
    swap: float = 2.0

    def __post_init__(self):
        for name in ("fast_update", "slow_update", "swap"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be a time >= 0, got {getattr(self, name)}")


@dataclass
class Trace:
    """What a run did each round, enough to time it under any ``CostModel``.

    Attributes:
        rule: the selection rule. budget: the fast unit's size. d: the number of coordinates.
        fast_ops: (rounds + 1,) coordinate operations (updates and gaps) on the fast unit.
        slow_ops: (rounds + 1,) coordinate operations on the slow unit.
        swaps: (rounds + 1,) columns copied in: entry 0 is the first load.
        objective: (rounds + 1,) P(alpha) after each round (entry 0 at alpha = 0).
        gap: (rounds + 1,) the duality gap after each round.
    """

    rule: str
    budget: int
    d: int
    fast_ops: torch.Tensor
    slow_ops: torch.Tensor
    swaps: torch.Tensor
    objective: torch.Tensor
    gap: torch.Tensor


def check_budget(budget: int, d: int) -> None:
    """Raise ValueError unless 1 <= budget <= d."""
    if not 1 <= budget <= d:
        raise ValueError(f"budget must be between 1 and the number of coordinates d={d}, got {budget}")


def simulated_time(trace: Trace, cost: CostModel) -> torch.Tensor:
    """Cumulative simulated time after each round: (rounds + 1,), entry 0 the first load.

    Round time = max(fast_ops * fast_update, slow_ops * slow_update) + swaps * swap.
    """
    work = torch.maximum(trace.fast_ops * cost.fast_update, trace.slow_ops * cost.slow_update)  # (rounds + 1,)
    return (work + trace.swaps * cost.swap).cumsum(0)


def select(rule: str, gaps: torch.Tensor, current: torch.Tensor, budget: int, gen: torch.Generator) -> torch.Tensor:
    """The next working set: (budget,) sorted coordinate indices.

    "gap": the ``budget`` largest gaps (ties to the lower index); "random": uniform without
    replacement; "fixed": ``current``.
    """
    if rule == "gap":
        chosen = torch.sort(gaps, descending=True, stable=True).indices[:budget]
    elif rule == "random":
        chosen = torch.randperm(len(gaps), generator=gen)[:budget]
    elif rule == "fixed":
        chosen = current
    else:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    return torch.sort(chosen).values


def train_two_units(
    A: torch.Tensor, b: torch.Tensor, lam: float, *, budget: int, rule: str = "gap", rounds: int,
    updates: int | None = None, refresh: int | None = None, kind: str = "ridge", gen: torch.Generator,
) -> Trace:  # fmt: skip
    """Coordinate descent on a GLM with a fast unit that holds ``budget`` coordinates (DuHL).

    Args:
        A: (n_samples, d) data; b: (n_samples,) targets; lam > 0; kind: "ridge" or "lasso".
        budget: columns the fast unit holds, 1 <= budget <= d.
        rule: "gap" (DuHL), "random" or "fixed" working sets.
        rounds: >= 1. updates: coordinate steps of the fast unit per round (default ``budget``).
        refresh: gaps outside the working set the slow unit recomputes per round, in
            round-robin order (default all d - budget); only the "gap" rule computes them.
        gen: CPU generator for the first working set, the coordinate draws and "random".

    Returns:
        A ``Trace``; time it with ``simulated_time``. Entry 0 of each count is the set-up:
        the first load and, for "gap", one pass of gaps over all d coordinates.

    Raises:
        ValueError: for bad shapes, lam, kind or rule, a budget outside [1, d], rounds < 1.
    """
    glm.check_problem(A, b, lam, kind)
    d = A.shape[1]
    check_budget(budget, d)
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    updates = budget if updates is None else updates
    refresh = d - budget if refresh is None else min(refresh, d - budget)
    A, b = A.detach().double().cpu(), b.detach().double().cpu()
    bound = glm.lasso_bound(A, b, lam)
    norms = A.pow(2).sum(0)  # (d,)
    # State of the two units: coefficients, shared residual w = A alpha - b, gap memory z.
    alpha = torch.zeros(d, dtype=torch.float64)
    w = -b.clone()  # (n_samples,)
    gaps = glm.coordinate_gaps(A, b, alpha, lam, kind, bound)  # (d,) true gaps (monitoring)
    memory = gaps.clone()  # (d,) the gaps the slow unit knows
    pointer = 0  # round-robin position of the slow unit
    working = torch.sort(torch.randperm(d, generator=gen)[:budget]).values  # (budget,)
    uses_gaps = rule == "gap"
    fast_ops, slow_ops, swaps = [0], [d if uses_gaps else 0], [budget]
    objective, gap = [glm.primal(A, b, alpha, lam, kind)], [float(gaps.sum())]
    for _ in range(rounds):
        # 2. the slow unit refreshes ``refresh`` gaps outside S_t, from the start-of-round state
        outside = torch.ones(d, dtype=torch.bool)
        outside[working] = False
        order = torch.roll(torch.arange(d), -pointer)
        chosen = order[outside[order]][:refresh]
        memory[chosen] = gaps[chosen]
        if len(chosen):
            pointer = (int(chosen[-1]) + 1) % d
        # 1. the fast unit's coordinate descent on its working set, then its own gaps
        draws = working[torch.randint(budget, (updates,), generator=gen)].tolist()
        glm.coordinate_descent(A, alpha, w, draws, lam, kind, norms)
        gaps = glm.coordinate_gaps(A, b, alpha, lam, kind, bound)  # (d,)
        memory[working] = gaps[working]
        # 3. the next working set, and the columns copied in
        new = select(rule, memory, working, budget, gen)
        swaps.append(budget - int(torch.isin(new, working).sum()))
        working = new
        fast_ops.append(updates + (budget if uses_gaps else 0))
        slow_ops.append(len(chosen) if uses_gaps else 0)
        objective.append(glm.primal(A, b, alpha, lam, kind))
        gap.append(float(gaps.sum()))
    as_tensor = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    return Trace(rule, budget, d, as_tensor(fast_ops), as_tensor(slow_ops), as_tensor(swaps),
                 as_tensor(objective), as_tensor(gap))  # fmt: skip


def train_slow_alone(A: torch.Tensor, b: torch.Tensor, lam: float, *, rounds: int, updates: int,
                     kind: str = "ridge", gen: torch.Generator) -> Trace:  # fmt: skip
    """The baseline without an accelerator: the slow unit does coordinate descent on all of A.

    Each round makes ``updates`` steps on uniformly drawn coordinates; in the returned
    ``Trace`` they are slow-unit operations (fast_ops = 0, no swaps).
    """
    glm.check_problem(A, b, lam, kind)
    A, b = A.detach().double().cpu(), b.detach().double().cpu()
    d = A.shape[1]
    alpha, w, norms = torch.zeros(d, dtype=torch.float64), -b.clone(), A.pow(2).sum(0)
    objective = [glm.primal(A, b, alpha, lam, kind)]
    gap = [float(glm.coordinate_gaps(A, b, alpha, lam, kind).sum())]
    for _ in range(rounds):
        glm.coordinate_descent(A, alpha, w, torch.randint(d, (updates,), generator=gen).tolist(), lam, kind, norms)
        objective.append(glm.primal(A, b, alpha, lam, kind))
        gap.append(float(glm.coordinate_gaps(A, b, alpha, lam, kind).sum()))
    zeros = torch.zeros(rounds + 1, dtype=torch.float64)
    slow_ops = torch.full((rounds + 1,), float(updates), dtype=torch.float64)
    slow_ops[0] = 0
    return Trace("slow alone", d, d, zeros, slow_ops,
                 torch.zeros(rounds + 1, dtype=torch.float64), torch.tensor(objective, dtype=torch.float64),
                 torch.tensor(gap, dtype=torch.float64))  # fmt: skip


def time_to_reach(trace: Trace, cost: CostModel, optimum: float, target: float) -> float:
    """Simulated time when the suboptimality P - P* first drops to ``target`` (inf if never)."""
    times = simulated_time(trace, cost)
    reached = (trace.objective - optimum <= target).nonzero()
    return float(times[reached[0, 0]]) if len(reached) else float("inf")


def reach_table(runs: dict[int, dict[str, Trace]], cost: CostModel, optimum: float, target: float) -> dict:
    """``time_to_reach`` for every run of a sweep: {budget: {rule: simulated time or inf}}."""
    return {budget: {rule: time_to_reach(trace, cost, optimum, target) for rule, trace in by_rule.items()}
            for budget, by_rule in runs.items()}  # fmt: skip


def objective_at(trace: Trace, cost: CostModel, time: float) -> float:
    """P(alpha) at simulated ``time``: the last round finished by then (P(0) before the first).

    Raises:
        ValueError: if the run ends before ``time`` (run it for more rounds to compare there).
    """
    times = simulated_time(trace, cost)
    if time > times[-1]:
        raise ValueError(f"time={time:g} is after the run's end at {float(times[-1]):g}; run more rounds")
    done = (times <= time).nonzero()
    return float(trace.objective[done[-1, 0]]) if len(done) else float(trace.objective[0])
