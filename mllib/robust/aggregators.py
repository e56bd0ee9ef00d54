"""Robust aggregators, one protocol: a client matrix (n, d), f rows of which may be Byzantine, to one row (d,).

Every aggregator is an ``Aggregator``: f (the number of Byzantine rows it must tolerate) and
its options are fixed at construction and checked there; calling it checks the matrix and f
against its paper's condition (``rules.check_rows``) and applies the rule of ``rules``. State,
where a rule has some, is explicit on the object: centered clipping's centre, Zeno's model,
q-FFL's losses; ``observe(x, batch)`` sets the last two each round (``WorkerGradients``
calls it). ``Mean`` is the non-robust baseline.

| aggregator | rule | f | stacks (R, n, d) | NaN / inf rows |
|---|---|---|---|---|
| ``Mean`` | (1/n) sum_i X_i | f < n/2 (only checked) | yes | not tolerated: one row moves it anywhere |
| ``CoordinateMedian`` | median of each column (Yin et al. 2018) | f < n/2 | yes | up to f |
| ``TrimmedMean`` | mean of each column without its f largest and f smallest | f < n/2 | yes | up to f |
| ``Krum`` | the row closest to its n - f - 2 nearest (Blanchard et al. 2017) | n > 2f + 2 | yes | up to f |
| ``MultiKrum`` | the mean of the m rows of lowest Krum score | n > 2f + 2 | yes | up to f |
| ``GeometricMedian`` | smoothed Weiszfeld (Pillutla et al. 2019) | f < n/2 | yes | up to f |
| ``CenteredClipping`` | v + (1/n) sum_i clip(X_i - v) (Karimireddy et al. 2021) | f < n/2 | yes | up to f |
| ``Zeno`` | mean of the n - f rows of best descent score (Xie et al. 2019) | f < n | yes | up to f |
| ``QFFL`` | q-FFL's loss-weighted step (Li et al. 2020), fairness, not robustness | f < n/2 (only checked) | no | not tolerated |

"Up to f": rows holding NaN, +-inf or 1e30, f of them or fewer, leave the output finite and
near the honest rows' mean (tests/test_robust.py feeds every aggregator such rows).

In ``engine.Federated``, ``aggregate(M, p_S)`` calls ``aggregator(M, p_S)``: the weights are
accepted and ignored, since a robust rule counts every row once (a Byzantine client could
claim any weight). ``make(name, f, **options)`` is the one factory.
"""
import abc
from collections.abc import Callable

import torch

from ..constraints import Function, Instance, Integer, OneOf, Real, Tensor, constrain, converted
from ..models import FlatModel
from . import rules
from .rules import F, check_rows


