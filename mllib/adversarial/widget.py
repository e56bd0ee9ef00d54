"""The lecture's widget: PGD on one image for a grid of radii and step counts, and its figure."""
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch

from ..constraints import Function, Integer, Integers, Reals, Tensor, constrain
from .attacks import Classifier, pgd


@dataclass(frozen=True)
class AttackGrid:
    """PGD on one image for every (eps, steps): images (E, S, C, H, W), probabilities (E, S, n_classes)."""

    image: torch.Tensor  # (C, H, W)
    label: int
    eps: tuple[float, ...]
    steps: tuple[int, ...]
    images: torch.Tensor
    probabilities: torch.Tensor


@constrain(f=Function(), image=Tensor(3), label=Integer(min=0), eps=Reals(ge=0), steps=Integers(min=1))
def attack_grid(f: Classifier, image: torch.Tensor, label: int, eps, steps, **pgd_options) -> AttackGrid:
    """Run PGD on one image (C, H, W) for every radius in ``eps`` and step count in ``steps`` (tuples once checked)."""
    x = image.expand(len(eps), *image.shape)  # every radius at once, one row each
    y = torch.full((len(eps),), label, device=image.device)
    images = torch.stack([pgd(f, x, y, torch.tensor(eps), steps=s, **pgd_options) for s in steps], 1)
    with torch.no_grad():
        probabilities = f(images.flatten(0, 1)).softmax(1).view(len(eps), len(steps), -1)
    return AttackGrid(image, label, eps, steps, images.cpu(), probabilities.cpu())


def plot_attack(grid: AttackGrid, eps: float, steps: int) -> plt.Figure:
    """Image, perturbation, perturbed image and the classifier's probabilities for one (eps, steps)."""
    e, s = grid.eps.index(eps), grid.steps.index(steps)
    adv, probs = grid.images[e, s, 0].numpy(), grid.probabilities[e, s]
    delta = adv - grid.image[0].cpu().numpy()
    fig, axes = plt.subplots(1, 4, figsize=(12, 2.8), layout="constrained")
    axes[0].imshow(grid.image[0].cpu().numpy(), cmap="gray_r", vmin=0, vmax=1)
    axes[0].set_title(f"clean, label {grid.label}")
    bound = max(float(abs(delta).max()), 1e-3)
    axes[1].imshow(delta, cmap="RdBu", vmin=-bound, vmax=bound)
    axes[1].set_title(f"perturbation, max |delta| = {float(abs(delta).max()):.2f}")
    pred = int(probs.argmax())
    axes[2].imshow(adv, cmap="gray_r", vmin=0, vmax=1)
    axes[2].set_title(f"perturbed: predicted {pred} ({float(probs[pred]):.2f})")
    for ax in axes[:3]:
        ax.set(xticks=[], yticks=[], xlabel="28 pixels")
    # The true class blue, a wrong prediction orange, the others grey (the course's colour-blind-safe cycle).
    colours = ["C0" if k == grid.label else "C1" if k == pred else "C2" for k in range(len(probs))]
    axes[3].bar(range(len(probs)), probs.numpy(), color=colours)
    axes[3].set(xlabel="class", ylabel="probability", ylim=(0, 1), xticks=range(len(probs)), title="classifier output")
    fig.suptitle(f"PGD, L-infinity eps = {eps:g}, {steps} steps")
    return fig
