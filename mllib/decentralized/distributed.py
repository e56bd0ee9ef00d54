"""Gossip and D-PSGD across real processes with torch.distributed (gloo, loopback by default).

Each rank is one node: it holds one client's model x_r and data shard, and exchanges its
row with its graph neighbours only (point-to-point ``isend`` / ``irecv``), computing
x_r <- sum_j W_rj x_j - lr * g_r, the very update ``dpsgd`` applies to the whole client
matrix. Each rank runs the round engine (``engine.run``) on its own row (1, d) with the
parts of ``gossip`` (``Gradients``, ``DPSGD``, ``Gossip``), whose mixing is the rank's
``Exchange`` with its neighbours instead of ``W @ X``. Every rank builds the same data split,
initial model and minibatch draws from the shared seed, so a run equals the single-process
simulation (``simulate``) up to float rounding.

Start it on one machine with its own launcher (spawns N processes on 127.0.0.1, free port):

    python -m mllib.decentralized.distributed --nproc 4 --topology ring --steps 100

or with torchrun, on one machine or several (run the same command on every machine):

    torchrun --standalone --nproc_per_node 4 -m mllib.decentralized.distributed --topology ring
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 4 --rdzv_backend c10d \
        --rdzv_endpoint HOST:29500 -m mllib.decentralized.distributed --topology torus ...

A rank that dies or never joins makes the run fail with ``DistributedError`` within
``--timeout`` seconds (gloo's and the rendezvous' timeout) instead of hanging.
"""
import argparse
import datetime
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..constraints import Instance, Integer, OneOf, Real, constrain
from ..data import DATASETS, Dataset, load
from ..engine import Decentralized, run
from ..models import FlatModel, mlp
from ..partition import SCHEMES, split
from ..runtime import generator, setup
from .gossip import DPSGD, Gossip, GossipAveraging, Gradients, consensus_distance, dpsgd, gossip_alone
from .topology import TOPOLOGIES, WEIGHTS, mixing_matrix

ALGORITHMS = ("dpsgd", "gossip")


class DistributedError(RuntimeError):
    """A multi-process run that failed: a rank died, never joined, or timed out."""


@constrain(algorithm=OneOf(*ALGORITHMS), topology=OneOf(*TOPOLOGIES), weights=OneOf(*WEIGHTS), steps=Integer(min=1),
           lr=Real(ge=0), batch_size=Integer(min=1), seed=Integer(min=0), dataset=OneOf(*DATASETS),
           partition=OneOf(*SCHEMES), alpha=Real(gt=0), dim=Integer(min=1), eval_every=Integer(min=1),
           timeout=Real(gt=0), fail_rank=Integer(min=-1), fail_step=Integer(min=-1))  # fmt: skip
@dataclass(frozen=True)
class RunConfig:
    """What every rank must agree on (the same on every machine)."""

    algorithm: str = "dpsgd"
    topology: str = "ring"
    weights: str = "uniform"
    steps: int = 50
    lr: float = 0.1
    batch_size: int = 16
    seed: int = 0
    dataset: str = "digits"
    partition: str = "dirichlet"
    alpha: float = 0.1
    dim: int = 8  # row length for --algorithm gossip
    eval_every: int = 10
    timeout: float = 30.0  # seconds for joining and for every exchange
    fail_rank: int = -1  # fault injection for tests: this rank ...
    fail_step: int = -1  # ... exits at this step (-1: never joins instead)


def dataset(cfg: RunConfig) -> Dataset | None:
    """The run's dataset, shuffled by its own generator (seed ``cfg.seed``); None for gossip."""
    return None if cfg.algorithm == "gossip" else load(cfg.dataset, gen=generator(cfg.seed)).to("cpu")


