import functools

import matplotlib.pyplot as plt
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mllib
from mllib import robust
from mllib.checks import robust as check
from mllib.robust import figures
from mllib.spread import Spread
from selfchecks import assert_passes, assert_rejects

NON_FINITE = [float("nan"), float("inf"), -float("inf"), 1e30]


def honest_and_bad(value, n=11, f=3, d=6, seed=0):
    gen = mllib.generator(seed)
    X = 1 + 0.1 * torch.randn(n, d, generator=gen)
    X[n - f :] = value
    return X, X[: n - f]


def cc(f, **kw):
    return robust.CenteredClipping(f=f, **kw)


ROBUST = {
    "median": lambda X, f: robust.coordinate_median(X, f),
    "trimmed mean": lambda X, f: robust.trimmed_mean(X, f),
    "krum": lambda X, f: robust.krum(X, f),
    "multi-krum": lambda X, f: robust.multi_krum(X, f),
    "geometric median": lambda X, f: robust.geometric_median(X, f),
}


@pytest.mark.parametrize("value", NON_FINITE, ids=str)
@pytest.mark.parametrize("name", list(ROBUST))
def test_robust_aggregators_ignore_non_finite_and_huge_rows(name, value):
    X, honest = honest_and_bad(value)
    out = ROBUST[name](X, 3)
    assert torch.isfinite(out).all()
    assert (out - honest.mean(0)).abs().max() < 0.3


@pytest.mark.parametrize("value", NON_FINITE, ids=str)
def test_centered_clipping_moves_at_most_f_tau_over_n_minus_f_from_the_honest_mean(value):
    X, honest = honest_and_bad(value)
    tau, f, n = 0.5, 3, 11
    out = cc(f, tau=tau, iterations=50)(X)
    assert torch.isfinite(out).all()
    assert torch.linalg.vector_norm(out - honest.mean(0)) <= f * tau / (n - f) + 1e-4


def test_the_mean_is_lost_to_a_single_huge_row():
    X, honest = honest_and_bad(1e30, f=1)
    assert (robust.mean(X) - honest.mean(0)).abs().min() > 1e20


@given(seed=st.integers(0, 10_000), f=st.integers(1, 4))
def test_krum_picks_an_honest_row_when_the_honest_rows_are_tight(seed, f):
    gen = mllib.generator(seed)
    n, d = 2 * f + 3 + seed % 3, 5
    X = 0.01 * torch.randn(n, d, generator=gen)
    X[n - f :] = 3 * torch.randn(f, d, generator=gen)
    perm = torch.randperm(n, generator=gen)
    out = robust.krum(X[perm], f)
    assert (out == X[: n - f]).all(1).any()


def permutation_invariant(name):
    def make(f):
        return {
            "mean": functools.partial(robust.mean, f=f),
            "median": functools.partial(robust.coordinate_median, f=f),
            "trimmed mean": functools.partial(robust.trimmed_mean, f=f),
            "krum": functools.partial(robust.krum, f=f),
            "multi-krum": functools.partial(robust.multi_krum, f=f),
            "geometric median": functools.partial(robust.geometric_median, f=f),
            "centered clipping": cc(f, tau=0.5, iterations=3),
        }[name]

    return make


@pytest.mark.parametrize(
    "name", ["mean", "median", "trimmed mean", "krum", "multi-krum", "geometric median", "centered clipping"]
)
@given(seed=st.integers(0, 10_000), n=st.integers(5, 12))
def test_permuting_rows_does_not_change_the_output(name, seed, n):
    gen = mllib.generator(seed)
    X = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    f = (n - 3) // 2
    perm = torch.randperm(n, generator=gen)
    make = permutation_invariant(name)
    assert torch.allclose(make(f)(X), make(f)(X[perm]), atol=1e-9)


