"""The Flower app on Flower's deployment runtime: a SuperLink and SuperNodes on loopback.

Each run equals mllib's in-process simulation with the same seeds: the SuperNodes draw
their minibatches from the generators the simulation gives its rows.
"""
import pathlib
import time

import numpy as np
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
    band = mllib.accuracy_on(model, simulate(honest), clients.x_test, clients.y_test)  # no attack: 0.81
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


class InProcessGrid:
    """Flower's Grid for the ServerApp, delivering each train message to the ClientApp of its
    SuperNode in this process (each node with its own Context, kept from round to round, and
    answering in reverse order): the app's server and clients without a deployment."""

    def __init__(self, settings, node_configs):
        from flwr.app import Context, RecordDict

        self.config = {key.replace("_", "-"): value for key, value in settings.__dict__.items()}
        self.nodes = {10 + i: Context(run_id=1, node_id=10 + i, node_config=config, state=RecordDict(),
                                      run_config=self.config) for i, config in enumerate(node_configs)}  # fmt: skip

    def get_node_ids(self):
        return list(self.nodes)

    def send_and_receive(self, messages, *, timeout=None):
        from mllib.flower import client_app

        return [client_app.train(m, self.nodes[m.metadata.dst_node_id]) for m in reversed(list(messages))]


@pytest.mark.parametrize(("settings", "nodes", "attack"), [
    (Settings(rounds=2, clients=3, local_steps=5), NODES, "none"),
    (Settings(rounds=2, clients=3, local_steps=5, algorithm="scaffold"), NODES, "none"),
    (Settings(rounds=2, clients=3, local_steps=5, algorithm="dp-fedavg", clip=0.5, noise=0.8), NODES, "none"),
    (Settings(rounds=2, clients=3, local_steps=5, aggregator="median", byzantine=1), BYZANTINE_NODES, "noise"),
], ids=["fedavg", "scaffold", "dp-fedavg", "median, a Byzantine node"])  # fmt: skip
def test_the_server_apps_round_engine_with_the_client_apps_in_process_equals_the_simulation(
    settings, nodes, attack, tmp_path, monkeypatch, capsys
):
    from flwr.app import Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from mllib.flower import server_app

    for name in ("_run_id", "_task_id", "_node_id"):  # what Flower's runtime sets in a ServerApp's process
        monkeypatch.setattr(TaskIdentity, name, 1)
    settings = Settings(**{**settings.__dict__, "output": str(tmp_path / "run.npz")})
    grid = InProcessGrid(settings, nodes)
    server_app.main(grid, Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=grid.config))
    saved = np.load(settings.output)
    assert_same_model(torch.from_numpy(saved["model"]), simulate(settings, attack=attack))
    assert len(saved["accuracy"]) == settings.rounds + 1
    printed = capsys.readouterr().out
    assert "[ROUND 2/2]" in printed and "round 2: test accuracy" in printed
    assert ("epsilon 9.23 at delta 1e-05" in printed) == (settings.algorithm == "dp-fedavg")


def test_the_server_refuses_replies_for_other_partitions(tmp_path, monkeypatch):
    from flwr.app import Context, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from mllib.flower import server_app

    for name in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)
    settings = Settings(rounds=1, clients=3, local_steps=1, output=str(tmp_path / "run.npz"))
    grid = InProcessGrid(settings, [{"partition-id": 0}, {"partition-id": 1}, {"partition-id": 1}])
    with pytest.raises(RuntimeError, match=r"round 1: the SuperNodes replied for partitions \[0, 1, 1\]"):
        server_app.main(grid, Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=grid.config))


def test_settings_reject_bad_values_with_clear_messages():
    with pytest.raises(ValueError, match="algorithm must be one of"):
        Settings(algorithm="fedprox")
    with pytest.raises(ValueError, match="a robust aggregator replaces FedAvg's mean"):
        Settings(algorithm="scaffold", aggregator="median")
    with pytest.raises(ValueError, match=r"unknown settings \['rounds_per_epoch'\]"):
        Settings.from_config({"rounds-per-epoch": 2})
    assert Settings.from_config({"local-steps": 3, "algorithm": "scaffold"}).local_steps == 3


