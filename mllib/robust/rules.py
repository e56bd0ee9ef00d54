"""The robust rules' arithmetic: plain functions from a client matrix (n, d), f rows of which
may be Byzantine, to one row (d,). The lecture shows these; ``aggregators`` wraps each in the
one ``Aggregator`` protocol.

Every rule here also takes a stack of R client matrices (R, n, d) and returns (R, d) (the
lecture trains R runs at once), except q-FFL's. ``check_rows`` is the one check of a client
matrix and of f, the number of Byzantine rows, against the paper's condition (a declared
``Rule`` of ``CONDITIONS``); the attacks use it too. Each rule also declares its arguments'
constraints (``mllib.constraints``), checked at a call of the rule; an ``Aggregator`` calls the
rule's body (``__wrapped__``).
"""
import numpy as np
import torch

from ..constraints import ClientMatrix, Integer, Real, Rule, Tensor, constrain, shown

ROWS = ClientMatrix(stack=True)  # X (n, d), or a stack of R of them (R, n, d)
F = Integer(min=0)  # the number of Byzantine rows; its condition against n is one of CONDITIONS
# The paper's condition on f for n rows, by what a rule needs (``max_f`` is the largest f each
# accepts); a message names the rule that checked. Krum's keeps its own words: lecture 05 prints it.
CONDITIONS = {
    "half": Rule("f", lambda f, n, name: 2 * f < n,
                 lambda f, n, name: f"f must be < n/2 = {n / 2:g}, fewer than half the rows Byzantine, "
                                    f"got f={f} of n={n} for {name}"),
    "krum": Rule("f", lambda f, n, name: n > 2 * f + 2,
                 lambda f, n, name: f"{name} needs n > 2f + 2 (Blanchard et al. 2017): got n={n}, f={f}; "
                                    f"pass f <= {(n - 3) // 2}"),
    "honest": Rule("f", lambda f, n, name: f < n,
                   lambda f, n, name: f"f must be in [0, n) = [0, {n}), at least one honest row, got f={f} "
                                      f"for {name}"),
    "any": Rule("f", lambda f, n, name: f <= n,
                lambda f, n, name: f"f must be in [0, n] = [0, {n}], got f={f} for {name}"),
}  # fmt: skip
NEEDS = tuple(CONDITIONS)
# What a rule's caller passes every round, used as given (a public call converts lists and
# integers first, ROWS): the ranks allowed with and without stacks, and their description
MATRICES = {True: ((2, 3), f"{ROWS.description}, of floats"),
            False: ((2,), "a client matrix of shape (n_clients, d), of floats")}


def check_f(f: int, n: int, name: str, need: str = "half") -> None:
    """Check f, the number of Byzantine rows, an integer >= 0 (``F``), for n rows against the
    condition ``need`` of the rule ``name`` (``CONDITIONS``): "half" (f < n/2, the breakdown point
    of the medians), "krum" (n > 2f + 2, Blanchard et al. 2017), "honest" (f < n: at least one
    honest row to read), "any" (f <= n).

    Raises:
        TypeError: for an f that is not an integer.
        ValueError: for f < 0 or an f that breaks the condition.
    """
    F.check("f", f)
    CONDITIONS[need].check({"f": f, "n": n, "name": name})


