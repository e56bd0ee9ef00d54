"""The Flower ServerApp: mllib's server side as a Flower strategy.

Each round the strategy sends every SuperNode a train message with the server model x
(and SCAFFOLD's c), waits for all of them, stacks their updates into the client matrix
U (n, d) in partition order, and takes mllib's server step: ``weighted_average`` (FedAvg),
a ``mllib.robust`` aggregator, ``privacy.dp_fedavg_aggregate`` (DP-FedAvg), or SCAFFOLD's
``federated.server_step`` and ``control_variate_step``. After each round it prints the
test accuracy (and DP-FedAvg's epsilon from the RDP accountant).
"""
import os
import time
from collections.abc import Iterable

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Strategy

import mllib
from mllib import federated

from .records import to_record, to_tensor
from .task import Settings, epsilon, federation, initial_model, server_rule

app = ServerApp()


class CourseStrategy(Strategy):
    """Full participation, every update aggregated with mllib's functions (see the module)."""

    def __init__(self, settings: Settings, dim: int):
        self.settings = settings
        self.rule = server_rule(settings)
        self.x: torch.Tensor | None = None
        self.c = torch.zeros(dim)  # SCAFFOLD's server control variate

    def summary(self) -> None:
        print(f"mllib strategy: {self.settings}", flush=True)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.x = to_tensor(arrays)
        content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": server_round})})
        if self.settings.algorithm == "scaffold":
            content["control"] = to_record(self.c)
        return [Message(content, dst_node_id=node, message_type=MessageType.TRAIN) for node in self.nodes(grid)]

    def nodes(self, grid: Grid) -> list[int]:
        """All SuperNodes, once ``settings.clients`` of them have connected."""
        deadline = time.monotonic() + self.settings.timeout
        while len(nodes := sorted(grid.get_node_ids())) < self.settings.clients:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(nodes)} of {self.settings.clients} SuperNodes connected "
                                   f"within {self.settings.timeout} s")  # fmt: skip
            time.sleep(0.2)
        return nodes

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord, MetricRecord]:
        replies = list(replies)
        if failed := [m.error.reason for m in replies if m.has_error()]:
            raise RuntimeError(f"round {server_round}: {len(failed)} SuperNode(s) failed: {failed}")
        if len(replies) < self.settings.clients:
            raise RuntimeError(f"round {server_round}: {len(replies)} of {self.settings.clients} SuperNodes replied "
                               f"within {self.settings.timeout} s; a SuperNode stopped or is too slow")  # fmt: skip
        replies.sort(key=lambda m: m.content["metrics"]["partition-id"])  # rows in partition order
        U = torch.stack([to_tensor(m.content["arrays"]) for m in replies])  # (n, d)
        sizes = torch.tensor([float(m.content["metrics"]["num-examples"]) for m in replies])
        if self.settings.algorithm == "scaffold":
            p = sizes / sizes.sum()
            x = federated.server_step(self.x, self.x + U, p)
            delta_c = torch.stack([to_tensor(m.content["control"]) for m in replies])  # (n, d)
            self.c = federated.control_variate_step(self.c, delta_c, p)
        else:
            x = self.x + self.rule(U, sizes)
        return to_record(x), MetricRecord({"clients": len(replies)})

    def configure_evaluate(self, server_round, arrays, config, grid) -> Iterable[Message]:
        return []  # the server evaluates on the test set itself

    def aggregate_evaluate(self, server_round, replies) -> MetricRecord | None:
        return None


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = Settings.from_config(context.run_config)
    model, clients = federation(settings)  # the server uses the test set alone
    accuracy = []

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        accuracy.append(mllib.test_accuracy(model, to_tensor(arrays), clients.x_test, clients.y_test))
        line = f"round {server_round}: test accuracy {accuracy[-1]:.3f}"
        if settings.algorithm == "dp-fedavg" and server_round:
            line += f", epsilon {epsilon(settings, server_round):.2f} at delta {settings.delta:g}"
        print(line, flush=True)
        return MetricRecord({"accuracy": accuracy[-1]})

    strategy = CourseStrategy(settings, model.dim)
    result = strategy.start(grid, to_record(initial_model(model, settings)), num_rounds=settings.rounds,
                            timeout=settings.timeout, evaluate_fn=evaluate)  # fmt: skip
    if settings.output:  # written whole, then renamed: a reader never sees half a file
        partial = f"{settings.output}.partial.npz"
        np.savez(partial, model=to_tensor(result.arrays).numpy(), accuracy=np.array(accuracy))
        os.replace(partial, settings.output)
