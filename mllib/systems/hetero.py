"""A simulated two-unit system and duality-gap-based working sets (DuHL).

A fast unit (an accelerator with little memory) holds only ``budget`` columns of A; a slow
unit (the host, with much memory) holds all of them. Dünner, Parnell and Jaggi (2017,
"Efficient use of limited-memory accelerators for linear learning on heterogeneous
systems", arXiv:1708.05357, Algorithm 1, DuHL) let the fast unit run coordinate descent on its working set
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

``TwoUnits`` (and the baseline ``SlowAlone``) hold the units' state and advance one round at a
time, an ``engine.Rounds``; ``train_two_units`` and ``train_slow_alone`` run them on the round
engine and return its ``History`` (``METRICS``), which ``simulated_time`` times.
"""
from dataclasses import dataclass

import torch

from .. import engine
from ..constraints import Generator, Instance, Integer, OneOf, Real, Rule, constrain
from ..engine import History, Rounds
from . import glm

RULES = ("gap", "random", "fixed")
TIME = Real(ge=0)


@constrain(fast_update=TIME, slow_update=TIME, swap=TIME)
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


# A run of coordinate descent: the problem, the generator of its draws; the fast unit's budget of
# columns, at most the d columns of A; a run's record and the cost model that times it.
RUN = dict(**glm.PROBLEM, gen=Generator())
BUDGET = Rule("budget", lambda A, budget: 1 <= budget <= A.shape[1],
              "budget must be between 1 and the number of coordinates d={A.shape[1]}, got {budget}")
TWO_UNITS = dict(budget=Integer(), rule=OneOf(*RULES), updates=Integer(min=0) | None,
                 refresh=Integer(min=0) | None)  # fmt: skip
TIMED = dict(history=Instance(History), cost=Instance(CostModel))
REACH = dict(cost=Instance(CostModel), optimum=Real(), target=Real())


# The metrics of a run, recorded by ``engine.run`` before the first round (the set-up) and after
# each round: what the round did (coordinate operations on each unit, columns copied in) and
# where it left the problem (the objective P(alpha), the total duality gap).
METRICS = {"fast_ops": lambda units: units.fast_ops, "slow_ops": lambda units: units.slow_ops,
           "swaps": lambda units: units.swaps, "objective": lambda units: units.objective(),
           "gap": lambda units: units.gap()}  # fmt: skip


@constrain(history=Instance(History), metric=OneOf(*METRICS))
def series(history: History, metric: str) -> torch.Tensor:
    """One metric of a two-unit run as a float64 tensor (rounds + 1,), entry 0 the set-up."""
    return torch.tensor(history[metric], dtype=torch.float64)


@constrain(**TIMED)
def simulated_time(history: History, cost: CostModel) -> torch.Tensor:
    """Cumulative simulated time after each round: (rounds + 1,), entry 0 the first load.

    Round time = max(fast_ops * fast_update, slow_ops * slow_update) + swaps * swap.

    Args:
        history: a run of ``train_two_units`` or ``train_slow_alone``.
        cost: the ``CostModel`` that times it.
    """
    fast, slow = series(history, "fast_ops") * cost.fast_update, series(history, "slow_ops") * cost.slow_update
    work = torch.maximum(fast, slow)  # (rounds + 1,)
    return (work + series(history, "swaps") * cost.swap).cumsum(0)


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


class _Coordinates(Rounds):
    """Coordinate descent on a GLM round after round; a subclass's ``round`` says which unit does what.

    State: ``alpha`` (d,) the coefficients, ``w`` (n_samples,) the shared residual A alpha - b;
    ``fast_ops``, ``slow_ops``, ``swaps``: what the last round did (before the first: the set-up).
    """

    def __init__(self, A: torch.Tensor, b: torch.Tensor, lam: float, kind: str):  # checked by the subclass
        self.A, self.b = A.detach().double().cpu(), b.detach().double().cpu()
        self.lam, self.kind, self.d = lam, kind, A.shape[1]
        self.norms = self.A.pow(2).sum(0)  # (d,)
        # State
        self.alpha = torch.zeros(self.d, dtype=torch.float64)
        self.w = -self.b.clone()  # (n_samples,)

    @property
    def model(self) -> torch.Tensor:
        return self.alpha

    def objective(self) -> float:
        """P(alpha) now."""
        return glm.primal.__wrapped__(self.A, self.b, self.alpha, self.lam, self.kind)