def test_zeno_is_permutation_invariant_and_drops_the_worst_rows(digits):
    model = mllib.FlatModel(mllib.logistic_regression(64, 10))
    gen = mllib.generator(0)
    x = model.init(gen)
    clients = mllib.split(digits, 8, gen=gen)
    xb, yb = clients.batches(16, gen)
    G = model.grad(x.expand(8, -1), xb, yb)
    G[6:] = -100 * G[6:]  # two loud sign flips
    zeno = robust.Zeno(model, digits.x_test[:64], digits.y_test[:64], b=2, gamma=0.5)
    scores = zeno.scores(G, x)
    assert set(scores.topk(6).indices.tolist()) == set(range(6))
    perm = torch.randperm(8, generator=gen)
    assert torch.allclose(zeno.at(x)(G), zeno.at(x)(G[perm]), atol=1e-6)


@pytest.mark.parametrize("name", list(ROBUST) + ["mean"])
def test_half_or_more_byzantine_rows_is_refused(name):
    function = {**ROBUST, "mean": robust.mean}[name]
    with pytest.raises(ValueError, match=r"f=5 of n=10|n > 2f \+ 2"):
        function(torch.zeros(10, 3), 5)


@pytest.mark.parametrize("n, f", [(6, 2), (4, 1), (8, 3)])
def test_krum_needs_more_than_2f_plus_2_rows(n, f):
    with pytest.raises(ValueError, match=rf"n > 2f \+ 2.*n={n}, f={f}"):
        robust.krum(torch.zeros(n, 3), f)
    robust.krum(torch.zeros(n + 1, 3), f)  # one more row is enough


def test_centered_clipping_refuses_half_byzantine_rows():
    with pytest.raises(ValueError, match="f=2 of n=4"):
        cc(2)(torch.zeros(4, 3))


def test_median_of_an_even_count_is_the_midpoint():
    X = torch.tensor([[1.0], [2.0], [4.0], [10.0]])
    assert robust.coordinate_median(X).item() == 3.0


@given(seed=st.integers(0, 10_000), stack=st.booleans())
def test_columns_sort_like_torch_with_nan_and_inf_last(seed, stack):
    gen = mllib.generator(seed)
    X = torch.randn(3, 9, 5, generator=gen) if stack else torch.randn(9, 5, generator=gen)
    X[..., 7:, :] = float("nan")
    X[..., 0, :2] = float("inf")
    X[..., 1, 1:3] = -float("inf")
    expected = X.sort(-2).values
    for Y in (X, X.double(), X[..., :1, :].expand(X.shape)):
        assert torch.equal(robust.aggregators._sorted_columns(Y).nan_to_num(9.0), Y.sort(-2).values.nan_to_num(9.0))
    assert torch.equal(robust.aggregators._sorted_columns(X.requires_grad_()).nan_to_num(9.0), expected.nan_to_num(9.0))


def test_trimmed_mean_without_trimming_is_the_mean():
    X = torch.randn(7, 3, generator=mllib.generator(0))
    assert torch.allclose(robust.trimmed_mean(X, 0), X.mean(0))


def test_multi_krum_of_one_row_is_krum():
    X = torch.randn(9, 3, generator=mllib.generator(0))
    assert torch.equal(robust.multi_krum(X, 2, m=1), robust.krum(X, 2))


@given(seed=st.integers(0, 10_000))
def test_geometric_median_minimizes_the_sum_of_distances(seed):
    gen = mllib.generator(seed)
    X = torch.randn(9, 3, generator=gen, dtype=torch.float64)
    v = robust.geometric_median(X, iterations=200, nu=1e-12)
    cost = lambda p: torch.linalg.vector_norm(X - p, dim=1).sum()  # noqa: E731
    for _ in range(5):
        assert cost(v) <= cost(v + 0.01 * torch.randn(3, generator=gen, dtype=torch.float64)) + 1e-9


def test_stacked_matrices_aggregate_like_one_at_a_time():
    X = torch.randn(3, 9, 4, generator=mllib.generator(0))
    for name in ["mean", "median", "trimmed mean", "krum", "multi-krum", "geometric median"]:
        aggregate = robust.make(name, 2)
        assert torch.allclose(aggregate(X), torch.stack([aggregate(x) for x in X]), atol=1e-6), name
    assert torch.allclose(cc(2)(X), torch.stack([cc(2)(x) for x in X]), atol=1e-6)


