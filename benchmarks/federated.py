"""SCAFFOLD and MIME rounds on the client matrix against per-client loops.

Both compute the same round on the same minibatches (digits, MLP 64-64-10, K local steps):
- vectorized: ``mllib.federated.Scaffold`` / ``Mime`` on the (|S|, d) client matrix, one round
  of the round engine (``engine.Federated``);
- loop: what tutorials and simulators write, one model copy per client trained in a Python
  loop with autograd, the correction (SCAFFOLD's c - c_i, MIME's - g_i(x) + c) added to
  each gradient by hand.

The results are compared first (server model and new state); only then the timings mean
anything. Run: ``make bench`` (or ``python -m benchmarks.federated``). Prints seconds and
ratios from one run; the numbers depend on the machine, the ratios much less.
"""
import copy

import torch

import mllib
from benchmarks import best_time, record, size
from mllib import federated as fl

K, BATCH, LR, BETA = 10, 32, 0.1, 0.9
SAMPLED = size((10, 100), (10,))


def flat_grad(module, x, y):
    module.zero_grad()
    torch.nn.functional.cross_entropy(module(x), y).backward()
    return torch.cat([p.grad.flatten() for p in module.parameters()])


def loop_scaffold(model, module, x, clients, sampled, state, gen):
    batches = [clients.batches(BATCH, gen, sampled) for _ in range(K)]  # the draws the vectorized round makes
    c, c_clients = state
    ys, cs = [], []
    for j, i in enumerate(sampled.tolist()):
        local = model.load(copy.deepcopy(module), x)
        y = x.clone()
        for xb, yb in batches:
            y = y - LR * (flat_grad(local, xb[j], yb[j]) + c - c_clients[i])
            model.load(local, y)
        ys.append(y)
        cs.append(c_clients[i] - c + (x - y) / (K * LR))
    p = clients.weights[sampled]
    c_new = c + sum(pj * (cj - c_clients[i]) for pj, cj, i in zip(p, cs, sampled.tolist()))
    return x + sum(pj * (y - x) for pj, y in zip(p, ys)) / p.sum(), c_new


def loop_mime(model, module, x, clients, sampled, m, gen):
    p = clients.weights[sampled]
    full = [flat_grad(model.load(copy.deepcopy(module), x), *clients.client_data(i)) for i in sampled.tolist()]
    c = sum(pj * g for pj, g in zip(p, full)) / p.sum()
    batches = [clients.batches(BATCH, gen, sampled) for _ in range(K)]
    at_x = model.load(copy.deepcopy(module), x)
    ys = []
    for j in range(len(sampled)):
        local = model.load(copy.deepcopy(module), x)
        y = x.clone()
        for xb, yb in batches:
            g = flat_grad(local, xb[j], yb[j]) - flat_grad(at_x, xb[j], yb[j]) + c
            y = y - LR * ((1 - BETA) * g + BETA * m)
            model.load(local, y)
        ys.append(y)
    return x + sum(pj * (y - x) for pj, y in zip(p, ys)) / p.sum(), (1 - BETA) * c + BETA * m


def one_round(algorithm, problem, x, sampled):
    """One round of the round engine with ``algorithm`` as local part, on the clients ``sampled``."""
    federation = algorithm.federation(problem, x, select=lambda r: sampled, gen=mllib.generator(1))
    federation.round(1)
    return federation.x


def main() -> None:
    gen = mllib.setup(seed=0, threads=1)
    data = mllib.load("digits", gen=gen)
    module = mllib.mlp(data.n_features, data.n_classes, hidden=(64,))
    model = mllib.FlatModel(module)
    clients = mllib.split(data, 100, "dirichlet", alpha=0.1, gen=gen)
    problem = fl.DataProblem(model, clients, BATCH)
    x = model.init(gen)
    print(f"one round, K={K} local steps of batch {BATCH}, MLP with d={model.dim}, 1 thread, best of 3\n")
    print(f"{'algorithm':>9} {'clients':>8} {'vectorized s':>13} {'loop s':>8} {'loop / vectorized':>18}")
    for n in SAMPLED:
        sampled = fl.sample_clients(100, n, mllib.generator(n))
        state = (0.01 * mllib.runtime.randn(model.dim, gen=gen), 0.01 * mllib.runtime.randn(100, model.dim, gen=gen))

        def vectorized_scaffold():
            scaffold = fl.Scaffold(local_steps=K, lr=LR)
            scaffold.c, scaffold.c_clients = state
            return one_round(scaffold, problem, x, sampled), scaffold.c

        m = 0.01 * mllib.runtime.randn(model.dim, gen=gen)

        def vectorized_mime():
            mime = fl.Mime(local_steps=K, lr=LR, momentum=BETA)
            mime.m = m
            return one_round(mime, problem, x, sampled), mime.m

        args = (model, module, x, clients, sampled)
        runs = {
            "SCAFFOLD": (vectorized_scaffold, lambda: loop_scaffold(*args, state, mllib.generator(1))),
            "MIME": (vectorized_mime, lambda: loop_mime(*args, m, mllib.generator(1))),
        }
        for name, (fast, slow) in runs.items():
            (t_fast, got), (t_slow, expected) = best_time(fast), best_time(slow)
            for a, b in zip(got, expected):  # the same round, or the ratio means nothing
                assert torch.allclose(a, b, atol=1e-5), f"{name}: the loop and the client matrix disagree"
            print(f"{name:>9} {n:8d} {t_fast:13.3f} {t_slow:8.3f} {t_slow / t_fast:17.1f}x")
            if n == SAMPLED[-1]:
                record(f"{name} round vs a per-client loop", ours_s=t_fast, reference_s=t_slow, clients=n,
                       reference="one model copy per client, trained in a Python loop with autograd")  # fmt: skip


if __name__ == "__main__":
    main()
