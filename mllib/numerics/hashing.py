"""The hashing trick: features indexed by a hash of their name, with a hashed sign.

Weinberger et al. (2009, "Feature hashing for large scale multitask learning", arXiv:0902.2206, Eq. 2):
phi_j(x) = sum over features f with h(f) = j of xi(f) x_f, where h maps names to
{0, ..., m-1} and xi to {-1, +1}; the sign makes the hashed inner product unbiased,
E[<phi(x), phi(x')>] = <x, x'>. Like scikit-learn's ``FeatureHasher`` (whose indices and
signs this reproduces exactly), h and xi come from one signed 32-bit MurmurHash3 value v
of the UTF-8 name: index |v| mod m, sign +1 if v >= 0 else -1; a string value v of
feature f is hashed as the name "f=v" with value 1.
"""
import math
import warnings
from collections.abc import Iterable

import torch

from ..constraints import Generator, Instance, Integer, OneOf, Probability, Real, Rule, Tensor, constrain
from .formats import FORMATS, round_to

_C1, _C2, _MASK = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
KEY = Instance(str, bytes, description="a feature name (str or bytes)")
N_FEATURES = Integer(min=1)  # m, the number of buckets
FEATURES, LABELS = Tensor(2, description="a matrix of features (n_docs, n_features)"), Tensor(1, integer=True)


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK


@constrain(key=KEY, seed=Integer(min=0, max=_MASK))
def murmurhash3_32(key: str | bytes, seed: int = 0) -> int:
    """MurmurHash3 x86_32 (Appleby 2011) of ``key`` (UTF-8 for a str), as a signed 32-bit int.

    Per 4-byte little-endian block k: k = rotl(k c1, 15) c2; h = rotl(h ^ k, 13) 5 + 0xe6546b64;
    then the tail bytes, h ^= length, and the final avalanche (fmix32).
    """
    data = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    h = seed & _MASK
    n = len(data)
    for i in range(0, n - n % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (_rotl((k * _C1) & _MASK, 15) * _C2) & _MASK
        h = (_rotl(h ^ k, 13) * 5 + 0xE6546B64) & _MASK
    tail = data[n - n % 4:]
    if tail:
        k = int.from_bytes(tail, "little")
        h ^= (_rotl((k * _C1) & _MASK, 15) * _C2) & _MASK
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    h ^= h >> 16
    return h - 2**32 if h >= 2**31 else h


@constrain(name=KEY, n_features=N_FEATURES)
def hash_index_sign(name: str, n_features: int) -> tuple[int, int]:
    """(index, sign) of a feature name: |v| mod m and +-1 from v = murmurhash3_32(name).

    v = -2^31 has no 32-bit absolute value; scikit-learn defines its index as
    (2^31 - 1 - (m - 1)) mod m, which equals 2^31 mod m: so does this.
    """
    v = murmurhash3_32.__wrapped__(name)
    return abs(v) % n_features, 1 if v >= 0 else -1


@constrain(samples=Instance(list, tuple, description="a list of samples"), n_features=N_FEATURES,
           input_type=OneOf("dict", "pair", "string"))
def hash_features(
    samples: Iterable, n_features: int, *, input_type: str = "dict", alternate_sign: bool = True
) -> torch.Tensor:
    """Hash raw samples into a dense (n_samples, n_features) float64 matrix.

    phi(x)[h(f)] += xi(f) x_f for every feature f of x (Weinberger et al. 2009, arXiv:0902.2206, Eq. 2).

    Args:
        samples: for input_type "dict", mappings name -> value (a str value v becomes the
            feature "name=v" with value 1); for "pair", iterables of (name, value); for
            "string", iterables of names, each with value 1. Zero values are skipped.
        n_features: m >= 1, the number of columns.
        input_type: "dict", "pair" or "string", as scikit-learn's ``FeatureHasher``.
        alternate_sign: multiply by the hashed sign xi(f) (scikit-learn's default).

    Returns:
        (n_samples, n_features) float64 tensor, equal to ``FeatureHasher(...).transform(samples).toarray()``.

    Raises:
        ValueError: for n_features < 1 or an unknown input_type.
    """
    index_sign = hash_index_sign.__wrapped__  # checked once, not for every name
    cache: dict[str, tuple[int, int]] = {}
    rows, cols, vals = [], [], []
    n_samples = 0
    for i, sample in enumerate(samples):
        n_samples = i + 1
        items = sample.items() if input_type == "dict" else ((f, 1) for f in sample) if input_type == "string" else sample
        for name, value in items:
            if isinstance(value, str):
                name, value = f"{name}={value}", 1
            if value == 0:
                continue
            if name not in cache:
                cache[name] = index_sign(name, n_features)
            index, sign = cache[name]
            rows.append(i)
            cols.append(index)
            vals.append(float(value) * (sign if alternate_sign else 1))
    out = torch.zeros(n_samples, n_features, dtype=torch.float64)
    index = (torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long))
    return out.index_put_(index, torch.tensor(vals, dtype=torch.float64), accumulate=True)


