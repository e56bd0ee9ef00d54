"""Tests of mllib.playground: the composed pipeline of lecture 11."""
import dataclasses
import itertools
import math

import matplotlib
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mllib
from mllib import playground as pg
from mllib import privacy

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def data():
    gen = mllib.setup(seed=0)
    return mllib.load("digits", gen=gen).to(mllib.device())


def test_plain_setting_equals_fedavg(data):
    """f = 0, no compression, no momentum, no noise: exactly run_rounds (FedAvg), to 1e-6."""
    c = pg.Config(rounds=5)
    result = pg.run(c, data, gen=mllib.runtime.generator(3))
    gen = mllib.runtime.generator(3)
    clients = mllib.split(data, c.n_clients, c.partition, alpha=c.alpha, gen=gen)
    model = mllib.FlatModel(mllib.mlp(data.n_features, data.n_classes, hidden=(c.hidden,)))
    history = mllib.run_rounds(model, clients, rounds=c.rounds, local_steps=c.local_steps, lr=c.lr,
                               batch_size=c.batch_size, gen=gen)  # fmt: skip
    assert (result.model - history.model).abs().max() < 1e-6
    assert max(abs(a - b) for a, b in zip(result.accuracy, history.accuracy)) < 1e-6


def test_changed_setting_differs_from_fedavg(data):
    """The equality above can fail: an attack changes the model."""
    plain = pg.run(pg.Config(rounds=3), data)
    attacked = pg.run(pg.Config(rounds=3, attack="sign flip", f=2), data)
    assert (plain.model - attacked.model).abs().max() > 1e-3


def test_bits_cut_by_the_compressor_ratio(data):
    plain = pg.run(pg.Config(rounds=2), data)
    for name in pg.COMPRESSORS[1:]:
        comp = pg.make_compressor(name)
        squeezed = pg.run(pg.Config(rounds=2, compressor=name), data)
        d = plain.model.shape[0]
        assert plain.bits[-1] == 2 * 10 * 32 * d
        assert squeezed.bits[-1] * comp.ratio(d) == pytest.approx(plain.bits[-1])


def test_choco_gossip_keeps_gossips_accuracy_for_a_fraction_of_the_bits(data):
    ring = pg.Config(topology="ring")
    plain, choco = pg.run(ring, data), pg.run(dataclasses.replace(ring, compressor="top-k 10%"), data)
    d = len(choco.model[0])
    assert plain.bits[-1] / choco.bits[-1] == pytest.approx(pg.make_compressor("top-k 10%").ratio(d))
    assert choco.accuracy[-1] > plain.accuracy[-1] - 0.05


def test_gossip_bits_count_each_link(data):
    ring = pg.run(pg.Config(rounds=2, topology="ring"), data)
    d = ring.model.shape[1]
    assert ring.bits[-1] == 2 * 20 * 32 * d  # 10 nodes, 2 neighbours each
    assert ring.model.shape[0] == 10


@pytest.mark.parametrize("n", [4, 5, 10, 11, 30])
def test_max_f_matches_the_aggregators_own_condition(n):
    """f = max_f passes each aggregator's check; max_f + 1 is refused by it."""
    X = torch.randn(n, 3)
    for name in pg.AGGREGATORS[1:]:
        f = pg.max_f(name, n)
        robust_agg = mllib.robust.make(name, f)
        robust_agg(X)
        with pytest.raises(ValueError):
            mllib.robust.make(name, f + 1)(X)


def test_allowed_offers_only_valid_combinations():
    for topology, aggregator, n in itertools.product(pg.TOPOLOGIES, pg.AGGREGATORS, [4, 7, 10]):
        base = pg.Config(topology=topology, aggregator=aggregator, n_clients=n)
        options = pg.allowed(base)
        for agg in options["aggregator"]:
            for f in pg.allowed(pg.Config(topology=topology, aggregator=agg, n_clients=n))["f"]:
                assert pg.is_valid(pg.Config(topology=topology, aggregator=agg, n_clients=n, f=f))
    assert pg.allowed(pg.Config(topology="ring"))["compressor"] == ("none", "top-k 10%", "sign", "bfloat16")
    assert pg.allowed(pg.Config(topology="ring", compressor="sign"))["error_feedback"] == (False,)
    assert pg.allowed(pg.Config(aggregator="krum", n_clients=10))["f"] == (0, 1, 2, 3)


