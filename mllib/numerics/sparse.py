"""Sparse against dense matrix products: when skipping the zeros pays.

A dense (n, n) @ (n, k) product costs n^2 k multiply-adds whatever the zeros; a CSR product
costs about nnz k, plus an index read and an irregular memory access per nonzero
(Gale et al. 2020, "Sparse GPU kernels for deep learning", measure the same trade on GPUs).
"""
import time
import warnings

import torch

from ..constraints import Generator, Integer, Real, Reals, constrain


@constrain(n=Integer(min=1), k=Integer(min=1), density=Real(gt=0, le=1), gen=Generator())
def sparse_operands(n: int, k: int, density: float, *, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random (n, n) matrix with a fraction ``density`` of nonzeros, and a dense (n, k) one."""
    A = torch.randn(n, n, generator=gen) * (torch.rand(n, n, generator=gen) < density)
    return A, torch.randn(n, k, generator=gen)


@constrain(n=Integer(min=1), k=Integer(min=1), densities=Reals(gt=0, le=1), gen=Generator(), repeats=Integer(min=1))
def sparse_vs_dense(
    n: int, k: int, densities, *, gen: torch.Generator, repeats: int = 5
) -> dict[str, list[float]]:
    """Seconds per product, dense and CSR, at each density (the best of ``repeats`` runs).

    The two results are compared first (``torch.allclose``): a timing of a wrong product
    means nothing.

    Returns:
        {"density": [...], "dense": [...], "sparse": [...]}.

    Raises:
        RuntimeError: if the sparse product differs from the dense one.
    """
    out = {"density": [], "dense": [], "sparse": []}
    for density in densities:
        A, B = sparse_operands(n, k, density, gen=gen)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Sparse CSR tensor support is in beta"
            S = A.to_sparse_csr()
            if not torch.allclose(S @ B, A @ B, atol=1e-4, rtol=1e-4):
                raise RuntimeError(f"sparse and dense products differ at density {density}")
            for name, left in (("dense", A), ("sparse", S)):
                best = float("inf")
                for _ in range(repeats):
                    start = time.perf_counter()
                    left @ B
                    best = min(best, time.perf_counter() - start)
                out[name].append(best)
        out["density"].append(density)
    return out
