"""Tiny models, and ``FlatModel``: a model's parameters as one row of the client matrix.

A client matrix X of shape (n, d) holds n models; ``FlatModel`` evaluates all of them at
once on their own minibatches and returns their gradients as another (n, d) matrix.
"""
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from .constraints import Instance, Integer, constrain

ELEMENTWISE = {nn.ReLU: torch.relu, nn.Tanh: torch.tanh, nn.Sigmoid: torch.sigmoid, nn.Identity: lambda h: h}
# Each activation's derivative, written in terms of its output.
DERIVATIVE = {
    nn.Tanh: lambda out: 1 - out * out,
    nn.Sigmoid: lambda out: out * (1 - out),
    nn.Identity: lambda out: torch.ones_like(out),
}


SIZES = dict(in_features=Integer(min=1), n_classes=Integer(min=1))


@constrain(**SIZES)
def logistic_regression(in_features: int, n_classes: int) -> nn.Sequential:
    """Multinomial logistic regression: a single linear layer on the flattened input."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, n_classes))


@constrain(**SIZES, hidden=Instance(tuple, list, description="a tuple of layer widths"))
def mlp(in_features: int, n_classes: int, hidden: tuple[int, ...] = (64,)) -> nn.Sequential:
    """A ReLU multi-layer perceptron on the flattened input."""
    sizes = (in_features, *hidden)
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], n_classes))


@constrain(image_size=Integer(min=4), n_classes=Integer(min=1), channels=Instance(tuple, list))
def cnn(image_size: int, n_classes: int, channels: tuple[int, int] = (8, 16)) -> nn.Sequential:
    """Two 3x3 convolution + ReLU + 2x2 max-pool blocks and a linear classifier, for (1, H, H) images."""
    c1, c2 = channels
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * side * side, n_classes),
    )  # fmt: skip


def per_client_loss(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean loss of each client's minibatch: (n, B, C) logits and (n, B) labels -> (n,).

    Integer labels get the cross-entropy; float targets the squared error 1/2 (out - y)^2
    of a single output.
    """
    if y.dtype.is_floating_point:
        return 0.5 * (outputs.squeeze(-1) - y).pow(2).mean(-1)
    n, b, c = outputs.shape
    return F.cross_entropy(outputs.reshape(n * b, c), y.reshape(n * b), reduction="none").view(n, b).mean(-1)


def loss_gradient(outputs: torch.Tensor, y: torch.Tensor, *, mean: bool = True) -> torch.Tensor:
    """The gradient of ``per_client_loss`` with respect to the outputs, (n, B, C).

    Per sample: softmax(out) - onehot(y) for integer labels, out - y for float targets;
    divided by the batch size B when ``mean`` (the loss is a mean over the batch).
    """
    if y.dtype.is_floating_point:
        d = outputs - y.unsqueeze(-1)
    else:  # exp-normalize by hand: torch.softmax is slow on a last axis of 10
        d = (outputs - outputs.amax(-1, keepdim=True)).exp_()
        d /= d.sum(-1, keepdim=True)
        d.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(d[..., :1], -1.0))
    return d.div_(y.shape[1]) if mean else d  # d is new in either branch: divide in place


