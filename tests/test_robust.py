from dataclasses import replace

import matplotlib.pyplot as plt
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mllib
from mllib import engine, robust
from mllib.checks import robust as check
from mllib.robust import figures, rules
from mllib.robust.training import Grid
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


# The one protocol, tested over every aggregator. Zeno and q-FFL score with a model: a
# logistic regression of 2 features and 2 classes has d = 6 parameters, the client matrices' width.
D = 6
TINY = mllib.FlatModel(mllib.logistic_regression(2, 2))
ALL = {
    "mean": lambda f: robust.Mean(f),
    "median": lambda f: robust.CoordinateMedian(f),
    "trimmed mean": lambda f: robust.TrimmedMean(f),
    "krum": lambda f: robust.Krum(f),
    "multi-krum": lambda f: robust.MultiKrum(f),
    "geometric median": lambda f: robust.GeometricMedian(f),
    "centered clipping": lambda f: robust.CenteredClipping(f, tau=0.5, iterations=50),
    "zeno": lambda f: robust.Zeno(TINY, torch.randn(16, 2, generator=mllib.generator(9)),
                                  torch.arange(16) % 2, f=f, gamma=0.1),  # fmt: skip
    "q-ffl": lambda f: robust.QFFL(TINY, 1.0, 0.5, f=f),
}
NOT_ROBUST = {"mean", "q-ffl"}  # the module docstring: these tolerate no NaN or inf row


def fresh(name, f, n, perm=None, dtype=torch.float32):
    """A new aggregator that has observed a server model and the workers' batches (the
    batches in the order ``perm``, where the rows will be permuted)."""
    gen = mllib.generator(1)
    aggregator = ALL[name](f)
    x, xb, yb = torch.randn(D, generator=gen), torch.randn(n, 4, 2, generator=gen), torch.randint(0, 2, (n, 4), generator=gen)
    perm = torch.arange(n) if perm is None else perm
    if dtype == torch.float64:
        x, xb = x.double(), xb.double()
        if name == "zeno":
            aggregator.x_val = aggregator.x_val.double()
    aggregator.observe(x, (xb[perm], yb[perm]))
    return aggregator


def test_the_protocol_covers_every_aggregator_make_builds():
    assert set(ALL) == set(robust.AGGREGATORS)
    for name, cls in robust.AGGREGATORS.items():
        assert issubclass(cls, robust.Aggregator) and isinstance(ALL[name](1), cls)
    assert isinstance(robust.make("median", 2), robust.CoordinateMedian) and robust.make("median", 2).f == 2


@pytest.mark.parametrize("name", list(ALL))
@given(seed=st.integers(0, 10_000), n=st.integers(5, 12))
def test_every_aggregator_is_invariant_to_the_order_of_the_workers(name, seed, n):
    """Permuting the workers permutes the rows and whatever state is per worker (q-FFL's losses)."""
    gen = mllib.generator(seed)
    X = torch.randn(n, D, generator=gen, dtype=torch.float64)
    f = (n - 3) // 2  # within every aggregator's condition
    perm = torch.randperm(n, generator=gen)
    out = fresh(name, f, n, dtype=torch.float64)(X)
    assert out.shape == (D,)
    assert torch.allclose(out, fresh(name, f, n, perm, dtype=torch.float64)(X[perm]), atol=1e-9)


def bad_inputs(name, n=9):
    aggregator = ALL[name](0)
    too_many = ALL[name](aggregator.max_f(n) + 1)
    X = torch.randn(n, D)
    cases = {
        "a vector": (aggregator, X[0]),
        "four dimensions": (aggregator, X.expand(2, 2, n, D)),
        "no rows": (aggregator, torch.zeros(0, D)),
        "f too large": (too_many, X),
    }
    if not aggregator.stacks:
        cases["a stack"] = (aggregator, X.expand(2, n, D))
    return cases


@pytest.mark.parametrize("name, case", [(name, case) for name in ALL for case in bad_inputs(name)])
def test_every_aggregator_refuses_bad_input(name, case):
    aggregator, X = bad_inputs(name)[case]
    rows = X.shape[-2] if X.dim() >= 2 else 9
    aggregator.observe(torch.zeros(D), (torch.zeros(rows, 4, 2), torch.zeros(rows, 4, dtype=torch.int64)))
    with pytest.raises(ValueError, match=type(aggregator).__name__):
        aggregator(X)


