"""labs/ is generated from solutions/, its stubs are unfinished, and its checks are honest."""
import re
import shutil

import nbformat
import pytest

from mllib.checks import CheckFailed
from mllib.labs import MarkerError, digest, grading_metadata, main, make_lab, record, strip_solutions
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


def course_notebook(*cells):
    """A solution with a check import, then ``cells`` (code, or markdown if they start with #)."""
    made = [nbformat.v4.new_code_cell("from mllib.checks import federated as check")]
    made += [nbformat.v4.new_markdown_cell(c) if c.startswith("# ") else nbformat.v4.new_code_cell(c) for c in cells]
    return nbformat.v4.new_notebook(cells=made)


def test_markers_and_checks_give_nbgrader_metadata():
    notebook = course_notebook(
        INDENTED, "check.f(f)", "### BEGIN SOLUTION\nrounds = 3\n### END SOLUTION", "check.rounds(rounds)",
        "# Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION", "print(f(1))",
    )  # fmt: skip
    found = grading_metadata(notebook)
    assert [m and (m["grade_id"], m["grade"], m["solution"], m["locked"], m.get("points")) for m in found] == [
        None,
        ("answer-f", False, True, False, None),
        ("check-f", True, False, True, 1),
        ("answer-rounds", False, True, False, None),
        ("check-rounds", True, False, True, 1),
        ("written-1", True, True, False, 1),  # graded by hand
        None,
    ]
    assert all(m["schema_version"] == 3 for m in found if m)


def test_a_lab_carries_the_metadata_and_locks_its_checks():
    lab = make_lab(course_notebook(INDENTED, "check.f(f)", "# Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION"))
    answer, check, written = lab.cells[1:]
    assert answer.metadata.nbgrader["cell_type"] == "code" and answer.metadata.deletable is False
    assert "editable" not in answer.metadata and check.metadata.editable is False
    assert written.source == "# Why?\nYOUR ANSWER HERE"  # nbgrader's text stub


def test_a_check_beside_an_answer_is_an_error():
    with pytest.raises(MarkerError, match="give the check its own"):
        grading_metadata(course_notebook("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\ncheck.f(f)"))


def test_experiment_questions_are_checks_and_a_name_used_twice_is_numbered():
    notebook = course_notebook("from mllib import checks", "checks.number_in_range('a', 1, 0, 2, hint='')",
                               "checks.number_in_range('b', 1, 0, 2, hint='')")  # fmt: skip
    assert [m and m["grade_id"] for m in grading_metadata(notebook)] == [
        None, None, "check-number_in_range", "check-number_in_range-2"
    ]


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
def test_self_checks_write_nothing_to_stderr(solution):
    """nbgrader scores a check cell with any stderr 0 (mllib.grading moves it to stdout, but a
    warning in a check is noise for students too): the recorded run of the solution shows none."""
    for cell, meta in zip(read(solution).cells, grading_metadata(read(solution)), strict=True):
        if meta and meta["grade"] and not meta["solution"]:
            assert not [o for o in cell.outputs if o.get("name") == "stderr"], f"{solution.name}:\n{cell.source}"


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


# ---- make labs never destroys a student's lab -------------------------------------------

FIRST = next(p for p in SOLUTIONS if p.name.startswith("01_"))  # a real solution


@pytest.fixture
def course(tmp_path):
    """A copy of one solution and its freshly generated lab in tmp_path (never the real labs/)."""
    (tmp_path / "solutions").mkdir()
    shutil.copy(FIRST, tmp_path / "solutions" / FIRST.name)
    generate(tmp_path)
    return tmp_path


def generate(root, *names):
    main(str(root / "solutions"), str(root / "labs"), *names)


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def answer(lab):
    """Fill in the first exercise as a student would."""
    notebook = read(lab)
    cell = next(c for c in notebook.cells if "raise NotImplementedError" in c.source)
    cell.source = cell.source.replace("raise NotImplementedError", "return 42  # my answer")
    nbformat.write(notebook, lab)


