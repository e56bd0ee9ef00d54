"""Split a dataset across clients: iid, Dirichlet label skew, label shards, and tasks.

``Clients`` stores every client's training data in one tensor, client i owning the rows
``offsets[i] : offsets[i] + sizes[i]``, so that all clients draw their minibatches at once.
"""
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from .constraints import Generator, Indices, Instance, Integer, OneOf, Real, Tensor, constrain
from .data import Dataset

SCHEMES = ("iid", "dirichlet", "shards")
# A Dirichlet concentration: its Gamma(alpha) draws must sum to a finite float32, and at 10^6
# Dir(alpha) is already the uniform label mix to within 0.1% (relative std of a share: 1/sqrt(alpha C))
ALPHA = Real(gt=0, le=1e6)
TASKS = ("rotation", "permutation")


@dataclass(frozen=True)
class Clients:
    """n clients' data. Client i's test distribution is the shared test set with weights
    ``test_weights[i]`` (its label distribution over the test labels), so that a client with
    a dozen samples still gets a meaningful accuracy; under tasks, its own transformation
    (quarter turns ``rotations[i]`` of the images, label map ``label_maps[i]``) applies too.
    """

    x: torch.Tensor  # (N, ...) training inputs, grouped by client
    y: torch.Tensor  # (N,)
    sizes: torch.Tensor  # (n,) samples per client
    x_test: torch.Tensor  # (M, ...) shared test set
    y_test: torch.Tensor  # (M,)
    test_weights: torch.Tensor  # (n, M), rows sum to 1
    n_classes: int
    rotations: torch.Tensor | None = None  # (n,) quarter turns per client
    label_maps: torch.Tensor | None = None  # (n, n_classes) label permutation per client

    @property
    def n(self) -> int:
        return len(self.sizes)

    @property
    def offsets(self) -> torch.Tensor:  # (n,)
        return torch.cumsum(self.sizes, 0) - self.sizes

    @property
    def weights(self) -> torch.Tensor:
        """Each client's share of all training samples, (n,), sums to 1."""
        return self.sizes.double().div(self.sizes.sum()).float()

    @property
    def owners(self) -> torch.Tensor:
        """(N,) the client of each training sample, on the data's device."""
        return torch.repeat_interleave(torch.arange(self.n), self.sizes.cpu()).to(self.y.device)

    def label_counts(self) -> torch.Tensor:
        """(n, n_classes) training labels per client (before any label map)."""
        labels = self._original_labels()
        counts = torch.zeros(self.n, self.n_classes, dtype=torch.int64, device=labels.device)
        return counts.index_put_((self.owners, labels), torch.ones_like(labels), accumulate=True)

    def batches(
        self, batch_size: int, gen: torch.Generator | Sequence[torch.Generator], among: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One minibatch per client, drawn uniformly with replacement from its own samples.

        Args:
            batch_size: samples per client.
            gen: a CPU generator for all clients, or one per client (n of them, indexed by
                client): each client then draws its minibatches alone, as on its own machine.
            among: indices of the clients to draw for (default: all).

        Returns:
            x of shape (k, batch_size, ...) and y of shape (k, batch_size).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        chosen = torch.arange(self.n) if among is None else among.cpu()
        sizes, offsets = self.sizes.cpu()[chosen], self.offsets.cpu()[chosen]
        if isinstance(gen, torch.Generator):
            u = torch.rand(len(chosen), batch_size, generator=gen)
        elif len(gen) == self.n:
            u = torch.stack([torch.rand(batch_size, generator=gen[i]) for i in chosen.tolist()])
        else:
            raise ValueError(f"gen must be a generator or one per client ({self.n}), got {len(gen)}")
        rows = (offsets[:, None] + (u * sizes[:, None]).long()).to(self.x.device)
        return self.x[rows], self.y[rows]

    def client_data(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start, size = int(self.offsets[i]), int(self.sizes[i])
        return self.x[start : start + size], self.y[start : start + size]

    def held_out_sets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each client's view of the test set: x (n, M, ...) and y (n, M)."""
        x = self.x_test.expand(self.n, *self.x_test.shape)
        y = self.y_test.expand(self.n, -1)
        if self.rotations is not None:
            x = torch.stack([torch.rot90(x[i], int(k), dims=(-2, -1)) for i, k in enumerate(self.rotations)])
        if self.label_maps is not None:
            y = torch.gather(self.label_maps, 1, y)
        return x, y

    def _original_labels(self) -> torch.Tensor:
        if self.label_maps is None:
            return self.y
        inverse = torch.argsort(self.label_maps, dim=1)
        return inverse[self.owners, self.y]


@constrain(data=Instance(Dataset), n_clients=Integer(min=1), scheme=OneOf(*SCHEMES), alpha=ALPHA,
           shards_per_client=Integer(min=1), min_size=Integer(min=1), gen=Generator())  # fmt: skip
def split(
    data: Dataset,
    n_clients: int,
    scheme: str = "iid",
    *,
    alpha: float = 1.0,
    shards_per_client: int = 2,
    min_size: int = 1,
    gen: torch.Generator,
) -> Clients:
    """Split ``data``'s training set across ``n_clients`` clients.

    Schemes:
        - "iid": a random equal split.
        - "dirichlet": client i draws its label distribution q_i ~ Dir(alpha * 1) and then
          its samples by q_i (Hsu, Qi, Brown 2019, "Measuring the effects of non-identical
          data distribution"). Every client gets floor(N/n) or ceil(N/n) samples, so none
          is empty even at alpha = 0.1 and 100 clients (the per-class split of Yurochkin et
          al. 2019 leaves many clients empty there). Small alpha: one or two labels each.
        - "shards": sort by label, cut into n * shards_per_client shards, give each client
          shards_per_client of them (McMahan et al. 2017, "Communication-efficient learning
          of deep networks from decentralized data", arXiv:1602.05629).

    Args:
        data: a classification dataset.
        n_clients: number of clients, at most the number of training samples / min_size.
        scheme: one of "iid", "dirichlet", "shards".
        alpha: Dirichlet concentration, in (0, 10^6] (only for "dirichlet").
        shards_per_client: shards each client gets (only for "shards").
        min_size: the smallest client size allowed.
        gen: CPU generator.

    Raises:
        ValueError: for an unknown scheme, alpha outside (0, 10^6], too many clients for the data, or a
            regression dataset.
    """
    n_samples = len(data.y_train)
    if data.n_classes is None:
        raise ValueError(f"data={data.name!r} has no classes; split() needs a classification dataset")
    if n_clients * min_size > n_samples:
        raise ValueError(
            f"n_clients={n_clients} clients of at least min_size={min_size} samples need "
            f"{n_clients * min_size} samples, but the training set has {n_samples}: use fewer clients"
        )
    labels = data.y_train.cpu()
    if scheme == "iid":
        parts = _iid(n_samples, n_clients, gen)
    elif scheme == "dirichlet":
        parts = _dirichlet(labels, data.n_classes, n_clients, alpha, gen)
    else:
        if n_clients * shards_per_client > n_samples:
            raise ValueError(
                f"shards_per_client={shards_per_client} must be >= 1 and leave a sample per shard "
                f"({n_clients} clients, {n_samples} samples)"
            )
        parts = _shards(labels, n_clients, shards_per_client, gen)
    order = torch.cat(parts).to(data.y_train.device)
    sizes = torch.tensor([len(p) for p in parts])
    clients = Clients(
        x=data.x_train[order],
        y=data.y_train[order],
        sizes=sizes,
        x_test=data.x_test,
        y_test=data.y_test,
        test_weights=torch.empty(0),
        n_classes=data.n_classes,
    )
    return replace(clients, test_weights=label_weights(clients.label_counts(), data.y_test))


@constrain(label_counts=Tensor(2, floating=False), y_test=Indices())
def label_weights(label_counts: torch.Tensor, y_test: torch.Tensor) -> torch.Tensor:
    """Reweight the test set to each client's label distribution.

    w_ij = p_i(y_j) / q(y_j), normalized over j, with p_i the client's label frequencies and
    q the test set's: a weighted test accuracy then estimates the accuracy on data drawn
    like the client's, even for a client with a handful of samples.

    Args:
        label_counts: (n, C) training labels per client.
        y_test: (M,) test labels.

    Returns:
        (n, M) weights, each row summing to 1.
    """
    n_classes = label_counts.shape[1]
    q = torch.bincount(y_test, minlength=n_classes).float()
    p = label_counts.float() / label_counts.sum(1, keepdim=True)
    ratio = p / q.clamp(min=1)  # a class missing from the test set gets no weight
    w = ratio[:, y_test]
    return w / w.sum(1, keepdim=True)


@constrain(clients=Instance(Clients), kind=OneOf(*TASKS), n_tasks=Integer(min=1), gen=Generator())
def with_tasks(clients: Clients, kind: str, *, n_tasks: int, gen: torch.Generator) -> Clients:
    """Turn clients into tasks: client i gets task i mod n_tasks, task 0 unchanged.

    - "rotation": task t turns the images by t quarter turns (n_tasks <= 4), exactly.
    - "permutation": task t relabels the classes by a random permutation drawn from gen.

    The same transformation applies to the client's view of the test set (``held_out_sets``).

    Raises:
        ValueError: for an unknown kind or an n_tasks out of range.
    """
    limit = 4 if kind == "rotation" else clients.n
    if not 1 <= n_tasks <= limit:
        raise ValueError(f"n_tasks must be in [1, {limit}] for kind={kind!r}, got {n_tasks}")
    task = torch.arange(clients.n) % n_tasks
    owner = task[clients.owners.cpu()]  # (N,) the task of each sample
    if kind == "rotation":
        x = clients.x.clone()
        for t in range(1, n_tasks):
            mine = (owner == t).to(x.device)
            x[mine] = torch.rot90(x[mine], t, dims=(-2, -1))
        return replace(clients, x=x, rotations=task)
    maps = [torch.arange(clients.n_classes)] + [
        torch.randperm(clients.n_classes, generator=gen) for _ in range(1, n_tasks)
    ]
    label_maps = torch.stack(maps)[task].to(clients.y.device)
    y = label_maps[owner.to(clients.y.device), clients.y]
    return replace(clients, y=y, label_maps=label_maps)


def _equal_sizes(n_samples: int, n_clients: int) -> list[int]:
    base, extra = divmod(n_samples, n_clients)
    return [base + (i < extra) for i in range(n_clients)]


def _iid(n_samples: int, n_clients: int, gen: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n_samples, generator=gen).split(_equal_sizes(n_samples, n_clients)))


def _dirichlet(
    labels: torch.Tensor, n_classes: int, n_clients: int, alpha: float, gen: torch.Generator
) -> list[torch.Tensor]:
    # Each class's samples in random order, handed out from the front.
    pools = [torch.nonzero(labels == k).flatten() for k in range(n_classes)]
    pools = [p[torch.randperm(len(p), generator=gen)] for p in pools]
    taken = [0] * n_classes
    concentration = torch.full((n_classes,), float(alpha))
    parts = []
    for size in _equal_sizes(len(labels), n_clients):
        # q ~ Dir(alpha), drawn from gen via normalized Gamma(alpha, 1) variables.
        q = torch._standard_gamma(concentration, generator=gen)
        q = q / q.sum() if q.sum() > 0 else torch.ones(n_classes) / n_classes
        counts = torch.zeros(n_classes, dtype=torch.int64)
        while counts.sum() < size:  # classes run dry: redraw the rest among those left
            left = torch.tensor([len(p) - t for p, t in zip(pools, taken)]) - counts
            weights = q * (left > 0)
            if weights.sum() == 0:
                weights = (left > 0).float()
            draw = torch.multinomial(weights, int(size - counts.sum()), replacement=True, generator=gen)
            counts += torch.minimum(torch.bincount(draw, minlength=n_classes), left)
        parts.append(torch.cat([pools[k][taken[k] : taken[k] + int(c)] for k, c in enumerate(counts)]))
        taken = [t + int(c) for t, c in zip(taken, counts)]
    return parts


def _shards(labels: torch.Tensor, n_clients: int, per_client: int, gen: torch.Generator) -> list[torch.Tensor]:
    shuffled = torch.randperm(len(labels), generator=gen)
    by_label = shuffled[torch.argsort(labels[shuffled], stable=True)]
    shards = by_label.tensor_split(n_clients * per_client)
    owner = torch.randperm(n_clients * per_client, generator=gen).view(n_clients, per_client)
    return [torch.cat([shards[s] for s in row]) for row in owner.tolist()]
