import pytest
import torch

from problems import client_optima, linear_regression, logistic_regression

import mllib
from mllib import data as datasets


@pytest.mark.parametrize("name, side, total", [("digits", 8, 1797), ("mnist", 28, 5000)])
def test_bundled_images(name, side, total):
    data = mllib.load(name, test_fraction=0.2, gen=mllib.generator(0))
    assert data.input_shape == (1, side, side)
    assert len(data.y_train) + len(data.y_test) == total
    assert len(data.y_test) == round(0.2 * total)
    assert 0.0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 1.0
    assert set(data.y_train.tolist()) == set(range(10))


def test_load_shuffles_with_the_generator():
    a = mllib.load("digits", gen=mllib.generator(0))
    b = mllib.load("digits", gen=mllib.generator(0))
    c = mllib.load("digits", gen=mllib.generator(1))
    assert torch.equal(a.y_test, b.y_test) and not torch.equal(a.y_test, c.y_test)


def test_load_rejects_unknown_names_and_fractions():
    with pytest.raises(ValueError, match="name must be one of .*, got 'cifar'"):
        mllib.load("cifar", gen=mllib.generator(0))
    with pytest.raises(ValueError, match="test_fraction"):
        mllib.load("digits", test_fraction=1.0, gen=mllib.generator(0))


def test_noiseless_linear_regression_has_its_optimum_at_w_star(gen):
    data, w_star = linear_regression(200, 5, noise=0.0, gen=gen)
    fit = torch.linalg.lstsq(data.x_train, data.y_train[:, None]).solution.flatten()
    assert torch.allclose(fit, w_star, atol=1e-4)


def test_logistic_regression_labels_follow_w_star(gen):
    data, w_star = logistic_regression(2000, 3, gen=gen)
    predicted = (data.x_train @ w_star > 0).long()
    assert (predicted == data.y_train).float().mean() > 0.7  # Bayes-optimal rule beats chance


def test_quadratic_optima_are_stationary_points(gen):
    task = datasets.quadratics(4, 6, heterogeneity=2.0, gen=gen)
    assert torch.allclose(task.grad(client_optima(task)), torch.zeros(4, 6), atol=1e-4)
    x = task.optimum().expand(4, -1)
    assert torch.allclose(task.grad(x).mean(0), torch.zeros(6), atol=1e-4)
    assert torch.allclose(task.loss(x), 0.5 * (x * (task.grad(x) - task.b)).sum(1))


def test_no_heterogeneity_means_one_shared_optimum(gen):
    task = datasets.quadratics(3, 4, heterogeneity=0.0, gen=gen)
    assert torch.allclose(client_optima(task), task.optimum().expand(3, -1), atol=1e-4)


@pytest.mark.parametrize(("bad", "message"), [
    (dict(heterogeneity=-1.0), "heterogeneity must be a finite number >= 0, got -1"),
    (dict(heterogeneity=float("nan")), "heterogeneity must be a finite number >= 0, got nan"),
    (dict(condition=0.5), "condition must be a finite number >= 1, got 0.5"),
    (dict(condition=float("inf")), "condition must be a finite number >= 1, got inf"),
])  # fmt: skip
def test_quadratics_reject_bad_arguments(gen, bad, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        datasets.quadratics(3, 4, gen=gen, **bad)


def test_quadratics_reject_a_fractional_client_count(gen):
    with pytest.raises(TypeError, match=r"^n_clients must be an integer >= 1, got 2.5"):
        datasets.quadratics(2.5, 4, gen=gen)
