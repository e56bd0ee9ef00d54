"""Flower's own secure aggregation, SecAgg+ (Bell et al. 2020), on the course's deployment.

SecAgg+ is Bonawitz et al. (2017) on a sparse graph: each client shares keys and masks with
``num_shares - 1`` neighbours (a ring of random order) instead of all n - 1 others. Flower 1.42
ships it for its legacy workflow API only, so it runs as its own app (``secaggplus_app``) beside
the course's Message-API app, on the same SuperLink and SuperNodes:

- server (``server``): a ``ServerApp`` whose main builds a ``LegacyContext`` with FedAvg and runs
  ``DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))``; the stages are Flower's own (the
  subclass below only records them: halted rounds, seconds and messages per round);
- client (``secaggplus_app/secaggplus_client.py``): ``ClientApp(client_fn=..., mods=[secaggplus_mod])``:
  the mod runs the protocol's four stages, and in the third calls ``Trainer.fit``: the round
  engine's local part, ``mllib.LocalSGD``, on the node's partition with the generator the
  simulation gives that row.

Flower's legacy workflow runs the rounds (``DefaultWorkflow``) and aggregates inside the secure
protocol, so this app's loop over rounds and its server step are Flower's, not the round
engine's (``mllib.engine``); the course's own app (``server_app``) runs the engine's loop.

Each client uploads its weighted model w_i y_i and weight w_i, quantized: y is clipped to
[-c, c] (``clipping_range``) and rounded stochastically to ``quantization_range`` levels; the
weight to w_i / max_weight (max_weight: the largest client). So the average differs from the
plain FedAvg average by at most n (2c + max|y|) / sum_i q_i (q_i the quantized weights): the
quantization step (``quantization_tolerance``). Flower clips silently; the client here raises
instead when its model leaves [-c, c].

Found on this deployment (flwr 1.42; tests/test_flower.py): a SuperNode stopped once its shares are
out (while it trains, in the stage that collects masked vectors) is tolerated: the survivors' shares
rebuild its pairwise masks and the round sums the others. A node that is sampled but sends no
shares (stopped during the first two stages, or stopped between rounds while the SuperLink still
lists it) halts the round: Flower counts every sampled node that sent no masked vector as dropped,
asks the survivors for shares of its key they never received, every survivor fails with
``KeyError``, and the workflow logs "Secure aggregation halted" and goes on to the next round
with the model unchanged. Here a halted round is printed, saved and raised (``SecAggHalted``).
Flower's client mod also answers an unmask request that names a node both active and dead (it
sends both of that node's shares), and its masks come from 32-bit seeds (the 32-byte seed
XOR-folded, expanded by NumPy's Mersenne Twister).

Run: ``run(deployment, SecAggPlusSettings(...))`` on a ``mllib.flower.deploy.Deployment``.
"""
import json
import os
import pathlib
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from flwr.app import Context
from flwr.client import NumPyClient
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid, ServerApp

import mllib
from mllib.constraints import Integer, Real, Rule, constrain
from mllib.personalized import restrict

from .client_app import ONLY, kept
from .task import FlowerSettings, Settings, batch_generator, client_share, federation, initial_model

APP = pathlib.Path(__file__).parent / "secaggplus_app"
STAGES = ("setup", "share keys", "collect masked vectors", "unmask")
# The settings of the course's FedAvg run these wrap, declared (and checked) once, in ``Settings``.
TRAINING = ("rounds", "clients", "local_steps", "lr", "batch_size", "seed", "partition", "alpha", "timeout")


@constrain(Rule("num_shares",
                lambda num_shares, clients: num_shares <= clients and (num_shares % 2 == 1 or num_shares == clients),
                "num_shares must be odd (or = clients) in (2, clients={clients}], got {num_shares}: "
                "Flower halts at setup otherwise"),
           Rule("threshold", lambda threshold, num_shares: threshold < num_shares,
                "threshold must be in [2, num_shares={num_shares}), got {threshold}"),
           Rule("quantization_range", lambda quantization_range, clients: quantization_range < 2**32 // clients,
                "quantization_range must be in [1, 2^32 / clients), got {quantization_range} for clients={clients}: "
                "the sum of the quantized models must not wrap modulo 2^32"),
           **{name: Settings.__init__.__constraints__[name] for name in (*TRAINING, "output")},
           num_shares=Integer(min=3), threshold=Integer(min=2), clipping_range=Real(gt=0),
           quantization_range=Integer(min=1), stage_timeout=Real(ge=0))  # fmt: skip