@pytest.mark.parametrize("name", list(ALL))
def test_every_aggregator_takes_integers_and_lists_as_floats(name):
    """Issue #27: integer input is converted to the default float dtype, never truncated or refused."""
    def aggregate(X):  # a fresh aggregator: some keep state across calls
        aggregator = ALL[name](0)
        aggregator.observe(torch.zeros(D), (torch.zeros(5, 4, 2), torch.zeros(5, 4, dtype=torch.int64)))
        return aggregator(X)

    X = torch.arange(5 * D).reshape(5, D) % 7
    expected = aggregate(X.to(torch.get_default_dtype()))
    assert torch.equal(aggregate(X), expected) and torch.equal(aggregate(X.tolist()), expected)


@pytest.mark.parametrize("name", list(ALL))
def test_every_aggregator_checks_f_at_construction(name):
    with pytest.raises(ValueError, match="f must be an integer >= 0, got -1"):
        ALL[name](-1)
    with pytest.raises(TypeError, match="f must be an integer >= 0, got 1.5"):
        ALL[name](1.5)


@pytest.mark.parametrize("value", NON_FINITE, ids=str)
@pytest.mark.parametrize("name", [name for name in ALL if name not in NOT_ROBUST])
def test_every_robust_aggregator_tolerates_f_rows_of_nan_inf_or_huge_values(name, value):
    X, honest = honest_and_bad(value)  # n = 11, f = 3, d = 6
    out = fresh(name, 3, 11)(X)
    assert torch.isfinite(out).all()
    assert (out - honest.mean(0)).abs().max() < 0.3


@pytest.mark.parametrize("name", list(ALL))
def test_every_aggregator_ignores_the_weights_the_engine_passes(name):
    X = torch.randn(9, D, generator=mllib.generator(0))
    weights = torch.arange(1.0, 10.0)
    assert torch.equal(fresh(name, 2, 9)(X, weights), fresh(name, 2, 9)(X))


@pytest.mark.parametrize("name", list(ALL))
def test_every_aggregator_leaves_its_input_unchanged(name):
    X, _ = honest_and_bad(float("nan"))
    before = X.clone()
    fresh(name, 3, 11)(X)
    assert torch.equal(X.nan_to_num(7.0), before.nan_to_num(7.0))


@pytest.mark.parametrize("name", [name for name in ALL if ALL[name](0).stacks])
def test_stacked_matrices_aggregate_like_one_at_a_time(name):
    X = torch.randn(3, 9, D, generator=mllib.generator(0))
    assert torch.allclose(fresh(name, 2, 9)(X), torch.stack([fresh(name, 2, 9)(x) for x in X]), atol=1e-6)  # Zeno: one model


def test_zeno_and_qffl_need_to_observe_first():
    with pytest.raises(ValueError, match="observe"):
        ALL["zeno"](1)(torch.randn(5, D))
    with pytest.raises(ValueError, match="observe"):
        ALL["q-ffl"](1)(torch.randn(5, D))


def test_options_are_checked_at_construction():
    for name, options in [("geometric median", dict(nu=float("nan"))), ("centered clipping", dict(tau=0.0)),
                          ("centered clipping", dict(iterations=0)), ("multi-krum", dict(m=0))]:  # fmt: skip
        with pytest.raises(ValueError, match=f"{next(iter(options))} must be"):
            robust.make(name, 1, **options)
    with pytest.raises(TypeError):
        robust.make("krum", 1, m=3)


def test_max_f_is_the_largest_f_the_condition_accepts():
    assert [robust.Krum().max_f(n) for n in (3, 5, 6)] == [0, 1, 1]
    assert [robust.CoordinateMedian().max_f(n) for n in (1, 4, 5)] == [0, 1, 2]
    assert ALL["zeno"](0).max_f(5) == 4
    for need in robust.rules.NEEDS:  # max_f and check_f state one condition
        for n in range(3, 13):
            robust.rules.check_f(robust.rules.max_f(n, need), n, "test", need)
            with pytest.raises(ValueError):
                robust.rules.check_f(robust.rules.max_f(n, need) + 1, n, "test", need)