class TwoUnits(_Coordinates):
    """DuHL's two units (Dünner, Parnell and Jaggi 2017, arXiv:1708.05357, Algorithm 1), one round at a time.

    Round t (see the module): 2. the slow unit refreshes ``refresh`` remembered gaps outside
    S_t, round-robin, from the start-of-round state; 1. the fast unit makes ``updates``
    coordinate steps on coordinates drawn uniformly from S_t, then refreshes the gaps of S_t;
    3. S_{t+1} <- ``select(rule, ...)``, and the columns that enter are copied in.

    Args: as ``train_two_units`` (``updates`` None: ``budget``; ``refresh`` None: d - budget).

    Raises:
        ValueError: for bad shapes, lam, kind or rule, or a budget outside [1, d].

    State (besides ``_Coordinates``'): ``gaps`` (d,) the true gaps (monitoring), ``memory`` (d,)
    the gaps the slow unit knows, ``pointer`` its round-robin position, ``working`` (budget,) S_t.
    """

    @constrain(glm.TARGETS, BUDGET, **RUN, **TWO_UNITS)
    def __init__(self, A: torch.Tensor, b: torch.Tensor, lam: float, *, budget: int, rule: str = "gap",
                 updates: int | None = None, refresh: int | None = None, kind: str = "ridge",
                 gen: torch.Generator):  # fmt: skip
        super().__init__(A, b, lam, kind)
        d = self.d
        updates = budget if updates is None else updates
        refresh = d - budget if refresh is None else min(refresh, d - budget)
        self.budget, self.rule, self.updates, self.refresh, self.gen = budget, rule, updates, refresh, gen
        self.bound = glm.lasso_bound(self.A, self.b, lam)
        self.uses_gaps = rule == "gap"
        # State
        self.gaps = glm.coordinate_gaps(self.A, self.b, self.alpha, lam, kind, self.bound)  # (d,)
        self.memory = self.gaps.clone()  # (d,)
        self.pointer = 0
        self.working = torch.sort(torch.randperm(d, generator=gen)[:budget]).values  # (budget,)
        # the set-up: the first load and, for "gap", one pass of gaps over all d coordinates
        self.fast_ops, self.slow_ops, self.swaps = 0, d if self.uses_gaps else 0, budget

    def round(self, r: int) -> None:
        A, b, d, budget = self.A, self.b, self.d, self.budget
        # 2. the slow unit refreshes ``refresh`` gaps outside S_t, from the start-of-round state
        outside = torch.ones(d, dtype=torch.bool)
        outside[self.working] = False
        order = torch.roll(torch.arange(d), -self.pointer)
        chosen = order[outside[order]][: self.refresh]
        self.memory[chosen] = self.gaps[chosen]
        if len(chosen):
            self.pointer = (int(chosen[-1]) + 1) % d
        # 1. the fast unit's coordinate descent on its working set, then its own gaps
        draws = self.working[torch.randint(budget, (self.updates,), generator=self.gen)].tolist()
        glm.coordinate_descent.__wrapped__(A, self.alpha, self.w, draws, self.lam, self.kind, self.norms)
        self.gaps = glm.coordinate_gaps.__wrapped__(A, b, self.alpha, self.lam, self.kind, self.bound)  # (d,)
        self.memory[self.working] = self.gaps[self.working]
        # 3. the next working set, and the columns copied in
        new = select(self.rule, self.memory, self.working, budget, self.gen)
        self.swaps = budget - int(torch.isin(new, self.working).sum())
        self.working = new
        self.fast_ops = self.updates + (budget if self.uses_gaps else 0)
        self.slow_ops = len(chosen) if self.uses_gaps else 0

    def gap(self) -> float:
        """The total duality gap now."""
        return float(self.gaps.sum())


class SlowAlone(_Coordinates):
    """The slow unit alone: each round ``updates`` coordinate steps on uniformly drawn coordinates
    of all of A (slow-unit operations; no fast unit, no swaps). Args: as ``train_slow_alone``."""

    @constrain(glm.TARGETS, **RUN, updates=Integer(min=0))
    def __init__(self, A: torch.Tensor, b: torch.Tensor, lam: float, *, updates: int, kind: str,
                 gen: torch.Generator):  # fmt: skip
        super().__init__(A, b, lam, kind)
        self.updates, self.gen, self.rule, self.budget = updates, gen, "slow alone", self.d
        self.fast_ops, self.slow_ops, self.swaps = 0, 0, 0  # State: nothing to set up

    def round(self, r: int) -> None:
        draws = torch.randint(self.d, (self.updates,), generator=self.gen).tolist()
        glm.coordinate_descent.__wrapped__(self.A, self.alpha, self.w, draws, self.lam, self.kind, self.norms)
        self.slow_ops = self.updates

    def gap(self) -> float:
        """The total duality gap now."""
        return float(glm.coordinate_gaps.__wrapped__(self.A, self.b, self.alpha, self.lam, self.kind).sum())


