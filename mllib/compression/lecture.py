"""Lecture 04's experiments and plots: accuracy against bits sent, low-rank errors and FLOPs."""
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch

from ..clients import CLIENTS, MODEL, evaluate
from ..constraints import Generator, Instance, Integer, Integers, Real, Rule, constrain
from ..engine import Federated, History, everyone, run
from ..models import FlatModel
from ..partition import Clients
from ..runtime import generator
from ..spread import Spread
from .compressors import Compressor, Identity
from .powersgd import SIZE, PowerSGD, flops_power_iteration, flops_svd, flops_svd_lowrank, power_iteration, truncated_svd

SEEDS = Instance(Sequence, description="a sequence of seeds, e.g. (0, 1, 2)")


@constrain(Rule("seeds", lambda seeds: len(seeds) > 0, "seeds must name at least one seed, got none"),
           Rule("compressor", lambda compressor, seeds: not isinstance(compressor, PowerSGD)
                or compressor.groups == len(seeds), lambda compressor, seeds: "compressor PowerSGD must have one group "
                f"per seed: pass groups={len(seeds)}, got {compressor.groups}"),
           compressor=Instance(Compressor) | None, model=MODEL, clients=CLIENTS, rounds=Integer(min=1), lr=Real(gt=0),
           batch_size=Integer(min=1), seeds=SEEDS, eval_every=Integer(min=1))  # fmt: skip
def train_compressed(
    compressor: Compressor | None,
    model: FlatModel,
    clients: Clients,
    *,
    rounds: int,
    lr: float,
    batch_size: int,
    seeds: Sequence[int] = (1,),
    eval_every: int = 10,
) -> History:
    """Distributed SGD (one step per round, every client) with compressed updates, once per seed.

    Per round, for the server model x of each seed (Karimireddy et al. 2019, arXiv:1901.09847, Algorithm 2,
    with the compressor's own error feedback if it has one), a configuration of
    ``engine.Federated``:
        1. local: every client i computes u_i = -lr * g_i(x; its minibatch of ``batch_size``);
        2. transform: the updates are compressed, C(U) for U (n, d), and their bits counted;
        3. aggregate and server step: x <- x + sum_i w_i C(U)_i, w_i the clients' shares of the samples.
    The seeds run side by side as blocks of rows of one (len(seeds) * n, d) client matrix,
    which the compressor compresses in one call (row-wise compressors treat each row on its
    own; give PowerSGD ``groups=len(seeds)``, so that its means stay within a seed's block);
    the server model is then (len(seeds), d), one row per seed.
    Seed s draws the initial model and its minibatches from ``generator(s)``: the same draws
    in every run of that seed, whatever the compressor.

    Args:
        compressor: the compressor, or None for float32 (counted as ``Identity``).
        model, clients: the architecture and the n clients' data.
        rounds, lr, batch_size: distributed SGD's hyperparameters.
        seeds: one run per seed (at least one).
        eval_every: evaluate every this many rounds (and at the end).

    Returns:
        The ``History`` with metrics "accuracy" (after each evaluated round, the mean client test
        accuracy of every seed, a ``Spread``) and "megabits" (sent per client by then; exact:
        every round sends the same bits); ``model`` is (len(seeds), d).

    Raises:
        ValueError: for no seeds, rounds or eval_every < 1, lr not > 0, or a PowerSGD whose
            groups are not one per seed.
    """
    compressor = compressor or Identity()
    device, n = clients.x.device, clients.n
    gens = [generator(s) for s in seeds]
    x = torch.stack([model.init(g, device) for g in gens])  # (S, d)
    weights = clients.weights.to(device)  # (n,)

    def local(x: torch.Tensor, S: torch.Tensor) -> torch.Tensor:  # 1. (S n, d)
        batches = [clients.batches(batch_size, g) for g in gens]
        xb, yb = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])  # (S n, B, ...)
        return -lr * model.grad(x.repeat_interleave(n, 0), xb, yb)

    def aggregate(U: torch.Tensor, p: torch.Tensor) -> torch.Tensor:  # 3. (S, d)
        return torch.einsum("i,sid->sd", p, U.view(len(seeds), n, -1))

    server = Federated(x, local=local, select=everyone(n), weights=weights, transforms=[compressor],  # 2.
                       aggregate=aggregate)  # fmt: skip
    accuracy = {"accuracy": lambda f: Spread(float(evaluate(model, row, clients) @ weights) for row in f.x)}
    history = run(server, rounds, metrics=accuracy, eval_every=eval_every)
    per_round = compressor.bits_sent / rounds / (len(seeds) * n)
    history.metrics["megabits"] = [r * per_round / 1e6 for r in history.rounds]
    return history


def plot_accuracy_vs_bits(runs: Mapping[str, History], ax: plt.Axes | None = None, *, title: str = "") -> plt.Axes:
    """Test accuracy against megabits sent per client, one line per run (name -> ``train_compressed``'s
    History): the median over the seeds, and their range shaded (log x axis)."""
    ax = ax or plt.figure(figsize=(6, 3.5)).gca()
    for name, history in runs.items():
        (line,) = ax.plot(history.megabits, [a.median for a in history.accuracy], marker=".", label=name)
        ax.fill_between(history.megabits, [a.low for a in history.accuracy], [a.high for a in history.accuracy],
                        color=line.get_color(), alpha=0.2, linewidth=0)  # fmt: skip
    ax.set(xscale="log", xlabel="megabits sent per client", ylabel="mean client test accuracy",
           title=title or "accuracy against communication (median, range over seeds)")  # fmt: skip
    ax.legend()
    return ax


def plot_sweep(runs: Mapping, value, *, parameter: str, baseline: History) -> plt.Figure:
    """The widget view: the runs of ``runs[value]`` (name -> History, e.g. with and without
    error feedback) against the float32 ``baseline``, accuracy against megabits.

    Raises:
        ValueError: for a value that is not a key of ``runs``.
    """
    if value not in runs:
        raise ValueError(f"{parameter}={value!r} was not precomputed; pick one of {list(runs)}")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    plot_accuracy_vs_bits({"float32": baseline, **runs[value]}, ax, title=f"{parameter} = {value}")
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


@constrain(n=SIZE, m=SIZE, decay=Real(gt=0, le=1), gen=Generator())
def gradient_like(n: int, m: int, *, decay: float = 0.7, gen: torch.Generator) -> torch.Tensor:
    """A test matrix (n, m) with singular values decay**j: U diag(decay**j) V^T, U, V random orthogonal."""
    k = min(n, m)
    U = torch.linalg.qr(torch.randn(n, k, generator=gen)).Q
    V = torch.linalg.qr(torch.randn(m, k, generator=gen)).Q
    return (U * decay ** torch.arange(k, dtype=torch.float32)) @ V.T


@constrain(sizes=Integers(min=1), rank=SIZE, warm=SIZE, gen=Generator())
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