def run(lab):
    """Run the lab as a student would, without editing a cell: outputs and execution counts."""
    notebook = read(lab)
    for count, cell in enumerate((c for c in notebook.cells if c.cell_type == "code"), 1):
        cell.execution_count = count
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"ran {count}\n")]
    notebook.metadata.language_info = {"name": "python", "version": "3.11.9"}
    nbformat.write(notebook, lab)


def test_a_lab_records_what_was_generated():
    lab = make_lab(read(FIRST), FIRST.name)
    assert record(lab) == {"solution": FIRST.name, "sha256": digest(lab)}
    assert len(digest(lab)) == 64 and digest(lab) == digest(nbformat.reads(nbformat.writes(lab), as_version=4))


@pytest.mark.parametrize("work", [answer, run], ids=["answered", "only-run"])
def test_a_students_lab_survives_make_labs(course, work, capsys):
    lab = course / "labs" / FIRST.name
    work(lab)
    mine = lab.read_bytes()
    capsys.readouterr()

    generate(course)
    assert lab.read_bytes() == mine
    new = lab.with_name(lab.stem + ".new.ipynb")
    assert new.read_text() == nbformat.writes(make_lab(read(FIRST), FIRST.name)) + "\n"
    out = capsys.readouterr().out
    assert f"kept {lab}: it differs from what `make labs` generated last" in out and str(new) in out

    before = snapshot(course / "labs")  # twice changes nothing (the new version is not deleted)
    generate(course)
    assert snapshot(course / "labs") == before
    assert f"a new version of {lab} waiting to be merged by hand" in capsys.readouterr().out


def test_the_new_version_beside_a_lab_follows_the_solution_without_piling_up(course):
    lab = course / "labs" / FIRST.name
    answer(lab)
    generate(course)
    solution = course / "solutions" / FIRST.name
    notebook = read(solution)
    notebook.cells[0].source += "\n\nA fix from the instructor."
    nbformat.write(notebook, solution)
    generate(course)
    assert sorted(p.name for p in (course / "labs").iterdir()) == [FIRST.name, lab.stem + ".new.ipynb"]
    assert "A fix from the instructor." in lab.with_name(lab.stem + ".new.ipynb").read_text()
    assert "# my answer" in lab.read_text()


def test_an_untouched_lab_follows_its_solution_and_twice_changes_nothing(course, capsys):
    solution, lab = course / "solutions" / FIRST.name, course / "labs" / FIRST.name
    notebook = read(solution)
    notebook.cells[0].source += "\n\nA fix from the instructor."
    nbformat.write(notebook, solution)
    capsys.readouterr()
    generate(course)
    assert capsys.readouterr().out == f"updated {lab}\n"
    assert lab.read_text() == nbformat.writes(make_lab(read(solution), FIRST.name)) + "\n"
    before = snapshot(course / "labs")
    generate(course)
    assert snapshot(course / "labs") == before and capsys.readouterr().out == ""


def test_a_lab_written_before_the_record_existed_is_replaced(course):
    lab = course / "labs" / FIRST.name
    legacy = read(lab)
    del legacy.metadata["mllib"]
    nbformat.write(legacy, lab)
    generate(course)
    assert record(read(lab))["solution"] == FIRST.name
    assert not lab.with_name(lab.stem + ".new.ipynb").exists()


