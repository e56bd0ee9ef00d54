"""Generalized linear models in the coordinate form of Dünner, Parnell and Jaggi (2017, arXiv:1708.05357).

The problem is  min_alpha  P(alpha) = f(A alpha) + sum_i g_i(alpha_i)  with A of shape
(n_samples, d): one coordinate alpha_i per column (feature) a_i of A, f(v) = 1/2 ||v - b||^2,

- ridge regression: g_i(alpha_i) = lam / 2 * alpha_i^2,
- Lasso:            g_i(alpha_i) = lam * |alpha_i|, restricted to |alpha_i| <= B
  ("Lipschitzing", Dünner, Forte, Takac, Jaggi 2016, Lemma 3) so that its conjugate is finite.

With w = grad f(A alpha) = A alpha - b (the residual, the vector both units share) and
u_i = <a_i, w>, the duality gap splits into one non-negative term per coordinate
(Dünner et al. 2017, eq. (4)):

    gap_i = g_i(alpha_i) + g_i^*(-u_i) + alpha_i u_i  >= 0,   sum_i gap_i = P(alpha) - D(w).

``solve`` finds the optimum: ridge in closed form, the Lasso by duality-gap working sets
(``lasso_working_sets``: the loop is ours, each restricted problem is scikit-learn's);
``coordinate_descent`` is the plain coordinate update the simulated units run.

Everything here is float64 on the CPU: the two-unit system is a simulation, and its
numbers must not depend on the machine that runs it.
"""
import math
from typing import NamedTuple

import torch

from ..constraints import Generator, Instance, Integer, OneOf, Real, Rule, Tensor, constrain

KINDS = ("ridge", "lasso")
# A problem: data A (n_samples, d) and targets b (n_samples,) (least squares), lam > 0 and the kind of g_i.
SAMPLES = dict(A=Tensor(2, description="a tensor of shape (n_samples, d)"), b=Tensor(1))
DATA = dict(**SAMPLES, lam=Real(gt=0))
PROBLEM = dict(**DATA, kind=OneOf(*KINDS))
FINITE = dict(A=Tensor(2, finite=True, description="a tensor of shape (n_samples, d)"), b=Tensor(1, finite=True))
TARGETS = Rule("b", lambda A, b: b.shape == (A.shape[0],),
               "b must have shape ({A.shape[0]},) to match A's rows, got {b.shape}")
SPREAD = Real(ge=0, le=10)  # scales exp(spread z), z ~ N(0, 1): beyond 10 their squares leave float64
COEFFICIENTS = Rule("alpha", lambda A, alpha: alpha.shape == (A.shape[1],),
                    "alpha must have shape ({A.shape[1]},), one entry per column of A, got {alpha.shape}")


@constrain(TARGETS, **DATA)
def lasso_bound(A: torch.Tensor, b: torch.Tensor, lam: float) -> float:
    """The Lipschitzing bound B = P(0) / lam: every alpha with P(alpha) <= P(0) has ||alpha||_1 <= B."""
    return 0.5 * float(b.double().pow(2).sum()) / lam


@constrain(TARGETS, COEFFICIENTS, **PROBLEM, alpha=Tensor(1))
def primal(A: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor, lam: float, kind: str = "ridge") -> float:
    """The objective P(alpha) = 1/2 ||A alpha - b||^2 + sum_i g_i(alpha_i).

    Args:
        A: (n_samples, d) data, one coordinate per column. b: (n_samples,) targets.
        alpha: (d,) coefficients. lam: regularization > 0. kind: "ridge" or "lasso".
    """
    residual = A.double() @ alpha.double() - b.double()  # (n_samples,)
    reg = 0.5 * lam * alpha.double().pow(2).sum() if kind == "ridge" else lam * alpha.double().abs().sum()
    return float(0.5 * residual.pow(2).sum() + reg)


