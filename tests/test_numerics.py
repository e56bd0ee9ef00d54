import math

import ml_dtypes
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction import FeatureHasher
from sklearn.utils import murmurhash3_32 as sk_murmur

import mllib
from mllib.checks import numerics as check
from mllib.numerics import FORMATS, autodiff, bits, formats, hashing, sparse, summation, training
from selfchecks import assert_passes, assert_rejects

TORCH_TYPED = ["fp32", "fp16", "bf16", "fp8_e5m2", "fp8_e4m3"]


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equal float32 tensors (signed zeros told apart), NaN where the other is NaN."""
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    return torch.equal(nan_a, nan_b) and torch.equal(a[~nan_a].view(torch.int32), b[~nan_b].view(torch.int32))


def hard_inputs(fmt, n=20000, seed=0):
    """Random float32 bit patterns, values at the format's scales, exact ties, overflow, specials."""
    gen = torch.Generator().manual_seed(seed)
    f = formats.get_format(fmt)
    patterns = torch.randint(-(2**31), 2**31, (n,), generator=gen).to(torch.int32).view(torch.float32)
    scales = [1.0, f.max, f.smallest_normal, f.smallest_subnormal]
    scaled = [torch.randn(n, generator=gen) * s for s in scales]
    # midpoints between neighbours of the format: exact ties for round-to-nearest-even
    grid = torch.linspace(-4, 4, 4001, dtype=torch.float64)
    q = formats.round_to(grid, fmt).unique()
    ties = ((q[1:] + q[:-1]) / 2).float()
    sub = f.smallest_subnormal * (torch.arange(-40, 41) / 2)  # subnormal ties
    special = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, f.max, -f.max, f.max * 1.06, f.max * 1.2, 3e38])
    return torch.cat([patterns, *scaled, ties, sub.float(), special])


@pytest.mark.parametrize("fmt", TORCH_TYPED)
def test_round_to_matches_torch_cast_bit_for_bit(fmt):
    x = hard_inputs(fmt)
    assert same_bits(formats.round_to(x, fmt), formats.torch_cast(x, fmt))
    in_range = x.abs() <= FORMATS[fmt].max  # torch's raw cast of an E4M3 overflow depends on its version
    assert same_bits(formats.round_to(x, fmt)[in_range], x[in_range].to(FORMATS[fmt].torch_dtype).float())


def test_torch_cast_saturates_e4m3_on_every_torch_version():
    x = torch.tensor([464.0, 1e6, math.inf, -math.inf, math.nan])
    assert formats.torch_cast(x, "fp8_e4m3")[:4].tolist() == [448.0, 448.0, 448.0, -448.0]
    assert formats.torch_cast(x, "fp8_e4m3")[4].isnan()
    with pytest.raises(ValueError, match="fmt must be a float format torch has a dtype for, .* got fp8_e3m4; use round_to"):
        formats.torch_cast(x, "fp8_e3m4")


def test_e3m4_matches_ml_dtypes():
    x = hard_inputs("fp8_e3m4")
    with np.errstate(invalid="ignore"):
        expected = torch.from_numpy(x.numpy().astype(ml_dtypes.float8_e3m4).astype(np.float32))
    assert same_bits(formats.round_to(x, "fp8_e3m4"), expected)


def test_e4m3_saturates_where_ml_dtypes_gives_nan():
    x = torch.tensor([470.0, 1e6, math.inf])
    assert formats.round_to(x, "fp8_e4m3").tolist() == [448.0, 448.0, 448.0]
    assert np.isnan(x.numpy().astype(ml_dtypes.float8_e4m3fn).astype(np.float32)).all()


def test_tf32_rounds_away_the_low_13_bits_to_nearest_even():
    x = hard_inputs("tf32")
    b = x.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    r = (b + 0xFFF + ((b >> 13) & 1)) & 0xFFFFE000
    expected = torch.where(r >= 2**31, r - 2**32, r).to(torch.int32).view(torch.float32)
    finite = torch.isfinite(x)  # the bit trick turns some NaN payloads into inf
    assert same_bits(formats.round_to(x[finite], "tf32"), expected[finite])


