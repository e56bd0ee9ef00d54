"""Every figure the library draws, under the course style (issue #23): each axes titled and labelled,
a legend wherever more than one series is named, no text below 11 pt, colour-blind-safe colours.

What each figure shows is tested beside its module (test_<topic>.py); this file checks only
that a figure can be read on a projector.
"""
import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.text import Text

import mllib
from mllib import adversarial, automl, federated, introduction, personalized, playground, privacy
from mllib import systems as sy
from mllib.compression import lecture as compression_lecture
from mllib.decentralized import plots as decentralized_plots
from mllib.decentralized.plots import plot_topology
from mllib.robust import figures as robust_figures
from mllib.robust.training import Grid
from mllib.runtime import STYLE
from mllib.spread import Spread

SMALLEST_POINTS = 11
COLOUR_BLIND_SAFE_CYCLE = matplotlib.style.library["tableau-colorblind10"]["axes.prop_cycle"]
RED_GREEN_MAPS = {"RdYlGn", "RdYlGn_r", "RdGy", "jet", "hsv", "rainbow"}


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=mllib.generator(seed))


def history(**metrics):
    return mllib.History(rounds=[1, 2, 3], bits=[10**6, 2 * 10**6, 3 * 10**6], metrics=metrics)


def accuracy_history():
    return history(accuracy=[Spread([a, a + 0.05]) for a in (0.5, 0.6, 0.7)], megabits=[0.1, 0.2, 0.3])


def systems_traces():
    A, b = sy.sparse_problem(30, 12, informative=4, gen=mllib.generator(0))
    traces = {r: sy.train_two_units(A, b, 0.5, budget=3, rule=r, rounds=4, gen=mllib.generator(0)) for r in sy.RULES}
    slow = sy.train_slow_alone(A, b, 0.5, rounds=4, updates=5, gen=mllib.generator(0))
    return traces, sy.CostModel(), sy.primal(A, b, sy.solve(A, b, 0.5), 0.5), slow


def sampling_traces():
    A, b = sy.heterogeneous_regression(200, 5, spread=1.5, gen=mllib.generator(0))
    return [sy.sgd(A, b, scheme=s, steps=20, batch=2, lr=0.01, every=10, gen=mllib.generator(0)) for s in sy.SCHEMES]


def attack_grid():
    probabilities = rand(2, 2, 10).softmax(-1)
    return adversarial.widget.AttackGrid(rand(1, 28, 28), 3, (0.0, 0.1), (1, 5), rand(2, 2, 1, 28, 28), probabilities)


def alone_vs_pooled():
    counts = (rand(20, 10) * 20).long()  # 20 clients, as the lecture shows
    return introduction.AloneVsPooled(0.1, counts, rand(20), rand(20, seed=1), rand(20, seed=2))


FIGURES = {
    "adversarial.plot_attack": lambda: adversarial.plot_attack(attack_grid(), 0.1, 5),
    "automl.plot_anytime": lambda: automl.plot_anytime({"random": rand(3, 3), "hyperband": rand(3, 3)}, [10, 20, 40],
                                                       20),  # fmt: skip
    "automl.plot_zero_order": lambda: automl.plot_zero_order({"zo": rand(5, 2) + 0.1, "fo": rand(5, 2) + 0.1}),
    "automl.plot_adaptation": lambda: automl.widgets.plot_adaptation({"maml": rand(11), "fo-maml": rand(11)}),
    "compression.plot_accuracy_vs_bits": lambda: compression_lecture.plot_accuracy_vs_bits(
        {"float32": accuracy_history(), "sign": accuracy_history()}).figure,
    "compression.plot_sweep": lambda: compression_lecture.plot_sweep(
        {4: {"top-k": accuracy_history()}}, 4, parameter="k", baseline=accuracy_history()),
    "decentralized.plot_topology": lambda: plot_topology("exponential", 8, steps=10),
    "federated.plot_drift": lambda: federated.plot_drift(
        {"FedAvg": rand(6, 1), "SCAFFOLD": rand(6, 1, seed=1)}, optimum=0.5, fixed_point=0.4),
    "introduction.plot_label_counts": lambda: introduction.plot_label_counts(
        mllib.split(mllib.load("digits", gen=mllib.generator(0)), 20, gen=mllib.generator(0))).figure,
    "introduction.plot_alone_vs_pooled": lambda: introduction.plot_alone_vs_pooled(alone_vs_pooled()),
    "personalized.plot_collaboration": lambda: personalized.plot_collaboration(10, 1.0, 0.3, trials=200),
    "personalized.plot_linear_collaboration": lambda: personalized.plot_linear_collaboration(
        personalized.LinearCollaboration([5, 20, 80, 320], rand(4), rand(4, seed=1), rand(4, seed=2)), 10),
    "playground.plot": lambda: playground.plot(
        [history(accuracy=[0.5, 0.6, 0.7])] * 2, ["a", "b"]),
    "privacy.plot_clip_noise": lambda: privacy.plot_clip_noise(rand(50), 0.5, 1.0, 10, 2.0),
    "privacy.plot_tradeoff": lambda: privacy.plot_tradeoff([float("inf"), 1.0, 4.0], rand(3), rand(3, 4), 4.0),
    "privacy.plot_reconstructions": lambda: privacy.plot_reconstructions(rand(1, 1, 8, 8), {"a": rand(1, 1, 8, 8)},
                                                                         {"a": 0.1}),  # fmt: skip
    "robust.plot_points": lambda: robust_figures.plot_points(rand(6, 2), torch.tensor([[3.0, 2.0]])),
    "robust.plot_grid": lambda: robust_figures.plot_grid(
        Grid([0, 1], [0.0, 0.9], ["none", "ALIE"], ["mean", "Krum"], rand(2, 2, 2, 2))),
    "robust.plot_groups": lambda: robust_figures.plot_groups(
        {name: {"majority": Spread([0.9, 0.92]), "minority": Spread([0.6, 0.5])} for name in ("mean", "Krum")}),
    "systems.selection_figure": lambda: sy.selection_figure(*systems_traces()),
    "systems.sampling_figure": lambda: sy.sampling_figure(sampling_traces()),
}


