import matplotlib.pyplot as plt
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Lasso, Ridge

import mllib
from mllib import engine
from mllib import systems as sy
from mllib.checks import CheckFailed
from mllib.checks import systems as check
from selfchecks import assert_passes, assert_rejects


def problem(seed=0, n=30, d=12):
    gen = mllib.generator(seed)
    return sy.sparse_problem(n, d, informative=4, gen=gen)


# --- lab checks (their known mistakes are tested for every check in test_checks.py) -------------

def ridge_solution(A, b, alpha, lam):
    u = A.T @ (A @ alpha - b)
    return (lam * alpha + u) ** 2 / (2 * lam)


def working_sets_solution(A, b, lam, alpha, rounds, budget, epochs):
    alpha, w, norms = alpha.clone(), A @ alpha - b, A.pow(2).sum(0)
    for _ in range(rounds):
        chosen = torch.sort(torch.topk(ridge_solution(A, b, alpha, lam), budget).indices).values
        for _ in range(epochs):
            for i in chosen.tolist():
                new = alpha[i] - (A[:, i] @ w + lam * alpha[i]) / (norms[i] + lam)
                w, alpha[i] = w + A[:, i] * (new - alpha[i]), new
    return alpha


def importance_solution(grads, idx, p):
    return (grads / (len(p) * p[idx])[:, None]).mean(0)


@pytest.mark.parametrize(
    "name, solution",
    [("ridge_coordinate_gaps", ridge_solution), ("gap_working_sets", working_sets_solution),
     ("importance_gradient", importance_solution)],
)  # fmt: skip
def test_checks_pass_the_solution(name, solution, capsys):
    assert_passes(getattr(check, name), solution, capsys)


def test_checks_reject_answers_that_modify_their_input():
    assert_rejects(check.ridge_coordinate_gaps, lambda A, b, a, lam: ridge_solution(A, b, a.mul_(1.0).add_(1.0), lam))
    assert_rejects(check.importance_gradient, lambda g, i, p: g.div_((len(p) * p[i])[:, None]).mean(0))


def test_the_working_set_check_refuses_the_library_solver():
    def calls_library(A, b, lam, alpha, rounds, budget, epochs):
        alpha, w = alpha.clone(), A @ alpha - b
        sy.coordinate_descent(A, alpha, w, range(len(alpha)), lam, "ridge", A.pow(2).sum(0))
        return alpha

    with pytest.raises(CheckFailed, match="^gap_working_sets: your function calls the library's coordinate_descent"):
        check.gap_working_sets(calls_library)


# --- duality gaps -------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(sy.glm.KINDS), lam=st.floats(0.05, 5.0))
def test_coordinate_gaps_are_non_negative_and_sum_to_primal_minus_dual(seed, kind, lam):
    A, b = problem(seed)
    alpha = torch.randn(A.shape[1], generator=mllib.generator(seed), dtype=torch.float64) * 0.1
    bound = max(sy.lasso_bound(A, b, lam), alpha.abs().max().item())  # the Lasso's B must cover alpha
    gaps = sy.coordinate_gaps(A, b, alpha, lam, kind, bound)
    assert (gaps >= 0).all()
    if kind == "ridge":  # D(w) = -1/2||w||^2 - <w, b> - sum_i (a_i^T w)^2 / (2 lam), w = A alpha - b
        w = A @ alpha - b
        dual = -0.5 * w.pow(2).sum() - w @ b - (A.T @ w).pow(2).sum() / (2 * lam)
        assert gaps.sum().item() == pytest.approx(sy.primal(A, b, alpha, lam, kind) - dual.item(), rel=1e-9)


def test_ridge_gap_is_zero_at_the_closed_form_and_scikit_learn_optimum():
    A, b = problem(1)
    lam = 0.7
    alpha = sy.solve(A, b, lam, "ridge")
    sk = Ridge(alpha=lam, fit_intercept=False, solver="cholesky", tol=1e-12).fit(A.numpy(), b.numpy())
    assert torch.allclose(alpha, torch.from_numpy(sk.coef_), atol=1e-8)
    assert sy.coordinate_gaps(A, b, alpha, lam, "ridge").sum() < 1e-18
    assert sy.coordinate_gaps(A, b, torch.zeros_like(alpha), lam, "ridge").sum() > 1