def test_format_table_matches_torch_finfo():
    for name, ours, theirs in bits.finfo_rows():
        assert ours == theirs, name
    assert FORMATS["int8"].max == torch.iinfo(torch.int8).max and FORMATS["int8"].min == torch.iinfo(torch.int8).min
    for f in [FORMATS["fp16"], FORMATS["bf16"], FORMATS["fp32"]]:
        assert f.smallest_subnormal == float(torch.tensor(1, dtype=torch.int32 if f.bits == 32 else torch.int16)
                                               .view(f.torch_dtype).float())  # fmt: skip


def test_slide_ranges_of_the_fp8_formats():
    assert [FORMATS[k].max for k in ("fp8_e5m2", "fp8_e4m3", "fp8_e3m4")] == [57344, 448, 15.5]
    assert FORMATS["fp8_e3m4"].max == float(ml_dtypes.finfo(ml_dtypes.float8_e3m4).max)


def test_the_slide_rounds_ranges_up_to_powers_of_two_and_its_e4m3_is_ieee_style():
    for name in ("fp16", "fp8_e5m2", "fp8_e3m4"):
        assert FORMATS[name].slide_range == 2.0 ** math.ceil(math.log2(FORMATS[name].max)) > FORMATS[name].max
    ieee_e4m3 = formats.FloatFormat("e4m3, IEEE-style", 4, 3, 7, True, 256.0)
    assert ieee_e4m3.max == 240 and FORMATS["fp8_e4m3"].slide_range == 256 < FORMATS["fp8_e4m3"].max


def test_grid_spacing_is_the_gap_between_neighbours():
    z = torch.tensor([1.0, 1.5, 2.0, 1e-6, 0.0, 70000.0], dtype=torch.float64)
    fp16 = FORMATS["fp16"]
    expected = [2**-10, 2**-10, 2**-9, fp16.smallest_subnormal, fp16.smallest_subnormal, 2.0 ** (16 - 10)]
    assert formats.grid_spacing(z, "fp16").tolist() == expected
    assert formats.grid_spacing(z, "int8") == 1.0


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_round_to_nearest_is_round_to_without_stochastic(fmt):
    x = hard_inputs("bf16", n=1000)
    assert same_bits(formats.round_to_nearest(x, fmt), formats.round_to(x, fmt))
    integers = torch.tensor([-300, 3, 1000001])  # become float32, never truncated
    assert same_bits(formats.round_to_nearest(integers, fmt), formats.round_to_nearest(integers.float(), fmt))


# Formats beside FORMATS: IEEE-style E4M3 (max 240), a wide-mantissa one (M = 21, the magic number's
# limit), a narrow one, and two that the float32 fast path leaves to float64 (E = 8 "FN", M = 22 with E < 8).
OTHER_FORMATS = [formats.FloatFormat("e4m3 ieee", 4, 3, 7, True, 256.0), formats.FloatFormat("e2m21", 2, 21, 1, True, 4.0),
                 formats.FloatFormat("e5m1", 5, 1, 15, False, 65536.0), formats.FloatFormat("e8m7 fn", 8, 7, 127, False, 1.0),
                 formats.FloatFormat("e4m22", 4, 22, 7, True, 256.0), formats.IntFormat("int4", 4, 8.0)]  # fmt: skip


