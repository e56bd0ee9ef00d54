"""Outputs compared by meaning: the comparison itself, and nbval running it on a notebook."""
import os
import subprocess
import sys

import nbformat
import pytest
from compare_numbers import Tolerance, declaration_problems, differences, reconciled, split_numbers, texts, tolerances
from notebooks import ROOT, VALIDATED, code_cells

ACCURACY = Tolerance(pattern=r"FedAvg (\S+) \[(\S+)–(\S+)\]", tolerance=0.03, std=0.012)
RECORDED = "FedAvg 0.92 [0.90–0.94] after 50 rounds\nbits: 32x fewer\n"


def test_numbers_are_found_and_words_with_digits_stay_text():
    pieces, numbers = split_numbers("e4m3 keeps 3 bits, lr=1e-3, top-0.1% and -2.5 vs x2")
    assert [m.group() for m in numbers] == ["3", "1e-3", "0.1", "-2.5"]
    assert "".join(p + m.group() for p, m in zip(pieces, numbers)) + pieces[-1] == (
        "e4m3 keeps 3 bits, lr=1e-3, top-0.1% and -2.5 vs x2"
    )


def test_a_move_within_the_tolerance_passes():
    assert differences(RECORDED, RECORDED.replace("0.92", "0.94").replace("0.90", "0.88"), [ACCURACY]) == []


def test_a_move_beyond_the_tolerance_fails_and_names_the_number():
    found = differences(RECORDED, RECORDED.replace("0.92", "0.96"), [ACCURACY])
    assert found == [f"line 1: 0.92 became 0.96, beyond the tolerance 0.03 declared by {ACCURACY.pattern!r}"]


def test_numbers_outside_the_pattern_stay_exact():
    found = differences(RECORDED, RECORDED.replace("50 rounds", "51 rounds"), [ACCURACY])
    assert found == ["line 1: 50 became 51 (compared exactly: no tolerance declared)"]


def test_a_changed_word_fails_even_with_a_tolerance():
    assert differences(RECORDED, RECORDED.replace("fewer", "more"), [ACCURACY]) == [
        "line 2: text 'x fewer\\n' became 'x more\\n'"
    ]


def test_an_exact_cell_fails_on_the_last_digit():
    assert differences("eps = 1.2345", "eps = 1.2346", []) == [
        "line 1: 1.2345 became 1.2346 (compared exactly: no tolerance declared)"
    ]


def test_a_number_that_appears_or_vanishes_fails():
    assert differences("rounds: 12", "rounds: -", [ACCURACY]) == [
        "the output now has 0 numbers where 1 were recorded"
    ]


def test_a_width_change_beside_a_tolerated_number_passes():
    rounds = Tolerance(pattern=r"rounds +(\d+)", tolerance=3, std=1.5)
    assert differences("rounds    12 |", "rounds     9 |", [rounds]) == []
    assert differences("exact    12 |", "exact     12 |", [rounds]) != []


def test_declarations_are_checked_against_the_recorded_numbers():
    assert declaration_problems([RECORDED], [ACCURACY]) == []
    too_wide = Tolerance(ACCURACY.pattern, tolerance=0.04, std=0.012)
    assert "at most 3 x its measured std 0.012" in declaration_problems([RECORDED], [too_wide])[0]
    relative = Tolerance(r"bits: (\d+)x", tolerance=10, std=4)
    assert "reaches 30% of the recorded 32" in declaration_problems([RECORDED], [relative])[0]
    stale = Tolerance(r"MIME (\S+)", tolerance=0.01, std=0.01)
    assert "covers no number" in declaration_problems([RECORDED], [stale])[0]


def test_reconciled_outputs_keep_the_recorded_text_only_where_they_agree():
    def stream(text):
        return nbformat.v4.new_output("stream", name="stdout", text=text)

    def plain(text):
        return nbformat.v4.new_output("execute_result", data={"text/plain": text}, execution_count=1)

    recorded = [stream(RECORDED), plain("0.92")]
    new = [stream(RECORDED.replace("0.92", "0.93")), plain("0.93")]
    outputs, found = reconciled(new, recorded, [ACCURACY], sanitize=lambda s: s)
    assert outputs[0]["text"] == RECORDED  # within the tolerance: nbval sees the recorded text
    assert outputs[1]["data"]["text/plain"] == "0.93"
    assert found == ["text/plain line 1: 0.92 became 0.93 (compared exactly: no tolerance declared)"]
    assert new[0]["text"] != RECORDED  # the new outputs themselves are left alone


def notebook_printing(recorded: str, tolerance: list) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell("print('FedAvg 0.92 [0.90–0.94] after 50 rounds')", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=recorded)]
    cell.metadata["tolerance"] = tolerance
    notebook = nbformat.v4.new_notebook(cells=[cell])
    notebook.metadata.kernelspec = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    return notebook


@pytest.mark.parametrize(("recorded", "passes"), [
    ("FedAvg 0.94 [0.91–0.95] after 50 rounds\n", True),
    ("FedAvg 0.97 [0.90–0.94] after 50 rounds\n", False),
    ("FedAvg 0.92 [0.90–0.94] after 60 rounds\n", False),
])
def test_nbval_compares_by_meaning(tmp_path, recorded, passes):
    path = tmp_path / "example.ipynb"
    nbformat.write(notebook_printing(recorded, [vars(ACCURACY)]), path)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "--nbval", "--nbval-current-env", "-q",
         "-p", "no:cacheprovider", str(path)],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"},
    )  # fmt: skip
    assert (result.returncode == 0) == passes, result.stdout[-2000:]
    if not passes:
        assert "became" in result.stdout


def test_tolerance_declarations_in_the_course_are_valid():
    for notebook in VALIDATED:
        for cell in code_cells(notebook):
            recorded = [t for output in cell.outputs for t in texts(output).values()]
            problems = declaration_problems(recorded, tolerances(cell.metadata))
            assert not problems, f"{notebook.name}: {problems}\n{cell.source}"
