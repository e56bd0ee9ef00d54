import itertools

import matplotlib.pyplot as plt
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mllib
from mllib import personalized as pers
from mllib.checks import personalized as check
from selfchecks import assert_passes, assert_rejects

LR, BATCH = 0.3, 8


@pytest.fixture(scope="module")
def setting(digits):
    gen = mllib.setup(seed=0)  # one torch thread: the small batched steps run fastest
    clients = mllib.with_tasks(mllib.split(digits, 8, "iid", gen=gen), "permutation", n_tasks=2, gen=gen)
    model = mllib.FlatModel(mllib.mlp(64, 10, hidden=(16,)))
    return model, clients, model.init(gen)


# Ditto ---------------------------------------------------------------------------------

def test_ditto_with_lambda_zero_is_local_training(setting):
    model, clients, x0 = setting
    history = pers.ditto(model, clients, rounds=3, local_steps=2, personal_steps=4, lr=LR, lam=0.0,
                         batch_size=BATCH, gen=mllib.generator(5), x0=x0)  # fmt: skip
    seed = int(torch.randint(0, 2**62, (1,), generator=mllib.generator(5)))
    local = mllib.local_sgd(model, x0.expand(clients.n, -1), clients, steps=12, lr=LR, batch_size=BATCH,
                            gen=torch.Generator().manual_seed(seed))  # fmt: skip
    assert torch.equal(history.algorithm.local.personal, local)
    assert torch.equal(history.algorithm.state_dict()["personal"], local)


def test_ditto_with_huge_lambda_stays_at_the_global_model(setting):
    model, clients, x0 = setting
    V = x0.expand(clients.n, -1) + 0.5 * mllib.runtime.randn(clients.n, model.dim, gen=mllib.generator(1))
    w = model.init(mllib.generator(2))
    xb, yb = clients.batches(BATCH, mllib.generator(3))
    out = pers.ditto_update(V, w, model.grad(V, xb, yb), LR, 1e6)
    assert (out - w).abs().max() < 1e-3


def test_ditto_with_huge_lambda_scores_like_its_global_model(setting):
    model, clients, x0 = setting
    r = pers.ditto(model, clients, rounds=6, local_steps=5, personal_steps=5, lr=LR, lam=1e6, batch_size=BATCH,
                   gen=mllib.generator(0), x0=x0)  # fmt: skip
    assert r.rounds == [1, 2, 3, 4, 5, 6] and r.algorithm.local.personal.shape == (clients.n, model.dim)
    assert r.model.shape == (model.dim,) and r.global_accuracy[-1].shape == (clients.n,)
    # the personal steps of round t pull toward w^t, the global model of the round before
    assert (r.personal_accuracy[-1] - r.global_accuracy[-2]).abs().max() < 0.01


def test_the_ditto_part_moves_the_personal_models_of_the_selected_clients_only(setting):
    model, clients, x0 = setting
    part = pers.Ditto(model, clients, x0, steps=1, personal_steps=2, lr=LR, lam=1.0, batch_size=BATCH,
                      gen=mllib.generator(0), personal_gen=mllib.generator(1))  # fmt: skip
    U = part(x0, torch.tensor([1, 4]))
    assert U.shape == (2, model.dim)
    assert (part.personal != x0).any(1).tolist() == [i in (1, 4) for i in range(clients.n)]


def test_ditto_calls_the_displayed_personal_step(setting, monkeypatch):
    """Lecture 02 shows ``ditto_update``'s source: Ditto's personal models move by that very function."""
    model, clients, x0 = setting
    calls = []
    step = pers.training.ditto_update.__wrapped__  # a round calls it unchecked: its arguments were checked once
    monkeypatch.setattr(pers.training.ditto_update, "__wrapped__", lambda *args: calls.append(1) or step(*args))
    pers.ditto(model, clients, rounds=2, local_steps=1, personal_steps=3, lr=LR, lam=1.0, batch_size=BATCH,
               gen=mllib.generator(5), x0=x0)  # fmt: skip
    assert len(calls) == 2 * 3