def test_a_robust_aggregator_is_the_engines_aggregate_part():
    federation = engine.Federated(torch.zeros(D), local=lambda x, S: torch.ones(len(S), D) * S[:, None],
                                  select=engine.everyone(5), weights=torch.ones(5),
                                  aggregate=robust.make("median", 2), server_step=engine.move(1.0))  # fmt: skip
    assert torch.equal(engine.run(federation, 2).model, torch.full((D,), 4.0))  # the median of 0..4, twice


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


def test_zeno_drops_the_worst_rows(digits):
    model = mllib.FlatModel(mllib.logistic_regression(64, 10))
    gen = mllib.generator(0)
    x = model.init(gen)
    clients = mllib.split(digits, 8, gen=gen)
    xb, yb = clients.batches(16, gen)
    G = model.grad(x.expand(8, -1), xb, yb)
    G[6:] = -100 * G[6:]  # two loud sign flips
    zeno = robust.make("zeno", 2, model=model, x_val=digits.x_test[:64], y_val=digits.y_test[:64], gamma=0.5)
    zeno.observe(x, (xb, yb))
    assert set(zeno.scores(G).topk(6).indices.tolist()) == set(range(6))
    assert torch.equal(zeno(G), G[zeno.scores(G).topk(6).indices].mean(0))


FUNCTIONS = {"mean": robust.mean, "median": robust.coordinate_median, "trimmed mean": robust.trimmed_mean,
             "krum": robust.krum, "multi-krum": robust.multi_krum, "geometric median": robust.geometric_median}  # fmt: skip


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_half_or_more_byzantine_rows_is_refused(name):
    function = FUNCTIONS[name]
    with pytest.raises(ValueError, match=r"f=5 of n=10|n > 2f \+ 2"):
        function(torch.zeros(10, 3), 5)
    with pytest.raises(TypeError, match="^f must be an integer >= 0, got 1.5"):
        function(torch.zeros(10, 3), 1.5)


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
        assert torch.equal(robust.rules._sorted_columns(Y).nan_to_num(9.0), Y.sort(-2).values.nan_to_num(9.0))
    assert torch.equal(robust.rules._sorted_columns(X.requires_grad_()).nan_to_num(9.0), expected.nan_to_num(9.0))


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


def weiszfeld_reference(X, nu=1e-6, iterations=8, weights=None):
    """The geometric median as rules.geometric_median computed it before #25: plain smoothed
    Weiszfeld steps, each distance the float32 norm of the difference Z_i - v."""
    alpha = torch.ones(X.shape[-2]) if weights is None else weights
    finite = rules._finite_rows(X)
    alpha = torch.where(finite, alpha, torch.zeros_like(alpha))
    Z = torch.where(finite.unsqueeze(-1), X, torch.zeros(()))
    v = robust.coordinate_median(X)
    for _ in range(iterations):
        beta = alpha / torch.linalg.vector_norm(Z - v.unsqueeze(-2), dim=-1).clamp_min(nu)
        v = (beta.unsqueeze(-2) @ Z).squeeze(-2) / beta.sum(-1, keepdim=True)
    return v


# (rows, d) or (runs, rows, d), with rows around an offset (far from 0 against their spread or not)
@pytest.mark.parametrize("shape", [(9, 7), (5, 2), (3, 11, 50), (25, 4810), (2, 6, 40_000)], ids=str)
@pytest.mark.parametrize("offset, spread", [(0.0, 1.0), (1.0, 0.01), (100.0, 0.01)], ids=str)
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), bad=st.sampled_from([None, float("nan"), float("inf"), 1e30, -1e19, 1e18]),
       iterations=st.sampled_from([1, 8, 100]), nu=st.sampled_from([1e-6, 1e-9]), weighted=st.booleans())  # fmt: skip
