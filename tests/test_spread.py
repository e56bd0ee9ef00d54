import pytest
from hypothesis import given
from hypothesis import strategies as st

from mllib.spread import Spread, over_seeds


def test_a_spread_prints_median_and_range():
    accuracy = Spread([0.93, 0.90, 0.94, 0.92, 0.91])
    assert f"{accuracy:.2f}" == "0.92 [0.90–0.94]"
    assert (accuracy.median, accuracy.low, accuracy.high) == (0.92, 0.90, 0.94)


def test_the_default_precision_follows_the_spread():
    assert Spread([0.91, 0.93, 0.95]).decimals == 2
    assert str(Spread([0.921, 0.923, 0.925])) == "0.923 [0.921–0.925]"
    assert str(Spread([12, 18, 30])) == "18 [12–30]"
    assert Spread([0.5, 0.5]).decimals == 3  # no spread: three decimals


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=20))
def test_statistics_lie_within_the_range(values):
    s = Spread(values)
    assert s.low <= s.median <= s.high
    slack = 1e-9 * (1 + abs(s.low) + abs(s.high))  # fmean rounds
    assert s.low - slack <= s.mean <= s.high + slack
    assert s.std >= 0


@pytest.mark.parametrize("bad", [[], [0.5, float("nan")], [float("inf")]])
def test_a_spread_needs_finite_values(bad):
    with pytest.raises(ValueError, match="values must"):
        Spread(bad)


def test_over_seeds_runs_every_seed_and_keeps_the_keys():
    assert over_seeds(lambda seed: seed / 10, range(3)).values == (0.0, 0.1, 0.2)
    both = over_seeds(lambda seed: {"a": seed, "b": -seed}, range(3))
    assert both["b"].values == (0, -1, -2)
    with pytest.raises(ValueError, match="same keys"):
        over_seeds(lambda seed: {"a": 0} if seed else {"b": 0}, range(2))
    with pytest.raises(ValueError, match="at least one seed"):
        over_seeds(lambda seed: 0.0, [])
