"""Self-checks for lab 04_communication_compression."""
import functools

import torch

from .. import compression
from ..models import FlatModel, mlp
from ..runtime import rand, randn
from . import Mistake, self_check


def _keep(X, idx, values=None):
    """X with only the entries ``idx`` (n, k) of each row kept (as ``values`` if given)."""
    return torch.zeros_like(X).scatter(1, idx, X.gather(1, idx) if values is None else values)


def _top_k_signed_values(X, k):
    return _keep(X, X.topk(k, dim=1).indices)


def _top_k_magnitudes(X, k):
    idx = X.abs().topk(k, dim=1).indices
    return _keep(X, idx, X.abs().gather(1, idx))


def _top_k_smallest(X, k):
    return _keep(X, X.abs().topk(k, dim=1, largest=False).indices)


@self_check(
    compression.top_k,
    mistakes=[
        Mistake(_top_k_signed_values, "this keeps the k largest values, not the largest magnitudes",
                "rank by |x|: X.abs().topk(k, dim=1), then take the signed values"),
        Mistake(_top_k_magnitudes, "the kept entries lost their signs",
                "choose by |x| but keep X's own values: X.gather(1, idx)"),
        Mistake(_top_k_smallest, "this keeps the k smallest magnitudes",
                "topk returns the largest by default (largest=True)"),
    ],
)  # fmt: skip
def top_k(gen):
    """X (n, d) and k from 1 to d; first a fixed row on which each mistake keeps other entries."""
    shapes = [(1, 5, 2), (3, 8, 1), (4, 10, 3), (2, 6, 6), (5, 100, 7)]
    return [dict(X=torch.tensor([[3.0, -5.0, 1.0, -0.5, 2.0]]), k=2)] + [dict(X=randn(n, d, gen=gen), k=k)
                                                                        for n, d, k in shapes]  # fmt: skip


def _memory_is_what_was_sent(U, error, k):
    return compression.top_k(U + error, k)


def _memory_forgets_the_old_error(U, error, k):
    return U - compression.top_k(U, k)


def _memory_of_the_update_alone(U, error, k):
    return U - compression.top_k(U + error, k)


@self_check(
    compression.error_feedback_memory,
    mistakes=[
        Mistake(_memory_is_what_was_sent, "this returns what is sent, not the memory of what was dropped",
                "e' = p - top_k(p, k) with p = U + e: the entries that were not sent"),
        Mistake(_memory_forgets_the_old_error, "the old memory e is not added before compressing",
                "compress p = U + e, not U alone"),
        Mistake(_memory_of_the_update_alone, "the new memory subtracts from U, not from p = U + e",
                "e' = (U + e) - top_k(U + e, k)"),
    ],
)  # fmt: skip
def error_feedback(gen):
    """U (n, d), the memory e (n, d) (zero once), k."""
    shapes = [(1, 4, 1), (3, 8, 2), (4, 10, 3), (2, 6, 6), (5, 50, 5)]
    cases = [dict(U=randn(n, d, gen=gen), error=randn(n, d, gen=gen), k=k) for n, d, k in shapes]
    cases.insert(0, dict(U=randn(3, 5, gen=gen), error=randn(3, 5, gen=gen) * 0, k=2))
    return cases


def _random_k_unscaled(X, k, u):
    return _keep(X, u.topk(k, dim=1).indices)


def _random_k_inverse_scale(X, k, u):
    idx = u.topk(k, dim=1).indices
    return _keep(X, idx, X.gather(1, idx) * k / X.shape[1])


def _random_k_smallest_u(X, k, u):
    idx = u.topk(k, dim=1, largest=False).indices
    return _keep(X, idx, X.gather(1, idx) * X.shape[1] / k)


@self_check(
    compression.random_k,
    mistakes=[
        Mistake(_random_k_unscaled, "the kept entries are not scaled by d / k: the result is biased",
                "each entry is kept with probability k / d; multiply it by d / k"),
        Mistake(_random_k_inverse_scale, "the kept entries are scaled by k / d instead of d / k",
                "unbiased: E[kept] = (k / d) * scale * x = x, so scale = d / k"),
        Mistake(_random_k_smallest_u, "this keeps the entries where u is smallest",
                "keep the k entries where u is largest: u.topk(k, dim=1)"),
    ],
)  # fmt: skip
def random_k(gen):
    """X (n, d), k, and the uniform numbers u (n, d) that choose the entries."""
    shapes = [(1, 1, 1), (1, 5, 2), (3, 8, 1), (4, 10, 3), (2, 6, 6), (5, 100, 7)]
    return [dict(X=randn(n, d, gen=gen), k=k, u=rand(n, d, gen=gen)) for n, d, k in shapes]


def _powersgd_not_orthogonalized(M, Q):
    P = (M @ Q).mean(0)
    return P @ (M.transpose(1, 2) @ P).mean(0).T


def _powersgd_first_worker(M, Q):
    P = torch.linalg.qr((M @ Q).mean(0)).Q
    return P @ (M[0].T @ P).T