# --- Flower's own secure aggregation, SecAgg+ (mllib.flower.secaggplus) -----------------------------
# Each run below is one `flwr run` of the SecAgg+ app: about 25 s per round on a quiet 2-core
# machine (4 round trips, each starting a fresh flwr-clientapp process per SuperNode).
SECAGG_RUN_TIMEOUT = 160  # s: with the deployment's start, each test stays within 3 minutes


def assert_within_the_quantization_step(settings, result, round_, partitions):
    from mllib.flower.secaggplus import quantization_gap

    gap, tolerance = quantization_gap(settings, result, round_, partitions)  # against plain FedAvg in-process
    assert gap <= tolerance, f"max |SecAgg+ - plain FedAvg| = {gap:.2e} > {tolerance:.2e}"


@pytest.mark.deployment
def test_secaggplus_aggregate_equals_the_plain_aggregate_within_its_quantization_step(honest):
    from mllib.flower import secaggplus

    settings = secaggplus.SecAggPlusSettings(rounds=1, clients=3, num_shares=3, threshold=2)
    result = secaggplus.run(honest, settings, timeout=SECAGG_RUN_TIMEOUT)
    assert_within_the_quantization_step(settings, result, 1, [0, 1, 2])
    entry = result["rounds"][1]
    assert (entry["results"], entry["failures"], entry["messages"]) == (3, 0, 8 * 3)  # 4 round trips per node


@pytest.mark.deployment
def test_secaggplus_tolerates_a_supernode_stopped_mid_round_when_enough_remain(tmp_path):
    """SuperNode 2 is stopped while it trains (the stage that collects masked vectors): the two
    survivors (threshold 2) rebuild its pairwise masks and the round sums their models."""
    from mllib.flower import secaggplus

    settings = secaggplus.SecAggPlusSettings(rounds=1, clients=3, num_shares=3, threshold=2)
    nodes = [*NODES[:2], {"partition-id": 2, "fit-delay": 600}]  # node 2 would train for 10 minutes
    with Deployment(nodes, tmp_path) as deployment:
        started = list(deployment.processes)

        def stop_node_2_while_it_trains(line):
            if "round 1: SecAgg+ stage collect masked vectors" in line:
                deployment.stop_node(2)

        result = secaggplus.run(deployment, settings, timeout=SECAGG_RUN_TIMEOUT, on_line=stop_node_2_while_it_trains)
    assert stopped(started)
    assert result["rounds"][1]["partitions"] == [0, 1]
    assert_within_the_quantization_step(settings, result, 1, [0, 1])


@pytest.mark.deployment
def test_secaggplus_halts_a_round_whose_sampled_supernode_stops_before_sending_its_shares_and_says_so(tmp_path):
    """Flower 1.42 tolerates a dropout only after the shares are out: SuperNode 2, sampled for round 1
    and stopped during its first stages, sends no shares, yet Flower counts it among the dropped at
    unmasking; every survivor fails looking up its shares (KeyError) and the round halts. (A node
    stopped between rounds is sampled the same way while the SuperLink still lists it.) The run
    reports the halted round (SecAggHalted: round, stage, failures) instead of passing over it."""
    from mllib.flower import secaggplus

    settings = secaggplus.SecAggPlusSettings(rounds=1, clients=3, num_shares=3, threshold=2)
    with Deployment(NODES, tmp_path) as deployment:
        started = list(deployment.processes)

        def stop_node_2_once_round_1_starts(line):
            if "round 1: SecAgg+ stage setup" in line:
                deployment.stop_node(2)

        with pytest.raises(secaggplus.SecAggHalted, match=r"round 1: Flower's secure aggregation halted at stage "
                                                          r"'unmask' \(failures: .*KeyError") as halt:  # fmt: skip
            secaggplus.run(deployment, settings, timeout=SECAGG_RUN_TIMEOUT, on_line=stop_node_2_once_round_1_starts)
    assert stopped(started)
    result = halt.value.result
    assert result["models"] == {} and result["rounds"][1]["sampled"] == 3
    assert "round 1: secure aggregation halted at stage 'unmask'" in result["log"]