@dataclass(frozen=True)
class SecAggPlusSettings(FlowerSettings):
    """A FedAvg run on the digits under Flower's SecAgg+ (the course's client, Flower's protocol).

    Attributes:
        rounds, clients, local_steps, lr, batch_size, seed, partition, alpha: as ``task.Settings``.
        num_shares: neighbours of each client, itself included (odd, or = clients), > 2.
        threshold: shares that reconstruct a secret, in [2, num_shares).
        clipping_range, quantization_range: the model is clipped to [-c, c] and quantized to
            ``quantization_range`` levels (Flower's defaults 8 and 2^22); masks mod 2^32.
        stage_timeout: seconds the server waits for replies at each stage (0: for all of them).
        timeout: seconds the server waits for all SuperNodes to connect.
        output: where the server saves what it recorded (.npz), or "".
    """

    rounds: int = 2  # fewer, smaller rounds than ``Settings``': SecAgg+ costs more per round
    clients: int = 3
    num_shares: int = 3
    threshold: int = 2
    clipping_range: float = 8.0
    quantization_range: int = 2**22
    stage_timeout: float = 0.0
    timeout: float = 60.0
    output: str = ""

    def training(self) -> Settings:
        """The course's FedAvg settings these wrap (the same clients, splits and generators)."""
        return Settings(**{name: getattr(self, name) for name in TRAINING})


def quantization_tolerance(settings: SecAggPlusSettings, sizes, largest: float) -> float:
    """The most |SecAgg+ average - plain weighted average| can be: n (2c + max|y|) / sum_i q_i,
    with q_i = round(w_i / max_weight * Q). Stochastic rounding of each weighted model is off by
    less than one step 2c/Q; rounding the weights moves the average by at most max|y| n / (Q sum dq)."""
    sizes = [float(w) for w in sizes]
    q = sum(round(w / max(sizes) * settings.quantization_range) for w in sizes)
    return len(sizes) * (2 * settings.clipping_range + largest) / q


def plain_average(settings: SecAggPlusSettings, partitions) -> torch.Tensor:
    """One round of the course's FedAvg in this process over ``partitions`` only: the weighted
    average of their models after local SGD from the initial model, (d,) float64. What SecAgg+'s
    first round must give, up to ``quantization_tolerance``."""
    training = settings.training()
    model, clients = federation(training)
    mine, x0 = restrict(clients, list(partitions)), initial_model(model, training)
    gens = [batch_generator(training, i) for i in partitions]
    Y = x0 + local_part(training, model, mine, gens)(x0, torch.arange(len(gens)))  # (k, d) models y_i = x + U_i
    return mllib.weighted_average(Y.double(), mine.sizes.double())


def quantization_gap(settings: SecAggPlusSettings, result: dict, round_: int, partitions) -> tuple[float, float]:
    """max |SecAgg+'s model after ``round_`` - ``plain_average``|, and what it may be: the quantization
    tolerance plus float32 rounding of the models (64 x 2^-23 of the largest weight)."""
    secure, plain = torch.from_numpy(result["models"][round_]), plain_average(settings, partitions)
    largest = float(plain.abs().max())
    tolerance = quantization_tolerance(settings, [result["sizes"][i] for i in partitions], largest)
    return float((secure - plain).abs().max()), tolerance + 64 * torch.finfo(torch.float32).eps * largest


# --- client -----------------------------------------------------------------------------------------
def local_part(training: Settings, model: mllib.FlatModel, clients: mllib.Clients,
               gens: list[torch.Generator]) -> mllib.LocalSGD:  # fmt: skip
    """The round engine's local part (FedAvg's ``mllib.LocalSGD``) on ``clients``, one generator each."""
    return mllib.LocalSGD(model, clients, steps=training.local_steps, lr=training.lr, batch_size=training.batch_size,
                          gen=gens)  # fmt: skip


