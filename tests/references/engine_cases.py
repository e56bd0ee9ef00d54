"""Reference results of the round loops as they were before the one-engine refactor (issue #24).

Run once, against the commit before the refactor, to write ``engine.pt``:

    git worktree add /tmp/before <commit>
    PYTHONPATH=/tmp/before python tests/references/engine_cases.py tests/references/engine.pt

tests/test_engine.py runs the same experiments through today's API and compares with the file,
never with results recomputed by the new code. Each case is small (seconds) and seeded.
"""
import sys
from functools import partial

import torch

import mllib
from mllib import compression, decentralized, personalized, playground, privacy, robust, systems
from mllib import federated as fl


def setting(n=10, alpha=0.5):
    gen = mllib.setup(seed=0)
    data = mllib.load("digits", gen=gen)
    clients = mllib.split(data, n, "dirichlet", alpha=alpha, gen=gen)
    model = mllib.FlatModel(mllib.mlp(data.n_features, data.n_classes, hidden=(16,)))
    return data, clients, model, gen


def fedavg():
    _, clients, model, gen = setting()
    h = mllib.run_rounds(model, clients, rounds=5, local_steps=3, lr=0.1, batch_size=8, gen=gen, participation=0.5,
                         eval_every=2, transforms=[compression.ErrorFeedback(compression.TopK(fraction=0.1))])
    return {"model": h.model, "accuracy": torch.tensor(h.accuracy), "rounds": torch.tensor(h.rounds)}


def federated(algorithm):
    data, clients, model, gen = setting()
    x0 = model.init(gen)
    accuracy = lambda x: mllib.accuracy_on(model, x, data.x_test, data.y_test)  # noqa: E731
    trace = fl.run(algorithm, fl.DataProblem(model, clients, 8), x0, rounds=4, clients_per_round=5, gen=gen,
                   evaluate=accuracy, eval_every=2, sample_gen=mllib.generator(2))
    return {"model": trace.model, "accuracy": torch.tensor(trace.values), "rounds": torch.tensor(trace.rounds)}


def ditto():
    _, clients, model, gen = setting()
    r = personalized.ditto(model, clients, rounds=3, local_steps=2, personal_steps=2, lr=0.1, lam=0.5,
                           batch_size=8, gen=gen, eval_every=2)
    return {"personal": r.personal, "global": r.global_model, "personal_accuracy": torch.stack(r.personal_accuracy),
            "global_accuracy": torch.stack(r.global_accuracy)}


def dpsgd():
    _, clients, model, gen = setting(n=8)
    W = decentralized.mixing_matrix("ring", 8)
    h = decentralized.dpsgd(model, clients, W, steps=10, lr=0.1, batch_size=8, gen=gen, eval_every=5)
    return {"X": h.X, "consensus": torch.tensor(h.consensus), "accuracy": torch.tensor(h.accuracy),
            "average_accuracy": torch.tensor(h.average_accuracy), "steps": torch.tensor(h.steps)}


def choco():
    _, clients, model, gen = setting(n=8)
    W = decentralized.mixing_matrix("ring", 8)
    X0 = model.init(gen).expand(8, -1).clone()

    def grad(X):
        xb, yb = clients.batches(8, gen)
        return model.grad(X, xb, yb)

    X = compression.choco_sgd(grad, X0, W, compression.TopK(fraction=0.1), lr=0.1, gamma=0.5, steps=10)
    return {"X": X, "gossip": torch.tensor(decentralized.gossip_run(X0 + torch.randn(8, X0.shape[1], generator=gen), W, 5))}


def byzantine():
    _, clients, model, gen = setting(n=10, alpha=100.0)
    run = robust.byzantine_sgd(model, clients, steps=10, lr=0.1, batch_size=8, aggregate=robust.make("median", 2),
                               attack=partial(robust.alie, f=2), momentum=0.9, gen=gen, eval_every=5)
    return {"model": run.model, "accuracy": torch.tensor(run.accuracy), "steps": torch.tensor(run.steps)}


def dp_fedavg():
    _, clients, model, gen = setting()
    h = mllib.run_rounds(model, clients, rounds=3, local_steps=2, lr=0.1, batch_size=8, gen=gen,
                         aggregate=privacy.dp_fedavg_aggregate(clip=1.0, sigma=0.5, gen=mllib.generator(3)))
    return {"model": h.model, "accuracy": torch.tensor(h.accuracy)}


def stages():
    _, clients, model, gen = setting()
    r = personalized.train_in_stages(model, clients, [[0, 1, 2], [3, 4]], rounds=2, local_steps=2, lr=0.1,
                                     batch_size=8, gen=gen)
    return {"model": r.model, "accuracy": r.accuracy}


def playgrounds():
    data = mllib.load("digits", gen=mllib.setup(seed=0))
    out = {}
    for name, config in {
        "server": playground.Config(rounds=3, f=1, attack="ALIE", aggregator="median", compressor="top-k 10%",
                                    error_feedback=True, momentum=0.5, dp_sigma=0.3),
        "gossip": playground.Config(rounds=3, topology="ring", compressor="sign"),
    }.items():
        r = playground.run(config, data)
        out |= {f"{name} model": r.model, f"{name} accuracy": torch.tensor(r.accuracy), f"{name} bits": torch.tensor(r.bits)}
    return out


def two_units():
    gen = mllib.generator(0)
    A, b = torch.randn(40, 30, generator=gen, dtype=torch.float64), torch.randn(40, generator=gen, dtype=torch.float64)
    out = {}
    for rule in systems.hetero.RULES:
        t = systems.train_two_units(A, b, 0.1, budget=8, rule=rule, rounds=5, gen=mllib.generator(1))
        out[rule] = torch.stack([t.fast_ops, t.slow_ops, t.swaps, t.objective, t.gap])
    t = systems.hetero.train_slow_alone(A, b, 0.1, rounds=5, updates=8, gen=mllib.generator(1))
    out["slow alone"] = torch.stack([t.fast_ops, t.slow_ops, t.swaps, t.objective, t.gap])
    return out


CASES = {
    "FedAvg": fedavg,
    "SCAFFOLD": lambda: federated(fl.Scaffold(local_steps=3, lr=0.1)),
    "MIME": lambda: federated(fl.Mime(local_steps=3, lr=0.1, momentum=0.9)),
    "Ditto": ditto,
    "D-PSGD": dpsgd,
    "CHOCO": choco,
    "Byzantine": byzantine,
    "DP-FedAvg": dp_fedavg,
    "stages": stages,
    "playground": playgrounds,
    "two units": two_units,
}

if __name__ == "__main__":
    torch.save({name: case() for name, case in CASES.items()}, sys.argv[1])