def test_run_seeds_runs_each_seed_as_run_does(data):
    c = pg.Config(rounds=2)
    results = pg.run_seeds(c, data, [4, 7])
    assert list(results) == [4, 7]
    assert torch.equal(results[7].model, pg.run(dataclasses.replace(c, seed=7), data).model)
    assert not torch.equal(results[4].model, results[7].model)
    assert pg.final_accuracy(results).values == (results[4].accuracy[-1], results[7].accuracy[-1])
    with pytest.raises(ValueError, match="at least one seed"):
        pg.run_seeds(c, data, [])


def test_paired_difference_is_taken_seed_by_seed(data):
    c = pg.Config(rounds=2)
    plain = pg.run_seeds(c, data, [0, 1])
    attacked = pg.run_seeds(dataclasses.replace(c, attack="noise", f=3), data, [0, 1])
    gap = pg.paired_difference(plain, attacked)
    assert gap.values == tuple(plain[s].accuracy[-1] - attacked[s].accuracy[-1] for s in (0, 1))
    with pytest.raises(ValueError, match="same seeds"):
        pg.paired_difference(plain, {1: attacked[1], 0: attacked[0]})


def test_pairwise_covers_every_valid_pair():
    options = {"a": (0, 1, 2), "b": ("x", "y"), "c": (True, False), "d": (0, 1)}
    valid = lambda s: not (s["a"] == 2 and s["b"] == "y")  # noqa: E731
    chosen = pg.pairwise(options, valid)
    assert all(valid(s) for s in chosen)
    everything = [dict(zip(options, v)) for v in itertools.product(*options.values())]
    wanted = {((a, s[a]), (b, s[b])) for s in everything if valid(s) for a, b in itertools.combinations(options, 2)}
    got = {((a, s[a]), (b, s[b])) for s in chosen for a, b in itertools.combinations(options, 2)}
    assert got == wanted
    assert len(chosen) < len([s for s in everything if valid(s)])


SWEEP = {
    "partition": pg.PARTITIONS, "n_clients": (5, 8), "topology": pg.TOPOLOGIES, "local_steps": (1, 3),
    "compressor": pg.COMPRESSORS, "error_feedback": (False, True), "attack": pg.ATTACKS, "f": (0, 1, 2),
    "aggregator": pg.AGGREGATORS, "momentum": (0.0, 0.9), "dp_sigma": (0.0, 1.0),
}  # fmt: skip


def test_all_pairs_sweep_runs(data):
    """Every valid pair of option values (found exhaustively) appears in a run; every run finishes."""
    names, valid_pairs = list(SWEEP), set()
    for values in itertools.product(*SWEEP.values()):
        s = dict(zip(names, values))
        if pg.is_valid(pg.Config(**s)):
            valid_pairs |= {((a, s[a]), (b, s[b])) for a, b in itertools.combinations(names, 2)}
    settings = pg.pairwise(SWEEP, lambda s: pg.is_valid(pg.Config(**s)))
    covered = {((a, s[a]), (b, s[b])) for s in settings for a, b in itertools.combinations(names, 2)}
    assert covered == valid_pairs
    for s in settings:
        r = pg.run(pg.Config(**s, rounds=2, batch_size=4, hidden=8), data)
        assert len(r.accuracy) == 2 and all(0 <= a <= 1 for a in r.accuracy)
        assert r.bits[0] > 0 and r.bits[-1] == 2 * r.bits[0]


@pytest.mark.parametrize(("change", "word"), [
    (dict(partition="sorted"), "partition"), (dict(aggregator="mode"), "aggregator"), (dict(n_clients=1), "n_clients"),
    (dict(alpha=0.0), "alpha"), (dict(momentum=1.0), "momentum"), (dict(dp_sigma=-1.0), "dp_sigma"),
    (dict(f=5), "f=5"), (dict(aggregator="krum", f=4), "krum"), (dict(topology="ring", aggregator="median"), "aggregator"),
    (dict(topology="ring", compressor="qsgd 4 levels"), "not a contraction"),
    (dict(topology="ring", dp_sigma=1.0), "dp_sigma"), (dict(choco_gamma=0), "choco_gamma"),
    (dict(topology="ring", compressor="sign", error_feedback=True), "error_feedback"),
    (dict(error_feedback=True), "error_feedback"), (dict(compressor="zip"), "compressor"), (dict(rounds=0), "rounds"),
])  # fmt: skip
def test_bad_input_raises_naming_the_option(data, change, word):
    with pytest.raises(ValueError, match=word):
        pg.run(pg.Config(**change), data)


