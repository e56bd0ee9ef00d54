"""Lecture 07 privacy: DP-SGD, the accountant, attacks, lab checks (secure aggregation: test_secure_aggregation.py)."""
import itertools
import math
import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import mllib
from mllib import privacy
from mllib.checks import CheckFailed
from mllib.checks import privacy as check
from mllib.privacy import accountant
from mllib.privacy import secure_aggregation as sa
from timeouts import time_limit
from selfchecks import assert_passes, assert_rejects


# --- DP-SGD -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlp_batch():
    gen = mllib.generator(0)
    model = mllib.FlatModel(mllib.mlp(64, 10, hidden=(32, 16)))
    return model, model.init(gen), torch.rand(20, 1, 8, 8, generator=gen), torch.randint(0, 10, (20,), generator=gen)


@given(G=st.integers(1, 10).flatmap(lambda b: st.lists(st.floats(-100, 100), min_size=3 * b, max_size=3 * b)),
       clip=st.floats(0.01, 10))  # fmt: skip
def test_every_clipped_per_sample_gradient_has_norm_at_most_c(G, clip):
    G = torch.tensor(G, dtype=torch.float64).view(-1, 3)
    clipped = privacy.clip_rows(G, clip)
    assert (clipped.norm(dim=1) <= clip * (1 + 1e-9)).all()
    small = G.norm(dim=1) <= clip
    assert torch.equal(clipped[small], G[small])  # short gradients are untouched


