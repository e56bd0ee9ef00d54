"""Heterogeneous systems: our Lasso and ridge solvers and duality gaps against scikit-learn,
and the vectorized importance-sampled gradient against a per-example loop.

Every pair is first checked to give the same result; then each is timed (best of several
runs) and the ratio printed. Run: ``make bench`` (or ``python -m benchmarks.systems``).
The seconds depend on the machine, the ratios much less.
"""

import torch
from sklearn.linear_model import Lasso, Ridge

import mllib
from benchmarks import best_time, record, size
from mllib import systems as sy


def solvers(gen):
    n, d = size((200, 400), (40, 80))
    A, b = sy.sparse_problem(n, d, informative=size(20, 5), gen=gen)
    lam = 0.5
    An, bn = A.numpy(), b.numpy()
    ridge_sk = lambda: Ridge(alpha=lam, fit_intercept=False, solver="cholesky").fit(An, bn).coef_  # noqa: E731
    assert torch.allclose(sy.solve(A, b, lam, "ridge"), torch.from_numpy(ridge_sk()), atol=1e-8)
    ours, theirs = best_time(lambda: sy.solve(A, b, lam, "ridge"), 3)[0], best_time(ridge_sk, 3)[0]
    print(f"ridge ({n} x {d}), closed form: ours / scikit-learn Ridge(cholesky) {ours / theirs:5.2f}x")
    lasso = Lasso(alpha=lam / n, fit_intercept=False, tol=1e-12, max_iter=50_000)
    lasso_sk = lambda: lasso.fit(An, bn).coef_.copy()  # noqa: E731
    run = sy.glm.lasso_working_sets(A, b, lam, tol=1e-12)
    assert torch.allclose(run.alpha, torch.from_numpy(lasso_sk()), atol=1e-6)
    print(f"Lasso ({n} x {d}) by duality-gap working sets: {len(run.sizes)} outer iterations, set sizes "
          f"{', '.join(map(str, run.sizes))} of {d}; duality gap {', '.join(f'{g:.2g}' for g in run.gaps)} "
          f"(stop at 1e-12 ||b||^2 = {1e-12 * float(b @ b):.2g})")  # fmt: skip
    ours = best_time(lambda: sy.glm.lasso_working_sets(A, b, lam, tol=1e-12), 50, warm_up=True)[0]
    theirs = best_time(lasso_sk, 50, warm_up=True)[0]
    print(f"Lasso ({n} x {d}): our working sets (scikit-learn on each set) / scikit-learn's Lasso on all "
          f"{ours / theirs:5.2f}x")
    record("Lasso with duality-gap working sets vs scikit-learn's Lasso", ours_s=ours, reference_s=theirs,
           reference="sklearn.linear_model.Lasso(tol=1e-12)", problem=f"{n} x {d}",
           ours_is="systems.glm.lasso_working_sets(tol=1e-12): Celer's working-set loop over the coordinate gaps, "
                   "scikit-learn's coordinate descent on each set")  # fmt: skip
    alpha = run.alpha
    bound = sy.lasso_bound(A, b, lam)
    # coordinate i alone: the problem in alpha_i with the other coordinates' contribution moved into b
    rest = lambda i: b - A @ alpha + A[:, i] * alpha[i]  # noqa: E731
    one = lambda i: sy.coordinate_gaps(A[:, [i]], rest(i), alpha[[i]], lam, "lasso", bound)  # noqa: E731
    loop = lambda: torch.cat([one(i) for i in range(d)])  # noqa: E731
    assert torch.allclose(loop(), sy.coordinate_gaps(A, b, alpha, lam, "lasso"), atol=1e-9)
    ours, theirs = best_time(lambda: sy.coordinate_gaps(A, b, alpha, lam, "lasso"), 3)[0], best_time(loop, 1)[0]
    print(f"{d} Lasso gaps: one matrix product / one coordinate at a time {ours / theirs:.3f}x")


def importance(gen):
    X, y = sy.heterogeneous_regression(size(10_000, 1000), 50, gen=gen)
    p = sy.proportional(X.pow(2).sum(1))
    idx = torch.multinomial(p, size(512, 64), replacement=True, generator=gen)
    grads = sy.least_squares_grads(X[idx], y[idx], torch.ones(50, dtype=torch.float64))
    loop = lambda: sum(grads[b] / (len(p) * p[idx[b]]) for b in range(len(idx))) / len(idx)  # noqa: E731
    assert torch.allclose(loop(), sy.importance_gradient(grads, idx, p))
    ours, theirs = best_time(lambda: sy.importance_gradient(grads, idx, p), 20)[0], best_time(loop, 3)[0]
    print(f"importance-sampled gradient, batch {len(idx)}: vectorized / per-example loop {ours / theirs:.3f}x")


def main():
    gen = mllib.setup(seed=0)
    solvers(gen)
    importance(gen)


if __name__ == "__main__":
    main()
