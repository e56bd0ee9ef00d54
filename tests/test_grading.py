"""Releasing and grading with nbgrader (mllib.grading), end to end on lab 01, offline.

The submissions are made from the lab and its solution as they are, so the test follows the
lab's exercises: every answer right, one function that forgets its ``return``, checks edited
or deleted."""
import csv
import os
import re
import shutil
import subprocess
import sys
import types

import nbformat
import psutil
import pytest

from notebooks import ROOT, read
from timeouts import time_limit

if sys.version_info < (3, 11):
    pytest.skip("nbgrader 0.9.6 (the instructor extra) needs Python >= 3.11", allow_module_level=True)
pytest.importorskip("nbgrader", reason="the instructor extra is not installed: pip install -e '.[instructor]'")

from mllib import grading, labs  # noqa: E402 - after the skips

LAB = "01_federated_learning"

# Loaded first by every Python process of the grading run, kernels included (PYTHONPATH): a
# connection to anything but this machine is written down, then refused.
GUARD = """
import os, socket
def _guard(connect):
    def guarded(self, address, *args):
        host = str(address[0]) if isinstance(address, tuple) else ""
        if self.family in (socket.AF_INET, socket.AF_INET6) and not host.startswith(("127.", "::1", "localhost")):
            with open(os.environ["NETWORK_LOG"], "a") as log:
                log.write(f"{os.getpid()} {address}\\n")
            raise OSError("the grading test blocks the network")
        return connect(self, address, *args)
    return guarded
socket.socket.connect = _guard(socket.socket.connect)
socket.socket.connect_ex = _guard(socket.socket.connect_ex)
"""


@pytest.fixture(scope="module")
def solution(tmp_path_factory):
    """A copy of the lab's solution, taken once: the test grades against it, whatever happens
    to solutions/ meanwhile."""
    folder = tmp_path_factory.mktemp("solutions")
    shutil.copy(ROOT / "solutions" / f"{LAB}.ipynb", folder)
    return folder / f"{LAB}.ipynb"


def grade_ids(solution, prefix: str) -> list[str]:
    """The lab's answers (``answer-``) or checks (``check-``), by name, in order."""
    cells = labs.grading_source(read(solution), solution.name).cells
    found = [c.metadata.get("nbgrader", {}).get("grade_id", "") for c in cells]
    return [g.removeprefix(prefix) for g in found if g.startswith(prefix)]


def functions(solution) -> list[str]:
    """The exercises that are a function with a check of the same name."""
    return [name for name in grade_ids(solution, "answer-") if name in grade_ids(solution, "check-")]


def submission(solution, wrong=(), edit_check=None, delete_check=None, answered=True) -> nbformat.NotebookNode:
    """The lab as a student hands it in: every answer from the solution (or none), the
    functions in ``wrong`` without their return value, the check of ``edit_check`` replaced
    by ``pass``, the one of ``delete_check`` deleted."""
    lab = labs.make_lab(read(solution), solution.name)
    answers = {c.id: "\n".join(line for line in c.source.splitlines() if line.strip() not in (labs.BEGIN, labs.END))
               for c in read(solution).cells}  # fmt: skip
    kept = []
    for cell in lab.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        name = grade_id.split("-", 1)[-1]
        if answered and grade_id.startswith(("answer-", "written-")):
            cell.source = answers[cell.id]
            if name in wrong:  # the classic slip: computes the answer, forgets to return it
                cell.source += f"\n\n\n_{name} = {name}\n\n\ndef {name}(*args, **kwargs):\n    _{name}(*args, **kwargs)"
        if grade_id == f"check-{edit_check}":
            cell.source = "pass"
        if grade_id != f"check-{delete_check}":
            kept.append(cell)
    lab.cells = kept
    return lab


def hand_in(submissions, student, notebook, name=f"{LAB}.ipynb"):
    (submissions / student).mkdir(parents=True)
    nbformat.write(notebook, submissions / student / name)