@constrain(TARGETS, COEFFICIENTS, **PROBLEM, alpha=Tensor(1), bound=Real(ge=0) | None)
def coordinate_gaps(
    A: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor, lam: float, kind: str = "ridge", bound: float | None = None
) -> torch.Tensor:
    """The duality gap of each coordinate (Dünner, Parnell, Jaggi 2017, arXiv:1708.05357, eq. (4)).

    With w = A alpha - b and u = A^T w:

    - ridge: gap_i = lam/2 alpha_i^2 + u_i^2 / (2 lam) + alpha_i u_i = (lam alpha_i + u_i)^2 / (2 lam);
    - Lasso: gap_i = lam |alpha_i| + B [|u_i| - lam]_+ + alpha_i u_i, with B = ``bound``
      (default ``lasso_bound``; the Lipschitzed g_i^*(u) = B [|u| - lam]_+).

    Every term is >= 0 and all are 0 exactly at the optimum (ridge: u_i = -lam alpha_i;
    Lasso: the KKT conditions u_i = -lam sign(alpha_i), or |u_i| <= lam where alpha_i = 0).

    Args:
        A: (n_samples, d). b: (n_samples,). alpha: (d,). lam: > 0. kind: "ridge" or "lasso".
        bound: the Lasso's B (ignored for ridge); must be >= ||alpha||_inf.

    Returns:
        (d,) float64 tensor of per-coordinate gaps; their sum is the duality gap.

    Raises:
        ValueError: for mismatched shapes, lam <= 0, an unknown kind, or a bound below |alpha_i|.
    """
    A, b, alpha = A.double(), b.double(), alpha.double()
    if kind == "lasso":
        bound = lasso_bound.__wrapped__(A, b, lam) if bound is None else bound
        if bound < float(alpha.abs().max()):
            raise ValueError(f"bound must be >= max |alpha_i| = {float(alpha.abs().max()):.4g}, got {bound}")
    return _gaps(alpha, A.T @ (A @ alpha - b), lam, kind, bound)


def _gaps(alpha: torch.Tensor, u: torch.Tensor, lam: float, kind: str, bound: float | None) -> torch.Tensor:
    """``coordinate_gaps`` from u = A^T (A alpha - b) (d,), already computed (``bound``: the Lasso's B)."""
    if kind == "ridge":
        return (lam * alpha + u).pow(2) / (2 * lam)
    return (lam * alpha.abs() + bound * (u.abs() - lam).clamp(min=0) + alpha * u).clamp(min=0)


@constrain(TARGETS, **{**PROBLEM, **FINITE}, tol=Real(gt=0))
def solve(A: torch.Tensor, b: torch.Tensor, lam: float, kind: str = "ridge", *, tol: float = 1e-12) -> torch.Tensor:
    """The optimum alpha*: the closed form for ridge, ``lasso_working_sets`` for the Lasso.

    Ridge: alpha* = (A^T A + lam I)^{-1} A^T b. Lasso: duality-gap working sets until the
    duality gap is at most ``tol * ||b||^2`` (scikit-learn's stopping rule).

    Returns:
        (d,) float64 tensor.
    """
    A, b = A.double(), b.double()
    if kind == "ridge":
        return torch.linalg.solve(A.T @ A + lam * torch.eye(A.shape[1], dtype=A.dtype), A.T @ b)
    return lasso_working_sets.__wrapped__(A, b, lam, tol=tol).alpha


class LassoRun(NamedTuple):
    """A run of ``lasso_working_sets``: the solution ``alpha`` (d,); ``sizes[t]``, the size of the
    working set solved in outer iteration t; ``gaps[t]``, the duality gap before it (``gaps[0]``
    at alpha = 0, ``gaps[-1]`` at the end: one more gap than sizes)."""

    alpha: torch.Tensor
    sizes: list[int]
    gaps: list[float]


MAX_EPOCHS = 50_000  # of scikit-learn's coordinate descent per working set; it warns if they run out


