"""Lecture 09: number formats and practical tricks.

``formats``: bit layouts of FP32, TF32, FP16, BF16, FP8 (E5M2, E4M3, E3M4) and INT8, and
rounding any tensor into them (nearest even, stochastic, per-tensor scaled); ``fast_rounding``:
the same nearest rounding of float32 tensors in float32 and int32 arithmetic (what ``round_to``
runs for them); ``bits``:
encoding and decoding patterns, the format table; ``summation``: accumulation error;
``training``: simulated limited-precision training (``LimitedPrecisionSGD``, one SGD step a
round of the round engine) and model compression; ``hashing``: the
hashing trick, exactly as scikit-learn's ``FeatureHasher``; ``autodiff``: reverse mode on scalars;
``sparse``: when sparse matrix products beat dense ones.
"""
from . import autodiff, bits, fast_rounding, formats, hashing, sparse, summation, training
from .autodiff import Value
from .bits import bit_rows, bit_string, bit_table, decode, decode_ieee, encode, format_table
from .formats import (
    FORMATS, FloatFormat, IntFormat, amax_scale, get_format, grid_spacing, round_to, round_to_nearest, scaled_round,
    stochastic_round_grid, torch_cast,
)
from .hashing import collision_rate, hash_features, murmurhash3_32, signed_hash_vector
from .summation import kahan_sum, naive_sum, pairwise_sum, summation_errors
from .training import (
    LimitedPrecisionSGD, Precision, compression_sweep, prune_and_retrain, train_limited, train_limited_seeds, unstack,
)

__all__ = [
    "FORMATS", "FloatFormat", "IntFormat", "LimitedPrecisionSGD", "Precision", "Value", "amax_scale", "bit_rows",
    "bit_string", "bit_table", "collision_rate", "compression_sweep", "decode", "decode_ieee", "encode", "format_table",
    "get_format", "grid_spacing", "hash_features", "kahan_sum", "murmurhash3_32", "naive_sum", "pairwise_sum",
    "prune_and_retrain", "round_to", "round_to_nearest", "scaled_round", "signed_hash_vector", "stochastic_round_grid",
    "summation_errors", "torch_cast", "train_limited", "train_limited_seeds", "unstack",
]