@given(lam=st.floats(0, 1e4), lr=st.floats(1e-3, 1.0))
def test_ditto_update_moves_toward_the_global_model_as_lambda_grows(lam, lr):
    gen = mllib.generator(0)
    V, w, G = (mllib.runtime.randn(*s, gen=gen) for s in [(3, 4), (4,), (3, 4)])
    weak, strong = pers.ditto_update(V, w, G, lr, lam), pers.ditto_update(V, w, G, lr, 2 * lam + 1)
    assert ((strong - w).norm(dim=1) <= (weak - w).norm(dim=1) + 1e-5).all()


def test_ditto_update_at_lambda_zero_is_an_sgd_step():
    gen = mllib.generator(0)
    V, w, G = (mllib.runtime.randn(*s, gen=gen) for s in [(3, 4), (4,), (3, 4)])
    assert torch.equal(pers.ditto_update(V, w, G, 0.1, 0.0), V - 0.1 * G)


@pytest.mark.parametrize(("kwargs", "name"), [(dict(lr=0.0, lam=1.0), "lr"), (dict(lr=0.1, lam=-1.0), "lam")])
def test_ditto_update_rejects_bad_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name} must be"):
        pers.ditto_update(torch.zeros(2, 3), torch.zeros(3), torch.zeros(2, 3), **kwargs)


def test_ditto_rejects_zero_rounds(setting):
    model, clients, _ = setting
    with pytest.raises(ValueError, match="^rounds must be an integer >= 1, got 0"):
        pers.ditto(model, clients, rounds=0, local_steps=1, personal_steps=1, lr=LR, lam=1.0, batch_size=2,
                   gen=mllib.generator(0))  # fmt: skip


# Fine-tuning and interpolation ---------------------------------------------------------

def test_zero_fine_tuning_steps_return_the_global_model(setting):
    model, clients, x0 = setting
    V = pers.fine_tune(model, x0, clients, steps=0, lr=LR, batch_size=BATCH, gen=mllib.generator(0))
    assert torch.equal(V, x0.expand(clients.n, -1))


def test_fine_tuning_is_local_sgd_from_the_global_model(setting):
    model, clients, x0 = setting
    V = pers.fine_tune(model, x0, clients, steps=5, lr=LR, batch_size=BATCH, gen=mllib.generator(4))
    local = mllib.local_sgd(model, x0.expand(clients.n, -1), clients, steps=5, lr=LR, batch_size=BATCH,
                            gen=mllib.generator(4))  # fmt: skip
    assert torch.allclose(V, local, atol=1e-6)


def test_fine_tune_on_rejects_a_client_matrix_as_global_model(setting):
    model, _, x0 = setting
    with pytest.raises(ValueError, match="w must be one model"):
        pers.fine_tune_on(model, x0[None], torch.zeros(1, 1, 2, 1, 8, 8), torch.zeros(1, 1, 2).long(), 0.1)


@given(alpha=st.floats(0, 1))
def test_interpolation_lies_between_its_ends(alpha):
    gen = mllib.generator(0)
    V, w = mllib.runtime.randn(3, 5, gen=gen), mllib.runtime.randn(5, gen=gen)
    mixed = pers.interpolate(V, w, alpha)
    assert torch.allclose((mixed - w), alpha * (V - w), atol=1e-5)


def test_interpolation_ends_are_local_and_global():
    V, w = torch.randn(3, 5), torch.randn(5)
    assert torch.equal(pers.interpolate(V, w, 1.0), V) and torch.equal(pers.interpolate(V, w, 0.0), w.expand(3, -1))
    per_client = pers.interpolate(V, w, torch.tensor([0.0, 1.0, 0.0]))
    assert torch.equal(per_client[1], V[1]) and torch.equal(per_client[2], w)


@pytest.mark.parametrize("alpha", [1.5, -0.1, torch.tensor([0.5, 0.5])])
def test_interpolation_rejects_bad_alpha(alpha):
    with pytest.raises(ValueError, match="^alpha must be"):
        pers.interpolate(torch.zeros(3, 2), torch.zeros(2), alpha)


# Clients: restrict and relabel ---------------------------------------------------------

def test_restrict_keeps_each_clients_data_and_task(setting):
    _, clients, _ = setting
    sub = pers.restrict(clients, [3, 1])
    for j, i in enumerate([3, 1]):
        assert all(torch.equal(a, b) for a, b in zip(sub.client_data(j), clients.client_data(i)))
    assert torch.equal(sub.label_maps, clients.label_maps[[3, 1]])
    assert torch.equal(sub.held_out_sets()[1], clients.held_out_sets()[1][[3, 1]])


