"""make update: a student takes the course's updates and keeps every answer (nbgitpuller's rules).

Real git repositories in tmp_path: a course, a student's clone of it, a later course commit.
No network: the clone's remote is a local folder.
"""
import os
import subprocess

import nbformat
import pytest

from mllib.labs import make_lab
from mllib.update import UpdateError, main, only_ran, update
from notebooks import ROOT

LAB1, LAB2, LAB3 = (f"labs/{name}.ipynb" for name in ("01_federated_learning", "02_personalized_learning",
                                                          "03_decentralized_learning"))  # fmt: skip


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(autouse=True)
def isolated_git(monkeypatch, tmp_path):
    """Commits by a fixed author, and no user or system git configuration."""
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Instructor")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "instructor@example.org")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def lab(title, *exercises):
    """A lab as `make labs` writes it: a title cell, then one exercise per function name."""
    cells = [nbformat.v4.new_markdown_cell(f"# {title}")]
    for name in exercises:
        cells.append(nbformat.v4.new_code_cell(
            f"def {name}(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION"))  # fmt: skip
        cells.append(nbformat.v4.new_code_cell(f"assert {name}(1) == 1"))
    return nbformat.writes(make_lab(nbformat.v4.new_notebook(cells=cells), title)) + "\n"


def write(repo, path, content):
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(content)