@pytest.mark.parametrize("fmt", list(FORMATS) + OTHER_FORMATS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fast_nearest_rounding_equals_the_float64_reference(fmt, dtype):
    f = formats.get_format(fmt)
    like = "bf16" if isinstance(f, formats.IntFormat) else f  # an integer format has no subnormals to aim at
    x = torch.cat([hard_inputs(like, seed=1), hard_inputs("fp16", n=2000, seed=2), hard_inputs("fp8_e5m2", n=2000, seed=3)])
    x = x.to(dtype)
    assert same_bits(formats.round_to(x, f), formats.round_to_nearest(x, f))  # round_to_nearest: float64, q round(x / q)


def stochastic_reference(x, fmt, gen):
    """The float64 stochastic rounding round_to computes: floor(clamp(x) / q + u) q, then nearest (overflow)."""
    f = formats.get_format(fmt)
    z = x.double()
    q = formats.grid_spacing(z, f)
    u = torch.rand(z.shape, generator=gen, dtype=torch.float64)
    return formats.round_to_nearest(torch.floor(z.clamp(-f.max, f.max) / q + u) * q, f).to(formats._as_float64(x)[1])


@pytest.mark.parametrize("fmt", list(FORMATS) + OTHER_FORMATS[:3], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stochastic_rounding_equals_the_float64_reference_for_the_same_draws(fmt, dtype):
    f = formats.get_format(fmt)
    x = hard_inputs("bf16" if isinstance(f, formats.IntFormat) else f, n=5000).to(dtype)
    ours, theirs = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(2):  # the same draws, in the same order
        assert same_bits(formats.round_to(x, f, stochastic=True, gen=ours).float(), stochastic_reference(x, f, theirs).float())


@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp8_e4m3", "int8"])
def test_fast_rounding_leaves_its_input_alone_and_keeps_shapes(fmt):
    x = hard_inputs(fmt if fmt != "int8" else "bf16", n=600)[:600].view(20, 30).t()  # not contiguous
    before = x.clone()
    y = formats.round_to(x, fmt)
    assert y.shape == (30, 20) and y.dtype == torch.float32 and same_bits(x, before)
    assert same_bits(y, formats.round_to_nearest(x, fmt))
    assert same_bits(formats.round_to(torch.tensor(-1e-45), fmt), torch.tensor(-0.0))  # 0-d; the sign of zero kept


@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp8_e5m2", "fp8_e4m3", "fp8_e3m4", "int8"])
def test_every_pattern_decodes_to_a_value_that_encodes_back(fmt):
    f = FORMATS[fmt]
    for b in range(2**f.bits) if f.bits <= 8 else range(0, 2**16, 13):
        v = bits.decode(b, fmt)
        if not math.isnan(v):
            assert bits.encode(v, fmt) == b, (fmt, b, v)


@pytest.mark.parametrize("fmt", ["fp16", "bf16", "fp8_e5m2", "fp8_e3m4"])
def test_vectorized_decode_agrees_with_scalar_decode(fmt):
    f = FORMATS[fmt]
    patterns = torch.arange(2**f.bits)
    got = bits.decode_ieee(patterns, f.exponent_bits, f.mantissa_bits, f.bias)
    expected = torch.tensor([bits.decode(b, fmt) for b in patterns.tolist()], dtype=torch.float64)
    assert torch.equal(got.nan_to_num(7.0), expected.nan_to_num(7.0))


def test_decode_agrees_with_torch_on_fp16_patterns():
    patterns = torch.arange(2**16, dtype=torch.int32)
    theirs = (patterns - (patterns >= 2**15) * 2**16).to(torch.int16).view(torch.float16).double()
    ours = torch.tensor([bits.decode(b, "fp16") for b in patterns.tolist()], dtype=torch.float64)
    assert torch.equal(ours.nan_to_num(7.0), theirs.nan_to_num(7.0))


def test_bit_table_shows_every_format():
    text = bits.bit_table(0.1)
    assert all(name in text for name in FORMATS) and "0 01111011 1001101" in text  # bf16 of 0.1
    assert bits.bit_rows(1e6, ["fp16"])[0]["stored"] == math.inf


@settings(max_examples=30, deadline=None)
@given(st.floats(-127, 127), st.sampled_from(["bf16", "fp8_e4m3", "fp8_e5m2", "int8"]))
def test_stochastic_rounding_is_unbiased(x, fmt):
    gen = torch.Generator().manual_seed(0)
    n = 20000
    y = formats.round_to(torch.full((n,), x, dtype=torch.float64), fmt, stochastic=True, gen=gen)
    down, up = y.min().item(), y.max().item()
    assert up - down <= 2 * max(1.0, abs(x)) * FORMATS[fmt].eps + 1e-12  # only the two neighbours
    f = FORMATS[fmt]
    gap = 1.0 if fmt == "int8" else max(abs(x) * f.eps, f.smallest_subnormal)  # an upper bound
    sd = gap / 2 / math.sqrt(n)  # the largest standard deviation of the mean of n roundings
    assert abs(y.mean().item() - x) < 5 * sd  # a 5-sigma band


def test_nearest_rounding_is_biased_where_stochastic_is_not():
    gen = torch.Generator().manual_seed(0)
    x = torch.full((10000,), 1 + 2**-9, dtype=torch.float64)  # a quarter of a bf16 gap above 1
    assert formats.round_to(x, "bf16").mean().item() == 1.0
    assert abs(formats.round_to(x, "bf16", stochastic=True, gen=gen).mean().item() - x[0].item()) < 2e-4


def test_scaled_round_uses_the_format_range():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 1e-4
    plain = formats.round_to(x, "fp8_e4m3")
    scaled, s = formats.scaled_round(x, "fp8_e4m3")
    assert (plain == 0).float().mean() > 0.9  # below E4M3's smallest subnormal
    assert ((scaled - x).abs() / x.abs()).max() < 0.07 and float(s) == float(x.abs().max() / 448)
    q, s = formats.scaled_round(x.double(), "int8")
    assert torch.allclose(q / s, (q / s).round(), atol=1e-9) and (q / s).abs().max().round() == 127


@pytest.mark.parametrize("bad", [dict(fmt="fp12"), dict(fmt="fp16", scale=math.nan), dict(fmt="fp16", scale=math.inf),
                                 dict(fmt="fp16", scale=0.0), dict(fmt="fp16", scale=-1.0)])  # fmt: skip
def test_bad_format_or_scale_raises(bad):
    with pytest.raises(ValueError, match=r"^(fmt must be a format \(FloatFormat or IntFormat\), or one of|scale must be a finite number > 0, or None, got)"):
        formats.scaled_round(torch.ones(3), **bad)


def test_other_bad_input_raises():
    with pytest.raises(TypeError, match="^x must be a tensor of values to round, got"):
        formats.round_to(torch.ones(3, dtype=torch.bool), "fp16")
    with pytest.raises(ValueError, match="^gen must be a torch.Generator for stochastic rounding, got None"):
        formats.round_to(torch.ones(3), "fp16", stochastic=True)
    with pytest.raises(ValueError, match=r"^bits must lie in \[0, 2\^8\) for fp8_e4m3, got 256"):
        bits.decode(256, "fp8_e4m3")
    with pytest.raises(ValueError, match="^loss_scale must be a finite number > 0, got inf"):
        training.Precision(loss_scale=math.inf)
    for n in (0, -3, 2.5):
        with pytest.raises((TypeError, ValueError), match=f"^n_features must be an integer >= 1, got {n}"):
            hashing.hash_features([{"a": 1}], n)


def test_kahan_and_pairwise_beat_the_naive_sum_in_bf16():
    x = torch.rand(4, 2048, generator=torch.Generator().manual_seed(0))
    err = summation.summation_errors(x, "bf16", gen=torch.Generator().manual_seed(1))
    assert (err["naive"] > 0.3).all()  # stagnation: terms below half a gap of the sum vanish
    assert (err["pairwise"] < 0.01).all() and (err["kahan"] < 0.01).all()
    assert (err["stochastic"] < 0.05).all()


def test_sums_are_exact_in_fp32_for_small_integers():
    x = torch.randint(0, 10, (3, 100), generator=torch.Generator().manual_seed(0)).float()
    for s in (summation.naive_sum(x, "fp32"), summation.pairwise_sum(x, "fp32"), summation.kahan_sum(x, "fp32")):
        assert torch.equal(s, x.double().sum(-1))


# hashing

def test_murmurhash_matches_scikit_learn():
    keys = ["", "a", "ab", "abc", "abcd", "abcde", "héllo wörld ✔", "x" * 37, "city=Paris"]
    keys += [f"w{i}" for i in range(2000)]
    assert [hashing.murmurhash3_32(k) for k in keys] == [sk_murmur(k, seed=0) for k in keys]


@pytest.mark.parametrize("n_features", [1, 2, 7, 1024, 2**20])
def test_hash_features_equals_feature_hasher(n_features):
    dicts = [{"city": "Paris", "temp": 3.5, "zero": 0, "n": -2}, {"a": 1, "b=c": 2, "city": "Rome"}, {}]
    docs = [["w1", "w2", "w1"], ["zz", "w1"], []]
    for samples, kind in [(dicts, "dict"), (docs, "string"), ([d.items() for d in dicts], "pair")]:
        ours = hashing.hash_features(samples, n_features, input_type=kind)
        theirs = FeatureHasher(n_features=n_features, input_type=kind).transform(samples).toarray()
        assert np.array_equal(ours.numpy(), theirs), kind
    unsigned = FeatureHasher(n_features=n_features, alternate_sign=False).transform(dicts).toarray()
    assert np.array_equal(hashing.hash_features(dicts, n_features, alternate_sign=False).numpy(), unsigned)


def test_name_equals_value_convention():
    assert torch.equal(hashing.hash_features([{"city": "Paris"}], 64), hashing.hash_features([{"city=Paris": 1}], 64))


def test_minimal_hash_gets_scikit_learns_index():
    assert hashing.signed_hash_vector(torch.tensor([-(2**31)]), torch.ones(1), 10).tolist() == [0] * 8 + [-1, 0]  # 2^31 % 10 = 8


@settings(max_examples=20, deadline=None)
@given(st.lists(st.text(max_size=8), min_size=1, max_size=20), st.integers(1, 50))
def test_signed_hash_vector_agrees_with_the_hasher(names, m):
    h = torch.tensor([hashing.murmurhash3_32(n) for n in names])
    vector = hashing.signed_hash_vector(h, torch.ones(len(names), dtype=torch.float64), m)
    assert torch.equal(vector, hashing.hash_features([names], m, input_type="string")[0])


def test_hashed_inner_product_is_unbiased_over_seeds():
    # E[<phi(x), phi(x')>] = <x, x'> (Weinberger et al. 2009, Lemma 2): average over renamings
    x = {f"f{i}": 1.0 for i in range(20)}
    products = [hashing.hash_features([{f"{k}#{s}": v for k, v in x.items()}], 8)[0].pow(2).sum().item() for s in range(400)]
    assert abs(np.mean(products) - 20) < 2.0


def test_collision_rate_follows_the_birthday_formula():
    names = [f"w{i}" for i in range(2000)]
    for m in (1024, 8192, 65536):
        assert abs(hashing.collision_rate(names, m) - hashing.expected_collision_rate(2000, m)) < 0.05


# training and compression

@pytest.fixture(scope="module")
def digits():
    return mllib.load("digits", gen=mllib.generator(0))


def run(digits, **kw):
    return training.train_limited(digits, training.Precision(**kw), hidden=32, steps=120, lr=0.1, batch_size=32, gen=mllib.generator(1))


@pytest.fixture(scope="module")
def fp32_run(digits):
    return run(digits)


def accuracy(run):
    return run.algorithm.accuracies()[0]


def underflow(run):
    return torch.stack(run.underflow).mean().item()  # over the steps


def test_fp32_training_learns(fp32_run):
    assert accuracy(fp32_run) > 0.7  # chance: 0.1


def test_training_is_a_history_of_the_round_engine_one_step_a_round(fp32_run):
    assert fp32_run.rounds == list(range(1, 121)) and list(fp32_run.metrics) == ["loss", "underflow", "skipped"]
    assert fp32_run.loss[0].shape == (1,) and fp32_run.skipped[-1].tolist() == [0]
    assert torch.stack(fp32_run.loss)[-10:].mean() < torch.stack(fp32_run.loss)[:10].mean()
    assert fp32_run.model["W1"].shape == (1, 32, 64) and training.unstack(fp32_run.model)[0]["W1"].shape == (32, 64)


def test_fp8_master_weights_stall_without_stochastic_rounding(digits):
    nearest = run(digits, compute="fp8_e4m3", grads="fp8_e5m2", master="fp8_e4m3", scaled=True)
    stochastic = run(digits, compute="fp8_e4m3", grads="fp8_e5m2", master="fp8_e4m3", scaled=True, stochastic=True)
    assert accuracy(stochastic) > accuracy(nearest) + 0.1


def test_scaling_removes_gradient_underflow(digits):
    assert underflow(run(digits, grads="fp8_e4m3")) > 0.05
    assert underflow(run(digits, grads="fp8_e4m3", scaled=True)) < 0.01


@pytest.mark.parametrize("kw", [{}, dict(compute="fp8_e4m3", grads="fp8_e5m2", master="fp8_e4m3", scaled=True, stochastic=True)])
def test_seeds_trained_together_are_the_runs_of_each_seed_alone(digits, kw):
    settings = dict(hidden=8, steps=20, lr=0.1, batch_size=16)
    together = training.train_limited_seeds(digits, training.Precision(**kw), seeds=[3, 7], **settings)
    losses = torch.stack(together.loss, 1)  # (seeds, steps)
    for i, seed in enumerate([3, 7]):
        alone = training.train_limited(digits, training.Precision(**kw), gen=mllib.generator(seed), **settings)
        torch.testing.assert_close(losses[i], torch.stack(alone.loss, 1)[0], rtol=1e-3, atol=1e-4)
        assert abs(together.algorithm.accuracies()[i] - accuracy(alone)) < 0.02
        assert together.skipped[-1][i] == alone.skipped[-1][0] == 0
    assert not torch.equal(losses[0], losses[1])  # each seed its own initialization and batches


def test_train_limited_seeds_needs_a_seed(digits):
    with pytest.raises(ValueError, match="seeds must name at least one seed"):
        training.train_limited_seeds(digits, training.Precision(), seeds=[], hidden=4, steps=1, lr=0.1, batch_size=1)


def test_fast_cast_path_equals_round_to():
    x = hard_inputs("bf16", n=1000)
    for fmt in TORCH_TYPED:
        assert same_bits(training._fast(x, fmt), formats.round_to(x, fmt))


def test_pruning_zeroes_the_smallest_entries():
    w = torch.randn(10, 10, generator=torch.Generator().manual_seed(0))
    p = training.magnitude_prune(w, 0.3)
    assert (p == 0).sum() == 30 and p[p != 0].abs().min() >= w[p == 0].abs().max()
    with pytest.raises(ValueError, match="sparsity"):
        training.magnitude_prune(w, 1.0)


def test_retraining_keeps_the_pruned_connections_at_zero_and_recovers_accuracy(digits, fp32_run):
    pruned_acc = training.mlp_accuracy(training.compress(training.unstack(fp32_run.model)[0], 0.9), digits.x_test.flatten(1),
                                       digits.y_test)  # fmt: skip
    retrained = training.prune_and_retrain(fp32_run.model, digits, 0.9, steps=100, lr=0.1, batch_size=32,
                                           gens=[mllib.generator(2)])  # fmt: skip
    for name in ("W1", "W2"):
        kept = training.magnitude_prune(fp32_run.model[name][0], 0.9) != 0
        assert torch.equal(retrained.model[name][0] != 0, kept)
    assert retrained.algorithm.accuracies()[0] > pruned_acc + 0.1
    with pytest.raises(ValueError, match="one generator per run"):
        training.prune_and_retrain(fp32_run.model, digits, 0.5, steps=1, lr=0.1, batch_size=32, gens=[])


def test_compression_bytes():
    params = {"W": torch.ones(8, 8), "b": torch.ones(8)}
    assert training.compressed_bytes(params, 32, sparse=False) == 72 * 4
    assert training.compressed_bytes(params, 8, sparse=False) == 72 + 8


# autodiff

def test_scalar_autodiff_matches_torch_autograd():
    a, b = autodiff.Value(0.7), autodiff.Value(-1.3)
    y = (a * b).tanh() + a**2 / b - (b.exp() + 1).log() * a + (3 - a).relu() * b
    y.backward()
    A, B = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.7, -1.3))
    Y = torch.tanh(A * B) + A**2 / B - torch.log(torch.exp(B) + 1) * A + torch.relu(3 - A) * B
    Y.backward()
    assert math.isclose(y.data, Y.item(), rel_tol=1e-12)
    assert math.isclose(a.grad, A.grad.item(), rel_tol=1e-12) and math.isclose(b.grad, B.grad.item(), rel_tol=1e-12)