def test_geometric_median_equals_plain_weiszfeld(shape, offset, spread, seed, bad, iterations, nu, weighted):
    """Bit for bit up to one block of columns (the same float32 norm, squared and rooted exactly in
    float64); beyond, the reference's float32 norm of a long row rounds at up to 1e-6 (5e-6 at
    d = 10^6) where ours sums block norms in float64, and such changes of the weights move v by
    that share of its distance to the rows: within 1e-6 of the rows' spread around the reference,
    plus 1e-6 of v (the weighted sum rounds at a few float32 ulps, 1.2e-7 each, of v)."""
    gen = mllib.generator(seed)
    X = offset + spread * torch.randn(*shape, generator=gen)
    n = shape[-2]
    if bad is not None:  # up to f < n/2 rows: one with a bad entry, one all bad
        rows = torch.randperm(n, generator=gen)[: (n - 1) // 2]
        X[..., rows[:1], :1] = bad
        X[..., rows[1:2], :] = bad
    weights = torch.rand(n, generator=gen) if weighted else None
    ours = robust.geometric_median(X, iterations=iterations, nu=nu, weights=weights)
    expected = weiszfeld_reference(X, nu, iterations, weights)
    if shape[-1] <= rules._BLOCK:
        assert torch.equal(ours, expected)
        return
    plain = torch.isfinite(X).all(-1, keepdim=True) & (X.abs() < 1e17).all(-1, keepdim=True)  # the rows that count
    spread_around = torch.where(plain, X - expected.unsqueeze(-2), torch.zeros(())).abs().max()
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6 * float(spread_around))


def test_geometric_median_gives_a_row_whose_distance_overflows_weight_zero():
    X = torch.randn(7, 1000, generator=mllib.generator(0))
    X[0] = 1e18  # finite entries, but the squared distance (1e39) overflows float32: as a NaN row
    assert torch.equal(robust.geometric_median(X), robust.geometric_median(X.index_fill(0, torch.tensor([0]), float("nan"))))


def test_centered_clipping_remembers_its_centre():
    clip = cc(0, tau=1.0)
    X = torch.full((4, 2), 10.0)
    first = clip(X)
    assert torch.allclose(torch.linalg.vector_norm(first), torch.tensor(1.0))
    assert torch.equal(clip.state_dict()["center"], first)
    assert torch.linalg.vector_norm(clip(X)) > 1.5  # moves on from the last output


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="^name must be one of .*'mean'.*, got 'average'"):
        robust.make("average", 1)
    with pytest.raises(ValueError, match="^name must be one of .*'sign flip'.*, got 'flip'"):
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
    with pytest.raises(ValueError, match=r"must be in \[0, n\) = \[0, 6\), at least one honest row, got f=6"):
        robust.alie(torch.zeros(6, 2), 6)
    with pytest.raises(ValueError, match="outside"):
        robust.alie_z(10, 7)
    assert robust.sign_flip(torch.ones(6, 2, dtype=torch.int64), 1).dtype == torch.get_default_dtype()  # as floats
    with pytest.raises(ValueError, match=r"^U must be a client matrix of shape \(n_clients, d\), got a tensor of shape \(6,\)"):
        robust.alie(torch.zeros(6), 1)


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


def test_byzantine_sgd_records_an_engine_history(small):
    model, clients = small
    history = robust.byzantine_sgd(model, clients, steps=7, lr=0.5, batch_size=4, aggregate=robust.make("median", 2),
                                   attack=robust.make_attack("ALIE", 2), momentum=0.5, gen=mllib.generator(0),
                                   eval_every=3)  # fmt: skip
    assert isinstance(history, engine.History) and history.rounds == [3, 6, 7]
    assert len(history.accuracy) == 3 and history.model.shape == (model.dim,)
    momentum, attack = history.algorithm.transforms
    assert isinstance(momentum, robust.WorkerMomentum) and momentum.M.shape == (9, model.dim)


def test_zeno_and_qffl_observe_every_step_of_byzantine_sgd(small):
    model, clients = small
    qffl = robust.QFFL(model, 1.0, 0.5)
    zeno = robust.Zeno(model, clients.x_test[:32], clients.y_test[:32], f=2, gamma=0.5)
    for aggregator in (qffl, zeno):
        history = robust.byzantine_sgd(model, clients, steps=3, lr=0.5, batch_size=4, aggregate=aggregator,
                                       attack=robust.make_attack("sign flip", 2), gen=mllib.generator(0))  # fmt: skip
        assert torch.isfinite(history.model).all()
    assert qffl.state_dict()["losses"].shape == (9,) and (qffl.losses > 0).all()
    assert zeno.state_dict()["x"].shape == (model.dim,)  # the model of the last step


