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
from benchmarks import best_time, record, size

STEPS, BATCH, LR = 10, 32, 0.1
CLIENT_COUNTS = size((10, 100, 1000), (10,))
MATMUL_AT = size(100, 10)  # the client count compared with one matmul


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
        record(f"vectorized clients vs a deep-copy loop, {n} clients", ours_s=vec, reference_s=deep,
               reference="a deep copy of the model and an optimizer per client, in a Python loop")  # fmt: skip
        if n == MATMUL_AT:
            against_matmul(vec, n, model, device)


def step_flops(model, n: int) -> float:
    """Floating-point operations of ``STEPS`` SGD steps of n clients: forward 2 B d_layer per
    weight, backward twice that (the gradients of the inputs and of the weights)."""
    weights = sum(p.numel() for name, p in model.module.named_parameters() if name.endswith("weight"))
    return 3 * 2 * BATCH * weights * n * STEPS


def against_matmul(vec: float, n: int, model, device) -> None:
    """The vectorized step beside one square matmul of the same FLOPs: the hardware's pace."""
    flops = step_flops(model, n)
    side = round((flops / 2) ** (1 / 3))
    A, B = torch.randn(side, side, device=device), torch.randn(side, side, device=device)
    matmul, _ = best_time(lambda: synchronized(A @ B), 5, warm_up=True)
    print(f"\n{n} clients: {flops / vec / 1e9:.1f} GFLOP/s; one ({side} x {side}) matmul of the same FLOPs: "
          f"{2 * side**3 / matmul / 1e9:.1f} GFLOP/s ({vec / matmul:.1f}x its time)")  # fmt: skip
    record("vectorized local step vs one matmul of the same FLOPs", ours_s=vec, reference_s=matmul, clients=n,
           reference=f"one ({side} x {side}) float32 matmul", gflops=round(flops / vec / 1e9, 2),
           matmul_gflops=round(2 * side**3 / matmul / 1e9, 2))  # fmt: skip


if __name__ == "__main__":
    main()
