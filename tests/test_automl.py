import math

import matplotlib.pyplot as plt
import optuna
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mllib
from mllib import automl
from mllib.automl import meta, nas, optuna_replay, search, zeroorder
from mllib.checks import CheckFailed
from mllib.checks import automl as check
from selfchecks import assert_rejects

# Li et al. 2018, Table 1: R = 81, eta = 3, (n_i, r_i) per bracket s = 4..0.
HYPERBAND_81_3 = [
    [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
    [(34, 3), (11, 9), (3, 27), (1, 81)],
    [(15, 9), (5, 27), (1, 81)],
    [(8, 27), (2, 81)],
    [(5, 81)],
]


def test_hyperband_brackets_match_the_paper():
    assert automl.hyperband_schedule(81, 3) == HYPERBAND_81_3


@pytest.mark.parametrize("call", [
    lambda: automl.hyperband_schedule(81, 1),
    lambda: automl.hyperband_schedule(0, 3),
    lambda: automl.successive_halving(torch.rand(4, 9), torch.arange(4), 0, 3),
    lambda: automl.successive_halving(torch.rand(4, 9), torch.arange(4), 1, 1),
    lambda: automl.search_trace("random", torch.rand(4, 9), torch.arange(4), 0, torch.Generator()),
    lambda: optuna_replay.optuna_trace(torch.rand(4, 9), torch.arange(4), 0, seed=0),
    lambda: optuna_replay.optuna_trace(torch.rand(4, 9), torch.arange(4), 10, seed=0, eta=1),
    lambda: automl.gaussian_smoothing_gradient(lambda x: x.sum(1), torch.zeros(1, 2), 0.0, torch.Generator()),
    lambda: automl.gaussian_smoothing_gradient(lambda x: x.sum(1), torch.zeros(1, 2), -1.0, torch.Generator()),
    lambda: automl.finite_difference_gradient(lambda x: x.sum(1), torch.zeros(1, 2), 0.0),
])  # fmt: skip
def test_bad_input_raises_a_clear_error(call):
    with pytest.raises(ValueError, match=r"eta must be an integer >= 2|must be an integer >= 1|must be a finite number >= 1|budget must be a finite number in \[1, 10000\]|mu must be a finite number > 0|h must be a finite number > 0"):
        call()


@given(st.integers(1, 1000), st.integers(2, 5))
def test_every_hyperband_bracket_costs_about_s_max_plus_one_times_R(R, eta):
    brackets = automl.hyperband_schedule(R, eta)
    s_max = len(brackets) - 1
    assert eta**s_max <= R < eta ** (s_max + 1)
    for bracket in brackets:
        assert sum(n * r for n, r in bracket) <= (s_max + 1) * R * 1.5  # Li et al. 2018: about (s_max + 1) R
        assert all(a[0] >= b[0] and a[1] <= b[1] for a, b in zip(bracket, bracket[1:]))  # fewer, longer runs


def test_random_search_trains_one_drawn_configuration_per_R_epochs():
    curves, pool = torch.rand(10, 9, generator=torch.Generator().manual_seed(0)), torch.arange(3, 10)
    trace = automl.random_search(curves, pool, 40, torch.Generator().manual_seed(1))
    assert [spent for spent, _ in trace] == [9, 18, 27, 36]
    assert all(c in pool.tolist() for _, c in trace)
    assert trace == automl.search_trace("random", curves, pool, 40, torch.Generator().manual_seed(1))


def test_hyperband_beats_random_search_on_a_small_budget_when_good_configurations_are_rare():
    quality = torch.cat([torch.rand(5) * 0.1 + 0.9, torch.rand(75) * 0.5])  # 5 good configurations of 80
    curves = quality[:, None] * (1 - torch.exp(-torch.arange(1, 28).float() / 4))
    res = automl.anytime_curves(curves, torch.arange(80), [4 * 27], seeds=30)
    assert res["hyperband"].nanmean() > res["random"].nanmean() + 0.1


@given(st.integers(2, 60), st.integers(2, 4), st.integers(0, 10**6))
def test_successive_halving_keeps_the_best_configuration(n, eta, seed):
    gen = torch.Generator().manual_seed(seed)
    quality = torch.randperm(n, generator=gen).float() / n  # a known ranking
    epochs = torch.arange(1, 28).float()
    curves = quality[:, None] * (1 - torch.exp(-epochs / 4))  # (n, 27): the ranking holds at every epoch
    winner, cost = automl.successive_halving(curves, torch.randperm(n, generator=gen), 1, eta)
    assert winner == int(quality.argmax())
    assert cost >= n


def test_hyperband_spends_at_most_its_budget():
    curves = torch.rand(50, 27)
    trace = automl.search_trace("hyperband", curves, torch.arange(50), 1000, torch.Generator().manual_seed(0))
    assert trace and trace[-1][0] <= 1000 and all(a[0] < b[0] for a, b in zip(trace, trace[1:]))


def _epochs_paid(study):
    return sum(len(t.intermediate_values) for t in study.trials)


@given(st.integers(1, 300), st.integers(0, 10**6))
@settings(max_examples=20, deadline=None)
def test_optuna_replay_spends_exactly_its_budget(budget, seed):
    curves = torch.rand(30, 9, generator=torch.Generator().manual_seed(seed))
    trace, study = optuna_replay.optuna_trace(curves, torch.arange(30), budget, seed)
    assert _epochs_paid(study) == budget
    assert all(spent <= budget for spent, _ in trace) and all(a[0] < b[0] for a, b in zip(trace, trace[1:]))


def test_optuna_replay_without_pruning_is_random_search_over_its_draws():
    curves, pool = torch.rand(40, 9), torch.arange(10, 40)
    trace, study = optuna_replay.optuna_trace(curves, pool, 50, seed=3, pruner=optuna.pruners.NopPruner())
    drawn = [int(pool[t.params["config"]]) for t in study.trials]
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 5 + [optuna.trial.TrialState.FAIL]
    assert trace == [(9 * (i + 1), c) for i, c in enumerate(drawn[:5])]  # five full trainings of R = 9 epochs
    assert automl.best_found(curves, trace, [50])[0] == curves[drawn[:5], -1].max()


def test_optuna_hyperband_pruner_stops_bad_curves_early():
    quality = torch.rand(80, generator=torch.Generator().manual_seed(0))
    curves = quality[:, None] * (1 - torch.exp(-torch.arange(1, 28).float() / 4))  # the ranking holds at every epoch
    _, plain = optuna_replay.optuna_trace(curves, torch.arange(80), 16 * 27, seed=0, pruner=optuna.pruners.NopPruner())
    trace, study = optuna_replay.optuna_trace(curves, torch.arange(80), 16 * 27, seed=0)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and len(study.trials) > len(plain.trials)  # pruning buys more configurations
    assert all(len(t.intermediate_values) < 27 for t in pruned)
    assert automl.best_found(curves, trace, [16 * 27])[0] >= automl.best_found(
        curves, [(27 * (i + 1), int(t.params["config"])) for i, t in enumerate(plain.trials)], [16 * 27])[0] - 0.05


def test_random_search_tries_more_values_of_the_parameter_that_matters():
    grid = automl.grid_points(3)
    assert grid[:, 0].unique().numel() == 3
    best_random = torch.stack([automl.bergstra_objective(torch.rand(9, 2, generator=torch.Generator().manual_seed(s))).max()
                               for s in range(50)])  # fmt: skip
    assert best_random.mean() > automl.bergstra_objective(grid).max()


def test_learning_curves_have_one_row_per_configuration(digits):
    lr, width, wd = automl.grid_configs([0.1, 1.0], [8, 16], [1e-4])
    table = automl.learning_curves(digits, lr, width, wd, epochs=2, batch_size=32, gen=mllib.generator(0))
    assert table.accuracy.shape == (4, 2) and ((table.accuracy >= 0) & (table.accuracy <= 1)).all()
    assert table.accuracy[:, -1].max() > 0.5


def quadratic_problem(d, seed=0):
    gen = torch.Generator().manual_seed(seed)
    M = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return check.Quadratic(M @ M.T / d, torch.randn(d, generator=gen, dtype=torch.float64)), gen


def test_gaussian_smoothing_is_unbiased_on_a_quadratic():
    f, gen = quadratic_problem(5)
    x = torch.randn(1, 5, generator=gen, dtype=torch.float64)
    samples = automl.gaussian_smoothing_gradient(f, x.expand(20000, -1), 0.5, gen)  # (20000, 5) independent draws
    true = x[0] @ f.A + f.b  # grad f_mu = grad f for a quadratic
    z = (samples.mean(0) - true) / (samples.std(0) / math.sqrt(len(samples)))
    assert z.abs().max() < 4.5  # a wrong mean (e.g. a missing 1/mu) is off by hundreds of standard errors


def test_finite_differences_are_exact_on_a_quadratic():
    f, gen = quadratic_problem(6)
    x = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    assert torch.allclose(automl.finite_difference_gradient(f, x, 1e-3), x @ f.A + f.b, atol=1e-8)


def test_zero_order_needs_iterations_proportional_to_the_dimension():
    steps = {}
    for d in (5, 50):
        f, grad = automl.quadratic(torch.linspace(0.1, 1.0, d))
        x0 = torch.ones(8, d) / math.sqrt(d)
        zo = automl.zo_sgd(f, x0, steps=2000, lr=1 / (4 * (d + 4)), mu=1e-4, gen=torch.Generator().manual_seed(0))
        fo = automl.gradient_descent(f, grad, x0, steps=200, lr=1.0)
        steps[d] = (automl.steps_to_reach(zo, 0.01 * float(f(x0)[0])).float().mean(),
                    automl.steps_to_reach(fo, 0.01 * float(f(x0)[0])).float().mean())  # fmt: skip
    assert steps[50][0] > 4 * steps[5][0]  # zero order: ~d times more
    assert abs(steps[50][1] - steps[5][1]) <= 3  # first order: independent of d


def test_hypergradient_descent_grows_a_too_small_learning_rate():
    f, grad = automl.quadratic(torch.linspace(0.1, 1.0, 10))
    x0 = torch.ones(2, 10)
    opt = automl.HypergradientSGD(1e-3, hyper_lr=1e-2)
    hd, _ = automl.optimize(f, grad, x0, opt, 100)
    sgd, _ = automl.optimize(f, grad, x0, automl.SGD(1e-3), 100)
    assert (opt.state_dict()["alpha"] > 1e-2).all() and (hd[-1] < 0.5 * sgd[-1]).all()


def test_adam_leaves_its_input_alone_and_keeps_state():
    X, G = torch.ones(2, 3), torch.full((2, 3), 0.5)
    opt = automl.Adam(0.1)
    Y = opt.step(X, G)
    assert torch.equal(X, torch.ones(2, 3)) and torch.allclose(Y, X - 0.1, atol=1e-6)  # Adam's first step is lr * sign
    assert opt.state_dict()["t"] == 1


@pytest.fixture(scope="module")
def adaptation():
    mllib.setup(seed=0)  # one thread: deterministic and fast
    model = meta.sinusoid_model()
    out = {}
    for method in meta.METHODS:
        theta = meta.meta_train(model, method, iterations=2000, meta_batch=10, k=10, inner_steps=1 if method == "maml" else 5,
                                inner_lr=0.03, outer_lr=3e-3, gen=mllib.generator(0))  # fmt: skip
        out[method] = meta.adaptation_curve(model, theta, tasks=100, k=10, steps=10, lr=0.03, gen=mllib.generator(1))
    return out


@pytest.mark.parametrize("method", ["maml", "reptile"])
@pytest.mark.parametrize("steps", [1, 10])
def test_meta_learned_initializations_adapt_twice_as_well_as_joint_pretraining(adaptation, method, steps):
    assert adaptation[method][steps] < 0.5 * adaptation["joint"][steps]


@pytest.mark.parametrize("method", meta.METHODS)
def test_seeds_meta_trained_together_are_the_runs_of_each_seed_alone(method):
    model = meta.sinusoid_model((8,))
    settings = dict(iterations=5, meta_batch=3, k=4, inner_steps=2, inner_lr=0.03, outer_lr=1e-2)
    together = meta.meta_train_seeds(model, method, seeds=[3, 7], **settings)  # (2, d)
    alone = torch.stack([meta.meta_train(model, method, gen=mllib.generator(s), **settings) for s in (3, 7)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-6)
    assert not torch.equal(together[0], together[1])


@pytest.mark.parametrize("method", meta.METHODS)
def test_meta_step_of_stacked_initializations_averages_each_block_of_tasks(method):
    model, gen = meta.sinusoid_model((8,)), mllib.generator(0)
    theta = torch.stack([model.init(gen), model.init(gen)])  # (2, d)
    x, y = meta.sinusoid_batch(*meta.sinusoid_tasks(6, gen), 8, gen)  # 3 tasks per initialization
    kw = dict(method=method, inner_steps=2, inner_lr=0.03)
    both = meta.meta_step(model, theta, x[:, :4], y[:, :4], x[:, 4:], y[:, 4:], **kw)
    each = [meta.meta_step(model, theta[i], x[b, :4], y[b, :4], x[b, 4:], y[b, 4:], **kw)
            for i, b in enumerate((slice(0, 3), slice(3, 6)))]  # fmt: skip
    torch.testing.assert_close(both, torch.stack(each), rtol=1e-5, atol=1e-7)


def test_meta_training_rejects_no_seed_and_uneven_tasks():
    model = meta.sinusoid_model((4,))
    with pytest.raises(ValueError, match="seeds must name at least one seed"):
        meta.meta_train_seeds(model, "maml", seeds=[], iterations=1, meta_batch=1, k=1, inner_steps=1, inner_lr=0.1,
                              outer_lr=0.1)  # fmt: skip
    with pytest.raises(ValueError, match="x must hold n tasks per initialization, got 3 tasks for 2"):
        meta.meta_step(model, torch.zeros(2, 13), *[torch.zeros(3, 2, 1), torch.zeros(3, 2)] * 2, method="maml",
                       inner_steps=1, inner_lr=0.1)  # fmt: skip


@settings(max_examples=15)
@given(st.integers(1, 12), st.integers(0, 20), st.integers(1, 8), st.integers(0, 1000))
def test_widening_preserves_the_function(width, extra, second, seed):
    gen = torch.Generator().manual_seed(seed)
    sizes = [64, width, second, 10]
    # float64: the transformation is exact; float32 adds rounding of about 1e-7 per sum
    X = torch.randn(2, mllib.FlatModel(mllib.mlp(64, 10, hidden=(width, second))).dim, generator=gen, dtype=torch.float64)
    x = torch.rand(2, 7, 1, 8, 8, generator=gen, dtype=torch.float64)
    for layer, new in [(1, width + extra), (2, second + extra)]:
        Y = nas.widen(X, sizes, layer, new, gen)
        hidden = [width, second]
        hidden[layer - 1] = new
        before = mllib.FlatModel(mllib.mlp(64, 10, hidden=(width, second))).forward(X, x)
        after = mllib.FlatModel(mllib.mlp(64, 10, hidden=tuple(hidden))).forward(Y, x)
        assert (after - before).abs().max() < 1e-6


def test_deepening_preserves_the_function():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(3, mllib.FlatModel(mllib.mlp(64, 10, hidden=(16,))).dim, generator=gen)
    x = torch.rand(3, 5, 1, 8, 8, generator=gen)
    Y = nas.deepen(X, [64, 16, 10], 1)
    after = mllib.FlatModel(mllib.mlp(64, 10, hidden=(16, 16))).forward(Y, x)
    assert (after - mllib.FlatModel(mllib.mlp(64, 10, hidden=(16,))).forward(X, x)).abs().max() < 1e-6


def test_widen_rejects_a_narrower_width():
    with pytest.raises(ValueError, match="width must be >= the current width 16"):
        nas.widen(torch.zeros(1, 64 * 16 + 16 + 16 * 10 + 10), [64, 16, 10], 1, 8, torch.Generator())


def test_warm_start_beats_scratch_at_equal_compute(digits):
    kw = dict(candidates=4, epochs_each=1, seeds=2, lr=0.3, batch_size=64)
    _, warm = nas.architecture_search(digits, warm=True, gen=mllib.generator(0), **kw)
    archs, cold = nas.architecture_search(digits, warm=False, gen=mllib.generator(0), **kw)
    assert len(archs) == 4 and warm.shape == cold.shape == (2, 4)
    assert warm[:, -1].mean() > cold[:, -1].mean()


# --- self-checks of the lab ---

def test_checks_pass_the_reference_answers():
    check.hyperband_schedule(search.hyperband_schedule)
    check.smoothing_estimate(zeroorder.smoothing_estimate)
    check.reptile_update(meta.reptile_update)


def halving_solution(curves, configs, min_resource, eta):
    alive, r, spent = configs, min_resource, 0
    while True:
        r = min(r, curves.shape[1])
        spent += len(alive) * r
        ranking = torch.sort(-curves[alive, r - 1], stable=True).indices
        if r >= curves.shape[1] or len(alive) == 1:
            return int(alive[ranking[0]]), spent
        alive, r = alive[ranking[: max(len(alive) // eta, 1)]], r * eta


def test_the_successive_halving_check_passes_a_solution_and_refuses_the_library(capsys):
    check.successive_halving(halving_solution)
    assert "✔ successive_halving: matches the reference" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="^successive_halving: your function calls the library's successive_halving"):
        check.successive_halving(lambda curves, configs, r0, eta: search.successive_halving(curves, configs, r0, eta))


def wrong_schedule_ceil(R, eta):
    return [[(math.ceil(n / eta**0), r) for n, r in b] for b in search.hyperband_schedule(R, eta)][:-1]


WRONG = {
    "hyperband_schedule": [
        lambda R, eta: search.hyperband_schedule(R, eta)[::-1],  # least aggressive first
        lambda R, eta: [[(n, R) for n, _ in b] for b in search.hyperband_schedule(R, eta)],  # no early stopping
        wrong_schedule_ceil,  # a bracket missing
        lambda R, eta: [[(b[0][0] // eta**i, r) for i, (_, r) in enumerate(b)] for b in search.hyperband_schedule(R, 2)],
    ],
    "smoothing_estimate": [
        lambda f, x, mu, u: (((f(x.unsqueeze(1) + mu * u) - f(x).unsqueeze(1))).unsqueeze(-1) * u).mean(1),  # no 1/mu
        lambda f, x, mu, u: ((f(x.unsqueeze(1) + mu * u) / mu).unsqueeze(-1) * u).mean(1),  # no baseline f(x)
        lambda f, x, mu, u: (((f(x.unsqueeze(1) + mu * u) - f(x).unsqueeze(1)) / mu).unsqueeze(-1) * u).sum(1),
        lambda f, x, mu, u: (((f(x.unsqueeze(1) + mu * u) - f(x).unsqueeze(1)) / mu).unsqueeze(-1) * u)[:, 0],
    ],
    "reptile_update": [
        lambda m, th, x, y, s, lr, eps: th - eps * (meta.adapt(m, th.expand(len(x), -1), x, y, steps=s, lr=lr).mean(0) - th),
        lambda m, th, x, y, s, lr, eps: meta.adapt(m, th.expand(len(x), -1), x, y, steps=s, lr=lr).mean(0),
        lambda m, th, x, y, s, lr, eps: th + eps * (meta.adapt(m, th.expand(len(x), -1), x, y, steps=1, lr=lr).mean(0) - th),
        lambda m, th, x, y, s, lr, eps: th + eps * (meta.adapt(m, th.expand(len(x), -1), x, y, steps=s, lr=lr).sum(0) - th),
    ],
}


@pytest.mark.parametrize("name,index", [(k, i) for k, v in WRONG.items() for i in range(len(v))])
def test_checks_reject_wrong_answers(name, index):
    assert_rejects(getattr(check, name), WRONG[name][index])


def test_widget_figures_are_labelled():
    budgets = [10, 20, 40]
    fig = automl.plot_anytime({"random": torch.rand(3, 3), "hyperband": torch.rand(3, 3)}, budgets, budget=20)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("budget") and ax.get_ylabel() and ax.get_title() and len(ax.lines) == 3
    plt.close(fig)
    fig = automl.plot_zero_order({"zo": torch.rand(5, 2) + 0.1, "fo": torch.rand(5, 2) + 0.1})
    assert fig.axes[0].get_yscale() == "log" and len(fig.axes[0].lines) == 2
    plt.close(fig)
    fig = automl.widgets.plot_adaptation({"maml": torch.rand(11)})
    assert fig.axes[0].get_xlabel().startswith("gradient steps")
    plt.close(fig)


def test_learning_curves_and_search_reject_bad_arguments(digits):
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        automl.learning_curves(digits, torch.ones(1), torch.ones(1, dtype=torch.long), torch.ones(1), epochs=0,
                               batch_size=8, gen=mllib.generator(0))  # fmt: skip
    with pytest.raises(ValueError, match="one entry per configuration, got 2, 1, 1"):
        automl.learning_curves(digits, torch.ones(2), torch.ones(1, dtype=torch.long), torch.ones(1), epochs=1,
                               batch_size=8, gen=mllib.generator(0))  # fmt: skip
    with pytest.raises(ValueError, match=r"method must be one of \('random', 'halving', 'hyperband'\), got 'bohb'"):
        automl.search_trace("bohb", torch.rand(3, 9), torch.arange(3), 10, torch.Generator())
    with pytest.raises(ValueError, match="method must be one of"):
        meta.meta_step(meta.sinusoid_model((4,)), torch.zeros(13), *[torch.zeros(1, 2, 1), torch.zeros(1, 2)] * 2,
                       method="anil", inner_steps=1, inner_lr=0.1)  # fmt: skip