def commit(repo, files, message):
    for path, content in files.items():
        if content is None:
            git(repo, "rm", "--quiet", path)
        else:
            write(repo, path, content)
            git(repo, "add", path)
    git(repo, "commit", "--quiet", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def answer(repo, path):
    """The student fills in the first exercise."""
    notebook = nbformat.read(repo / path, as_version=4)
    cell = next(c for c in notebook.cells if "raise NotImplementedError" in c.source)
    cell.source = cell.source.replace("raise NotImplementedError", "return x  # my answer")
    nbformat.write(notebook, repo / path)


def run(repo, path):
    """The student runs a lab without editing it: outputs, execution counts, kernel metadata."""
    notebook = nbformat.read(repo / path, as_version=4)
    for count, cell in enumerate((c for c in notebook.cells if c.cell_type == "code"), 1):
        cell.execution_count = count
        cell.outputs = [nbformat.v4.new_output("error", ename="NotImplementedError", evalue="", traceback=[])]
    notebook.metadata.language_info = {"name": "python", "version": "3.11.9"}
    nbformat.write(notebook, repo / path)


WEEK1 = {LAB1: lab("Lab 01", "fedavg"), LAB2: lab("Lab 02", "personalize"), "README.md": "# The course\n"}
WEEK5 = {
    LAB1: lab("Lab 01 (a typo fixed)", "fedavg"),
    LAB2: lab("Lab 02", "personalize", "fine_tune"),  # a new exercise
    LAB3: lab("Lab 03", "gossip"),  # a new lab
    "README.md": "# The course\n\nWeek 5: lab 03.\n",
}


@pytest.fixture
def clones(tmp_path):
    """A course with the week-1 labs, and a student's clone of it."""
    course, student = tmp_path / "course", tmp_path / "student"
    course.mkdir()
    git(course, "init", "--quiet", "-b", "main")
    commit(course, WEEK1, "week 1")
    git(tmp_path, "clone", "--quiet", str(course), str(student))
    return course, student


def updated(student):
    return list(update(student))


def test_make_update_keeps_the_answer_brings_the_new_lab_and_the_fixes(clones):
    course, student = clones
    answer(student, LAB1)
    run(student, LAB2)
    mine = (student / LAB1).read_bytes()
    week5 = commit(course, WEEK5, "week 5")

    done = subprocess.run(["make", "--no-print-directory", "update", f"UPDATE_ARGS=--repo {student}"], cwd=ROOT,
                          check=False, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    assert (student / LAB1).read_bytes() == mine  # the answer, byte for byte
    beside = student / "labs/01_federated_learning.new.ipynb"
    assert beside.read_text() == WEEK5[LAB1]
    assert f"kept your {LAB1}; the course's new version is in labs/01_federated_learning.new.ipynb" in done.stdout
    assert (student / LAB2).read_text() == WEEK5[LAB2]  # only run: the course's fix arrives
    assert f"took {LAB2} (you had only run it" in done.stdout
    assert (student / LAB3).read_text() == WEEK5[LAB3] and f"took {LAB3} (new)" in done.stdout
    assert (student / "README.md").read_text() == WEEK5["README.md"]
    assert git(student, "rev-parse", "HEAD").strip() == week5
    status = git(student, "status", "--porcelain").splitlines()
    assert sorted(status) == [f" M {LAB1}", "?? labs/01_federated_learning.new.ipynb"]


def test_a_second_update_changes_nothing(clones):
    course, student = clones
    answer(student, LAB1)
    commit(course, WEEK5, "week 5")
    updated(student)
    files = {p: p.read_bytes() for p in student.rglob("*") if p.is_file() and ".git" not in p.parts}
    assert updated(student)[1:] == [f"up to date with origin main ({git(course, 'rev-parse', 'HEAD')[:7]})"]
    assert files == {p: p.read_bytes() for p in student.rglob("*") if p.is_file() and ".git" not in p.parts}


def test_the_next_course_fix_replaces_the_untouched_copy_beside_the_answer(clones):
    course, student = clones
    answer(student, LAB1)
    commit(course, WEEK5, "week 5")
    updated(student)
    week6 = lab("Lab 01 (another fix)", "fedavg")
    commit(course, {LAB1: week6}, "week 6")
    updated(student)
    assert (student / "labs/01_federated_learning.new.ipynb").read_text() == week6
    assert not (student / "labs/01_federated_learning.new2.ipynb").exists()
    assert "# my answer" in (student / LAB1).read_text()


def test_an_edited_copy_beside_the_answer_is_kept_too(clones):
    course, student = clones
    answer(student, LAB1)
    commit(course, WEEK5, "week 5")
    updated(student)
    answer(student, "labs/01_federated_learning.new.ipynb")
    commit(course, {LAB1: lab("Lab 01 (another fix)", "fedavg")}, "week 6")
    updated(student)
    assert "# my answer" in (student / "labs/01_federated_learning.new.ipynb").read_text()
    assert "another fix" in (student / "labs/01_federated_learning.new2.ipynb").read_text()


def test_a_deleted_lab_comes_back_to_start_over(clones):
    course, student = clones
    answer(student, LAB1)
    (student / LAB1).unlink()
    commit(course, {"README.md": "# The course, fixed\n"}, "a fix elsewhere")
    assert f"took {LAB1} (restored)" in updated(student)
    assert (student / LAB1).read_text() == WEEK1[LAB1]


def test_a_students_file_under_a_name_the_course_adds_stays(clones):
    course, student = clones
    write(student, LAB3, "my own notes\n")
    commit(course, {LAB3: WEEK5[LAB3]}, "lab 03")
    updated(student)
    assert (student / LAB3).read_text() == "my own notes\n"
    assert (student / "labs/03_decentralized_learning.new.ipynb").read_text() == WEEK5[LAB3]


def test_the_course_deletes_only_what_the_student_did_not_change(clones):
    course, student = clones
    answer(student, LAB1)
    commit(course, {LAB1: None, LAB2: None}, "labs 01 and 02 withdrawn")
    lines = updated(student)
    assert not (student / LAB2).exists() and f"removed {LAB2} (the course deleted it)" in lines
    assert "# my answer" in (student / LAB1).read_text() and f"kept your {LAB1}: the course deleted it" in lines


def test_the_students_own_commits_stay_in_the_history(clones):
    course, student = clones
    answer(student, LAB1)
    git(student, "commit", "--quiet", "-am", "my answer")
    mine = git(student, "rev-parse", "HEAD").strip()
    week5 = commit(course, WEEK5, "week 5")
    updated(student)
    parents = git(student, "rev-parse", "HEAD^1", "HEAD^2").split()
    assert parents == [mine, week5]
    assert "# my answer" in (student / LAB1).read_text()
    assert (student / "labs/01_federated_learning.new.ipynb").read_text() == WEEK5[LAB1]
    assert (student / LAB3).read_text() == WEEK5[LAB3]
    assert git(student, "diff", "--name-only", "HEAD").split() == [LAB1]  # the answer: the only difference


def test_a_failed_fetch_changes_nothing_and_says_why(clones, capsys):
    course, student = clones
    answer(student, LAB1)
    mine = (student / LAB1).read_bytes()
    git(student, "remote", "set-url", "origin", str(course.parent / "nowhere"))
    with pytest.raises(UpdateError, match="git fetch"):
        updated(student)
    assert main(["--repo", str(student)]) == 1
    assert "make update: git fetch" in capsys.readouterr().err
    assert (student / LAB1).read_bytes() == mine


def test_only_ran_compares_cell_sources_only(tmp_path):
    before = WEEK1[LAB1]
    notebook = nbformat.reads(before, as_version=4)
    notebook.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    notebook.cells[1].execution_count = 3
    assert only_ran(before.encode(), nbformat.writes(notebook).encode())
    notebook.cells[1].source += "\n# an edit"
    assert not only_ran(before.encode(), nbformat.writes(notebook).encode())
    assert not only_ran(before.encode(), b"not a notebook")
    assert not only_ran(b"not a notebook", b"not a notebook")

