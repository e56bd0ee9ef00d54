from dataclasses import replace

import matplotlib.pyplot as plt
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mllib
from mllib import federated as fl
from mllib.checks import federated as check
from mllib.data import Quadratics, quadratics
from mllib.spread import Spread
from selfchecks import assert_passes, assert_rejects


def quadratic_problem(n=6, d=3, heterogeneity=1.0, seed=0, weights=None):
    q = quadratics(n, d, heterogeneity=heterogeneity, condition=4.0, gen=mllib.generator(seed))
    return fl.QuadraticProblem(Quadratics(q.A.double(), q.b.double()), weights=weights)


def everyone(problem, algorithm, rounds, x0=None):
    x0 = torch.zeros(problem.dim, dtype=torch.double) if x0 is None else x0
    return fl.run(algorithm, problem, x0, rounds=rounds, clients_per_round=problem.n, gen=mllib.generator(0)).model


def one_round(algorithm, problem, x, sampled, gen):
    """One round of the engine on the clients ``sampled``: the new server model (d,)."""
    federation = algorithm.federation(problem, x, select=lambda r: sampled, gen=gen)
    federation.round(1)
    return federation.x


# ---------------------------------------------------------------- the round lecture 01 shows
def test_a_fedavg_round_runs_the_displayed_functions(monkeypatch):
    """Lecture 01 shows ``fedavg_update`` and ``engine.weighted_mean``: FedAvg's rounds call both."""
    problem, calls = quadratic_problem(), []
    update = fl.algorithms.fedavg_update.__wrapped__  # a round calls it unchecked: its arguments were checked once
    monkeypatch.setattr(fl.algorithms.fedavg_update, "__wrapped__", lambda *a, **k: calls.append(1) or update(*a, **k))
    federation = fl.FedAvg(local_steps=3, lr=0.1).federation(problem, torch.zeros(problem.dim, dtype=torch.double),
                                                              select=mllib.engine.everyone(problem.n), gen=None)
    federation.round(1)
    assert calls == [1] and federation.aggregate is mllib.engine.weighted_mean.__wrapped__


def test_fedavg_update_is_k_local_gradient_steps_from_the_server_model():
    problem = quadratic_problem()
    x, S = torch.ones(problem.dim, dtype=torch.double), torch.tensor([1, 4])
    U = fl.fedavg_update(problem, x, S, local_steps=3, lr=0.1, gen=None)
    assert torch.equal(U, problem.local_sgd(x.expand(2, -1), S, steps=3, lr=0.1, gen=None) - x)


