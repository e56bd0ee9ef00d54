"""Tests for mllib.decentralized: topologies, mixing matrices, gossip, D-PSGD, lab checks."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mllib
from mllib.decentralized import (
    DPSGD, Gossip, check_mixing, consensus_distance, dpsgd, dpsgd_step, from_graph, gossip, gossip_run, graph,
    is_connected, mixing_matrix, node_traffic, spectral_gap,
)
from selfchecks import assert_passes, assert_rejects

# (topology, valid n) pairs; the random ones get a generator
STATIC = ["complete", "ring", "torus", "star", "hypercube", "exponential"]
RANDOM = ["erdos_renyi", "geometric", "matching"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread, as mllib.setup gives notebooks: small batched products run
    several times slower on two threads of a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def valid_n(topology: str, k: int) -> int:
    """A valid node count for the topology, growing with k >= 0."""
    if topology == "torus":
        return 9 + 3 * k  # 3 x (3 + k)
    if topology == "hypercube":
        return 2 ** (1 + k % 6)
    return 3 + k


@settings(max_examples=60, deadline=None)
@given(
    topology=st.sampled_from(STATIC + RANDOM),
    k=st.integers(0, 30),
    weights=st.sampled_from(["uniform", "metropolis"]),
    seed=st.integers(0, 2**16),
)
def test_every_mixing_matrix_is_doubly_stochastic_and_matches_its_graph(topology, k, weights, seed):
    n = valid_n(topology, k)
    if topology == "exponential":
        weights = "uniform"
    A = graph(topology, n, gen=torch.Generator().manual_seed(seed), p=0.5, radius=0.6)
    W = from_graph(A, weights=weights, dtype=torch.float64)
    assert (W >= 0).all()
    torch.testing.assert_close(W.sum(0), torch.ones(n, dtype=torch.float64))
    torch.testing.assert_close(W.sum(1), torch.ones(n, dtype=torch.float64))
    assert not ((W > 0).fill_diagonal_(False) & ~A).any()
    if topology != "exponential":
        torch.testing.assert_close(W, W.T)
    check_mixing(W, A, connected=False)


@pytest.mark.parametrize("topology", STATIC)
def test_named_mixing_matrix_passes_validation(topology):
    n = 16
    W = mixing_matrix(topology, n)
    assert W.shape == (n, n) and W.dtype == torch.float32
    check_mixing(W, graph(topology, n))


def test_exponential_graph_is_directed_and_not_symmetric():
    A = graph("exponential", 8)
    assert not torch.equal(A, A.T)
    assert A.sum(1).tolist() == [3] * 8  # receives from i-1, i-2, i-4


@pytest.mark.parametrize("n", [2, 5, 16, 50])
@pytest.mark.parametrize("weights", ["uniform", "metropolis"])
def test_complete_graph_uniform_gap_is_one(n, weights):
    W = mixing_matrix("complete", n, weights=weights)
    torch.testing.assert_close(W, torch.full((n, n), 1 / n))
    assert spectral_gap(W) == pytest.approx(1.0, abs=1e-6)


def test_ring_gap_matches_closed_form():
    # ring, weights 1/3: eigenvalues (1 + 2 cos(2 pi k / n)) / 3, the second largest at k = 1
    n = 20
    assert spectral_gap(mixing_matrix("ring", n)) == pytest.approx(1 - (1 + 2 * math.cos(2 * math.pi / n)) / 3, abs=1e-6)


def test_exponential_gap_matches_ying_et_al():
    # Ying et al. 2021, Lemma 1: for n = 2^tau, rho = 1 - 2 / (1 + log2 n)
    for n in (8, 16, 64):
        assert spectral_gap(mixing_matrix("exponential", n)) == pytest.approx(2 / (1 + math.log2(n)), abs=1e-6)


@pytest.mark.parametrize("topology", ["ring", "torus", "star", "hypercube"])
def test_gossip_contracts_second_eigenvector_by_its_eigenvalue(topology):
    W = mixing_matrix(topology, 16, dtype=torch.float64)
    values, vectors = torch.linalg.eigh(W)
    j = int(values.abs().argsort(descending=True)[1])  # second-largest |eigenvalue|
    v = vectors[:, j : j + 1]  # (n, 1), orthogonal to the all-ones vector
    out = gossip(v, W)
    torch.testing.assert_close(out, values[j] * v)
    assert consensus_distance(out) / consensus_distance(v) == pytest.approx((1 - spectral_gap(W)) ** 2, rel=1e-9)


@pytest.mark.parametrize("topology", ["ring", "torus", "hypercube", "star"])
def test_gossip_converges_at_the_rate_of_the_spectral_gap(topology):
    gen = mllib.generator(1)
    W = mixing_matrix(topology, 16, dtype=torch.float64)
    X = torch.randn(16, 5, generator=gen, dtype=torch.float64)
    mean = X.mean(0)
    rho2, steps = (1 - spectral_gap(W)) ** 2, 40
    curve = gossip_run(X, W, steps)
    for t, xi in enumerate(curve):
        assert xi <= rho2**t * curve[0] * (1 + 1e-9)  # never slower than the rate
    # and, in the long run, no faster: the second eigenvector dominates
    assert (curve[-1] / curve[-11]) ** (1 / 10) == pytest.approx(rho2, rel=0.05)
    torch.testing.assert_close(gossip(X, W).mean(0), mean)  # the average is kept


def test_gossip_does_not_modify_and_checks_shapes():
    X, W = torch.randn(4, 3), mixing_matrix("ring", 4)
    X0 = X.clone()
    gossip(X, W)
    assert torch.equal(X, X0)
    with pytest.raises(ValueError, match=r"W must have shape \(4, 4\)"):
        gossip(X, mixing_matrix("ring", 5))
    with pytest.raises(ValueError, match="client matrix"):
        gossip(torch.randn(4), W)


def test_gossip_experiments_call_the_displayed_gossip_step():
    """Lecture 03 shows ``gossip``'s source: gossip_run and D-PSGD mix with that very function."""
    W = mixing_matrix("ring", 5, dtype=torch.float64)
    # the rounds call gossip's own body; its argument checks ran once, at construction
    assert Gossip(W).mix is gossip.__wrapped__ and DPSGD(W, lr=0.1).mix is gossip.__wrapped__
    X = torch.randn(5, 3, generator=mllib.generator(0), dtype=torch.float64)
    by_hand = [consensus_distance(X), consensus_distance(gossip(X, W)), consensus_distance(gossip(gossip(X, W), W))]
    assert gossip_run(X, W, 2) == by_hand


