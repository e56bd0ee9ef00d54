"""Figures behind the lecture's widgets: each is a pure function of precomputed results."""
import matplotlib.pyplot as plt
import torch

from ..constraints import Real, Tensor, constrain
from .dp import CLIP, SIGMA, clip_factors


@constrain(norms=Tensor(1), clip=CLIP, sigma=SIGMA, batch=Real(gt=0))
def clip_noise_summary(norms: torch.Tensor, clip: float, sigma: float, batch: int) -> dict[str, float]:
    """How clipping and noise change one DP-SGD gradient.

    Args:
        norms: (B,) per-sample gradient norms; clip: C; sigma: noise multiplier; batch: expected batch size L.

    Returns:
        clipped: share of samples whose gradient is scaled down; kept: mean share of the
        gradient norm kept, mean of min(1, C/||g_i||); noise_std: sigma C / L, the noise
        std per coordinate of the averaged gradient.
    """
    factors = clip_factors(norms, clip)
    return {
        "clipped": float((factors < 1).float().mean()),
        "kept": float(factors.mean()),
        "noise_std": sigma * clip / batch,
    }


def plot_clip_noise(norms: torch.Tensor, clip: float, sigma: float, batch: int, epsilon: float):
    """Histogram of per-sample gradient norms with the clipping norm C, titled with epsilon and the noise."""
    s = clip_noise_summary(norms, clip, sigma, batch)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(norms.cpu().numpy(), bins=40)
    ax.axvline(clip, color="r", ls="--", label=f"C = {clip:g}")
    ax.set(xlabel="per-sample gradient norm", ylabel="samples",
           title=f"sigma={sigma:g}: epsilon={epsilon:.2f}, {s['clipped']:.0%} clipped, noise std {s['noise_std']:.3f}")  # fmt: skip
    ax.legend()
    return fig


def plot_tradeoff(epsilons: list[float], accuracy: torch.Tensor, auc: torch.Tensor, selected: float):
    """Accuracy and membership AUC against epsilon (log axis); the non-private value as a dashed line.

    Args:
        epsilons: inf first, then the budgets; accuracy (k,) and auc (k, seeds) in the same order.
        selected: the epsilon to highlight.
    """
    eps = epsilons[1:]
    accuracy = accuracy.cpu().numpy()
    mean, spread = auc.mean(1).cpu().numpy(), auc.std(1).cpu().numpy()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
    left.semilogx(eps, accuracy[1:], "o-", label="DP-SGD")
    left.axhline(float(accuracy[0]), color="k", ls="--", label="no DP")
    right.errorbar(eps, mean[1:], yerr=spread[1:], fmt="o-", capsize=3, label="DP-SGD")
    right.axhline(float(mean[0]), color="k", ls="--", label="no DP")
    right.axhline(0.5, color="gray", ls=":", label="guessing")
    i = epsilons.index(selected)
    left.plot([selected], [float(accuracy[i])], "r*", ms=14)
    right.plot([selected], [float(mean[i])], "r*", ms=14)
    left.set(xlabel="epsilon (delta = 1e-5)", ylabel="test accuracy", title="utility")
    right.set(xlabel="epsilon (delta = 1e-5)", ylabel="membership AUC", title="loss-threshold attack")
    left.legend(), right.legend()
    fig.suptitle(f"epsilon = {selected:g}: accuracy {float(accuracy[i]):.2f}, attack AUC {float(mean[i]):.2f}")
    return fig


def plot_reconstructions(original: torch.Tensor, images: dict[str, torch.Tensor], errors: dict[str, float]):
    """The original digit next to each reconstruction, titled with its mean squared error."""
    fig, axes = plt.subplots(1, len(images) + 1, figsize=(2 * (len(images) + 1), 2.8), layout="constrained")
    axes[0].imshow(original.reshape(original.shape[-2:]).cpu().numpy(), cmap="gray_r", vmin=0, vmax=1)
    axes[0].set(title="original", xticks=[], yticks=[])
    for ax, (name, image) in zip(axes[1:], images.items()):
        ax.imshow(image.clamp(0, 1).reshape(image.shape[-2:]).cpu().numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set(title=f"{name}\nMSE {errors[name]:.3f}", xticks=[], yticks=[])
    fig.suptitle("DLG gradient inversion (pixel values in [0, 1])")
    return fig
