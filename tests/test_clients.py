import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mllib


def per_client_loop(module, X, clients, *, steps, lr, batch_size, gen):
    """The textbook way: one model copy and one optimizer per client, a Python loop."""
    model = mllib.FlatModel(module)
    copies = [model.load(copy.deepcopy(module), row) for row in X]
    optimizers = [torch.optim.SGD(m.parameters(), lr=lr) for m in copies]
    for _ in range(steps):
        xb, yb = clients.batches(batch_size, gen)  # the same draws as the vectorized run
        for m, opt, x, y in zip(copies, optimizers, xb, yb):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
    return torch.stack([model.flatten(m) for m in copies])


@pytest.mark.parametrize("make", [lambda: mllib.mlp(64, 10), lambda: mllib.cnn(8, 10)], ids=["mlp", "cnn"])
def test_vectorized_local_sgd_equals_a_per_client_loop(digits, make):
    clients = mllib.split(digits, 6, "dirichlet", alpha=0.5, gen=mllib.generator(0))
    module = make()
    model = mllib.FlatModel(module)
    X = torch.stack([model.init(mllib.generator(s)) for s in range(6)])
    fast = mllib.local_sgd(model, X, clients, steps=15, lr=0.3, batch_size=8, gen=mllib.generator(1))
    slow = per_client_loop(module, X, clients, steps=15, lr=0.3, batch_size=8, gen=mllib.generator(1))
    assert torch.allclose(fast, slow, atol=1e-5)


def test_local_sgd_adds_the_correction_and_leaves_its_input(digits, gen):
    clients = mllib.split(digits, 3, gen=gen)
    model = mllib.FlatModel(mllib.logistic_regression(64, 10))
    X = model.init(gen).expand(3, -1).clone()
    before = X.clone()
    plain = mllib.local_sgd(model, X, clients, steps=1, lr=0.1, batch_size=4, gen=mllib.generator(5))
    shifted = mllib.local_sgd(
        model, X, clients, steps=1, lr=0.1, batch_size=4, gen=mllib.generator(5), correction=torch.ones(model.dim)
    )
    assert torch.allclose(plain - shifted, torch.full_like(X, 0.1))
    assert torch.equal(X, before)


