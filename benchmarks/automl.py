"""AutoML: training many hyperparameter configurations as the rows of one client matrix
against a loop that trains them one at a time (what a tuning library does per trial).

Both paths run the same SGD steps from the same starting rows on the same minibatches; the
results are checked to agree before the times mean anything. Run: ``make bench`` (or
``python -m benchmarks.automl``). The seconds depend on the machine, the ratios much less.
"""

import torch

import mllib
from benchmarks import best_time, size
from mllib.automl import sample_configs


def train(model, X, lr, wd, data, order, batch_size):
    """SGD with per-row lr and weight decay (n,) on shared minibatches; X (n, d)."""
    lr, wd = lr.unsqueeze(1), wd.unsqueeze(1)
    for idx in order.split(batch_size):
        xb = data.x_train[idx].unsqueeze(0).expand(len(X), *data.x_train[idx].shape)
        yb = data.y_train[idx].unsqueeze(0).expand(len(X), -1)
        X = X - lr * (model.grad(X, xb, yb) + wd * X)
    return X


def main():
    gen = mllib.setup(seed=0)
    data = mllib.load("digits", gen=gen)
    print("one epoch of SGD on the digits MLP (64 -> 32 -> 10), batch 64, per-configuration lr and weight decay")
    for n in size((8, 32, 128), (8,)):
        model = mllib.FlatModel(mllib.mlp(64, 10, hidden=(32,)))
        lr, _, wd = sample_configs(n, gen, lr_range=(1e-2, 1.0))
        X0 = torch.stack([model.init(gen) for _ in range(n)])
        order = torch.randperm(len(data.y_train), generator=gen)
        rows = lambda: train(model, X0, lr, wd, data, order, 64)  # noqa: E731
        loop = lambda: torch.cat([train(model, X0[i : i + 1], lr[i : i + 1], wd[i : i + 1], data, order, 64)  # noqa: E731
                                  for i in range(n)])  # fmt: skip
        assert torch.allclose(rows(), loop(), atol=1e-5), "the two paths disagree"
        t_rows = best_time(rows)[0]
        t_loop = best_time(loop)[0]
        print(f"  {n:>3} configurations: rows {t_rows * 1e3:7.1f} ms   loop {t_loop * 1e3:7.1f} ms   loop / rows {t_loop / t_rows:5.1f}x")


if __name__ == "__main__":
    main()