def test_worker_momentum_holds_the_momenta_as_its_state():
    gen = mllib.generator(0)
    grads = [torch.randn(3, 4, generator=gen) for _ in range(4)]
    momentum, M = robust.WorkerMomentum(0.9), torch.zeros(3, 4)
    for g in grads:
        M = robust.worker_momentum(M, g, 0.9)
        assert torch.equal(momentum(g), M)
    assert torch.equal(momentum.state_dict()["M"], M)
    stacked, Ms = robust.WorkerMomentum([0.0, 0.5]), [torch.zeros(3, 4), torch.zeros(3, 4)]
    for g in grads:
        out = stacked(torch.stack([g, 2 * g]))  # two runs, one beta each
        Ms = [robust.worker_momentum(M, h, beta) for M, h, beta in zip(Ms, [g, 2 * g], [0.0, 0.5])]
        assert torch.allclose(out, torch.stack(Ms))


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
    qffl = robust.QFFL(model, 0.0, 0.5)
    qffl.observe(x, batch)
    assert torch.allclose(qffl(G), G.mean(0), atol=1e-6)


def test_qffl_weights_the_worst_off_client_more(small):
    model, clients = small
    x = model.init(mllib.generator(0))
    xb, yb = clients.batches(4, mllib.generator(1))
    losses = model.loss(x.expand(9, -1), xb, yb)
    G = torch.eye(9, model.dim)  # client i pushes along axis i
    qffl = robust.QFFL(model, 2.0, 0.5)
    qffl.observe(x, (xb, yb))
    v = qffl(G)
    assert v[:9].argmax() == losses.argmax()


def test_minority_clients_see_turned_digits(small):
    _, clients = small
    mixed = robust.with_minority(clients, torch.tensor([0, 1]))
    x0, _ = clients.client_data(0)
    m0, _ = mixed.client_data(0)
    assert torch.equal(m0, torch.rot90(x0, 2, dims=(-2, -1)))
    assert torch.equal(mixed.client_data(5)[0], clients.client_data(5)[0])
    assert mixed.rotations.tolist() == [2, 2] + [0] * 7
    with pytest.raises(ValueError, match=r"with_minority: minority indices must be in \[0, 9\), got \[9\]"):
        robust.with_minority(clients, torch.tensor([9]))


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
    with pytest.raises(ValueError, match=r"k must be in \[1, 6\].*got 7"):
        run.mean_last(7)


def test_zeno_scores_each_run_of_a_stack_at_its_own_model():
    gen = mllib.generator(3)
    X, x = torch.randn(3, 9, D, generator=gen), torch.randn(3, D, generator=gen)
    stacked, single = ALL["zeno"](2), ALL["zeno"](2)
    stacked.observe(x)
    for r in range(3):
        single.observe(x[r])
        assert torch.equal(stacked.scores(X)[r], single.scores(X[r]))
        assert torch.allclose(stacked(X)[r], single(X[r]), atol=1e-7)
    with pytest.raises(ValueError, match="does not match the observed model"):
        stacked(torch.randn(2, 9, D))


def test_centered_clipping_counts_the_rows_it_clips():
    X = torch.randn(2, 7, D, generator=mllib.generator(0))  # a stack of two runs
    far, near = robust.CenteredClipping(f=2, tau=1e-3), robust.CenteredClipping(f=2, tau=1e3)
    for _ in range(3):
        far(X), near(X)
    assert torch.equal(far.clipped_share(), torch.ones(2, 7, dtype=torch.float64))  # every row, every call
    assert torch.equal(near.clipped_share(), torch.zeros(2, 7, dtype=torch.float64))
    assert torch.allclose(robust.CenteredClipping(f=2, tau=1e3)(X), X.mean(1), atol=1e-6)  # never clips: the mean
    assert near.state_dict()["calls"] == 3
    with pytest.raises(ValueError, match="no call yet"):
        robust.CenteredClipping(f=2).clipped_share()


