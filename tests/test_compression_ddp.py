"""mllib compressors inside a real DistributedDataParallel model: 2 processes, gloo, loopback."""
import pytest
import torch
import torch.distributed as dist

from mllib import compression as C
from mllib.compression import PowerSGD
from mllib.compression.ddp import PowerSGDHook, free_port, run_ddp

SHAPES = [(6, 5), (6,), (4, 7)]  # two layers PowerSGD compresses at rank 2, one bias it does not


class Bucket:  # what DDP hands a hook
    def __init__(self, gradients):
        self.grads, self.flat = gradients, torch.cat([g.flatten() for g in gradients])

    def buffer(self):
        return self.flat

    def index(self):
        return 0

    def gradients(self):
        return self.grads


def gradients(process, step):
    """Fixed float64 gradients: the hook and the in-process compressor then differ by rounding only."""
    gen = torch.Generator().manual_seed(10 * step + process)
    return [torch.randn(shape, generator=gen, dtype=torch.float64) for shape in SHAPES]


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


def _powersgd_hook_process(process: int, port: int, out: str) -> None:
    """One of two processes: PowerSGDHook on 3 steps of fixed gradients; saves what it computed."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=process, world_size=2)
    try:
        hook = PowerSGDHook(2, seed=3)
        averaged = [hook.hook(None, Bucket(gradients(process, step))).wait() for step in range(3)]
        (state,) = hook.states.values()
        torch.save({"averaged": averaged, "Q": state.Q, "error": state.error}, f"{out}/{process}.pt")
    finally:
        dist.destroy_process_group()


def test_powersgd_hook_on_two_processes_computes_the_in_process_powersgd(tmp_path):
    """Issue #24: the hook's all-reduces and PowerSGD's means over the worker axis give the same
    averaged gradients, warm starts and error memories, step after step."""
    torch.multiprocessing.spawn(_powersgd_hook_process, args=(free_port(), str(tmp_path)), nprocs=2)
    processes = [torch.load(tmp_path / f"{process}.pt") for process in range(2)]
    compressor = PowerSGD(SHAPES, 2, seed=3)
    for step in range(3):
        X = torch.stack([Bucket(gradients(process, step)).flat for process in range(2)])  # (2 workers, d)
        expected = compressor(X).mean(0)
        for hooked in processes:
            assert torch.allclose(hooked["averaged"][step], expected, rtol=0, atol=1e-12)
    for process, hooked in enumerate(processes):
        assert torch.allclose(hooked["error"], compressor.error[process], rtol=0, atol=1e-12)
        assert all(torch.allclose(q, expected_q, rtol=0, atol=1e-12)
                   for q, expected_q in zip(hooked["Q"], compressor.Q) if q is not None)  # fmt: skip


def test_the_hook_the_compressor_and_the_exercise_run_one_power_step(monkeypatch):
    """Issue #24: PowerSGD's arithmetic is written once, in ``power_step``, whichever way the mean
    over workers is taken (all-reduce in the hook, a mean over the worker axis in one process)."""
    calls = []
    step = C.powersgd.power_step.__wrapped__
    monkeypatch.setattr(C.powersgd.power_step, "__wrapped__", lambda M, Q, mean: calls.append(M.shape) or step(M, Q, mean))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        PowerSGDHook(2).hook(None, Bucket(gradients(0, 0)))
    finally:
        dist.destroy_process_group()
    PowerSGD(SHAPES, 2)(torch.zeros(3, 6 * 5 + 6 + 4 * 7))
    C.powersgd_step(torch.zeros(3, 6, 5), torch.ones(5, 2))
    assert calls == [(6, 5), (4, 7), (1, 3, 6, 5), (1, 3, 4, 7), (3, 6, 5)]


def test_compression_hook_sends_the_encoded_payload_not_the_dense_bucket():
    from mllib.compression import ErrorFeedback, ScaledSign
    from mllib.compression.ddp import compression_hook

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        hook = compression_hook(lambda: ErrorFeedback(ScaledSign()))
        grad = torch.randn(1000, generator=torch.Generator().manual_seed(0))
        averaged = hook(None, Bucket([grad])).wait()
        assert torch.equal(averaged, ScaledSign().compress(grad[None])[0])  # one process: its own message
        assert hook.bytes_sent == 1000 / 8 + 4  # packed signs and one float32 scale, not 4000 bytes
        with pytest.raises(ValueError, match="use PowerSGDHook"):
            compression_hook(lambda: PowerSGD([(10, 100)], 1))(None, Bucket([grad]))
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


def test_the_ddp_processes_leave_the_callers_stderr_alone(capfd, monkeypatch):
    """A notebook cell shows what reaches the kernel's stderr: the processes' own (here C++ log
    lines) goes to their files, so a message some runs print cannot change a recorded output."""
    monkeypatch.setenv("TORCH_CPP_LOG_LEVEL", "INFO")  # every process logs its process group's setup
    run_ddp(hook="none", world_size=2, steps=2)
    assert capfd.readouterr().err == ""
