"""Ditto's personal models on the client matrix against a per-client loop with optimizers.

Both run the same Ditto personal steps (Li et al. 2021) on the same minibatches (digits,
MLP 64-64-10), toward the same global model w:
- vectorized: ``mllib.personalized.ditto_update`` on the (n, d) matrix, one batched step;
- per-client loop: one module copy per client, its own ``torch.optim.SGD``, and the
  proximal step written on its parameters (Ditto's reference code loops over clients).

Also: Monte Carlo Shapley values with and without the per-coalition cache (``CachedGame``):
the same estimate, from how many coalition values (each one a federation to train).

Run: ``make bench`` (or ``python -m benchmarks.personalized``). Prints seconds and ratios
from one run; the numbers depend on the machine, the ratios much less.
"""
import copy

import torch

import mllib
from benchmarks import best_time, record, size
from mllib import personalized as pers

STEPS, BATCH, LR, LAM = 10, 32, 0.1, 1.0
CLIENT_COUNTS = size((10, 100, 500), (10,))


def vectorized(model, module, V, w, clients, gen):
    for _ in range(STEPS):
        xb, yb = clients.batches(BATCH, gen)
        V = pers.ditto_update(V, w, model.grad(V, xb, yb), LR, LAM)
    return V


def per_client_loop(model, module, V, w, clients, gen):
    copies = [model.load(copy.deepcopy(module), row) for row in V]
    anchor = [p.detach().clone() for p in model.load(copy.deepcopy(module), w).parameters()]
    optimizers = [torch.optim.SGD(m.parameters(), lr=LR) for m in copies]
    for _ in range(STEPS):
        xb, yb = clients.batches(BATCH, gen)
        for m, opt, x, y in zip(copies, optimizers, xb, yb):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()  # v - lr g
            with torch.no_grad():  # proximal part: (v - lr g + lr lam w) / (1 + lr lam)
                for p, a in zip(m.parameters(), anchor):
                    p.add_(a, alpha=LR * LAM).div_(1 + LR * LAM)
    return torch.stack([model.flatten(m) for m in copies])


METHODS = {"vectorized": vectorized, "per-client loop": per_client_loop}


def shapley_cache(n_players: int = 8, permutations: int = size(200, 20)) -> None:
    """Monte Carlo Shapley with and without caching coalition values (same permutations)."""
    weights = torch.linspace(-1, 1, n_players).tolist()
    calls = {"count": 0}

    def game(S):
        calls["count"] += 1
        return sum(weights[i] for i in S) ** 2

    cached = pers.CachedGame(game)
    plain = pers.monte_carlo_shapley(game, n_players, permutations=permutations, gen=mllib.generator(0))
    plain_calls, calls["count"] = calls["count"], 0
    with_cache = pers.monte_carlo_shapley(cached, n_players, permutations=permutations, gen=mllib.generator(0))
    assert torch.equal(plain, with_cache), "the cache changed the estimate"
    print(f"\nMonte Carlo Shapley, {n_players} players, {permutations} permutations: "
          f"{plain_calls} coalition values without the cache, {calls['count']} with it "
          f"({plain_calls / calls['count']:.1f}x fewer trainings of a federation)")


def main() -> None:
    gen = mllib.setup(seed=0, threads=1)
    data = mllib.load("digits", gen=gen)
    module = mllib.mlp(data.n_features, data.n_classes, hidden=(64,))
    model = mllib.FlatModel(module)
    print(f"{STEPS} Ditto personal steps of batch {BATCH}, MLP with d={model.dim}, 1 thread, best of 3\n")
    print(f"{'clients':>8} {'vectorized s':>13} {'loop s':>8} {'loop / vectorized':>18}")
    for n in CLIENT_COUNTS:
        clients = mllib.split(data, n, "iid", gen=gen)
        V = model.init(gen).expand(n, -1).contiguous()
        w = model.init(gen)
        timed = {  # each method on the same minibatches: generator(1)
            name: best_time(lambda: method(model, module, V, w, clients, gen=mllib.generator(1)))
            for name, method in METHODS.items()
        }
        reference = timed["vectorized"][1]
        for name, (_, result) in timed.items():  # the same computation, or the ratio means nothing
            assert torch.allclose(result, reference, atol=1e-4), f"{name} disagrees with the vectorized run"
        vec, loop = (timed[name][0] for name in METHODS)
        print(f"{n:8d} {vec:13.3f} {loop:8.3f} {loop / vec:17.1f}x")
        if n == CLIENT_COUNTS[-1]:
            record("Ditto personal steps vs a per-client loop", ours_s=vec, reference_s=loop, clients=n,
                   reference="one model per client, trained in a Python loop with autograd")  # fmt: skip
    shapley_cache()


if __name__ == "__main__":
    main()
