import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import mllib
from mllib import personalized
from mllib.partition import label_weights as reweight


def owned(clients):
    """Every training sample as a (label, pixel-sum) key, to compare partitions with the data."""
    return sorted(zip(clients.y.tolist(), clients.x.flatten(1).sum(1).round(decimals=3).tolist()))


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_every_training_sample_goes_to_exactly_one_client(digits, scheme):
    clients = mllib.split(digits, 20, scheme, alpha=0.3, gen=mllib.generator(0))
    assert int(clients.sizes.sum()) == len(digits.y_train)
    reference = sorted(zip(digits.y_train.tolist(), digits.x_train.flatten(1).sum(1).round(decimals=3).tolist()))
    assert owned(clients) == reference


@given(n=st.integers(1, 150), alpha=st.floats(0.01, 100.0), seed=st.integers(0, 10))
def test_dirichlet_never_leaves_a_client_empty(digits, n, alpha, seed):
    clients = mllib.split(digits, n, "dirichlet", alpha=alpha, gen=mllib.generator(seed))
    assert int(clients.sizes.min()) >= len(digits.y_train) // n


def test_small_alpha_concentrates_labels(digits):
    labels_per_client = {
        alpha: (mllib.split(digits, 50, "dirichlet", alpha=alpha, gen=mllib.generator(0)).label_counts() > 0)
        .sum(1)
        .float()
        .mean()
        for alpha in (0.05, 100.0)
    }
    assert labels_per_client[0.05] < 3 < 8 < labels_per_client[100.0]


def test_shards_give_each_client_few_labels(digits):
    clients = mllib.split(digits, 30, "shards", shards_per_client=2, gen=mllib.generator(0))
    assert int((clients.label_counts() > 0).sum(1).max()) <= 4  # a shard may straddle two labels


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_clients=10, scheme="dirichlet", alpha=0.0), r"alpha must be a finite number in \(0, 1e\+06\], got 0.0"),
        (dict(n_clients=10, scheme="dirichlet", alpha=-1.0), r"alpha must be a finite number in \(0, 1e\+06\], got -1.0"),
        (dict(n_clients=10, scheme="dirichlet", alpha=1e300), r"alpha must be a finite number in \(0, 1e\+06\]"),
        (dict(n_clients=5000, scheme="iid"), "n_clients=5000"),
        (dict(n_clients=10, scheme="pathological"), "scheme must be one of .*, got 'pathological'"),
        (dict(n_clients=200, scheme="iid", min_size=10), "min_size=10"),
    ],
)
def test_split_rejects_bad_arguments(digits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mllib.split(digits, gen=mllib.generator(0), **kwargs)


def test_batches_come_from_each_clients_own_samples(digits, gen):
    clients = mllib.split(digits, 7, "dirichlet", alpha=0.2, gen=gen)
    xb, yb = clients.batches(16, gen)
    assert xb.shape == (7, 16, 1, 8, 8) and yb.shape == (7, 16)
    for i in range(7):
        x_i, _ = clients.client_data(i)
        mine = (xb[i].flatten(1)[:, None, :] == x_i.flatten(1)[None]).all(-1).any(-1)
        assert mine.all()


def test_batches_among_a_subset(digits, gen):
    clients = mllib.split(digits, 7, gen=gen)
    xb, yb = clients.batches(4, gen, among=torch.tensor([2, 5]))
    assert xb.shape[0] == yb.shape[0] == 2


def test_per_client_generators_let_each_client_draw_alone(digits, gen):
    clients = mllib.split(digits, 3, gen=gen)
    gens = [mllib.generator(10 + i) for i in range(3)]
    together = clients.batches(5, gens)
    for i in range(3):  # client i on its own machine: its data alone, its generator alone
        alone = personalized.restrict(clients, [i]).batches(5, [mllib.generator(10 + i)])
        assert torch.equal(together[0][i], alone[0][0]) and torch.equal(together[1][i], alone[1][0])
    with pytest.raises(ValueError, match=r"one per client \(3\), got 2"):
        clients.batches(5, gens[:2])


def test_test_weights_follow_the_client_label_distribution(digits):
    clients = mllib.split(digits, 10, "dirichlet", alpha=0.5, gen=mllib.generator(0))
    assert torch.allclose(clients.test_weights.sum(1), torch.ones(10))
    weight_per_label = torch.zeros(10, 10).index_add_(1, digits.y_test, clients.test_weights)
    share = clients.label_counts().float() / clients.sizes[:, None]
    assert torch.allclose(weight_per_label, share, atol=1e-5)


def test_a_label_missing_from_the_test_set_gets_no_weight():
    w = reweight(torch.tensor([[1, 1, 2]]), torch.tensor([0, 0, 1]))
    assert torch.allclose(w, torch.tensor([[0.25, 0.25, 0.5]]))


def test_rotation_tasks_turn_train_and_test_alike(digits, gen):
    base = mllib.split(digits, 4, gen=gen)
    tasks = mllib.with_tasks(base, "rotation", n_tasks=4, gen=gen)
    x_test, _ = tasks.held_out_sets()
    for i in range(4):
        assert torch.equal(tasks.client_data(i)[0], torch.rot90(base.client_data(i)[0], i, dims=(-2, -1)))
        assert torch.equal(x_test[i], torch.rot90(digits.x_test, i, dims=(-2, -1)))


def test_permutation_tasks_relabel_train_and_test_alike(digits, gen):
    base = mllib.split(digits, 6, gen=gen)
    tasks = mllib.with_tasks(base, "permutation", n_tasks=3, gen=gen)
    _, y_test = tasks.held_out_sets()
    for i in range(6):
        relabel = tasks.label_maps[i]
        assert torch.equal(tasks.client_data(i)[1], relabel[base.client_data(i)[1]])
        assert torch.equal(y_test[i], relabel[digits.y_test])
    assert torch.equal(tasks.label_maps[0], torch.arange(10))  # task 0 is the original
    assert torch.equal(tasks.label_counts(), base.label_counts())


def test_with_tasks_rejects_bad_arguments(digits, gen):
    clients = mllib.split(digits, 6, gen=gen)
    with pytest.raises(ValueError, match="kind must be one of .*, got 'blur'"):
        mllib.with_tasks(clients, "blur", n_tasks=2, gen=gen)
    with pytest.raises(ValueError, match="n_tasks"):
        mllib.with_tasks(clients, "rotation", n_tasks=5, gen=gen)
