"""Personal models on the client matrix: local training, fine-tuning, Ditto, interpolation,
and training in stages (sequential fine-tuning over tasks, clients that join and leave).

Every function works on the (n_clients, d) client matrix: row i is client i's personal model.
"""
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from ..clients import CLIENTS, LOCAL_SGD, MODEL, LocalSGD, evaluate
from ..constraints import (
    ClientMatrix, Generator, Generators, Indices, Instance, Integer, Probability, Real, Reals, Rule, Tensor, constrain,
)  # fmt: skip
from ..engine import Federated, History, everyone, run, uniform
from ..models import FlatModel
from ..partition import Clients

ONE_MODEL = Tensor(1, description="one model of shape (d,)")
FEDAVG = dict(rounds=Integer(min=1), local_steps=Integer(min=0), lr=Real(ge=0), batch_size=Integer(min=1))
DITTO = dict(lr=Real(gt=0), lam=Real(ge=0))
STAGES = Instance(list, tuple, description="a list of stages, each a list of client indices")
NON_EMPTY_STAGES = Rule("stages", lambda stages: len(stages) > 0 and all(len(stage) for stage in stages),
                        lambda stages: f"stages must list at least one non-empty set of active clients, got {stages}")
ROW_OF_V = Rule("w", lambda V, w: w.shape[-1] == V.shape[1],
                "w must have shape ({V.shape[1]},) like a row of V, got {w.shape}")


def _one_model(x: str) -> Rule:
    """A Rule: the argument ``x`` (None allowed) is one model (d,) of the argument ``model``."""
    return Rule(x, lambda **a: a[x] is None or a[x].shape == (a["model"].dim,),
                lambda **a: f"{x} must be one model of shape ({a['model'].dim},), got {tuple(a[x].shape)}")


@constrain(Rule("among", lambda clients, among: len(among) > 0 and all(0 <= int(i) < clients.n for i in among),
                lambda clients, among: f"among must list client indices in [0, {clients.n}), got "
                f"{[int(i) for i in among]}"),
           Rule("max_samples", lambda among, max_samples: not isinstance(max_samples, torch.Tensor)
                or (max_samples.shape == (len(among),) and bool((max_samples >= 1).all())),
                "max_samples must be >= 1, one count or one per client of among, got {max_samples}"),
           clients=CLIENTS, among=Indices() | Instance(range),
           max_samples=Integer(min=1) | Indices() | None)  # fmt: skip
def restrict(clients: Clients, among: Sequence[int], max_samples: Sequence[int] | int | None = None) -> Clients:
    """The federation of the clients ``among`` only (in that order, repeats allowed).

    Args:
        clients: the whole federation.
        among: indices of the clients to keep, each in [0, n).
        max_samples: keep only the first ``max_samples`` samples of each kept client (one
            count for all, or one per entry of ``among``); default: all of them.

    Returns:
        A ``Clients`` whose client j is client ``among[j]`` (its data, test distribution,
        rotation and label map).

    Raises:
        ValueError: for an empty ``among``, an index out of range, or a count < 1.
    """
    among = [int(i) for i in among]
    if max_samples is None:
        counts = [int(clients.sizes[i]) for i in among]
    else:
        wanted = [max_samples] * len(among) if isinstance(max_samples, int) else max_samples.tolist()
        counts = [min(m, int(clients.sizes[i])) for m, i in zip(wanted, among)]
    offsets = clients.offsets.tolist()
    rows = torch.cat([torch.arange(offsets[i], offsets[i] + c) for i, c in zip(among, counts)])
    index = torch.tensor(among)
    kept = replace(
        clients,
        x=clients.x[rows.to(clients.x.device)],
        y=clients.y[rows.to(clients.y.device)],
        sizes=torch.tensor(counts),
        test_weights=clients.test_weights[index.to(clients.test_weights.device)],
    )
    if clients.rotations is not None:
        kept = replace(kept, rotations=clients.rotations[index])
    if clients.label_maps is not None:
        kept = replace(kept, label_maps=clients.label_maps[index.to(clients.label_maps.device)])
    return kept


@constrain(_one_model("w"), Rule("yb", lambda xb, yb: xb.shape[:3] == yb.shape,
                                 "yb must have shape (T, n, B), the first dimensions of xb {xb.shape}, got {yb.shape}"),
           model=MODEL, w=ONE_MODEL, xb=Tensor(range(4, 8), empty=True, description="batches of shape (T, n, B, ...)"),
           yb=Tensor(3, integer=True, empty=True), lr=Real())  # fmt: skip
