"""Renyi-DP accounting for the subsampled Gaussian mechanism, and calibration of sigma.

Analysis (pure functions, keyword-only) is kept apart from the thin ``RDPAccountant``
whose only state is its history of (q, sigma, steps), as in Opacus's accountants.
"""
import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, special

from ..constraints import Integer, Probability, Real, Reals, Rule, constrain

# Orders alpha at which the RDP curve is evaluated: fine steps near 1, integers up to 63
# (the grid Opacus and TF Privacy use, so that both minimize over the same orders).
ORDERS = tuple([1 + x / 10 for x in range(1, 100)] + list(range(12, 64)))


# Bounds that keep every call short: sigma is finite (the series of _log_a never ends for an
# infinite or NaN sigma); the series at order alpha has about alpha terms, so orders stop at
# MAX_ORDER (the optimal order of a useful guarantee is far below); a float multiplies the
# curve by steps, so steps stops at MAX_STEPS (more than any run takes).
MAX_ORDER, MAX_STEPS = 1e4, 10**18
STEP = dict(q=Probability(), sigma=Real(gt=0), steps=Integer(min=0, max=MAX_STEPS))
DELTA = Real(gt=0, lt=1)
ORDERS_ = Reals(gt=1, le=MAX_ORDER)
RESOLUTION = 1e-12  # below this, log A_alpha is lost in the series' rounding
MAX_TERMS = 2**22  # the series' tails decay at least like k^-(alpha+1); this bounds the loop for alpha near 1


def _log_a(q: float, sigma: float, alpha: float) -> float:
    """log A_alpha, A_alpha = E_{z ~ mu_0}[(mu(z) / mu_0(z))^alpha], mu = (1-q) mu_0 + q mu_1.

    Integer alpha: the binomial expansion (Mironov, Talwar, Zhang 2019, Sec. 3.3)
        A = sum_k C(alpha, k) (1-q)^(alpha-k) q^k exp((k^2 - k) / (2 sigma^2)).
    Fractional alpha: the same paper's two convergent series, split at
    z0 = sigma^2 log(1/q - 1) + 1/2 where mu_0 and mu cross; here with Gaussian tails
    written as Phi: 1/2 erfc((k - z0)/(sqrt2 sigma)) = Phi((z0 - k)/sigma).

    Subsampling only helps, and A >= q^alpha E[(mu_1/mu_0)^alpha], so
        max(0, alpha log q + g) <= log A <= g,  g = alpha (alpha - 1) / (2 sigma^2)
    (g: the full-batch Gaussian). The result is kept in these bounds (the series' rounding can
    leave them by 1e-13); where they meet (tiny sigma) or g is below the series' resolution
    (huge sigma, where the series would take millions of terms to answer 0), g is the answer.
    """
    g = alpha * (alpha - 1) / 2 / sigma / sigma  # in this order: sigma**2 overflows for sigma > 1e154
    low = max(0.0, alpha * math.log(q) + g)
    if low == g or g < RESOLUTION:
        return g
    if float(alpha).is_integer():
        k = np.arange(int(alpha) + 1)
        terms = (
            special.gammaln(alpha + 1) - special.gammaln(k + 1) - special.gammaln(alpha - k + 1)
            + k * math.log(q) + (alpha - k) * math.log1p(-q) + (k * k - k) / (2 * sigma**2)
        )  # fmt: skip
        return float(np.clip(special.logsumexp(terms), low, g))
    log_q, log_1q = math.log(q), math.log1p(-q)
    z0 = sigma**2 * (log_1q - log_q) + 0.5  # log(1/q - 1) without 1/q, which overflows for q < 1e-308
    parts0, parts1, signs, start, size = [], [], [], 0, 64
    while True:  # blocks of 64, 128, ... terms until both series' terms fall below e^-30
        k = np.arange(start, start + size, dtype=float)
        j = alpha - k
        # log |C(alpha, k)| and its sign from Gamma functions (special.binom overflows for alpha > 1e3)
        log_c = special.gammaln(alpha + 1) - special.gammaln(k + 1) - special.gammaln(j + 1)
        s0 = log_c + k * log_q + j * log_1q + (k * k - k) / (2 * sigma**2) + special.log_ndtr((z0 - k) / sigma)
        s1 = log_c + j * log_q + k * log_1q + (j * j - j) / (2 * sigma**2) + special.log_ndtr((j - z0) / sigma)
        parts0.append(s0), parts1.append(s1), signs.append(special.gammasgn(j + 1))
        start, size = start + size, min(2 * size, 2**16)
        if max(s0[-1], s1[-1]) < -30 or start >= MAX_TERMS:
            break
    b = np.concatenate(signs)
    a0 = special.logsumexp(np.concatenate(parts0), b=b)
    a1 = special.logsumexp(np.concatenate(parts1), b=b)
    return float(np.clip(np.logaddexp(a0, a1), low, g))


