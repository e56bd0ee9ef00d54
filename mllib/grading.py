"""Release the labs and grade a class's submissions with nbgrader, offline.

``python -m mllib.grading release OUT [LAB ...]`` writes the student version of each lab with
nbgrader's ``generate_assignment``; ``python -m mllib.grading grade SUBMISSIONS OUT`` grades a
folder of submitted notebooks, one subfolder per student as an LMS export gives them, and
writes ``OUT/grades.csv`` and ``OUT/feedback/<student folder>/<lab>.html``.

One source of truth, the solutions: ``mllib.labs`` derives nbgrader's cell metadata from their
markers and self-check calls, so a released notebook is the lab in ``labs/`` up to nbgrader's
checksums. Nothing is set up by hand: each command builds an nbgrader course (source folder,
gradebook) in a temporary folder and deletes it afterwards; no exchange folder is used.

Grading runs each submission in its own process under a time limit, and nbgrader runs the
notebook in a kernel of this environment: student code runs unsandboxed, with the grader's
rights. nbgrader restores every check cell a student edited or deleted (locked cells and their
checksums). Where a check accepts ``seed=``, it also runs on hidden cases from a seed drawn at
grading time (printed; ``--seed`` repeats a run). A check that passes but writes to stderr (a
warning, a progress bar) keeps its points: its stderr is moved to stdout before scoring, where
nbgrader would give it 0.

Needs the instructor extra (``pip install -e .[instructor]``: nbgrader, Python >= 3.11).
"""
import argparse
import ast
import contextlib
import csv
import importlib
import logging
import os
import pathlib
import secrets
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import nbformat
import psutil

from . import labs

try:
    import nbgrader
    from nbgrader.api import Gradebook
    from nbgrader.converters import Autograde, GenerateAssignment, GenerateFeedback
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import Execute, NbGraderPreprocessor
    from traitlets.config import Config
except ModuleNotFoundError as missing:  # students' environments do not have it
    raise ModuleNotFoundError(
        f"mllib.grading needs nbgrader ({missing}): pip install -e '.[instructor]' (Python >= 3.11)"
    ) from missing

SOLUTIONS = pathlib.Path(__file__).resolve().parents[1] / "solutions"
TEMPLATES = pathlib.Path(__file__).with_name("grading_templates")  # the offline feedback page
HIDDEN = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")  # nbgrader's markers
TIMEOUT = 600  # seconds per submitted notebook


def course_config(root: pathlib.Path, timeout: int = TIMEOUT) -> Config:
    """nbgrader's configuration for a course in ``root``: the course's stubs, restored and
    re-added checks, stderr that does not cost points, offline feedback pages."""
    config = Config()
    config.CourseDirectory.root = str(root)
    config.ClearSolutions.code_stub = {"python": "\n".join(labs.CODE_STUB)}
    config.ClearSolutions.text_stub = "\n".join(labs.TEXT_STUB)
    config.OverwriteCells.add_missing_cells = True  # a deleted check comes back, and fails
    config.Execute.timeout = timeout
    steps = list(Autograde.class_traits()["autograde_preprocessors"].default())
    steps.insert(steps.index(Execute) + 1, StderrToStdout)
    config.Autograde.autograde_preprocessors = steps
    config.HTMLExporter.template_name = "offline_feedback"
    config.HTMLExporter.template_file = "summary.html.j2"
    formgrader = pathlib.Path(nbgrader.__file__).parent / "server_extensions" / "formgrader" / "templates"
    config.HTMLExporter.extra_template_basedirs = [str(TEMPLATES), str(formgrader)]
    return config


class StderrToStdout(NbGraderPreprocessor):
    """Move a check cell's stderr (warnings, progress bars) to stdout: nbgrader gives 0
    points to a check cell with any stderr, even one that passed."""

    def preprocess_cell(self, cell, resources, index):
        if is_check(cell):
            for output in cell.outputs:
                if output.output_type == "stream" and output.name == "stderr":
                    output.name = "stdout"
        return cell, resources


@contextlib.contextmanager
def nbgrader_environment():
    """nbgrader runs ``alembic`` from PATH when it creates a gradebook: this environment's
    bin folder goes first. Its log goes to stderr at level WARNING."""
    logging.basicConfig(level=logging.WARNING, format="nbgrader: %(message)s")
    old = os.environ["PATH"]
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + old
    try:
        yield
    finally:
        os.environ["PATH"] = old


# ---- the course: source notebooks and their gradebook ------------------------------------