def test_centered_clipping_remembers_its_centre():
    clip = cc(0, tau=1.0)
    X = torch.full((4, 2), 10.0)
    first = clip(X)
    assert torch.allclose(torch.linalg.vector_norm(first), torch.tensor(1.0))
    assert torch.equal(clip.state_dict()["center"], first)
    assert torch.linalg.vector_norm(clip(X)) > 1.5  # moves on from the last output


def test_aggregators_never_modify_their_input():
    X, _ = honest_and_bad(float("nan"))
    before = X.clone()
    for name in ["mean", "median", "trimmed mean", "krum", "multi-krum", "geometric median", "centered clipping"]:
        robust.make(name, 3)(X)
    assert torch.allclose(X, before, equal_nan=True)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown aggregator"):
        robust.make("average", 1)
    with pytest.raises(ValueError, match="unknown attack"):
        robust.make_attack("flip", 1)


# Attacks


def test_alie_z_follows_the_papers_formula():
    from statistics import NormalDist

    # n = 25, f = 5: s = floor(13.5) - 5 = 8, z = Phi^-1(17 / 25)
    assert robust.alie_z(25, 5) == pytest.approx(NormalDist().inv_cdf(17 / 25))
    assert robust.alie_z(50, 24) == pytest.approx(NormalDist().inv_cdf(48 / 50))


def test_alie_writes_mu_minus_z_sigma_and_keeps_the_honest_rows():
    U = torch.randn(10, 4, generator=mllib.generator(0))
    out = robust.alie(U, 3)
    honest = U[:7]
    expected = honest.mean(0) - robust.alie_z(10, 3) * honest.std(0)
    assert torch.equal(out[:7], honest) and torch.allclose(out[7:], expected.expand(3, -1))


def test_inner_product_manipulation_turns_the_mean_against_the_gradient():
    U = 1 + 0.1 * torch.randn(10, 4, generator=mllib.generator(0))
    f, eps = 4, 2.0  # eps > (n - f) / f = 1.5
    assert robust.mean(robust.inner_product(U, f, eps)) @ U[: 10 - f].mean(0) < 0
    assert robust.mean(robust.inner_product(U, f, 1.0)) @ U[: 10 - f].mean(0) > 0


@pytest.mark.parametrize("attack", robust.ATTACKS)
def test_attacks_rewrite_only_the_byzantine_rows_and_not_their_input(attack):
    U = torch.randn(8, 5, generator=mllib.generator(0))
    before = U.clone()
    out = robust.make_attack(attack, 3, gen=mllib.generator(1))(U)
    assert torch.equal(U, before) and torch.equal(out[:5], U[:5]) and out.shape == U.shape


def test_sign_flip_negates_own_messages():
    U = torch.randn(6, 2, generator=mllib.generator(0))
    assert torch.equal(robust.sign_flip(U, 2)[4:], -U[4:])


def test_label_flip_flips_only_the_chosen_clients(digits):
    clients = mllib.split(digits, 5, gen=mllib.generator(0))
    flipped = robust.label_flip(clients, torch.tensor([3, 4]))
    for i in range(5):
        _, y = clients.client_data(i)
        _, y2 = flipped.client_data(i)
        assert torch.equal(y2, 9 - y if i >= 3 else y)


def test_local_attacks_run_on_the_attackers_own_row_alone():
    own = torch.tensor([[1.0, -2.0]])
    assert torch.equal(robust.sign_flip(own, 1), -own)
    assert torch.equal(robust.constant(own, 1, 5.0), torch.full_like(own, 5.0))
    noisy = robust.make_attack("noise", 1, gen=mllib.generator(0))(own)
    assert noisy.shape == own.shape and not torch.equal(noisy, own)