def test_the_grid_runs_zeno_and_reports_what_centered_clipping_clipped(small, digits):
    model, clients = small
    grid = robust.attack_grid(
        model, clients, f=2, attacks=["none", "noise"], momenta=[0.0], steps=4, lr=0.5, batch_size=4, seeds=(0, 1),
        aggregators={"clip": lambda: robust.CenteredClipping(tau=1.0, f=2),
                     "Zeno": lambda: robust.Zeno(model, digits.x_train[:16], digits.y_train[:16], f=2, gamma=0.5)},
    )  # fmt: skip
    assert grid.states["Zeno"]["x"].shape == (4, model.dim)  # it observed the 2 seeds x 2 attacks models
    shares = grid.clipped((0.0, "noise", "clip"))
    assert shares["Byzantine"].values == (1.0, 1.0)  # rows of N(0, 10^2 I) are always far away
    assert all(0 <= v <= 1 for v in shares["honest"].values)
    with pytest.raises(ValueError, match="counted no clipping"):
        grid.clipped((0.0, "noise", "Zeno"))


def test_a_joined_grid_has_both_grids_columns_and_nan_where_one_did_not_run():
    accuracy = lambda *shape: torch.rand(*shape, generator=torch.Generator().manual_seed(0))  # noqa: E731
    main = Grid([0, 1], [0.0, 0.9], ["none", "ALIE"], ["mean", "Krum"], accuracy(2, 2, 2, 2), f=3)
    zeno = Grid([0, 1], [0.9], ["none", "ALIE"], ["Zeno"], accuracy(2, 1, 2, 1), f=3)
    table = main.join(zeno)
    assert table.aggregators == ["mean", "Krum", "Zeno"] and table[0.9, "ALIE", "Zeno"].values == zeno[0.9, "ALIE", "Zeno"].values
    assert table[0.0, "none", "Krum"].values == main[0.0, "none", "Krum"].values
    assert table.accuracy[:, 0, :, 2].isnan().all() and not table.ran(0.0, "Zeno") and table.ran(0.9, "Zeno")
    with pytest.raises(ValueError, match="same seeds, attacks and f"):
        main.join(replace(zeno, f=2))


def test_the_median_the_lecture_shows_is_the_one_the_grid_runs(monkeypatch, small):
    """Lecture 05 shows rules.coordinate_median: the "median" of its grid calls it."""
    model, clients = small
    calls = []
    body = robust.rules.coordinate_median.__wrapped__  # each round runs the body, its arguments checked once
    monkeypatch.setattr(robust.rules.coordinate_median, "__wrapped__", lambda X, f=0: calls.append(X.shape) or body(X, f))
    robust.attack_grid(model, clients, f=2, attacks=["none"], momenta=[0.0], steps=2, lr=0.5, batch_size=4,
                       aggregators={"median": lambda: robust.make("median", 2)})  # fmt: skip
    assert calls == [(1, 9, model.dim)] * 2


# ---------------------------------------------------------------- the one-pass kernels
@pytest.mark.parametrize("shape", [(6, 5), (3, 6, 5)])
def test_finite_rows_in_one_pass_agree_with_every_entry_checked(shape):
    """A NaN, an inf, +inf beside -inf (sum NaN), and finite values whose sum overflows."""
    X = torch.randn(*shape, generator=mllib.generator(0))
    X[..., 1, 2], X[..., 2, 0], X[..., 3, :2] = float("nan"), float("inf"), torch.tensor([float("inf"), -float("inf")])
    X[..., 4, :] = 3e38  # finite entries, infinite sum
    assert torch.equal(rules._finite_rows(X), torch.isfinite(X).all(-1))


def test_pairwise_distances_of_finite_rows_ignore_the_bad_rows():
    X = torch.randn(6, 40, generator=mllib.generator(1))
    bad = X.clone()
    bad[1, 3], bad[4, :] = float("nan"), 1e30
    D, D_bad = rules.pairwise_sq_distances(X), rules.pairwise_sq_distances(bad)
    good = torch.tensor([0, 2, 3, 5])
    assert torch.equal(D_bad[good][:, good], D[good][:, good])
    assert torch.isinf(D_bad[1, good]).all() and torch.isinf(D_bad[good, 4]).all() and D_bad[1, 1] == 0