@pytest.fixture
def course_style():
    with matplotlib.style.context(STYLE):
        yield
    plt.close("all")


def test_setup_applies_the_course_style_and_keeps_the_figure_size():
    file = matplotlib.rc_params_from_file(STYLE, use_default_template=False)
    assert "figure.figsize" not in file and "figure.dpi" not in file  # the slides' heights were fitted to them
    with matplotlib.rc_context():
        mllib.setup(seed=0)
        assert matplotlib.rcParams["axes.prop_cycle"] == COLOUR_BLIND_SAFE_CYCLE
        assert matplotlib.rcParams["legend.fontsize"] >= SMALLEST_POINTS


@pytest.mark.parametrize("name", FIGURES)
def test_figure_is_titled_labelled_and_legible(name, course_style):
    fig = FIGURES[name]()
    fig.canvas.draw()  # lays out the tick labels
    for ax in fig.axes:
        where = f"{name}, axes {ax.get_title()!r}"
        if getattr(ax, "_colorbar", None) is not None:
            assert ax.get_ylabel() or ax.get_xlabel(), f"{where}: an unlabelled colour bar"
            continue
        assert ax.get_title(), f"{name}: an axes without a title"
        if not ax.images:  # a picture's axes are its pixels: its title says what it shows
            assert ax.get_xlabel() and ax.get_ylabel(), f"{where}: an unlabelled axis"
        named = ax.get_legend_handles_labels()[1]
        assert len(named) < 2 or ax.get_legend() is not None, f"{where}: {len(named)} series and no legend"
        for image in ax.images:
            assert image.get_cmap().name not in RED_GREEN_MAPS, f"{where}: colour map {image.get_cmap().name}"
        for axis in (ax.xaxis, ax.yaxis):
            boxes = [t.get_window_extent() for t in axis.get_ticklabels(which="both") if t.get_visible() and t.get_text()]
            assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:])), f"{where}: tick labels overlap"
    small = {t.get_text(): t.get_fontsize() for t in fig.findobj(Text)
             if t.get_text() and t.get_visible() and t.get_fontsize() < SMALLEST_POINTS}  # fmt: skip
    assert not small, f"{name}: text below {SMALLEST_POINTS} pt: {small}"


def test_every_plotting_function_of_the_library_is_checked():
    """A new plot function in mllib joins FIGURES (its name after the package)."""
    drawn = {name.rsplit(".", 1)[1] for name in FIGURES}
    for module in (adversarial.widget, automl.widgets, compression_lecture, decentralized_plots, federated.drift,
                   introduction, personalized.averaging, personalized.transfer, playground, privacy.plots,
                   robust_figures, sy.plots):  # fmt: skip
        missing = {n for n in vars(module) if n.startswith("plot") or n.endswith("_figure")} - drawn
        assert not missing, f"{module.__name__}: {missing} not in FIGURES"