def test_secaggplus_settings_hold_what_flower_needs():
    from flwr.common.config import parse_config_args

    from mllib.flower.secaggplus import SecAggPlusSettings

    with pytest.raises(ValueError, match="num_shares must be odd"):
        SecAggPlusSettings(clients=5, num_shares=4)
    with pytest.raises(ValueError, match=r"threshold must be in \[2, num_shares=3\)"):
        SecAggPlusSettings(threshold=3)
    with pytest.raises(ValueError, match="must not wrap modulo 2"):
        SecAggPlusSettings(clients=3, quantization_range=2**31)
    with pytest.raises(ValueError, match="stage_timeout must be a finite number >= 0, got nan"):
        SecAggPlusSettings(stage_timeout=float("nan"))
    with pytest.raises(TypeError, match="quantization_range must be an integer >= 1, got 2.5"):
        SecAggPlusSettings(quantization_range=2.5)  # Flower's SecAggPlusWorkflow wants an int
    with pytest.raises(TypeError, match="num_shares must be an integer >= 3, got None"):
        SecAggPlusSettings(num_shares=None)
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got nan"):  # as Settings declares it
        SecAggPlusSettings(lr=float("nan"))
    with pytest.raises(ValueError, match=r"unknown settings \['rounds_per_epoch'\]"):
        SecAggPlusSettings.from_config({"rounds-per-epoch": 2})
    settings = SecAggPlusSettings.from_config({"num-shares": 5, "clients": 5})
    assert settings.num_shares == 5
    assert SecAggPlusSettings.from_config(parse_config_args([settings.to_config()])) == settings  # as `flwr run` reads it


def test_flowers_secaggplus_client_sends_both_secrets_of_a_node_named_active_and_dead():
    """What Flower 1.42's client mod reveals to a lying server: asked in one unmask request for node
    3 as active and as dead, it sends its shares of both node 3's self-mask seed and mask key, the
    two secrets that together unmask node 3's vector. (The course's SecAggClient refuses such a
    request: tests/test_secure_aggregation.py.)"""
    from flwr.app import ConfigRecord
    from flwr.client.mod.secure_aggregation.secaggplus_mod import SecAggPlusState, _unmask
    from flwr.common.secure_aggregation.secaggplus_constants import Key

    state = SecAggPlusState(nid=1, threshold=2, rd_seed_share_dict={1: b"b1", 2: b"b2", 3: b"b3"},
                            sk1_share_dict={1: b"k1", 2: b"k2", 3: b"k3"})  # fmt: skip
    lie = ConfigRecord({Key.ACTIVE_NODE_ID_LIST: [1, 2, 3], Key.DEAD_NODE_ID_LIST: [3]})
    answer = _unmask(state, lie)
    assert dict(zip(answer[Key.SHARE_LIST], answer[Key.NODE_ID_LIST], strict=True))[b"b3"] == 3
    assert b"k3" in answer[Key.SHARE_LIST]


def test_flowers_secaggplus_masks_come_from_a_32_bit_seed():
    """Flower 1.42 folds a 32-byte mask seed into 32 bits (XOR of its words) and expands it with
    NumPy's Mersenne Twister: seeds with the same fold give the same mask. (The course expands the
    whole 32-byte seed with ChaCha20.)"""
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen

    one, other = bytes(32), b"\x01\x00\x00\x00" * 2 + bytes(24)  # 1 XOR 1 = 0: the same 32-bit fold
    assert (pseudo_rand_gen(one, 2**32, [(1000,)])[0] == pseudo_rand_gen(other, 2**32, [(1000,)])[0]).all()