@constrain(TARGETS, **FINITE, lam=DATA["lam"], tol=Real(gt=0), first=Integer(min=1))
def lasso_working_sets(
    A: torch.Tensor, b: torch.Tensor, lam: float, *, tol: float = 1e-12, first: int = 10
) -> LassoRun:
    """The Lasso by duality-gap working sets: the outer loop of Celer (Massias, Gramfort, Salmon
    2018, "Celer: a fast solver for the Lasso with dual extrapolation"; its variant without pruning
    or dual extrapolation), each restricted problem solved by scikit-learn's coordinate descent.

    Outer iteration t, with w = A alpha - b and u = A^T w (the one product with all of A):

    1. the duality gap at the residual rescaled into the dual's feasible set, theta = s w with
       s = min(1, lam / ||u||_inf): by the split of Dünner et al. (2017, eq. (4)) plus f's
       Fenchel-Young term, G = 1/2 (1 - s)^2 ||w||^2 + sum_i (lam |alpha_i| + s alpha_i u_i);
       stop when G <= tol ||b||^2 (scikit-learn's rule), or when no coordinate outside the
       working set W violates its optimality condition |u_i| <= lam (then G is the gap of the
       last restricted problem, which scikit-learn brought below the same bound, or warned);
    2. grow W by the max(|W|, ``first``) coordinates outside it of largest ``coordinate_gaps``
       (B [|u_i| - lam]_+ there, alpha_i being 0), or by all violators if fewer: W keeps its
       coordinates and at most doubles, as Celer's p_{t+1} = 2 p_t;
    3. solve the Lasso restricted to W's columns from alpha_W, until its gap <= tol ||b||^2
       (the final tolerance, as Celer without pruning).

    Celer ranks coordinates by the distance (lam - |a_i^T theta|) / ||a_i|| of the dual point to
    their constraint; the coordinate gaps rank by |u_i| - lam, which on columns of unequal scales
    (``sparse_problem``) puts more of the optimum's support in the first sets.

    Args:
        A: (n_samples, d) finite data. b: (n_samples,) finite targets. lam: > 0.
        tol: the gap to reach, relative to ||b||^2. first: the size of the first working set.

    Returns:
        ``LassoRun``: alpha (d,) float64 on the CPU, the set sizes and the gaps.
    """
    A, b = A.detach().double().cpu(), b.detach().double().cpu().contiguous()
    columns = A.T.contiguous()  # (d, n_samples): a working set's rows are scikit-learn's F-ordered columns
    bound, stop = lasso_bound.__wrapped__(A, b, lam), tol * float(b @ b)
    alpha, w = torch.zeros(A.shape[1], dtype=torch.float64), -b  # (d,), (n_samples,)
    working, sizes, gaps = torch.zeros(0, dtype=torch.long), [], []
    while True:
        u = columns @ w  # (d,)
        gaps.append(_lasso_gap(alpha, w, u, lam))
        outside = _gaps(alpha, u, lam, "lasso", bound).index_fill_(0, working, 0)  # (d,)
        violators = int((outside > 0).sum())
        if gaps[-1] <= stop or violators == 0:
            return LassoRun(alpha, sizes, gaps)
        grow = torch.topk(outside, min(violators, max(first, len(working)))).indices
        working = torch.sort(torch.cat([working, grow])).values
        rows = columns[working]  # (|W|, n_samples)
        alpha[working] = _restricted_lasso(rows, b, lam, alpha[working], tol)
        w = rows.T @ alpha[working] - b
        sizes.append(len(working))


def _lasso_gap(alpha: torch.Tensor, w: torch.Tensor, u: torch.Tensor, lam: float) -> float:
    """P(alpha) - D(s w) with s = min(1, lam / ||u||_inf): the Lasso's duality gap (not Lipschitzed)."""
    s = lam / max(lam, float(u.abs().max()))
    return 0.5 * (1 - s) ** 2 * float(w @ w) + float(lam * alpha.abs().sum() + s * (alpha @ u))