def test_restrict_caps_the_samples(setting):
    _, clients, _ = setting
    assert pers.restrict(clients, [0, 0, 2], [5, 10, 10_000]).sizes.tolist() == [5, 10, int(clients.sizes[2])]


@pytest.mark.parametrize("among", [[], [8], [-1]])
def test_restrict_rejects_unknown_clients(setting, among):
    with pytest.raises((TypeError, ValueError), match="^among must"):  # [] is a float tensor: no indices
        pers.restrict(setting[1], among)


def test_relabel_renames_training_and_test_labels_alike(digits):
    clients = mllib.split(digits, 2, gen=mllib.generator(0))
    swap = [1, 0, 2, 3, 4, 5, 6, 7, 8, 9]
    renamed = pers.relabel(clients, swap)
    assert torch.equal(renamed.y, torch.tensor(swap)[clients.y])
    assert torch.equal(renamed.held_out_sets()[1], torch.tensor(swap)[clients.held_out_sets()[1]])
    with pytest.raises(ValueError, match="label_map"):
        pers.relabel(clients, [0] * 10)


# Training in stages --------------------------------------------------------------------

def test_one_stage_is_fedavg_on_the_active_clients(setting):
    model, clients, x0 = setting
    staged = pers.train_in_stages(model, clients, [[0, 2]], rounds=3, local_steps=2, lr=LR, batch_size=BATCH,
                                  gen=mllib.generator(0), x0=x0)  # fmt: skip
    plain = mllib.run_rounds(model, pers.restrict(clients, [0, 2]), rounds=3, local_steps=2, lr=LR,
                             batch_size=BATCH, gen=mllib.generator(0), x0=x0)  # fmt: skip
    assert torch.equal(staged.model, plain.model)
    assert staged.rounds == [3] and staged.client_accuracy[0].shape == (clients.n,)


def test_stages_run_as_one_engine_run_equal_to_fedavg_stage_by_stage(setting):
    model, clients, x0 = setting
    stages = [[5, 1, 3], [0, 2, 0]]  # any order, repeats allowed
    staged = pers.train_in_stages(model, clients, stages, rounds=2, local_steps=2, lr=LR, batch_size=BATCH,
                                  gen=mllib.generator(0), x0=x0)  # fmt: skip
    gen, x = mllib.generator(0), x0
    for stage, accuracy in zip(stages, staged.client_accuracy):
        x = mllib.run_rounds(model, pers.restrict(clients, stage), rounds=2, local_steps=2, lr=LR,
                             batch_size=BATCH, gen=gen, x0=x).model  # fmt: skip
        assert torch.equal(accuracy, mllib.evaluate(model, x, clients))
    assert staged.rounds == [2, 4] and torch.equal(staged.model, x)


def test_sequential_training_forgets_the_first_task(setting):
    model, clients, x0 = setting
    tasks = [[0, 2, 4, 6], [1, 3, 5, 7]]  # permutation tasks 0 and 1
    r = pers.train_in_stages(model, clients, tasks, rounds=10, local_steps=5, lr=LR, batch_size=BATCH,
                             gen=mllib.generator(0), x0=x0)  # fmt: skip
    assert pers.forgetting(r, tasks[0]) > 0.2
    assert pers.forgetting(r, tasks[1]) == 0.0


@pytest.mark.parametrize("stages", [[], [[0], []], [[0, 8]]])
def test_stages_must_list_clients(setting, stages):
    with pytest.raises(ValueError, match="stages must"):
        pers.train_in_stages(setting[0], setting[1], stages, rounds=1, local_steps=1, lr=LR, batch_size=2,
                             gen=mllib.generator(0))  # fmt: skip


# Optimal collaboration weight ----------------------------------------------------------