class Trainer(NumPyClient):
    """The course's local update of one row, as a legacy client: fit returns the new model y (d,)
    and the partition's size as its FedAvg weight. Node config: ``partition-id``, and ``fit-delay``
    (seconds a slow node waits before training; default 0)."""

    def __init__(self, node: Context):
        self.node = node

    def fit(self, parameters, config):
        settings = SecAggPlusSettings.from_config(self.node.run_config)
        training, partition = settings.training(), int(self.node.node_config["partition-id"])
        time.sleep(float(self.node.node_config.get("fit-delay", 0)))
        model, mine = client_share(training, partition)
        x = torch.from_numpy(parameters[0]).float()  # (d,); the server's average comes back in float64
        with kept(self.node.state, "batch-generator", batch_generator(training, partition)) as gen:
            y = x + local_part(training, model, mine, [gen])(x, ONLY)[0]  # the model y = x + U, (d,)
        if (largest := float(y.abs().max())) > settings.clipping_range:
            raise ValueError(f"partition {partition}: a weight of the model is {largest:.3g}, beyond "
                             f"clipping-range={settings.clipping_range:g}; SecAgg+ would clip it silently: "
                             f"raise clipping-range")  # fmt: skip
        return [y.numpy()], int(mine.sizes[0]), {"partition-id": partition}



# --- server -----------------------------------------------------------------------------------------
class Record:
    """What the server saw of each round: seconds, messages, ciphertexts, results, failures, halts, models."""

    def __init__(self):
        self.messages = 0  # sent by the server + replies received, so far
        self.ciphertexts = 0  # sealed shares the nodes uploaded, so far
        self.rounds: dict[int, dict] = {}
        self.models: dict[int, np.ndarray] = {}
        self.accuracy: list[float] = []


class CountingGrid:
    """A Grid that counts the messages it sends and the replies it receives."""

    def __init__(self, grid: Grid, record: Record):
        self._grid, self._record = grid, record

    def __getattr__(self, name):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self._record.messages += len(messages) + sum(not reply.has_error() for reply in replies)
        for reply in replies:  # the sealed shares, one per (node, neighbour) pair
            if not reply.has_error() and RECORD_KEY_CONFIGS in reply.content.config_records:
                configs = reply.content.config_records[RECORD_KEY_CONFIGS]
                self._record.ciphertexts += len(configs.get(Key.CIPHERTEXT_LIST, []))
        return replies


class RecordedSecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, its four stages run as Flower runs them, each one announced and
    timed, and a halted round recorded with the stage and the failures Flower collected."""

    def __init__(self, record: Record, **kwargs):
        super().__init__(**kwargs)
        self.record = record

    def __call__(self, grid, context) -> None:
        current = int(context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND])
        entry = self.record.rounds.setdefault(current, {})
        state, start = WorkflowState(), time.monotonic()
        messages, ciphertexts = self.record.messages, self.record.ciphertexts
        steps = (self.setup_stage, self.share_keys_stage, self.collect_masked_vectors_stage, self.unmask_stage)
        entry["stage_seconds"] = []
        for name, step in zip(STAGES, steps, strict=True):
            print(f"round {current}: SecAgg+ stage {name}", flush=True)
            begun = time.monotonic()
            done = step(grid, context, state)
            entry["stage_seconds"].append(time.monotonic() - begun)
            if not done:
                entry["halted"] = {"stage": name, "failures": sorted({_reason(f) for f in state.failures})}
                print(f"round {current}: secure aggregation halted at stage {name!r}; failures: "
                      f"{entry['halted']['failures']}", flush=True)  # fmt: skip
                break
        entry.update(seconds=time.monotonic() - start, messages=self.record.messages - messages,
                     ciphertexts=self.record.ciphertexts - ciphertexts,
                     sampled=len(state.sampled_node_ids))  # fmt: skip


def _reason(failure: Exception) -> str:
    error = failure.args[0] if failure.args else failure
    return str(getattr(error, "reason", error))


class RecordedFedAvg(FedAvg):
    """FedAvg that keeps each round's aggregate, results and failures."""

    def __init__(self, record: Record, **kwargs):
        super().__init__(**kwargs)
        self.record = record

    def aggregate_fit(self, server_round, results, failures):
        parameters, metrics = super().aggregate_fit(server_round, results, failures)
        entry = self.record.rounds.setdefault(server_round, {})
        entry.update(results=len(results), failures=len(failures),
                     partitions=sorted(int(r.metrics["partition-id"]) for _, r in results))  # fmt: skip
        if parameters is not None:
            self.record.models[server_round] = parameters_to_ndarrays(parameters)[0].astype(np.float64)
        return parameters, metrics