def test_per_sample_gradients_average_to_the_batch_gradient(mlp_batch):
    model, row, x, y = mlp_batch
    G = privacy.per_sample_gradients(model, row, x, y)
    assert G.shape == (20, model.dim)
    torch.testing.assert_close(G.mean(0), model.grad(row[None], x[None], y[None])[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("clip", [0.05, 0.5, 100.0])
def test_ghost_clipping_equals_the_vmap_reference(mlp_batch, clip):
    model, row, x, y = mlp_batch
    ghost = privacy.clipped_sum(model, row, x, y, clip, "ghost")
    torch.testing.assert_close(ghost, privacy.clipped_sum(model, row, x, y, clip, "vmap"), atol=1e-5, rtol=1e-5)


def test_ghost_norms_are_the_per_sample_gradient_norms(mlp_batch):
    model, row, x, y = mlp_batch
    _, norms = privacy.ghost_clipped_sum(model, row[None], x[None], y[None], 1.0)
    torch.testing.assert_close(norms[0], privacy.per_sample_gradients(model, row, x, y).norm(dim=1), atol=1e-5, rtol=1e-5)


def plain_ghost_clipped_sum(model, X, x, y, clip, weights):
    """Ghost clipping's steps, each a new tensor: the reference for ghost_clipped_sum's writes into G."""
    saved = model.linear_backprop(X, x, lambda logits: mllib.models.loss_gradient(logits, y, mean=False))
    norms = sum(d.norm(dim=-1).square() * (a.norm(dim=-1).square() + 1) for _, a, d in saved).sqrt()  # (n, B)
    c = torch.where(norms > clip[:, None], clip[:, None] / norms, 1.0) * weights
    grads = {}
    for name, a, d in saved:
        grads[f"{name}.weight"] = torch.bmm((d * c[..., None]).transpose(1, 2), a)  # (n, out, in)
        grads[f"{name}.bias"] = (d * c[..., None]).sum(1)
    return torch.cat([grads[name].flatten(1) for name in model.names], 1), norms


def test_ghost_clipped_sum_equals_its_plain_formula_bit_for_bit(mlp_batch):
    model, row, x, y = mlp_batch
    gen = mllib.generator(5)
    X = torch.stack([row, model.init(gen), 3 * model.init(gen), row])  # (4, d); large weights: long gradients
    xs = torch.stack([x, x.flip(0), mllib.runtime.rand(*x.shape, gen=gen), x])
    xs[3, 0, 0, 0, 0] = float("nan")  # a NaN gradient: its sample's factor is 1, as for a short gradient
    ys = torch.stack([y, y, y.flip(0), y])
    clip = torch.tensor([0.05, 1.0, float("inf"), 0.5])
    weights = (mllib.runtime.rand(4, len(y), gen=gen) < 0.5).float()  # Poisson sampling: some samples left out
    with torch.no_grad():
        expected = plain_ghost_clipped_sum(model, X, xs, ys, clip, weights)
    for ours, reference in zip(privacy.ghost_clipped_sum(model, X, xs, ys, clip, weights), expected):
        torch.testing.assert_close(ours, reference, rtol=0, atol=0, equal_nan=True)


def test_ghost_path_rejects_modules_it_cannot_handle():
    model = mllib.FlatModel(mllib.cnn(8, 10))
    with pytest.raises(ValueError, match=r"ghost clipping\) needs an nn.Sequential"):
        privacy.ghost_clipped_sum(model, model.init(mllib.generator(0))[None], torch.zeros(1, 2, 1, 8, 8),
                                  torch.zeros(1, 2, dtype=torch.long), 1.0)  # fmt: skip


def test_dp_sgd_gradient_noise_has_std_sigma_c_over_batch(mlp_batch):
    model, row, x, y = mlp_batch
    clean = privacy.clipped_sum(model, row, x, y, 0.5) / 10
    noisy = privacy.dp_sgd_gradient(model, row, x, y, clip=0.5, sigma=2.0, expected_batch=10, gen=mllib.generator(1))
    assert 0.09 < float((noisy - clean).std()) < 0.11  # 2 * 0.5 / 10


def test_dp_sgd_rows_train_independently(mlp_batch):
    model, row, x, y = mlp_batch
    kwargs = dict(steps=3, lr=0.1, q=0.5, clip=1.0, sigma=1.0)
    both = privacy.dp_sgd(model, row.expand(2, -1), x.expand(2, *x.shape), y.expand(2, -1), gen=mllib.generator(3), **kwargs)
    assert not torch.equal(both[0], both[1])  # their own batches and noise
    assert both.shape == (2, model.dim)


def test_dp_fedavg_clips_each_client_update():
    U = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    aggregate = privacy.dp_fedavg_aggregate(clip=1.0, sigma=0.0, gen=mllib.generator(0))
    torch.testing.assert_close(aggregate(U), torch.tensor([0.45, 0.6]))


def test_dp_fedavg_runs_are_paired_by_the_seed_and_noise_costs_accuracy(digits):
    model = mllib.FlatModel(mllib.mlp(64, 10, hidden=(16,)))
    gen = mllib.generator(4)
    state = gen.get_state()
    kwargs = dict(clip=0.5, n_clients=10, rounds=5, local_steps=2, lr=0.5, batch_size=16, gen=gen)
    accuracy = privacy.dp_fedavg_accuracy(digits, model, sigmas=[0.0, 64.0, 0.0], **kwargs)
    assert torch.equal(gen.get_state(), state)  # gen is not advanced
    assert list(accuracy) == [0.0, 64.0]
    assert accuracy == privacy.dp_fedavg_accuracy(digits, model, sigmas=[0.0, 64.0], **kwargs)  # the same runs
    assert accuracy[0.0] > accuracy[64.0] + 0.2  # noise of std 64 C / 10 on the average drowns the updates
    with pytest.raises(ValueError, match="sigmas must be"):
        privacy.dp_fedavg_accuracy(digits, model, sigmas=[0.0, -1.0], **kwargs)


def test_privacy_utility_trains_the_seeds_at_once_each_from_its_own_model(digits):
    model = mllib.FlatModel(mllib.mlp(64, 10, hidden=(16,)))
    kwargs = dict(epsilons=[1.0], steps=20, lr=0.5, q=0.05, clip=1.0, delta=1e-5)
    sigmas, accuracy = privacy.privacy_utility(digits, model, seeds=3, gen=mllib.generator(5), **kwargs)
    assert sigmas[0] == 0.0 and sigmas[1] > 0
    assert accuracy.shape == (2, 3)  # (1 + len(epsilons), seeds)
    assert len(set(accuracy[0].tolist())) > 1  # the seeds differ
    _, alone = privacy.privacy_utility(digits, model, gen=mllib.generator(5), **kwargs)
    assert alone.shape == (2, 1)
    assert float(alone[0, 0]) > 0.2  # 20 steps of SGD without DP: above chance (0.1)
    with pytest.raises(ValueError, match="seeds must be an integer >= 1"):
        privacy.privacy_utility(digits, model, seeds=0, gen=mllib.generator(5), **kwargs)


def test_laplace_noise_has_scale_sensitivity_over_epsilon():
    noisy = privacy.laplace_mechanism(torch.zeros(20000), sensitivity=2.0, epsilon=0.5, gen=mllib.generator(0))
    assert 3.9 < float(noisy.abs().mean()) < 4.1  # E|Laplace(b)| = b = 4


def test_analytic_gaussian_meets_delta_exactly():
    s = privacy.gaussian_sigma(sensitivity=1.0, epsilon=1.0, delta=1e-5)
    a, b = 1 / (2 * s), s
    delta = stats.norm.cdf(a - b) - np.exp(1.0) * stats.norm.cdf(-a - b)
    assert abs(delta - 1e-5) < 1e-9
    assert s < np.sqrt(2 * np.log(1.25 / 1e-5))  # tighter than the classical bound


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: privacy.gaussian_sigma(sensitivity=1, epsilon=0, delta=1e-5), r"^epsilon must be a finite number in \[1e-06, 700\]"),
        (lambda: privacy.gaussian_sigma(sensitivity=1, epsilon=1, delta=1.0), r"^delta must be a finite number in \(0, 1\)"),
        (lambda: privacy.laplace_mechanism(torch.zeros(1), sensitivity=1, epsilon=-1, gen=mllib.generator(0)), "epsilon"),
        (lambda: privacy.clip_rows(torch.zeros(2, 2), 0.0), r"^clip must be a number \(inf allowed\) > 0"),
        (lambda: privacy.epsilon(q=0.1, sigma=1, steps=1, delta=0.0), "delta must be a finite number in"),
        (lambda: privacy.calibrate_sigma(target_epsilon=0, delta=1e-5, q=0.1, steps=10), "target_epsilon"),
        (lambda: privacy.calibrate_sigma(target_epsilon=1, delta=2, q=0.1, steps=10), "delta must be a finite number in"),
        (lambda: privacy.compute_rdp(q=1.5, sigma=1, steps=1), r"q must be a finite number in \[0, 1\]"),
    ],
)
def test_bad_input_raises_a_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- the accountant -------------------------------------------------------------------------
def test_rdp_of_the_full_batch_gaussian_is_alpha_over_two_sigma_squared():
    orders = [2.0, 3.5, 10.0]
    np.testing.assert_allclose(privacy.compute_rdp(q=1.0, sigma=2.0, steps=3, orders=orders), [0.75, 1.3125, 3.75])