class FlatModel:
    """The bridge between an ``nn.Module`` and the rows of a client matrix.

    Row layout: the module's parameters flattened in ``named_parameters()`` order.
    Sequential stacks of Flatten/Linear/ReLU/Tanh/Sigmoid run as batched matrix products
    over the clients (``torch.baddbmm``); any other module runs through
    ``vmap(functional_call)``. Both give each client's result on its own parameters.
    """

    @constrain(module=Instance(nn.Module, description="a torch.nn.Module (mllib.mlp(64, 10), say)"))
    def __init__(self, module: nn.Module):
        self.module = module
        params = dict(module.named_parameters())
        self.names = list(params)
        self.shapes = [p.shape for p in params.values()]
        self.sizes = [p.numel() for p in params.values()]
        self.dim = sum(self.sizes)
        self._initial = torch.cat([p.detach().flatten().cpu() for p in params.values()])
        self._batched_layers = _batched_layers(module)

    def __repr__(self) -> str:
        return f"FlatModel({type(self.module).__name__}, d={self.dim})"

    def init(self, gen: torch.Generator, device: torch.device | None = None) -> torch.Tensor:
        """A fresh row (d,): weights and biases of layers with a weight matrix uniform in
        +-1/sqrt(fan_in), as PyTorch's default initialization, drawn from ``gen``; other
        parameters (norm scales, ...) keep the module's values."""
        row = self._initial.clone()
        start = 0
        fan_in = {}
        for name, shape, size in zip(self.names, self.shapes, self.sizes):
            layer, _, kind = name.rpartition(".")
            if kind == "weight" and len(shape) >= 2:
                fan_in[layer] = math.prod(shape[1:])
            if layer in fan_in:
                bound = 1.0 / math.sqrt(fan_in[layer])
                row[start : start + size] = (2 * torch.rand(size, generator=gen) - 1) * bound
            start += size
        return row.to(device or "cpu")

    def flatten(self, module: nn.Module) -> torch.Tensor:
        """The row (d,) of a module with this architecture."""
        return torch.cat([p.detach().flatten() for p in module.parameters()])

    def load(self, module: nn.Module, row: torch.Tensor) -> nn.Module:
        """Copy a row (d,) into ``module``'s parameters; returns the module."""
        self._check(row.unsqueeze(0))
        with torch.no_grad():
            for p, chunk in zip(module.parameters(), row.split(self.sizes)):
                p.copy_(chunk.view_as(p))
        return module

    def unflatten(self, X: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of a client matrix (n, d) as parameters with a leading client axis."""
        self._check(X)
        return self._views(X)

    def _views(self, X: torch.Tensor) -> dict[str, torch.Tensor]:
        """``unflatten`` unchecked, for the training loops' every step."""
        n = X.shape[0]
        return {
            name: chunk.view(n, *shape) for name, shape, chunk in zip(self.names, self.shapes, X.split(self.sizes, 1))
        }

    def forward(self, X: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Client i's model applied to its inputs: X (n, d), x (n, B, ...) -> (n, B, outputs)."""
        params = self.unflatten(X)
        if len(x) != len(X):
            raise ValueError(f"x has {len(x)} client batches but the client matrix has {len(X)} rows")
        if self._batched_layers is None:
            return vmap(lambda p, xi: functional_call(self.module, p, (xi,)))(params, x)
        h = x
        for layer in self._batched_layers:
            h = self._apply(layer, params, h)
        return h

    def loss(self, X: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each client's mean minibatch loss, (n,)."""
        return per_client_loss(self.forward(X, x), y)

    def grad(self, X: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each client's minibatch gradient at its own row: (n, d).

        Clients are independent, so the gradient of the summed losses with respect to X
        holds in row i exactly client i's gradient. Batched layer stacks are
        back-propagated by hand with batched matrix products (no autograd graph: about
        twice as fast at this size); other modules go through autograd.
        """
        if self._batched_layers is not None:
            return self._backprop(X, x, y)
        X = X.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(self.loss(X, x, y).sum(), X)
        return g

    @torch.no_grad()
    def _backprop(self, X: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        grads = {}
        for name, inputs, output_grad in self._linear_backprop(X, x, lambda out: loss_gradient(out, y)):
            grads[f"{name}.weight"] = torch.bmm(output_grad.transpose(1, 2), inputs)  # (n, out, in)
            grads[f"{name}.bias"] = output_grad.sum(1)  # (n, out)
        # one cat, not copies into an empty G: deterministic mode fills every empty tensor with NaN first
        return torch.cat([grads[name].flatten(1) for name in self.names], 1)  # (n, d)

    @torch.no_grad()
    def linear_backprop(
        self, X: torch.Tensor, x: torch.Tensor, output_grad: Callable[[torch.Tensor], torch.Tensor]
    ) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """Back-propagate by hand through a Flatten/Linear/activation stack, for every client.

        A linear layer's weight gradient for one sample is g a^T, with a the layer's input and g
        the gradient of its output: callers combine these (sums for ``grad``; per-sample norms
        for DP-SGD's ghost clipping).

        Args:
            X: (n, d) client matrix; x: (n, B, ...) inputs.
            output_grad: maps the network's outputs (n, B, C) to the loss gradient with respect
                to them, (n, B, C).

        Returns:
            For each linear layer, last first: (name, input a (n, B, in), output gradient g (n, B, out)).

        Raises:
            ValueError: if the module is not such a stack.
        """
        if self._batched_layers is None:
            raise ValueError(
                "hand-written backprop (and ghost clipping) needs an nn.Sequential of Flatten/Linear/"
                f"ReLU/Tanh/Sigmoid layers, got {type(self.module).__name__}; use the autograd or vmap path"
            )
        self._check(X)
        return self._linear_backprop(X, x, output_grad)

    def _linear_backprop(self, X, x, output_grad) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """``linear_backprop`` unchecked, for ``grad``'s every step."""
        params = self._views(X)
        h, trace = x, []
        for layer in self._batched_layers:  # forward, keeping each layer's input and output
            out = self._apply(layer, params, h)
            trace.append((layer, h, out))
            h = out
        d = output_grad(h)
        first_linear = next(i for i, ((kind, _), _, _) in enumerate(trace) if kind == "linear")
        found = []
        for i in range(len(trace) - 1, first_linear - 1, -1):
            (kind, name), inputs, out = trace[i]
            if kind == "linear":
                found.append((name, inputs, d))
                if i > first_linear:
                    d = torch.bmm(d, params[f"{name}.weight"])  # (n, B, in)
            elif kind == "flatten":
                d = d.reshape(inputs.shape)
            elif kind is nn.ReLU:
                d = torch.ops.aten.threshold_backward(d, out, 0)  # one fused pass: d * (out > 0)
            else:
                d = d * DERIVATIVE[kind](out)
        return found

    @staticmethod
    def _apply(layer: tuple, params: dict[str, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
        kind, name = layer
        if kind == "flatten":
            return h.flatten(2)  # (n, B, features)
        if kind == "linear":  # h W^T + b for every client at once
            return torch.baddbmm(params[f"{name}.bias"].unsqueeze(1), h, params[f"{name}.weight"].transpose(1, 2))
        return ELEMENTWISE[kind](h)

    @torch.no_grad()
    def accuracy(
        self, X: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Each client's (weighted) accuracy on its inputs: x (n, M, ...), y (n, M) -> (n,).

        ``weights`` (n, M) with rows summing to 1 reweight the samples (per-client test
        distributions); by default every sample counts the same.
        """
        correct = (self.forward(X, x).argmax(-1) == y).float()
        return correct.mean(1) if weights is None else (correct * weights).sum(1)

    def _check(self, X: torch.Tensor) -> None:
        if X.dim() != 2 or X.shape[1] != self.dim:
            raise ValueError(f"client matrix must have shape (n_clients, {self.dim}), got {tuple(X.shape)}")


def _batched_layers(module: nn.Module) -> list[tuple] | None:
    """The layer list for the batched-matmul path, or None if the module needs vmap."""
    if not isinstance(module, nn.Sequential):
        return None
    layers = []
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and child.bias is not None:
            layers.append(("linear", name))
        elif type(child) in ELEMENTWISE:
            layers.append((type(child), name))
        elif isinstance(child, nn.Flatten) and child.start_dim == 1 and child.end_dim == -1:
            layers.append(("flatten", name))
        else:
            return None
    return layers