@constrain(glm.TARGETS, BUDGET, **RUN, **TWO_UNITS, rounds=Integer(min=1))
def train_two_units(
    A: torch.Tensor, b: torch.Tensor, lam: float, *, budget: int, rule: str = "gap", rounds: int,
    updates: int | None = None, refresh: int | None = None, kind: str = "ridge", gen: torch.Generator,
) -> History:  # fmt: skip
    """Coordinate descent on a GLM with a fast unit that holds ``budget`` coordinates (DuHL),
    ``rounds`` rounds of ``TwoUnits`` on the round engine.

    Args:
        A: (n_samples, d) data; b: (n_samples,) targets; lam > 0; kind: "ridge" or "lasso".
        budget: columns the fast unit holds, 1 <= budget <= d.
        rule: "gap" (DuHL), "random" or "fixed" working sets.
        rounds: >= 1. updates: coordinate steps of the fast unit per round (default ``budget``).
        refresh: gaps outside the working set the slow unit recomputes per round, in
            round-robin order (default all d - budget); only the "gap" rule computes them.
        gen: CPU generator for the first working set, the coordinate draws and "random".

    Returns:
        The ``engine.History`` of ``METRICS``, recorded at round 0 and after every round:
        fast_ops, slow_ops (coordinate operations, updates and gaps, on each unit), swaps
        (columns copied in), objective (P(alpha)), gap (the total duality gap). Entry 0 is the
        set-up: the first load and, for "gap", one pass of gaps over all d coordinates. Time it
        with ``simulated_time``; ``history.model`` is alpha (d,), ``history.algorithm`` the
        ``TwoUnits`` (its rule, budget, d).

    Raises:
        ValueError: for bad shapes, lam, kind or rule, a budget outside [1, d], rounds < 1.
    """
    units = TwoUnits(A, b, lam, budget=budget, rule=rule, updates=updates, refresh=refresh, kind=kind, gen=gen)
    return engine.run(units, rounds, metrics=METRICS, record_start=True)


@constrain(glm.TARGETS, **RUN, rounds=Integer(min=1), updates=Integer(min=0))
def train_slow_alone(A: torch.Tensor, b: torch.Tensor, lam: float, *, rounds: int, updates: int,
                     kind: str = "ridge", gen: torch.Generator) -> History:  # fmt: skip
    """The baseline without an accelerator: ``rounds`` rounds of ``SlowAlone``, coordinate descent
    on all of A by the slow unit, on the round engine.

    Returns:
        The ``engine.History`` of ``METRICS`` as ``train_two_units`` records them: each round's
        ``updates`` steps are slow-unit operations (fast_ops = 0, no swaps; entry 0 all zero).

    Raises:
        ValueError: for bad shapes, lam or kind, rounds < 1.
    """
    slow = SlowAlone(A, b, lam, updates=updates, kind=kind, gen=gen)
    return engine.run(slow, rounds, metrics=METRICS, record_start=True)


@constrain(history=Instance(History), **REACH)
def time_to_reach(history: History, cost: CostModel, optimum: float, target: float) -> float:
    """Simulated time when the suboptimality P - P* first drops to ``target`` (inf if never).

    Args:
        history: a two-unit or slow-unit run. cost: the ``CostModel``. optimum: P*.
    """
    times = simulated_time(history, cost)
    reached = (series(history, "objective") - optimum <= target).nonzero()
    return float(times[reached[0, 0]]) if len(reached) else float("inf")


@constrain(runs=Instance(dict, description="a dict {budget: {rule: History}}"), **REACH)
def reach_table(runs: dict[int, dict[str, History]], cost: CostModel, optimum: float, target: float) -> dict:
    """``time_to_reach`` for every run of a sweep: {budget: {rule: simulated time or inf}}."""
    return {budget: {rule: time_to_reach(history, cost, optimum, target) for rule, history in by_rule.items()}
            for budget, by_rule in runs.items()}  # fmt: skip


@constrain(**TIMED, time=Real(ge=0))
def objective_at(history: History, cost: CostModel, time: float) -> float:
    """P(alpha) at simulated ``time``: the last round finished by then (P(0) before the first).

    Raises:
        ValueError: if the run ends before ``time`` (run it for more rounds to compare there).
    """
    times, objective = simulated_time(history, cost), series(history, "objective")
    if time > times[-1]:
        raise ValueError(f"time={time:g} is after the run's end at {float(times[-1]):g}; run more rounds")
    done = (times <= time).nonzero()
    return float(objective[done[-1, 0]]) if len(done) else float(objective[0])