def test_subsampling_amplifies_privacy():
    assert privacy.epsilon(q=0.01, sigma=1.0, steps=100, delta=1e-5) < privacy.epsilon(q=0.1, sigma=1.0, steps=100, delta=1e-5)


def test_accountant_composes_steps():
    a = privacy.RDPAccountant()
    for _ in range(3):
        a.step(q=0.1, sigma=1.0, steps=10)
    assert a.state_dict() == {"history": [[1.0, 0.1, 30]]}
    assert a.epsilon(1e-5) == pytest.approx(privacy.epsilon(q=0.1, sigma=1.0, steps=30, delta=1e-5))


@pytest.mark.parametrize("target, q, steps", [(0.5, 0.01, 1000), (2.0, 0.05, 300), (8.0, 0.5, 200)])
def test_calibration_is_tight(target, q, steps):
    sigma = privacy.calibrate_sigma(target_epsilon=target, delta=1e-5, q=q, steps=steps)
    assert privacy.epsilon(q=q, sigma=sigma, steps=steps, delta=1e-5) <= target
    assert privacy.epsilon(q=q, sigma=0.99 * sigma, steps=steps, delta=1e-5) > target


EDGE_SIGMAS = [5e-324, 1e-300, 1e-160, 1e-3, 0.2, 1e5, 1e154, 1e300, sys.float_info.max]
EDGE_ORDERS = (1 + 1e-12, 1.5, 2.0, 8.5, 32.0, 1000.5, accountant.MAX_ORDER - 0.5, accountant.MAX_ORDER)


