import functools

import matplotlib.pyplot as plt
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mllib
from mllib import adversarial as adv
from mllib.checks import CheckFailed
from mllib.checks import adversarial as check
from selfchecks import assert_passes, assert_rejects

EPS = 0.1  # the lecture's L-infinity radius for adversarial training
TARGETED_EPS = 0.3  # the lecture's radius for the targeted attack


@pytest.fixture(scope="module")
def mnist():
    return mllib.load("mnist", gen=mllib.generator(0))


@pytest.fixture(scope="module")
def standard(mnist):
    """The lecture's standard MLP: 4 epochs of SGD on the 4000 training images."""
    model = mllib.FlatModel(mllib.mlp(784, 10, hidden=(64,)))
    gen = mllib.generator(0)
    row = adv.adversarial_training(
        model, model.init(gen), mnist.x_train, mnist.y_train, attack=None, epochs=4, lr=0.3, batch_size=32, gen=gen
    )
    return model, row


@pytest.fixture(scope="module")
def f(standard):
    return adv.classifier(*standard)


@pytest.fixture(scope="module")
def test_batch(mnist):
    return mnist.x_test[:300], mnist.y_test[:300]


def tiny(seed: int = 0, side: int = 5, classes: int = 4):
    gen = mllib.generator(seed)
    f = check.TinyClassifier(side, classes, gen)
    x = check._images(6, side, gen)
    y = torch.randint(0, classes, (6,), generator=gen)
    return f, x, y, gen


# PGD: the ball, the range, FGSM, monotonicity


@settings(max_examples=20)
@given(
    eps=st.floats(0, 1), norm=st.sampled_from(adv.NORMS), steps=st.integers(1, 6), random_start=st.booleans(),
    targeted=st.booleans(), keep_best=st.booleans(), seed=st.integers(0, 1000),
)  # fmt: skip
def test_pgd_stays_in_the_ball_and_the_valid_range(eps, norm, steps, random_start, targeted, keep_best, seed):
    f, x, y, gen = tiny(seed)
    out = adv.pgd(f, x, y, eps, norm=norm, steps=steps, random_start=random_start, targeted=targeted,
                  keep_best=keep_best, gen=gen)  # fmt: skip
    delta = (out - x).flatten(1)
    size = delta.abs().amax(1) if norm == "inf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all()
    assert out.min() >= 0 and out.max() <= 1


@given(eps=st.floats(0, 0.5), norm=st.sampled_from(adv.NORMS), seed=st.integers(0, 1000))
def test_projection_is_idempotent_and_lands_in_the_ball(eps, norm, seed):
    delta = mllib.runtime.randn(4, 1, 3, 3, gen=mllib.generator(seed))
    once = adv.project(delta, eps, norm)
    assert torch.allclose(adv.project(once, eps, norm), once, atol=1e-6)
    size = once.flatten(1).abs().amax(1) if norm == "inf" else once.flatten(1).norm(dim=1)
    assert (size <= eps + 1e-5).all()


def per_image(value, x):
    """A radius or step size (a number or one per image) as a tensor that broadcasts against x."""
    return torch.as_tensor(value, dtype=x.dtype).reshape(-1, *[1] * (x.dim() - 1))


def plain_project(delta, eps, norm):
    if norm == "inf":
        return torch.maximum(torch.minimum(delta, eps), -eps)
    return delta * torch.clamp(eps / per_image(delta.flatten(1).norm(dim=1).clamp_min(1e-12), delta), max=1.0)


def plain_step(x_adv, g, x, eps, step_size, norm):
    """PGD's update rule with one new tensor per operation: the reference for pgd's in-place steps."""
    eps, step_size = per_image(eps, x), per_image(step_size, x)
    direction = g.sign() if norm == "inf" else g / per_image(g.flatten(1).norm(dim=1).clamp_min(1e-12), g)
    return (x + plain_project(x_adv + step_size * direction - x, eps, norm)).clamp(0, 1)


