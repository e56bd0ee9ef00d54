"""Self-checks for lab 00_introduction."""
from .. import clients
from ..runtime import rand, randn
from . import self_check


@self_check(clients.weighted_average)
def weighted_average(gen):
    """X (n, d) and weights (n,): positive, not normalized, once summing to 1."""
    shapes = [(1, 1), (3, 4), (5, 2), (10, 7), (4, 1), (2, 50)]
    cases = [dict(X=randn(n, d, gen=gen), weights=0.1 + 3 * rand(n, gen=gen)) for n, d in shapes]
    w = rand(6, gen=gen)
    cases.append(dict(X=randn(6, 3, gen=gen), weights=w / w.sum()))
    return cases
