"""labs/ is generated from solutions/, its stubs are unfinished, and its checks are honest."""
import re

import nbformat
import pytest

from mllib.checks import CheckFailed
from mllib.labs import MarkerError, make_lab, strip_solutions
from notebooks import LABS, SOLUTIONS, check_modules, code_cells, names_used, read, solution_lines

INDENTED = """def f(x):
    y = 1
    ### BEGIN SOLUTION
    return x + y
    ### END SOLUTION
"""


def test_a_region_becomes_a_stub_at_its_indentation():
    assert strip_solutions(INDENTED) == (
        "def f(x):\n    y = 1\n    # YOUR CODE HERE\n    raise NotImplementedError"
    )


@pytest.mark.parametrize(
    "source, message",
    [
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "nested"),
        ("x = 1\n### END SOLUTION\n", "without"),
        ("### BEGIN SOLUTION\nx = 1\n", "never closed"),
    ],
)
def test_broken_markers_are_errors(source, message):
    with pytest.raises(MarkerError, match=message):
        strip_solutions(source)


def test_every_solution_has_its_lab():
    assert [p.name for p in LABS] == [p.name for p in SOLUTIONS]


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_lab_is_in_sync_with_its_solution(solution):
    lab = solution.parents[1] / "labs" / solution.name
    assert lab.read_text() == nbformat.writes(make_lab(read(solution), solution.name)) + "\n", (
        f"{lab.name} is out of date: run `make labs`"
    )


@pytest.mark.parametrize("lab", LABS, ids=lambda p: p.name)
def test_lab_has_no_answers_and_no_outputs(lab):
    text = lab.read_text()
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    assert all(not c.outputs and c.execution_count is None for c in code_cells(lab))


@pytest.mark.parametrize("lab", LABS, ids=lambda p: p.name)
def test_every_lab_check_reports_the_unfinished_exercise(lab, monkeypatch):
    """Run the lab as a student would before answering: each check cell says "not implemented"."""
    monkeypatch.chdir(lab.parent)
    namespace = {}
    check_cells = 0
    for cell in code_cells(lab):
        is_check = bool(re.search(r"^check\.\w+\(", cell.source, re.M))
        check_cells += is_check
        try:
            exec(compile(cell.source, lab.name, "exec"), namespace)
        except CheckFailed as failure:
            assert is_check and "not implemented yet" in str(failure)
        except NotImplementedError:
            assert "YOUR CODE HERE" not in cell.source  # a later cell that uses an unfinished answer
        else:
            assert not is_check, f"a check passed on the unfinished lab:\n{cell.source}"
    assert check_cells >= 1


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_no_solution_calls_the_reference_its_check_compares_against(solution):
    modules = check_modules(solution)
    cells = code_cells(solution)
    references = {
        getattr(modules[alias], name).reference.__name__
        for cell in cells
        for alias, name in re.findall(r"^(\w+)\.(\w+)\(", cell.source, re.M)
        if alias in modules
    }
    assert references, f"{solution.name} runs no self-check"
    for cell in cells:
        assert not any(f"import {ref}" in cell.source or f"{ref} as" in cell.source for ref in references)
        region = solution_lines(cell.source)
        if region:
            leaked = names_used(cell.source, region) & references
            assert not leaked, f"{solution.name}: a solution region calls {leaked}, the reference of its check"
