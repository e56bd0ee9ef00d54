"""Shared fixtures: a seeded generator and the digits, loaded once per test session."""
import matplotlib
import pytest
from hypothesis import settings

import mllib

# Plots in unit tests draw off screen. Not through MPLBACKEND: nbval's kernels would
# inherit it and stop displaying the notebooks' figures.
matplotlib.use("Agg")
settings.register_profile("course", deadline=None, max_examples=40)
settings.load_profile("course")


@pytest.fixture
def gen():
    return mllib.setup(seed=0)


@pytest.fixture(scope="session")
def digits():
    return mllib.load("digits", gen=mllib.generator(0))
