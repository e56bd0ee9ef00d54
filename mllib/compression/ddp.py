"""mllib compressors as communication hooks of a real ``DistributedDataParallel`` model.

``compression_hook(make)`` compresses each gradient bucket with an mllib compressor;
``PowerSGDHook(rank)`` runs mllib's PowerSGD across processes, all-reducing only P and Q.
``run_ddp`` trains a small MLP on digits in ``world_size`` processes (gloo, loopback).
"""
import os
import pathlib
import tempfile
import time
import traceback
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..constraints import Function, Integer, Real, constrain
from ..data import load
from ..decentralized.distributed import free_port
from ..engine import Rounds, run
from ..runtime import generator
from .compressors import ErrorFeedback, MessageCompressor, ScaledSign
from .powersgd import PowerSGD, power_step


def _done(tensor: torch.Tensor) -> torch.futures.Future:
    fut = torch.futures.Future()
    fut.set_result(tensor)
    return fut


@constrain(make=Function())
def compression_hook(make: Callable[[], MessageCompressor]) -> Callable:
    """A DDP communication hook that sends each gradient bucket compressed by ``make()``.

    Each process encodes its bucket (one row of ``bucket.numel()`` entries; one compressor,
    error feedback included, per bucket), the processes all-gather the encoded payloads
    (packed sign bits, int8 levels, values and int32 indices: what ``encode`` returns), and
    every process decodes each one and averages them in rank order, so all replicas stay
    identical. RandomK's receivers draw the sender's indices from the seed they share.

    Args:
        make: builds a fresh compressor, e.g. ``lambda: ErrorFeedback(TopK(fraction=0.01))``.

    Returns:
        hook(state, bucket) for ``DistributedDataParallel.register_comm_hook(None, hook)``;
        its ``compressors`` dict maps (bucket index, size) to the compressor used, and its
        ``bytes_sent`` counts the bytes this process put on the wire.

    Raises:
        ValueError: (from the hook) if ``make()`` is not a ``MessageCompressor`` (PowerSGD
            has ``PowerSGDHook``).
    """
    compressors: dict[tuple[int, int], MessageCompressor] = {}

    def hook(process_group, bucket):
        flat = bucket.buffer()  # (numel,)
        key = (bucket.index(), flat.numel())
        if key not in compressors:
            compressors[key] = make()
            if not isinstance(compressors[key], MessageCompressor):
                raise ValueError(f"{compressors[key]!r} has no wire format; use PowerSGDHook for PowerSGD")
        compressor = compressors[key]
        payload = compressor.encode(flat[None])
        world = dist.get_world_size(process_group)
        gathered = [[torch.empty_like(part) for _ in range(world)] for part in payload]
        for part, received in zip(payload, gathered):
            dist.all_gather(received, part, group=process_group)
        hook.bytes_sent += sum(part.numel() * part.element_size() for part in payload)
        rows = [compressor.decode([received[r] for received in gathered], flat.numel()) for r in range(world)]
        return _done((torch.stack(rows).sum(0)[0] / world).to(flat.dtype))

    hook.compressors, hook.bytes_sent = compressors, 0
    return hook


class PowerSGDHook:
    """mllib's PowerSGD as a DDP communication hook: only P, Q and small tensors travel.

    Per bucket, the steps of ``PowerSGD`` (its ``power_step``) with the means over workers done
    by all-reduce: M = grad + e;  P = allreduce_mean(M Q);  P = orthogonalize(P);  Q_local = M^T P;
    e = M - P Q_local^T;  Q = allreduce_mean(Q_local);  grad <- P Q^T. Tensors of fewer
    than 2 dimensions (biases) are all-reduced uncompressed.

    Args:
        rank: r >= 1. seed: seed of the first Q, the same on every process.

    State:
        states: one ``PowerSGD`` per bucket (warm starts Q and the error memory).
    """

    @constrain(rank=Integer(min=1), seed=Integer(min=0))
    def __init__(self, rank: int, seed: int = 0):
        self.rank, self.seed = rank, seed
        self.states: dict[tuple[int, int], PowerSGD] = {}

    def hook(self, process_group, bucket):
        """The hook: ``ddp_model.register_comm_hook(None, PowerSGDHook(rank).hook)``."""
        world = dist.get_world_size(process_group)

        def mean(tensor: torch.Tensor) -> torch.Tensor:  # over the processes; the argument is left as it is
            summed = tensor.clone()
            dist.all_reduce(summed, group=process_group)
            return summed / world

        flat = bucket.buffer()  # (numel,)
        key = (bucket.index(), flat.numel())
        if key not in self.states:
            self.states[key] = PowerSGD([g.shape for g in bucket.gradients()], self.rank, seed=self.seed)
        ps = self.states[key]
        if ps.error is None:
            ps.error = torch.zeros_like(flat)
        M_all = flat + ps.error  # (numel,)
        out = torch.empty_like(flat)
        start = 0
        for j, (size, nm) in enumerate(zip(ps.sizes, ps.matrix)):
            chunk = M_all[start : start + size]
            if nm is None:
                out[start : start + size] = mean(chunk)
                ps.error[start : start + size] = 0
            else:
                M = chunk.view(*nm)  # (n, m)
                P, decoded, Q = power_step.__wrapped__(M, ps.Q[j][0].to(M), mean)  # (n, r), (n, m), (m, r)
                ps.error[start : start + size] = (M - decoded).flatten()
                ps.Q[j] = Q[None]  # (1, m, r): one group
                out[start : start + size] = (P @ Q.T).flatten()  # the mean of the processes' P Q_local^T
            start += size
        ps.bits_sent += ps.bits_per_row(flat.numel())
        return _done(out)


