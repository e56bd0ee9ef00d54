"""Shared fixtures: a seeded generator and the digits, loaded once per test session."""
import os

import pytest
from hypothesis import settings

os.environ.setdefault("MPLBACKEND", "Agg")
settings.register_profile("course", deadline=None, max_examples=40)
settings.load_profile("course")

import mllib  # noqa: E402  (after the backend is chosen)


@pytest.fixture
def gen():
    return mllib.setup(seed=0)


@pytest.fixture(scope="session")
def digits():
    return mllib.load("digits", gen=mllib.generator(0))
