"""mllib.adversarial against torchattacks: the same attacks give the same robust accuracy.

Both attack the same standard MLP (the lecture's: 784-64-10, 4 epochs of SGD on 4000 MNIST
digits) and the small CNN on all 1000 test images, with the same settings and no random
start: FGSM, PGD L-infinity and PGD L2. The robust accuracies must agree within 1 point
(they are the same algorithm up to float rounding) before any timing is printed.

The work is the same both ways: the same start (x itself), and per step one forward and one
backward pass to the input, then the step and its projection. What torchattacks does
differently: it differentiates the batch's mean loss, not the sum (a gradient 1/B as large: the
same signs, and an L2 direction that differs only where its 1e-10 added to the norm matters,
hence the L2 rows' small max |dx|); it clones the images and labels and sets the model to
eval mode on every call; its L2 random start (off here) draws the radius eps u instead of
eps u^(1/n). mllib's steps write into the gradient's memory instead of allocating seven
image-sized tensors, which is where it gains on the MLP; on the CNN the convolutions'
backward passes (the same calls both ways) take most of the time.

Run: ``make bench`` (it installs torchattacks with ``--no-deps``: its dependencies would
replace the CPU build of torch), or ``python -m benchmarks.adversarial``. Prints seconds
and ratios from one run (best of 5, the two libraries taking turns, so that a change of load
on a shared machine hits both); the ratios depend less on the machine than the seconds.
"""
import copy
import functools

import torch
import torchattacks

import mllib
from benchmarks import record, size, taking_turns
from mllib import adversarial as adv

SETTINGS = {  # name: (mllib attack, torchattacks attack factory)
    "FGSM eps=0.1": (functools.partial(adv.fgsm, eps=0.1), lambda m: torchattacks.FGSM(m, eps=0.1)),
    "PGD inf eps=0.1 a=0.01 k=10": (
        functools.partial(adv.pgd, eps=0.1, step_size=0.01, steps=10),
        lambda m: torchattacks.PGD(m, eps=0.1, alpha=0.01, steps=10, random_start=False),
    ),
    "PGD 2 eps=1.5 a=0.2 k=10": (
        functools.partial(adv.pgd, eps=1.5, norm="2", step_size=0.2, steps=10),
        lambda m: torchattacks.PGDL2(m, eps=1.5, alpha=0.2, steps=10, random_start=False),
    ),
}


def trained(model: mllib.FlatModel, x: torch.Tensor, y: torch.Tensor, epochs: int) -> torch.nn.Module:
    gen = mllib.generator(0)
    row = adv.adversarial_training(model, model.init(gen), x, y, attack=None,
                                   epochs=epochs, lr=0.3, batch_size=32, gen=gen)  # fmt: skip
    return model.load(copy.deepcopy(model.module), row).eval()


def main() -> None:
    gen = mllib.setup(seed=0, threads=1)
    data = mllib.load("mnist", gen=gen)
    n_train, n_test = size(len(data.y_train), 500), size(len(data.y_test), 200)
    train = data.x_train[:n_train], data.y_train[:n_train]
    x, y = data.x_test[:n_test], data.y_test[:n_test]
    models = {
        "MLP": trained(mllib.FlatModel(mllib.mlp(784, 10, hidden=(64,))), *train, size(4, 1)),
        "CNN": trained(mllib.FlatModel(adv.small_cnn()), *train, 1),
    }
    print(f"{len(y)} MNIST test images, no random start, 1 thread, best of 5 taking turns\n")
    print(f"{'model':>5} {'attack':>28} {'mllib acc':>10} {'torchattacks acc':>17} {'max |dx|':>9} "
          f"{'mllib s':>8} {'torchattacks s':>15} {'torchattacks / mllib':>21}")  # fmt: skip
    pgd = []  # (torchattacks / mllib, mllib s, torchattacks s, where) of every PGD setting
    for name, module in models.items():
        for setting, (ours, make_theirs) in SETTINGS.items():
            theirs = make_theirs(module)
            (t_ours, x_ours), (t_theirs, x_theirs) = taking_turns([lambda: ours(module, x, y), lambda: theirs(x, y)],
                                                                  size(5, 1))  # fmt: skip
            acc_ours, acc_theirs = adv.accuracy(module, x_ours, y), adv.accuracy(module, x_theirs, y)
            assert abs(acc_ours - acc_theirs) <= 0.01, f"{name}, {setting}: {acc_ours} vs {acc_theirs}"
            gap = float((x_ours - x_theirs).abs().max())
            print(f"{name:>5} {setting:>28} {acc_ours:10.3f} {acc_theirs:17.3f} {gap:9.1e} "
                  f"{t_ours:8.3f} {t_theirs:15.3f} {t_theirs / t_ours:20.2f}x")  # fmt: skip
            if setting.startswith("PGD"):
                pgd.append((t_theirs / t_ours, t_ours, t_theirs, f"{name}, {setting}"))
    _, t_ours, t_theirs, where = min(pgd)  # the goal holds for every setting: report the slowest
    record("PGD vs torchattacks", ours_s=t_ours, reference_s=t_theirs, reference=f"torchattacks {torchattacks.__version__}",
           slowest_setting=where)  # fmt: skip


if __name__ == "__main__":
    main()
