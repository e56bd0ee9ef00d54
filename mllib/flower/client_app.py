"""The Flower ClientApp: one row of the client matrix, trained on the SuperNode that holds it.

A train message brings the server model x (and SCAFFOLD's server control variate c). The
node runs ``mllib.local_sgd`` on its own partition and replies with its update U = y - x,
its size and its partition id (and SCAFFOLD's c_i+ - c_i). What a node keeps between
rounds lives in ``context.state``: its minibatch generator, its attack generator and
SCAFFOLD's c_i.

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
from mllib import federated, privacy

from .records import to_record, to_tensor
from .task import Settings, attack_generator, attacker, batch_generator, client_share

app = ClientApp()


@contextmanager
def kept(state: RecordDict, key: str, fresh: torch.Generator) -> Iterator[torch.Generator]:
    """A generator that lives on in the node's state from round to round (``fresh`` at first)."""
    if key in state:
        fresh.set_state(to_tensor(state[key]).to(torch.uint8))
    yield fresh
    state[key] = to_record(fresh.get_state())


def update(settings: Settings, msg: Message, context: Context, reply: RecordDict) -> torch.Tensor:
    """Local SGD from the server model on this node's partition: the update U = y - x, (1, d).
    SCAFFOLD corrects every step by c - c_i, keeps c_i+ and replies c_i+ - c_i."""
    partition = int(context.node_config["partition-id"])
    model, mine = client_share(settings, partition)
    x, correction = to_tensor(msg.content["arrays"]), None
    if settings.algorithm == "scaffold":
        c = to_tensor(msg.content["control"])
        c_i = to_tensor(context.state["control"]) if "control" in context.state else torch.zeros_like(c)
        correction = (c - c_i)[None]
    with kept(context.state, "batch-generator", batch_generator(settings, partition)) as gen:
        Y = mllib.local_sgd(model, x[None], mine, steps=settings.local_steps, lr=settings.lr,
                            batch_size=settings.batch_size, gen=[gen], correction=correction)  # fmt: skip
    if settings.algorithm == "scaffold":
        c_new = federated.scaffold_control_update(c_i[None], c, x, Y, settings.local_steps, settings.lr)[0]
        context.state["control"] = to_record(c_new)
        reply["control"] = to_record(c_new - c_i)
    reply["metrics"] = MetricRecord({"num-examples": int(mine.sizes[0]), "partition-id": partition})
    return Y - x


@app.train()
def train(msg: Message, context: Context) -> Message:
    settings = Settings.from_config(context.run_config)
    reply = RecordDict()
    U = update(settings, msg, context, reply)
    if settings.algorithm == "dp-fedavg":
        U = privacy.clip_rows(U, settings.clip)  # client-level DP: the whole update has norm <= C
    if (attack := str(context.node_config.get("attack", "none"))) != "none":
        partition = int(context.node_config["partition-id"])
        with kept(context.state, "attack-generator", attack_generator(settings, partition)) as gen:
            U = attacker(attack, gen)(U)
    reply["arrays"] = to_record(U[0])
    return Message(reply, reply_to=msg)