class Aggregator(abc.ABC):
    """A rule from a client matrix X (n, d), up to f of whose rows are Byzantine, to one row (d,).

    Subclasses implement ``aggregate`` (the rule on a checked matrix) and set ``need``, their
    paper's condition on f (see ``rules.check_f``), and ``stacks``, whether they also map a
    stack of R matrices (R, n, d) to (R, d) (R runs at once).

    Config: ``f``, the number of Byzantine rows to tolerate, and the rule's options.
    State: none here; a subclass with state lists it and returns it from ``state_dict``.
    """

    need = "half"
    stacks = True

    @constrain(f=F)
    def __init__(self, f: int = 0):
        self.f = f

    @abc.abstractmethod
    def aggregate(self, X: torch.Tensor) -> torch.Tensor:
        """The rule on a checked client matrix X (n, d) or stack (R, n, d): (d,) or (R, d)."""

    def observe(self, x: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Show the rule the round's server model x (d,) and the workers' minibatches
        (x (n, B, ...), y (n, B)) before it aggregates their messages. Most rules need neither."""
        return None

    def __call__(self, X: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Aggregate X (n, d) to (d,), or a stack (R, n, d) to (R, d).

        Args:
            X: the client matrix, f of its rows possibly Byzantine; it is not modified.
            weights: (n,) the clients' shares (``engine.Federated`` passes p_S): ignored.

        Raises:
            ValueError: for X of another rank, or f breaking the rule's condition (a list or an
            integer tensor is converted to floats first, as every public call does).
        """
        X = converted(X)
        check_rows(X, self.f, type(self).__name__, need=self.need, stacks=self.stacks)
        return self.aggregate(X)

    def max_f(self, n: int) -> int:
        """The largest f whose condition (``need``) holds for n rows, at least 0."""
        return rules.max_f(n, self.need)

    def state_dict(self) -> dict:
        return {"f": self.f}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(f={self.f})"


class Mean(Aggregator):
    """The plain average (1/n) sum_i X_i, the non-robust baseline (``rules.mean``): one
    Byzantine row moves it anywhere (breakdown point 0); f is only checked, f < n/2."""

    def aggregate(self, X: torch.Tensor) -> torch.Tensor:
        return rules.mean.__wrapped__(X, self.f)


class CoordinateMedian(Aggregator):
    """The coordinate-wise median (Yin et al. 2018, Option I; ``rules.coordinate_median``), f < n/2."""

    def aggregate(self, X: torch.Tensor) -> torch.Tensor:
        return rules.coordinate_median.__wrapped__(X, self.f)


class TrimmedMean(Aggregator):
    """The coordinate-wise mean without the f largest and f smallest values (Yin et al. 2018, arXiv:1803.01498,
    Option II; ``rules.trimmed_mean``), f < n/2."""

    def aggregate(self, X: torch.Tensor) -> torch.Tensor:
        return rules.trimmed_mean.__wrapped__(X, self.f)


class Krum(Aggregator):
    """The row of least squared distance to its n - f - 2 nearest rows (Blanchard et al. 2017,
    arXiv:1703.02757, Section 4; ``rules.krum``), n > 2f + 2."""

    need = "krum"

    def aggregate(self, X: torch.Tensor) -> torch.Tensor:
        return rules.krum.__wrapped__(X, self.f)


class MultiKrum(Aggregator):
    """The mean of the m rows of lowest Krum score (Blanchard et al. 2017, arXiv:1703.02757, Section 4;
    ``rules.multi_krum``), n > 2f + 2.

    Args:
        f: the number of Byzantine rows.
        m: rows averaged, 1 <= m <= n - f (default n - f; checked against n at each call).
    """

    need = "krum"

    @constrain(m=Integer(min=1) | None)
    def __init__(self, f: int = 0, *, m: int | None = None):
        super().__init__(f)
        self.m = m

    def aggregate(self, X: torch.Tensor) -> torch.Tensor:
        return rules.multi_krum.__wrapped__(X, self.f, self.m)


class GeometricMedian(Aggregator):
    """The geometric median by ``iterations`` smoothed Weiszfeld steps (Pillutla, Kakade,
    Harchaoui 2019, arXiv:1912.13445, Algorithm 3; ``rules.geometric_median``), f < n/2, every row weighted alike.

    Args:
        f: the number of Byzantine rows.
        nu: smoothing > 0; iterations: >= 1.
    """

    @constrain(nu=Real(gt=0), iterations=Integer(min=1))
    def __init__(self, f: int = 0, *, nu: float = 1e-6, iterations: int = 8):
        super().__init__(f)
        self.nu, self.iterations = nu, iterations

    def aggregate(self, X: torch.Tensor) -> torch.Tensor:
        return rules.geometric_median.__wrapped__(X, self.f, nu=self.nu, iterations=self.iterations)


class CenteredClipping(Aggregator):
    """Centered clipping (Karimireddy, He, Jaggi 2021, arXiv:2012.10333,
    Algorithm 2; ``rules.centered_clipping``), from its own last output, f < n/2.

    Update: v <- v + (1/n) sum_i clip_tau(X_i - v), ``iterations`` times, from the centre.

    A row is clipped at a call when it lies farther than tau from the centre the call starts
    from (with iterations = 1, the default, exactly the rows clip_tau shortens; a row with a
    NaN entry is dropped, not counted). With a tau above every such distance the rule is the mean.

    Args:
        f: the number of Byzantine rows.
        tau: clipping radius > 0; iterations: L in the paper, >= 1.

    State: ``center``, the last output (d,) or (R, d) (None before the first call: 0);
    ``clipped`` (n,) or (R, n), the calls at which each row was clipped (None before the first
    call), and ``calls``.
    """

    @constrain(tau=Real(gt=0), iterations=Integer(min=1))
    def __init__(self, f: int = 0, *, tau: float = 1.0, iterations: int = 1):
        super().__init__(f)
        self.tau, self.iterations = tau, iterations
        # State
        self.center: torch.Tensor | None = None
        self.clipped: torch.Tensor | None = None
        self.calls = 0

    def aggregate(self, X: torch.Tensor) -> torch.Tensor:
        shape = (*X.shape[:-2], X.shape[-1])
        v = torch.zeros(shape, dtype=X.dtype, device=X.device) if self.center is None else self.center  # (..., d)
        if v.shape != shape:
            raise ValueError(f"CenteredClipping: X of shape {tuple(X.shape)} does not match the centre {tuple(v.shape)}")
        far = rules._row_norms(X - v.unsqueeze(-2)) > self.tau  # (..., n): the rows clip_tau shortens
        self.clipped = far.long() if self.clipped is None else self.clipped + far
        self.calls += 1
        self.center = rules.centered_clipping.__wrapped__(X, v, tau=self.tau, iterations=self.iterations)
        return self.center.clone()

    def clipped_share(self) -> torch.Tensor:
        """(n,) or (R, n): the share of the calls so far at which each row was clipped.

        Raises:
            ValueError: before the first call.
        """
        if self.clipped is None:
            raise ValueError("CenteredClipping: no call yet, nothing clipped to report")
        return self.clipped.double() / self.calls

    def state_dict(self) -> dict:
        return {"f": self.f, "tau": self.tau, "iterations": self.iterations, "center": self.center,
                "clipped": self.clipped, "calls": self.calls}  # fmt: skip


class Zeno(Aggregator):
    """Zeno (Xie, Koyejo, Gupta 2019, "Zeno: distributed SGD with suspicion-based fault
    tolerance", arXiv:1805.10032, Definition 1 and Algorithm 1), scoring candidates on the
    server's validation batch.

    Score of candidate gradient g_i at the current model x:
        s_i = L_r(x) - L_r(x - gamma g_i) - rho ||g_i||^2
    (the estimated descent minus a penalty on the magnitude); keep the n - f highest scores
    (f is the paper's b, the candidates dropped, at least the Byzantine count) and average
    them. A NaN score counts as -inf. A stack of R client matrices (R, n, d) is scored at R
    models (R, d), one per run. The paper draws a fresh validation minibatch each step; this
    server scores on one fixed batch.

    Args:
        model: the architecture (a ``FlatModel``).
        x_val, y_val: the server's validation batch (B, ...), (B,).
        f: candidates dropped, f < n.
        gamma: the learning rate > 0; rho: the magnitude penalty >= 0.

    State: ``x`` (d,) or (R, d), the model the candidates are scored at (``observe`` sets it).
    """

    need = "honest"

    @constrain(model=Instance(FlatModel), x_val=Tensor(), y_val=Tensor(1, floating=False), gamma=Real(gt=0),
               rho=Real(ge=0))  # fmt: skip
    def __init__(self, model: FlatModel, x_val: torch.Tensor, y_val: torch.Tensor, *, f: int = 0, gamma: float,
                 rho: float = 1e-3):  # fmt: skip
        super().__init__(f)
        self.model, self.x_val, self.y_val = model, x_val, y_val
        self.gamma, self.rho = gamma, rho
        # State
        self.x: torch.Tensor | None = None

    def observe(self, x: torch.Tensor, batch=None) -> None:
        """Score at the server model x (d,), or the R models (R, d) of a stack, from now on; the
        workers' batch is not used (the server scores on its own validation batch)."""
        self.x = x

    def scores(self, X: torch.Tensor) -> torch.Tensor:
        """(n,) Zeno scores of the rows of X (n, d) at the observed model, or (R, n) for a stack (R, n, d)
        at the R observed models (or at one, (d,), for all)."""
        if self.x is None:
            raise ValueError("Zeno: no model to score at; call observe(x) with the server model first")
        if self.x.shape[-1] != X.shape[-1] or (self.x.dim() > 1 and self.x.shape[:-1] != X.shape[:-2]):
            raise ValueError(f"Zeno: X of shape {tuple(X.shape)} does not match the observed model {tuple(self.x.shape)}")
        x = self.x.unsqueeze(-2).expand(*X.shape[:-2], 1, X.shape[-1])  # (..., 1, d); one model scores a whole stack
        with torch.no_grad():
            points = torch.cat([x, x - self.gamma * X.nan_to_num(0.0, posinf=0.0, neginf=0.0)], -2)  # (..., n + 1, d)
            flat = points.reshape(-1, X.shape[-1])  # (P, d)
            xv, yv = self.x_val.expand(len(flat), *self.x_val.shape), self.y_val.expand(len(flat), -1)
            losses = self.model.loss(flat, xv, yv).view(points.shape[:-1])  # (..., n + 1)
        s = losses[..., :1] - losses[..., 1:] - self.rho * X.pow(2).sum(-1)  # (..., n)
        s = torch.where(rules._finite_rows(X), s, torch.full_like(s, -float("inf")))
        return s.nan_to_num(-float("inf"))

    def aggregate(self, X: torch.Tensor) -> torch.Tensor:
        keep = self.scores(X).topk(X.shape[-2] - self.f, dim=-1).indices  # (..., n - f)
        return X.gather(-2, keep[..., None].expand(*keep.shape, X.shape[-1])).mean(-2)

    def state_dict(self) -> dict:
        return {"f": self.f, "gamma": self.gamma, "rho": self.rho, "x": self.x}


class QFFL(Aggregator):
    """q-FFL's server step (Li, Sanjabi, Beirami, Smith 2020, arXiv:1905.10497, Algorithm 1, q-FedSGD;
    ``rules.q_ffl``): a fair rule, not a robust one, that favours the workers of high loss.

    Args:
        model: the architecture (a ``FlatModel``).
        q: >= 0 (q = 0 is the mean); lr: the server's step size > 0.
        f: only checked, f < n/2.

    State: ``losses`` (n,), each worker's minibatch loss at the server model (``observe`` sets it).
    """

    stacks = False

    @constrain(model=Instance(FlatModel), q=Real(ge=0), lr=Real(gt=0))
    def __init__(self, model: FlatModel, q: float, lr: float, *, f: int = 0):
        super().__init__(f)
        self.model, self.q, self.lr = model, q, lr
        # State
        self.losses: torch.Tensor | None = None

    def observe(self, x: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Keep each worker's loss F_k (n,) at the server model x (d,) on its minibatch."""
        xb, yb = batch
        with torch.no_grad():
            self.losses = self.model.loss(x.expand(len(xb), -1), xb, yb).clamp_min(1e-12)  # (n,)

    def aggregate(self, G: torch.Tensor) -> torch.Tensor:
        if self.losses is None or self.losses.shape != G.shape[:1]:
            got = None if self.losses is None else tuple(self.losses.shape)
            raise ValueError(f"QFFL: needs one loss per row of G ({len(G)}), got {got}; call observe(x, batch) first")
        return rules.q_ffl.__wrapped__(G, self.losses, q=self.q, lr=self.lr)

    def state_dict(self) -> dict:
        return {"f": self.f, "q": self.q, "lr": self.lr, "losses": self.losses}


class Custom(Aggregator):
    """An aggregator from a plain function (n, d) -> (d,), e.g. a lab's own median; f = 0 is
    only checked, the function handles any Byzantine rows itself."""

    @constrain(rule=Function())
    def __init__(self, rule: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__(0)
        self.rule = rule

    def aggregate(self, X: torch.Tensor) -> torch.Tensor:
        return self.rule(X)


@constrain(rule=Function())
def as_aggregator(rule: Aggregator | Callable[[torch.Tensor], torch.Tensor]) -> Aggregator:
    """``rule`` itself if it is an ``Aggregator``, else ``Custom(rule)``."""
    return rule if isinstance(rule, Aggregator) else Custom(rule)


AGGREGATORS = {
    "mean": Mean, "median": CoordinateMedian, "trimmed mean": TrimmedMean, "krum": Krum, "multi-krum": MultiKrum,
    "geometric median": GeometricMedian, "centered clipping": CenteredClipping, "zeno": Zeno, "q-ffl": QFFL,
}  # fmt: skip


@constrain(name=OneOf(*AGGREGATORS), f=F)
def make(name: str, f: int, **options) -> Aggregator:
    """A fresh aggregator by name, for f Byzantine rows: ``AGGREGATORS[name](f=f, **options)``.

    Names: "mean", "median", "trimmed mean", "krum", "multi-krum" (option m), "geometric
    median" (nu, iterations), "centered clipping" (tau, iterations), "zeno" (model, x_val,
    y_val, gamma, rho), "q-ffl" (model, q, lr).

    Raises:
        ValueError: for an unknown name or a bad option (TypeError for an unknown option).
    """
    return AGGREGATORS[name](f=f, **options)
