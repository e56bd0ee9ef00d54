"""A DP-SGD step: mllib's ghost-norm path and vmap reference against Opacus (hooks and ghost mode).

All four compute the clipped, averaged gradient of the same 784-256-10 MLP on the same
batch of 256 (noise off, so the results can be compared; noise adds one randn of size d):
- mllib ghost: ``privacy.clipped_sum(..., "ghost")``: per-sample norms from layer inputs
  and output gradients, one forward and one backward by batched products;
- mllib vmap: ``privacy.clipped_sum(..., "vmap")``: (B, d) per-sample gradients by torch.func;
- Opacus hooks: ``GradSampleModule`` per-sample gradients, then ``DPOptimizer`` clipping;
- Opacus ghost: ``grad_sample_mode="ghost"`` (norms by hooks, then a second backward).
Then the accountant: mllib's epsilon beside Opacus's RDP accountant for the same settings.

Run: ``make bench`` (or ``python -m benchmarks.privacy``). Needs opacus (the [bench]/[dev] extra).
"""
import warnings

import torch
from torch import nn

import mllib
from benchmarks import best_time, record, size, taking_turns
from mllib import privacy

BATCH, CLIP, REPEATS = size(256, 32), 1.0, 20


def opacus_step(module, x, y, mode: str):
    """A closure running one Opacus DP-SGD step (noise 0, lr 0) and returning the averaged clipped gradient."""
    from opacus import PrivacyEngine

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.0)
    engine = PrivacyEngine(accountant="rdp")
    kwargs = dict(module=module, optimizer=optimizer, data_loader=loader, noise_multiplier=0.0, max_grad_norm=CLIP,
                  poisson_sampling=False, grad_sample_mode=mode)  # fmt: skip
    if mode == "ghost":
        dp_module, dp_optimizer, criterion, _ = engine.make_private(criterion=nn.CrossEntropyLoss(), **kwargs)
    else:
        dp_module, dp_optimizer, _ = engine.make_private(**kwargs)
        criterion = nn.CrossEntropyLoss()

    def step():
        dp_optimizer.zero_grad()
        criterion(dp_module(x), y).backward()
        dp_optimizer.step()
        return torch.cat([p.grad.detach().flatten() for p in dp_module.parameters()])

    return step


def main() -> None:
    warnings.filterwarnings("ignore")
    gen = mllib.setup(seed=0)  # 1 thread, as the notebooks: on a shared machine 2 threads time the contention
    module = mllib.mlp(784, 10, hidden=(256,))
    model = mllib.FlatModel(module)
    row = model.flatten(module)
    x = torch.rand(BATCH, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (BATCH,), generator=gen)
    def plain_step():  # the non-private step: one gradient of the batch's mean loss
        module.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        return torch.cat([p.grad.detach().flatten() for p in module.parameters()])

    runs = {"plain step": plain_step,
            "mllib ghost": lambda: privacy.clipped_sum(model, row, x, y, CLIP, "ghost") / BATCH}  # fmt: skip
    try:
        import opacus

        for mode in ("hooks", "ghost"):
            fresh = mllib.mlp(784, 10, hidden=(256,))
            model.load(fresh, row)
            runs[f"opacus {mode}"] = opacus_step(fresh, x, y, mode)
        print(f"opacus {opacus.__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    except ImportError:
        print("opacus is not installed: pip install opacus (only mllib's paths are timed)")
    for run in runs.values():  # warm-up
        run()
    results = dict(zip(runs, taking_turns(list(runs.values()), REPEATS)))
    plain = results.pop("plain step")[0]
    results["mllib vmap"] = best_time(lambda: privacy.clipped_sum(model, row, x, y, CLIP, "vmap") / BATCH, 2, warm_up=True)
    reference = results["mllib vmap"][1]
    print(f"DP-SGD step, MLP 784-256-10 (d={model.dim}), batch {BATCH}, C={CLIP}")
    print(f"{'path':>13} {'ms':>8} {'vs mllib ghost':>15} {'max |diff| vs vmap':>19}")
    base = results["mllib ghost"][0]
    for name, (secs, grad) in results.items():
        gap = float((grad - reference).abs().max())
        print(f"{name:>13} {1000 * secs:8.2f} {secs / base:14.1f}x {gap:19.1e}")
        assert gap < 1e-5, f"{name} differs from the reference by {gap}"
    print(f"{'plain step':>13} {1000 * plain:8.2f} {plain / base:14.1f}x   (no clipping, no noise)")
    record("DP-SGD step (ghost clipping) vs a plain non-private step", ours_s=base, reference_s=plain,
           reference="autograd gradient of the batch's mean loss", batch=BATCH)  # fmt: skip
    if "opacus ghost" in results:
        record("DP-SGD step (ghost clipping) vs Opacus ghost clipping", ours_s=base, batch=BATCH,
               reference_s=results["opacus ghost"][0], reference=f"opacus {opacus.__version__} ghost clipping")  # fmt: skip

    print("\nepsilon at delta = 1e-5: mllib's accountant beside Opacus's RDP accountant")
    try:
        from opacus.accountants import RDPAccountant
    except ImportError:
        return
    print(f"{'q':>6} {'sigma':>6} {'steps':>6} {'mllib':>8} {'opacus':>8} {'rel. gap':>9}")
    for q, sigma, steps in [(0.01, 1.0, 1000), (0.004, 1.1, 10000), (0.05, 0.8, 300), (0.256, 2.0, 100)]:
        ours = privacy.epsilon(q=q, sigma=sigma, steps=steps, delta=1e-5)
        theirs = RDPAccountant()
        theirs.history = [(sigma, q, steps)]
        eps = theirs.get_epsilon(1e-5)
        print(f"{q:6g} {sigma:6g} {steps:6d} {ours:8.4f} {eps:8.4f} {abs(ours - eps) / eps:9.1e}")


if __name__ == "__main__":
    main()