def build(cfg: RunConfig, n: int, data: Dataset | None = None):
    """The shared set-up, drawn identically on every rank and in the simulation.

    Args:
        cfg: the run's configuration.
        n: number of nodes.
        data: ``dataset(cfg)`` if already loaded (the launcher loads it once for all ranks).

    Returns:
        (model, clients, mixing, gen, X0): ``mixing(t)`` gives W_t (n, n), ``X0`` (n, d)
        the initial client matrix; ``gen`` continues with the minibatch draws.
    """
    gen = setup(cfg.seed)
    if cfg.algorithm == "gossip":
        model = clients = None
        X0 = torch.randn(n, cfg.dim, generator=gen)  # (n, dim)
    else:
        data = dataset(cfg) if data is None else data
        clients = split(data, n, cfg.partition, alpha=cfg.alpha, gen=gen)
        model = FlatModel(mlp(data.n_features, data.n_classes))
        X0 = model.init(gen).expand(n, -1).clone()  # (n, d), the same start everywhere
    return model, clients, build_mixing(cfg, n), gen, X0


def build_mixing(cfg: RunConfig, n: int):
    """t -> W_t (n, n): the fixed mixing matrix of ``cfg.topology``, or for ``matching`` a new
    random matching every step from its own generator (seed ``cfg.seed + 1``)."""
    if cfg.topology == "matching":
        draws = generator(cfg.seed + 1)
        return lambda t: mixing_matrix("matching", n, gen=draws)
    W = mixing_matrix(cfg.topology, n, weights=cfg.weights, gen=generator(cfg.seed + 1))
    return lambda t: W


@constrain(cfg=Instance(RunConfig), n=Integer(min=1))
def simulate(cfg: RunConfig, n: int) -> torch.Tensor:
    """The single-process run on the client matrix that a distributed run must equal: (n, d)."""
    model, clients, mixing, gen, X0 = build(cfg, n)
    if cfg.algorithm == "gossip":
        return gossip_alone(X0, Gossip(mixing), cfg.steps).model
    history = dpsgd(
        model, clients, mixing, steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size, gen=gen,
        x0=X0[0], eval_every=cfg.steps,
    )
    return history.model


def exchange(x: torch.Tensor, w_row: torch.Tensor, w_col: torch.Tensor, rank: int, step: int) -> torch.Tensor:
    """Send x to the nodes that listen to this rank, receive from its in-neighbours, mix.

    Returns sum_j W_rj x_j, with the received rows placed in an (n, d) buffer and summed as
    ``w_row @ buffer`` so that the arithmetic is the simulation's ``(W @ X)[r]``.
    """
    n = len(w_row)
    buffer = torch.zeros(n, x.numel(), dtype=x.dtype)  # (n, d), rows of the in-neighbours
    buffer[rank] = x
    ops = [dist.isend(x, dst=j, tag=step) for j in range(n) if j != rank and w_col[j] > 0]
    ops += [dist.irecv(buffer[j], src=j, tag=step) for j in range(n) if j != rank and w_row[j] > 0]
    for op in ops:
        op.wait()
    return w_row @ buffer  # (d,)