def test_lasso_gap_is_zero_at_the_scikit_learn_optimum():
    A, b = problem(2)
    lam = 0.3
    sk = Lasso(alpha=lam / len(b), fit_intercept=False, tol=1e-14, max_iter=100_000).fit(A.numpy(), b.numpy())
    ours = sy.solve(A, b, lam, "lasso")
    assert torch.allclose(ours, torch.from_numpy(sk.coef_), atol=1e-6)
    assert sy.coordinate_gaps(A, b, torch.from_numpy(sk.coef_), lam, "lasso").sum() < 1e-6
    assert (ours == 0).any()  # the Lasso's optimum is sparse


def cyclic_lasso(A, b, lam, epochs=400):
    """The plain reference: cyclic exact coordinate descent over all coordinates (the units' update)."""
    alpha, w, norms = torch.zeros(A.shape[1], dtype=torch.float64), -b.clone(), A.pow(2).sum(0)
    for _ in range(epochs):
        sy.coordinate_descent(A, alpha, w, range(A.shape[1]), lam, "lasso", norms)
    return alpha


def lasso_duality_gap(A, b, alpha, lam):
    """P(alpha) - D(theta) at theta = w / max(1, ||A^T w||_inf / lam), w = A alpha - b, written out."""
    w = A @ alpha - b
    theta = w / max(1.0, (A.T @ w).abs().max().item() / lam)
    return sy.primal(A, b, alpha, lam, "lasso") - (-0.5 * theta @ theta - theta @ b).item()


@pytest.mark.parametrize("seed, n, d, lam", [(0, 30, 12, 0.3), (1, 20, 50, 0.5), (2, 50, 30, 0.05), (3, 10, 40, 2.0),
                                             (4, 40, 80, 0.5), (5, 8, 8, 1e-3)])  # fmt: skip
