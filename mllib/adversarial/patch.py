"""A universal adversarial patch (Brown et al. 2017): one sticker, pasted anywhere, forces a class."""
import torch
import torch.nn.functional as F

from ..constraints import Function, Generator, Indices, Integer, Real, Rule, Tensor, constrain
from ..runtime import rand
from .attacks import BATCH, IMAGES, Classifier

IMAGE_BATCH = Tensor(4, description="a batch of images (B, C, H, W)")
PATCH = Tensor(3, description="a patch (C, s, s)")
TARGET = Integer(min=0)  # the class the patch forces


@constrain(x=IMAGE_BATCH, patch=PATCH, rows=Indices(), cols=Indices())
def apply_patch(x: torch.Tensor, patch: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Paste ``patch`` (C, s, s) over each image x_i (C, H, W) with its top-left corner at (rows_i, cols_i).

    Differentiable in the patch; x is not modified. Returns (B, C, H, W).
    """
    s, (h, w) = patch.shape[-1], x.shape[-2:]
    if not ((0 <= rows) & (rows <= h - s) & (0 <= cols) & (cols <= w - s)).all():
        raise ValueError(f"patch positions must keep the {s}x{s} patch inside the {h}x{w} image")
    i = torch.arange(h, device=x.device).view(1, h, 1) - rows.view(-1, 1, 1)  # (B, H, 1)
    j = torch.arange(w, device=x.device).view(1, 1, w) - cols.view(-1, 1, 1)  # (B, 1, W)
    inside = ((i >= 0) & (i < s) & (j >= 0) & (j < s)).unsqueeze(1)  # (B, 1, H, W)
    pasted = patch[:, i.clamp(0, s - 1), j.clamp(0, s - 1)].transpose(0, 1)  # (B, C, H, W)
    return torch.where(inside, pasted, x)


@constrain(Rule("size", lambda size, image: size <= image, "size must be <= image={image}, got {size}"),
           n=Integer(min=0), size=Integer(min=1), image=Integer(min=1), gen=Generator())  # fmt: skip
def random_positions(n: int, size: int, image: int, gen: torch.Generator, device=None):
    """(n,) rows and (n,) columns, uniform among the positions that keep the patch inside."""
    rc = torch.randint(0, image - size + 1, (2, n), generator=gen).to(device or "cpu")
    return rc[0], rc[1]


@constrain(Rule("size", lambda x, size: size <= x.shape[-2],
                lambda x, size: f"size must be <= the image height {x.shape[-2]}, got {size}"),
           f=Function(), x=IMAGE_BATCH, target=TARGET, size=Integer(min=1), steps=Integer(min=1), lr=Real(gt=0),
           batch_size=BATCH, gen=Generator())  # fmt: skip
def universal_patch(
    f: Classifier,
    x: torch.Tensor,
    target: int,
    *,
    size: int,
    steps: int,
    lr: float,
    batch_size: int,
    gen: torch.Generator,
) -> torch.Tensor:
    """A square patch that, pasted anywhere on any image, pushes f's prediction to ``target``.

    Expectation over transformations (here: every position): at each step draw a
    minibatch of images and a random position per image, and take an Adam step on
    p to lower mean_i L(f(A(p, x_i, pos_i)), target), then clip p to [0, 1].
    Brown et al. also draw rotations and scales; on 28 x 28 digits positions suffice.

    Args:
        f: classifier; x: (N, C, H, W) images to draw from; target: the class to force.
        size: side of the square patch in pixels; steps, lr, batch_size: the optimization.
        gen: CPU generator for the start patch, the minibatches and the positions.

    Returns:
        (C, size, size) the patch, values in [0, 1].

    Raises:
        ValueError: for a size outside (0, H] or steps < 1.

    Reference: Brown, Mane, Roy, Abadi and Gilmer 2017, "Adversarial patch", arXiv:1712.09665, Eq. (1).
    """
    c, h, _ = x.shape[1:]
    patch = rand(c, size, size, gen=gen, device=x.device).requires_grad_(True)
    optimizer = torch.optim.Adam([patch], lr=lr)
    targets = torch.full((batch_size,), target, device=x.device)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen).to(x.device)
        rows, cols = random_positions.__wrapped__(batch_size, size, h, gen, x.device)  # every step: checked once above
        loss = F.cross_entropy(f(apply_patch.__wrapped__(x[idx], patch, rows, cols)), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            patch.clamp_(0, 1)
    return patch.detach()


@constrain(**IMAGES, patch=PATCH, target=TARGET, gen=Generator())
@torch.no_grad()
def patch_success(
    f: Classifier, x: torch.Tensor, y: torch.Tensor, patch: torch.Tensor, target: int, gen: torch.Generator
) -> float:
    """Share of the images not of class ``target`` that f labels ``target`` once the patch
    is pasted at a random position."""
    keep = y != target
    rows, cols = random_positions(int(keep.sum()), patch.shape[-1], x.shape[-2], gen, x.device)
    return float((f(apply_patch(x[keep], patch, rows, cols)).argmax(1) == target).float().mean())