# ---------------------------------------------------------------- FedAvg = GD for K = 1
def test_fedavg_with_one_step_is_gradient_descent_on_the_pooled_objective():
    problem = quadratic_problem()
    x = gd = torch.ones(problem.dim, dtype=torch.double)
    algorithm = fl.FedAvg(local_steps=1, lr=0.1)
    everyone_ = torch.arange(problem.n)
    for _ in range(30):
        x = one_round(algorithm, problem, x, everyone_, mllib.generator(0))
        gd = gd - 0.1 * problem.grad(gd.expand(problem.n, -1), everyone_, None).mean(0)
    assert torch.allclose(x, gd, atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def equal_clients(digits):
    data = replace(digits, x_train=digits.x_train[:1400].double(), y_train=digits.y_train[:1400])
    return mllib.split(data, 10, "iid", gen=mllib.generator(0))  # 140 samples each


def test_fedsgd_on_data_is_one_sgd_step_on_the_pooled_minibatches(equal_clients):
    model = mllib.FlatModel(mllib.logistic_regression(64, 10))
    problem = fl.DataProblem(model, equal_clients, batch_size=8)
    x = model.init(mllib.generator(0)).double()
    got = one_round(fl.FedSGD(lr=0.5), problem, x, torch.arange(10), mllib.generator(3))
    xb, yb = equal_clients.batches(8, mllib.generator(3))  # the same draws
    pooled = model.grad(x[None], xb.reshape(1, 80, *xb.shape[2:]), yb.reshape(1, 80))[0]
    assert torch.allclose(got, x - 0.5 * pooled, atol=1e-6, rtol=0)


def test_full_gradient_is_the_size_weighted_mean_of_client_gradients(digits):
    clients = mllib.split(replace(digits, x_train=digits.x_train.double()), 7, "dirichlet", alpha=0.5,
                          gen=mllib.generator(0))  # fmt: skip
    model = mllib.FlatModel(mllib.logistic_regression(64, 10))
    problem = fl.DataProblem(model, clients, batch_size=4)
    x = model.init(mllib.generator(1)).double()
    among = torch.tensor([1, 4, 5])
    each = torch.stack([model.grad(x[None], *(t[None] for t in clients.client_data(i)))[0] for i in among.tolist()])
    sizes = clients.sizes[among].double()
    assert torch.allclose(problem.full_grad(x, among), sizes @ each / sizes.sum(), atol=1e-10)


# ---------------------------------------------------------------- drift on quadratics
@pytest.mark.parametrize("local_steps", [2, 5, 20])
def test_fedavg_converges_to_the_closed_form_fixed_point(local_steps):
    problem = quadratic_problem()
    x = everyone(problem, fl.FedAvg(local_steps=local_steps, lr=0.05), rounds=400)
    assert torch.allclose(x, fl.fedavg_fixed_point(problem, local_steps=local_steps, lr=0.05), atol=1e-6, rtol=0)


def test_fedavg_drift_grows_with_local_steps():
    problem = quadratic_problem()
    gaps = [float((fl.fedavg_fixed_point(problem, local_steps=k, lr=0.05) - problem.optimum()).norm())
            for k in (1, 2, 5, 20)]  # fmt: skip
    assert gaps[0] < 1e-10 and gaps == sorted(gaps) and gaps[-1] > 0.1


def test_fixed_point_in_one_dimension_matches_the_scalar_formula():
    a, b = torch.tensor([1.0, 3.0, 5.0]), torch.tensor([-2.0, 0.0, 4.0])
    problem = fl.scalar_quadratics(a, b)
    w = 1 - (1 - 0.1 * a.double()) ** 4
    assert torch.allclose(fl.fedavg_fixed_point(problem, local_steps=4, lr=0.1), (w @ b.double() / w.sum()).view(1))
    assert torch.allclose(problem.optimum(), (a @ b / a.sum()).double().view(1))


@pytest.mark.parametrize("weights", [None, torch.tensor([1.0, 2.0, 3.0, 1.0, 5.0, 2.0])])
@pytest.mark.parametrize("make", [lambda: fl.Scaffold(local_steps=10, lr=0.05),
                                  lambda: fl.Mime(local_steps=10, lr=0.05, momentum=0.5)])  # fmt: skip
def test_scaffold_and_mime_converge_to_the_optimum(make, weights):
    problem = quadratic_problem(weights=weights)
    x = everyone(problem, make(), rounds=300)
    assert torch.allclose(x, problem.optimum(), atol=1e-6, rtol=0)


def test_mimelite_drifts_less_than_fedavg_but_still_drifts():
    problem = quadratic_problem()
    x = everyone(problem, fl.Mime(local_steps=10, lr=0.05, momentum=0.5, lite=True), rounds=300)
    fedavg_gap = (fl.fedavg_fixed_point(problem, local_steps=10, lr=0.05) - problem.optimum()).norm()
    assert 1e-3 < (x - problem.optimum()).norm() < fedavg_gap


# ---------------------------------------------------------------- state
def test_mime_local_steps_never_change_the_optimizer_state():
    problem = quadratic_problem()
    mime = fl.Mime(local_steps=5, lr=0.05, momentum=0.9)
    x = torch.zeros(problem.dim, dtype=torch.double)
    everyone_ = torch.arange(problem.n)
    x = one_round(mime, problem, x, everyone_, mllib.generator(0))
    before = mime.state_dict()["m"].clone()
    c = problem.full_grad(x, everyone_)
    mime.local_update(problem, x, everyone_, c, mllib.generator(0))
    assert torch.equal(mime.state_dict()["m"], before)
    one_round(mime, problem, x, everyone_, mllib.generator(0))
    assert torch.allclose(mime.state_dict()["m"], 0.1 * c + 0.9 * before)  # the full gradient at the old x


@pytest.mark.parametrize("lite", [False, True])
def test_mime_uses_the_frozen_state_in_every_local_step(lite):
    problem = quadratic_problem(n=2, d=2)
    mime = fl.Mime(local_steps=1, lr=0.1, momentum=0.5, lite=lite)
    mime.m = torch.ones(2, dtype=torch.double)
    x, everyone_ = torch.zeros(2, dtype=torch.double), torch.arange(2)
    c = problem.full_grad(x, everyone_)
    Y = mime.local_update(problem, x, everyone_, c, mllib.generator(0))
    g = problem.grad(x.expand(2, -1), everyone_, None) if lite else c.expand(2, -1)  # at y = x, MIME's g is c
    assert torch.allclose(Y, x - 0.1 * (0.5 * g + 0.5 * mime.m))


@given(st.integers(0, 10_000))
def test_scaffold_server_control_is_the_weighted_mean_of_client_controls(seed):
    problem = quadratic_problem(n=8, d=2, weights=torch.arange(1.0, 9.0))
    scaffold = fl.Scaffold(local_steps=3, lr=0.05)
    x0 = torch.zeros(2, dtype=torch.double)
    fl.run(scaffold, problem, x0, rounds=4, clients_per_round=3, gen=mllib.generator(seed))
    state = scaffold.state_dict()
    assert torch.allclose(state["c"], problem.weights @ state["c_clients"], atol=1e-10)


def test_scaffold_server_control_update_is_the_papers_with_equal_sizes():
    problem = quadratic_problem(n=10, d=2)
    scaffold = fl.Scaffold(local_steps=3, lr=0.05)
    x, gen = torch.zeros(2, dtype=torch.double), mllib.generator(0)
    x = one_round(scaffold, problem, x, torch.tensor([0, 3, 7]), gen)
    c_old, ci_old = scaffold.c.clone(), scaffold.c_clients.clone()
    sampled = torch.tensor([1, 3, 8])
    one_round(scaffold, problem, x, sampled, gen)
    delta = scaffold.c_clients[sampled] - ci_old[sampled]
    assert torch.allclose(scaffold.c, c_old + 3 / 10 * delta.mean(0))
    untouched = torch.tensor([0, 2, 4, 5, 6, 7, 9])
    assert torch.equal(scaffold.c_clients[untouched], ci_old[untouched])


def test_scaffold_client_control_is_option_two():
    g = mllib.generator(0)
    c_i, c, x, Y = (torch.randn(*shape, generator=g) for shape in [(3, 4), (4,), (4,), (3, 4)])
    assert torch.allclose(fl.scaffold_control_update(c_i, c, x, Y, 5, 0.1), c_i - c + (x - Y) / 0.5)


# ---------------------------------------------------------------- sampling and the loop
@given(st.integers(1, 50), st.data())
def test_sampling_is_without_replacement(n, data):
    k = data.draw(st.integers(1, n))
    s = fl.sample_clients(n, k, mllib.generator(data.draw(st.integers(0, 1000))))
    assert len(s) == k and len(set(s.tolist())) == k and 0 <= int(s.min()) and int(s.max()) < n


def test_partial_participation_is_reproducible_from_the_seed(digits):
    clients = mllib.split(digits, 20, "dirichlet", alpha=0.3, gen=mllib.generator(0))
    model = mllib.FlatModel(mllib.logistic_regression(64, 10))
    problem = fl.DataProblem(model, clients, batch_size=8)
    x0 = model.init(mllib.generator(0))

    def final(seed):
        return fl.run(fl.Scaffold(local_steps=2, lr=0.1), problem, x0, rounds=3, clients_per_round=5,
                      gen=mllib.generator(seed)).model  # fmt: skip

    assert torch.equal(final(1), final(1)) and not torch.equal(final(1), final(2))


def test_run_leaves_its_inputs_alone_and_records_rounds():
    problem = quadratic_problem()
    x0 = torch.ones(problem.dim, dtype=torch.double)
    history = fl.run(fl.FedAvg(local_steps=2, lr=0.05), problem, x0, rounds=7, clients_per_round=3,
                     gen=mllib.generator(0), metrics={"norm": lambda x: float(x.norm())}, eval_every=3)  # fmt: skip
    assert torch.equal(x0, torch.ones(problem.dim, dtype=torch.double))
    assert history.rounds == [0, 3, 6, 7] and len(history["norm"]) == 4


def test_run_returns_the_engines_history_with_the_algorithms_state():
    problem = quadratic_problem()
    optimum = problem.optimum()
    scaffold = fl.Scaffold(local_steps=5, lr=0.05)
    history = fl.run(scaffold, problem, torch.zeros(problem.dim, dtype=torch.double), rounds=40,
                     clients_per_round=problem.n, gen=mllib.generator(0), eval_every=10,
                     metrics={"closeness": lambda x: -float((x - optimum).norm())})  # fmt: skip
    assert isinstance(history, mllib.engine.History) and history.rounds == [0, 10, 20, 30, 40]
    assert history.closeness == history["closeness"] and history.rounds_to(history.closeness[-1], "closeness")
    assert torch.equal(history.model, history.algorithm.x)
    state = history.algorithm.state_dict()
    assert set(state) == {"x", "c", "c_clients"} and state["c"] is scaffold.c


def test_best_rate_takes_the_highest_median_and_the_smallest_rate_among_printed_ties():
    scores = {0.1: Spread([0.80, 0.99, 0.81]), 0.3: Spread([0.90, 0.91, 0.70]), 1.0: Spread([0.904, 0.95, 0.5])}
    assert fl.best_rate(scores) == 0.3  # medians 0.81, 0.90, 0.904: 0.90 ties 0.904 at 2 decimals
    assert fl.best_rate(scores, decimals=3) == 1.0
    assert fl.best_rate({3.0: Spread([0.9]), 1.0: Spread([0.9])}) == 1.0  # dict order does not matter
    with pytest.raises(ValueError, match="scores"):
        fl.best_rate({})
    with pytest.raises(ValueError, match="decimals"):
        fl.best_rate(scores, decimals=-1)
    with pytest.raises(TypeError, match="decimals"):
        fl.best_rate(scores, decimals=1.5)


def test_a_separate_sampling_generator_gives_every_algorithm_the_same_clients():
    problem = quadratic_problem(n=10, d=2)
    problem.noise = 0.1  # noisy gradients draw from gen: without sample_gen the clients would differ
    seen = {}
    for algorithm in (fl.FedSGD(lr=0.1), fl.FedAvg(local_steps=7, lr=0.1)):
        calls = []
        original = algorithm.update

        def spy(p, x, s, g, original=original, calls=calls):
            calls.append(s.tolist())
            return original(p, x, s, g)

        algorithm.update = spy
        fl.run(algorithm, problem, torch.zeros(2, dtype=torch.double), rounds=5, clients_per_round=3,
               gen=mllib.generator(0), sample_gen=mllib.generator(9))  # fmt: skip
        seen[algorithm.name] = calls
    assert seen["FedSGD"] == seen["FedAvg"]


@given(st.floats(0.1, 10.0))
def test_server_step_ignores_the_scale_of_the_weights(scale):
    g = mllib.generator(0)
    x, Y = torch.randn(3, generator=g).double(), torch.randn(4, 3, generator=g).double()
    w = torch.rand(4, generator=g) + 0.1
    assert torch.allclose(fl.server_step(x, Y, w), fl.server_step(x, Y, scale * w))


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("make, message", [
    (lambda: fl.FedAvg(local_steps=0, lr=0.1), "local_steps"),
    (lambda: fl.Scaffold(local_steps=2, lr=-0.1), "lr"),
    (lambda: fl.FedSGD(lr=-1.0), "lr"),
    (lambda: fl.Mime(local_steps=2, lr=0.1, momentum=1.0), "momentum"),
    (lambda: fl.FedAvg(local_steps=2, lr=0.1, server_lr=0.0), "server_lr"),
    (lambda: fl.sample_clients(5, 6, mllib.generator(0)), "clients per round"),
    (lambda: fl.fedavg_fixed_point(quadratic_problem(), local_steps=0, lr=0.1), "local_steps"),
    (lambda: fl.scalar_quadratics(torch.tensor([1.0, -1.0]), torch.zeros(2)), "curvature"),
])  # fmt: skip
def test_bad_input_raises_a_clear_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_more_sampled_clients_than_clients_is_refused_by_run():
    problem = quadratic_problem(n=4)
    with pytest.raises(ValueError, match=r"clients_per_round must be in \[1, n_clients=4\], got 5"):
        fl.run(fl.FedAvg(local_steps=1, lr=0.1), problem, torch.zeros(3, dtype=torch.double), rounds=1,
               clients_per_round=5, gen=mllib.generator(0))  # fmt: skip


# ---------------------------------------------------------------- widget logic
def test_drift_trajectories_and_plot():
    problem = fl.scalar_quadratics(torch.tensor([1.0, 4.0]), torch.tensor([[-1.0, -2.0], [1.0, 2.0]]))
    traj = fl.drift_trajectories(problem, local_steps=5, lr=0.1, rounds=60, x0=torch.zeros(2, dtype=torch.double))
    assert list(traj) == ["FedAvg", "SCAFFOLD", "MIME"] and all(t.shape == (61, 2) for t in traj.values())
    assert torch.allclose(traj["FedAvg"][-1], fl.fedavg_fixed_point(problem, local_steps=5, lr=0.1), atol=1e-6)
    assert torch.allclose(traj["SCAFFOLD"][-1], problem.optimum(), atol=1e-6)
    fig = fl.plot_drift(traj, optimum=0.6, fixed_point=0.3, column=1)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "communication round" and ax.get_ylabel() == "server model x" and ax.get_title()
    assert len(ax.lines) == 5 and float(ax.lines[0].get_ydata()[-1]) == pytest.approx(float(traj["FedAvg"][-1, 1]))
    plt.close(fig)


# ---------------------------------------------------------------- lab checks
def fedavg_round(x, A, b, weights, local_steps, lr, server_lr):
    Y = x.expand(len(b), -1)
    for _ in range(local_steps):
        Y = Y - lr * (torch.einsum("nij,nj->ni", A, Y) - b)
    return x + server_lr * (weights @ (Y - x)) / weights.sum()


def scaffold_round(x, c, C, A, b, weights, local_steps, lr, server_lr):
    Y = x.expand(len(b), -1)
    for _ in range(local_steps):
        Y = Y - lr * (torch.einsum("nij,nj->ni", A, Y) - b + c - C)
    C_new = C - c + (x - Y) / (local_steps * lr)
    p = weights / weights.sum()
    return x + server_lr * p @ (Y - x), c + p @ (C_new - C), C_new


def _scaffold_with_library(x, c, C, A, b, weights, K, lr, s):
    x_new, c_new, C_new = scaffold_round(x, c, C, A, b, weights, K, lr, s)
    return x_new, c_new, fl.scaffold_control_update(C, c, x, x_new, K, lr)


def mimelite_step(Y, g, m, lr, momentum):
    return Y - lr * ((1 - momentum) * g + momentum * m)


WRONG = {
    check.fedavg_round: (fedavg_round, []),  # its known mistakes: tests/test_checks.py
    check.scaffold_round: (scaffold_round, [
        lambda x, c, C, A, b, w, K, lr, s: scaffold_round(x, c, C, A, b, w, K, lr, s)[:2],
        lambda x, c, C, A, b, w, K, lr, s: (*scaffold_round(x, c, C, A, b, w, K, lr, s)[:2], C.zero_()),
        _scaffold_with_library,
    ]),
    check.mimelite_step: (mimelite_step, [
        lambda Y, g, m, lr, b: Y - lr * (b * g + (1 - b) * m),
        lambda Y, g, m, lr, b: Y - lr * g,
        lambda Y, g, m, lr, b: Y - lr * ((1 - b) * g + m),
        lambda Y, g, m, lr, b: Y - lr * ((1 - b) * g + b * m.mean()),
    ]),
}  # fmt: skip
CASES = [(c, w) for c, (_, wrongs) in WRONG.items() for w in wrongs]


@pytest.mark.parametrize("check_", list(WRONG), ids=lambda c: c.__name__)
def test_checks_pass_the_solution(check_, capsys):
    assert_passes(check_, WRONG[check_][0], capsys)


@pytest.mark.parametrize("check_, wrong", CASES, ids=[f"{c.__name__}-{i}" for i, (c, _) in enumerate(CASES)])
def test_checks_reject_wrong_answers(check_, wrong):
    assert_rejects(check_, wrong)