@pytest.mark.parametrize("var_own, n_own, var_other, n_other, bias", [
    (1.0, 5, 1.0, 50, 0.3), (4.0, 10, 1.0, 20, 0.5), (1.0, 20, 2.0, 10, 0.1), (0.5, 3, 1.0, 100, 1.0),
])  # fmt: skip
def test_optimal_weight_minimizes_the_monte_carlo_mse(var_own, n_own, var_other, n_other, bias):
    betas = torch.linspace(0, 1, 21)
    mse = pers.monte_carlo_mse(betas, var_own, n_own, var_other, n_other, bias, trials=200_000, gen=mllib.generator(0))
    fitted = pers.fitted_minimizer(betas, mse)
    assert abs(fitted - float(pers.optimal_weight(var_own, n_own, var_other, n_other, bias))) < 0.02


positive = st.floats(0.01, 10)
counts = st.integers(1, 1000)


@given(v0=positive, n0=counts, v1=positive, n1=counts, bias=st.floats(-3, 3), beta=st.floats(0, 1))
def test_no_weight_beats_the_optimal_one(v0, n0, v1, n1, bias, beta):
    best = pers.optimal_weight(v0, n0, v1, n1, bias)
    assert 0 < best <= 1
    assert pers.mse_of_weight(best, v0, n0, v1, n1, bias) <= pers.mse_of_weight(beta, v0, n0, v1, n1, bias) * (1 + 1e-9)


@given(v0=positive, n0=counts, v1=positive, n1=counts, beta=st.floats(0.01, 1), bias=st.floats(0, 3))
def test_collaboration_hurts_exactly_beyond_the_harmful_bias(v0, n0, v1, n1, beta, bias):
    threshold = float(pers.harmful_bias(v0, n0, v1, n1, beta))
    hurts = pers.mse_of_weight(beta, v0, n0, v1, n1, bias) > pers.mse_of_weight(0.0, v0, n0, v1, n1, bias)
    if abs(bias - threshold) > 1e-6 * (1 + threshold):
        assert bool(hurts) == (bias > threshold)


def test_optimal_weight_is_zero_when_the_own_mean_is_exact():
    assert float(pers.optimal_weight(0.0, 5, 1.0, 5, 0.0)) == 0.0
    assert float(pers.optimal_weight(0.0, 5, 0.0, 5, 0.0)) == 0.0


@pytest.mark.parametrize("args, name", [((-1.0, 5, 1.0, 5, 0.0), "var_own"), ((1.0, 0, 1.0, 5, 0.0), "n_own"),
                                        ((1.0, 5, -1.0, 5, 0.0), "var_other")])  # fmt: skip
def test_optimal_weight_rejects_bad_input(args, name):
    with pytest.raises(ValueError, match=name):
        pers.optimal_weight(*args)


def test_collaboration_widget_figure_is_titled_and_labelled():
    fig = pers.plot_collaboration(10, 1.0, 0.3, trials=200)
    left, right = fig.axes[:2]
    assert left.get_xlabel() == "collaboration weight beta" and right.get_ylabel() == "mean squared error"
    assert "n0 = 10" in fig.get_suptitle()
    plt.close(fig)


# Shapley values ------------------------------------------------------------------------

VALUES = [0.5, -0.2, 1.0, 0.0, 0.3]


def additive(S):
    return sum(VALUES[i] for i in S)


def test_shapley_recovers_an_additive_game():
    assert torch.allclose(pers.exact_shapley(additive, 5), torch.tensor(VALUES, dtype=torch.float64))
    mc = pers.monte_carlo_shapley(additive, 5, permutations=3, gen=mllib.generator(0))
    assert torch.allclose(mc[-1], torch.tensor(VALUES, dtype=torch.float64))


def majority(S):  # player 3 is null; players 0, 1, 2 are symmetric
    return float(len(S - {3}) >= 2)


def test_a_null_player_gets_zero():
    assert pers.exact_shapley(majority, 4)[3] == 0
    assert pers.monte_carlo_shapley(majority, 4, permutations=20, gen=mllib.generator(0))[-1, 3] == 0


def test_symmetric_players_get_equal_values():
    phi = pers.exact_shapley(majority, 4)
    assert torch.allclose(phi[:3], torch.full((3,), 1 / 3, dtype=torch.float64))


@given(st.lists(st.floats(-1, 1), min_size=1, max_size=6))
def test_shapley_values_sum_to_the_grand_coalition(weights):
    game = lambda S: sum(weights[i] for i in S) ** 2  # noqa: E731  (not additive)
    n = len(weights)
    assert abs(float(pers.exact_shapley(game, n).sum()) - (game(range(n)) - game([]))) < 1e-9


