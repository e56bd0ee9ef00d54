"""mllib.claims: a claim declared once, stated by a notebook with the number it computed."""
import numpy as np
import pytest
import torch

from mllib import claims
from mllib.claims import ClaimError, claim

DECLARED = {
    "band": {"says": "FedAvg lands near 0.19", "above": 0.1, "below": 0.2, "notebook": "lectures/x.ipynb"},
    "small": {"says": "SCAFFOLD has no drift", "below": 1e-6, "notebook": "lectures/x.ipynb"},
    "exact": {"says": "sign sends 32x fewer bits", "equals": 32, "notebook": "lectures/x.ipynb"},
    "closed": {"says": "a gap is never negative", "at_least": 0.0, "at_most": 0.05, "notebook": "lectures/x.ipynb"},
    "relation": {"says": "SCAFFOLD beats FedAvg with every seed", "notebook": "lectures/x.ipynb"},
}


@pytest.fixture(autouse=True)
def declarations(monkeypatch):
    monkeypatch.setattr(claims, "declared", lambda: DECLARED)


@pytest.mark.parametrize(("name", "measured"), [
    ("band", 0.15), ("band", np.float64(0.19)), ("band", torch.tensor(0.11)), ("small", 0.0), ("exact", 32),
    ("exact", 32.0), ("closed", 0.0), ("closed", 0.05), ("relation", True), ("relation", np.bool_(True)),
    ("relation", torch.tensor(True)),
])  # fmt: skip
def test_a_claim_holds_within_its_declared_bounds(name, measured):
    claim(name, measured)


@pytest.mark.parametrize(("name", "measured", "says"), [
    ("band", 0.2, r"FedAvg lands near 0.19: measured 0.2, which is not < 0.2"),
    ("band", 0.05, r"measured 0.05, which is not > 0.1"),
    ("small", 1e-3, r"SCAFFOLD has no drift: measured 0.001, which is not < 1e-06"),
    ("exact", 31, r"which is not == 32"),
    ("closed", -0.01, r"which is not >= 0.0"),
    ("relation", False, r"SCAFFOLD beats FedAvg with every seed: not so in this run"),
])  # fmt: skip
def test_a_claim_that_does_not_hold_says_what_it_claims_and_what_was_measured(name, measured, says):
    with pytest.raises(ClaimError, match=says):
        claim(name, measured)


def test_a_failed_claim_fails_the_cell_like_an_assert():
    assert issubclass(ClaimError, AssertionError)


@pytest.mark.parametrize(("name", "measured"), [("band", True), ("band", "0.15"), ("band", float("nan")),
                                                ("band", torch.ones(2)), ("relation", 1.0), ("relation", None)])
def test_a_number_where_a_relation_is_declared_or_the_other_way_round_is_refused(name, measured):
    with pytest.raises(TypeError, match=name):
        claim(name, measured)


def test_an_undeclared_claim_is_named():
    with pytest.raises(KeyError, match="no claim 'typo' is declared"):
        claim("typo", 0.15)


def test_the_course_declarations_load_with_their_notebooks(monkeypatch):
    monkeypatch.undo()
    course = claims.declared()
    assert len(course) > 200
    assert all((claims.ROOT / c["notebook"]).exists() for c in course.values())


def test_a_declaration_with_an_unknown_bound_is_refused(tmp_path):
    with pytest.raises(ValueError, match="needs 'says'"):
        claims._check_declaration("x", {"says": "y", "between": [0, 1]}, tmp_path / "x.toml")
