"""Number formats: our rounding against torch's casts and ml_dtypes, sparse against dense
products, and our pure-Python MurmurHash3 against scikit-learn's compiled one.

Every pair is first checked to give the same result; then each is timed (best of several
runs) and the ratio printed. Run: ``make bench`` (or ``python -m benchmarks.numerics``).
The seconds depend on the machine, the ratios much less.
"""

import ml_dtypes
import numpy as np
import torch
from sklearn.utils import murmurhash3_32 as sk_murmur

import mllib
from benchmarks import best_time, record, size
from mllib.numerics import FORMATS, hashing, round_to, sparse


def rounding(gen):
    x = torch.randn(size(1_000_000, 10_000), generator=gen) * 100
    print(f"rounding {len(x) / 1e6:g}e6 float32 values (ours: float32 and int32 arithmetic, pure torch)")
    for fmt in ("fp16", "bf16", "fp8_e5m2", "fp8_e4m3"):
        dtype = FORMATS[fmt].torch_dtype
        assert torch.equal(round_to(x, fmt), x.to(dtype).float()), fmt
        ours, cast = best_time(lambda: round_to(x, fmt), 5)[0], best_time(lambda: x.to(dtype).float(), 5)[0]
        print(f"  {fmt:<9} ours {ours * 1e3:7.2f} ms   torch cast {cast * 1e3:6.2f} ms   ours / torch {ours / cast:5.1f}x")
        record(f"rounding to {fmt} vs torch's cast", ours_s=ours, reference_s=cast, values=len(x),
               reference=f"x.to(torch.{str(dtype).removeprefix('torch.')}).float()")  # fmt: skip
        if fmt == "bf16":
            stochastic = best_time(lambda: round_to(x, fmt, stochastic=True, gen=mllib.generator(1)), 5)[0]
            draws = best_time(lambda: torch.rand(x.shape, generator=mllib.generator(1), dtype=torch.float64), 5)[0]
            print(f"  {'bf16, stochastic':<9} ours {stochastic * 1e3:7.2f} ms   ours / torch cast {stochastic / cast:5.1f}x"
                  f"   (drawing its float64 uniforms alone: {draws / cast:5.1f}x)")
            record("stochastic rounding to bf16 vs torch's cast", ours_s=stochastic, reference_s=cast, values=len(x),
                   reference="x.to(torch.bfloat16).float() (round to nearest)")  # fmt: skip
    xs = x.numpy()
    with np.errstate(invalid="ignore"):
        expected = torch.from_numpy(xs.astype(ml_dtypes.float8_e3m4).astype(np.float32))
    assert torch.equal(round_to(x, "fp8_e3m4"), expected)
    ours = best_time(lambda: round_to(x, "fp8_e3m4"), 5)[0]
    theirs = best_time(lambda: xs.astype(ml_dtypes.float8_e3m4).astype(np.float32), 5)[0]
    print(f"  fp8_e3m4  ours {ours * 1e3:7.2f} ms   ml_dtypes  {theirs * 1e3:6.2f} ms   ours / ml_dtypes {ours / theirs:5.1f}x")


def sparse_products(gen):
    densities = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005)
    n = size(1024, 128)
    times = sparse.sparse_vs_dense(n=n, k=64, densities=densities, gen=gen, repeats=size(5, 1))  # checks equality first
    print(f"({n} x {n}) @ ({n} x 64): dense time / CSR time (above 1: sparse pays)")
    for d, dense, csr in zip(times["density"], times["dense"], times["sparse"]):
        print(f"  density {d:6.3f}: {dense / csr:6.2f}x")


def murmur():
    keys = [f"feature{i}=value{i % 97}" for i in range(size(20000, 500))]
    assert [hashing.murmurhash3_32(k) for k in keys] == [sk_murmur(k, seed=0) for k in keys]
    ours = best_time(lambda: [hashing.murmurhash3_32(k) for k in keys], 3)[0]
    theirs = best_time(lambda: [sk_murmur(k, seed=0) for k in keys], 3)[0]
    print(f"MurmurHash3 of {len(keys)} names: pure Python / scikit-learn (Cython) {ours / theirs:.1f}x")


def main():
    gen = mllib.setup(seed=0)
    rounding(gen)
    sparse_products(gen)
    murmur()


if __name__ == "__main__":
    main()
