"""Architecture search over MLP depth and width, with and without warm start.

Warm start uses function-preserving transformations (Net2Net, Chen, Goodfellow and Shlens
2016, arXiv:1511.05641): a child architecture inherits its parent's trained weights and starts by computing
exactly the parent's function. Rows of X (n, d) are independent runs (seeds).
"""
import torch

from ..constraints import Generator, Instance, Integer, Real, Reals, Rule, Tensor, constrain
from ..data import Dataset
from ..models import FlatModel, mlp


def _layers(X: torch.Tensor, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Split rows (n, d) of an MLP with layer sizes [in, h1, ..., out] into (W (n, out, in), b (n, out))."""
    out, start = [], 0
    for a, b in zip(sizes, sizes[1:]):
        W = X[:, start : start + a * b].reshape(len(X), b, a)
        start += a * b
        out.append((W, X[:, start : start + b]))
        start += b
    if start != X.shape[1]:
        raise ValueError(f"X has {X.shape[1]} columns, the MLP with sizes {sizes} has {start} parameters")
    return out


def _rows(layers) -> torch.Tensor:
    return torch.cat([t.flatten(1) for W, b in layers for t in (W, b)], 1)


SIZES = Reals(ge=1)  # [in, h_1, ..., out]
HIDDEN = Rule("layer", lambda sizes, layer: 1 <= layer <= len(sizes) - 2,
              lambda sizes, layer: f"layer must index a hidden layer, 1..{len(sizes) - 2}, got {layer}")


@constrain(HIDDEN, Rule("width", lambda sizes, layer, width: width >= sizes[layer],
                        lambda sizes, layer, width: f"width must be >= the current width {sizes[layer]:g}, got {width}"),
           X=Tensor(2), sizes=SIZES, layer=Integer(), width=Integer(min=1), gen=Generator(), noise=Real(ge=0))
def widen(X: torch.Tensor, sizes: list[int], layer: int, width: int, gen: torch.Generator,
          noise: float = 0.0) -> torch.Tensor:  # fmt: skip
    """Net2WiderNet (Chen et al. 2016, Section 2.1): widen hidden layer ``layer`` to ``width`` units.

    New unit j copies unit g(j) (g(j) = j for the old units, uniform at random otherwise):
    W'_l[j] = W_l[g(j)], b'_l[j] = b_l[g(j)], and the next layer's column j becomes
    W_{l+1}[:, g(j)] / |{j': g(j') = g(j)}|, so the output is unchanged. ``noise`` > 0 adds
    N(0, noise^2) to the copied incoming weights to break the symmetry (the paper's suggestion),
    at the price of exactness.

    Args:
        X: (n, d) rows of the MLP with layer sizes ``sizes`` = [in, h_1, ..., out].
        layer: index 1..len(sizes)-2 of the hidden layer in ``sizes``.
        width: the new width, at least the old one.

    Returns:
        (n, d') rows of the MLP with sizes[layer] = width.

    Raises:
        ValueError: for a layer that is not hidden or a width smaller than the old one.
    """
    sizes = [int(s) for s in sizes]
    old = sizes[layer]
    g = torch.cat([torch.arange(old), torch.randint(old, (width - old,), generator=gen)]).to(X.device)  # (width,)
    counts = torch.bincount(g, minlength=old).to(X.dtype)  # (old,)
    layers = _layers(X, sizes)
    (W, b), (W_next, b_next) = layers[layer - 1], layers[layer]
    W_new = W[:, g]  # (n, width, in)
    if noise > 0:
        W_new = W_new + noise * torch.randn(W_new.shape, generator=gen, dtype=X.dtype).to(X.device)
    layers[layer - 1] = (W_new, b[:, g])
    layers[layer] = (W_next[:, :, g] / counts[g], b_next)  # (n, out, width)
    return _rows(layers)


@constrain(HIDDEN, X=Tensor(2), sizes=SIZES, layer=Integer())
def deepen(X: torch.Tensor, sizes: list[int], layer: int) -> torch.Tensor:
    """Net2DeeperNet (Chen et al. 2016, Section 2.2): insert an identity layer after hidden layer ``layer``.

    The new layer h -> ReLU(I h + 0) = h is exact because h >= 0 after a ReLU.
    Returns rows of the MLP with sizes[:layer + 1] + [sizes[layer]] + sizes[layer + 1:].
    """
    sizes = [int(s) for s in sizes]
    layers = _layers(X, sizes)
    w = sizes[layer]
    eye = torch.eye(w, dtype=X.dtype, device=X.device).expand(len(X), w, w)
    layers.insert(layer, (eye, torch.zeros(len(X), w, dtype=X.dtype, device=X.device)))
    return _rows(layers)


@constrain(hidden=Reals(ge=1), gen=Generator(), max_width=Integer(min=1), max_depth=Integer(min=1))
def mutate(hidden: tuple[int, ...], gen: torch.Generator, max_width: int = 128, max_depth: int = 3):
    """A random child architecture: double one hidden layer's width or insert a copy of one.

    Returns (child hidden widths, ("widen" | "deepen", layer index in sizes)).
    """
    hidden = tuple(int(w) for w in hidden)
    options = [("widen", i + 1) for i, w in enumerate(hidden) if 2 * w <= max_width]
    if len(hidden) < max_depth:
        options += [("deepen", i + 1) for i in range(len(hidden))]
    if not options:
        return hidden, ("none", 0)
    kind, layer = options[int(torch.randint(len(options), (1,), generator=gen))]
    h = list(hidden)
    if kind == "widen":
        h[layer - 1] *= 2
    else:
        h.insert(layer, h[layer - 1])
    return tuple(h), (kind, layer)


def train_epochs(model: FlatModel, X: torch.Tensor, data: Dataset, *, epochs: int, lr: float, batch_size: int,
                 gen: torch.Generator) -> torch.Tensor:  # fmt: skip
    """Every row takes ``epochs`` epochs of SGD on the training set (its own shuffles). Returns (n, d)."""
    n, N = len(X), len(data.y_train)
    for _ in range(epochs):
        order = torch.argsort(torch.rand(n, N, generator=gen), 1).to(X.device)  # (n, N)
        for idx in order.split(batch_size, 1):
            X = X - lr * model.grad(X, data.x_train[idx], data.y_train[idx])
    return X


@constrain(data=Instance(Dataset), candidates=Integer(min=1), epochs_each=Integer(min=1), seeds=Integer(min=1),
           lr=Real(gt=0), batch_size=Integer(min=1), gen=Generator(), start=Reals(ge=1))  # fmt: skip
def architecture_search(data: Dataset, *, candidates: int, epochs_each: int, warm: bool, seeds: int, lr: float,
                        batch_size: int, gen: torch.Generator, start=(16,)) -> tuple[list, torch.Tensor]:  # fmt: skip
    """Random-walk architecture search: each candidate is a random mutation of the previous one,
    trained for ``epochs_each`` epochs, from scratch or (warm) from its parent's weights
    morphed by ``widen``/``deepen``. Equal compute: every candidate costs the same epochs.

    Returns:
        (the architectures, (seeds, candidates) validation accuracy of each candidate).
    """
    device = data.x_train.device
    arch_gen = torch.Generator().manual_seed(int(torch.randint(2**31, (1,), generator=gen)))
    hidden, archs, accs, X = tuple(int(w) for w in start), [], [], None
    xv = data.x_test.unsqueeze(0).expand(seeds, *data.x_test.shape)
    yv = data.y_test.unsqueeze(0).expand(seeds, -1)
    for c in range(candidates):
        model = FlatModel(mlp(data.n_features, data.n_classes, hidden=hidden))
        if X is None or not warm:
            X = torch.stack([model.init(gen, device) for _ in range(seeds)])
        X = train_epochs(model, X, data, epochs=epochs_each, lr=lr, batch_size=batch_size, gen=gen)
        archs.append(hidden)
        accs.append(model.accuracy(X, xv, yv).cpu())
        child, (kind, layer) = mutate(hidden, arch_gen)
        if warm and kind != "none":
            sizes = [data.n_features, *hidden, data.n_classes]
            X = widen(X, sizes, layer, 2 * hidden[layer - 1], gen, noise=1e-2) if kind == "widen" else deepen(X, sizes, layer)
        hidden = child
    return archs, torch.stack(accs, 1)