HOOKS = ("mllib", "torch", "sign+ef", "none")
# each process is a fresh Python that imports torch (seconds, hundreds of MB): a few, on one machine
MAX_PROCESSES = 16


class SGDSteps(Rounds):
    """One process's training in ``run_ddp``: minibatch SGD on a DDP module, one step per round.

    Round: draw a minibatch of ``batch_size`` training samples; loss.backward() (DDP averages
    the gradients across the processes through its communication hook); optimizer step.

    Args:
        model: the ``DistributedDataParallel`` module. optimizer: its optimizer.
        data: the dataset (``x_train``, ``y_train``). gen: this process's minibatch generator.

    State: ``loss``, the last minibatch's loss.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, data, gen: torch.Generator,
                 batch_size: int = 32):  # fmt: skip
        self.module, self.optimizer, self.data, self.gen, self.batch_size = model, optimizer, data, gen, batch_size
        # State
        self.loss = float("nan")

    def round(self, r: int) -> None:
        idx = torch.randint(len(self.data.y_train), (self.batch_size,), generator=self.gen)
        loss = torch.nn.functional.cross_entropy(self.module(self.data.x_train[idx]), self.data.y_train[idx])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.loss = float(loss.detach())


def _tails(paths: list[str], lines: int = 20) -> str:
    """The last lines each process wrote to its stderr file."""
    return "\n".join(f"[process {r}] " + "".join(pathlib.Path(path).read_text().splitlines(True)[-lines:])
                     for r, path in enumerate(paths) if os.path.exists(path))  # fmt: skip


def _train(rank: int, stderr: str, *args) -> None:
    """One process of ``run_ddp``; a failure travels to the parent as its traceback. Its stderr
    goes to the file ``stderr``, not to the kernel's: a notebook cell shows the kernel's, and
    a message that only some runs print (a C++ thread's "terminate called" as a process exits)
    would change the cell's output."""
    log = os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 2)
    os.close(log)
    queue = args[-1]
    # The processes train on the CPU over gloo. PyTorch's powerSGD_hook calls
    # torch.cuda.synchronize() whenever CUDA is present, which fails for CPU tensors
    # ("Expected a cuda device, but got: cpu", torch 2.11 on an H100): hide the GPU.
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        _train_hooks(rank, *args)
    except BaseException:
        queue.put((rank, "error", traceback.format_exc()))
        raise


def _train_hooks(
    rank: int, world: int, port: int, hooks: tuple, seeds: tuple, powersgd_rank: int, steps: int, lr: float,
    data, queue,
) -> None:  # fmt: skip
    import mllib  # imported here: mllib.compression must not import the whole package at load time
    from torch.nn.parallel import DistributedDataParallel as DDP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mllib.setup(seed=0)
        for hook in hooks:  # one process group, one model per hook and seed
            for seed in seeds:
                module = mllib.mlp(data.n_features, data.n_classes, hidden=(64,))
                mllib.FlatModel(module).load(module, mllib.FlatModel(module).init(mllib.generator(seed)))
                model = DDP(module)
                if hook == "mllib":
                    model.register_comm_hook(None, PowerSGDHook(powersgd_rank, seed=seed).hook)
                elif hook == "torch":
                    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as tps

                    state = tps.PowerSGDState(process_group=None, matrix_approximation_rank=powersgd_rank,
                                              start_powerSGD_iter=2, min_compression_rate=1.0,
                                              random_seed=seed)  # fmt: skip
                    model.register_comm_hook(state, tps.powerSGD_hook)
                elif hook == "sign+ef":
                    model.register_comm_hook(None, compression_hook(lambda: ErrorFeedback(ScaledSign())))
                batch_gen = mllib.generator(1 + rank + world * seed)  # each process its own minibatches
                sgd = SGDSteps(model, torch.optim.SGD(model.parameters(), lr=lr), data, batch_gen)
                losses = run(sgd, steps, metrics={"loss": lambda a: a.loss})["loss"]
                with torch.no_grad():
                    accuracy = float((module(data.x_test).argmax(1) == data.y_test).float().mean())
                queue.put((rank, (hook, seed), losses, accuracy, mllib.FlatModel(module).flatten(module).tolist()))
    finally:
        dist.destroy_process_group()


