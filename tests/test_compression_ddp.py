"""mllib compressors inside a real DistributedDataParallel model: 2 processes, gloo, loopback."""
import pytest
import torch

from mllib.compression.ddp import PowerSGDHook, free_port, run_ddp


@pytest.fixture(scope="module")
def two_seeds():
    return run_ddp(hook=("mllib", "sign+ef", "torch"), seed=(0, 1), world_size=2, rank=2, steps=30)


@pytest.fixture(scope="module")
def powersgd_and_sign(two_seeds):
    return {hook: by_seed[0] for hook, by_seed in two_seeds.items()}


@pytest.fixture(scope="module")
def powersgd(powersgd_and_sign):
    return powersgd_and_sign["mllib"]


def test_powersgd_hook_keeps_the_replicas_identical(powersgd):
    assert (powersgd["rows"][0] == powersgd["rows"][1]).all()


def test_powersgd_hook_trains_the_model(powersgd):
    losses = powersgd["losses"]
    assert sum(losses[-5:]) / 5 < 0.75 * losses[0]
    assert powersgd["accuracy"][0] > 0.7


def test_compression_hook_sends_the_encoded_payload_not_the_dense_bucket():
    import torch.distributed as dist

    from mllib.compression import ErrorFeedback, PowerSGD, ScaledSign
    from mllib.compression.ddp import compression_hook

    class Bucket:  # what DDP hands a hook
        def __init__(self, grad):
            self.grad = grad

        def buffer(self):
            return self.grad

        def index(self):
            return 0

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        hook = compression_hook(lambda: ErrorFeedback(ScaledSign()))
        grad = torch.randn(1000, generator=torch.Generator().manual_seed(0))
        averaged = hook(None, Bucket(grad)).wait()
        assert torch.equal(averaged, ScaledSign().compress(grad[None])[0])  # one process: its own message
        assert hook.bytes_sent == 1000 / 8 + 4  # packed signs and one float32 scale, not 4000 bytes
        with pytest.raises(ValueError, match="use PowerSGDHook"):
            compression_hook(lambda: PowerSGD([(10, 100)], 1))(None, Bucket(grad))
    finally:
        dist.destroy_process_group()


def test_compression_hook_with_sign_and_error_feedback_trains(powersgd_and_sign):
    result = powersgd_and_sign["sign+ef"]
    assert (result["rows"][0] == result["rows"][1]).all()
    assert result["accuracy"][0] > 0.7


def test_pytorch_powersgd_hook_trains_beside_ours(powersgd_and_sign):
    result = powersgd_and_sign["torch"]
    assert (result["rows"][0] == result["rows"][1]).all()
    assert abs(result["accuracy"][0] - powersgd_and_sign["mllib"]["accuracy"][0]) < 0.1


def test_each_seed_trains_its_own_model_with_identical_replicas(two_seeds):
    for hook, by_seed in two_seeds.items():
        assert list(by_seed) == [0, 1]
        assert all((run["rows"][0] == run["rows"][1]).all() for run in by_seed.values()), hook
        assert not torch.equal(by_seed[0]["rows"][0], by_seed[1]["rows"][0]), hook


def test_a_failing_process_sends_its_traceback_to_the_caller():
    with pytest.raises(RuntimeError, match=r"DDP process \d failed:\n(.|\n)*Invalid learning rate: -1.0"):
        run_ddp.__wrapped__(hook="none", steps=1, lr=-1.0)  # past the caller's own check on lr


def test_bad_hook_and_rank_raise():
    with pytest.raises(ValueError, match="hook must be"):
        run_ddp(hook="zip")
    with pytest.raises(ValueError, match="hook must be"):
        run_ddp(hook=())
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0 or a tuple of them, got \(\)"):
        run_ddp(seed=())
    with pytest.raises(ValueError, match="rank must be an integer >= 1, got 0"):
        PowerSGDHook(0)