def test_attacks_check_f():
    with pytest.raises(ValueError, match="f=7"):
        robust.sign_flip(torch.zeros(6, 2), 7)
    with pytest.raises(ValueError, match="this attack reads the honest rows, got f=6"):
        robust.alie(torch.zeros(6, 2), 6)
    with pytest.raises(ValueError, match="outside"):
        robust.alie_z(10, 7)


# Worker momentum and training


def test_worker_momentum_is_an_exponential_average():
    gen = mllib.generator(0)
    grads = [torch.randn(3, 4, generator=gen) for _ in range(5)]
    M = torch.zeros(3, 4)
    for g in grads:
        M = robust.worker_momentum(M, g, 0.9)
    expected = sum(0.1 * 0.9 ** (4 - t) * g for t, g in enumerate(grads))
    assert torch.allclose(M, expected, atol=1e-6)
    assert torch.equal(robust.worker_momentum(M, grads[0], 0.0), grads[0])
    with pytest.raises(ValueError, match="beta"):
        robust.worker_momentum(M, grads[0], 1.0)


@pytest.fixture(scope="module")
def small(digits):
    model = mllib.FlatModel(mllib.mlp(64, 10, hidden=(8,)))
    return model, mllib.split(digits, 9, gen=mllib.generator(0))


def test_byzantine_sgd_with_the_mean_learns(small):
    model, clients = small
    run = robust.byzantine_sgd(model, clients, steps=60, lr=0.5, batch_size=16, aggregate=robust.mean, gen=mllib.generator(0))
    assert run.accuracy[-1] > 0.7


def test_the_grid_equals_single_runs(small):
    model, clients = small
    kw = dict(steps=5, lr=0.5, batch_size=4)
    grid = robust.attack_grid(
        model, clients, f=2, attacks=["ALIE", "label flip"], momenta=[0.0, 0.9],
        aggregators={"median": lambda: robust.make("median", 2)}, **kw,
    )  # fmt: skip
    for beta in (0.0, 0.9):
        alie = robust.byzantine_sgd(model, clients, aggregate=robust.make("median", 2), attack=robust.make_attack("ALIE", 2),
                                    momentum=beta, gen=mllib.generator(0), **kw)  # fmt: skip
        flipped = robust.label_flip(clients, torch.tensor([7, 8]))
        label = robust.byzantine_sgd(model, flipped, aggregate=robust.make("median", 2), momentum=beta,
                                     gen=mllib.generator(0), **kw)  # fmt: skip
        assert grid[beta, "ALIE", "median"].values == pytest.approx([alie.accuracy[-1]], abs=0.02)
        assert grid[beta, "label flip", "median"].values == pytest.approx([label.accuracy[-1]], abs=0.02)


def test_a_grid_over_seeds_holds_each_seeds_own_grid(small):
    model, clients = small
    kw = dict(f=2, attacks=["none", "noise", "ALIE"], momenta=[0.0, 0.9], steps=4, lr=0.5, batch_size=4, average_last=2,
              aggregators={"median": lambda: robust.make("median", 2), "cc": lambda: robust.CenteredClipping(f=2)})  # fmt: skip
    grid = robust.attack_grid(model, clients, seeds=[0, 3], **kw)
    assert grid.accuracy.shape == (2, 2, 3, 2) and grid.seeds == [0, 3]
    for i, seed in enumerate([0, 3]):
        assert torch.equal(grid.accuracy[i], robust.attack_grid(model, clients, seeds=[seed], **kw).accuracy[0])
    spread = grid[0.9, "ALIE", "cc"]
    assert spread.values == tuple(grid.accuracy[:, 1, 2, 1].tolist())
    assert set(grid.spreads()) == {(b, a, g) for b in (0.0, 0.9) for a in ("none", "noise", "ALIE") for g in ("median", "cc")}
    with pytest.raises(ValueError, match="seeds"):
        robust.attack_grid(model, clients, seeds=[], **kw)