def plain_pgd(f, x, y, eps, step_size, norm, steps, targeted):
    x_adv = x
    for _ in range(steps):
        x_req = x_adv.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(f(x_req), y, reduction="none").sum(), x_req)
        x_adv = plain_step(x_adv, (-1.0 if targeted else 1.0) * g, x, eps, step_size, norm)  # descend the target's loss
    return x_adv


def pooled(x):
    """A classifier of each image's pixel sum: its input gradient is an expanded (overlapping) tensor."""
    return x.sum((1, 2, 3)).unsqueeze(1) * torch.tensor([-1.0, 0.5, 1.0, 2.0], dtype=x.dtype) + 0.1


def assert_same(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("norm", adv.NORMS)
@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_equals_the_plain_update_rule_bit_for_bit(dtype, norm, targeted):
    f, x, y, gen = tiny(3, side=4)
    f.weight, f.bias, x = f.weight.to(dtype), f.bias.to(dtype), x.to(dtype)
    x[1, 0, 0, 0], x[2, 0, 1, 1], x[3, 0, 2, 2] = float("nan"), float("inf"), -float("inf")  # non-finite gradients
    x[4] = 0.0  # zero pixels, and at eps 0 a zero step
    radii = [0.0, 0.2, 1.5, mllib.runtime.rand(6, gen=gen).to(dtype)]  # one radius, or one per image
    for classifier, eps, step_size, steps in [(f, e, 0.05, 4) for e in radii] + [
        (f, 0.3, mllib.runtime.rand(6, gen=gen).to(dtype) * 0.1, 3), (pooled, 0.3, 0.1, 2), (f, 0.1, 0.02, 1)
    ]:  # fmt: skip
        ours = adv.pgd(classifier, x, y, eps, norm=norm, steps=steps, step_size=step_size, targeted=targeted)
        assert_same(ours, plain_pgd(classifier, x, y, eps, step_size, norm, steps, targeted))


@pytest.mark.parametrize("norm", adv.NORMS)
def test_pgd_step_and_project_equal_the_plain_rule_and_keep_their_inputs(norm):
    gen = mllib.generator(0)
    x_adv, x = mllib.runtime.rand(5, 1, 3, 3, gen=gen), mllib.runtime.rand(5, 1, 3, 3, gen=gen)
    grad, delta = mllib.runtime.randn(5, 1, 3, 3, gen=gen), 0.3 * mllib.runtime.randn(5, 1, 3, 3, gen=gen)
    grad[0, 0, 0, 0], grad[1], grad[2, 0, 1, 1] = float("nan"), 0.0, float("inf")
    inputs = (x_adv, grad, x, delta)
    before = [t.clone() for t in inputs]
    assert_same(adv.project(delta, 0.2, norm), plain_project(delta, per_image(0.2, delta), norm))
    assert_same(adv.pgd_step(x_adv, grad, x, 0.2, 0.1, norm), plain_step(x_adv, grad, x, 0.2, 0.1, norm))
    for t, saved in zip(inputs, before):
        assert_same(t, saved)


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_one_pgd_step_of_size_eps_is_fgsm(f, test_batch, eps, targeted):
    x, y = test_batch
    assert torch.equal(adv.pgd(f, x, y, eps, steps=1, step_size=eps, targeted=targeted),
                       adv.fgsm(f, x, y, eps, targeted=targeted))  # fmt: skip


def test_more_steps_never_make_the_attack_weaker(f, test_batch):
    x, y = test_batch
    fooled_before = torch.zeros(len(y), dtype=torch.bool)
    for steps in (1, 2, 3, 5, 8):  # the same step size, no random start: each run extends the last
        out = adv.pgd(f, x, y, 0.06, steps=steps, step_size=0.02, keep_best=True)
        with torch.no_grad():
            fooled = f(out).argmax(1) != y
        assert not (fooled_before & ~fooled).any()
        fooled_before = fooled
    assert fooled.float().mean() > 0.2


@pytest.mark.parametrize("norm", adv.NORMS)
def test_eps_zero_leaves_predictions_unchanged(f, test_batch, norm):
    x, y = test_batch
    out = adv.pgd(f, x, y, 0.0, norm=norm, steps=5, random_start=True, gen=mllib.generator(0))
    assert torch.equal(out, x)
    assert torch.equal(f(adv.fgsm(f, x, y, 0.0)).argmax(1), f(x).argmax(1))


def test_targeted_pgd_reaches_the_target_at_the_lecture_eps(f, test_batch):
    x, y = test_batch
    target = (y + 1) % 10
    out = adv.pgd(f, x, target, TARGETED_EPS, steps=20, targeted=True)
    assert (f(out).argmax(1) == target).float().mean() >= 0.9


def test_standard_model_has_no_robust_accuracy_at_eps_0_3(f, test_batch):
    x, y = test_batch
    assert adv.robust_accuracy(f, x, y) > 0.85  # it is a good model...
    assert adv.robust_accuracy(f, x, y, functools.partial(adv.pgd, eps=0.3, steps=10)) <= 0.05  # ...not a robust one


def test_pgd_is_stronger_than_fgsm_and_l2_balls_are_weaker_than_linf_of_the_same_radius(f, test_batch):
    x, y = test_batch
    pgd = adv.robust_accuracy(f, x, y, functools.partial(adv.pgd, eps=EPS, steps=10))
    fgsm = adv.robust_accuracy(f, x, y, functools.partial(adv.fgsm, eps=EPS))
    l2 = adv.robust_accuracy(f, x, y, functools.partial(adv.pgd, eps=EPS, norm="2", steps=10))
    assert pgd <= fgsm and pgd < l2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(eps=-0.1), "eps must be a finite number >= 0"),
        (dict(eps=0.1, norm="1"), "norm must be one of"),
        (dict(eps=0.1, steps=0), "steps must be an integer >= 1"),
        (dict(eps=0.1, step_size=-1.0), "step_size must be a finite number >= 0"),
        (dict(eps=0.1, random_start=True), "needs gen"),
    ],
)
def test_pgd_rejects_bad_input(kwargs, message):
    f, x, y, _ = tiny()
    with pytest.raises(ValueError, match=message):
        adv.pgd(f, x, y, **kwargs)


