"""Self-checks for lab 00_introduction."""
from .. import clients
from ..runtime import rand, randn
from . import Mistake, self_check


@self_check(
    clients.weighted_average,
    mistakes=[
        Mistake(lambda X, weights: (weights[:, None] * X).sum(0), "the weighted sum is not divided by the weights' sum",
                "divide by weights.sum(): the weights are not normalized"),
        Mistake(lambda X, weights: X.mean(0), "the weights are ignored (a plain mean)",
                "multiply each row X[i] by weights[i] before summing: weights[:, None] * X"),
        Mistake(lambda X, weights: (weights[:, None] * X).sum(0) / len(weights), "divided by n, not by the weights' sum",
                "a weighted mean divides by sum(weights), which is n only when every weight is 1"),
    ],
)  # fmt: skip
def weighted_average(gen):
    """X (n, d) and weights (n,): positive, not normalized, once summing to 1; n > 1 first, where
    dividing by n and not dividing at all differ."""
    shapes = [(3, 4), (1, 1), (5, 2), (10, 7), (4, 1), (2, 50)]
    cases = [dict(X=randn(n, d, gen=gen), weights=0.1 + 3 * rand(n, gen=gen)) for n, d in shapes]
    w = rand(6, gen=gen)
    cases.append(dict(X=randn(6, 3, gen=gen), weights=w / w.sum()))
    return cases
