"""FedAvg on Flower's simulation engine beside the same FedAvg on the library's round engine.

The workload (issue #25): the digits MLP 64-64-10, 100 iid clients, every client in every
round, 10 rounds of 10 local SGD steps, batch 32, lr 0.1. Flower's side is what its PyTorch
tutorials write: a ``ClientApp`` that loads the server's weights into a ``torch.nn.Module``
and trains it with ``torch.optim.SGD`` on its partition, Flower's own ``FedAvg`` strategy in
the ``ServerApp``, ``flwr.simulation.run_simulation`` with the Ray backend sized for this
machine (one actor per core). The library's side: ``mllib.run_rounds``, all clients as rows of
one client matrix. Both print the time of each round; the first round of Flower pays for
starting its actors, so the comparison is per steady round (the median of rounds 2..R), and
both final accuracies are printed (equal within noise: the same algorithm).

Needs ``flwr[simulation]`` (``pip install -e .[bench]``; `make bench` installs it); without
it the benchmark says so and skips (``make bench-quick`` runs the library's side alone). Run: ``python -m benchmarks.flower_simulation``.
"""
import functools
import os
import pathlib
import statistics
import sys
import tempfile
import time
import warnings

import torch

import mllib
from benchmarks import QUICK, record, size

ROOT = str(pathlib.Path(__file__).resolve().parent.parent)
CLIENTS, ROUNDS, STEPS, BATCH, LR, HIDDEN = size(100, 4), size(10, 2), 10, 32, 0.1, (64,)


@functools.cache
def federation():
    """The digits, split iid over the clients (each Ray actor builds the same split)."""
    data = mllib.load("digits", gen=mllib.generator(0))
    return data, mllib.split(data, CLIENTS, "iid", gen=mllib.generator(0))


def ours() -> tuple[list[float], float]:
    """Seconds of each round and the final test accuracy, on the library's engine."""
    data, clients = federation()
    model = mllib.FlatModel(mllib.mlp(data.n_features, data.n_classes, HIDDEN))
    start = time.perf_counter()
    history = mllib.run_rounds(model, clients, rounds=ROUNDS, local_steps=STEPS, lr=LR, batch_size=BATCH,
                               gen=mllib.generator(1), eval_every=ROUNDS)  # fmt: skip
    total = time.perf_counter() - start
    return [total / ROUNDS] * ROUNDS, mllib.accuracy_on(model, history.model, data.x_test, data.y_test)


def flower() -> tuple[list[float], float]:
    """Seconds of each round and the final test accuracy, on Flower's simulation engine."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    client_app, server_app = ClientApp(), ServerApp()

    @client_app.train()
    def train(msg, context):
        if ROOT not in sys.path:  # a Ray actor imports benchmarks from the repository
            sys.path.insert(0, ROOT)
        from benchmarks.flower_simulation import federation  # by name: each Ray actor keeps its cached split

        partition = int(context.node_config["partition-id"])
        data, clients = federation()
        x, y = clients.client_data(partition)
        module = mllib.mlp(data.n_features, data.n_classes, HIDDEN)
        module.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        optimizer = torch.optim.SGD(module.parameters(), lr=LR)
        gen = torch.Generator().manual_seed(1000 * partition + int(msg.content["config"]["server-round"]))
        for _ in range(STEPS):
            batch = torch.randint(len(y), (BATCH,), generator=gen)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(module(x[batch]), y[batch]).backward()
            optimizer.step()
        content = {"arrays": ArrayRecord(module.state_dict()), "metrics": MetricRecord({"num-examples": len(y)})}
        return Message(RecordDict(content), reply_to=msg)

    log = os.path.join(tempfile.mkdtemp(), "rounds.pt")  # the ServerApp's record of the run

    @server_app.main()
    def main(grid, context):
        data, _ = federation()
        module = mllib.mlp(data.n_features, data.n_classes, HIDDEN)
        stamps, accuracy = [], []

        def evaluate(server_round, arrays):
            stamps.append(time.perf_counter())
            module.load_state_dict(arrays.to_torch_state_dict())
            accuracy.append(float((module(data.x_test).argmax(1) == data.y_test).float().mean()))
            return MetricRecord({"accuracy": accuracy[-1]})

        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=CLIENTS,
                          min_available_nodes=CLIENTS)  # fmt: skip
        strategy.start(grid=grid, initial_arrays=ArrayRecord(module.state_dict()), num_rounds=ROUNDS,
                       evaluate_fn=evaluate)  # fmt: skip
        torch.save({"stamps": stamps, "accuracy": accuracy}, log)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=CLIENTS,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": cores, "include_dashboard": False}})  # fmt: skip
    recorded = torch.load(log)
    stamps = recorded["stamps"]  # round 0 (the initial model) and after each round
    return [b - a for a, b in zip(stamps, stamps[1:])], recorded["accuracy"][-1]


def main() -> None:
    try:
        import flwr.simulation  # noqa: F401
        import ray  # noqa: F401
    except ImportError:
        print("Flower's simulation engine is not installed (pip install -e .[bench]): skipped")
        return
    if QUICK:  # Ray's start-up alone takes longer than the quick check's budget
        print(f"quick: the library's side alone, {ours()[0][0]:.3f} s per round (make bench runs Flower's)")
        return
    warnings.filterwarnings("ignore")
    mllib.setup(seed=0)
    (our_rounds, our_accuracy), (their_rounds, their_accuracy) = ours(), flower()
    steady = statistics.median(their_rounds[1:]) if len(their_rounds) > 1 else their_rounds[0]
    print(f"FedAvg, digits MLP 64-64-10, {CLIENTS} iid clients, {ROUNDS} rounds of {STEPS} local steps, "
          f"batch {BATCH}, lr {LR}")  # fmt: skip
    print(f"Flower simulation (Ray): first round {their_rounds[0]:.2f} s, steady round {steady:.3f} s, "
          f"final accuracy {their_accuracy:.3f}")  # fmt: skip
    print(f"mllib engine:            round {our_rounds[0]:.4f} s, final accuracy {our_accuracy:.3f}")
    print(f"per steady round: Flower / mllib {steady / our_rounds[0]:.1f}x; "
          f"whole run: {sum(their_rounds) / sum(our_rounds):.1f}x")  # fmt: skip
    assert abs(our_accuracy - their_accuracy) < 0.1, "the two runs should train alike: the same algorithm"
    record("FedAvg steady round vs Flower's simulation engine", ours_s=our_rounds[0], reference_s=steady,
           reference="flwr.simulation.run_simulation (Ray) with Flower's FedAvg, one round after the first",
           flower_first_round_s=their_rounds[0], our_accuracy=our_accuracy, flower_accuracy=their_accuracy)  # fmt: skip


if __name__ == "__main__":
    main()