def lab_names(solutions: pathlib.Path = SOLUTIONS) -> list[str]:
    return sorted(p.stem for p in solutions.glob("*.ipynb"))


def is_check(cell: nbformat.NotebookNode) -> bool:
    """A self-check cell (nbgrader: a code cell that is graded and holds no answer)."""
    meta = cell.metadata.get("nbgrader", {})
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


def source_notebook(name: str, hidden_seed: int | None = None,
                    solutions: pathlib.Path = SOLUTIONS) -> nbformat.NotebookNode:  # fmt: skip
    """nbgrader's source version of lab ``name`` (a stem): the solution with nbgrader's
    metadata and the lab's record; with ``hidden_seed``, each check that accepts ``seed=``
    also runs, hidden from students, on the cases of that seed."""
    file = f"{name}.ipynb"
    solution = nbformat.read(solutions / file, as_version=4)
    source = labs.grading_source(solution, file)
    source.metadata[labs.RECORD[0]] = labs.make_lab(solution, file).metadata[labs.RECORD[0]]
    if hidden_seed is not None:
        modules = check_modules(source)
        for cell in filter(is_check, source.cells):
            hidden = hidden_calls(cell.source, modules, hidden_seed)
            if hidden:
                cell.source = "\n".join([cell.source, HIDDEN[0], *hidden, HIDDEN[1]])
    return source


def check_modules(notebook: nbformat.NotebookNode) -> dict[str, object]:
    """The ``mllib.checks`` modules a notebook imports, by alias: ``{"check": module}``."""
    return {alias: importlib.import_module(module) for alias, module in labs.check_imports(notebook).items()}


def takes_seed(check) -> bool:
    """Whether a check draws its cases from a seed: those ``mllib.checks.self_check`` builds (their
    signature hides behind the decorators; ``make_cases`` marks them)."""
    return callable(getattr(check, "make_cases", None))


def hidden_calls(source: str, modules: dict[str, object], seed: int) -> list[str]:
    """Each top-level check call of a cell again with ``seed=seed``, for checks that take a seed."""
    calls = []
    for statement in ast.parse(source).body:
        call = statement.value if isinstance(statement, ast.Expr) else None
        function = getattr(call, "func", None)
        if not (isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name)):
            continue
        check = getattr(modules.get(function.value.id), function.attr, None)
        if takes_seed(check):
            call.keywords = [k for k in call.keywords if k.arg != "seed"] + [ast.keyword("seed", ast.Constant(seed))]
            calls.append(ast.unparse(call))
    return calls


def generate(root: pathlib.Path, names: list[str], hidden_seed: int | None = None, timeout: int = TIMEOUT,
             solutions: pathlib.Path = SOLUTIONS) -> None:  # fmt: skip
    """Write the source notebooks into a course folder and run ``generate_assignment`` on each."""
    config = course_config(root, timeout)
    for name in names:
        folder = root / "source" / name
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(source_notebook(name, hidden_seed, solutions), folder / f"{name}.ipynb")
        course = CourseDirectory(config=config, assignment_id=name)
        GenerateAssignment(coursedir=course, config=config, force=True).start()


def release(out: pathlib.Path, names: list[str] | None = None,
            solutions: pathlib.Path = SOLUTIONS) -> list[pathlib.Path]:  # fmt: skip
    """Write the student version of each lab to ``out/<lab>.ipynb`` (all labs by default)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with nbgrader_environment(), tempfile.TemporaryDirectory(prefix="mllib-release-") as temp:
        root = pathlib.Path(temp)
        for name in names or lab_names(solutions):
            generate(root, [name], solutions=solutions)
            written.append(out / f"{name}.ipynb")
            shutil.copyfile(root / "release" / name / f"{name}.ipynb", written[-1])
    return written


# ---- submissions ---------------------------------------------------------------------------


def which_lab(path: pathlib.Path, names: list[str]) -> str | None:
    """The lab a submitted notebook answers: its record (``make labs`` and ``make release``
    write it), else the longest lab name within its file name (LMSs rename files)."""
    with contextlib.suppress(Exception):  # not a notebook: try the file name
        solution = labs.record(nbformat.read(path, as_version=4)).get("solution", "")
        if solution.removesuffix(".ipynb") in names:
            return solution.removesuffix(".ipynb")
    inside = [name for name in names if name in path.name]
    return max(inside, key=len) if inside else None


def find_submissions(folder: pathlib.Path, names: list[str]) -> dict[str, dict[str, pathlib.Path]]:
    """``{student folder: {lab: notebook}}`` for each subfolder of ``folder``. A lab submitted
    twice by one student counts in its last modified version."""
    found = {}
    for student in sorted(p for p in folder.iterdir() if p.is_dir()):
        notebooks = sorted(
            (p for p in student.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts),
            key=lambda p: p.stat().st_mtime,
        )
        found[student.name] = {lab: p for p in notebooks if (lab := which_lab(p, names))}
        for path in notebooks:
            if which_lab(path, names) is None:
                print(f"skipped {path}: not one of the labs", file=sys.stderr)
    for path in sorted(folder.glob("*.ipynb")):
        print(f"skipped {path}: not in a student's folder", file=sys.stderr)
    return found


# ---- grading ---------------------------------------------------------------------------------


@dataclass
class Result:
    """One student's grade on one lab."""

    student: str
    lab: str
    score: float = 0.0
    max_score: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)  # check -> what it said
    by_hand: list[str] = field(default_factory=list)  # written answers' grade_ids
    status: str = "graded"
    feedback: pathlib.Path | None = None  # nbgrader's page, in the temporary course