def max_f(n: int, need: str = "half") -> int:
    """The largest f that ``check_f`` accepts for n rows under ``need``, at least 0."""
    return max(0, {"half": (n - 1) // 2, "krum": (n - 3) // 2, "honest": n - 1, "any": n}[need])


def check_rows(X: torch.Tensor, f: int, name: str, *, need: str = "half", stacks: bool = True, arg: str = "X") -> int:
    """Check a client matrix X (n, d) of floats (or, with ``stacks``, a stack (R, n, d)) and f
    against ``need`` (see ``check_f``) for the rule ``name``; return n. It runs every round, on
    X as given: a list or an integer tensor is refused here, converted at a public call (``ROWS``).

    Raises:
        ValueError: for a tensor of another rank, with no row, not of floats, or a bad f.
    """
    ranks, matrix = MATRICES[stacks]
    if not (isinstance(X, torch.Tensor) and X.dtype.is_floating_point and X.dim() in ranks and X.shape[-2] > 0):
        raise ValueError(f"{arg} must be {matrix}, got {shown(X)} for {name}")
    check_f(f, X.shape[-2], name, need)
    return X.shape[-2]


def _finite_rows(X: torch.Tensor) -> torch.Tensor:
    """(..., n) True for the rows without NaN or inf, in one pass: a NaN or inf entry makes its
    row's sum NaN or inf; only rows whose sum is not finite (or overflows) are looked at again."""
    finite = torch.isfinite(X.sum(-1))
    if not finite.all():
        finite[~finite] = torch.isfinite(X[~finite]).all(-1)
    return finite


def _sorted_columns(X: torch.Tensor) -> torch.Tensor:
    """X (..., n, d) with each column sorted along the rows, NaN last (as ``torch.sort``).

    On the CPU NumPy sorts: its vectorized sort is about 7x faster than ``torch.sort`` along
    a short axis of (R, 25, 1210) stacks, and sorting is exact, so both give the same values.
    """
    if X.device.type == "cpu" and not X.requires_grad and X.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.sort(X.numpy(), axis=-2))
    return X.sort(-2).values


def _zero_bad_rows(X: torch.Tensor, finite: torch.Tensor) -> torch.Tensor:
    return torch.where(finite.unsqueeze(-1), X, torch.zeros((), dtype=X.dtype, device=X.device))


@constrain(X=ROWS, f=F)
def mean(X: torch.Tensor, f: int = 0) -> torch.Tensor:
    """The plain average of the rows: the non-robust baseline, (1/n) sum_i X_i.

    One Byzantine row moves it anywhere (breakdown point 0); ``f`` is accepted for a
    uniform interface and must be < n/2.

    Args:
        X: (n, d) client matrix.
        f: number of Byzantine rows (only checked).

    Returns:
        (d,) the mean row.

    Raises:
        ValueError: for a matrix that is not (n, d) or f >= n/2.
    """
    check_rows(X, f, "mean")
    return X.mean(-2)


@constrain(X=ROWS, f=F)
def coordinate_median(X: torch.Tensor, f: int = 0) -> torch.Tensor:
    """Coordinate-wise median (Yin et al. 2018, "Byzantine-robust distributed learning",
    arXiv:1803.01498, Option I).

    Update: out_j = median_i X_ij for every coordinate j; for even n the midpoint of the
    two middle values (the textbook median; ``torch.median`` returns the lower one).
    NaN sorts above +inf, so up to f < n/2 rows of NaN or inf never reach the middle.

    Args:
        X: (n, d) client matrix.
        f: number of Byzantine rows, checked against f < n/2.

    Returns:
        (d,) the coordinate-wise median.

    Raises:
        ValueError: for a matrix that is not (n, d) or f >= n/2.
    """
    n = check_rows(X, f, "coordinate_median")
    s = _sorted_columns(X)  # (n, d), NaN last (torch.median and kthvalue raise on CUDA in deterministic mode)
    if n % 2:
        return s[..., n // 2, :]
    return 0.5 * (s[..., n // 2 - 1, :] + s[..., n // 2, :])


@constrain(X=ROWS, f=F)
def trimmed_mean(X: torch.Tensor, f: int) -> torch.Tensor:
    """Coordinate-wise trimmed mean (Yin et al. 2018, arXiv:1803.01498, Option II, with beta = f/n).

    Update: in each coordinate drop the f largest and the f smallest values and average
    the n - 2f left.

    Args:
        X: (n, d) client matrix.
        f: values trimmed at each end, f < n/2.

    Returns:
        (d,) the trimmed mean.

    Raises:
        ValueError: for a matrix that is not (n, d) or f >= n/2.
    """
    n = check_rows(X, f, "trimmed_mean")
    return _sorted_columns(X)[..., f : n - f, :].mean(-2)  # (n - 2f, d) -> (d,)


@constrain(X=ROWS)
def pairwise_sq_distances(X: torch.Tensor) -> torch.Tensor:
    """(..., n, n) squared Euclidean distances ||X_i - X_j||^2 from the Gram matrix (one
    pass over X); non-finite distances (rows with NaN, inf or overflowing values) become +inf."""
    gram = X @ X.mT  # (..., n, n); entry (i, j) reads rows i and j only, so bad rows spoil only their own
    sq = gram.diagonal(dim1=-2, dim2=-1)  # (..., n); not finite for a row with NaN, inf or overflowing values
    finite = torch.isfinite(sq)
    D = (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2 * gram).clamp_min(0)
    eye = torch.eye(X.shape[-2], dtype=torch.bool, device=X.device)
    bad = ~finite.unsqueeze(-1) | ~finite.unsqueeze(-2) | ~torch.isfinite(D)
    return D.masked_fill(eye, 0).masked_fill(bad & ~eye, float("inf"))


@constrain(X=ROWS, f=F)
def krum_scores(X: torch.Tensor, f: int) -> torch.Tensor:
    """Krum's score of each row: the sum of its squared distances to its n - f - 2 nearest
    other rows (Blanchard et al. 2017, Section 4). Returns (n,); lower is more central.

    Raises:
        ValueError: unless n > 2f + 2.
    """
    n = check_rows(X, f, "krum", need="krum")
    D = pairwise_sq_distances.__wrapped__(X)  # (..., n, n)
    D = D.masked_fill(torch.eye(n, dtype=torch.bool, device=X.device), float("inf"))  # not its own neighbour
    nearest = D.topk(n - f - 2, dim=-1, largest=False).values  # (..., n, n - f - 2)
    return nearest.sum(-1)  # (..., n); inf for a row with a non-finite entry


@constrain(X=ROWS, f=F)
def krum(X: torch.Tensor, f: int) -> torch.Tensor:
    """Krum (Blanchard et al. 2017, "Machine learning with adversaries", arXiv:1703.02757, Section 4).

    Update: return the row X_i* with i* = argmin_i sum_{j in N_i} ||X_i - X_j||^2, N_i the
    n - f - 2 rows nearest to X_i. The paper's condition is 2f + 2 < n. Some public
    implementations use n - f neighbours; we follow the paper. Ties go to the lower index
    of the rows sorted by score, so permuting identical rows gives the same output.

    Args:
        X: (n, d) client matrix.
        f: number of Byzantine rows, n > 2f + 2.

    Returns:
        (d,) one of the rows (a copy).

    Raises:
        ValueError: for a matrix that is not (n, d) or n <= 2f + 2.
    """
    best = krum_scores.__wrapped__(X, f).argmin(-1)  # (...)
    return X.gather(-2, best[..., None, None].expand(*best.shape, 1, X.shape[-1])).squeeze(-2)


@constrain(X=ROWS, f=F, m=Integer(min=1) | None)
def multi_krum(X: torch.Tensor, f: int, m: int | None = None) -> torch.Tensor:
    """Multi-Krum (Blanchard et al. 2017, arXiv:1703.02757, Section 4): the mean of the m rows of lowest
    Krum score (m = n - f by default; m = 1 is Krum).

    Args:
        X: (n, d) client matrix.
        f: number of Byzantine rows, n > 2f + 2.
        m: rows averaged, 1 <= m <= n - f.

    Returns:
        (d,) the mean of the selected rows.

    Raises:
        ValueError: for n <= 2f + 2 or m outside [1, n - f].
    """
    scores = krum_scores.__wrapped__(X, f)  # (..., n)
    n = X.shape[-2]
    m = n - f if m is None else m
    if not 1 <= m <= n - f:
        raise ValueError(f"multi_krum: m must be in [1, n - f] = [1, {n - f}], got m={m}")
    chosen = scores.topk(m, dim=-1, largest=False).indices  # (..., m)
    return X.gather(-2, chosen[..., None].expand(*chosen.shape, X.shape[-1])).mean(-2)


_BLOCK = 16_384  # columns per block: a block's temporary stays in cache, where one of (n, d) costs page faults


def _weiszfeld_pass(
    Z: torch.Tensor, v: torch.Tensor, beta: torch.Tensor | None = None, *, distances: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One pass over the rows Z (..., n, d), block by block of columns, each block used while it
    is in cache: with weights ``beta`` (..., n), the block of the new point
    v = sum_i beta_i Z_i / sum_i beta_i; then (with ``distances``) the block's share of
    ||Z_i - v||^2, summed in float64 (no (n, d) temporary, no cancellation).

    Returns:
        v (..., d) (the one given, without ``beta``), and the distances ||Z_i - v|| (..., n) in Z's
        dtype, or None: inf where the square overflows the dtype a norm of Z accumulates in (float32
        for half precision), as ``torch.linalg.vector_norm(Z - v)`` would.
    """
    if beta is not None:
        v, w, total = Z.new_empty(v.shape), beta.unsqueeze(-2), beta.sum(-1, keepdim=True)  # (..., d), (..., 1, n), (..., 1)
    sq = Z.new_zeros(Z.shape[:-1], dtype=torch.float64)  # (..., n)
    for j in range(0, Z.shape[-1], _BLOCK):
        block = Z[..., j : j + _BLOCK]  # (..., n, b)
        if beta is not None:
            v[..., j : j + _BLOCK] = (w @ block).squeeze(-2) / total
        if distances:
            sq += torch.linalg.vector_norm(block - v[..., None, j : j + _BLOCK], dim=-1).double().square()
    if not distances:
        return v, None
    overflow = sq > torch.finfo(torch.promote_types(Z.dtype, torch.float32)).max
    return v, sq.masked_fill(overflow, float("inf")).sqrt().to(Z.dtype)


@constrain(Rule("weights", lambda X, weights: weights is None or weights.shape == X.shape[-2:-1],
                lambda X, weights: f"weights must have shape ({X.shape[-2]},), one per row of X, got {tuple(weights.shape)}"),
           Rule("weights", lambda weights: weights is None or bool((weights >= 0).all()),
                "weights must be >= 0, got a negative entry"),
           X=ROWS, f=F, nu=Real(gt=0), iterations=Integer(min=1), weights=Tensor(1, finite=True) | None)  # fmt: skip
def geometric_median(
    X: torch.Tensor, f: int = 0, *, nu: float = 1e-6, iterations: int = 8, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Geometric median by the smoothed Weiszfeld algorithm (RFA; Pillutla, Kakade,
    Harchaoui 2019, arXiv:1912.13445, Algorithm 3).

    Update, from v_0 = the coordinate-wise median:
        beta_i = alpha_i / max(nu, ||v_t - X_i||),  v_{t+1} = sum_i beta_i X_i / sum_i beta_i.
    The paper starts from any point (their code: the mean); a mean with a 1e30 row is
    1e30 away, where every weight is about the same, so we start from the median. A row
    with a NaN or inf entry is infinitely far from any point and gets weight 0, and so does
    a row whose distance overflows X's dtype.

    Each step reads X once (``_weiszfeld_pass``): block by block of columns, the block of
    v_{t+1}, then its share of the squared distances (summed in float64), while the block is
    in cache. The expanded ||X_i||^2 - 2 X_i.v + ||v||^2 (one matvec) would be cheaper, but
    its float32 dot products round at about 1e-6 of ||X_i|| ||v|| on rows of 10^4 entries:
    more than the distance itself where v is near X_i, or both are far from 0.

    Args:
        X: (n, d) client matrix.
        f: number of Byzantine rows, checked against f < n/2 (the breakdown point).
        nu: smoothing, > 0: distances below nu count as nu.
        iterations: Weiszfeld steps (the paper: 3 to 10 suffice).
        weights: (n,) alpha_i, non-negative (default: equal).

    Returns:
        (d,) the approximate geometric median.

    Raises:
        ValueError: for f >= n/2, nu <= 0, iterations < 1 or weights of the wrong shape.
    """
    n = check_rows(X, f, "geometric_median")
    alpha = torch.ones(n, dtype=X.dtype, device=X.device) if weights is None else weights.to(X.dtype)
    finite = _finite_rows(X)  # (..., n)
    alpha = torch.where(finite, alpha, torch.zeros_like(alpha))
    Z = X if finite.all() else _zero_bad_rows(X, finite)  # (..., n, d)
    v, dist = _weiszfeld_pass(Z, coordinate_median.__wrapped__(X))  # (..., d) v_0, (..., n) ||Z_i - v_0||
    for t in range(iterations):
        beta = alpha / dist.clamp_min(nu)  # (..., n); 0 for a row whose distance overflows
        v, dist = _weiszfeld_pass(Z, v, beta, distances=t + 1 < iterations)  # v_{t+1} and its distances
    return v


def _row_norms(Z: torch.Tensor) -> torch.Tensor:
    """(..., n) the Euclidean norms of the rows of Z (..., n, d), without overflow for rows of 1e30."""
    norm = torch.linalg.vector_norm(Z, dim=-1)  # (..., n)
    overflow = ~torch.isfinite(norm)  # rows of 1e30: scale by the largest entry first
    if overflow.any():
        peak = Z.abs().amax(-1).clamp_min(1e-30)  # (..., n)
        scaled = peak * torch.linalg.vector_norm(Z / peak.unsqueeze(-1), dim=-1)
        norm = torch.where(overflow, scaled, norm)
    return norm


@constrain(Rule("center", lambda X, center: center.shape == (*X.shape[:-2], X.shape[-1]),
                lambda X, center: f"center must have shape {(*X.shape[:-2], X.shape[-1])}, a row of X, "
                f"got {tuple(center.shape)}"),
           X=ROWS, center=Tensor((1, 2)), tau=Real(gt=0), iterations=Integer(min=1))  # fmt: skip
def centered_clipping(X: torch.Tensor, center: torch.Tensor, *, tau: float, iterations: int = 1) -> torch.Tensor:
    """Centered clipping (Karimireddy, He, Jaggi 2021, "Learning from history for Byzantine
    robust optimization", arXiv:2012.10333, Algorithm 2), from the previous aggregate ``center``.

    Update, from v = center, ``iterations`` times (L in the paper):
        v <- v + (1/n) sum_i clip_tau(X_i - v),  clip_tau(z) = z * min(1, tau / ||z||).
    Each Byzantine row moves v by at most tau / n, a row of 1e30 too (its norm is computed
    without overflow). A row with a NaN or inf entry adds nothing (its direction is undefined).

    Args:
        X: (n, d) client matrix (f < n/2 of its rows Byzantine: ``CenteredClipping`` checks).
        center: (d,) the previous aggregate (0 at the start).
        tau: clipping radius > 0; iterations: >= 1.

    Returns:
        (d,) the new aggregate v.
    """
    n = X.shape[-2]
    finite = _finite_rows(X)  # (..., n)
    all_finite, v = bool(finite.all()), center  # (..., d)
    for _ in range(iterations):
        Z = X - v.unsqueeze(-2)  # (..., n, d); z_i = X_i - v
        if not all_finite:
            Z = _zero_bad_rows(Z, finite)
        scale = (tau / _row_norms(Z)).clamp(max=1.0)  # (..., n), min(1, tau / ||z||); 1 for z = 0
        v = v + (scale.unsqueeze(-2) @ Z).squeeze(-2) / n
    return v


@constrain(Rule("losses", lambda G, losses: losses.shape == G.shape[:1],
                lambda G, losses: f"losses must have shape ({len(G)},), one per row of G, got {tuple(losses.shape)}"),
           Rule("losses", lambda losses: bool((losses > 0).all()), "losses must be > 0 (q-FFL raises them to powers)"),
           G=ClientMatrix(), losses=Tensor(1, finite=True), q=Real(ge=0), lr=Real(gt=0))  # fmt: skip
def q_ffl(G: torch.Tensor, losses: torch.Tensor, *, q: float, lr: float) -> torch.Tensor:
    """q-FFL's server step (Li, Sanjabi, Beirami, Smith 2020, "Fair resource allocation in
    federated learning", arXiv:1905.10497, Algorithm 1, q-FedSGD), which favours the clients of high loss.

    Update with F_k the loss of worker k at x and g_k its gradient, L = 1/lr:
        Delta_k = F_k^q g_k,  h_k = q F_k^(q-1) ||g_k||^2 + L F_k^q,
        x <- x - sum_k Delta_k / sum_k h_k,
    returned as v = sum_k Delta_k / (lr sum_k h_k) for the step x <- x - lr v. q = 0 is the mean.

    Args:
        G: (n, d) the workers' gradients; losses: (n,) their losses F_k > 0 at x.
        q: >= 0; lr: the step size > 0.

    Returns:
        (d,) v.
    """
    Fq = losses.pow(q)  # (n,)
    h = q * losses.pow(q - 1) * G.pow(2).sum(1) + Fq / lr  # (n,)
    return (Fq @ G) / (lr * h.sum())