def test_autodiff_adds_over_every_use():
    x = autodiff.Value(3.0)
    (x * x + x).backward()
    assert x.grad == 7.0


# lab checks

def _bf16_solution(x):
    b = x.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    r = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    return torch.where(r >= 2**31, r - 2**32, r).to(torch.int32).view(torch.float32)


def _decode_solution(b, E, M, bias):
    b = b.to(torch.int64)
    e, m = (b >> M) & (2**E - 1), (b & (2**M - 1)).double()
    sign = 1 - 2 * ((b >> (E + M)) & 1).double()
    v = torch.where(e == 0, 2.0 ** (1 - bias) * m / 2**M, 2.0 ** (e.double() - bias) * (1 + m / 2**M))
    v = torch.where(e == 2**E - 1, torch.where(m == 0, math.inf, math.nan), v)
    return sign * v


def _stochastic_round_solution(x, E, M, bias, u):
    largest = (2 - 2.0**-M) * 2.0 ** (2**E - 2 - bias)
    x = x.double().clamp(-largest, largest)
    q = 2.0 ** ((torch.frexp(x).exponent - 1).clamp(min=1 - bias) - M).double()
    return torch.floor(x / q + u) * q


SOLUTIONS = {
    "decode_bits": _decode_solution,
    "round_bf16": _bf16_solution,
    "stochastic_round_to_format": lambda x, E, M, bias, u: _stochastic_round_solution(x, E, M, bias, u),
    "hash_trick": lambda h, v, m: torch.zeros(m, dtype=v.dtype).index_add_(0, h.to(torch.int64).abs() % m, torch.where(h >= 0, 1.0, -1.0).to(v.dtype) * v),
}

