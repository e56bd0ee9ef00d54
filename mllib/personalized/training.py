"""Personal models on the client matrix: local training, fine-tuning, Ditto, interpolation,
and training in stages (sequential fine-tuning over tasks, clients that join and leave).

Every function works on the (n_clients, d) client matrix: row i is client i's personal model.
"""
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from ..clients import evaluate, local_sgd, run_rounds, weighted_average
from ..models import FlatModel
from ..partition import Clients


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
    if not among or min(among) < 0 or max(among) >= clients.n:
        raise ValueError(f"among must list client indices in [0, {clients.n}), got {among}")
    if max_samples is None:
        counts = [int(clients.sizes[i]) for i in among]
    else:
        wanted = [max_samples] * len(among) if isinstance(max_samples, int) else [int(m) for m in max_samples]
        if len(wanted) != len(among) or min(wanted) < 1:
            raise ValueError(f"max_samples must be >= 1, one count or one per client of among, got {max_samples}")
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


def fine_tune_on(model: FlatModel, w: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor, lr: float) -> torch.Tensor:
    """Fine-tune the global model on every client at once, on given minibatches.

    Update, for t = 1..T and every client i: v_i <- v_i - lr * grad f_i(v_i; batch_t,i),
    starting from v_i = w (Yu, Bagdasaryan, Shmatikov 2020, "Salvaging federated learning
    by local adaptation").

    Args:
        model: the architecture.
        w: (d,) the global model.
        xb: (T, n, B, ...) the T minibatches of every client; yb: (T, n, B) their labels.
        lr: step size.

    Returns:
        (n, d) the personal models; with T = 0, n copies of w.

    Raises:
        ValueError: for a w that is not a row of this model or batches of mismatched shapes.
    """
    if w.shape != (model.dim,):
        raise ValueError(f"w must be one model of shape ({model.dim},), got {tuple(w.shape)}")
    if xb.shape[:3] != yb.shape:
        raise ValueError(f"xb (T, n, B, ...) and yb (T, n, B) disagree: {tuple(xb.shape)} vs {tuple(yb.shape)}")
    V = w.expand(xb.shape[1], -1).clone()  # (n, d)
    for x, y in zip(xb, yb):
        V = torch.add(V, model.grad(V, x, y), alpha=-lr)
    return V


def fine_tune(
    model: FlatModel, w: torch.Tensor, clients: Clients, *, steps: int, lr: float, batch_size: int, gen: torch.Generator
) -> torch.Tensor:
    """``steps`` local SGD steps on every client from the global model w: (n, d).

    The minibatches are those ``local_sgd`` would draw from ``gen``, so the result equals
    ``local_sgd(model, w.expand(n, -1), clients, ...)``; zero steps return the global model.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    batches = [clients.batches(batch_size, gen) for _ in range(steps)]
    if not batches:
        return w.expand(clients.n, -1).clone()
    xb, yb = (torch.stack(parts) for parts in zip(*batches))
    return fine_tune_on(model, w, xb, yb, lr)


def ditto_update(V: torch.Tensor, w: torch.Tensor, G: torch.Tensor, lr: float, lam: float) -> torch.Tensor:
    """One proximal step of Ditto's personal models toward the global model.

    Ditto's personal objective is f_i(v) + lam/2 ||v - w||^2 (Li, Hu, Beirami, Smith 2021,
    "Ditto: fair and robust federated learning through personalization", Algorithm 1).
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
    if not lr > 0 or not lam >= 0:
        raise ValueError(f"need lr > 0 and lam >= 0, got lr={lr}, lam={lam}")
    if V.dim() != 2 or G.shape != V.shape or w.shape[-1] != V.shape[1]:
        raise ValueError(f"V and G must be (n, d) and w (d,): got {tuple(V.shape)}, {tuple(G.shape)}, {tuple(w.shape)}")
    return (torch.add(V, G, alpha=-lr) + (lr * lam) * w) / (1 + lr * lam)