def test_leave_one_out_of_an_additive_game_is_each_value():
    assert torch.allclose(pers.leave_one_out(additive, 5), torch.tensor(VALUES, dtype=torch.float64))


@pytest.fixture(scope="module")
def federation(digits):
    model = mllib.FlatModel(mllib.logistic_regression(64, 10))
    clients = pers.restrict(mllib.split(digits, 4, gen=mllib.generator(0)), range(4), [120, 60, 20, 120])
    return pers.federation_game(model, clients, digits.x_test, digits.y_test, rounds=3, local_steps=3, lr=0.5,
                                batch_size=16, seed=0, free_riders=[3])  # fmt: skip


def test_monte_carlo_shapley_approaches_the_exact_values_on_a_federation(federation):
    exact = pers.exact_shapley(federation, 4)
    running = pers.monte_carlo_shapley(federation, 4, permutations=400, gen=mllib.generator(0))
    errors = (running - exact).abs().max(1).values
    assert errors[-1] < 0.02 and errors[-1] < errors[4]
    assert federation.evaluations == 16  # every coalition computed once, then cached


def test_coalition_values_do_not_depend_on_evaluation_order(federation):
    fresh = pers.federation_game(federation_model := mllib.FlatModel(mllib.logistic_regression(64, 10)),
                                 *_federation_inputs(), rounds=3, local_steps=3, lr=0.5, batch_size=16, seed=0,
                                 free_riders=[3])  # fmt: skip
    assert federation_model.dim == 650
    for S in [frozenset({1, 2}), frozenset({0}), frozenset({0, 1, 2, 3})]:
        assert fresh(S) == federation(S)


def _federation_inputs():
    digits = mllib.load("digits", gen=mllib.generator(0))
    clients = pers.restrict(mllib.split(digits, 4, gen=mllib.generator(0)), range(4), [120, 60, 20, 120])
    return clients, digits.x_test, digits.y_test


def test_a_free_rider_alone_adds_nothing(federation):
    assert federation({3}) == federation(set())


def test_shapley_rejects_bad_counts():
    with pytest.raises(ValueError, match="n_players"):
        pers.exact_shapley(additive, 17)
    with pytest.raises(ValueError, match="permutations"):
        pers.monte_carlo_shapley(additive, 5, permutations=0, gen=mllib.generator(0))


# Transfer and over-parameterization ----------------------------------------------------

def test_transfer_curve_scores_both_starts_for_every_count(digits):
    model = mllib.FlatModel(mllib.logistic_regression(64, 10))
    target = mllib.split(digits, 5, gen=mllib.generator(0))
    curve = pers.transfer_curve(model, model.init(mllib.generator(1)), target, [2, 10, 50], steps=5, lr=0.1,
                                batch_size=4, gen=mllib.generator(0))  # fmt: skip
    assert curve.fine_tuned.shape == curve.alone.shape == (3,)
    with pytest.raises(ValueError, match="sample_counts"):
        pers.transfer_curve(model, model.init(mllib.generator(1)), target, [10_000], steps=1, lr=0.1,
                            batch_size=4, gen=mllib.generator(0))  # fmt: skip


def test_linear_clients_alone_win_under_and_lose_over_parameterized():
    r = pers.linear_collaboration([5, 100], n_clients=10, n_samples=20, bias=0.5, noise=0.5, gen=mllib.generator(0))
    assert r.local[0] < r.pooled[0]  # enough own samples: the bias of others costs more
    assert r.local[1] > r.pooled[1]  # fewer samples than parameters: alone is hopeless
    assert r.personalized[1] < r.local[1]


def test_linear_collaboration_rejects_negative_noise():
    with pytest.raises(ValueError, match="^noise must be a finite number >= 0, got -1.0"):
        pers.linear_collaboration([5], n_clients=2, n_samples=3, bias=0.0, noise=-1.0, gen=mllib.generator(0))


def test_linear_plot_is_labelled():
    r = pers.linear_collaboration([5, 50], n_clients=3, n_samples=10, bias=0.5, noise=0.1, gen=mllib.generator(0))
    fig = pers.plot_linear_collaboration(r, 10)
    assert fig.axes[0].get_xlabel() == "parameters d" and fig.axes[0].get_title()
    plt.close(fig)


