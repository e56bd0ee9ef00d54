"""Zero-order optimization: gradients from function values only.

Every function here takes rows: f maps (m, d) points to (m,) values, and the estimators
return one gradient estimate per row of x (n, d). Used for black-box objectives such as a
validation loss as a function of hyperparameters.
"""
from collections.abc import Callable

import torch

from ..constraints import Function, Generator, Integer, Real, Rule, Tensor, constrain

Objective = Callable[[torch.Tensor], torch.Tensor]


POINTS = Tensor(2, description="points of shape (n, d)")


@constrain(f=Function(), x=POINTS, h=Real(gt=0))
def finite_difference_gradient(f: Objective, x: torch.Tensor, h: float = 1e-3) -> torch.Tensor:
    """Central finite differences along every coordinate: 2d evaluations per row.

    g_j = (f(x + h e_j) - f(x - h e_j)) / (2h); for a quadratic the error is zero up to rounding.

    Args:
        f: objective, (m, d) -> (m,).
        x: (n, d) points.
        h: step > 0.

    Returns:
        (n, d) gradient estimates.

    Raises:
        ValueError: if h <= 0 or x is not 2-D.
    """
    n, d = x.shape
    E = h * torch.eye(d, dtype=x.dtype, device=x.device)  # (d, d)
    plus = f((x.unsqueeze(1) + E).reshape(n * d, d)).view(n, d)
    minus = f((x.unsqueeze(1) - E).reshape(n * d, d)).view(n, d)
    return (plus - minus) / (2 * h)


@constrain(f=Function(), x=POINTS, mu=Real(gt=0), gen=Generator(), samples=Integer(min=1))
def gaussian_smoothing_gradient(f: Objective, x: torch.Tensor, mu: float, gen: torch.Generator,
                                samples: int = 1) -> torch.Tensor:  # fmt: skip
    """The Gaussian-smoothing gradient estimator (Nesterov and Spokoiny 2017, eq. (30)).

    g = 1/S sum_s (f(x + mu u_s) - f(x)) / mu * u_s, u_s ~ N(0, I_d): an unbiased estimate of
    the gradient of the smoothed function f_mu(x) = E_u f(x + mu u); for a quadratic
    f_mu = f + const, so it is unbiased for grad f itself. Costs S + 1 evaluations per row.

    Args:
        f: objective, (m, d) -> (m,).
        x: (n, d) points.
        mu: smoothing radius > 0.
        gen: CPU generator for the directions.
        samples: S >= 1 directions per row.

    Returns:
        (n, d) gradient estimates.

    Raises:
        ValueError: if mu <= 0, samples < 1 or x is not 2-D.
    """
    n, d = x.shape
    u = torch.randn(n, samples, d, generator=gen, dtype=x.dtype).to(x.device)  # (n, S, d)
    return smoothing_estimate.__wrapped__(f, x, mu, u)


@constrain(Rule("u", lambda x, u: u.shape[0] == x.shape[0] and u.shape[2] == x.shape[1],
                "u must have shape (n, S, d) for x of shape (n, d) = {x.shape}, got {u.shape}"),
           f=Function(), x=POINTS, mu=Real(gt=0), u=Tensor(3))  # fmt: skip
def smoothing_estimate(f: Objective, x: torch.Tensor, mu: float, u: torch.Tensor) -> torch.Tensor:
    """The Gaussian-smoothing estimate for given directions u (n, S, d):
    g_i = 1/S sum_s (f(x_i + mu u_is) - f(x_i)) / mu * u_is. Returns (n, d)."""
    n, samples, d = u.shape
    fx = f(x)  # (n,)
    f_moved = f((x.unsqueeze(1) + mu * u).reshape(n * samples, d)).view(n, samples)  # (n, S)
    return (((f_moved - fx.unsqueeze(1)) / mu).unsqueeze(-1) * u).mean(1)


DESCENT = dict(steps=Integer(min=0), lr=Real(gt=0))


@constrain(f=Function(), x0=POINTS, **DESCENT, mu=Real(gt=0), gen=Generator(), samples=Integer(min=1))
def zo_sgd(f: Objective, x0: torch.Tensor, *, steps: int, lr: float, mu: float, gen: torch.Generator,
           samples: int = 1) -> torch.Tensor:  # fmt: skip
    """Zero-order SGD: x <- x - lr * g_mu(x) with the Gaussian-smoothing estimator.

    Nesterov and Spokoiny 2017, method (39) ("RG_mu"), whose step h = 1/(4(d+4)L) makes
    it need about d times the iterations of gradient descent.

    Args:
        f: objective, (m, d) -> (m,).
        x0: (n, d) starting points (n independent runs).
        steps, lr: number of steps >= 0 and step size > 0.
        mu, gen, samples: as in ``gaussian_smoothing_gradient``.

    Returns:
        (steps + 1, n) values f(x_t) along the runs.
    """
    estimate = gaussian_smoothing_gradient.__wrapped__  # checked once here, not at every step
    return _descend(f, x0, steps, lr, lambda x: estimate(f, x, mu, gen, samples))


@constrain(f=Function(), grad=Function(), x0=POINTS, **DESCENT)
def gradient_descent(f: Objective, grad: Callable, x0: torch.Tensor, *, steps: int, lr: float) -> torch.Tensor:
    """First-order baseline: x <- x - lr * grad f(x). Returns (steps + 1, n) values f(x_t)."""
    return _descend(f, x0, steps, lr, grad)


def _descend(f, x0, steps, lr, direction) -> torch.Tensor:
    x, values = x0, [f(x0)]
    for _ in range(steps):
        x = x - lr * direction(x)
        values.append(f(x))
    return torch.stack(values)


@constrain(values=Tensor(2), target=Real())
def steps_to_reach(values: torch.Tensor, target: float) -> torch.Tensor:
    """First step t with values[t] <= target, per run: (steps + 1, n) -> (n,); len(values) if never."""
    below = values <= target
    first = below.float().argmax(0)
    return torch.where(below.any(0), first, torch.full_like(first, len(values)))


@constrain(curvatures=Tensor(1, finite=True))
def quadratic(curvatures: torch.Tensor) -> tuple[Objective, Callable]:
    """f(x) = 1/2 sum_j a_j x_j^2 and its gradient, for rows x (m, d); L = max a_j."""
    return (lambda x: 0.5 * (curvatures * x * x).sum(-1)), (lambda x: curvatures * x)


@constrain(log10_lambda=Tensor(2, finite=True), x_train=Tensor(2), y_train=Tensor(1), x_val=Tensor(2), y_val=Tensor(1))
def ridge_validation_loss(log10_lambda: torch.Tensor, x_train, y_train, x_val, y_val) -> torch.Tensor:
    """Validation mean squared error of ridge regression, as a black box of log10(lambda).

    w(lambda) = (A^T A + lambda I)^-1 A^T y on the training set; log10_lambda (m, 1) -> (m,).
    """
    d = x_train.shape[1]
    lam = 10.0 ** log10_lambda.squeeze(1)  # (m,)
    gram = x_train.T @ x_train  # (d, d)
    w = torch.linalg.solve(gram + lam[:, None, None] * torch.eye(d, dtype=gram.dtype), x_train.T @ y_train)  # (m, d)
    return ((x_val @ w.T - y_val[:, None]) ** 2).mean(0)