@pytest.mark.parametrize("q", [5e-324, 1e-12, 0.01, 0.5 - 1e-12, 0.5, 0.5 + 1e-12, 1 - 1e-12, 1.0])
def test_compute_rdp_answers_within_seconds_at_every_edge(q):
    """Tiny sigma once hung (sigma**2 = 0 made the series NaN), huge sigma overflowed or, with q near
    1/2, took millions of terms, a tiny q came out below 0; each call now takes well under a second
    (the limit leaves room for a loaded machine), between 0 and the full-batch Gaussian's steps alpha / (2 sigma^2)."""
    for sigma, orders in itertools.product(EDGE_SIGMAS, [privacy.ORDERS, EDGE_ORDERS]):
        with time_limit(5):
            rdp = privacy.compute_rdp(q=q, sigma=sigma, steps=accountant.MAX_STEPS, orders=orders)
        with np.errstate(over="ignore"):
            gaussian = accountant.MAX_STEPS * np.asarray(orders) / 2 / sigma / sigma
        assert np.all(rdp >= 0) and np.all(rdp <= gaussian * (1 + 1e-12)), (q, sigma)


@pytest.mark.parametrize("sensitivity, epsilon, delta",
                         list(itertools.product([1e-15, 1.0, 1e15], [1e-6, 700.0], [5e-324, 1 - 1e-16])))
def test_the_mechanisms_answer_at_the_corners_of_their_accepted_ranges(sensitivity, epsilon, delta):
    sigma = privacy.gaussian_sigma(sensitivity=sensitivity, epsilon=epsilon, delta=delta)
    assert math.isfinite(sigma) and sigma > 0
    assert privacy.dp_advantage_bound(epsilon * 1e300, delta) == 1.0  # e^epsilon overflowed here once


def test_the_accountant_answers_at_the_edges_of_its_arguments():
    with time_limit(10):
        sigma = privacy.calibrate_sigma(target_epsilon=1.0, delta=1e-5, q=1e-300, steps=100, tolerance=1e-12)
    assert privacy.epsilon(q=1e-300, sigma=sigma, steps=100, delta=1e-5) <= 1.0  # rdp once came out < 0 here
    assert privacy.compute_rdp(q=0.5, sigma=1e-300, steps=0).tolist() == [0.0] * len(privacy.ORDERS)
    with pytest.raises(ValueError, match=r"^orders must be .* in \(1, 10000\]"):
        privacy.compute_rdp(q=0.5, sigma=1.0, steps=1, orders=[1e8])
    with pytest.raises(ValueError, match="^steps must be an integer in"):
        privacy.compute_rdp(q=0.5, sigma=1.0, steps=10**400)
    with pytest.raises(ValueError, match="^rdp must hold one value per order"):
        privacy.rdp_to_epsilon(rdp=[0.1, 0.2], delta=1e-5, orders=[2.0])


# --- attacks ----------------------------------------------------------------------------------
def test_membership_auc_is_half_for_identical_and_one_for_separated_losses():
    assert privacy.membership_auc(torch.ones(5), torch.ones(7)) == 0.5
    assert privacy.membership_auc(torch.zeros(5), torch.ones(7)) == 1.0
    assert privacy.membership_auc(torch.ones(5), torch.zeros(7)) == 0.0


def test_membership_advantage_thresholds_at_the_mean_member_loss():
    # tau = 0.5: members 0.0 below (1/2), non-members 0.2 below (1/4)
    assert privacy.membership_advantage(torch.tensor([0.0, 1.0]), torch.tensor([0.2, 0.6, 0.7, 0.9])) == 0.25
    assert privacy.membership_advantage(torch.ones(5), torch.ones(7)) == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        privacy.membership_advantage(torch.ones(0), torch.ones(3))


def test_dp_advantage_bound_is_the_corner_of_the_dp_test_region():
    eps, delta = 1.0, 1e-5
    fnr = fpr = (1 - delta) / (1 + math.exp(eps))  # both constraints tight
    assert privacy.dp_advantage_bound(eps, delta) == pytest.approx(1 - fnr - fpr)
    assert privacy.dp_advantage_bound(float("inf"), delta) == 1.0
    for bad in (0.0, float("nan")):
        with pytest.raises(ValueError, match="epsilon"):
            privacy.dp_advantage_bound(bad, delta)


# --- widgets ------------------------------------------------------------------------------------
def test_clip_noise_summary():
    s = privacy.clip_noise_summary(torch.tensor([0.5, 1.0, 2.0, 4.0]), 1.0, 2.0, 10)
    assert s == {"clipped": 0.5, "kept": pytest.approx((1 + 1 + 0.5 + 0.25) / 4), "noise_std": 0.2}


