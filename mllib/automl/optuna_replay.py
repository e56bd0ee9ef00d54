"""Optuna, the production tool, replayed on the same table of learning curves as ``search``.

An Optuna study with a random sampler and ``optuna.pruners.HyperbandPruner`` (Li et al. 2018, arXiv:1603.06560,
in Optuna's asynchronous form: each bracket is an asynchronous successive-halving pruner that
stops a trial whose intermediate value is not in the top 1/eta of those seen at its rung) picks
configurations of the table's pool. Each trial "trains" its configuration by reporting
``curves[c, epoch - 1]`` after every epoch until it is pruned or reaches R epochs.

Cost accounting differs from ``search.search_trace``: an Optuna trial continues training the
model it has (a pruned trial pays the epochs it reported, a completed one R), while the
course's replay counts each rung of successive halving as n_i r_i epochs, retraining from
scratch as in the paper.
"""
import optuna
import torch

from ..constraints import Indices, Instance, Integer, constrain
from .search import BUDGET, BUDGETS, CURVES, ETA, best_found


@constrain(curves=CURVES, pool=Indices(), budget=BUDGET, seed=Integer(min=0), eta=ETA,
           pruner=Instance(optuna.pruners.BasePruner) | None)  # fmt: skip
def optuna_trace(curves: torch.Tensor, pool: torch.Tensor, budget: int, seed: int, eta: int = 3,
                 pruner: optuna.pruners.BasePruner | None = None) -> tuple[list[tuple[int, int]], optuna.Study]:  # fmt: skip
    """Run an Optuna study on a table of learning curves until it has spent ``budget`` epochs.

    The sampler is ``optuna.samplers.RandomSampler(seed)``; each trial draws
    ``trial.suggest_int("config", 0, len(pool) - 1)`` and replays the curve of
    ``pool[config]``: ``trial.report(curves[c, epoch - 1], epoch)`` for epoch = 1, ..., R,
    raising no exception but telling the study ``PRUNED`` when ``trial.should_prune()``.
    The study is driven with ask and tell, one epoch at a time, so that it stops exactly
    at the budget; a trial cut short by the budget counts as neither pruned nor completed.

    Args:
        curves: (n_configs, R) validation accuracies.
        pool: (m,) indices of the configurations the sampler draws from.
        budget: total epochs, in [1, 10^4] (``search.MAX_BUDGET``).
        seed: the random sampler's seed (the study's name, which places trials in Optuna's
            Hyperband brackets, is derived from it too, so a replay is reproducible).
        eta: the halving rate, an integer >= 2.
        pruner: the default is ``HyperbandPruner(min_resource=1, max_resource=R, reduction_factor=eta)``.

    Returns:
        ([(epochs spent so far, configuration trained to R)] after each completed trial, as
        ``search.search_trace`` returns, and the Optuna study).

    Raises:
        ValueError: for a budget outside [1, 10^4] or eta < 2.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # Optuna logs every trial to stderr
    R = curves.shape[1]
    if pruner is None:
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=R, reduction_factor=eta)
    study = optuna.create_study(study_name=f"replay-{seed}", direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=seed), pruner=pruner)  # fmt: skip
    trace, spent = [], 0
    while spent < budget:
        trial = study.ask()
        c = int(pool[trial.suggest_int("config", 0, len(pool) - 1)])
        for epoch in range(1, R + 1):
            if spent == budget:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)  # cut short by the budget
                return trace, study
            spent += 1
            trial.report(float(curves[c, epoch - 1]), epoch)
            if epoch < R and trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                break
        else:
            study.tell(trial, float(curves[c, R - 1]))
            trace.append((spent, c))
    return trace, study


@constrain(curves=CURVES, pool=Indices(), budgets=BUDGETS, seeds=Integer(min=1), eta=ETA)
def optuna_anytime(curves: torch.Tensor, pool: torch.Tensor, budgets: list[int], seeds: int,
                   eta: int = 3) -> torch.Tensor:  # fmt: skip
    """Best-found accuracy vs budget of Optuna (random sampler + HyperbandPruner), seeds 0..seeds-1.

    Returns:
        (seeds, len(budgets)) as ``search.anytime_curves`` returns for one method.
    """
    rows = [best_found(curves, optuna_trace(curves, pool, max(budgets), seed, eta)[0], budgets) for seed in range(seeds)]
    return torch.stack(rows)
