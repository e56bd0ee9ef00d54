"""The Flower app on Flower's deployment runtime: a SuperLink and SuperNodes on loopback.

Each run equals mllib's in-process simulation with the same seeds: the SuperNodes draw
their minibatches from the generators the simulation gives its rows.
"""
import pathlib
import time

import pytest
import torch

import mllib

pytest.importorskip("flwr", reason="the flower extra is not installed: pip install -e '.[flower]'")

from mllib.flower.deploy import Deployment  # noqa: E402
from mllib.flower.task import Settings, federation, simulate  # noqa: E402

NODES = [{"partition-id": i} for i in range(3)]
BYZANTINE_NODES = [*NODES[:2], {"partition-id": 2, "attack": "noise"}]


def stopped(processes) -> bool:
    """No live process is left in the groups of ``processes`` (the servers' children included).
    Zombies count as stopped: a container's init may never reap an orphan."""
    groups = {p.pid for p in processes}
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) in groups and fields[0] != "Z":
            return False
    return True


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    with Deployment(NODES, tmp_path_factory.mktemp("honest")) as deployment:
        started = list(deployment.processes)
        yield deployment
    assert stopped(started)


@pytest.fixture(scope="module")
def with_byzantine(tmp_path_factory):
    with Deployment(BYZANTINE_NODES, tmp_path_factory.mktemp("byzantine")) as deployment:
        yield deployment


def assert_same_model(flower, simulated, operations=64):
    """Flower's run and the simulation sum in other orders: allow float32 rounding (2^-23
    relative) accumulated over ``operations`` steps, relative to the largest weight."""
    gap, scale = float((flower - simulated).abs().max()), float(simulated.abs().max())
    assert gap <= operations * torch.finfo(torch.float32).eps * scale, f"max |flower - simulation| = {gap:.2e}"


def final_model(deployment, settings):
    return torch.from_numpy(deployment.run(settings, timeout=240)["model"])


@pytest.mark.deployment
@pytest.mark.parametrize("algorithm", ["fedavg", "scaffold"])
def test_three_rounds_on_three_supernodes_equal_the_simulation(honest, algorithm):
    settings = Settings(rounds=3, clients=3, algorithm=algorithm)
    assert_same_model(final_model(honest, settings), simulate(settings))


@pytest.mark.deployment
def test_dp_fedavg_equals_the_simulation_and_reports_the_accountants_epsilon(honest):
    settings = Settings(rounds=2, clients=3, algorithm="dp-fedavg", clip=0.5, noise=0.8)  # q = 1: no amplification
    result = honest.run(settings, timeout=240)
    assert_same_model(torch.from_numpy(result["model"]), simulate(settings))
    assert "round 2: test accuracy" in result["log"] and "epsilon 9.23 at delta 1e-05" in result["log"]


@pytest.mark.deployment
def test_the_median_resists_a_byzantine_supernode_that_throws_plain_averaging_off(with_byzantine):
    honest = Settings(rounds=2, clients=3)
    model, clients = federation(honest)
    band = mllib.test_accuracy(model, simulate(honest), clients.x_test, clients.y_test)  # no attack: 0.81
    accuracy = {}
    for aggregator, byzantine in (("median", 1), ("mean", 0)):
        settings = Settings(rounds=2, clients=3, aggregator=aggregator, byzantine=byzantine)
        result = with_byzantine.run(settings, timeout=240)
        assert_same_model(torch.from_numpy(result["model"]), simulate(settings, attack="noise"))
        accuracy[aggregator] = result["accuracy"][-1]
    assert abs(accuracy["median"] - band) < 0.05, accuracy
    assert accuracy["mean"] < band - 0.4, accuracy


@pytest.mark.deployment
def test_a_supernode_that_dies_mid_round_fails_the_run_with_a_clear_error_in_bounded_time(tmp_path):
    settings = Settings(rounds=3, clients=3, timeout=20)
    with Deployment(NODES, tmp_path) as deployment:
        started = list(deployment.processes)

        def kill_a_node_once_round_one_starts(line):
            if "[ROUND 1/3]" in line:
                deployment.stop_node(2)

        start = time.monotonic()
        with pytest.raises(RuntimeError, match=r"round 1: .*SuperNode"):
            deployment.run(settings, timeout=120, on_line=kill_a_node_once_round_one_starts)
        assert time.monotonic() - start < 90
    assert stopped(started)


def test_settings_reject_bad_values_with_clear_messages():
    with pytest.raises(ValueError, match="algorithm must be one of"):
        Settings(algorithm="fedprox")
    with pytest.raises(ValueError, match="a robust aggregator replaces FedAvg's mean"):
        Settings(algorithm="scaffold", aggregator="median")
    with pytest.raises(ValueError, match=r"unknown settings \['rounds_per_epoch'\]"):
        Settings.from_config({"rounds-per-epoch": 2})
    assert Settings.from_config({"local-steps": 3, "algorithm": "scaffold"}).local_steps == 3