def test_fgsm_rejects_negative_eps():
    f, x, y, _ = tiny()
    with pytest.raises(ValueError, match=r"eps must be a finite number >= 0, or a tensor of 1 dimension, got -1"):
        adv.fgsm(f, x, y, -1)


def test_attacks_do_not_modify_their_inputs():
    f, x, y, gen = tiny()
    before = x.clone()
    adv.pgd(f, x, y, 0.2, steps=3, random_start=True, gen=gen)
    adv.fgsm(f, x, y, 0.2)
    assert torch.equal(x, before)


def test_l2_random_start_is_uniform_in_the_ball():
    x = torch.full((2000, 1, 1, 2), 0.5)  # two pixels: the ball is a disc
    f = check.TinyClassifier(1, 2, mllib.generator(0))
    f.side = 1
    f.weight = torch.zeros(2, 2)  # zero gradient: the iterate stays at the start
    out = adv.pgd(f, x, torch.zeros(2000, dtype=torch.long), 0.4, norm="2", steps=1, random_start=True,
                  gen=mllib.generator(0))  # fmt: skip
    radius = (out - x).flatten(1).norm(dim=1)
    assert 0.45 < (radius < 0.4 / 2**0.5).float().mean() < 0.55  # half a disc's area lies inside r/sqrt(2)


# Adversarial training and robust accuracy


