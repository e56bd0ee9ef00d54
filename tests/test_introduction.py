import matplotlib.pyplot as plt
import pytest
import torch

import mllib
from mllib import introduction as intro
from mllib.checks import introduction as check
from selfchecks import assert_passes, assert_rejects


def solution(X, weights):
    return (weights[:, None] * X).sum(0) / weights.sum()


WRONG = {  # beyond the check's own mistakes (tests/test_checks.py): the generic answers
    "wrong axis": lambda X, w: (w[:, None] * X).sum(1) / w.sum(),
    "in place": lambda X, w: X.mul_(w[:, None]).sum(0) / w.sum(),
}


def test_weighted_average_check_passes_the_solution(capsys):
    assert_passes(check.weighted_average, solution, capsys)


@pytest.mark.parametrize("wrong", list(WRONG))
def test_weighted_average_check_rejects_wrong_answers(wrong):
    assert_rejects(check.weighted_average, WRONG[wrong])


@pytest.fixture(scope="module")
def results(digits):
    model = mllib.FlatModel(mllib.logistic_regression(64, 10))
    return intro.alone_vs_pooled(
        digits, model, n_clients=8, alphas=[0.1, 100.0], steps=60, lr=0.5, batch_size=16, gen=mllib.generator(0)
    )


def test_alone_vs_pooled_reports_every_client(results):
    for r in results:
        assert r.label_counts.shape == (8, 10)
        for accuracies in (r.alone, r.pooled, r.alone_everywhere):
            assert accuracies.shape == (8,) and ((0 <= accuracies) & (accuracies <= 1)).all()
    assert [r.alpha for r in results] == [0.1, 100.0]


def test_skewed_clients_alone_miss_the_digits_they_never_saw(results):
    skewed, iid = results
    assert skewed.alone_everywhere.mean() < iid.alone_everywhere.mean()
    assert skewed.alone.mean() > skewed.alone_everywhere.mean()


def test_alone_vs_pooled_needs_alphas(digits):
    with pytest.raises(ValueError, match="alphas"):
        intro.alone_vs_pooled(
            digits, mllib.FlatModel(mllib.logistic_regression(64, 10)), n_clients=2, alphas=[],
            steps=1, lr=0.1, batch_size=2, gen=mllib.generator(0),
        )  # fmt: skip


def test_widget_figure_is_titled_and_labelled(results):
    fig = intro.plot_alone_vs_pooled(results[0], show=5)
    labels, accuracy = fig.axes[:2]
    assert "alpha=0.1" in fig.get_suptitle()
    assert accuracy.get_ylabel() == "test accuracy" and labels.get_ylabel() == "training samples"
    assert len(accuracy.patches) == 10  # two bars for each of the 5 clients shown
    plt.close(fig)


def test_label_count_plot_stacks_every_label(digits):
    clients = mllib.split(digits, 4, gen=mllib.generator(0))
    ax = intro.plot_label_counts(clients)
    heights = torch.tensor([p.get_height() for p in ax.patches]).view(10, 4).sum(0)
    assert torch.equal(heights.long(), clients.sizes)
    plt.close(ax.figure)