@pytest.mark.parametrize("n", [16, 64, 256])
def test_busiest_node_traffic_star_grows_with_n_ring_and_torus_do_not(n):
    star, ring, torus = (node_traffic(mixing_matrix(t, n)) for t in ("star", "ring", "torus"))
    assert star.tolist() == [2 * (n - 1)] + [2] * (n - 1)  # the centre sends and receives n - 1 models
    assert ring.tolist() == [4] * n and torus.tolist() == [8] * n


def test_node_traffic_counts_sent_and_received_of_a_directed_graph():
    W = mixing_matrix("exponential", 8)  # every node receives from 3 and sends to 3
    assert node_traffic(W).tolist() == [6] * 8
    with pytest.raises(ValueError, match="square"):
        node_traffic(torch.ones(2, 3))


def test_time_varying_matchings_reach_consensus():
    gen = mllib.generator(0)
    X = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    curve = gossip_run(X, lambda t: mixing_matrix("matching", 10, gen=gen, dtype=torch.float64), 60)
    assert curve[-1] < 1e-6 * curve[0]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mixing_matrix("ring", 2), "ring needs n >= 3"),
        (lambda: mixing_matrix("torus", 10), "torus needs n = r"),
        (lambda: mixing_matrix("hypercube", 12), "power of 2"),
        (lambda: mixing_matrix("complete", 1), "n must be an integer >= 2"),
        (lambda: mixing_matrix("mesh", 4), "topology must be one of"),
        (lambda: mixing_matrix("ring", 4, weights="equal"), "weights must be one of"),
        (lambda: mixing_matrix("exponential", 8, weights="metropolis"), "undirected"),
        (lambda: mixing_matrix("erdos_renyi", 8), "random: pass gen"),
        (lambda: mixing_matrix("erdos_renyi", 30, p=0.01, gen=mllib.generator(0)), "disconnected"),
        (lambda: check_mixing(torch.tensor([[0.5, 0.5], [0.6, 0.4]])), "not doubly stochastic"),
        (lambda: check_mixing(torch.eye(3)), "disconnected"),
        (lambda: check_mixing(mixing_matrix("complete", 4), graph("ring", 4)), "does not match the graph"),
        (lambda: spectral_gap(torch.ones(3, 3)), "not doubly stochastic"),
        (lambda: gossip_run(torch.ones(3, 2), mixing_matrix("ring", 3), 0), "steps must be an integer >= 1, got 0"),
    ],
)
def test_bad_input_raises_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_disconnected_graph_has_zero_gap():
    A = torch.zeros(6, 6, dtype=torch.bool)
    A[:3, :3] = A[3:, 3:] = True
    assert not is_connected(A)
    assert spectral_gap(from_graph(A)) == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------- D-PSGD