@pytest.fixture(scope="module")
def guarded_env(tmp_path_factory):
    """The environment of a process whose network connections fail and are logged."""
    folder = tmp_path_factory.mktemp("guard")
    (folder / "sitecustomize.py").write_text(GUARD)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)]),
            "NETWORK_LOG": str(folder / "network.log"), "MLLIB_DEVICE": "cpu"}  # fmt: skip


@pytest.fixture(scope="module")
def graded(tmp_path_factory, guarded_env, solution):
    """Four students, LMS-style folders, graded by one run of the grading command."""
    first, last = functions(solution)[0], functions(solution)[-1]
    assert first != last, f"{LAB} needs two function exercises for this test"
    root = tmp_path_factory.mktemp("grading")
    submissions, out = root / "submissions", root / "grades"
    hand_in(submissions, "Blank Student_1001_assignsubmission_file_", submission(solution, answered=False))
    hand_in(submissions, "Right Student_1002_assignsubmission_file_", submission(solution), "lab 01 (2).ipynb")
    hand_in(submissions, "Wrong Student_1003_assignsubmission_file_", submission(solution, wrong=[first]))
    hand_in(submissions, "Cheating Student_1004_assignsubmission_file_",
            submission(solution, wrong=[first, last], edit_check=first, delete_check=last))  # fmt: skip
    command = [sys.executable, "-m", "mllib.grading", "grade", str(submissions), str(out), "--seed", "7", "--jobs", "2",
               "--solutions", str(solution.parent)]  # fmt: skip
    done = subprocess.run(command, cwd=root, env=guarded_env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(out / "grades.csv", encoding="utf-8") as file:
        rows = {row["student"].split()[0]: row for row in csv.DictReader(file)}
    pages = {folder.split()[0]: (out / "feedback" / folder / f"{LAB}.html").read_text() for folder in os.listdir(out / "feedback")}
    return rows, pages


def score(row) -> tuple[float, float, list[str]]:
    return float(row["score"]), float(row["max_score"]), row["failed_checks"].split()


def points(solution) -> int:
    """The lab's points: one per check, one per written answer (graded by hand)."""
    return len(grade_ids(solution, "check-")) + len(grade_ids(solution, "written-"))


def summary(page: str) -> str:
    return page.split('id="summary"')[1].split("</div>")[0]


def test_a_blank_lab_scores_zero(graded, solution):
    rows, pages = graded
    assert score(rows["Blank"]) == (0, points(solution), grade_ids(solution, "check-"))
    assert "not implemented yet" in summary(pages["Blank"])


def test_the_solution_gets_full_marks(graded, solution):
    rows, pages = graded
    assert score(rows["Right"]) == (len(grade_ids(solution, "check-")), points(solution), [])
    assert "Every check passed." in summary(pages["Right"])


def test_one_wrong_function_gets_partial_marks_and_feedback_naming_its_check(graded, solution):
    rows, pages = graded
    points, most, failed = score(rows["Wrong"])
    assert 0 < points < most and functions(solution)[0] in failed
    assert f"<code>{functions(solution)[0]}</code>" in summary(pages["Wrong"]) and "CheckFailed" in summary(pages["Wrong"])


def test_an_edited_or_deleted_check_is_restored_and_still_fails(graded, solution):
    rows, _ = graded
    points, most, failed = score(rows["Cheating"])
    assert {functions(solution)[0], functions(solution)[-1]} <= set(failed) and points < most


def test_written_answers_are_left_to_grade_by_hand(graded, solution):
    rows, _ = graded
    assert rows["Right"]["to_grade_by_hand"].split() == [f"written-{n}" for n in grade_ids(solution, "written-")]
    assert rows["Blank"]["to_grade_by_hand"] == ""  # unanswered: nbgrader gives it 0


def test_grading_stays_offline(graded, guarded_env):
    _, pages = graded
    log = guarded_env["NETWORK_LOG"]
    assert not os.path.exists(log), open(log).read()
    for page in pages.values():  # the pages load nothing: no CDN MathJax, no remote script or style
        assert not re.findall(r"""(?:src|href)=["']?(?:https?:)?//""", page)


def test_the_network_guard_works(guarded_env, tmp_path):
    env = {**guarded_env, "NETWORK_LOG": str(tmp_path / "log")}
    code = "import socket\ntry:\n    socket.create_connection(('192.0.2.1', 80), timeout=1)\nexcept OSError as e:\n    print(e)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert "blocks the network" in done.stdout and (tmp_path / "log").exists()


def test_the_release_is_the_lab_up_to_nbgraders_checksums(tmp_path, solution):
    (released,) = grading.release(tmp_path, [LAB], solution.parent)
    student = read(released)
    for cell in student.cells:
        cell.metadata.get("nbgrader", {}).pop("checksum", None)
    assert student == labs.make_lab(read(solution), solution.name)


# ---- the parts, fast -------------------------------------------------------------------------


def test_hidden_cases_rerun_each_check_that_takes_a_seed():
    seeded = types.SimpleNamespace(make_cases=lambda gen: [])  # as mllib.checks.self_check builds them
    modules = {"check": types.SimpleNamespace(seeded=seeded, fixed=lambda answer: None)}
    source = "check.seeded(f)\ncheck.fixed(g)\nprint(check)"
    assert grading.hidden_calls(source, modules, 7) == ["check.seeded(f, seed=7)"]


def test_the_grading_source_hides_a_seeded_rerun_in_each_check_cell(solution):
    source = grading.source_notebook(LAB, hidden_seed=7, solutions=solution.parent)
    modules = grading.check_modules(source)
    for cell in source.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution"):
            seeded = hasattr(getattr(modules["check"], meta["grade_id"].removeprefix("check-"), None), "make_cases")
            assert (grading.HIDDEN[0] in cell.source and "seed=7" in cell.source) == seeded


def test_submissions_are_found_by_their_record_else_their_file_name(tmp_path, capsys, solution):
    lab = labs.make_lab(read(solution), solution.name)
    hand_in(tmp_path, "Ada", lab, "renamed by the LMS.ipynb")  # found by its record
    hand_in(tmp_path, "Grace", nbformat.v4.new_notebook(), f"grace_{LAB} (1).ipynb")  # by its name
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "Grace" / "scratch.ipynb")
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "loose.ipynb")
    found = grading.find_submissions(tmp_path, grading.lab_names())
    assert found == {"Ada": {LAB: tmp_path / "Ada" / "renamed by the LMS.ipynb"},
                     "Grace": {LAB: tmp_path / "Grace" / f"grace_{LAB} (1).ipynb"}}  # fmt: skip
    err = capsys.readouterr().err
    assert "scratch.ipynb: not one of the labs" in err and "loose.ipynb: not in a student's folder" in err