def test_lasso_working_sets_match_coordinate_descent_and_scikit_learn(seed, n, d, lam):
    A, b = sy.sparse_problem(n, d, informative=min(d, 5), gen=mllib.generator(seed))
    run = sy.glm.lasso_working_sets(A, b, lam, tol=1e-12)
    reference = cyclic_lasso(A, b, lam)
    sk = Lasso(alpha=lam / n, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(A.numpy(), b.numpy())
    assert torch.allclose(run.alpha, reference, atol=1e-7) and torch.allclose(run.alpha, torch.from_numpy(sk.coef_))
    assert torch.equal(run.alpha != 0, reference != 0)  # the same support
    assert run.gaps[-1] == pytest.approx(lasso_duality_gap(A, b, run.alpha, lam), abs=1e-12)
    assert 0 <= run.gaps[-1] <= 1e-12 * b.pow(2).sum().item() + 1e-13
    assert len(run.gaps) == len(run.sizes) + 1 and run.sizes == sorted(set(run.sizes)) and max(run.sizes, default=0) <= d
    assert torch.equal(sy.solve(A, b, lam, "lasso"), run.alpha)


def test_lasso_working_sets_grow_from_the_first_set_and_stop_at_the_tolerance():
    A, b = sy.sparse_problem(100, 300, informative=10, gen=mllib.generator(6))
    run = sy.glm.lasso_working_sets(A, b, 0.2, first=5)
    assert run.sizes[0] == 5 and all(new <= 2 * old for old, new in zip(run.sizes, run.sizes[1:]))
    assert run.sizes[-1] < 300 and all(g > 1e-12 * b.pow(2).sum().item() for g in run.gaps[:-1])
    loose = sy.glm.lasso_working_sets(A, b, 0.2, tol=1e-4, first=5)
    assert len(loose.sizes) <= len(run.sizes) and loose.gaps[-1] <= 1e-4 * b.pow(2).sum().item()


def test_lasso_working_sets_edge_cases():
    A, b = problem(7)
    zero_b = sy.glm.lasso_working_sets(A, torch.zeros_like(b), 0.5)
    assert zero_b.sizes == [] and zero_b.gaps == [0.0] and not zero_b.alpha.any()
    large_lam = (A.T @ b).abs().max().item()  # alpha = 0 is optimal from here on
    assert not sy.glm.lasso_working_sets(A, b, large_lam).alpha.any()
    dead = A.clone()
    dead[:, 3] = 0  # a column that can never help
    assert sy.glm.lasso_working_sets(dead, b, 0.1).alpha[3] == 0
    single = sy.glm.lasso_working_sets(torch.ones(1, 1), torch.ones(1), 0.1)
    assert single.alpha.tolist() == pytest.approx([0.9]) and single.alpha.dtype == torch.float64
    assert torch.allclose(sy.glm.lasso_working_sets(A.float(), b.float(), 0.3).alpha,
                          sy.glm.lasso_working_sets(A, b, 0.3).alpha, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("change, message", [
    (dict(A=torch.full((30, 12), float("nan"))), "^A must be a tensor of shape .* with finite entries"),
    (dict(b=torch.full((30,), float("inf"))), "^b must be .* with finite entries"),
    (dict(b=torch.ones(3)), "^b must have shape"),
    (dict(lam=0.0), "^lam must be a finite number > 0, got 0"),
    (dict(tol=0.0), "^tol must be a finite number > 0, got 0"),
    (dict(first=0), "^first must be an integer >= 1, got 0"),
])  # fmt: skip
def test_bad_lasso_working_set_input_raises(change, message):
    A, b = problem()
    arguments = dict(A=A, b=b, lam=0.5) | change
    with pytest.raises(ValueError, match=message):
        sy.glm.lasso_working_sets(arguments.pop("A"), arguments.pop("b"), arguments.pop("lam"), **arguments)
    with pytest.raises(ValueError, match="with finite entries"):
        sy.solve(A, torch.full_like(b, float("nan")), 0.5, "lasso")


def test_coordinate_descent_never_increases_the_objective():
    A, b = problem(3)
    for kind in sy.glm.KINDS:
        trace = sy.train_two_units(A, b, 0.5, budget=4, rule="random", rounds=20, kind=kind, gen=mllib.generator(0))
        assert (sy.series(trace, "objective").diff() <= 1e-12).all()


def test_bad_glm_input_raises():
    A, b = problem()
    with pytest.raises(ValueError, match="^lam must be a finite number > 0, got 0"):
        sy.coordinate_gaps(A, b, torch.zeros(12), 0.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        sy.primal(A, b, torch.zeros(12), 1.0, "svm")
    with pytest.raises(ValueError, match=r"alpha must have shape \(12,\)"):
        sy.coordinate_gaps(A, b, torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="bound must be >= max"):
        sy.coordinate_gaps(A, b, torch.ones(12, dtype=torch.float64), 1.0, "lasso", bound=0.5)
    with pytest.raises(ValueError, match="b must have shape"):
        sy.primal(A, b[:3], torch.zeros(12), 1.0)


# --- the two-unit system ------------------------------------------------------------------

@pytest.mark.parametrize("budget", [0, -1, 13])
def test_budget_outside_the_data_raises(budget):
    A, b = problem()
    with pytest.raises(ValueError, match=f"budget must be between 1 and the number of coordinates d=12, got {budget}"):
        sy.train_two_units(A, b, 1.0, budget=budget, rounds=1, gen=mllib.generator(0))


def test_unknown_rule_and_negative_cost_raise():
    A, b = problem()
    with pytest.raises(ValueError, match="rule must be one of"):
        sy.train_two_units(A, b, 1.0, budget=2, rule="largest", rounds=1, gen=mllib.generator(0))
    with pytest.raises(ValueError, match="^swap must be a finite number >= 0, got -1"):
        sy.CostModel(swap=-1)


def test_fixed_set_swaps_only_at_the_start_and_stalls():
    A, b = problem(4)
    trace = sy.train_two_units(A, b, 0.5, budget=3, rule="fixed", rounds=10, gen=mllib.generator(0))
    assert trace.swaps == [3] + [0] * 10 and trace.rounds == list(range(11))
    optimum = sy.primal(A, b, sy.solve(A, b, 0.5), 0.5)
    assert trace.objective[-1] - optimum > 0.01 * (trace.objective[0] - optimum)


def test_a_run_is_the_round_engines_history_with_the_set_up_first():
    A, b = problem(2)
    run = sy.train_two_units(A, b, 0.5, budget=3, rule="gap", rounds=2, gen=mllib.generator(0))
    assert run.rounds == [0, 1, 2] and list(run.metrics) == list(sy.METRICS)
    assert run.objective[-1] == sy.primal(A, b, run.model, 0.5) and run.algorithm.budget == 3
    slow = sy.train_slow_alone(A, b, 0.5, rounds=2, updates=5, gen=mllib.generator(0))
    assert (slow.fast_ops, slow.slow_ops, slow.swaps) == ([0, 0, 0], [0, 5, 5], [0, 0, 0])
    with pytest.raises(ValueError, match="rounds must be an integer >= 1, got 0"):
        sy.train_two_units(A, b, 0.5, budget=3, rounds=0, gen=mllib.generator(0))


def test_simulated_time_follows_the_cost_model():
    A, b = problem(5)
    trace = sy.train_two_units(A, b, 0.5, budget=4, rule="gap", rounds=3, updates=10, refresh=2, gen=mllib.generator(0))
    assert trace.fast_ops == [0, 14, 14, 14] and trace.slow_ops == [12, 2, 2, 2]
    cost = sy.CostModel(fast_update=1.0, slow_update=10.0, swap=3.0)
    fast, slow, swaps = (sy.series(trace, name) for name in ("fast_ops", "slow_ops", "swaps"))
    per_round = torch.maximum(fast, 10 * slow) + 3 * swaps
    assert torch.equal(sy.simulated_time(trace, cost), per_round.cumsum(0))


def test_gap_selection_beats_random_at_a_small_budget():
    """Dünner et al. 2017: gap-based working sets reach a suboptimality in less time."""
    A, b = sy.sparse_problem(100, 200, informative=10, gen=mllib.generator(0))
    lam, cost = 0.5, sy.CostModel(fast_update=1, slow_update=10, swap=1)
    optimum = sy.primal(A, b, sy.solve(A, b, lam, "lasso"), lam, "lasso")
    target = 1e-2 * (sy.primal(A, b, torch.zeros(200, dtype=torch.float64), lam, "lasso") - optimum)
    times, horizon = {}, {}
    for rule in sy.RULES:  # random and fixed rounds are shorter: run them for longer than the gap rule
        rounds = 60 if rule == "gap" else 180
        trace = sy.train_two_units(A, b, lam, budget=10, rule=rule, rounds=rounds, updates=50, refresh=5, kind="lasso",
                                   gen=mllib.generator(1))  # fmt: skip
        times[rule] = sy.time_to_reach(trace, cost, optimum, target)
        horizon[rule] = sy.simulated_time(trace, cost)[-1].item()
    assert horizon["random"] > times["gap"] and horizon["fixed"] > times["gap"]
    assert times["gap"] < times["random"] and times["fixed"] == float("inf")


# --- importance sampling ------------------------------------------------------------------

@pytest.fixture(scope="module")
def regression():
    return sy.heterogeneous_regression(200, 5, spread=1.5, gen=mllib.generator(0))


def test_importance_estimate_is_unbiased(regression):
    """Mean of 20000 one-sample estimates within 4 standard errors of the full gradient, per coordinate."""
    A, b = regression
    x = torch.ones(5, dtype=torch.float64)
    G = sy.least_squares_grads(A, b, x)  # (n, d)
    skewed = sy.proportional(torch.rand(200, generator=mllib.generator(1)).double())
    for p in (sy.proportional(A.pow(2).sum(1)), skewed):
        idx = torch.multinomial(p, 20_000, replacement=True, generator=mllib.generator(2))
        estimates = G[idx] / (200 * p[idx])[:, None]  # (20000, d) one-sample estimates
        stderr = estimates.std(0) / 20_000**0.5
        assert ((estimates.mean(0) - G.mean(0)).abs() < 4 * stderr).all()
        assert torch.allclose(sy.importance_gradient(G[idx], idx, p), estimates.mean(0))


def test_variance_formula_matches_the_empirical_variance(regression):
    A, b = regression
    G = sy.least_squares_grads(A, b, torch.zeros(5, dtype=torch.float64))
    p = sy.proportional(A.pow(2).sum(1))
    idx = torch.multinomial(p, 50_000, replacement=True, generator=mllib.generator(3))
    estimates = G[idx] / (200 * p[idx])[:, None]
    empirical = (estimates - G.mean(0)).pow(2).sum(1).mean().item()
    assert empirical == pytest.approx(sy.gradient_variance(G, p), rel=0.05)


def test_lipschitz_sampling_has_lower_variance_than_uniform(regression):
    A, b = regression
    G = sy.least_squares_grads(A, b, torch.zeros(5, dtype=torch.float64))
    uniform = torch.full((200,), 1 / 200, dtype=torch.float64)
    assert sy.gradient_variance(G, sy.proportional(A.pow(2).sum(1))) < 0.5 * sy.gradient_variance(G, uniform)
    optimal = sy.proportional(G.norm(dim=1))  # Zhao and Zhang 2015: the minimum-variance p
    assert sy.gradient_variance(G, optimal) <= sy.gradient_variance(G, sy.proportional(A.pow(2).sum(1)))


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_gradient_norm_sampling_minimizes_the_variance(seed):
    gen = mllib.generator(seed)
    G = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    other = sy.proportional(torch.rand(8, generator=gen, dtype=torch.float64) + 0.01)
    assert sy.gradient_variance(G, sy.proportional(G.norm(dim=1))) <= sy.gradient_variance(G, other) + 1e-12


@pytest.mark.parametrize("p, message", [
    (torch.tensor([0.5, 0.6]), "p must sum to one, got a sum of 1.1"),
    (torch.tensor([1.5, -0.5]), "p must be non-negative"),
    (torch.ones(2, 2) / 4, r"p must have shape \(n,\)"),
])  # fmt: skip
def test_bad_probabilities_raise(p, message):
    with pytest.raises(ValueError, match=message):
        sy.importance_gradient(torch.ones(1, 2), torch.tensor([0]), p)


def test_adaptive_sampler_keeps_every_probability_positive_and_does_not_alias_its_input():
    initial = torch.tensor([1.0, 2.0, 3.0, 4.0])
    sampler = sy.AdaptiveSampler(initial, mix=0.2)
    sampler.update(torch.tensor([0, 1]), torch.tensor([0.0, 0.0]))
    p = sampler.probabilities()
    assert (p >= 0.2 / 4 - 1e-12).all() and abs(p.sum().item() - 1) < 1e-12
    assert initial.tolist() == [1.0, 2.0, 3.0, 4.0] and sampler.state_dict()["memory"][0] == 0
    with pytest.raises(ValueError, match=r"^mix must be a finite number in \(0, 1\]"):
        sy.AdaptiveSampler(initial, mix=0.0)


def test_sgd_with_importance_sampling_records_lower_variance(regression):
    A, b = regression
    lr = 0.5 / A.pow(2).sum(1).max().item()
    runs = {s: sy.sgd(A, b, scheme=s, steps=100, batch=4, lr=lr, every=50, gen=mllib.generator(0)) for s in sy.SCHEMES}
    assert runs["lipschitz"].variance[0][0] < runs["uniform"].variance[0][0]
    assert all(r.suboptimality[-1][0] < r.suboptimality[0][0] for r in runs.values())
    with pytest.raises(ValueError, match="scheme must be one of"):
        sy.sgd(A, b, scheme="greedy", steps=1, batch=1, lr=0.1, gen=mllib.generator(0))
    with pytest.raises(ValueError, match="^runs must be an integer >= 1"):
        sy.sgd(A, b, scheme="uniform", steps=1, batch=1, lr=0.1, runs=0, gen=mllib.generator(0))


@pytest.mark.parametrize("scheme", sy.SCHEMES)
def test_sgd_runs_start_together_and_draw_apart(regression, scheme):
    A, b = regression
    lr = 0.5 / A.pow(2).sum(1).max().item()
    trace = sy.sgd(A, b, scheme=scheme, steps=40, batch=2, lr=lr, every=20, runs=3, gen=mllib.generator(0))
    assert trace.rounds == [0, 20, 40] and sy.records(trace, "suboptimality").shape == (3, 3)
    assert sy.records(trace, "variance").shape == (3, 3)
    assert (trace.suboptimality[0] == trace.suboptimality[0][0]).all()  # all start at x = 0
    assert (trace.variance[0] == trace.variance[0][0]).all()
    assert len(set(trace.suboptimality[-1].tolist())) == 3  # their own draws
    first = sy.sgd(A, b, scheme=scheme, steps=40, batch=2, lr=lr, every=20, gen=mllib.generator(0))
    assert first.variance[0][0].item() == pytest.approx(trace.variance[0][0].item(), rel=1e-12)


def test_sgd_records_every_every_steps_and_the_last(regression):
    A, b = regression
    trace = sy.sgd(A, b, scheme="adaptive", steps=45, batch=2, lr=0.01, every=20, runs=2, gen=mllib.generator(0))
    assert trace.rounds == [0, 20, 40, 45] and trace.algorithm.scheme == "adaptive" and trace.model.shape == (2, 5)
    with pytest.raises(ValueError, match="^steps must be an integer >= 1, got 0"):
        sy.sgd(A, b, scheme="uniform", steps=0, batch=1, lr=0.1, gen=mllib.generator(0))


def test_log10_mean_is_the_log_of_the_geometric_mean_over_runs_and_steps():
    suboptimality, variance = torch.tensor([[1e3, 1e1, 1e3], [1e3, 1e-1, 1e-3]]), torch.tensor([[1e2] * 3, [1e4] * 3])
    metrics = {"suboptimality": list(suboptimality.T), "variance": list(variance.T)}  # (runs,) per recorded step
    trace = engine.History(rounds=[0, 10, 20], metrics=metrics)
    assert torch.equal(sy.records(trace, "suboptimality"), suboptimality)
    assert sy.log10_mean(trace, "variance") == pytest.approx(3.0)
    assert sy.log10_mean(trace, "suboptimality", start=10) == pytest.approx((1 + 3 - 1 - 3) / 4)
    with pytest.raises(KeyError, match="no metric 'loss' was recorded"):
        sy.log10_mean(trace, "loss")
    with pytest.raises(ValueError, match="start must be at most the last recorded step 20"):
        sy.log10_mean(trace, "variance", start=21)


def test_adaptive_sampler_keeps_one_memory_per_run():
    sampler = sy.AdaptiveSampler(torch.ones(2, 4), mix=0.2)
    sampler.update(torch.tensor([[0, 0], [3, 1]]), torch.tensor([[5.0, 5.0], [0.0, 2.0]]))
    assert sampler.state_dict()["memory"].tolist() == [[5.0, 1.0, 1.0, 1.0], [1.0, 2.0, 1.0, 0.0]]
    p = sampler.probabilities()
    assert p.shape == (2, 4) and torch.allclose(p.sum(1), torch.ones(2, dtype=torch.float64))
    assert p[1, 3] == pytest.approx(0.2 / 4)  # a forgotten example keeps the uniform share
    with pytest.raises(ValueError, match="positive sum"):
        sy.proportional(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))


# --- figures ------------------------------------------------------------------------------

def test_selection_figure_draws_one_line_per_rule_and_labels_units():
    A, b = problem(6)
    traces = {r: sy.train_two_units(A, b, 0.5, budget=3, rule=r, rounds=4, gen=mllib.generator(0)) for r in sy.RULES}
    slow = sy.train_slow_alone(A, b, 0.5, rounds=4, updates=5, gen=mllib.generator(0))
    fig = sy.selection_figure(traces, sy.CostModel(), sy.primal(A, b, sy.solve(A, b, 0.5), 0.5), slow)
    ax = fig.axes[0]
    assert len(ax.lines) == 4 and "simulated time" in ax.get_xlabel() and "budget 3" in ax.get_title()
    plt.close(fig)
    with pytest.raises(ValueError, match="traces"):
        sy.selection_figure({}, sy.CostModel(), 0.0)


def test_sampling_figure_has_two_labelled_panels(regression):
    A, b = regression
    runs = [sy.sgd(A, b, scheme=s, steps=20, batch=2, lr=0.01, every=10, gen=mllib.generator(0)) for s in sy.SCHEMES]
    fig = sy.sampling_figure(runs)
    assert [len(ax.lines) for ax in fig.axes] == [3, 3] and fig.axes[0].get_ylabel().startswith("variance")
    plt.close(fig)


def test_selection_explorer_retimes_precomputed_runs_only():
    A, b = problem(7)
    runs = {3: {r: sy.train_two_units(A, b, 0.5, budget=3, rule=r, rounds=3, gen=mllib.generator(0)) for r in sy.RULES}}
    draw = sy.selection_explorer(runs, sy.primal(A, b, sy.solve(A, b, 0.5), 0.5))
    fig = draw(3, 100.0, 0.0)
    x_end = fig.axes[0].lines[0].get_xdata()[-1]
    assert x_end == sy.simulated_time(runs[3]["gap"], sy.CostModel(1.0, 100.0, 0.0))[-1]
    assert "slow/fast 100x" in fig.axes[0].get_title()
    plt.close(fig)
    with pytest.raises(ValueError, match=r"budget must be one of the precomputed \[3\], got 5"):
        draw(5, 10.0, 1.0)


def test_reach_table_lists_every_budget_and_rule():
    A, b = problem(8)
    runs = {
        budget: {rule: sy.train_two_units(A, b, 0.5, budget=budget, rule=rule, rounds=2, gen=mllib.generator(0))
                 for rule in sy.RULES}
        for budget in (2, 4)
    }  # fmt: skip
    table = sy.reach_table(runs, sy.CostModel(), sy.primal(A, b, sy.solve(A, b, 0.5), 0.5), 1e-30)
    assert list(table) == [2, 4] and all(list(t) == list(sy.RULES) for t in table.values())
    assert all(v == float("inf") for t in table.values() for v in t.values())


def test_objective_at_reads_the_last_finished_round():
    A, b = problem(9)
    trace = sy.train_two_units(A, b, 0.5, budget=3, rule="random", rounds=4, gen=mllib.generator(0))
    cost = sy.CostModel()
    times = sy.simulated_time(trace, cost)
    assert sy.objective_at(trace, cost, times[2].item()) == trace.objective[2]
    assert sy.objective_at(trace, cost, times[2].item() - 1e-9) == trace.objective[1]
    with pytest.raises(ValueError, match="after the run's end"):
        sy.objective_at(trace, cost, times[-1].item() + 1)


# --- importance sampling on a neural network ---------------------------------------------------
@pytest.fixture(scope="module")
def digits_net():
    data = mllib.load("digits", gen=mllib.generator(0))
    return mllib.FlatModel(mllib.mlp(data.n_features, data.n_classes, hidden=(8,)).double()), data


def test_network_sgd_by_gradient_norms_lowers_the_variance_and_the_loss(digits_net):
    net, data = digits_net
    runs = {s: sy.network_sgd(net, data, scheme=s, steps=60, batch=8, lr=0.3, refresh=20, gen=mllib.generator(1))
            for s in ("uniform", "norm")}  # fmt: skip
    assert runs["norm"].rounds == [20, 40, 60] and len(runs["norm"].variance) == 3
    assert runs["norm"].variance[0] < runs["uniform"].variance[0]  # the same initial model
    assert runs["norm"].loss[-1] < runs["uniform"].loss[0]
    p = runs["norm"].algorithm.p
    assert abs(float(p.sum()) - 1) < 1e-12 and float(p.min()) >= 0.2 / len(p) - 1e-15  # mixed with uniform


def test_network_sgd_rejects_bad_settings(digits_net):
    net, data = digits_net
    with pytest.raises(ValueError, match="scheme"):
        sy.NetworkImportanceSGD(net, data, scheme="lipschitz", batch=8, lr=0.1, refresh=5, gen=mllib.generator(0))
    with pytest.raises(ValueError, match="mix"):
        sy.NetworkImportanceSGD(net, data, scheme="norm", batch=8, lr=0.1, refresh=5, mix=0.0, gen=mllib.generator(0))