class Exchange:
    """A rank's mixing, the ``mix`` of ``Gossip`` and ``DPSGD``: (X (1, d), W (n, n)) -> (W X)_rank,
    its row exchanged with its neighbours point to point (``exchange``).

    Args:
        rank: this process's node.

    State: ``step``, the tag of the next exchange (one per round).
    """

    def __init__(self, rank: int):
        self.rank = rank
        # State
        self.step = 0

    def __call__(self, X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        W = W.to(X.dtype)
        mixed = exchange(X[0], W[self.rank], W[:, self.rank], self.rank, self.step)  # (d,)
        self.step += 1
        return mixed[None]  # (1, d)


def _dies_at(mixing, step: int):
    """Fault injection: the mixing t -> W_t of a rank that exits without a word, as a crashed
    machine would, when it is about to exchange at ``step``."""

    def dying(t: int) -> torch.Tensor:
        if t == step:
            os._exit(3)
        return mixing(t)

    return dying


def node(cfg: RunConfig, rank: int, world: int, data: Dataset | None = None) -> Decentralized | GossipAveraging:
    """This rank's algorithm on its own row X0[rank] (1, d): the parts of the simulation, mixing
    by ``Exchange``. D-PSGD: local ``Gradients`` (every rank draws all n minibatches and keeps its
    own), combine ``DPSGD``; gossip: ``GossipAveraging`` of ``Gossip``."""
    model, clients, mixing, gen, X0 = build(cfg, world, data)
    if rank == cfg.fail_rank:
        mixing = _dies_at(mixing, cfg.fail_step)
    x = X0[rank : rank + 1].clone()  # (1, d) this node's row
    if cfg.algorithm == "gossip":
        return GossipAveraging(x, Gossip(mixing, mix=Exchange(rank)))
    gradients = Gradients(model, clients, batch_size=cfg.batch_size, gen=gen, rows=slice(rank, rank + 1))
    return Decentralized(x, local=gradients, combine=DPSGD(mixing, cfg.lr, mix=Exchange(rank)))


def worker(
    rank: int, world: int, cfg: RunConfig, out: str | None, data: Dataset | None = None, verbose: bool = True
) -> None:
    """One node: join, run the algorithm on row ``rank``, and (rank 0) save the gathered result and,
    if ``verbose``, print a one-line summary."""
    if rank == cfg.fail_rank and cfg.fail_step < 0:
        time.sleep(cfg.timeout + 30)  # never joins; the launcher ends it
        os._exit(3)
    timeout = datetime.timedelta(seconds=cfg.timeout)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timeout)
    except Exception as err:
        raise DistributedError(
            f"rank {rank}: not all {world} ranks joined within {cfg.timeout:g} s ({type(err).__name__}); "
            "check that every rank was started with the same --nproc / --nnodes and rendezvous address"
        ) from err
    try:
        history = run(node(cfg, rank, world, data), cfg.steps, eval_every=cfg.eval_every, record_start=True,
                      metrics={"consensus": lambda a: _consensus(a.X[0], world)})  # fmt: skip
        x, curve = history.model[0], history["consensus"]  # (d,) this node's row
        rows = [torch.empty_like(x) for _ in range(world)] if rank == 0 else None
        dist.gather(x, rows, dst=0)
    except DistributedError:
        raise
    except RuntimeError as err:
        raise DistributedError(f"rank {rank}: a neighbour stopped answering ({type(err).__name__}: {err})") from err
    finally:
        dist.destroy_process_group()
    if rank == 0:
        X = torch.stack(rows)  # (n, d)
        if verbose:
            print(f"{cfg.algorithm} on a {cfg.topology} of {world} ranks, {cfg.steps} steps: "
                  f"consensus distance {curve[0]:.4g} -> {curve[-1]:.4g}")
        if out:
            torch.save({"X": X, "consensus": curve, "config": asdict(cfg)}, out)


def _consensus(x: torch.Tensor, world: int) -> float:
    """``consensus_distance`` of every rank's row x_r (d,), gathered by one all-gather. (Not
    mean_i ||x_i||^2 - ||x_bar||^2 from an all-reduce: that difference cancels as the rows agree.)"""
    rows = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(rows, x)
    return consensus_distance(torch.stack(rows))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned(rank: int, world: int, port: int, cfg: RunConfig, out: str, data: Dataset | None, verbose: bool) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)  # this rank's env only
    worker(rank, world, cfg, out, data, verbose)


@constrain(cfg=Instance(RunConfig), nproc=Integer(min=2), out=Instance(str) | None,
           start_method=OneOf("fork", "spawn", "forkserver") | None)  # fmt: skip
def launch(
    cfg: RunConfig, nproc: int, out: str | None = None, *, start_method: str | None = None, verbose: bool = True
) -> dict:
    """Run ``nproc`` ranks on this machine (127.0.0.1, a free port) and wait for them.

    Args:
        cfg: the run's configuration.
        nproc: number of ranks (nodes), >= 2.
        out: where rank 0 saves its result (``torch.save``); None: a temporary file.
        start_method: ``"fork"`` (default on Linux: the ranks start in a fraction of a second,
            as PyTorch's DataLoader workers do; CPU only) or ``"spawn"`` (default elsewhere;
            every rank imports torch again, seconds each).
        verbose: whether rank 0 prints a one-line summary.

    Returns:
        Rank 0's result: ``{"X": (n, d) final rows gathered from all ranks, "consensus":
        [Xi^2 every eval_every steps and at the end], "config": the RunConfig as a dict}``.

    Raises:
        ValueError: for nproc < 2.
        DistributedError: when a rank raises, dies or never joins; within ``cfg.timeout``
            seconds of the failure (plus start-up).
    """
    build_mixing(cfg, nproc)  # a topology that does not fit nproc fails here, before any process starts
    if start_method is None:
        start_method = "fork" if sys.platform.startswith("linux") else "spawn"
    data = dataset(cfg)  # loaded once here, not in every rank
    if start_method == "fork":
        # mllib.setup's use_deterministic_algorithms imports torch._inductor (a second or
        # more per rank); import it once here so that the forked ranks inherit it.
        import torch._inductor  # noqa: F401
    with tempfile.TemporaryDirectory() as folder:
        path = out or os.path.join(folder, "result.pt")
        _run(_spawned, (nproc, free_port(), cfg, path, data, verbose), nproc, start_method)
        return torch.load(path)