# Lab self-checks -----------------------------------------------------------------------

def ditto_solution(V, w, G, lr, lam):
    return (V - lr * G + lr * lam * w) / (1 + lr * lam)


def weight_solution(var_own, n_own, var_other, n_other, bias):
    own = var_own / n_own
    return own / (own + var_other / n_other + bias**2)


def fine_tune_solution(model, w, xb, yb, lr):
    V = w.expand(xb.shape[1], -1)
    for x, y in zip(xb, yb):
        V = V - lr * model.grad(V, x, y)
    return V


def ditto_round_solution(model, w, V, xb, yb, xp, yp, weights, lr, lam):
    Y = w.expand(len(V), -1)
    for x, y in zip(xb, yb):
        Y = Y - lr * model.grad(Y, x, y)
    for x, y in zip(xp, yp):
        V = ditto_solution(V, w, model.grad(V, x, y), lr, lam)
    return weights @ Y / weights.sum(), V


SOLUTIONS = {"ditto_update": ditto_solution, "optimal_weight": weight_solution, "fine_tune": fine_tune_solution,
             "ditto_round": ditto_round_solution}  # fmt: skip
WRONG = {
    "ditto_update": {
        "gradient step": lambda V, w, G, lr, lam: V - lr * (G + lam * (V - w)),
        "no division": lambda V, w, G, lr, lam: V - lr * G + lr * lam * w,
        "pulls away": lambda V, w, G, lr, lam: (V - lr * G - lr * lam * w) / (1 + lr * lam),
        "ignores gradient": lambda V, w, G, lr, lam: (V + lr * lam * w) / (1 + lr * lam),
    },
    "optimal_weight": {
        "weight on own": lambda v0, n0, v1, n1, b: 1 - weight_solution(v0, n0, v1, n1, b),
        "bias not squared": lambda v0, n0, v1, n1, b: (v0 / n0) / (v0 / n0 + v1 / n1 + b.abs()),
        "forgets sample sizes": lambda v0, n0, v1, n1, b: v0 / (v0 + v1 + b**2),
        "ignores bias": lambda v0, n0, v1, n1, b: (v0 / n0) / (v0 / n0 + v1 / n1),
    },
    "ditto_round": {
        "calls the library": lambda model, w, V, xb, yb, xp, yp, weights, lr, lam: (
            weights @ pers.fine_tune_on(model, w, xb, yb, lr) / weights.sum(), V),
        "personal models unchanged": lambda model, w, V, xb, yb, xp, yp, weights, lr, lam: (
            ditto_round_solution(model, w, V, xb, yb, xp, yp, weights, lr, lam)[0], V.clone()),
    },
    "fine_tune": {
        "no steps": lambda model, w, xb, yb, lr: w.expand(xb.shape[1], -1).clone(),
        "averages gradients": lambda model, w, xb, yb, lr: _fedsgd(model, w, xb, yb, lr),
        "wrong sign": lambda model, w, xb, yb, lr: fine_tune_solution(model, w, xb, yb, -lr),
        "one row": lambda model, w, xb, yb, lr: fine_tune_solution(model, w, xb, yb, lr)[0],
    },
}


def _fedsgd(model, w, xb, yb, lr):
    V = w.expand(xb.shape[1], -1)
    for x, y in zip(xb, yb):
        V = V - lr * model.grad(V, x, y).mean(0)
    return V


@pytest.mark.parametrize("name", list(SOLUTIONS))
def test_check_passes_the_solution(name, capsys):
    assert_passes(getattr(check, name), SOLUTIONS[name], capsys)


@pytest.mark.parametrize("name, wrong", [(n, w) for n in WRONG for w in WRONG[n]])
def test_check_rejects_wrong_answers(name, wrong):
    assert_rejects(getattr(check, name), WRONG[name][wrong])


def test_checks_compare_against_the_library():
    assert check.ditto_update.reference is pers.ditto_update
    assert check.fine_tune.reference is pers.fine_tune_on
    assert list(itertools.islice(SOLUTIONS, 3)) == ["ditto_update", "optimal_weight", "fine_tune"]


