"""Lecture 04's experiments and plots: accuracy against bits sent, low-rank errors and FLOPs."""
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch

from ..clients import run_rounds
from ..models import FlatModel
from ..partition import Clients
from ..runtime import generator
from .compressors import Compressor, Identity
from .powersgd import flops_power_iteration, flops_svd, flops_svd_lowrank, power_iteration, truncated_svd


@dataclass(frozen=True)
class CompressedRun:
    """One training run with a compressor: accuracy after each evaluated round and the
    megabits each client had sent by then."""

    name: str
    rounds: list[int]
    accuracy: list[float]
    megabits: list[float]  # per client, cumulative

    @property
    def final(self) -> float:
        return self.accuracy[-1]


def train_compressed(
    name: str,
    compressor: Compressor | None,
    model: FlatModel,
    clients: Clients,
    *,
    rounds: int,
    lr: float,
    batch_size: int,
    seed: int = 1,
    eval_every: int = 10,
) -> CompressedRun:
    """Distributed SGD (one local step per round, every client) with compressed updates.

    Every run draws the same initial model and minibatches (generator seeded ``seed``).
    ``compressor=None`` sends float32 (counted as ``Identity``).
    """
    compressor = compressor or Identity()
    history = run_rounds(
        model, clients, rounds=rounds, local_steps=1, lr=lr, batch_size=batch_size, gen=generator(seed),
        transforms=[compressor], eval_every=eval_every,
    )  # fmt: skip
    per_round = compressor.bits_sent / rounds / clients.n
    return CompressedRun(name, history.rounds, history.accuracy, [r * per_round / 1e6 for r in history.rounds])


def plot_accuracy_vs_bits(runs: Sequence[CompressedRun], ax: plt.Axes | None = None, *, title: str = "") -> plt.Axes:
    """Test accuracy against megabits sent per client, one line per run (log x axis)."""
    ax = ax or plt.figure(figsize=(6, 3.5)).gca()
    for run in runs:
        ax.plot(run.megabits, run.accuracy, marker=".", label=run.name)
    ax.set(xscale="log", xlabel="megabits sent per client", ylabel="mean client test accuracy",
           title=title or "accuracy against communication")  # fmt: skip
    ax.legend(fontsize=7)
    return ax


def plot_sweep(runs: dict, value, *, parameter: str, baseline: CompressedRun) -> plt.Figure:
    """The widget view: the run for ``runs[value]`` (with and without error feedback, a
    pair of runs) against the float32 baseline, accuracy against megabits."""
    if value not in runs:
        raise ValueError(f"{parameter}={value!r} was not precomputed; pick one of {list(runs)}")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    plot_accuracy_vs_bits([baseline, *runs[value]], ax, title=f"{parameter} = {value}")
    ax.set_ylim(0.3, 1.0)
    return fig


@dataclass(frozen=True)
class LowRankRow:
    """One matrix size: relative errors ||M - M_r||_F / ||M||_F and FLOPs of each method."""

    n: int
    error_svd: float
    error_power: float  # PowerSGD's one iteration from a random start
    error_power_warm: float  # after ``warm`` iterations (PowerSGD's warm start over steps)
    error_lowrank: float  # torch.svd_lowrank(q=rank, niter=2)
    flops_svd: int
    flops_power: int
    flops_lowrank: int


def gradient_like(n: int, m: int, *, decay: float = 0.7, gen: torch.Generator) -> torch.Tensor:
    """A test matrix (n, m) with singular values decay**j: U diag(decay**j) V^T, U, V random orthogonal."""
    k = min(n, m)
    U = torch.linalg.qr(torch.randn(n, k, generator=gen)).Q
    V = torch.linalg.qr(torch.randn(m, k, generator=gen)).Q
    return (U * decay ** torch.arange(k, dtype=torch.float32)) @ V.T


def low_rank_comparison(sizes: Sequence[int], rank: int, *, warm: int = 4, gen: torch.Generator) -> list[LowRankRow]:
    """Errors and FLOPs of the rank-``rank`` approximations of ``gradient_like`` n x n matrices."""
    rows = []
    for n in sizes:
        M = gradient_like(n, n, gen=gen)
        norm = M.norm()
        Q0 = torch.randn(n, rank, generator=gen)
        P1, Q1 = power_iteration(M, Q0, 1)
        Pw, Qw = power_iteration(M, Q0, warm)
        torch.manual_seed(0)  # svd_lowrank draws from torch's global generator
        U, S, V = torch.svd_lowrank(M, q=rank, niter=2)
        rows.append(LowRankRow(
            n, float((M - truncated_svd(M, rank)).norm() / norm), float((M - P1 @ Q1.T).norm() / norm),
            float((M - Pw @ Qw.T).norm() / norm), float((M - (U * S) @ V.T).norm() / norm),
            flops_svd(n, n), flops_power_iteration(n, n, rank), flops_svd_lowrank(n, n, rank, 2),
        ))  # fmt: skip
    return rows
