"""Vectorized client training against the per-client loops of tutorials and simulators.

All three train n clients for the same local SGD steps on the same minibatches (digits,
MLP 64-64-10):
- vectorized: ``mllib.local_sgd`` on the (n, d) client matrix, one batched step for all;
- deep copy: one ``copy.deepcopy`` of the model and one optimizer per client, a Python loop;
- reload: one model whose parameters are loaded from each client's row in turn.

Run: ``make bench`` (or ``python -m benchmarks.client_training``). Prints seconds and
ratios from one run; the numbers depend on the machine, the ratios much less.
"""
import copy

import torch

import mllib
from benchmarks import best_time, size

STEPS, BATCH, LR = 10, 32, 0.1
CLIENT_COUNTS = size((10, 100, 1000), (10,))


def vectorized(model, module, X, clients, gen):
    return mllib.local_sgd(model, X, clients, steps=STEPS, lr=LR, batch_size=BATCH, gen=gen)


def deep_copy_loop(model, module, X, clients, gen):
    copies = [model.load(copy.deepcopy(module), row) for row in X]
    optimizers = [torch.optim.SGD(m.parameters(), lr=LR) for m in copies]
    for _ in range(STEPS):
        xb, yb = clients.batches(BATCH, gen)
        for m, opt, x, y in zip(copies, optimizers, xb, yb):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
    return torch.stack([model.flatten(m) for m in copies])


def reload_loop(model, module, X, clients, gen):
    rows = X.clone()
    for _ in range(STEPS):
        xb, yb = clients.batches(BATCH, gen)
        for i in range(len(rows)):
            model.load(module, rows[i])
            module.zero_grad()
            torch.nn.functional.cross_entropy(module(xb[i]), yb[i]).backward()
            rows[i] -= LR * torch.cat([p.grad.flatten() for p in module.parameters()])
    return rows


METHODS = {"vectorized": vectorized, "deep copy": deep_copy_loop, "reload": reload_loop}


def synchronized(result: torch.Tensor) -> torch.Tensor:
    """Wait for the GPU's queued kernels, so that a timing counts them."""
    if result.is_cuda:
        torch.cuda.synchronize()
    return result


def main() -> None:
    gen = mllib.setup(seed=0, threads=1)
    device = mllib.device()  # MLLIB_DEVICE=cpu to compare on the CPU of a GPU machine
    data = mllib.load("digits", gen=gen).to(device)
    module = mllib.mlp(data.n_features, data.n_classes, hidden=(64,)).to(device)
    model = mllib.FlatModel(module)
    print(f"{STEPS} local SGD steps of batch {BATCH}, MLP with d={model.dim}, on {device}, 1 CPU thread, best of 3\n")
    print(f"{'clients':>8} {'vectorized s':>13} {'deep copy s':>12} {'reload s':>9} {'deep copy / vec':>16} {'reload / vec':>13}")
    for n in CLIENT_COUNTS:
        clients = mllib.split(data, n, "iid", gen=gen)
        X = model.init(gen, device).expand(n, -1).contiguous()
        timed = {  # each method on the same minibatches: generator(1)
            name: best_time(lambda: synchronized(method(model, module, X, clients, gen=mllib.generator(1))), warm_up=True)
            for name, method in METHODS.items()
        }
        reference = timed["vectorized"][1]
        for name, (_, result) in timed.items():  # the same computation, or the ratio means nothing
            assert torch.allclose(result, reference, atol=1e-4), f"{name} disagrees with the vectorized run"
        vec, deep, reload = (timed[name][0] for name in METHODS)
        print(f"{n:8d} {vec:13.3f} {deep:12.3f} {reload:9.3f} {deep / vec:15.1f}x {reload / vec:12.1f}x")


if __name__ == "__main__":
    main()