def test_cells_of_another_lab_version_lose_their_grading_metadata(solution):
    old = labs.make_lab(read(solution), solution.name)
    old.cells[1].metadata["nbgrader"] = {"grade_id": "check-renamed_since", "grade": True, "solution": False}
    kept = grading.known_cells_only(old, grading.source_notebook(LAB, solutions=solution.parent))
    assert "nbgrader" not in kept.cells[1].metadata
    assert kept.cells[2:] == labs.make_lab(read(solution), solution.name).cells[2:]


def test_the_time_limit_stops_a_submission_and_every_process_it_started(tmp_path):
    """The submission keeps starting processes until it is killed: none may outlive it."""
    pid_file = tmp_path / "children"
    code = ("import subprocess, sys\n"
            f"with open({str(pid_file)!r}, 'a', buffering=1) as pids:\n"
            "    while True:\n"
            "        child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            "        print(child.pid, file=pids)")  # fmt: skip
    try:
        with time_limit(60):  # a child left running keeps the output pipe open: no answer
            assert grading.run_with_limit([sys.executable, "-c", code], timeout=5) == "stopped after the time limit of 5 s"
    finally:
        children = [psutil.Process(int(pid)) for pid in pid_file.read_text().split() if psutil.pid_exists(int(pid))]
        left_running = [child.pid for child in children if child.status() != psutil.STATUS_ZOMBIE]
        for child in children:
            child.kill()
    assert pid_file.read_text() and not left_running
