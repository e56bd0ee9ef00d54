"""mllib compressors inside a real DistributedDataParallel model: 2 processes, gloo, loopback."""
import pytest

from mllib.compression.ddp import PowerSGDHook, run_ddp


@pytest.fixture(scope="module")
def powersgd_and_sign():
    return run_ddp(hook=("mllib", "sign+ef", "torch"), world_size=2, rank=2, steps=30)


@pytest.fixture(scope="module")
def powersgd(powersgd_and_sign):
    return powersgd_and_sign["mllib"]


def test_powersgd_hook_keeps_the_replicas_identical(powersgd):
    assert (powersgd["rows"][0] == powersgd["rows"][1]).all()


def test_powersgd_hook_trains_the_model(powersgd):
    losses = powersgd["losses"]
    assert sum(losses[-5:]) / 5 < 0.75 * losses[0]
    assert powersgd["accuracy"][0] > 0.7


def test_compression_hook_with_sign_and_error_feedback_trains(powersgd_and_sign):
    result = powersgd_and_sign["sign+ef"]
    assert (result["rows"][0] == result["rows"][1]).all()
    assert result["accuracy"][0] > 0.7


def test_pytorch_powersgd_hook_trains_beside_ours(powersgd_and_sign):
    result = powersgd_and_sign["torch"]
    assert (result["rows"][0] == result["rows"][1]).all()
    assert abs(result["accuracy"][0] - powersgd_and_sign["mllib"]["accuracy"][0]) < 0.1


def test_a_failing_process_sends_its_traceback_to_the_caller():
    with pytest.raises(RuntimeError, match=r"DDP process \d failed:\n(.|\n)*Invalid learning rate: -1.0"):
        run_ddp(hook="none", steps=1, lr=-1.0)


def test_bad_hook_and_rank_raise():
    with pytest.raises(ValueError, match="hook must be"):
        run_ddp(hook="zip")
    with pytest.raises(ValueError, match="hook must be"):
        run_ddp(hook=())
    with pytest.raises(ValueError, match="rank must be an integer >= 1, got rank=0"):
        PowerSGDHook(0)
