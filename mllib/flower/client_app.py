"""The Flower ClientApp: one row of the client matrix, trained on the SuperNode that holds it.

A train message brings the server model x (and SCAFFOLD's server control variate c). The
node runs the round engine's local part on its own partition, as ``task.simulate`` runs it on
every row: ``mllib.LocalSGD`` (SCAFFOLD: ``federated.Scaffold``'s update), then the same
``task.message_transforms`` (DP-FedAvg's clipping, a Byzantine node's attack), and replies with
its update U = y - x, its size and its partition id (and SCAFFOLD's c_i+ - c_i). What a node
keeps between rounds lives in ``context.state``: its minibatch generator, its attack generator
and SCAFFOLD's c_i.

Node config (``flower-supernode --node-config``): ``partition-id`` (required) and
``attack`` (default "none"): a Byzantine node sends lecture 05's "sign flip", "noise",
"NaN" or "huge" instead of its update.
"""
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

import mllib
from mllib import federated

from .records import to_record, to_tensor
from .task import Settings, attack_generator, batch_generator, client_share, message_transforms

ONLY = torch.tensor([0])  # the node's one client: row 0 of its federation of one
app = ClientApp()


@contextmanager
def kept(state: RecordDict, key: str, fresh: torch.Generator) -> Iterator[torch.Generator]:
    """A generator that lives on in the node's state from round to round (``fresh`` at first)."""
    if key in state:
        fresh.set_state(to_tensor(state[key]).to(torch.uint8))
    yield fresh
    state[key] = to_record(fresh.get_state())


def update(settings: Settings, msg: Message, context: Context, reply: RecordDict) -> torch.Tensor:
    """The local part of ``engine.Federated`` on this node's row: its update U = y - x, (1, d).

    FedAvg, DP-FedAvg, robust aggregation: ``mllib.LocalSGD`` on the node's partition. SCAFFOLD:
    ``federated.Scaffold``'s update with the server's c and this node's c_i (from
    ``context.state``); the node keeps c_i+ and replies c_i+ - c_i (the server's c moves on the
    server: ``server_app.SuperNodes``)."""
    partition = int(context.node_config["partition-id"])
    model, mine = client_share(settings, partition)
    x = to_tensor(msg.content["arrays"])
    with kept(context.state, "batch-generator", batch_generator(settings, partition)) as gen:
        if settings.algorithm != "scaffold":
            U = mllib.LocalSGD(model, mine, steps=settings.local_steps, lr=settings.lr,
                               batch_size=settings.batch_size, gen=[gen])(x, ONLY)  # fmt: skip
        else:
            c = to_tensor(msg.content["control"])
            c_i = to_tensor(context.state["control"]) if "control" in context.state else torch.zeros_like(c)
            scaffold = federated.Scaffold(local_steps=settings.local_steps, lr=settings.lr)
            scaffold.c, scaffold.c_clients = c, c_i[None]  # its state: the server's c, this node's c_i
            U = scaffold.update(federated.DataProblem(model, mine, settings.batch_size), x, ONLY, [gen])
            c_new = scaffold.c_clients[0]  # (its own c, moved by this node alone, is dropped)
            context.state["control"] = to_record(c_new)
            reply["control"] = to_record(c_new - c_i)
    reply["metrics"] = MetricRecord({"num-examples": int(mine.sizes[0]), "partition-id": partition})
    return U


@app.train()
def train(msg: Message, context: Context) -> Message:
    settings = Settings.from_config(context.run_config)
    reply = RecordDict()
    U = update(settings, msg, context, reply)  # (1, d)
    partition, attack = int(context.node_config["partition-id"]), str(context.node_config.get("attack", "none"))
    with kept(context.state, "attack-generator", attack_generator(settings, partition)) as gen:
        for transform in message_transforms(settings, attack, gen):  # part 3, as in the simulation
            U = transform(U)
    reply["arrays"] = to_record(U[0])
    return Message(reply, reply_to=msg)