@constrain(world_size=Integer(min=1, max=MAX_PROCESSES), rank=Integer(min=1), steps=Integer(min=1), lr=Real(gt=0))
def run_ddp(
    *,
    hook: str | tuple[str, ...] = "mllib",
    seed: int | tuple[int, ...] = 0,
    world_size: int = 2,
    rank: int = 4,
    steps: int = 100,
    lr: float = 0.5,
) -> dict:
    """Train an MLP (64-64-10) on digits with DDP in ``world_size`` processes on loopback.

    Args:
        hook: "mllib" (``PowerSGDHook``), "torch" (PyTorch's ``powerSGD_hook``, starting
            after 2 plain all-reduce steps), "sign+ef" (``compression_hook`` with scaled
            sign and error feedback) or "none" (plain all-reduce); or a tuple of them, all
            trained in the same processes (starting processes costs seconds).
        seed: the initial model (``generator(seed)``), each process's minibatches
            (``generator(1 + process + world_size * seed)``) and PowerSGD's first Q; or a
            tuple of seeds, all trained in the same processes.
        world_size: processes, in [1, 16].
        rank: PowerSGD's rank. steps, lr: SGD on minibatches of 32 per process.

    Returns:
        {"losses": rank 0's minibatch losses, "accuracy": per process test accuracy,
         "rows": (world_size, d) final parameters of each process}; for a tuple of hooks,
        a dict from each hook to such a dict; for a tuple of seeds, each such dict is
        replaced by a dict from each seed to one.

    Raises:
        ValueError: for an unknown hook, no seed, world_size outside [1, 16], rank or steps < 1, or lr
            not > 0; RuntimeError if a process fails.
    """
    hooks = (hook,) if isinstance(hook, str) else tuple(hook)
    if not hooks or any(h not in HOOKS for h in hooks):
        raise ValueError(f"hook must be one of {HOOKS} or a tuple of them, got {hook!r}")
    seeds = (seed,) if isinstance(seed, int) else tuple(seed)
    if not seeds or any(not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seed must be an integer >= 0 or a tuple of them, got {seed!r}")
    data = load("digits", gen=generator(0))  # loaded once here: the processes need not import scikit-learn
    # spawn, not fork: a forked Jupyter kernel shares its ZeroMQ sockets and output streams
    # with the children (a run hung that way); spawn costs a fresh import of torch per child
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = free_port()
    args = (world_size, port, hooks, seeds, rank, steps, lr, data, queue)
    with tempfile.TemporaryDirectory() as logs:
        stderr = [os.path.join(logs, f"stderr-{r}") for r in range(world_size)]
        procs = [ctx.Process(target=_train, args=(r, stderr[r], *args)) for r in range(world_size)]
        for p in procs:
            p.start()
        results = []
        try:
            while len(results) < world_size * len(hooks) * len(seeds):
                if not queue.empty():
                    results.append(queue.get())
                    if results[-1][1] == "error":
                        raise RuntimeError(f"DDP process {results[-1][0]} failed:\n{results[-1][2]}")
                elif any(p.exitcode not in (None, 0) for p in procs):
                    raise RuntimeError(f"a DDP process failed (exit codes {[p.exitcode for p in procs]}); "
                                       f"its stderr ends:\n{_tails(stderr)}")  # fmt: skip
                else:
                    time.sleep(0.02)
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.terminate()
    by_run = {}
    for key in {r[1] for r in results}:
        mine = sorted((r for r in results if r[1] == key), key=lambda r: r[0])
        by_run[key] = {"losses": mine[0][2], "accuracy": [r[3] for r in mine],
                       "rows": torch.tensor([r[4] for r in mine])}  # fmt: skip
    by_hook = {h: by_run[h, seeds[0]] if isinstance(seed, int) else {s: by_run[h, s] for s in seeds} for h in hooks}
    return by_hook[hook] if isinstance(hook, str) else by_hook