def test_make_labs_deletes_only_the_labs_it_generated(course, capsys):
    labs = course / "labs"
    for name in ("gone.ipynb", "gone_but_answered.ipynb"):
        shutil.copy(FIRST, course / "solutions" / name)
    generate(course)
    answer(labs / "gone_but_answered.ipynb")
    nbformat.write(nbformat.v4.new_notebook(), labs / "my_notes.ipynb")  # the student's own notebook
    for name in ("gone.ipynb", "gone_but_answered.ipynb"):
        (course / "solutions" / name).unlink()
    capsys.readouterr()
    generate(course)
    assert sorted(p.name for p in labs.iterdir()) == [FIRST.name, "gone_but_answered.ipynb", "my_notes.ipynb"]
    out = capsys.readouterr().out
    assert f"removed {labs / 'gone.ipynb'}" in out
    assert f"kept {labs / 'gone_but_answered.ipynb'}: {course / 'solutions' / 'gone_but_answered.ipynb'} is gone" in out
    assert f"kept {labs / 'my_notes.ipynb'}: not generated by `make labs`" in out


# ---- what a lab asks of a student (issue #22): a build exercise, an experiment, a written question

EXERCISE_ROW = re.compile(r"^\|\s*(?:\d+|Q\d+)\s*\|(.*)\|\s*(★{1,3})\s*\|\s*(\d+) min\s*\|$", re.M)
ABOUT = re.compile(r"About \*{0,2}(\d+) minutes")


def logic_lines(source: str) -> int:
    """Lines of an answer's logic: its solution region without comments, asserts and prints."""
    lines = source.splitlines()
    return sum(1 for n in solution_lines(source) if lines[n - 1].strip()
               and not lines[n - 1].strip().startswith(("#", "assert ", "print(")))  # fmt: skip


@pytest.mark.parametrize("solution", SOLUTIONS[1:], ids=lambda p: p.name)
def test_a_lab_states_its_exercises_difficulty_and_time(solution):
    overview = read(solution).cells[0].source
    rows = EXERCISE_ROW.findall(overview)
    assert len(rows) >= 3, f"{solution.name}: the first cell lists each exercise with ★ to ★★★ and its minutes"
    total = sum(int(minutes) for _, _, minutes in rows)
    assert 60 <= total <= 120 and [int(m) for m in ABOUT.findall(overview)] == [total]
    kinds = [what.strip().split(":")[0] for what, _, _ in rows]
    assert "experiment" in kinds and "written" in kinds


PARAMETER_OF = re.compile(r"^(\w+)\s*=.*#\s*exercise (\d+)\b", re.M | re.I)


def exercise_sections(solution) -> dict[str, str]:
    """The cells of each ``## Exercise N`` section, up to the next ``## `` heading, by N."""
    sections, number = {}, None
    for cell in read(solution).cells:
        if cell.cell_type == "markdown" and cell.source.startswith("## "):
            heading = re.match(r"## Exercise (\d+)", cell.source)
            number = heading and heading.group(1)
        if number:
            sections[number] = sections.get(number, "") + cell.source + "\n"
    return sections


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_a_parameter_names_the_exercise_that_uses_it(solution):
    sections = exercise_sections(solution)
    for cell in code_cells(solution):
        for name, number in PARAMETER_OF.findall(cell.source):
            assert re.search(rf"\b{name}\b", sections.get(number, "")), f"{name} is not used in exercise {number}"


def build_exercise(solution) -> str:
    """The source of a lab's build exercise: its longest answer."""
    return max((cell.source for cell in code_cells(solution)), key=logic_lines)


@pytest.mark.parametrize("solution", SOLUTIONS[1:], ids=lambda p: p.name)
def test_the_longest_exercise_builds_an_algorithm(solution):
    assert logic_lines(build_exercise(solution)) >= 10


@pytest.mark.parametrize("solution", SOLUTIONS[1:], ids=lambda p: p.name)
def test_the_build_exercise_refuses_the_librarys_implementation(solution):
    """Its check forbids the library's functions; tests/test_checks.py shows an answer calling them fail."""
    name = re.search(r"^def (\w+)\(", build_exercise(solution), re.M).group(1)
    checks = [getattr(module, name) for module in check_modules(solution).values() if hasattr(module, name)]
    assert checks and all(check.forbid for check in checks), f"{solution.name}: check.{name} forbids nothing"