def test_group_accuracies_gathers_one_run_per_seed(small):
    model, clients = small
    minority = torch.tensor([0, 1])
    mixed = robust.with_minority(clients, minority)
    kw = dict(steps=4, lr=0.5, batch_size=4)
    groups = robust.group_accuracies(model, mixed, minority, {"median": lambda: robust.make("median", 2)}, seeds=[0, 1], **kw)
    run = robust.byzantine_sgd(model, mixed, aggregate=robust.make("median", 2), gen=mllib.generator(1), **kw)
    majority, minority_accuracy = robust.group_accuracy(model, run.model, mixed, minority)
    assert groups["median"]["majority"].values[1] == majority
    assert groups["median"]["minority"].values[1] == minority_accuracy
    with pytest.raises(ValueError, match="seeds"):
        robust.group_accuracies(model, mixed, minority, {"mean": lambda: robust.mean}, seeds=[], **kw)


def test_robust_aggregators_plug_into_run_rounds(small):
    model, clients = small
    history = mllib.run_rounds(
        model, clients, rounds=3, local_steps=2, lr=0.5, batch_size=8, gen=mllib.generator(0),
        transforms=[robust.make_attack("NaN", 2)], aggregate=robust.make("median", 2),
    )  # fmt: skip
    assert torch.isfinite(history.model).all()


def test_qffl_with_q_zero_is_the_mean(small):
    model, clients = small
    x = model.init(mllib.generator(0))
    batch = clients.batches(4, mllib.generator(1))
    G = torch.randn(9, model.dim, generator=mllib.generator(2))
    assert torch.allclose(robust.QFFL(model, 0.0, 0.5).at(x, batch)(G), G.mean(0), atol=1e-6)


def test_qffl_weights_the_worst_off_client_more(small):
    model, clients = small
    x = model.init(mllib.generator(0))
    xb, yb = clients.batches(4, mllib.generator(1))
    losses = model.loss(x.expand(9, -1), xb, yb)
    G = torch.eye(9, model.dim)  # client i pushes along axis i
    v = robust.QFFL(model, 2.0, 0.5).at(x, (xb, yb))(G)
    assert v[:9].argmax() == losses.argmax()


def test_minority_clients_see_turned_digits(small):
    _, clients = small
    mixed = robust.with_minority(clients, torch.tensor([0, 1]))
    x0, _ = clients.client_data(0)
    m0, _ = mixed.client_data(0)
    assert torch.equal(m0, torch.rot90(x0, 2, dims=(-2, -1)))
    assert torch.equal(mixed.client_data(5)[0], clients.client_data(5)[0])
    assert mixed.rotations.tolist() == [2, 2] + [0] * 7


# Figures


def test_plane_aggregates_keep_the_medians_with_the_honest_points():
    honest = torch.randn(12, 2, generator=mllib.generator(0))
    out = figures.aggregate_points(honest, torch.tensor([[50.0, 2.0]]).expand(5, 2))
    assert out["mean"][0] > 10
    for name in ("coordinate-wise median", "geometric median"):
        assert (honest.min(0).values <= out[name]).all() and (out[name] <= honest.max(0).values).all()


def test_plots_are_titled_and_labelled():
    fig = figures.plot_points(torch.randn(6, 2, generator=mllib.generator(0)), torch.tensor([[3.0, 2.0]]))
    ax = fig.axes[0]
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    grid = robust.Grid([0, 1, 2], [0.0, 0.9], ["none", "ALIE"], ["mean"], torch.rand(3, 2, 2, 1))
    fig2 = figures.plot_grid(grid)
    assert [a.get_title() for a in fig2.axes[:2]] == ["worker momentum beta = 0", "worker momentum beta = 0.9"]
    fig3 = figures.plot_groups({name: {"majority": Spread([0.9, 0.92]), "minority": Spread([0.6, low])}
                                for name, low in [("mean", 0.5), ("Krum", 0.3)]})  # fmt: skip
    assert fig3.axes[0].get_ylabel() == "mean test accuracy"
    plt.close("all")


# Lab checks