# The known mistakes of each check are tested in test_checks.py; these are other wrong answers.
WRONG = {
    "stochastic_round_to_format": {
        "always down": lambda x, E, M, bias, u: _stochastic_round_solution(x, E, M, bias, torch.zeros_like(u)),
        "calls the library": lambda x, E, M, bias, u: formats.round_to(x, formats.FloatFormat("x", E, M, bias, True, 0.0),
                                                                  stochastic=True, gen=torch.Generator()),
    },
    "decode_bits": {
        "no subnormals": lambda b, E, M, bias: torch.where(((b >> M) & (2**E - 1)) == 0, 0.0, _decode_solution(b, E, M, bias)),
        "bias off by one": lambda b, E, M, bias: _decode_solution(b, E, M, bias - 1),
        "no sign": lambda b, E, M, bias: _decode_solution(b, E, M, bias).abs(),
        "no inf": lambda b, E, M, bias: _decode_solution(b, E, M, bias).nan_to_num(posinf=0.0, neginf=0.0),
    },
    "round_bf16": {
        "truncates": lambda x: (x.view(torch.int32) & -65536).view(torch.float32),
        "ties away from zero": lambda x: ((x.view(torch.int32).to(torch.int64) + 0x8000) & -65536).to(torch.int32).view(torch.float32),
        "fp16 instead": lambda x: x.half().float(),
        "in place": lambda x: x.copy_(_bf16_solution(x)),
    },
    "hash_trick": {
        "no sign": lambda h, v, m: SOLUTIONS["hash_trick"](h, v.abs() * 0 + v, m).abs(),
        "unsigned modulo": lambda h, v, m: torch.zeros(m, dtype=v.dtype).index_add_(0, h % m, torch.where(h >= 0, 1.0, -1.0).to(v.dtype) * v),
        "ignores values": lambda h, v, m: SOLUTIONS["hash_trick"](h, torch.ones_like(v), m),
        "sign flipped": lambda h, v, m: -SOLUTIONS["hash_trick"](h, v, m),
    },
}


