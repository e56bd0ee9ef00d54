"""Adaptive methods as learned step sizes: SGD, AdaGrad, Adam and hypergradient descent.

Each optimizer acts on a matrix X (n, d) of n independent runs and returns the next X
without touching its input; its state (moments, learned step sizes) lives on the object.
"""
import torch

from ..constraints import Function, Instance, Integer, Real, Reals, Rule, Tensor, constrain

LR = Real(gt=0)


class SGD:
    """x <- x - lr * g, the baseline."""

    @constrain(lr=LR)
    def __init__(self, lr: float):
        self.lr = lr
        # State
        self.t = 0

    def step(self, X: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
        self.t += 1
        return X - self.lr * G

    def state_dict(self) -> dict:
        return {"t": self.t}


class AdaGrad(SGD):
    """AdaGrad (Duchi, Hazan and Singer 2011): s <- s + g^2; x <- x - lr * g / (sqrt(s) + eps)."""

    @constrain(lr=LR, eps=Real(gt=0))
    def __init__(self, lr: float, eps: float = 1e-8):
        super().__init__(lr)
        self.eps = eps
        # State
        self.s = None

    def step(self, X, G):
        self.t += 1
        self.s = G * G if self.s is None else self.s + G * G  # (n, d)
        return X - self.lr * G / (self.s.sqrt() + self.eps)

    def state_dict(self):
        return {"t": self.t, "s": self.s}


class Adam(SGD):
    """Adam (Kingma and Ba 2015, Algorithm 1): m, v moving averages of g and g^2 with bias correction;
    x <- x - lr * m_hat / (sqrt(v_hat) + eps)."""

    @constrain(Rule("betas", lambda betas: len(betas) == 2, "betas must be two numbers (beta1, beta2), got {betas}"),
               lr=LR, betas=Reals(ge=0, lt=1), eps=Real(gt=0))  # fmt: skip
    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(lr)
        self.betas, self.eps = betas, eps
        # State
        self.m = self.v = None

    def step(self, X, G):
        b1, b2 = self.betas
        self.t += 1
        self.m = (1 - b1) * G if self.m is None else b1 * self.m + (1 - b1) * G  # (n, d)
        self.v = (1 - b2) * G * G if self.v is None else b2 * self.v + (1 - b2) * G * G
        m_hat, v_hat = self.m / (1 - b1**self.t), self.v / (1 - b2**self.t)
        return X - self.lr * m_hat / (v_hat.sqrt() + self.eps)

    def state_dict(self):
        return {"t": self.t, "m": self.m, "v": self.v}


class HypergradientSGD(SGD):
    """SGD with hypergradient descent on its learning rate (Baydin et al. 2018, arXiv:1703.04782, SGD-HD).

    Update, per run: alpha_t = alpha_{t-1} + beta * g_t . g_{t-1} (a gradient step on alpha,
    since d f(x_{t-1}) / d alpha = -g_t . g_{t-1}); then x_t = x_{t-1} - alpha_t g_t.

    Args:
        lr: the initial learning rate alpha_0 > 0.
        hyper_lr: beta >= 0, the learning rate of the learning rate.
    """

    @constrain(lr=LR, hyper_lr=Real(ge=0))
    def __init__(self, lr: float, hyper_lr: float):
        super().__init__(lr)
        self.hyper_lr = hyper_lr
        # State
        self.alpha = None  # (n,) each run's current learning rate
        self.previous = None  # (n, d) the previous gradient

    def step(self, X, G):
        self.t += 1
        if self.alpha is None:
            self.alpha = torch.full((len(X),), self.lr, dtype=X.dtype, device=X.device)
        if self.previous is not None:
            self.alpha = self.alpha + self.hyper_lr * (G * self.previous).sum(1)
        self.previous = G
        return X - self.alpha.unsqueeze(1) * G

    def state_dict(self):
        return {"t": self.t, "alpha": self.alpha, "previous": self.previous}


@constrain(loss=Function(), grad=Function(), X0=Tensor(2), optimizer=Instance(SGD), steps=Integer(min=0))
def optimize(loss, grad, X0: torch.Tensor, optimizer: SGD, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``optimizer`` for ``steps`` steps; returns (losses (steps + 1, n), final X (n, d)).

    loss: (n, d) -> (n,); grad: (n, d) -> (n, d).
    """
    X, losses = X0, [loss(X0)]
    for _ in range(steps):
        X = optimizer.step(X, grad(X))
        losses.append(loss(X))
    return torch.stack(losses), X