def test_not_a_config_raises(data):
    with pytest.raises(TypeError, match="^config must be a playground.Config"):
        pg.run({"rounds": 2}, data)


def test_plot_and_describe(data):
    r = pg.run(pg.Config(rounds=2), data)
    fig = pg.plot([r, r], ["a", "b"])
    assert [ax.get_xlabel() for ax in fig.axes] == ["round", "bits sent by the clients (Mbit)"]
    assert len(fig.axes[0].lines) == 2
    text = pg.describe(pg.Config())
    positions = [text.index(stage) for stage in pg.PIPELINE]
    assert positions == sorted(positions)


def test_dp_noise_is_reported_with_its_epsilon():
    """sigma = 0.5 on every client for 30 rounds is epsilon of about 111 at delta = 1e-5 (issue #21)."""
    noisy = pg.Config(dp_sigma=0.5, rounds=30)
    assert pg.dp_epsilon(noisy) == privacy.epsilon(q=1.0, sigma=0.5, steps=30, delta=1e-5)
    assert 110 < pg.dp_epsilon(noisy) < 112
    assert "epsilon = 110.7 at delta = 1e-05 over 30 rounds" in pg.describe(noisy)
    assert pg.dp_epsilon(pg.Config()) == math.inf and "no privacy guarantee" in pg.describe(pg.Config())
    median = pg.Config(dp_sigma=0.5, aggregator="median")
    assert pg.dp_epsilon(median) is None and "no epsilon" in pg.describe(median)
    with pytest.raises(ValueError, match="dp_delta"):
        pg.validate(pg.Config(dp_delta=0.0))


def test_panel_shows_the_dp_epsilon_beside_its_slider(data):
    panel = pg.Panel(data, pg.Config())
    assert "no privacy guarantee" in panel.dp_label.value
    panel.widgets["dp_sigma"].value = 0.5
    assert "epsilon = " in panel.dp_label.value and "delta = 1e-05" in panel.dp_label.value


def test_panel_state_follows_its_controls_and_its_run_button(data):
    """The state is the Panel's attributes: f's bound follows the aggregator and n, each click adds a run."""
    panel = pg.Panel(data, pg.Config(rounds=5, n_clients=10))  # the rounds slider's least
    w = panel.widgets
    w["aggregator"].value = "krum"
    assert w["f"].max == pg.max_f("krum", 10) == 3
    w["n_clients"].value = 20
    assert w["f"].max == pg.max_f("krum", 20) == 8 and panel.current().n_clients == 20
    panel.button.click()
    w["topology"].value = "ring"
    assert w["aggregator"].options == ("mean",) and w["compressor"].options == pg.GOSSIP_COMPRESSORS
    panel.button.click()
    assert [c.topology for c in panel.configs] == ["server", "ring"] and len(panel.results) == 2
    assert panel.configs[0].aggregator == "krum" and panel.results[1].model.shape == (20, panel.results[0].model.shape[0])


def test_a_panel_displays_as_its_box(data):
    panel = pg.Panel(data)
    assert panel._repr_mimebundle_() == panel.box._repr_mimebundle_()
    with pytest.raises(TypeError, match="^data must be"):
        pg.Panel(None)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from([
    ("aggregator", a) for a in pg.AGGREGATORS] + [("topology", t) for t in pg.TOPOLOGIES]
    + [("n_clients", n) for n in (4, 5, 6, 9, 30)] + [("f", f) for f in (0, 1, 2, 5, 14)]
    + [("compressor", c) for c in pg.COMPRESSORS] + [("error_feedback", True), ("dp_sigma", 1.0)]), max_size=12))
def test_any_widget_clicks_leave_a_valid_config(data, clicks):
    """Whatever the user sets, in any order, the panel's controls show a valid Config."""
    panel = pg.Panel(data)
    for name, value in clicks:
        widget = panel.widgets[name]
        if widget.disabled or (hasattr(widget, "options") and value not in widget.options):
            continue
        widget.value = value
        pg.validate(panel.current())