def test_dpsgd_step_is_gossip_then_gradient():
    gen = mllib.generator(0)
    X, G = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    W = mixing_matrix("ring", 5)
    torch.testing.assert_close(dpsgd_step(X, W, G, 0.1), W @ X - 0.1 * G)
    with pytest.raises(ValueError, match="G must have the shape of X"):
        dpsgd_step(X, W, G[:4], 0.1)


def test_dpsgd_keeps_the_average_on_the_sgd_path_of_the_mean_gradient():
    # Lian et al. 2017, eq. (4): x_bar_{k+1} = x_bar_k - lr * mean_i g_i, for any doubly stochastic W
    gen = mllib.generator(2)
    X, G = torch.randn(6, 4, generator=gen, dtype=torch.float64), torch.randn(6, 4, generator=gen, dtype=torch.float64)
    out = dpsgd_step(X, mixing_matrix("star", 6, dtype=torch.float64), G, 0.3)
    torch.testing.assert_close(out.mean(0), X.mean(0) - 0.3 * G.mean(0))


@pytest.fixture(scope="module")
def digits_clients(digits):
    return mllib.split(digits, 8, "dirichlet", alpha=0.1, gen=mllib.generator(0))


def test_dpsgd_complete_graph_with_one_client_each_equals_minibatch_sgd_of_the_average(digits_clients):
    model = mllib.FlatModel(mllib.logistic_regression(64, 10))
    h = dpsgd(model, digits_clients, mixing_matrix("complete", 8), steps=5, lr=0.5, batch_size=4, gen=mllib.generator(1))
    # complete graph: after each step all rows equal mean - lr * g_i, so the spread is lr * spread of g
    assert h.consensus[0] == 0.0 and len(h.rounds) == 2 and h.model.shape == (8, model.dim)


def test_dpsgd_sparser_graph_has_larger_consensus_distance(digits_clients):
    model = mllib.FlatModel(mllib.mlp(64, 10))
    runs = {
        t: dpsgd(model, digits_clients, mixing_matrix(t, 8), steps=60, lr=0.1, batch_size=8, gen=mllib.generator(1),
                 eval_every=20)
        for t in ("ring", "complete")
    }  # fmt: skip
    assert sum(runs["ring"].consensus) > 2 * sum(runs["complete"].consensus)
    assert all(0 <= a <= 1 for a in runs["ring"].accuracy + runs["ring"].average_accuracy)


def test_dpsgd_accepts_a_time_varying_topology(digits_clients):
    model = mllib.FlatModel(mllib.logistic_regression(64, 10))
    gen = mllib.generator(5)
    h = dpsgd(model, digits_clients, lambda k: mixing_matrix("matching", 8, gen=gen), steps=4, lr=0.1, batch_size=4,
              gen=mllib.generator(1), eval_every=2)  # fmt: skip
    assert h.rounds == [0, 2, 4]


# ---------------------------------------------------------------- widget figure


@pytest.mark.parametrize(("topology", "n"), [("ring", 8), ("torus", 9), ("star", 5), ("exponential", 8)])
def test_topology_figure_is_titled_and_labelled(topology, n):
    import matplotlib.pyplot as plt

    from mllib.decentralized.plots import plot_topology

    fig = plot_topology(topology, n, steps=10)
    left, right = fig.axes
    assert f"spectral gap {spectral_gap(mixing_matrix(topology, n)):.3f}" in left.get_title()
    assert right.get_xlabel() == "gossip steps" and right.get_yscale() == "log"
    assert len(right.lines) == 2
    plt.close(fig)


def test_consensus_curve_starts_at_one_and_follows_the_gap():
    from mllib.decentralized.plots import consensus_curve

    curve, gap = consensus_curve("ring", 10, 30)
    assert curve[0] == 1.0
    assert all(c <= (1 - gap) ** t * (1 + 1e-9) for t, c in enumerate(curve))


# ---------------------------------------------------------------- lab checks

