"""Cross-device scale: 10,000 clients with a few examples each, 100 of them sampled per round.

The clients hold 4 examples each, drawn from the digits training set (it has fewer than 40,000
examples, so clients share some, as phones share common pictures). FedAvg runs through the
round engine exactly as in the lectures (``engine.Federated`` with ``LocalSGD`` and a uniform
cohort), evaluated on the test set after the last round. A round touches only the cohort, so
its time should stay flat as the federation grows from 1,000 to 10,000 clients; the peak
memory of the process (RSS) is printed and must stay under 2 GB.

Run: ``make bench`` (or ``python -m benchmarks.scale``).
"""
import resource
import time
from dataclasses import replace

import torch

import mllib
from benchmarks import record, size
from mllib import engine

PER_CLIENT, COHORT, ROUNDS, STEPS, BATCH, LR = 4, size(100, 10), size(10, 2), 10, 4, 0.1
FEDERATIONS = size((1_000, 10_000), (100, 1_000))


def federation(n: int, data: mllib.Dataset, gen: torch.Generator) -> mllib.Clients:
    """n clients of ``PER_CLIENT`` examples, drawn from the training set (with repeats across clients)."""
    drawn = torch.randint(len(data.y_train), (n * PER_CLIENT,), generator=gen)
    return mllib.split(replace(data, x_train=data.x_train[drawn], y_train=data.y_train[drawn]), n, "iid", gen=gen)


def seconds_per_round(n: int, data: mllib.Dataset, model: mllib.FlatModel) -> tuple[float, float]:
    """Seconds per round of FedAvg on n clients (cohort ``COHORT``), and the final test accuracy."""
    gen = mllib.generator(n)
    clients = federation(n, data, gen)
    federated = engine.Federated(model.init(gen), select=engine.uniform(n, COHORT, gen), weights=clients.weights,
                                 local=mllib.LocalSGD(model, clients, steps=STEPS, lr=LR, batch_size=BATCH, gen=gen))  # fmt: skip
    start = time.perf_counter()
    history = engine.run(federated, ROUNDS, eval_every=ROUNDS,
                         metrics={"accuracy": lambda f: mllib.accuracy_on(model, f.x, data.x_test, data.y_test)})  # fmt: skip
    return (time.perf_counter() - start) / ROUNDS, history.accuracy[-1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    gen = mllib.setup(seed=0, threads=1)
    data = mllib.load("digits", gen=gen)
    model = mllib.FlatModel(mllib.mlp(data.n_features, data.n_classes, hidden=(64,)))
    print(f"FedAvg, {PER_CLIENT} examples per client, {COHORT} clients per round, {STEPS} local steps of batch "
          f"{BATCH}, {ROUNDS} rounds, 1 thread")  # fmt: skip
    print(f"{'clients':>8} {'s per round':>12} {'accuracy':>9} {'peak RSS MB':>12}")
    seconds_per_round(FEDERATIONS[0], data, model)  # warm-up: the first run pays for allocations and caches
    per_round = {}
    for n in FEDERATIONS:
        per_round[n], accuracy = seconds_per_round(n, data, model)
        print(f"{n:8,d} {per_round[n]:12.4f} {accuracy:9.2f} {peak_rss_mb():12.0f}")
    small, large = FEDERATIONS
    print(f"time per round, {large:,} clients / {small:,}: {per_round[large] / per_round[small]:.2f}x")
    assert peak_rss_mb() < 2048, f"peak memory {peak_rss_mb():.0f} MB exceeds 2 GB"
    record("time per round, 10,000 clients vs 1,000 (cohort of 100)", ours_s=per_round[large],
           reference_s=per_round[small], reference=f"the same run on {small:,} clients", peak_rss_mb=round(peak_rss_mb()))  # fmt: skip


if __name__ == "__main__":
    main()
