"""Shared fixtures: a seeded generator and the digits, loaded once per test session."""
import matplotlib
import pytest
import torch
from hypothesis import settings

import mllib

# Plots in unit tests draw off screen. Not through MPLBACKEND: nbval's kernels would
# inherit it and stop displaying the notebooks' figures.
matplotlib.use("Agg")
# One torch thread per test process: xdist runs two of them on the two cores, and small
# batched products slow down many times over when threads compete.
torch.set_num_threads(1)
# Derandomized and without a database: every machine runs the same examples (CI stays reproducible).
settings.register_profile("course", deadline=None, max_examples=40, derandomize=True, database=None)
settings.load_profile("course")


@pytest.fixture
def gen():
    return mllib.setup(seed=0)


@pytest.fixture(scope="session")
def digits():
    return mllib.load("digits", gen=mllib.generator(0))