@pytest.mark.parametrize("name", list(SOLUTIONS))
def test_check_passes_the_solution(name, capsys):
    assert_passes(getattr(check, name), SOLUTIONS[name], capsys)


@pytest.mark.parametrize("name,wrong", [(n, w) for n in WRONG for w in WRONG[n]])
def test_check_rejects_wrong_answers(name, wrong):
    assert_rejects(getattr(check, name), WRONG[name][wrong])


# sparse products and remaining input checks

def test_sparse_vs_dense_times_both_products():
    times = sparse.sparse_vs_dense(64, 8, (0.5, 0.1), gen=torch.Generator().manual_seed(0), repeats=1)
    assert times["density"] == [0.5, 0.1] and len(times["dense"]) == len(times["sparse"]) == 2
    assert all(t > 0 for t in times["dense"] + times["sparse"])


def test_sparse_operands_have_the_density():
    A, B = sparse.sparse_operands(200, 3, 0.1, gen=torch.Generator().manual_seed(0))
    assert abs((A != 0).float().mean().item() - 0.1) < 0.01 and B.shape == (200, 3)
    with pytest.raises(ValueError, match="density"):
        sparse.sparse_operands(10, 3, 0.0, gen=torch.Generator())


def test_more_bad_input_raises(digits):
    with pytest.raises(ValueError, match="input_type"):
        hashing.hash_features([["a"]], 8, input_type="tokens")
    with pytest.raises(ValueError, match=r"^x must be a tensor of terms \(\.\.\., n\), got a tensor of shape \(3, 0\)"):
        summation.naive_sum(torch.ones(3, 0), "bf16")
    with pytest.raises(ValueError, match="^hidden must be an integer >= 1, got 0"):
        training.train_limited(digits, training.Precision(), hidden=0, steps=1, lr=0.1, batch_size=1, gen=torch.Generator())
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        training.train_limited(digits, training.Precision(), hidden=4, steps=0, lr=0.1, batch_size=1,
                               gen=torch.Generator())
    with pytest.raises(ValueError, match="^compute must be one of"):
        training.Precision(compute="fp4")
    with pytest.raises(ValueError, match="^step must be a finite number > 0, got 0.0"):
        formats.stochastic_round_grid(torch.ones(2), 0.0, torch.zeros(2))