def test_local_sgd_in_place_steps_equal_the_plain_loop_bit_for_bit(digits, gen):
    """After its first step local_sgd updates its own copy in place: the same bits as a loop of
    out-of-place steps, non-finite rows included, and the caller's matrix untouched."""
    clients = mllib.split(digits, 4, gen=gen)
    model = mllib.FlatModel(mllib.mlp(64, 10, hidden=(16,)))
    X = torch.stack([model.init(mllib.generator(s)) for s in range(4)])
    X[1, :3], X[2, -2] = float("nan"), float("inf")
    before = X.clone()
    fast = mllib.local_sgd(model, X, clients, steps=4, lr=0.1, batch_size=8, gen=mllib.generator(2))
    plain, batches = X, mllib.generator(2)
    for _ in range(4):
        plain = torch.add(plain, model.grad(plain, *clients.batches(8, batches)), alpha=-0.1)
    torch.testing.assert_close(fast, plain, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(X, before, rtol=0, atol=0, equal_nan=True)


def test_local_sgd_checks_the_client_matrix(digits, gen):
    clients = mllib.split(digits, 3, gen=gen)
    model = mllib.FlatModel(mllib.logistic_regression(64, 10))
    with pytest.raises(ValueError, match=r"shape \(3, 650\)"):
        mllib.local_sgd(model, torch.zeros(4, model.dim), clients, steps=1, lr=0.1, batch_size=4, gen=gen)


@given(n=st.integers(1, 8), d=st.integers(1, 6), seed=st.integers(0, 100))
def test_weighted_average_lies_in_the_rows_hull_and_ignores_scale(n, d, seed):
    g = mllib.generator(seed)
    X, w = torch.randn(n, d, generator=g), torch.rand(n, generator=g) + 0.01
    avg = mllib.weighted_average(X, w)
    assert avg.shape == (d,)
    assert (X.min(0).values - 1e-5 <= avg).all() and (avg <= X.max(0).values + 1e-5).all()
    assert torch.allclose(avg, mllib.weighted_average(X, 7.0 * w), atol=1e-5)


def test_weighted_average_with_equal_weights_is_the_mean():
    X = torch.arange(12.0).view(4, 3)
    assert torch.allclose(mllib.weighted_average(X, torch.ones(4)), X.mean(0))


@pytest.mark.parametrize(
    "X, w, message",
    [
        (torch.zeros(3), torch.ones(3), "client matrix"),
        (torch.zeros(3, 2), torch.ones(2), r"shape \(3,\)"),
        (torch.zeros(3, 2), torch.tensor([1.0, -1.0, 1.0]), "non-negative"),
        (torch.zeros(3, 2), torch.zeros(3), "not all zero"),
    ],
)
def test_weighted_average_rejects_bad_input(X, w, message):
    with pytest.raises(ValueError, match=message):
        mllib.weighted_average(X, w)


def test_one_local_step_of_fedavg_is_one_sgd_step_on_the_weighted_loss(digits):
    clients = mllib.split(digits, 5, "dirichlet", alpha=0.5, gen=mllib.generator(0))
    model = mllib.FlatModel(mllib.logistic_regression(64, 10))
    x0 = model.init(mllib.generator(1))
    history = mllib.run_rounds(
        model, clients, rounds=1, local_steps=1, lr=0.2, batch_size=8, gen=mllib.generator(2), x0=x0
    )
    gen = mllib.generator(2)
    torch.randperm(5, generator=gen)  # the round's client sampling
    xb, yb = clients.batches(8, gen)
    g = model.grad(x0.expand(5, -1), xb, yb)
    expected = x0 - 0.2 * mllib.weighted_average(g, clients.sizes.float())
    assert torch.allclose(history.model, expected, atol=1e-6)


def test_round_loop_plugs_in_transforms_and_aggregators(digits, gen):
    clients = mllib.split(digits, 4, gen=gen)
    model = mllib.FlatModel(mllib.logistic_regression(64, 10))
    x0 = model.init(gen)
    seen = []

    def record(updates):
        seen.append(updates.shape)
        return torch.zeros_like(updates)

    history = mllib.run_rounds(
        model, clients, rounds=3, local_steps=2, lr=0.1, batch_size=4, gen=gen, x0=x0,
        participation=0.5, transforms=[record], aggregate=lambda u: u.mean(0),
    )  # fmt: skip
    assert seen == [(2, model.dim)] * 3
    assert torch.equal(history.model, x0)
    assert history.rounds == [1, 2, 3] and len(history.accuracy) == 3


def test_round_loop_draws_minibatches_from_the_clients_own_generators(digits, gen):
    clients = mllib.split(digits, 3, gen=gen)
    model = mllib.FlatModel(mllib.logistic_regression(64, 10))
    x0 = model.init(gen)

    def run(seed):
        gens = [mllib.generator(i) for i in range(3)]
        return mllib.run_rounds(model, clients, rounds=2, local_steps=3, lr=0.1, batch_size=4,
                                gen=mllib.generator(seed), x0=x0, batch_gen=gens).model  # fmt: skip

    assert torch.equal(run(1), run(2))  # full participation: gen draws no minibatch


def test_round_loop_rejects_bad_participation(digits, gen):
    clients = mllib.split(digits, 4, gen=gen)
    model = mllib.FlatModel(mllib.logistic_regression(64, 10))
    with pytest.raises(ValueError, match="participation"):
        mllib.run_rounds(model, clients, rounds=1, local_steps=1, lr=0.1, batch_size=4, gen=gen, participation=0)


def test_evaluate_broadcasts_one_model_to_every_client(digits, gen):
    clients = mllib.split(digits, 4, "dirichlet", alpha=0.3, gen=gen)
    model = mllib.FlatModel(mllib.logistic_regression(64, 10))
    row = model.init(gen)
    assert torch.allclose(mllib.evaluate(model, row, clients), mllib.evaluate(model, row.expand(4, -1), clients))
    correct = (model.forward(row[None], digits.x_test[None]).argmax(-1) == digits.y_test).float().mean()
    assert mllib.accuracy_on(model, row, digits.x_test, digits.y_test) == pytest.approx(float(correct))
