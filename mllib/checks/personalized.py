"""Self-checks for lab 02_personalized_learning."""
from ..models import FlatModel, mlp
from ..personalized import training
from ..personalized.averaging import optimal_weight as _optimal_weight
from ..runtime import rand, randn
from . import self_check


@self_check(training.ditto_update)
def ditto_update(gen):
    """V (n, d), w (d,), G (n, d), lr, lam: lam = 0 (local SGD), moderate, and huge."""
    cases = []
    for (n, d), lr, lam in [((1, 1), 0.1, 0.0), ((3, 4), 0.5, 1.0), ((5, 2), 0.1, 10.0), ((4, 6), 0.05, 1e6),
                            ((2, 3), 1.0, 0.3), ((6, 5), 0.2, 3.0)]:  # fmt: skip
        cases.append(dict(V=randn(n, d, gen=gen), w=randn(d, gen=gen), G=randn(n, d, gen=gen), lr=lr, lam=lam))
    return cases


@self_check(_optimal_weight)
def optimal_weight(gen):
    """Per-client tensors var_own, n_own, var_other, n_other, bias (bias of both signs, and 0)."""
    cases = []
    for k in (1, 3, 5, 8):
        cases.append(dict(
            var_own=0.1 + 2 * rand(k, gen=gen), n_own=(1 + 20 * rand(k, gen=gen)).floor(),
            var_other=0.1 + 2 * rand(k, gen=gen), n_other=(1 + 200 * rand(k, gen=gen)).floor(),
            bias=randn(k, gen=gen),
        ))  # fmt: skip
    cases.append(dict(var_own=rand(4, gen=gen) + 0.5, n_own=rand(4, gen=gen).mul(10).ceil(),
                      var_other=rand(4, gen=gen), n_other=rand(4, gen=gen).mul(50).ceil(), bias=rand(4, gen=gen) * 0))
    return cases


@self_check(training.fine_tune_on)
def fine_tune(gen):
    """A small MLP (4 -> 5 -> 3), the global model w, T steps of n clients' batches (T = 0 too)."""
    model = FlatModel(mlp(4, 3, hidden=(5,)))
    cases = []
    for steps, n, batch, lr in [(0, 3, 2, 0.1), (1, 1, 4, 0.5), (3, 4, 5, 0.2), (5, 2, 3, 0.1), (2, 6, 2, 1.0)]:
        cases.append(dict(
            model=model, w=model.init(gen), xb=randn(steps, n, batch, 4, gen=gen),
            yb=(3 * rand(steps, n, batch, gen=gen)).long(), lr=lr,
        ))  # fmt: skip
    return cases