@constrain(cfg=Instance(RunConfig), nproc=Integer(min=2), wall_timeout=Real(gt=0))
def launch_subprocess(cfg: RunConfig, nproc: int, *, wall_timeout: float = 300.0) -> dict:
    """``launch`` in a fresh Python process: ``python -m mllib.decentralized.distributed --nproc N ...``.

    The command a user types, run from Python; use it from a notebook, whose kernel should
    not fork (a kernel that forked ranks can hang when it shuts down).

    Args:
        cfg: the run's configuration.
        nproc: number of ranks, >= 2.
        wall_timeout: seconds before the whole command is stopped.

    Returns:
        Rank 0's result, as ``launch`` returns it.

    Raises:
        DistributedError: when the command fails; its message is the command's last error line.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "result.pt")
        options = [f"--{k.replace('_', '-')}={v}" for k, v in asdict(cfg).items()]
        command = [sys.executable, "-m", __name__, f"--nproc={nproc}", f"--out={path}", *options]
        try:
            # one torch thread per rank: the ranks are the parallelism (several threads per rank on
            # a 2-core machine made gloo's collectives stall past any timeout)
            env = {**os.environ, "MLLIB_THREADS": "1"}
            done = subprocess.run(command, capture_output=True, text=True, timeout=wall_timeout, env=env)
        except subprocess.TimeoutExpired:
            raise DistributedError(f"the distributed run did not finish within {wall_timeout:g} s") from None
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()] or ["(no output)"]
            raise DistributedError(f"the distributed run failed: {lines[-1]}")
        return torch.load(path)


def _run(function, args: tuple, nproc: int, start_method: str) -> None:
    """Start the ranks, wait for all, and turn a failure into a DistributedError."""
    context = mp.start_processes(function, args=args, nprocs=nproc, join=False, start_method=start_method)
    try:
        while not context.join():
            pass
    except mp.ProcessExitedException as err:
        code = err.exit_code
        raise DistributedError(f"rank {err.error_index} died (exit code {code}); the run was stopped") from None
    except mp.ProcessRaisedException as err:
        last = [line for line in str(err).strip().splitlines() if line.strip()][-1]
        raise DistributedError(f"rank {err.error_index} failed: {last}") from None


def parse(argv: list[str]) -> tuple[RunConfig, int, str | None]:
    """Command-line arguments -> (config, nproc, output path)."""
    defaults = RunConfig()
    parser = argparse.ArgumentParser(
        prog="python -m mllib.decentralized.distributed", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--nproc", type=int, default=4, help="ranks to spawn (ignored under torchrun)")
    parser.add_argument("--out", default=None, help="rank 0 saves {'X', 'consensus', 'config'} here (torch.save)")
    for name, value in asdict(defaults).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    nproc, out = args.pop("nproc"), args.pop("out")
    return RunConfig(**args), nproc, out


@constrain(argv=Instance(list, tuple, description="a list of command-line arguments") | None)
def main(argv: list[str] | None = None) -> None:
    """Entry point: a rank of torchrun (RANK set) or the launcher of ``--nproc`` ranks."""
    cfg, nproc, out = parse(sys.argv[1:] if argv is None else argv)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        worker(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), cfg, out)
    else:
        try:
            launch(cfg, nproc, out)
        except DistributedError as err:
            sys.exit(f"DistributedError: {err}")


if __name__ == "__main__":
    main()