def test_corrupt_labels_touches_only_the_chosen_client(digits):
    clients = mllib.split(digits, 3, gen=mllib.generator(0))
    noisy = pers.corrupt_labels(clients, 1, 1.0, mllib.generator(0))
    start, size = int(clients.offsets[1]), int(clients.sizes[1])
    changed = noisy.y != clients.y
    assert not changed[:start].any() and not changed[start + size :].any()
    assert 0.8 < changed[start : start + size].float().mean() < 0.95  # 9 in 10 random labels differ
    with pytest.raises(ValueError, match=r"^fraction must be a finite number in \[0, 1\], got 2.0"):
        pers.corrupt_labels(clients, 0, 2.0, mllib.generator(0))


def test_harmful_bias_needs_a_positive_weight():
    with pytest.raises(ValueError, match="beta must be in"):
        pers.harmful_bias(1.0, 10, 1.0, 10, 0.0)


def test_fitted_minimizer_rejects_a_concave_fit():
    with pytest.raises(ValueError, match="not convex"):
        pers.fitted_minimizer([0.0, 0.5, 1.0], [0.0, 1.0, 0.0])
    assert abs(pers.fitted_minimizer([0.0, 0.5, 1.0], [1.0, 0.0, 1.0]) - 0.5) < 1e-9


# Clients that come and go ---------------------------------------------------------------

def test_diurnal_availability_peaks_at_each_zones_hour_and_averages_half_its_peak():
    availability = pers.diurnal_availability([0, 1, 2, 3, 0], peaks=(0.8, 0.6, 0.4, 0.2), period=8)
    assert torch.allclose(availability(8), torch.tensor([0.8, 0.3, 0.0, 0.1, 0.8], dtype=torch.float64))
    assert torch.allclose(availability(2)[1], torch.tensor(0.6, dtype=torch.float64))  # zone 1 peaks a quarter day later
    rates = pers.participation_rates(availability, 16)  # two whole days
    assert torch.allclose(rates, torch.tensor([0.4, 0.3, 0.2, 0.1, 0.4], dtype=torch.float64))


@pytest.mark.parametrize("zones, peaks, period, message", [
    ([0, 2], (0.5, 0.5), 4, "zones"), ([0], (0.0,), 4, "peaks"), ([0], (1.5,), 4, "peaks"), ([0], (0.5,), 0, "period"),
])  # fmt: skip
def test_diurnal_availability_rejects_bad_input(zones, peaks, period, message):
    with pytest.raises(ValueError, match=message):
        pers.diurnal_availability(zones, peaks, period)


def test_available_selects_each_client_as_often_as_its_probability():
    q = torch.tensor([0.95, 0.5, 0.1, 0.0], dtype=torch.float64)  # empty draws (2%) are rare
    select = pers.available(lambda r: q, mllib.generator(0))
    counts = torch.zeros(4)
    for r in range(1, 4001):
        S = select(r)
        assert len(S) >= 1 and torch.equal(S, S.sort().values)
        counts[S] += 1
    assert torch.allclose(counts / 4000, q.float(), atol=0.04)
    assert counts[3] == 0  # never online: never selected, not even for an otherwise empty round


def test_available_never_returns_an_empty_round():
    select = pers.available(lambda r: torch.full((5,), 1e-6, dtype=torch.float64), mllib.generator(0))
    assert all(len(select(r)) == 1 for r in range(1, 50))


def test_reweighting_by_availability_gives_rare_clients_their_share(setting):
    model, clients, x0 = setting
    rare = pers.diurnal_availability([0, 0, 0, 0, 1, 1, 1, 1], peaks=(1.0, 0.2), period=4)
    runs = {reweight: pers.fedavg_with_availability(model, clients, rare, rounds=4, local_steps=2, lr=LR,
                                                    batch_size=BATCH, gen=mllib.generator(3), x0=x0, reweight=reweight)
            for reweight in (False, True)}  # fmt: skip
    assert len(runs[False].rounds) == 4 and runs[False].client_accuracy[0].shape == (8,)
    plain = runs[False].algorithm.weights
    assert torch.allclose(runs[True].algorithm.weights * pers.participation_rates(rare, 4).to(plain), plain)
