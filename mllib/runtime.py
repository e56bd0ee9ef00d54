"""Reproducibility and device: one call seeds everything, one picks the device.

``setup`` also applies the course's figure style (``course.mplstyle``), the one place every
notebook goes through.

Every random number in the course is drawn from a CPU ``torch.Generator`` and then
moved to the device, so that a GPU run sees the very numbers a CPU run sees.
"""
import os
import random
from pathlib import Path

import matplotlib.style
import numpy as np
import torch

from .constraints import Integer, constrain

DEVICE_VARIABLE = "MLLIB_DEVICE"
# The perturbation pass of `make test` sets another thread count here: notebooks must
# print the same results (within their declared tolerances) with any number of threads.
THREADS_VARIABLE = "MLLIB_THREADS"
# Legible on a projector, colour-blind safe; it leaves the figure sizes alone (shipped as package data).
STYLE = Path(__file__).with_name("course.mplstyle")


@constrain(seed=Integer(min=0), threads=Integer(min=1) | None)
def setup(seed: int = 0, threads: int | None = None) -> torch.Generator:
    """Make a notebook or script reproducible and return its CPU generator.

    Seeds Python, NumPy and torch, fixes torch's thread count (the thread count
    changes the last digits of float results), turns TF32 off and deterministic
    algorithms on, and applies the course's figure style (``STYLE``).

    Args:
        seed: the seed of every generator.
        threads: torch's CPU thread count; by default ``MLLIB_THREADS``, else 1.

    Returns:
        A CPU ``torch.Generator`` seeded with ``seed``: pass it to every function
        that draws random numbers.

    Raises:
        ValueError: if ``seed`` is negative or ``threads`` < 1.
    """
    if threads is None:
        threads = _threads_from_environment()
    gen = generator(seed)
    # cuBLAS needs this before its first call to be deterministic.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True)
    matplotlib.style.use(STYLE)
    return gen


def _threads_from_environment() -> int:
    value = os.environ.get(THREADS_VARIABLE, "1").strip() or "1"
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_VARIABLE} must be a whole number >= 1, got {value!r}")
    return int(value)


@constrain(seed=Integer(min=0))
def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``.

    Raises:
        ValueError: if ``seed`` is negative.
    """
    return torch.Generator().manual_seed(seed)


def device() -> torch.device:
    """The device the course computes on: CUDA when present, else the CPU.

    ``MLLIB_DEVICE=cpu`` (or ``cuda``, ``cuda:1``, ...) overrides the choice.

    Raises:
        ValueError: if ``MLLIB_DEVICE`` names a device torch does not know or cannot use.
    """
    name = os.environ.get(DEVICE_VARIABLE, "").strip()
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"{DEVICE_VARIABLE}={name!r} is not a torch device; use 'cpu' or 'cuda'") from err
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{DEVICE_VARIABLE}={name!r} but CUDA is not available; use 'cpu'")
    return chosen


def randn(*shape: int, gen: torch.Generator, device: torch.device | None = None) -> torch.Tensor:
    """Standard normal samples drawn on the CPU from ``gen``, then moved to ``device``."""
    return torch.randn(*shape, generator=gen).to(device or "cpu")


def rand(*shape: int, gen: torch.Generator, device: torch.device | None = None) -> torch.Tensor:
    """Uniform [0, 1) samples drawn on the CPU from ``gen``, then moved to ``device``."""
    return torch.rand(*shape, generator=gen).to(device or "cpu")