def test_adversarial_epoch_with_no_attack_is_one_epoch_of_sgd(mnist):
    model = mllib.FlatModel(mllib.mlp(784, 10, hidden=(8,)))
    row = model.init(mllib.generator(0))
    x, y, order = mnist.x_train[:64], mnist.y_train[:64], torch.randperm(64, generator=mllib.generator(1))
    out = adv.adversarial_epoch(model, row, x, y, order, attack=lambda f, xb, yb: xb, lr=0.1, batch_size=16)
    expected = row.clone()
    for idx in order.split(16):
        expected -= 0.1 * model.grad(expected[None], x[idx][None], y[idx][None])[0]
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.equal(out, row)


def test_adversarial_training_raises_robust_accuracy(mnist, standard, test_batch):
    model, row = standard
    x, y = test_batch
    attack = functools.partial(adv.pgd, eps=EPS, steps=2)
    robust = adv.adversarial_training(model, row, mnist.x_train[:2000], mnist.y_train[:2000], attack=attack, epochs=1, lr=0.1,
                                      batch_size=32, gen=mllib.generator(1))  # fmt: skip
    more = adv.adversarial_training(model, row, mnist.x_train[:2000], mnist.y_train[:2000], attack=None, epochs=1, lr=0.1,
                                    batch_size=32, gen=mllib.generator(1))  # fmt: skip
    evaluate = functools.partial(adv.pgd, eps=EPS, steps=10)
    gain = adv.robust_accuracy(adv.classifier(model, robust), x, y, evaluate) - adv.robust_accuracy(
        adv.classifier(model, more), x, y, evaluate
    )
    assert gain > 0.15


def test_robust_accuracy_never_exceeds_clean_accuracy(f, test_batch):
    x, y = test_batch
    assert adv.robust_accuracy(f, x, y, functools.partial(adv.pgd, eps=0.05, steps=3)) <= adv.robust_accuracy(f, x, y)


def test_transfer_rate_counts_flips_among_the_images_the_target_got_right():
    def f(x):  # predicts class 1 where the first pixel is above 1/2, else class 0
        return torch.stack([0.5 - x.flatten(1)[:, 0], x.flatten(1)[:, 0] - 0.5], dim=1)

    x = torch.tensor([0.9, 0.9, 0.1, 0.9]).view(4, 1, 1, 1)
    y = torch.tensor([1, 1, 0, 0])  # the last image is misclassified: left out
    x_adv = torch.tensor([0.1, 0.9, 0.9, 0.1]).view(4, 1, 1, 1)  # flips images 0 and 2 of the 3 correct
    assert adv.transfer_rate(f, x_adv, x, y) == pytest.approx(2 / 3)
    assert adv.transfer_rate(f, x, x, y) == 0.0
    with pytest.raises(ValueError, match="no image"):
        adv.transfer_rate(f, x, x, torch.full((4,), 5))
    with pytest.raises(ValueError, match="shape"):
        adv.transfer_rate(f, x[:2], x, y)


def test_minimal_epsilon_flips_each_image(f, test_batch):
    x, y = test_batch[0][:10], test_batch[1][:10]
    eps = adv.minimal_epsilon(f, x, y, high=0.5, iterations=8, steps=10)
    assert eps.shape == (10,) and ((0 <= eps) & (eps <= 0.5)).all()
    flips = eps < 0.5
    out = adv.pgd(f, x[flips], y[flips], eps[flips], steps=10)
    assert (f(out).argmax(1) != y[flips]).all()
    assert not (f(adv.pgd(f, x, y, 0.5 / 256, steps=10)).argmax(1) != y)[eps > 0.01].any()


# The patch


def test_apply_patch_changes_exactly_the_patch_area():
    x = torch.rand(3, 1, 8, 8, generator=mllib.generator(0))
    patch = torch.full((1, 3, 3), 2.0)
    out = adv.apply_patch(x, patch, torch.tensor([0, 5, 2]), torch.tensor([0, 1, 5]))
    for i, (r, c) in enumerate([(0, 0), (5, 1), (2, 5)]):
        inside = torch.zeros(8, 8, dtype=torch.bool)
        inside[r : r + 3, c : c + 3] = True
        assert (out[i, 0][inside] == 2).all() and torch.equal(out[i, 0][~inside], x[i, 0][~inside])