def test_widget_figures_are_titled_and_labelled():
    fig = privacy.plot_clip_noise(torch.rand(50), 0.5, 1.0, 10, 2.0)
    assert "epsilon=2.00" in fig.axes[0].get_title() and fig.axes[0].get_xlabel() == "per-sample gradient norm"
    plt.close(fig)
    fig = privacy.plot_tradeoff([float("inf"), 1.0, 4.0], torch.tensor([0.9, 0.5, 0.7]), torch.rand(3, 4), 4.0)
    assert "epsilon = 4" in fig.get_suptitle() and fig.axes[1].get_ylabel() == "membership AUC"
    plt.close(fig)
    fig = privacy.plot_reconstructions(torch.rand(1, 1, 8, 8), {"a": torch.rand(1, 1, 8, 8)}, {"a": 0.1})
    assert len(fig.axes) == 2 and "MSE 0.100" in fig.axes[1].get_title()
    plt.close(fig)


# --- lab checks -----------------------------------------------------------------------------------
def clip_and_noise(G, clip, sigma, noise):
    norms = G.norm(dim=1, keepdim=True)
    return (G / torch.clamp(norms / clip, min=1.0)).sum(0) + sigma * clip * noise


def pairwise_mask(i, seeds, d):
    mask = torch.zeros(d, dtype=torch.int64)
    for j, s in seeds.items():
        mask += sa.prg(s, d) if j > i else -sa.prg(s, d)
    return mask % 2**32


def loss_threshold_auc(member_losses, nonmember_losses):
    diff = nonmember_losses[None, :].double() - member_losses[:, None].double()
    return ((diff > 0).double() + 0.5 * (diff == 0).double()).mean()


def dp_sgd(model, row, x, y, uniforms, noises, lr, clip, sigma, q, delta):
    accountant = privacy.RDPAccountant()  # another route to epsilon: one accountant step per step
    for u, noise in zip(uniforms, noises):
        G = privacy.per_sample_gradients(model, row, x, y)  # (N, d): every example, then masked
        factors = (clip / G.norm(dim=1).clamp_min(1e-30)).clamp(max=1.0) * (u < q)
        row = row - lr * ((G * factors[:, None]).sum(0) + sigma * clip * noise) / (q * len(y))
        if sigma > 0:
            accountant.step(q=q, sigma=sigma)
    return row, accountant.epsilon(delta) if sigma > 0 else float("inf")


SOLUTIONS = {"clip_and_noise": clip_and_noise, "dp_sgd": dp_sgd, "pairwise_mask": pairwise_mask,
             "loss_threshold_auc": loss_threshold_auc}  # fmt: skip
# The known mistakes of each check are tested in test_checks.py; these are other wrong answers.
WRONG = {
    "clip_and_noise": {"clips to C / 2": lambda G, c, s, z: clip_and_noise(G, c / 2, s, z)},
    "dp_sgd": {"stops after one step": lambda m, w, x, y, u, z, lr, c, s, q, d: dp_sgd(m, w, x, y, u[:1], z[:1], lr, c, s, q, d),
               "no epsilon": lambda *args: dp_sgd(*args)[0]},
    "pairwise_mask": {"zeros": lambda i, seeds, d: torch.zeros(d, dtype=torch.int64)},
    "loss_threshold_auc": {"one half": lambda m, n: torch.tensor(0.5, dtype=torch.float64)},
}


def test_the_dp_sgd_check_refuses_the_library_dp_sgd():
    def calls_library(model, row, x, y, uniforms, noises, lr, clip, sigma, q, delta):
        trained = privacy.dp_sgd(model, row[None], x[None], y[None], steps=len(uniforms), lr=lr, q=q, clip=clip,
                                 sigma=sigma, gen=torch.Generator().manual_seed(0))[0]  # fmt: skip
        return trained, privacy.epsilon(q=q, sigma=sigma, steps=len(uniforms), delta=delta)

    with pytest.raises(CheckFailed, match="^dp_sgd: your function calls the library's dp_sgd"):
        check.dp_sgd(calls_library)


@pytest.mark.parametrize("name", list(SOLUTIONS))
def test_check_passes_the_solution(name, capsys):
    assert_passes(getattr(check, name), SOLUTIONS[name], capsys)


@pytest.mark.parametrize("name, wrong", [(n, w) for n, ws in WRONG.items() for w in ws])
def test_check_rejects_wrong_answers(name, wrong):
    assert_rejects(getattr(check, name), WRONG[name][wrong])