def test_compression_sweep_shrinks_the_model(digits, fp32_run):
    params = training.unstack(fp32_run.model)[0]
    rows = training.compression_sweep(params, digits, (0.0, 0.9))
    by = {(r["sparsity"], r["fmt"]): r for r in rows}
    assert by[0.0, "int8"]["bytes"] < by[0.0, "fp32"]["bytes"] / 3.9
    assert by[0.9, "fp32"]["bytes"] < by[0.0, "fp32"]["bytes"] / 3
    assert abs(by[0.0, "int8"]["accuracy"] - by[0.0, "fp32"]["accuracy"]) < 0.03


def test_hashed_text_model_learns():
    docs, labels = hashing.synthetic_text(400, gen=torch.Generator().manual_seed(0))
    H = hashing.hash_features(docs, 1024, input_type="string")
    acc = hashing.train_linear(H[:300], labels[:300], H[300:], labels[300:], n_classes=4, steps=100)
    assert acc > 0.8


def test_bit_table_handles_special_values():
    assert "(no NaN)" in bits.bit_table(math.nan)
    rows = {r["name"]: r for r in bits.bit_rows(math.inf)}
    assert rows["fp8_e4m3"]["stored"] == 448 and rows["fp8_e4m3"]["rel_error"] == math.inf
    assert rows["fp16"]["stored"] == math.inf and rows["fp16"]["rel_error"] == 0