@constrain(**STEP, orders=ORDERS_)
def compute_rdp(*, q: float, sigma: float, steps: int, orders: Sequence[float] = ORDERS) -> np.ndarray:
    """RDP epsilon(alpha) of ``steps`` compositions of the Poisson-subsampled Gaussian mechanism.

    epsilon(alpha) = steps * log(A_alpha) / (alpha - 1) for a mechanism of L2 sensitivity 1
    with noise N(0, sigma^2) and sampling rate q (Mironov 2017, arXiv:1702.07476, Prop. 1 for composition;
    Mironov, Talwar, Zhang 2019 for A_alpha). q = 1 gives the plain Gaussian alpha/(2 sigma^2).

    Args:
        q: sampling rate in [0, 1].
        sigma: noise multiplier (> 0): noise std over sensitivity.
        steps: number of compositions.
        orders: orders alpha in (1, MAX_ORDER].

    Returns:
        (len(orders),) RDP epsilons (inf where they pass 1e308: no privacy left).

    Raises:
        ValueError: for q outside [0, 1], sigma <= 0 or not finite, steps outside [0, MAX_STEPS] or an
            order outside (1, MAX_ORDER].
    """
    if q == 0 or steps == 0:
        return np.zeros(len(orders))
    with np.errstate(over="ignore"):  # a curve beyond 1e308 is inf: no privacy left
        if q == 1:
            return steps * np.asarray(orders, dtype=float) / 2 / sigma / sigma
        return steps * np.array([_log_a(q, sigma, a) / (a - 1) for a in orders])


@constrain(Rule("rdp", lambda rdp, orders: len(rdp) == len(orders),
               "rdp must hold one value per order, got {rdp} for {orders}"),
           rdp=Reals(ge=0, infinite=True), delta=DELTA, orders=ORDERS_)  # fmt: skip
def rdp_to_epsilon(*, rdp: np.ndarray, delta: float, orders: Sequence[float] = ORDERS) -> tuple[float, float]:
    """The smallest (epsilon, delta)-DP guarantee implied by an RDP curve, and its order.

    Balle, Barthe, Gaboardi, Hsu, Sato 2020, Theorem 21:
        epsilon = min_alpha rdp(alpha) + log((alpha - 1)/alpha) - (log delta + log alpha)/(alpha - 1),
    tighter than Mironov 2017's rdp(alpha) + log(1/delta)/(alpha - 1).

    Returns:
        (epsilon, best alpha); epsilon is clipped at 0.

    Raises:
        ValueError: if delta is not in (0, 1), or rdp and orders differ in length.
    """
    a = np.asarray(orders, dtype=float)
    eps = np.asarray(rdp) + np.log1p(-1 / a) - (math.log(delta) + np.log(a)) / (a - 1)
    eps = np.where(np.isnan(eps), np.inf, eps)
    best = int(np.argmin(eps))
    return max(0.0, float(eps[best])), float(a[best])