from mllib.checks import CheckFailed  # noqa: E402
from mllib.checks import decentralized as check  # noqa: E402


def solution_metropolis(A):
    d = A.sum(1).double()
    W = A.double() / (1 + torch.maximum(d[:, None], d[None, :]))
    return W + torch.diag(1 - W.sum(1))


def solution_gap(W):
    lam = torch.linalg.eigvalsh(W)
    return float(1 - max(abs(lam[-2]), abs(lam[0])))


def solution_step(X, W, G, lr):
    return W @ X - lr * G


def _max_degree(A):
    d = A.sum(1).double()
    W = A.double() / (1 + d.max())
    return W + torch.diag(1 - W.sum(1))


def _no_plus_one(A):
    d = A.sum(1).double()
    W = A.double() / torch.maximum(d[:, None], d[None, :]).clamp(min=1)
    return W + torch.diag(1 - W.sum(1))


def _min_degree(A):
    d = A.sum(1).double()
    W = A.double() / (1 + torch.minimum(d[:, None], d[None, :]))
    return W + torch.diag(1 - W.sum(1))


def _no_diagonal(A):
    d = A.sum(1).double()
    return A.double() / (1 + torch.maximum(d[:, None], d[None, :]))


WRONG = {
    "metropolis_hastings": [_max_degree, _no_plus_one, _min_degree, _no_diagonal],
    "spectral_gap": [
        lambda W: float(1 - torch.linalg.eigvalsh(W)[-2]),  # ignores the negative end
        lambda W: float(1 - torch.linalg.eigvalsh(W).abs().max()),  # takes lambda_1 = 1
        lambda W: float(torch.linalg.eigvalsh(W)[-2]),  # returns lambda_2, not the gap
        lambda W: float(1 - abs(torch.linalg.eigvalsh(W)[0])),  # only the negative end
    ],
    "dpsgd_step": [
        lambda X, W, G, lr: W @ (X - lr * G),  # gradient first, then gossip
        lambda X, W, G, lr: X - lr * G,  # no gossip
        lambda X, W, G, lr: W.T @ X - lr * G,  # transposed mixing
        lambda X, W, G, lr: W @ X + lr * G,  # ascent
        lambda X, W, G, lr: torch.sub(X, G, alpha=lr, out=X),  # in place
    ],
}
def solution_gossip(X, A, steps):
    W = solution_metropolis(A).to(X.dtype)
    distances = [(X - X.mean(0)).pow(2).sum(1).mean()]
    for _ in range(steps):
        X = W @ X
        distances.append((X - X.mean(0)).pow(2).sum(1).mean())
    return torch.stack(distances)


WRONG["metropolis_gossip"] = [
    lambda X, A, steps: solution_gossip(X, A, steps)[-1],  # the last distance only
    lambda X, A, steps: solution_gossip(X, A, steps + 1),  # one step too many
    lambda X, A, steps: solution_gossip(X.mul_(1), A, steps) * 0,  # no gossip
]
SOLUTIONS = {"metropolis_hastings": solution_metropolis, "spectral_gap": solution_gap, "dpsgd_step": solution_step,
             "metropolis_gossip": solution_gossip}  # fmt: skip


@pytest.mark.parametrize("name", list(SOLUTIONS))
def test_check_passes_the_solution(name, capsys):
    assert_passes(getattr(check, name), SOLUTIONS[name], capsys)


@pytest.mark.parametrize(("name", "k"), [(name, k) for name, wrongs in WRONG.items() for k in range(len(wrongs))])
def test_check_rejects_wrong_answers(name, k):
    assert_rejects(getattr(check, name), WRONG[name][k])


def test_check_says_not_implemented():
    def todo(*args):
        raise NotImplementedError

    with pytest.raises(CheckFailed, match="not implemented yet"):
        check.spectral_gap(todo)


def test_a_mixing_that_is_not_square_is_refused_at_construction_or_in_its_round():
    X = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"W must be a square mixing matrix \(n, n\), got shape \(4, 3\)"):
        mllib.decentralized.Gossip(torch.ones(4, 3) / 4)
    schedule = mllib.decentralized.Gossip(lambda k: torch.eye(4) if k == 0 else torch.ones(4, 3))
    schedule.step(X, 1)
    with pytest.raises(ValueError, match=r"the mixing of round 2 must be a square matrix \(n, n\), got shape \(4, 3\)"):
        schedule.step(X, 2)
