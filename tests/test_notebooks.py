"""What nbval does not check by itself: executed notebooks, compared outputs, listed claims."""
import ast
import re
import subprocess
import sys

import pytest
from nbval.plugin import get_sanitize_patterns

from mllib.claims import bounds, declared
from notebooks import IGNORED, LECTURES, ROOT, VALIDATED, code_cells, is_compared, nbval_tags, read

WIDGET = "application/vnd.jupyter.widget-view+json"


def claims_of(notebook) -> set[str]:
    """The names of the claims declared for a notebook (mllib.claims reads lectures/claims/, solutions/claims/)."""
    relative = notebook.relative_to(ROOT).as_posix()
    return {name for name, c in declared().items() if c["notebook"] == relative}


def stated(cell) -> list[str]:
    """The claims a cell states: the names in its ``claim("name", measured)`` calls."""
    calls = [n for n in ast.walk(ast.parse(cell.source)) if isinstance(n, ast.Call)]
    return [c.args[0].value for c in calls if getattr(c.func, "id", None) == "claim" and isinstance(c.args[0], ast.Constant)]


@pytest.mark.parametrize("notebook", VALIDATED, ids=lambda p: p.name)
def test_notebook_is_committed_executed_top_to_bottom(notebook):
    counts = [c.execution_count for c in code_cells(notebook) if c.source.strip()]
    assert counts == list(range(1, len(counts) + 1)), "run the notebook top to bottom (make execute) and commit it"


@pytest.mark.parametrize("notebook", VALIDATED, ids=lambda p: p.name)
def test_most_outputs_are_compared(notebook):
    with_output = [c for c in code_cells(notebook) if c.outputs]
    compared = [c for c in with_output if is_compared(c)]
    assert len(compared) >= 0.7 * len(with_output), f"only {len(compared)}/{len(with_output)} output cells compared"


@pytest.mark.parametrize("notebook", VALIDATED, ids=lambda p: p.name)
def test_only_widget_cells_ignore_their_output(notebook):
    for cell in code_cells(notebook):
        shows_widget = any(WIDGET in o.get("data", {}) for o in cell.outputs)
        assert shows_widget == bool(nbval_tags(cell) & IGNORED), (
            f"tag exactly the widget cells nbval-ignore-output:\n{cell.source}"
        )


def test_nbval_runs_strict_everywhere():
    lax = "nbval" + "-lax"
    files = [ROOT / "Makefile", ROOT / "pyproject.toml", ROOT / ".ci" / "run", *VALIDATED]
    assert not [f.name for f in files if lax in f.read_text()]
    assert "--nbval " in (ROOT / "pyproject.toml").read_text()


def test_no_cell_is_exempt_on_some_hardware():
    """Outputs hold on every CPU and GPU: numbers that may move declare a tolerance instead."""
    allowed = IGNORED | {"raises-exception"}
    for notebook in VALIDATED:
        for cell in code_cells(notebook):
            assert set(cell.metadata.get("tags", [])) <= allowed | {"parameters"}, (
                f"{notebook.name}: tags {cell.metadata['tags']}: declare a tolerance, not an exemption"
            )


def test_three_quarters_of_all_output_cells_are_compared():
    with_output = [c for notebook in VALIDATED for c in code_cells(notebook) if c.outputs]
    assert sum(map(is_compared, with_output)) >= 0.75 * len(with_output)


def test_nbval_collects_every_notebook():
    listed = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:xdist", "lectures", "solutions"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for notebook in VALIDATED:
        assert f"{notebook.relative_to(ROOT).as_posix()}::Cell 0" in listed


def sanitize(text: str) -> str:
    """Apply tests/sanitize.cfg as nbval reads it."""
    for regex, replace in get_sanitize_patterns((ROOT / "tests" / "sanitize.cfg").read_text()):
        text = re.sub(regex, replace, text)
    return text


def test_sanitizer_keeps_metrics_and_hides_what_varies():
    for metric in ["acc=0.93", "accuracy 0.93 after 30 rounds", "loss 1.2e-03", "32x fewer bits"]:
        assert sanitize(metric) == metric
    assert sanitize("<Tensor at 0x7f3a2b1c9d00>") == "<Tensor at 0xADDRESS>"
    assert sanitize(" 40%|████      | 4/10 [00:01<00:02,  2.9it/s]") == " PROGRESS-BAR"


@pytest.mark.parametrize("notebook", VALIDATED, ids=lambda p: p.name)
def test_no_notebook_loads_precomputed_results(notebook):
    loaders = re.compile(r"\bopen\(|torch\.load|np\.load|pickle|read_csv|json\.load|\.npz|\.pt\b")
    for cell in code_cells(notebook):
        assert not loaders.search(cell.source), f"compute results in the notebook, do not load them:\n{cell.source}"


@pytest.mark.parametrize("notebook", LECTURES, ids=lambda p: p.name)
def test_every_lecture_makes_claims(notebook):
    assert claims_of(notebook), f"declare the claims of {notebook.name} in lectures/claims/{notebook.stem}.toml"


@pytest.mark.parametrize("notebook", VALIDATED, ids=lambda p: p.name)
def test_every_declared_claim_is_stated_once_in_a_compared_cell(notebook):
    compared = [name for c in code_cells(notebook) if is_compared(c) for name in stated(c)]
    for name in claims_of(notebook):
        assert compared.count(name) == 1, f"{notebook.name} states {name!r} {compared.count(name)} times in compared cells"


@pytest.mark.parametrize("notebook", VALIDATED, ids=lambda p: p.name)
def test_a_notebook_states_only_its_declared_claims_and_asserts_nothing_else(notebook):
    mine = claims_of(notebook)
    for cell in code_cells(notebook):
        assert set(stated(cell)) <= mine, f"{notebook.name}: declare {set(stated(cell)) - mine} in its claims file"
        assert not [line for line in cell.source.splitlines() if line.startswith("assert ")], (
            f"{notebook.name}: state a claim with claim(name, measured), declared in its claims file:\n{cell.source}"
        )


def test_two_sided_bands_are_at_most_0_1_wide():
    for name, declaration in declared().items():
        limits = bounds(declaration)
        low = limits.get("above", limits.get("at_least"))
        high = limits.get("below", limits.get("at_most"))
        if low is not None and high is not None:
            assert 0 < high - low <= 0.1 + 1e-9, f"claim {name!r}: band ({low}, {high}) wider than 0.1"


@pytest.mark.parametrize("notebook", VALIDATED, ids=lambda p: p.name)
def test_notebook_uses_the_course_kernel(notebook):
    assert read(notebook).metadata.kernelspec.name == "python3"
