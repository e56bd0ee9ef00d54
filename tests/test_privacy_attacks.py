"""Lecture 07 privacy, the slower half: the accountant against Opacus, membership inference, DLG."""
import itertools
import warnings

import pytest
import torch
from torch import nn

import mllib
from mllib import privacy


GRID = list(itertools.product([0.004, 0.05, 0.5], [0.6, 1.0, 4.0], [1, 100, 3000], [1e-5, 1e-3]))


def test_accountant_matches_opacus_within_one_percent():
    from opacus.accountants import RDPAccountant as OpacusRDP

    for q, sigma, steps, delta in GRID:
        ours = privacy.RDPAccountant()
        ours.step(q=q, sigma=sigma, steps=steps)
        theirs = OpacusRDP()
        theirs.history = [(sigma, q, steps)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = theirs.get_epsilon(delta)
        assert abs(ours.epsilon(delta) - expected) <= 0.01 * expected, (q, sigma, steps, delta)


@pytest.fixture(scope="module")
def membership(digits):
    model = mllib.FlatModel(mllib.mlp(64, 10, hidden=(64,)))
    return privacy.membership_experiment(digits, model, epsilons=[0.25], seeds=8, steps=200, lr=0.5, q=0.5)


def test_membership_inference_works_on_an_overfitted_model(membership):
    assert membership.auc.shape == (2, 8)
    assert float(membership.auc[0].mean()) >= 0.6


def test_dp_at_the_smallest_epsilon_stops_membership_inference(membership):
    assert float(membership.auc[1].mean()) <= 0.53


@pytest.fixture(scope="module")
def dlg_setup(digits):
    model = mllib.FlatModel(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Sigmoid(), nn.Linear(32, 10)))
    row = model.init(mllib.generator(0))
    x, y = digits.x_train[:1], digits.y_train[:1]
    return model, row, x, y, privacy.reconstruction_error(digits.x_train.mean(0, keepdim=True), x)


def test_dlg_reconstructs_the_digit_better_than_the_mean_digit(dlg_setup):
    model, row, x, y, mean_error = dlg_setup
    target = privacy.sample_gradient(model, row, x, y)
    x_hat, label = privacy.dlg(model, row, target, (1, 8, 8), n_classes=10, gen=mllib.generator(1), iterations=100)
    assert privacy.reconstruction_error(x_hat, x) < 0.01 * mean_error
    assert int(label.argmax()) == int(y)


def test_dlg_survives_clipping_but_not_noise(dlg_setup):
    model, row, x, y, mean_error = dlg_setup
    clipped = privacy.clip_rows(privacy.sample_gradient(model, row, x, y)[None], 0.5)[0]
    kwargs = dict(n_classes=10, gen=mllib.generator(1), iterations=100, clip=0.5)
    x_hat, _ = privacy.dlg(model, row, clipped, (1, 8, 8), **kwargs)
    assert privacy.reconstruction_error(x_hat, x) < 0.01 * mean_error
    noisy = clipped + 0.1 * 0.5 * torch.randn(model.dim, generator=mllib.generator(2))
    x_hat, _ = privacy.dlg(model, row, noisy, (1, 8, 8), **kwargs)
    assert privacy.reconstruction_error(x_hat, x) > mean_error


def test_inversion_experiment_reconstructs_without_defence_and_not_behind_noise(digits):
    model = mllib.FlatModel(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Sigmoid(), nn.Linear(32, 10)))
    kwargs = dict(clip=1.0, noises=(0.1,), batch=8, iterations=100)
    result = privacy.inversion_experiment(digits, model, gen=mllib.generator(0), **kwargs)
    assert list(result.errors) == ["no defence", "clipped, C=1", "clip + noise 0.1", "mean of 8"]
    assert all(image.shape == result.original.shape == (1, 1, 8, 8) for image in result.images.values())
    assert result.errors["no defence"] < 0.01 * result.mean_input_error
    assert result.errors["clip + noise 0.1"] > result.mean_input_error
    again = privacy.inversion_experiment(digits, model, gen=mllib.generator(0), **kwargs)
    assert again.errors == result.errors  # the seed decides the model, the victim, the noise and DLG's start
    other = privacy.inversion_experiment(digits, model, gen=mllib.generator(1), **kwargs)
    assert not torch.equal(other.original, result.original) or other.errors != result.errors


@pytest.mark.parametrize("kwargs, match", [
    (dict(clip=0.0, noises=(), batch=8), "^clip must be a finite number > 0"),
    (dict(clip=1.0, noises=(-0.1,), batch=8), "noises must be"),
    (dict(clip=1.0, noises=(), batch=1), "^batch must be an integer >= 2"),
])  # fmt: skip
def test_inversion_experiment_rejects_bad_input(digits, kwargs, match):
    model = mllib.FlatModel(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    with pytest.raises(ValueError, match=match):
        privacy.inversion_experiment(digits, model, gen=mllib.generator(0), **kwargs)