@dataclass
class DittoResult:
    """Ditto's personal models, its global model and per-round accuracies of both."""

    personal: torch.Tensor  # (n, d)
    global_model: torch.Tensor  # (d,)
    rounds: list[int]
    personal_accuracy: list[torch.Tensor]  # each (n,), each client's model on its own test distribution
    global_accuracy: list[torch.Tensor]  # each (n,), the global model on each client's test distribution


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
) -> DittoResult:
    """Ditto (Li et al. 2021, Algorithm 1) with every client taking part in every round.

    One round t:
        1. the server sends w^t to every client;
        2. global update: each client runs ``local_steps`` SGD steps from w^t (FedAvg's local
           solver) and the server averages the results, weighted by client size: w^{t+1};
        3. personal update: each client runs ``personal_steps`` proximal steps
           (``ditto_update``) of its own v_i toward w^t.

    The personal steps draw their minibatches from their own generator, seeded once from
    ``gen``, so that lam = 0 is exactly local training from x0 with that generator.

    Args:
        lam: proximal strength >= 0: 0 is local training, large lam approaches the global model.
        x0: (d,) the common initialization of w and every v_i (default: ``model.init(gen)``).

    Returns:
        A ``DittoResult``.
    """
    if rounds < 1 or local_steps < 0 or personal_steps < 0 or eval_every < 1:
        raise ValueError(
            f"need rounds >= 1, eval_every >= 1, steps >= 0; got rounds={rounds}, eval_every={eval_every}, "
            f"local_steps={local_steps}, personal_steps={personal_steps}"
        )
    personal_gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
    device = clients.x.device
    w = model.init(gen, device) if x0 is None else x0.to(device)  # (d,)
    V = w.expand(clients.n, -1).clone()  # (n, d)
    sizes = clients.sizes.to(device)
    result = DittoResult(V, w, [], [], [])
    for r in range(1, rounds + 1):
        W = w.expand(clients.n, -1)  # 1. (n, d)
        Y = local_sgd(model, W, clients, steps=local_steps, lr=lr, batch_size=batch_size, gen=gen)
        w_next = w + weighted_average(Y - W, sizes)  # 2.
        for _ in range(personal_steps):  # 3.
            xb, yb = clients.batches(batch_size, personal_gen)
            V = ditto_update(V, w, model.grad(V, xb, yb), lr, lam)
        w = w_next
        if r % eval_every == 0 or r == rounds:
            result.rounds.append(r)
            result.personal_accuracy.append(evaluate(model, V, clients))
            result.global_accuracy.append(evaluate(model, w, clients))
    result.personal, result.global_model = V, w
    return result


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
    if alpha.dim() > 1 or (alpha.dim() == 1 and alpha.shape != (len(V),)) or (alpha < 0).any() or (alpha > 1).any():
        raise ValueError(f"alpha must be in [0, 1], a number or one per client ({len(V)},), got {alpha}")
    a = alpha.reshape(-1, 1) if alpha.dim() == 1 else alpha
    return a * V + (1 - a) * w


def interpolation_sweep(
    model: FlatModel, V: torch.Tensor, w: torch.Tensor, clients: Clients, alphas: Sequence[float]
) -> torch.Tensor:
    """Each client's accuracy with interpolate(V, w, alpha), for each alpha.

    Args:
        V: (n, d) local models; w: (d,) global model; alphas: weights of the local model.

    Returns:
        (len(alphas), n) accuracy of each client on its own test distribution.
    """
    return torch.stack([evaluate(model, interpolate(V, w, a), clients) for a in alphas])


@dataclass
class StagesResult:
    """Accuracy of one model trained in stages, on every client, after each stage."""

    stages: list[list[int]]  # the clients active in each stage
    accuracy: torch.Tensor  # (n_stages, n) accuracy on each client's test distribution after each stage
    model: torch.Tensor  # (d,) the model after the last stage

    def forgetting(self, group: Sequence[int]) -> float:
        """Mean over the clients of ``group`` of (best accuracy over stages - final accuracy)."""
        acc = self.accuracy[:, list(group)]
        return float((acc.max(0).values - acc[-1]).mean())


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
) -> StagesResult:
    """Federated averaging over a changing set of active clients, one stage after another.

    Stage s runs ``rounds`` FedAvg rounds among the clients ``stages[s]`` only, starting
    from the model the previous stage ended with; then every client (active or not)
    evaluates it. One client per stage is sequential fine-tuning over tasks; overlapping
    stages are clients that join and leave (continual federated learning: Yoon et al. 2021,
    "Federated continual learning with weighted inter-client transfer").

    Returns:
        A ``StagesResult``; ``forgetting(group)`` measures catastrophic forgetting.
    """
    if not stages:
        raise ValueError("stages must list at least one set of active clients")
    x = model.init(gen, clients.x.device) if x0 is None else x0.to(clients.x.device)
    accuracy = []
    for active in stages:
        history = run_rounds(
            model, restrict(clients, active), rounds=rounds, local_steps=local_steps, lr=lr,
            batch_size=batch_size, gen=gen, x0=x, eval_every=rounds,
        )  # fmt: skip
        x = history.model
        accuracy.append(evaluate(model, x, clients))
    return StagesResult([list(map(int, s)) for s in stages], torch.stack(accuracy), x)