def median_solution(X):
    s = X.sort(0).values
    n = len(X)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def krum_solution(X, f):
    D = torch.cdist(X.double(), X.double()).pow(2)
    D.fill_diagonal_(float("inf"))
    scores = D.sort(1).values[:, : len(X) - f - 2].sum(1)
    return X[scores.argmin()]


def alie_solution(U, f):
    from statistics import NormalDist

    n = len(U)
    s = n // 2 + 1 - f
    z = NormalDist().inv_cdf((n - s) / n)
    out = U.clone()
    out[n - f :] = U[: n - f].mean(0) - z * U[: n - f].std(0)
    return out


def momentum_solution(M, G, beta):
    return beta * M + (1 - beta) * G


WRONG = {
    "coordinate_median": {
        "lower median": lambda X: X.median(0).values,
        "mean": lambda X: X.mean(0),
        "wrong axis": lambda X: X.sort(1).values[:, X.shape[1] // 2],
        "upper median": lambda X: X.sort(0).values[len(X) // 2],
    },
    "krum": {
        "n - f neighbours": lambda X, f: krum_solution(X, f - 2) if f >= 2 else X.mean(0),
        "plain distances": lambda X, f: X[(torch.cdist(X, X).sort(1).values[:, 1 : len(X) - f - 1].sum(1)).argmin()],
        "all distances": lambda X, f: X[torch.cdist(X, X).pow(2).sum(1).argmin()],
        "mean of rows": lambda X, f: X.mean(0),
    },
    "alie": {
        "plus z sigma": lambda U, f: torch.cat([U[: len(U) - f], (2 * U[: len(U) - f].mean(0) - alie_solution(U, f)[-1]).expand(f, -1)]),
        "population std": lambda U, f: torch.cat([U[: len(U) - f], (U[: len(U) - f].mean(0) - robust.alie_z(len(U), f) * U[: len(U) - f].std(0, correction=0)).expand(f, -1)]),
        "statistics of all rows": lambda U, f: torch.cat([U[: len(U) - f], (U.mean(0) - robust.alie_z(len(U), f) * U.std(0)).expand(f, -1)]),
        "in place": lambda U, f: U.index_copy_(0, torch.arange(len(U) - f, len(U)), alie_solution(U, f)[len(U) - f :]),
    },
    "worker_momentum": {
        "no (1 - beta)": lambda M, G, beta: beta * M + G,
        "swapped": lambda M, G, beta: (1 - beta) * M + beta * G,
        "gradient only": lambda M, G, beta: G.clone(),
        "in place": lambda M, G, beta: M.mul_(beta).add_(G, alpha=1 - beta),
    },
}
SOLUTIONS = {"coordinate_median": median_solution, "krum": krum_solution, "alie": alie_solution,
             "worker_momentum": momentum_solution}  # fmt: skip


@pytest.mark.parametrize("name", list(SOLUTIONS))
def test_checks_pass_the_solution(name, capsys):
    assert_passes(getattr(check, name), SOLUTIONS[name], capsys)


@pytest.mark.parametrize("name, wrong", [(n, w) for n in WRONG for w in WRONG[n]])
def test_checks_reject_wrong_answers(name, wrong):
    assert_rejects(getattr(check, name), WRONG[name][wrong])


def test_grid_averages_the_last_steps_like_a_single_run(small):
    model, clients = small
    kw = dict(steps=6, lr=0.5, batch_size=4)
    grid = robust.attack_grid(model, clients, f=2, attacks=["none"], momenta=[0.0], average_last=3,
                              aggregators={"mean": lambda: robust.make("mean", 2)}, **kw)  # fmt: skip
    run = robust.byzantine_sgd(model, clients, aggregate=robust.make("mean", 2), gen=mllib.generator(0), eval_every=1, **kw)
    assert grid[0.0, "none", "mean"].median == pytest.approx(run.mean_last(3), abs=1e-5)
    with pytest.raises(ValueError, match="k=7"):
        run.mean_last(7)