def test_apply_patch_rejects_positions_outside_the_image():
    with pytest.raises(ValueError, match="inside the 8x8 image"):
        adv.apply_patch(torch.zeros(1, 1, 8, 8), torch.zeros(1, 3, 3), torch.tensor([6]), torch.tensor([0]))


def test_universal_patch_beats_a_random_patch(f, mnist):
    gen = mllib.generator(0)
    patch = adv.universal_patch(f, mnist.x_train, 8, size=12, steps=40, lr=0.05, batch_size=32, gen=gen)
    assert patch.shape == (1, 12, 12) and patch.min() >= 0 and patch.max() <= 1
    random_patch = torch.rand(1, 12, 12, generator=gen)
    x, y = mnist.x_test[:300], mnist.y_test[:300]
    assert adv.patch_success(f, x, y, patch, 8, gen) > adv.patch_success(f, x, y, random_patch, 8, gen) + 0.05


# The widget


def test_attack_grid_and_its_figure(f, test_batch):
    x, y = test_batch
    grid = adv.attack_grid(f, x[0], int(y[0]), eps=[0.0, 0.1, 0.2], steps=[1, 5])
    assert grid.images.shape == (3, 2, 1, 28, 28) and grid.probabilities.shape == (3, 2, 10)
    assert torch.allclose(grid.probabilities.sum(-1), torch.ones(3, 2))
    assert torch.equal(grid.images[0, 1], x[0])  # eps = 0 changes nothing
    fig = adv.plot_attack(grid, 0.1, 5)
    assert "eps = 0.1, 5 steps" in fig.get_suptitle()
    assert fig.axes[3].get_ylabel() == "probability" and len(fig.axes[3].patches) == 10
    plt.close(fig)


# The lab's self-checks (their known mistakes are tested for every check in test_checks.py)


def fgsm_solution(f, x, y, eps):
    x = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(f(x), y)
    (g,) = torch.autograd.grad(loss, x)
    return (x + eps * g.sign()).clamp(0, 1).detach()


def pgd_solution(f, x, y, eps, norm, steps, step_size, start):
    per_image = lambda t: t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)  # noqa: E731
    x_adv = (x + eps * start).clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(f(x_adv), y), x_adv)
        delta = x_adv.detach() + step_size * (g.sign() if norm == "inf" else g / per_image(g)) - x
        delta = delta.clamp(-eps, eps) if norm == "inf" else delta * (eps / per_image(delta)).clamp(max=1)
        x_adv = (x + delta).clamp(0, 1)
    return x_adv.detach()


def epoch_solution(model, row, x, y, order, attack, lr, batch_size):
    for idx in order.split(batch_size):
        x_adv = attack(adv.classifier(model, row), x[idx], y[idx])
        row = row - lr * model.grad(row[None], x_adv[None], y[idx][None])[0]
    return row


@pytest.mark.parametrize(
    "name, solution", [("fgsm", fgsm_solution), ("pgd", pgd_solution), ("adversarial_epoch", epoch_solution)]
)
def test_checks_pass_the_solution(name, solution, capsys):
    assert_passes(getattr(check, name), solution, capsys)


def test_checks_reject_a_random_direction():
    assert_rejects(check.fgsm, lambda f, x, y, e: (x + e * torch.randn_like(x).sign()).clamp(0, 1))
    assert_rejects(check.pgd, lambda f, x, y, e, n, s, a, start: (x + e * start).clamp(0, 1))


def test_the_pgd_check_refuses_the_library_pgd():
    with pytest.raises(CheckFailed, match="^pgd: your function calls the library's pgd\n"):
        check.pgd(lambda f, x, y, e, n, s, a, start: adv.pgd(f, x, y, e, norm=n, steps=s, step_size=a))
