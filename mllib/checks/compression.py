"""Self-checks for lab 04_communication_compression."""
from .. import compression
from ..runtime import rand, randn
from . import self_check


@self_check(compression.top_k)
def top_k(gen):
    """X (n, d) and k from 1 to d."""
    shapes = [(1, 1, 1), (1, 5, 2), (3, 8, 1), (4, 10, 3), (2, 6, 6), (5, 100, 7)]
    return [dict(X=randn(n, d, gen=gen), k=k) for n, d, k in shapes]


@self_check(compression.error_feedback_memory)
def error_feedback(gen):
    """U (n, d), the memory e (n, d) (zero once), k."""
    shapes = [(1, 4, 1), (3, 8, 2), (4, 10, 3), (2, 6, 6), (5, 50, 5)]
    cases = [dict(U=randn(n, d, gen=gen), error=randn(n, d, gen=gen), k=k) for n, d, k in shapes]
    cases.insert(0, dict(U=randn(3, 5, gen=gen), error=randn(3, 5, gen=gen) * 0, k=2))
    return cases


@self_check(compression.random_k)
def random_k(gen):
    """X (n, d), k, and the uniform numbers u (n, d) that choose the entries."""
    shapes = [(1, 1, 1), (1, 5, 2), (3, 8, 1), (4, 10, 3), (2, 6, 6), (5, 100, 7)]
    return [dict(X=randn(n, d, gen=gen), k=k, u=rand(n, d, gen=gen)) for n, d, k in shapes]


@self_check(compression.powersgd_step)
def powersgd_step(gen):
    """M (k, n, m) of k workers and Q (m, r)."""
    shapes = [(1, 3, 4, 1), (2, 5, 3, 2), (4, 8, 6, 2), (3, 10, 10, 3), (2, 6, 9, 4)]
    return [dict(M=randn(k, n, m, gen=gen), Q=randn(m, r, gen=gen)) for k, n, m, r in shapes]
