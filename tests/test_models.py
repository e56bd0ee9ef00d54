import pytest
import torch
from torch import nn

import mllib
from mllib.models import per_client_loss

ARCHITECTURES = {
    "logistic": lambda: mllib.logistic_regression(64, 10),
    "mlp": lambda: mllib.mlp(64, 10, hidden=(32, 16)),
    "tanh-sigmoid": lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 8), nn.Sigmoid(), nn.Identity(), nn.Linear(8, 10)
    ),
    "cnn": lambda: mllib.cnn(8, 10),  # runs through vmap and autograd
}


@pytest.fixture(params=list(ARCHITECTURES))
def module(request):
    torch.manual_seed(0)
    return ARCHITECTURES[request.param]()


def test_flatten_and_load_round_trip(module):
    model = mllib.FlatModel(module)
    row = model.flatten(module)
    assert row.shape == (model.dim,) == (sum(p.numel() for p in module.parameters()),)
    other = model.init(mllib.generator(1))
    model.load(module, other)
    assert torch.equal(model.flatten(module), other)


def test_unflatten_returns_views_with_a_client_axis(module):
    model = mllib.FlatModel(module)
    X = torch.stack([model.init(mllib.generator(s)) for s in range(3)])
    params = model.unflatten(X)
    for name, p in module.named_parameters():
        assert params[name].shape == (3, *p.shape)
        assert params[name].data_ptr() >= X.data_ptr()  # a view, no copy


def test_init_matches_pytorch_default_bounds():
    model = mllib.FlatModel(mllib.mlp(64, 10, hidden=(32,)))
    params = model.unflatten(model.init(mllib.generator(0))[None])
    assert params["1.weight"].abs().max() <= 1 / 64**0.5
    assert params["3.bias"].abs().max() <= 1 / 32**0.5
    assert params["1.weight"].abs().max() > 0.9 / 64**0.5  # uniform over the whole range


def test_forward_and_grad_match_each_module(module):
    """Row i of the batched result equals module i on its own batch."""
    model = mllib.FlatModel(module)
    gen = mllib.generator(0)
    X = torch.stack([model.init(gen) for _ in range(3)])
    x = torch.rand(3, 5, 1, 8, 8, generator=gen)
    y = torch.randint(0, 10, (3, 5), generator=gen)
    out, grads = model.forward(X, x), model.grad(X, x, y)
    for i in range(3):
        model.load(module, X[i])
        module.zero_grad()
        expected = module(x[i])
        nn.functional.cross_entropy(expected, y[i]).backward()
        assert torch.allclose(out[i], expected, atol=1e-6)
        assert torch.allclose(grads[i], torch.cat([p.grad.flatten() for p in module.parameters()]), atol=1e-6)


def test_hand_written_backprop_matches_autograd_for_regression():
    module = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1))
    model = mllib.FlatModel(module)
    gen = mllib.generator(0)
    X = torch.stack([model.init(gen) for _ in range(4)])
    x, y = torch.randn(4, 6, 3, generator=gen), torch.randn(4, 6, generator=gen)
    Xg = X.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(model.loss(Xg, x, y).sum(), Xg)
    assert torch.allclose(model.grad(X, x, y), expected, atol=1e-6)


def test_hand_written_backprop_matches_autograd_on_non_finite_rows():
    """A row with NaN or inf gets autograd's gradient (NaN where autograd's is), and leaves the other rows alone."""
    model = mllib.FlatModel(mllib.mlp(64, 10, hidden=(32, 16)))
    gen = mllib.generator(0)
    X = torch.stack([model.init(gen) for _ in range(4)])
    X[1, 5], X[2, -1] = float("nan"), float("inf")
    x, y = torch.rand(4, 6, 64, generator=gen), torch.randint(0, 10, (4, 6), generator=gen)
    Xg = X.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(model.loss(Xg, x, y).sum(), Xg)
    got = model.grad(X, x, y)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0, equal_nan=True)
    assert torch.isfinite(got[[0, 3]]).all()


def test_accuracy_weights_samples():
    model = mllib.FlatModel(mllib.logistic_regression(2, 2))
    X = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]])  # predicts the larger coordinate
    x = torch.tensor([[[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]]])
    y = torch.tensor([[0, 0, 0]])
    assert torch.allclose(model.accuracy(X, x, y), torch.tensor([2 / 3]))
    assert torch.allclose(model.accuracy(X, x, y, torch.tensor([[0.0, 1.0, 0.0]])), torch.tensor([0.0]))


def test_float_targets_get_the_squared_error():
    outputs = torch.tensor([[[1.0], [3.0]]])
    assert torch.allclose(per_client_loss(outputs, torch.tensor([[0.0, 1.0]])), torch.tensor([1.25]))


def test_wrong_client_matrix_shape_is_a_clear_error():
    model = mllib.FlatModel(mllib.mlp(64, 10))
    with pytest.raises(ValueError, match=rf"\(n_clients, {model.dim}\)"):
        model.unflatten(torch.zeros(3, model.dim + 1))
    with pytest.raises(ValueError, match="client batches"):
        model.forward(torch.zeros(3, model.dim), torch.zeros(2, 4, 64))