def fine_tune_on(model: FlatModel, w: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor, lr: float) -> torch.Tensor:
    """Fine-tune the global model on every client at once, on given minibatches.

    Update, for t = 1..T and every client i: v_i <- v_i - lr * grad f_i(v_i; batch_t,i),
    starting from v_i = w (Yu, Bagdasaryan, Shmatikov 2020, "Salvaging federated learning
    by local adaptation").

    Args:
        model: the architecture.
        w: (d,) the global model.
        xb: (T, n, B, ...) the T minibatches of every client; yb: (T, n, B) their labels.
        lr: step size (any finite number: a negative one ascends).

    Returns:
        (n, d) the personal models; with T = 0, n copies of w.

    Raises:
        ValueError: for a w that is not a row of this model or batches of mismatched shapes.
    """
    V = w.expand(xb.shape[1], -1).clone()  # (n, d)
    for x, y in zip(xb, yb):
        V = torch.add(V, model.grad(V, x, y), alpha=-lr)
    return V


@constrain(_one_model("w"), model=MODEL, w=ONE_MODEL, clients=CLIENTS, **LOCAL_SGD)
def fine_tune(
    model: FlatModel, w: torch.Tensor, clients: Clients, *, steps: int, lr: float, batch_size: int, gen: torch.Generator
) -> torch.Tensor:
    """``steps`` local SGD steps on every client from the global model w: (n, d).

    The minibatches are those ``local_sgd`` would draw from ``gen``, so the result equals
    ``local_sgd(model, w.expand(n, -1), clients, ...)``; zero steps return the global model.
    """
    batches = [clients.batches(batch_size, gen) for _ in range(steps)]
    if not batches:
        return w.expand(clients.n, -1).clone()
    xb, yb = (torch.stack(parts) for parts in zip(*batches))
    return fine_tune_on(model, w, xb, yb, lr)


@constrain(Rule("G", lambda V, G: G.shape == V.shape, "G must have the shape of V, {V.shape}, got {G.shape}"), ROW_OF_V,
           V=ClientMatrix(), w=Tensor((1, 2)), G=ClientMatrix(), **DITTO)  # fmt: skip
def ditto_update(V: torch.Tensor, w: torch.Tensor, G: torch.Tensor, lr: float, lam: float) -> torch.Tensor:
    """One proximal step of Ditto's personal models toward the global model.

    Ditto's personal objective is f_i(v) + lam/2 ||v - w||^2 (Li, Hu, Beirami, Smith 2021,
    "Ditto: fair and robust federated learning through personalization", arXiv:2012.04221, Algorithm 1).
    The paper takes the gradient step v <- v - lr (grad f_i(v) + lam (v - w)), which
    diverges once lr * lam > 2; we take the proximal (implicit) step on the quadratic,

        v <- (v - lr * grad f_i(v) + lr * lam * w) / (1 + lr * lam),

    which is the same to first order in lr, equals local SGD at lam = 0 and tends to w
    as lam grows, for any lr.

    Args:
        V: (n, d) personal models.
        w: (d,) or (n, d) global model(s).
        G: (n, d) gradients of f_i at V.
        lr: step size > 0; lam: proximal strength >= 0.

    Returns:
        (n, d) the new personal models; the inputs are not modified.

    Raises:
        ValueError: for lr <= 0, lam < 0 or mismatched shapes.
    """
    return (torch.add(V, G, alpha=-lr) + (lr * lam) * w) / (1 + lr * lam)