@constrain(Rule("names", lambda names: len(names) > 0, "names must hold at least one name, got {names}"),
           names=Instance(list, tuple, set, frozenset, description="a collection of names"), n_features=N_FEATURES)
def collision_rate(names: Iterable[str], n_features: int) -> float:
    """Fraction of distinct names that share their bucket with at least one other name."""
    names = sorted(set(names))
    buckets = torch.tensor([hash_index_sign.__wrapped__(n, n_features)[0] for n in names])
    counts = torch.bincount(buckets, minlength=n_features)
    return (counts[buckets] > 1).double().mean().item()


@constrain(n_names=Integer(min=1), n_features=N_FEATURES)
def expected_collision_rate(n_names: int, n_features: int) -> float:
    """1 - (1 - 1/m)^(n - 1): the chance that another of n uniformly hashed names shares a bucket."""
    return 1 - (1 - 1 / n_features) ** (n_names - 1)


@constrain(Rule("vocab", lambda vocab, n_classes: vocab >= 2 * n_classes,
                "vocab must be >= 2 n_classes (each class owns vocab / (2 n_classes) topic words), "
                "got vocab={vocab} for n_classes={n_classes}"),
           n_docs=Integer(min=1), n_classes=Integer(min=1), vocab=Integer(min=2), words=Integer(min=1),
           topic_share=Probability(), gen=Generator())  # fmt: skip
def synthetic_text(
    n_docs: int, *, n_classes: int = 4, vocab: int = 3000, words: int = 40, topic_share: float = 0.3,
    gen: torch.Generator,
) -> tuple[list[list[str]], torch.Tensor]:  # fmt: skip
    """Documents of words "w<k>": a Zipf background shared by all classes plus class topic words.

    Each class owns vocab / (2 n_classes) topic words; a document of class c draws each of
    its ``words`` tokens from c's topic words with probability ``topic_share``, else from
    the Zipf(1) background over the whole vocabulary (so topic words also appear by chance).

    Returns:
        (documents as lists of tokens, labels (n_docs,) int64).
    """
    zipf = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    order = torch.randperm(vocab, generator=gen)
    per_class = vocab // (2 * n_classes)
    labels = torch.randint(n_classes, (n_docs,), generator=gen)
    topic = torch.rand(n_docs, words, generator=gen) < topic_share
    background = torch.multinomial(zipf / zipf.sum(), n_docs * words, replacement=True, generator=gen).view(n_docs, words)
    own = order[(labels[:, None] * per_class + torch.randint(per_class, (n_docs, words), generator=gen))]
    tokens = torch.where(topic, own, order[background])
    return [[f"w{t}" for t in doc] for doc in tokens.tolist()], labels


@constrain(docs=Instance(list, tuple, description="a list of documents, each a list of tokens"))
def bag_of_words(docs: list[list[str]]) -> tuple[torch.Tensor, list[str]]:
    """Counts (n_docs, vocabulary size) float64 over the sorted vocabulary, and the vocabulary."""
    vocabulary = sorted({t for d in docs for t in d})
    column = {t: j for j, t in enumerate(vocabulary)}
    rows = [i for i, d in enumerate(docs) for _ in d]
    cols = [column[t] for d in docs for t in d]
    X = torch.zeros(len(docs), len(vocabulary), dtype=torch.float64)
    index = (torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long))
    return X.index_put_(index, torch.ones(len(rows), dtype=torch.float64), accumulate=True), vocabulary


