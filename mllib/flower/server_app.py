"""The Flower ServerApp: the round engine's ``Federated`` with the SuperNodes as its local part.

The server runs ``engine.run`` on the ``engine.Federated`` that ``task.simulate`` runs, built
from the same ``task.server_parts``:

1. select: ``engine.everyone(n)``, every SuperNode in every round;
2. local: ``SuperNodes``: a train message with the server model x (and SCAFFOLD's c) to every
   SuperNode, whose ClientApp runs the simulation's local part and transforms on its row; the
   replies stacked into the client matrix U (n, d) in partition order;
3. transforms: none left at the server (DP clipping and attacks ran on the nodes);
4. aggregate: ``task.aggregator``: the engine's ``weighted_mean`` (FedAvg, SCAFFOLD), a
   ``mllib.robust`` aggregator or ``privacy.dp_fedavg_aggregate``;
5. server step: x <- x + v (``engine.move(1.0)``).

So the loop over rounds is the engine's, not Flower's ``Strategy.start``: Flower's ``Grid``
carries the messages. After round 0 and after each round the server prints the test accuracy
(and DP-FedAvg's epsilon from the RDP accountant).
"""
import os
import time

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

import mllib
from mllib import engine, federated

from .records import to_record, to_tensor
from .task import Settings, epsilon, federation, initial_model, server_parts

app = ServerApp()


class SuperNodes:
    """The local part of ``engine.Federated`` run by Flower's SuperNodes: (x (d,), S (n,)) -> U (n, d).

    One call is one round: a train message to every SuperNode with x (and SCAFFOLD's server
    control variate c), then their updates, in partition order. SCAFFOLD's c lives here, as it
    lives on ``federated.Scaffold`` in the simulation: c <- c + sum_{i in S} p_i (c_i+ - c_i)
    (``federated.control_variate_step``; Karimireddy et al. 2020, arXiv:1910.06378, Algorithm 1, line 17).

    Args:
        grid: Flower's ``Grid``, which carries the messages.
        settings: the run (clients, rounds, timeout, algorithm).
        weights: (n,) the clients' weights p_i (``task.server_parts``), for SCAFFOLD's c.
        sizes: (n,) the clients' sizes, which each node's reply must state.

    State: ``rounds_done``; ``c`` (d,), SCAFFOLD's server control variate (zero at first).

    Raises (on a call):
        RuntimeError: if fewer than n SuperNodes connect, one fails, one does not reply within
            ``settings.timeout`` s, or the replies are not the partitions S with their sizes.
    """

    def __init__(self, grid: Grid, settings: Settings, weights: torch.Tensor, sizes: torch.Tensor):
        self.grid, self.settings, self.weights, self.sizes = grid, settings, weights, sizes
        # State
        self.rounds_done = 0
        self.c: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        settings, r = self.settings, self.rounds_done + 1
        print(f"[ROUND {r}/{settings.rounds}]", flush=True)
        content = RecordDict({"arrays": to_record(x), "config": ConfigRecord({"server-round": r})})
        if settings.algorithm == "scaffold":
            self.c = torch.zeros_like(x) if self.c is None else self.c
            content["control"] = to_record(self.c)
        messages = [Message(content, dst_node_id=node, message_type=MessageType.TRAIN) for node in self.nodes()]
        replies = list(self.grid.send_and_receive(messages, timeout=settings.timeout))
        if failed := [m.error.reason for m in replies if m.has_error()]:
            raise RuntimeError(f"round {r}: {len(failed)} SuperNode(s) failed: {failed}")
        if len(replies) < settings.clients:
            raise RuntimeError(f"round {r}: {len(replies)} of {settings.clients} SuperNodes replied "
                               f"within {settings.timeout} s; a SuperNode stopped or is too slow")  # fmt: skip
        replies.sort(key=lambda m: m.content["metrics"]["partition-id"])  # rows in partition order
        partitions = [int(m.content["metrics"]["partition-id"]) for m in replies]
        sizes = [int(m.content["metrics"]["num-examples"]) for m in replies]
        if partitions != S.tolist() or sizes != self.sizes[S].tolist():
            raise RuntimeError(f"round {r}: the SuperNodes replied for partitions {partitions} of sizes {sizes}, "
                               f"expected {S.tolist()} of sizes {self.sizes[S].tolist()}")  # fmt: skip
        U = torch.stack([to_tensor(m.content["arrays"]) for m in replies])  # (n, d)
        if settings.algorithm == "scaffold":
            delta_c = torch.stack([to_tensor(m.content["control"]) for m in replies])  # (n, d)
            self.c = federated.control_variate_step(self.c, delta_c, self.weights[S])
        self.rounds_done = r
        return U

    def nodes(self) -> list[int]:
        """All SuperNodes, once ``settings.clients`` of them have connected."""
        deadline = time.monotonic() + self.settings.timeout
        while len(nodes := sorted(self.grid.get_node_ids())) < self.settings.clients:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(nodes)} of {self.settings.clients} SuperNodes connected "
                                   f"within {self.settings.timeout} s")  # fmt: skip
            time.sleep(0.2)
        return nodes

    def state_dict(self) -> dict:
        return {"rounds_done": self.rounds_done, "c": self.c}


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = Settings.from_config(context.run_config)
    model, clients = federation(settings)  # the server uses the test set and the clients' sizes alone
    parts = server_parts(settings, clients)
    nodes = SuperNodes(grid, settings, parts["weights"], clients.sizes)
    x0 = initial_model(model, settings).to(clients.x.device)

    def accuracy(run: engine.Federated) -> float:
        value = mllib.accuracy_on(model, run.x, clients.x_test, clients.y_test)
        line = f"round {nodes.rounds_done}: test accuracy {value:.3f}"
        if settings.algorithm == "dp-fedavg" and nodes.rounds_done:
            line += f", epsilon {epsilon.__wrapped__(settings, nodes.rounds_done):.2f} at delta {settings.delta:g}"
        print(line, flush=True)
        return value

    history = engine.run(engine.Federated(x0, local=nodes, **parts), settings.rounds,
                         metrics={"accuracy": accuracy}, record_start=True)  # fmt: skip
    if settings.output:  # written whole, then renamed: a reader never sees half a file
        partial = f"{settings.output}.partial.npz"
        np.savez(partial, model=history.model.cpu().numpy(), accuracy=np.array(history.accuracy))
        os.replace(partial, settings.output)
