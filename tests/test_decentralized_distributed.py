"""Multi-process runs of mllib.decentralized.distributed: 4 gloo ranks on 127.0.0.1.

Each test starts real processes (a few seconds each); they all end, or are ended, before
the test returns.
"""
import time

import pytest
import torch

from mllib.decentralized import consensus_distance
from mllib.decentralized.distributed import DistributedError, RunConfig, launch, launch_subprocess, parse, simulate

N = 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread in this process and the forked ranks (what mllib.setup gives them)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_dpsgd_on_four_ranks_equals_the_simulation(tmp_path):
    cfg = RunConfig(algorithm="dpsgd", topology="ring", steps=15, lr=0.1, batch_size=8, seed=3, timeout=30)
    result = launch(cfg, N, str(tmp_path / "run.pt"))
    assert torch.equal(torch.load(tmp_path / "run.pt")["X"], result["X"])  # also saved where asked
    expected = simulate(cfg, N)
    assert result["X"].shape == expected.shape
    assert (result["X"] - expected).abs().max() < 1e-5
    assert result["consensus"][0] == 0.0 and result["consensus"][-1] > 0  # all start equal, then drift apart


def test_gossip_on_a_directed_exponential_graph_equals_the_simulation():
    cfg = RunConfig(algorithm="gossip", topology="exponential", steps=6, seed=1, timeout=30)
    result = launch(cfg, N)
    assert (result["X"] - simulate(cfg, N)).abs().max() < 1e-5
    assert result["consensus"][-1] < 1e-3 * result["consensus"][0]  # gap 2/3 for n = 4
    assert result["consensus"][-1] == consensus_distance(result["X"])  # the ranks measure it as the simulation does


def test_a_rank_that_dies_fails_the_run_with_a_clear_error():
    cfg = RunConfig(algorithm="gossip", topology="ring", steps=50, timeout=20, fail_rank=2, fail_step=3)
    start = time.monotonic()
    with pytest.raises(DistributedError, match=r"rank \d (died|failed)"):
        launch(cfg, N)
    assert time.monotonic() - start < 60


def test_a_rank_that_never_joins_fails_the_run_within_the_timeout():
    cfg = RunConfig(algorithm="gossip", topology="ring", steps=5, timeout=4, fail_rank=1, fail_step=-1)
    start = time.monotonic()
    with pytest.raises(DistributedError, match=r"not all 4 ranks joined within 4 s"):
        launch(cfg, N)
    assert time.monotonic() - start < 60


def test_command_line_maps_to_the_config():
    cfg, nproc, out = parse(["--nproc", "3", "--topology", "torus", "--lr", "0.5", "--fail-rank", "1", "--out", "x.pt"])
    assert (nproc, out) == (3, "x.pt")
    assert cfg == RunConfig(topology="torus", lr=0.5, fail_rank=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [(dict(algorithm="admm"), "algorithm must be one of"), (dict(topology="mesh"), "topology must be one of"),
     (dict(timeout=0), "^timeout must be a finite number > 0")],
)
def test_bad_config_raises_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**kwargs)


def test_launch_needs_two_ranks():
    with pytest.raises(ValueError, match="^nproc must be an integer >= 2"):
        launch(RunConfig(), 1)


def test_launch_rejects_a_topology_that_does_not_fit_before_starting_processes():
    with pytest.raises(ValueError, match="torus needs n = r"):
        launch(RunConfig(topology="torus"), 4)


def test_python_dash_m_spawns_its_own_ranks():
    # launch_subprocess runs `python -m mllib.decentralized.distributed --nproc 2 ...`
    result = launch_subprocess(RunConfig(algorithm="gossip", topology="complete", steps=2), 2, wall_timeout=120)
    assert result["X"].shape == (2, 8)
    assert result["consensus"][-1] < 1e-10  # two nodes agree after one step


def test_a_failing_command_reports_its_error():
    cfg = RunConfig(algorithm="gossip", topology="ring", steps=20, timeout=20, fail_rank=1, fail_step=2)
    with pytest.raises(DistributedError, match=r"the distributed run failed: DistributedError: rank \d (died|failed)"):
        launch_subprocess(cfg, 3, wall_timeout=120)
