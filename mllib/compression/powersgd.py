"""PowerSGD (Vogels, Karimireddy, Jaggi 2019, arXiv:1905.13727): rank-r compression by one power iteration.

A layer's gradient M (n x m) is sent as two thin matrices P (n x r) and Q (m x r):
32 r (n + m) bits instead of 32 n m. One power iteration costs about 4 n m r FLOPs, linear
in the size of M; a full SVD costs O(n m min(n, m)).
"""
import math
from collections.abc import Callable

import torch

from ..constraints import Function, Instance, Integer, Rule, Tensor, constrain
from ..runtime import generator
from .compressors import SEED, Compressor

MATRICES = Tensor((2, 3, 4), description="a matrix (n, m) or a batch of them (..., n, m)")
SIZE = Integer(min=1)  # a matrix dimension, a rank, a count of iterations
M_TIMES_Q = Rule("Q", lambda M, Q: Q.shape[-2] == M.shape[-1],  # M (..., n, m) multiplies Q (..., m, r)
                 lambda M, Q: f"Q must have shape (..., m, r) for the m = {M.shape[-1]} columns of M, got {tuple(Q.shape)}")


@constrain(P=MATRICES)
def orthogonalize(P: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns spanning P's columns: (..., n, r) -> (..., n, r).

    The paper uses Gram-Schmidt; the reduced QR gives the same columns up to their signs,
    which cancel in P Q^T.
    """
    return torch.linalg.qr(P, mode="reduced").Q


@constrain(M_TIMES_Q, M=MATRICES, Q=MATRICES, iterations=SIZE)
def power_iteration(M: torch.Tensor, Q: torch.Tensor, iterations: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-r approximation M ~ P Q^T by subspace (power) iteration from Q.

    Each iteration (Vogels et al. 2019, Algorithm 1, lines 3-6, on one worker):
        1. P = M Q;  2. P = orthogonalize(P);  3. Q = M^T P.

    Args:
        M: (..., n, m) matrices.
        Q: (..., m, r) the start (warm start: the previous step's Q).
        iterations: at least 1.

    Returns:
        P (..., n, r) with orthonormal columns and Q (..., m, r); P Q^T approximates M.
    """
    for _ in range(iterations):
        P = orthogonalize.__wrapped__(M @ Q)  # (..., n, r)
        Q = (P.transpose(-1, -2) @ M).transpose(-1, -2)  # (..., m, r) = M^T P; reads M row-major, 2x faster on CPU
    return P, Q


@constrain(M_TIMES_Q, M=MATRICES, Q=MATRICES, mean=Function())
def power_step(M: torch.Tensor, Q: torch.Tensor, mean: Callable) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PowerSGD's power step with its two all-reduces (Vogels et al. 2019, Algorithm 1), the one
    ``powersgd_step``, ``powersgd_round`` (so ``PowerSGD``) and the DDP hook ``PowerSGDHook`` run.

    P = orthogonalize(mean_i M_i Q);  Q_i = M_i^T P;  worker i decodes P Q_i^T;  Q <- mean_i Q_i,
    so the mean of the decoded matrices is P (mean_i Q_i)^T.

    Args:
        M: (..., n, m) the workers' matrices: in one process all of them along a worker axis;
            in a DDP process its own matrix.
        Q: (..., m, r) the warm start, broadcasting against M.
        mean: the mean over the workers, whose result broadcasts against M: in one process a
            mean over the worker axis; in DDP an all-reduce divided by the number of processes.

    Returns:
        P (orthonormal columns), each worker's decoded P Q_i^T (the shape of M), and mean_i Q_i,
        the next warm start.
    """
    P = orthogonalize(mean(M @ Q))  # all-reduce of the P_i = M_i Q, then orthogonalized
    Qi = M.transpose(-1, -2) @ P  # Q_i = M_i^T P
    return P, P @ Qi.transpose(-1, -2), mean(Qi)  # P, worker i's decoded P Q_i^T, all-reduce of the Q_i


@constrain(M_TIMES_Q, M=Tensor(3), Q=Tensor(2))
def powersgd_step(M: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """One PowerSGD step for k workers' matrices M (k, n, m) from the shared Q (m, r).

    P = orthogonalize(mean_i M_i Q);  Q_i = M_i^T P;  returns P (mean_i Q_i)^T, (n, m):
    the rank-r approximation of the mean of the M_i that every worker decodes
    (Vogels et al. 2019, Algorithm 1).
    """
    P, _, Q_next = power_step.__wrapped__(M, Q, lambda T: T.mean(0))  # (n, r), (m, r)
    return P @ Q_next.T  # (n, m)


@constrain(M_TIMES_Q, Rule("Q", lambda M, Q: len(Q) == len(M),
                           "Q must hold one warm start per group, {M.shape[0]} for M of shape {M.shape}, got {Q.shape[0]}"),
           M=Tensor(4), Q=Tensor(3))
def powersgd_round(M: torch.Tensor, Q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One PowerSGD round of one layer (Vogels et al. 2019, Algorithm 1), for g independent groups of w workers.

    P = orthogonalize(mean_i M_i Q);  Q_i = M_i^T P;  worker i decodes P Q_i^T (their mean over
    the group is P (mean_i Q_i)^T), and mean_i Q_i is the next round's warm start.

    Args:
        M: (g, w, n, m) each worker's matrix (its update plus its error feedback).
        Q: (g, m, r) each group's warm start.

    Returns:
        The decoded matrices (g, w, n, m) and the next warm starts (g, m, r).
    """
    _, decoded, Q_next = power_step.__wrapped__(M, Q[:, None], lambda T: T.mean(1, keepdim=True))  # each group's mean
    return decoded, Q_next[:, 0]


@constrain(M=Tensor(2), rank=Integer(min=1))
def truncated_svd(M: torch.Tensor, rank: int) -> torch.Tensor:
    """The best rank-r approximation (Eckart-Young) from a full ``torch.linalg.svd``."""
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    return (U[:, :rank] * S[:rank]) @ Vh[:rank]


@constrain(n=SIZE, m=SIZE, rank=SIZE, iterations=SIZE)
def flops_power_iteration(n: int, m: int, rank: int, iterations: int = 1) -> int:
    """FLOPs of ``power_iteration``: per iteration 2nmr (M Q) + 2nmr (M^T P) + 4nr^2 (QR)."""
    return iterations * (4 * n * m * rank + 4 * n * rank * rank)


@constrain(n=SIZE, m=SIZE)
def flops_svd(n: int, m: int) -> int:
    """FLOPs of a thin SVD with both singular vector sets, Golub-Reinsch:
    4 a^2 b + 8 a b^2 + 9 b^3 for a = max(n, m), b = min(n, m) (Golub and Van Loan, Table 8.6.1)."""
    a, b = max(n, m), min(n, m)
    return 4 * a * a * b + 8 * a * b * b + 9 * b**3


@constrain(n=SIZE, m=SIZE, q=SIZE, niter=Integer(min=0))
def flops_svd_lowrank(n: int, m: int, q: int, niter: int) -> int:
    """FLOPs of ``torch.svd_lowrank(M, q, niter)`` (Halko et al. 2011, Algorithm 4.4 + 5.1):
    (2 + 2 niter) products with a thin matrix (2nmq each), a QR of each, and the SVD of q x m."""
    return (2 + 2 * niter) * 2 * n * m * q + (1 + 2 * niter) * 4 * max(n, m) * q * q + flops_svd(q, m)


class PowerSGD(Compressor):
    """PowerSGD on the client matrix: each layer's update compressed to rank r, with error feedback.

    Rows of the (k, d) input are k workers; ``shapes`` lays a row out as the model's
    parameters (``FlatModel.shapes``). Per step (Vogels et al. 2019, arXiv:1905.13727, Algorithms 1 and 2):
        1. M_i = U_i + e_i for each worker i, each layer reshaped to (out, in * ...);
        2. P_i = M_i Q, Q the shared warm start;   3. P = mean_i P_i  (all-reduce);
        4. P = orthogonalize(P);                   5. Q_i = M_i^T P;
        6. e_i = M_i - P Q_i^T                     (error feedback, local);
        7. row i decodes to P Q_i^T, whose mean over workers is P (mean_i Q_i)^T;
        8. Q <- mean_i Q_i                          (all-reduce; the next warm start).
    Steps 2-5, 7 and 8 are ``powersgd_round``, once per compressed layer.
    Tensors with fewer than 2 dimensions, and layers where r (n + m) >= n m, are sent
    uncompressed (float32). With ``groups`` g > 1 the k rows are g independent runs side by
    side (e.g. seeds), k / g consecutive workers each: every group has its own Q, and the
    means of steps 3, 7 and 8 stay within the group.

    Args:
        shapes: the parameter shapes of one row, in order.
        rank: r >= 1.
        error_feedback: keep the memory e (the paper always does).
        seed: seed of the generator drawing the first Q (standard normal).
        groups: g >= 1, independent groups of workers; k must be a multiple of g.

    State:
        Q: list of (g, m, r) warm starts, one per compressed layer.
        error: (k, d) memory.

    Raises:
        ValueError: for rank < 1 or groups < 1, or rows whose length is not the sum of the
            shapes or whose number is not a multiple of groups.
    """

    @constrain(shapes=Instance(list, tuple, description="a list of parameter shapes (FlatModel.shapes)"), rank=SIZE,
               seed=SEED, groups=SIZE)
    def __init__(self, shapes, rank: int, *, error_feedback: bool = True, seed: int = 0, groups: int = 1):
        super().__init__()
        self.shapes = [torch.Size(s) for s in shapes]
        self.rank, self.error_feedback, self.groups = rank, error_feedback, groups
        self.sizes = [math.prod(s) for s in self.shapes]
        self.matrix = [(s[0], math.prod(s[1:])) if len(s) >= 2 else None for s in self.shapes]
        self.matrix = [nm if nm and rank * (nm[0] + nm[1]) < nm[0] * nm[1] else None for nm in self.matrix]
        gen = generator(seed)
        # State
        self.Q = [torch.randn(groups, nm[1], rank, generator=gen) if nm else None for nm in self.matrix]
        self.error: torch.Tensor | None = None

    def compress(self, X):
        k, d = X.shape
        if d != sum(self.sizes):
            raise ValueError(f"rows must have d = {sum(self.sizes)} entries (the shapes given), got {d}")
        if k % self.groups:
            raise ValueError(f"the {k} rows must split into groups={self.groups} groups of equal size")
        if self.error is None or self.error.shape != X.shape:
            self.error = torch.zeros_like(X)
        M_all = X + self.error if self.error_feedback else X  # 1. (k, d)
        out = torch.empty_like(X)
        g = self.groups
        for j, (chunk, nm) in enumerate(zip(M_all.split(self.sizes, 1), self.matrix)):
            start = sum(self.sizes[:j])
            if nm is None:
                out[:, start : start + chunk.shape[1]] = chunk
                continue
            M = chunk.reshape(g, k // g, *nm)  # (g, k/g, n, m)
            decoded, self.Q[j] = powersgd_round.__wrapped__(M, self.Q[j].to(X.device, X.dtype))  # 2.-5., 7., 8.
            out[:, start : start + chunk.shape[1]] = decoded.reshape(k, -1)
        if self.error_feedback:
            self.error = M_all - out  # 6.
        return out

    def bits_per_row(self, d):
        return sum(32 * (self.rank * (nm[0] + nm[1]) if nm else size) for nm, size in zip(self.matrix, self.sizes))

    def state_dict(self):
        return {**super().state_dict(), "Q": self.Q, "error": self.error}

    def __repr__(self):
        return f"PowerSGD(rank={self.rank}" + (f", groups={self.groups})" if self.groups > 1 else ")")
