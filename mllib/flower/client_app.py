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
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

import mllib
from mllib import federated, privacy

from .task import BATCHES, Settings, attack_generator, attacker, client_share, derived_generator

app = ClientApp()


def to_tensor(record: ArrayRecord) -> torch.Tensor:
    return torch.from_numpy(record.to_numpy_ndarrays()[0])


def to_record(row: torch.Tensor) -> ArrayRecord:
    return ArrayRecord([row.detach().cpu().numpy()])


def restored(state: RecordDict, key: str, fresh: torch.Generator) -> torch.Generator:
    """The generator saved under ``key`` in the node's state, or ``fresh`` on the first round."""
    if key in state:
        fresh.set_state(to_tensor(state[key]).to(torch.uint8))
    return fresh


@app.train()
def train(msg: Message, context: Context) -> Message:
    settings = Settings.from_config(context.run_config)
    partition = int(context.node_config["partition-id"])
    attack = str(context.node_config.get("attack", "none"))
    model, mine = client_share(settings, partition)
    batch_gen = restored(context.state, "batch-generator", derived_generator(settings.seed, BATCHES, partition))
    x = to_tensor(msg.content["arrays"])
    reply = RecordDict()
    correction = None
    if settings.algorithm == "scaffold":
        c = to_tensor(msg.content["control"])
        c_i = to_tensor(context.state["control"]) if "control" in context.state else torch.zeros_like(c)
        correction = (c - c_i)[None]
    Y = mllib.local_sgd(model, x[None], mine, steps=settings.local_steps, lr=settings.lr,
                        batch_size=settings.batch_size, gen=[batch_gen], correction=correction)  # fmt: skip
    context.state["batch-generator"] = to_record(batch_gen.get_state())
    if settings.algorithm == "scaffold":
        c_new = federated.scaffold_control_update(c_i[None], c, x, Y, settings.local_steps, settings.lr)[0]
        reply["control"] = to_record(c_new - c_i)
        context.state["control"] = to_record(c_new)
    U = Y - x
    if settings.algorithm == "dp-fedavg":
        U = privacy.clip_rows(U, settings.clip)  # client-level DP: the whole update has norm <= C
    if attack != "none":
        gen = restored(context.state, "attack-generator", attack_generator(settings, partition))
        U = attacker(attack, gen)(U)
        context.state["attack-generator"] = to_record(gen.get_state())
    reply["arrays"] = to_record(U[0])
    reply["metrics"] = MetricRecord({"num-examples": int(mine.sizes[0]), "partition-id": partition})
    return Message(reply, reply_to=msg)