def _restricted_lasso(rows: torch.Tensor, b: torch.Tensor, lam: float, start: torch.Tensor, tol: float) -> torch.Tensor:
    """Scikit-learn's coordinate descent on min 1/2 ||X x - b||^2 + lam ||x||_1 with X = rows.T,
    from ``start``, until its duality gap <= tol ||b||^2. Its objective is ours / n_samples."""
    import sklearn
    from sklearn.linear_model import lasso_path

    with sklearn.config_context(skip_parameter_validation=True):  # lasso_working_sets checked them
        coefs = lasso_path(rows.numpy().T, b.numpy(), alphas=[lam / rows.shape[1]], coef_init=start.numpy(), tol=tol,
                           max_iter=MAX_EPOCHS, precompute=False, check_input=False)[1]  # fmt: skip
    return torch.from_numpy(coefs[:, 0])


@constrain(Rule("w", lambda A, w: w.shape == (A.shape[0],),
                "w must have shape ({A.shape[0]},), one per row of A, got {w.shape}"),
           Rule("norms", lambda A, norms: norms.shape == (A.shape[1],),
                "norms must have shape ({A.shape[1]},), one per column of A, got {norms.shape}"),
           COEFFICIENTS, A=DATA["A"], alpha=Tensor(1, floating=False), w=Tensor(1, floating=False),
           coords=Instance(range, list, tuple, torch.Tensor, description="coordinate indices (a range, list or tensor)"),
           lam=DATA["lam"], kind=OneOf(*KINDS), norms=Tensor(1))  # fmt: skip
def coordinate_descent(
    A: torch.Tensor, alpha: torch.Tensor, w: torch.Tensor, coords, lam: float, kind: str, norms: torch.Tensor
) -> None:
    """Exact minimization of P along each coordinate of ``coords`` in turn (the local solver).

    Ridge: alpha_i <- alpha_i - (u_i + lam alpha_i) / (||a_i||^2 + lam);
    Lasso: alpha_i <- S(||a_i||^2 alpha_i - u_i, lam) / ||a_i||^2 with S the soft threshold;
    then w <- w + a_i (alpha_i^new - alpha_i). Works IN PLACE on alpha (d,) and w (n_samples,):
    this is the state of the simulated units, never a caller's input.
    """
    columns = A.T  # (d, n_samples), rows contiguous for the dot products
    for i in coords:
        a = columns[i]
        u, old, sq = float(a @ w), float(alpha[i]), float(norms[i])
        if sq == 0:
            continue
        if kind == "ridge":
            new = old - (u + lam * old) / (sq + lam)
        else:
            z = sq * old - u
            new = math.copysign(max(abs(z) - lam, 0.0), z) / sq
        if new != old:
            alpha[i] = new
            w.add_(a, alpha=new - old)


@constrain(Rule("informative", lambda d, informative: informative <= d,
                "informative must be between 1 and d={d}, got {informative}"),
           n_samples=Integer(min=1), d=Integer(min=1), informative=Integer(min=1), spread=SPREAD, noise=Real(ge=0),
           gen=Generator())  # fmt: skip
def sparse_problem(
    n_samples: int, d: int, *, informative: int, spread: float = 1.0, noise: float = 0.1, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear problem where few coordinates matter: b = A alpha_true + noise.

    Columns of A are Gaussian with log-normal scales exp(spread * N(0, 1)), normalized to a
    mean squared norm of 1 per sample; ``informative`` random coordinates of alpha_true are
    N(0, 1), the others 0.

    Returns:
        A (n_samples, d) and b (n_samples,), float64 on the CPU.
    """
    A = torch.randn(n_samples, d, generator=gen, dtype=torch.float64)
    A = A * torch.exp(spread * torch.randn(d, generator=gen, dtype=torch.float64))  # (n_samples, d)
    A = A / A.pow(2).sum(0).mean().sqrt()
    truth = torch.zeros(d, dtype=torch.float64)
    truth[torch.randperm(d, generator=gen)[:informative]] = torch.randn(informative, generator=gen, dtype=torch.float64)
    b = A @ truth * n_samples**0.5 + noise * torch.randn(n_samples, generator=gen, dtype=torch.float64)
    return A, b