class Ditto:
    """Ditto's local update (Li et al. 2021, arXiv:2012.04221, Algorithm 1), a local part of ``engine.Federated``:
    (w (d,), S (|S|,)) -> U (|S|, d).

    Each client i of S
        1. runs ``steps`` SGD steps from the global model w (FedAvg's local solver, ``LocalSGD``)
           and sends the update U_i = y_i - w;
        2. runs ``personal_steps`` proximal steps (``ditto_update``) of its personal model v_i
           toward w, on minibatches from ``personal_gen``.

    Args:
        model, clients: the architecture and the clients' data.
        x0: (d,) the personal models' common start.
        steps, personal_steps: >= 0; lr > 0; lam >= 0; batch_size >= 1.
        gen: CPU generator for the global update's minibatches; personal_gen for the personal ones.

    State: ``personal`` (n, d), the clients' personal models.
    """

    @constrain(_one_model("x0"), model=MODEL, clients=CLIENTS, x0=ONE_MODEL, steps=Integer(min=0),
               personal_steps=Integer(min=0), **DITTO, batch_size=Integer(min=1), gen=Generators(),
               personal_gen=Generator())  # fmt: skip
    def __init__(self, model: FlatModel, clients: Clients, x0: torch.Tensor, *, steps: int, personal_steps: int,
                 lr: float, lam: float, batch_size: int, gen: torch.Generator,
                 personal_gen: torch.Generator):  # fmt: skip
        self.fedavg = LocalSGD(model, clients, steps=steps, lr=lr, batch_size=batch_size, gen=gen)
        self.model, self.clients, self.personal_gen = model, clients, personal_gen
        self.personal_steps, self.lr, self.lam, self.batch_size = personal_steps, lr, lam, batch_size
        # State
        self.personal = x0.expand(clients.n, -1).clone()  # (n, d)

    def __call__(self, w: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        U = self.fedavg(w, S)  # 1. (|S|, d)
        V = self.personal[S]  # 2. (|S|, d)
        for _ in range(self.personal_steps):
            xb, yb = self.clients.batches(self.batch_size, self.personal_gen, S)
            V = ditto_update.__wrapped__(V, w, self.model.grad(V, xb, yb), self.lr, self.lam)  # lr, lam checked above
        self.personal = self.personal.index_copy(0, S, V)
        return U

    def state_dict(self) -> dict:
        return {"personal": self.personal}


@constrain(_one_model("x0"), model=MODEL, clients=CLIENTS, **(FEDAVG | DITTO), gen=Generator(),
           personal_steps=Integer(min=0), x0=ONE_MODEL | None, eval_every=Integer(min=1))  # fmt: skip
def ditto(
    model: FlatModel,
    clients: Clients,
    *,
    rounds: int,
    local_steps: int,
    personal_steps: int,
    lr: float,
    lam: float,
    batch_size: int,
    gen: torch.Generator,
    x0: torch.Tensor | None = None,
    eval_every: int = 1,
) -> History:
    """Ditto (Li et al. 2021, arXiv:2012.04221, Algorithm 1) on the round engine, every client in every round.

    One round t:
        1. the server sends w^t to every client;
        2. global update: each client runs ``local_steps`` SGD steps from w^t (FedAvg's local
           solver) and the server averages the results, weighted by client size: w^{t+1};
        3. personal update: each client runs ``personal_steps`` proximal steps
           (``ditto_update``) of its own v_i toward w^t.
    The clients' side of steps 2 and 3 is the local part ``Ditto``; the averaging is ``engine.Federated``'s.

    The personal steps draw their minibatches from their own generator, seeded once from
    ``gen``, so that lam = 0 is exactly local training from x0 with that generator.

    Args:
        lam: proximal strength >= 0: 0 is local training, large lam approaches the global model.
        x0: (d,) the common initialization of w and every v_i (default: ``model.init(gen)``).
        eval_every: record every this many rounds (and after the last), >= 1.

    Returns:
        The ``engine.History`` with metrics "personal_accuracy" (each client's personal model on
        its own test distribution) and "global_accuracy" (the global model on each client's),
        each (n,) per recorded round; ``history.model`` is the global model w (d,),
        ``history.algorithm.local.personal`` the personal models (n, d).

    Raises:
        ValueError: for rounds < 1, eval_every < 1 or a negative number of steps.
    """
    personal_gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
    device = clients.x.device
    w = model.init(gen, device) if x0 is None else x0.to(device)  # (d,)
    local = Ditto(model, clients, w, steps=local_steps, personal_steps=personal_steps, lr=lr, lam=lam,
                  batch_size=batch_size, gen=gen, personal_gen=personal_gen)  # fmt: skip
    federation = Federated(w, local=local, select=everyone(clients.n), weights=clients.sizes.to(device))
    metrics = {"personal_accuracy": lambda f: evaluate(model, f.local.personal, clients),
               "global_accuracy": lambda f: evaluate(model, f.x, clients)}  # fmt: skip
    return run(federation, rounds, metrics=metrics, eval_every=eval_every)


@constrain(Rule("alpha", lambda V, alpha: isinstance(alpha, float)
                or (alpha.shape == (len(V),) and bool(((alpha >= 0) & (alpha <= 1)).all())),
                lambda V, alpha: f"alpha must be in [0, 1], a number or one per client ({len(V)},), got {alpha}"),
           ROW_OF_V, V=ClientMatrix(), w=Tensor((1, 2)), alpha=Probability() | Tensor(1, finite=True))  # fmt: skip
def interpolate(V: torch.Tensor, w: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """Model interpolation alpha * v_i + (1 - alpha) * w for every client: (n, d).

    Mansour, Mohri, Ro, Suresh 2020 ("Three approaches for personalization with
    applications to federated learning", Section 4) and Deng et al. 2020 (APFL).

    Args:
        V: (n, d) local models; w: (d,) global model.
        alpha: weight of the local model in [0, 1], one for all or (n,) one per client.

    Raises:
        ValueError: for an alpha outside [0, 1] or of the wrong shape.
    """
    alpha = torch.as_tensor(alpha, dtype=V.dtype, device=V.device)
    a = alpha.reshape(-1, 1) if alpha.dim() == 1 else alpha
    return a * V + (1 - a) * w


@constrain(ROW_OF_V, model=MODEL, V=ClientMatrix(), w=Tensor(1), clients=CLIENTS, alphas=Reals(ge=0, le=1))
def interpolation_sweep(
    model: FlatModel, V: torch.Tensor, w: torch.Tensor, clients: Clients, alphas: Sequence[float]
) -> torch.Tensor:
    """Each client's accuracy with interpolate(V, w, alpha), for each alpha.

    Args:
        V: (n, d) local models; w: (d,) global model; alphas: weights of the local model.

    Returns:
        (len(alphas), n) accuracy of each client on its own test distribution.
    """
    return torch.stack([evaluate(model, interpolate.__wrapped__(V, w, a), clients) for a in alphas])


@constrain(NON_EMPTY_STAGES, stages=STAGES, rounds=Integer(min=1), gen=Generator())
def stage_selection(stages: Sequence[Sequence[int]], rounds: int, gen: torch.Generator) -> Callable:
    """The selection part of training in stages: round r's clients are all of stage
    (r - 1) // rounds, in the order listed (full participation within the stage).

    Each round draws a permutation of the stage's clients from ``gen`` and sorts it, as
    ``run_rounds`` samples full participation, so that a stage equals ``run_rounds`` on
    ``restrict(clients, stage)`` with the same generator.

    Args:
        stages: the clients of each stage (indices, repeats allowed), none empty.
        rounds: rounds per stage, >= 1.
        gen: the CPU generator the draws advance.

    Returns:
        r -> (|stage|,) the client indices of round r = 1 .. len(stages) * rounds.
    """
    active = [torch.tensor([int(i) for i in stage]) for stage in stages]
    draws = [uniform(len(stage), len(stage), gen) for stage in active]
    return lambda r: active[(r - 1) // rounds][draws[(r - 1) // rounds](r)]


@constrain(NON_EMPTY_STAGES,
           Rule("stages", lambda clients, stages: all(0 <= int(i) < clients.n for s in stages for i in s),
                lambda clients, stages: f"stages must hold client indices in [0, {clients.n}), got {stages}"),
           _one_model("x0"), model=MODEL, clients=CLIENTS, stages=STAGES, **FEDAVG, gen=Generator(),
           x0=ONE_MODEL | None)  # fmt: skip
def train_in_stages(
    model: FlatModel,
    clients: Clients,
    stages: Sequence[Sequence[int]],
    *,
    rounds: int,
    local_steps: int,
    lr: float,
    batch_size: int,
    gen: torch.Generator,
    x0: torch.Tensor | None = None,
) -> History:
    """Federated averaging over a changing set of active clients, one stage after another.

    Stage s runs ``rounds`` FedAvg rounds among the clients ``stages[s]`` only, starting
    from the model the previous stage ended with; then every client (active or not)
    evaluates it. One client per stage is sequential fine-tuning over tasks; overlapping
    stages are clients that join and leave (continual federated learning: Yoon et al. 2021,
    "Federated continual learning with weighted inter-client transfer").
    On the round engine: FedAvg's ``LocalSGD`` with ``stage_selection`` as selection part.

    Args:
        stages: the clients active in each stage (indices into ``clients``), at least one stage.
        rounds: FedAvg rounds per stage, >= 1.
        x0: (d,) the initial model (default: ``model.init(gen)``).

    Returns:
        The ``engine.History``, recorded after each stage (rounds ``rounds``, 2 ``rounds``, ...),
        with metric "client_accuracy": (n,) every client's accuracy on its own test
        distribution; ``history.model`` is the model after the last stage (d,).
        ``forgetting(history, group)`` measures catastrophic forgetting.

    Raises:
        ValueError: for no stages, an empty stage or a client index out of range.
    """
    device = clients.x.device
    x = model.init(gen, device) if x0 is None else x0.to(device)
    federation = Federated(
        x, select=stage_selection(stages, rounds, gen), weights=clients.sizes.to(device),
        local=LocalSGD(model, clients, steps=local_steps, lr=lr, batch_size=batch_size, gen=gen),
    )  # fmt: skip
    return run(federation, len(stages) * rounds, metrics={"client_accuracy": lambda f: evaluate(model, f.x, clients)},
               eval_every=rounds)  # fmt: skip


@constrain(history=Instance(History), group=Indices())
def forgetting(history: History, group: Sequence[int]) -> float:
    """Catastrophic forgetting of the clients ``group`` in a run of ``train_in_stages``: the mean
    over them of (best accuracy over the stages - final accuracy).

    Args:
        history: a run that recorded "client_accuracy", (n,) per stage.
        group: client indices.

    Returns:
        The mean drop, >= 0 (0: no client of the group ever scored better than at the end).
    """
    acc = torch.stack(history["client_accuracy"])[:, group.tolist()]  # (stages, |group|)
    return float((acc.max(0).values - acc[-1]).mean())
