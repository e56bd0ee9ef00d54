import pytest
import torch

import mllib
from mllib.runtime import rand, randn


def test_setup_makes_runs_repeat():
    first = randn(5, gen=mllib.setup(seed=3))
    again = randn(5, gen=mllib.setup(seed=3))
    assert torch.equal(first, again)
    assert not torch.equal(first, randn(5, gen=mllib.setup(seed=4)))


def test_setup_fixes_threads_and_determinism():
    mllib.setup(seed=0, threads=1)
    assert torch.get_num_threads() == 1
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cuda.matmul.allow_tf32


@pytest.mark.parametrize("bad", [dict(threads=0), dict(seed=-1)])
def test_setup_rejects_bad_arguments(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        mllib.setup(**bad)


def test_random_numbers_come_from_the_cpu_generator():
    a = rand(3, gen=mllib.generator(1), device=torch.device("cpu"))
    b = torch.rand(3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_device_follows_the_environment(monkeypatch):
    monkeypatch.setenv("MLLIB_DEVICE", "cpu")
    assert mllib.device() == torch.device("cpu")
    monkeypatch.delenv("MLLIB_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert mllib.device().type == expected


@pytest.mark.parametrize("value", ["gpu0", "tpu"])
def test_device_rejects_unknown_names(monkeypatch, value):
    monkeypatch.setenv("MLLIB_DEVICE", value)
    with pytest.raises(ValueError, match="MLLIB_DEVICE"):
        mllib.device()


def test_thread_count_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("MLLIB_THREADS", "2")
    mllib.setup(seed=0)
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("MLLIB_THREADS", "two")
    with pytest.raises(ValueError, match="MLLIB_THREADS must be a whole number >= 1, got 'two'"):
        mllib.setup(seed=0)
    monkeypatch.delenv("MLLIB_THREADS")
    mllib.setup(seed=0)
    assert torch.get_num_threads() == 1