def _powersgd_stale_q(M, Q):
    P = torch.linalg.qr((M @ Q).mean(0)).Q
    return P @ Q.T


@self_check(
    compression.powersgd_step,
    mistakes=[
        Mistake(_powersgd_not_orthogonalized, "P is not orthogonalized",
                "P = torch.linalg.qr(P).Q before computing Q_i = M_i^T P"),
        Mistake(_powersgd_first_worker, "the new Q is one worker's, not the mean over workers",
                "Q_i = M_i^T P for every worker, then all-reduce: mean over dim 0"),
        Mistake(_powersgd_stale_q, "the decoded matrix uses the old Q, not the new mean of M_i^T P",
                "return P @ Q_new.T with Q_new = mean_i M_i^T P"),
    ],
)  # fmt: skip
def powersgd_step(gen):
    """M (k, n, m) of k workers and Q (m, r)."""
    shapes = [(1, 3, 4, 1), (2, 5, 3, 2), (4, 8, 6, 2), (3, 10, 10, 3), (2, 6, 9, 4)]
    return [dict(M=randn(k, n, m, gen=gen), Q=randn(m, r, gen=gen)) for k, n, m, r in shapes]


def reference_ef_sgd(model, x, xb, yb, k, lr, error_feedback):
    """T steps of distributed SGD with top-k compression, with or without error feedback (EF-SGD,
    Karimireddy et al. 2019, arXiv:1901.09847, Algorithm 2, on n workers): p_i = lr g_i + e_i, send top_k(p_i),
    e_i <- p_i - top_k(p_i) (or 0 without feedback), x <- x - mean_i top_k(p_i). Returns x (d,)."""
    E = torch.zeros(xb.shape[1], len(x), dtype=x.dtype)
    for inputs, labels in zip(xb, yb):
        P = lr * model.grad(x.expand(xb.shape[1], -1), inputs, labels) + E
        sent = compression.top_k(P, k)
        E = P - sent if error_feedback else E
        x = x - sent.mean(0)
    return x


def _ef_sgd_variant(model, x, xb, yb, k, lr, error_feedback, *, memory="dropped", rank="magnitude", server="mean"):
    """EF-SGD, the paper's (the defaults) or with one of the students' mistakes switched on."""
    E = torch.zeros(xb.shape[1], len(x), dtype=x.dtype)
    for inputs, labels in zip(xb, yb):
        P = lr * model.grad(x.expand(xb.shape[1], -1), inputs, labels) + E
        idx = (P.abs() if rank == "magnitude" else P).topk(k, dim=1).indices
        sent = _keep(P, idx)
        if error_feedback:
            E = P - sent if memory == "dropped" else sent
        x = x - (sent.mean(0) if server == "mean" else sent.sum(0))
    return x


def _ef_sgd_mistake(**switch):
    return functools.partial(_ef_sgd_variant, **switch)


def _ef_sgd_ignoring_the_switch(model, x, xb, yb, k, lr, error_feedback):
    return _ef_sgd_variant(model, x, xb, yb, k, lr, True)


@self_check(
    reference_ef_sgd,
    mistakes=[
        Mistake(_ef_sgd_mistake(memory="sent"), "the memory keeps what was sent, not what was dropped",
                "e_i <- p_i - top_k(p_i): the entries that did not go out"),
        Mistake(_ef_sgd_mistake(rank="value"), "top-k keeps the largest values, not the largest magnitudes",
                "rank the entries of p_i by |p_i|, then send their signed values"),
        Mistake(_ef_sgd_mistake(server="sum"), "the server adds the workers' messages instead of averaging",
                "x <- x - mean_i top_k(p_i): divide the sum by n"),
        Mistake(_ef_sgd_ignoring_the_switch, "error feedback is on even with error_feedback=False",
                "without feedback the memory stays zero: plain top-k SGD"),
    ],
    # the functions and the classes that compress (TopK's encode ranks on its own, without top_k)
    forbid=[compression.top_k, compression.error_feedback_memory, compression.TopK, compression.ErrorFeedback],
)  # fmt: skip
def ef_sgd(gen):
    """A small MLP (4 -> 5 -> 3), x (d,), T steps' batches xb (T, n, B, 4), yb (T, n, B), k, lr, with
    and without error feedback."""
    model = FlatModel(mlp(4, 3, hidden=(5,)))
    cases = []
    for steps, n, batch, k, lr, feedback in [(4, 3, 5, 2, 0.5, True), (1, 1, 2, 1, 0.1, True), (3, 4, 3, 5, 0.3, False),
                                             (6, 2, 4, 3, 1.0, True), (2, 5, 2, 43, 0.2, True)]:  # fmt: skip
        cases.append(dict(
            model=model, x=model.init(gen), xb=randn(steps, n, batch, 4, gen=gen),
            yb=(3 * rand(steps, n, batch, gen=gen)).long(), k=k, lr=lr, error_feedback=feedback,
        ))  # fmt: skip
    return cases