@constrain(Rule("y", lambda X, y: len(y) == len(X), "y must hold one label per row of X, {X.shape[0]}, got {y.shape[0]}"),
           Rule("y_test", lambda X_test, y_test: len(y_test) == len(X_test),
                "y_test must hold one label per row of X_test, {X_test.shape[0]}, got {y_test.shape[0]}"),
           Rule("X_test", lambda X, X_test: X_test.shape[1] == X.shape[1],
                "X_test must have X's {X.shape[1]} features, got {X_test.shape[1]}"),
           Rule("y", lambda y, n_classes: 0 <= int(y.min()) and int(y.max()) < n_classes,
                lambda y, n_classes: f"y must hold labels in [0, n_classes) = [0, {n_classes}), "
                                     f"got labels in [{int(y.min())}, {int(y.max())}]"),
           X=FEATURES, y=LABELS, X_test=FEATURES, y_test=LABELS, n_classes=Integer(min=1), steps=Integer(min=1),
           lr=Real(gt=0), weight_format=OneOf(*FORMATS))  # fmt: skip
def train_linear(
    X: torch.Tensor, y: torch.Tensor, X_test: torch.Tensor, y_test: torch.Tensor, *, n_classes: int,
    steps: int = 200, lr: float = 0.5, weight_format: str = "fp32",
) -> float:  # fmt: skip
    """Full-batch gradient descent on softmax regression; weights rounded to ``weight_format``
    for the test (post-training quantization). Returns the test accuracy.

    Features are scaled by 1 / (their largest training absolute value) first; the products
    run on sparse CSR copies of X and X^T (a document holds few of the features), on the CPU.
    """
    scale = X.abs().amax(0).clamp(min=1.0)
    X_dense, X_test = (X / scale).float().cpu(), (X_test / scale).float().cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Sparse CSR tensor support is in beta"
        X, XT = X_dense.to_sparse_csr(), X_dense.T.contiguous().to_sparse_csr()
    y, y_test = y.cpu(), y_test.cpu()
    W = torch.zeros(X.shape[1], n_classes)
    b = torch.zeros(n_classes)
    onehot = torch.nn.functional.one_hot(y, n_classes).float()
    for _ in range(steps):
        g = (torch.softmax(X @ W + b, 1) - onehot) / len(y)  # (N, C)
        W, b = W - lr * (XT @ g), b - lr * g.sum(0)
    if weight_format != "fp32":
        s = W.abs().max() / (127 if weight_format == "int8" else 1.0)
        W = round_to(W / s, weight_format) * s if weight_format == "int8" else round_to(W, weight_format)
    return ((X_test @ W + b).argmax(1) == y_test).float().mean().item()


@constrain(n_features=Integer(min=1), n_classes=Integer(min=1), bits=Integer(min=1))
def model_bytes(n_features: int, n_classes: int, bits: int) -> int:
    """Bytes of a linear model's weight matrix and biases at ``bits`` bits per weight."""
    return math.ceil(n_features * n_classes * bits / 8) + 4 * n_classes


@constrain(Rule("values", lambda h, values: values.shape == h.shape, "values must have the shape of h, {h.shape}, "
                "one value per hash, got {values.shape}"),
           h=Tensor(1, integer=True, description="a 1-D tensor of integer hashes"), values=Tensor(1), n_features=N_FEATURES)
def signed_hash_vector(h: torch.Tensor, values: torch.Tensor, n_features: int) -> torch.Tensor:
    """The hashed vector of features with signed 32-bit hash values h (n,) and values (n,).

    phi[|h_i| mod m] += sign(h_i) values_i, sign +1 for h_i >= 0 (Weinberger et al. 2009, arXiv:0902.2206).

    Returns:
        (n_features,) tensor of values' dtype.
    """
    h = h.to(torch.int64)  # |-2^31| = 2^31 fits: the index scikit-learn defines for it
    sign = torch.where(h >= 0, 1, -1).to(values.dtype)
    return torch.zeros(n_features, dtype=values.dtype, device=values.device).index_add_(0, h.abs() % n_features, sign * values)