@constrain(**STEP, delta=DELTA, orders=ORDERS_)
def epsilon(*, q: float, sigma: float, steps: int, delta: float, orders: Sequence[float] = ORDERS) -> float:
    """(epsilon, delta)-DP of ``steps`` steps of DP-SGD (``compute_rdp`` then ``rdp_to_epsilon``)."""
    rdp = compute_rdp.__wrapped__(q=q, sigma=sigma, steps=steps, orders=orders)
    return rdp_to_epsilon.__wrapped__(rdp=rdp, delta=delta, orders=orders)[0]


@constrain(target_epsilon=Real(gt=0), delta=DELTA, q=Real(gt=0, le=1), steps=Integer(min=1, max=MAX_STEPS),
           tolerance=Real(ge=1e-12, lt=0.5))  # fmt: skip
def calibrate_sigma(
    *, target_epsilon: float, delta: float, q: float, steps: int, tolerance: float = 1e-3
) -> float:
    """The smallest noise multiplier (to a relative ``tolerance``) whose epsilon is <= the target.

    Bisection on log sigma; epsilon(sigma) decreases in sigma. Guarantees
    epsilon(sigma) <= target_epsilon < epsilon((1 - tolerance) sigma).

    Raises:
        ValueError: for target_epsilon <= 0, delta outside (0, 1), q outside (0, 1] or tolerance
            outside [1e-12, 0.5) (a finer one is lost in the rounding of sigma and epsilon).
    """

    def eps(s: float) -> float:
        return epsilon.__wrapped__(q=q, sigma=s, steps=steps, delta=delta, orders=ORDERS)

    low, high = 0.05, 1.0
    while eps(high) > target_epsilon:  # bracket the root: eps(low) > target >= eps(high)
        low, high = high, 2 * high
        if high > 1e4:
            raise ValueError(f"target_epsilon={target_epsilon} needs sigma > 1e4; raise it or lower steps")
    while eps(low) <= target_epsilon:
        low, high = low / 2, low
        if low < 1e-6:
            return high
    # Brent's method on log sigma, then step up to the safe side of the root.
    root = optimize.brentq(lambda ls: eps(math.exp(ls)) - target_epsilon, math.log(low), math.log(high),
                           xtol=tolerance / 4)  # fmt: skip
    sigma = math.exp(root + tolerance / 4)
    while sigma < high and eps(sigma) > target_epsilon:  # eps(high) <= target_epsilon ends it
        sigma *= 1 + tolerance / 4
    return min(sigma, high)


class RDPAccountant:
    """Tracks the privacy spent by a sequence of subsampled Gaussian steps.

    Update: after ``step(q, sigma)``, the RDP curve adds ``compute_rdp(q, sigma, 1)``;
    ``epsilon(delta)`` converts it (Balle et al. 2020, Theorem 21).

    State:
        history: list of [sigma, q, steps], consecutive identical steps merged.
    """

    @constrain(orders=ORDERS_)
    def __init__(self, orders: Sequence[float] = ORDERS):
        self.orders = tuple(orders)
        # State
        self.history: list[list] = []

    @constrain(**STEP)
    def step(self, *, q: float, sigma: float, steps: int = 1) -> None:
        """Record ``steps`` steps at sampling rate q and noise multiplier sigma."""
        if self.history and self.history[-1][:2] == [sigma, q]:
            self.history[-1][2] += steps
        else:
            self.history.append([sigma, q, steps])

    @constrain(delta=DELTA)
    def epsilon(self, delta: float) -> float:
        """The epsilon spent so far at this delta (0 before any step)."""
        if not self.history:
            return 0.0
        rdp = sum(compute_rdp.__wrapped__(q=q, sigma=s, steps=t, orders=self.orders) for s, q, t in self.history)
        return rdp_to_epsilon.__wrapped__(rdp=rdp, delta=delta, orders=self.orders)[0]

    def state_dict(self) -> dict:
        return {"history": [list(h) for h in self.history]}