server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    settings = SecAggPlusSettings.from_config(context.run_config)
    training = settings.training()
    model, clients = federation(training)
    record = Record()
    deadline = time.monotonic() + settings.timeout
    while len(grid.get_node_ids()) < settings.clients:  # all SuperNodes take part in round 1
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(grid.get_node_ids())} of {settings.clients} SuperNodes connected")
        time.sleep(0.2)

    def evaluate(server_round, ndarrays, config):
        accuracy = mllib.accuracy_on(model, torch.from_numpy(ndarrays[0]).float(), clients.x_test, clients.y_test)
        record.accuracy.append(accuracy)
        print(f"round {server_round}: test accuracy {accuracy:.3f}", flush=True)
        return 0.0, {"accuracy": accuracy}

    x0 = ndarrays_to_parameters([initial_model(model, training).numpy()])
    strategy = RecordedFedAvg(record, fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=2,
                              min_available_clients=2, evaluate_fn=evaluate, initial_parameters=x0)  # fmt: skip
    workflow = RecordedSecAggPlus(record, num_shares=settings.num_shares, reconstruction_threshold=settings.threshold,
                                  max_weight=float(clients.sizes.max()), clipping_range=settings.clipping_range,
                                  quantization_range=settings.quantization_range,
                                  timeout=settings.stage_timeout or None)  # fmt: skip
    legacy = LegacyContext(context, config=ServerConfig(num_rounds=settings.rounds), strategy=strategy)
    DefaultWorkflow(fit_workflow=workflow)(CountingGrid(grid, record), legacy)
    if settings.output:  # written whole, then renamed: a reader never sees half a file
        partial = f"{settings.output}.partial.npz"
        completed = sorted(record.models)
        models = np.stack([record.models[r] for r in completed]) if completed else np.zeros((0, model.dim))
        np.savez(partial, models=models,
                 completed=np.array(completed, dtype=np.int64), accuracy=np.array(record.accuracy),
                 rounds=np.array(json.dumps({str(r): e for r, e in record.rounds.items()})),
                 sizes=clients.sizes.numpy())  # fmt: skip
        os.replace(partial, settings.output)


# --- running it -------------------------------------------------------------------------------------
class SecAggHalted(RuntimeError):
    """A SecAgg+ round that Flower halted; ``result`` holds what the run recorded."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


def run(deployment, settings: SecAggPlusSettings, *, timeout: float = 300, echo: bool = False, on_line=None) -> dict:
    """Run the SecAgg+ app on a ``Deployment`` and check every round completed.

    Returns:
        {"models": {round: the aggregated model (d,) float64}, "accuracy": after each round
        (round 0 first), "rounds": {round: {"seconds", "stage_seconds", "messages", "ciphertexts", "sampled",
        "results", "failures", "partitions", "halted"?}}, "sizes": the client sizes, "log": the
        run's log}.

    Raises:
        SecAggHalted: if Flower halted a round (the message names the round, the stage and the
            failures; ``.result`` is the dict above).
        RuntimeError: if the run fails or takes over ``timeout`` s.
    """
    output = pathlib.Path(deployment.workdir) / f"secaggplus-{time.monotonic_ns()}.npz"
    settings = SecAggPlusSettings(**{**asdict(settings), "output": str(output)})
    log = deployment.submit(APP, settings.to_config(), timeout=timeout, echo=echo, on_line=on_line)
    if not output.exists():
        raise RuntimeError(f"the SecAgg+ run failed; the end of its log:\n{log[-3000:]}")
    saved = np.load(output)
    rounds = {int(r): e for r, e in json.loads(str(saved["rounds"])).items()}
    result = {"models": dict(zip(saved["completed"].tolist(), saved["models"], strict=True)),
              "accuracy": saved["accuracy"].tolist(), "rounds": rounds, "sizes": saved["sizes"],
              "log": log}  # fmt: skip
    if halted := {r: e["halted"] for r, e in rounds.items() if "halted" in e}:
        lines = [f"round {r}: Flower's secure aggregation halted at stage {h['stage']!r} (failures: {h['failures']})"
                 for r, h in sorted(halted.items())]  # fmt: skip
        raise SecAggHalted("; ".join(lines) + f"; rounds completed: {sorted(result['models'])}", result)
    return result