def autograde_one(root: pathlib.Path, student: str, lab: str, timeout: int) -> None:
    """Autograde one submitted notebook and write its feedback page (in a process of its own)."""
    config = course_config(root, timeout)
    course = CourseDirectory(config=config, assignment_id=lab, student_id=student)
    with nbgrader_environment():
        Autograde(coursedir=course, config=config, force=True).start()
        GenerateFeedback(coursedir=course, config=config, force=True).start()


def run_with_limit(command: list[str], timeout: int) -> str | None:
    """Run ``command``; None if it succeeded, else why not. At the time limit the command and
    every process it started (the notebook's kernel) are killed."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(psutil.Process(process.pid))
        process.communicate()
        return f"stopped after the time limit of {timeout} s"
    if process.returncode:
        return "could not be graded: " + (output.strip().splitlines() or ["no output"])[-1]
    return None


def kill_tree(root: psutil.Process) -> None:
    """Kill ``root`` and every process it started. Each is stopped first, until a pass finds
    none running: a process killed while it forks would leave its new child running."""
    stopped: dict[int, psutil.Process] = {}
    while running := [p for p in [root, *root.children(recursive=True)] if p.pid not in stopped]:
        for process in running:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.suspend()
            stopped[process.pid] = process
    for process in stopped.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def scores(root: pathlib.Path, student: str, lab: str) -> tuple[float, float, list[str]]:
    """Points so far, maximum (written answers included, as on nbgrader's feedback page) and the
    written answers to grade by hand, from the gradebook. nbgrader gives an unanswered written
    answer 0 points: it is not listed."""
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        grades = gradebook.find_submission_notebook(lab, lab, student).grades
        by_hand = [g.name for g in grades if g.needs_manual_grade]
        return sum(g.auto_score or 0 for g in grades), sum(g.max_score for g in grades), by_hand


def known_cells_only(notebook: nbformat.NotebookNode, source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The submission without nbgrader's metadata on cells the source does not have (a lab of
    an earlier version): nbgrader 0.9.6 fails on them; their checks are re-added instead."""
    known = {c.metadata["nbgrader"]["grade_id"] for c in source.cells if "nbgrader" in c.metadata}
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") not in known:
            cell.metadata.pop("nbgrader", None)
    return notebook


def failures(notebook: nbformat.NotebookNode) -> dict[str, str]:
    """What each failed check said (``check-<name>`` grade cells with an error output)."""
    failed = {}
    for cell in filter(is_check, notebook.cells):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if errors:
            failed[cell.metadata.nbgrader.grade_id.removeprefix("check-")] = f"{errors[0].ename}: {errors[0].evalue}"
    return failed


def grade_submission(course: pathlib.Path, work: pathlib.Path, number: int, student: str, lab: str,
                     notebook: pathlib.Path | None, timeout: int) -> Result:  # fmt: skip
    """Grade one student's notebook in a course folder of its own (a copy of the gradebook)."""
    result = Result(student, lab)
    if notebook is None:
        result.status = "no submission"
        return result
    root, sid = work / f"{number:04d}-{lab}", f"s{number:04d}"  # LMS folder names may hold spaces
    (root / "submitted" / sid / lab).mkdir(parents=True)
    shutil.copytree(course / "source", root / "source")
    shutil.copyfile(course / "gradebook.db", root / "gradebook.db")
    try:
        submitted = nbformat.read(notebook, as_version=4)
    except Exception as error:  # noqa: BLE001 - whatever the file is, the student gets told
        result.status = f"not a notebook: {error}"
        return result
    source = nbformat.read(course / "source" / lab / f"{lab}.ipynb", as_version=4)
    nbformat.write(known_cells_only(submitted, source), root / "submitted" / sid / lab / f"{lab}.ipynb")
    command = [sys.executable, "-m", "mllib.grading", "autograde-one", str(root), sid, lab, str(timeout)]
    problem = run_with_limit(command, timeout)
    graded = root / "autograded" / sid / lab / f"{lab}.ipynb"
    if problem is None and graded.exists():
        result.score, result.max_score, result.by_hand = scores(root, sid, lab)
        result.failed = failures(nbformat.read(graded, as_version=4))
        result.feedback = root / "feedback" / sid / lab / f"{lab}.html"
    else:
        result.status = problem or "could not be graded"
    return result


def grade(submissions: pathlib.Path, out: pathlib.Path, *, seed: int | None = None, timeout: int = TIMEOUT,
          jobs: int = 1, solutions: pathlib.Path = SOLUTIONS) -> list[Result]:  # fmt: skip
    """Grade every student's submitted labs; write ``out/grades.csv`` and ``out/feedback/``."""
    names = lab_names(solutions)
    found = find_submissions(submissions, names)
    submitted = sorted({lab for labs_of in found.values() for lab in labs_of})
    seed = secrets.randbelow(2**31) if seed is None else seed
    print(f"hidden cases from seed {seed} (repeat with --seed {seed})")
    with nbgrader_environment(), tempfile.TemporaryDirectory(prefix="mllib-grade-") as temp:
        course, work = pathlib.Path(temp) / "course", pathlib.Path(temp) / "work"
        generate(course, submitted, hidden_seed=seed, timeout=timeout, solutions=solutions)
        tasks = [(number, student, lab, labs_of.get(lab))
                 for number, (student, labs_of) in enumerate(found.items(), 1) for lab in submitted]  # fmt: skip
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            results = list(pool.map(lambda t: grade_submission(course, work, *t, timeout), tasks))
        write_grades(results, out)
    return results


def write_grades(results: list[Result], out: pathlib.Path) -> None:
    """``out/grades.csv`` (one row per student and lab) and the feedback pages."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["student", "lab", "score", "max_score", "failed_checks", "to_grade_by_hand", "status"])
        for r in results:
            writer.writerow([r.student, r.lab, f"{r.score:g}", f"{r.max_score:g}", " ".join(r.failed),
                             " ".join(r.by_hand), r.status])  # fmt: skip
    for r in results:
        page = out / "feedback" / r.student / f"{r.lab}.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        if r.feedback:
            shutil.copyfile(r.feedback, page)
        elif r.status != "no submission":
            page.write_text(f"<!DOCTYPE html><html><body><h4>{r.lab}</h4><p>{r.status}</p></body></html>\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mllib.grading", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rel = commands.add_parser("release", help="write the student version of each lab")
    rel.add_argument("out", type=pathlib.Path)
    rel.add_argument("labs", nargs="*", help="lab names (01_federated_learning); all by default")
    gra = commands.add_parser("grade", help="grade a folder of submissions (one subfolder per student)")
    gra.add_argument("submissions", type=pathlib.Path)
    gra.add_argument("out", type=pathlib.Path)
    gra.add_argument("--seed", type=int, help="seed of the hidden cases (default: drawn, and printed)")
    gra.add_argument("--timeout", type=int, default=TIMEOUT, help="seconds per submitted notebook")
    gra.add_argument("--jobs", type=int, default=1, help="submissions graded at once")
    one = commands.add_parser("autograde-one")  # internal: one submission, in its own process
    one.add_argument("root", type=pathlib.Path)
    one.add_argument("student")
    one.add_argument("lab")
    one.add_argument("timeout", type=int)
    for command in (rel, gra):
        command.add_argument("--solutions", type=pathlib.Path, default=SOLUTIONS, help="the solutions' folder")
    args = parser.parse_args(argv)
    if args.command == "release":
        for path in release(args.out, args.labs, args.solutions):
            print(f"wrote {path}")
    elif args.command == "grade":
        results = grade(args.submissions, args.out, seed=args.seed, timeout=args.timeout, jobs=args.jobs,
                        solutions=args.solutions)  # fmt: skip
        graded = sum(r.status == "graded" for r in results)
        print(f"graded {graded} of {len(results)} (student, lab) pairs: {args.out / 'grades.csv'}, "
              f"feedback in {args.out / 'feedback'}")  # fmt: skip
    else:
        autograde_one(args.root, args.student, args.lab, args.timeout)


if __name__ == "__main__":
    main()
