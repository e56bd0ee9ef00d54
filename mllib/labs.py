"""Generate the labs from the solutions: ``python -m mllib.labs solutions labs [NAME ...]``.

With names (``01_federated_learning.ipynb``), only those labs are written.

A solution marks each answer with ``### BEGIN SOLUTION`` / ``### END SOLUTION`` lines (the
nbgrader convention). In the lab, each region of a code cell becomes ``# YOUR CODE HERE`` and
``raise NotImplementedError`` at the region's indentation, each region of a markdown cell (a
written answer, graded by hand) becomes ``YOUR ANSWER HERE``, and every output is cleared.

The same markers and the self-check calls give nbgrader's cell metadata (``metadata.nbgrader``,
schema 3), so that nbgrader can grade a lab without anyone marking cells by hand: a cell with
a code region is an answer, a cell calling ``check.<exercise>(...)`` (any alias of a
``mllib.checks`` module) a locked test worth one point, a markdown region a written answer
(``mllib.grading`` releases and grades with them). The lab carries the metadata too, so a lab
is what nbgrader's ``generate_assignment`` gives students, up to nbgrader's checksums.

A lab is a student's copy, so generating never destroys one. Each lab records what was
generated: ``metadata.mllib.lab`` holds the solution's file name and the SHA-256 of the
generated notebook (without that record). A lab that still matches its record, or that
already equals the new lab, is replaced; one that differs (a student edited or ran it) is
kept, and the new version is written beside it (``01_federated_learning.new.ipynb``) with a
line on stdout. A lab whose solution is gone is deleted only if it is exactly as generated.
"""
import ast
import copy
import hashlib
import pathlib
import re
import sys
from collections.abc import Callable

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError")
TEXT_STUB = ("YOUR ANSWER HERE",)  # nbgrader's text stub
RECORD = ("mllib", "lab")  # metadata.mllib.lab = {"solution": name, "sha256": digest}
CALL = re.compile(r"^(\w+)\.(\w+)\(", re.M)  # `check.fedavg_round(` at the start of a line
POINTS = {"check": 1, "written": 1}  # per check cell, per written answer


class MarkerError(ValueError):
    """Nested, unmatched or unclosed solution markers."""


def strip_solutions(source: str, where: str = "cell", stub: tuple[str, ...] = CODE_STUB) -> str:
    """Replace every solution region of ``source`` by ``stub`` (lines, at the region's indentation).

    Raises:
        MarkerError: for a nested BEGIN, an END without BEGIN, or a BEGIN never closed.
    """
    out, indent = [], None
    for number, line in enumerate(source.splitlines(), 1):
        marker = line.strip()
        if marker == BEGIN:
            if indent is not None:
                raise MarkerError(f"{where}, line {number}: nested {BEGIN}")
            indent = line[: len(line) - len(line.lstrip())]
            out += [indent + stub_line for stub_line in stub]
        elif marker == END:
            if indent is None:
                raise MarkerError(f"{where}, line {number}: {END} without {BEGIN}")
            indent = None
        elif indent is None:
            out.append(line)
    if indent is not None:
        raise MarkerError(f"{where}: {BEGIN} is never closed")
    return "\n".join(out)


def has_region(source: str) -> bool:
    return any(line.strip() == BEGIN for line in source.splitlines())


def check_imports(notebook: nbformat.NotebookNode) -> dict[str, str]:
    """The self-check modules a notebook imports, by the name it gives them:
    ``from mllib.checks import federated as check`` gives ``{"check": "mllib.checks.federated"}``,
    ``from mllib import checks`` gives ``{"checks": "mllib.checks"}`` (experiment questions)."""
    found = {}
    for cell in notebook.cells:
        try:
            tree = ast.parse(cell.source) if cell.cell_type == "code" else ast.Module(body=[])
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            for alias in getattr(node, "names", []) if isinstance(node, ast.Import | ast.ImportFrom) else []:
                module = alias.name if isinstance(node, ast.Import) else f"{node.module}.{alias.name}"
                if module == "mllib.checks" or module.startswith("mllib.checks."):
                    found[alias.asname or alias.name] = module
    return found


def checks_called(source: str, aliases: set[str]) -> list[str]:
    """Names of the self-checks a cell calls (``check.fedavg_round(...)`` gives fedavg_round)."""
    return [name for alias, name in CALL.findall(source) if alias in aliases]


def first_definition(source: str) -> str | None:
    """The first function or class a cell defines, else the first name it assigns, if any."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    defined = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)]
    assigned = [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
    return next(iter(defined + assigned), None)


def grading_metadata(notebook: nbformat.NotebookNode, name: str = "notebook") -> list[dict | None]:
    """nbgrader's ``metadata.nbgrader`` of each cell of a solution (None: an ordinary cell).

    grade_ids come from names, not positions (``answer-fedavg_round``, ``check-fedavg_round``,
    ``written-1``; a name used twice continues ``-2``), so that a submission made before a
    cell was inserted still grades.

    Raises:
        MarkerError: a cell that both holds an answer and calls a check (the check would be
            the student's to edit).
    """
    aliases = set(check_imports(notebook))
    found, written = [], 0
    for index, cell in enumerate(notebook.cells):
        region = has_region(cell.source)
        checks = checks_called(cell.source, aliases) if cell.cell_type == "code" else []
        if region and checks:
            raise MarkerError(f"{name}, cell {index}: an answer and a check in one cell; give the check its own")
        if cell.cell_type == "markdown" and region:
            written += 1
            meta = dict(grade=True, solution=True, locked=False, points=POINTS["written"], grade_id=f"written-{written}")
        elif cell.cell_type == "code" and region:
            meta = dict(grade=False, solution=True, locked=False,
                        grade_id=f"answer-{first_definition(cell.source) or index}")  # fmt: skip
        elif checks:
            meta = dict(grade=True, solution=False, locked=True, points=POINTS["check"], grade_id=f"check-{checks[0]}")
        else:
            found.append(None)
            continue
        found.append({**meta, "schema_version": 3})
    seen: dict[str, int] = {}
    for meta in filter(None, found):  # the same check twice (two experiment questions): -2, -3, ...
        seen[meta["grade_id"]] = seen.get(meta["grade_id"], 0) + 1
        if seen[meta["grade_id"]] > 1:
            meta["grade_id"] += f"-{seen[meta['grade_id']]}"
    return found


def lock(cell: nbformat.NotebookNode) -> None:
    """Cell flags as nbgrader's ``LockCells`` sets them: answers and checks cannot be deleted,
    checks cannot be edited either."""
    meta = cell.metadata.get("nbgrader")
    if meta and (meta["solution"] or meta["grade"]):
        cell.metadata["deletable"] = False
    if meta and meta["grade"] and not meta["solution"]:
        cell.metadata["editable"] = False


def grading_source(solution: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """nbgrader's source version of a solution: answers kept, outputs cleared, every cell's
    ``metadata.nbgrader`` and locks set. The lab is this with its regions stubbed."""
    source = nbformat.from_dict(copy.deepcopy(solution))
    for cell, meta in zip(source.cells, grading_metadata(source, name), strict=True):
        if meta:
            cell.metadata["nbgrader"] = {**meta, "cell_type": cell.cell_type}
            lock(cell)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
    return source


def record(notebook: nbformat.NotebookNode) -> dict:
    """The generator's record of a lab (``{"solution": ..., "sha256": ...}``), ``{}`` if none."""
    found = notebook.get("metadata", {}).get(RECORD[0], {}).get(RECORD[1], {})
    return found if isinstance(found, dict) else {}


def digest(notebook: nbformat.NotebookNode) -> str:
    """SHA-256 of the notebook as nbformat writes it, without the generator's record."""
    bare = copy.deepcopy(notebook)
    ours = bare.metadata.get(RECORD[0])
    if isinstance(ours, dict):
        ours.pop(RECORD[1], None)
        if not ours:
            del bare.metadata[RECORD[0]]
    return hashlib.sha256(nbformat.writes(bare).encode()).hexdigest()


def make_lab(solution: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The lab notebook of a solution notebook: regions stubbed, outputs cleared, nbgrader's
    metadata and locks set, record added."""
    lab = grading_source(solution, name)
    for index, cell in enumerate(lab.cells):
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source, f"{name}, cell {index}")
        elif has_region(cell.source):
            cell.source = strip_solutions(cell.source, f"{name}, cell {index}", TEXT_STUB)
    stamp = {"solution": name, "sha256": digest(lab)}
    lab.metadata.setdefault(RECORD[0], {})[RECORD[1]] = stamp
    return lab


def is_as_generated(text: str, lab: nbformat.NotebookNode | None = None) -> bool:
    """Whether a lab file's ``text`` is what the generator wrote: it matches its own record,
    or it equals ``lab`` up to the record. Unreadable text is not."""
    try:
        found = nbformat.reads(text, as_version=4)
    except Exception:  # noqa: BLE001 - any unreadable file is someone's, not ours
        return False
    ours = digest(found)
    return ours == record(found).get("sha256") or (lab is not None and ours == digest(lab))


def beside(path: pathlib.Path, fits: Callable[[pathlib.Path], bool]) -> pathlib.Path:
    """Where a new version of ``path`` goes: ``NAME.new.EXT``, else ``NAME.new2.EXT``, ...:
    the first that does not exist yet or that ``fits`` (may be replaced)."""
    for number in range(1, 1000):
        tag = ".new" if number == 1 else f".new{number}"
        candidate = path.with_name(f"{path.stem}{tag}{path.suffix}")
        if not candidate.exists() or fits(candidate):
            return candidate
    raise FileExistsError(f"{path}: no free name for its new version (NAME.new1000 and below exist)")


def write_lab(lab: nbformat.NotebookNode, path: pathlib.Path) -> str | None:
    """Write ``lab`` to ``path`` unless that would lose someone's work; say what happened."""
    text = nbformat.writes(lab) + "\n"
    if not path.exists():
        path.write_text(text, encoding="utf-8")
        return f"wrote {path}"
    old = path.read_text(encoding="utf-8")
    if old == text:
        return None
    if is_as_generated(old, lab):
        path.write_text(text, encoding="utf-8")
        return f"updated {path}"
    solution = record(lab).get("solution")

    def fits(candidate: pathlib.Path) -> bool:  # our own earlier output, untouched since
        other = candidate.read_text(encoding="utf-8")
        return other == text or (
            is_as_generated(other) and record(nbformat.reads(other, as_version=4)).get("solution") == solution
        )

    new = beside(path, fits)
    if not new.exists() or new.read_text(encoding="utf-8") != text:
        new.write_text(text, encoding="utf-8")
    return (
        f"kept {path}: it differs from what `make labs` generated last (edited or run); "
        f"the new version is in {new}"
    )


def main(solutions: str, labs: str, *names: str) -> None:
    source, target = pathlib.Path(solutions), pathlib.Path(labs)
    target.mkdir(exist_ok=True)
    every = sorted(p.name for p in source.glob("*.ipynb"))
    for name in names or every:
        message = write_lab(make_lab(nbformat.read(source / name, as_version=4), name), target / name)
        if message:
            print(message)
    if names:
        return
    for path in sorted(target.glob("*.ipynb")):
        if path.name in every:
            continue
        text = path.read_text(encoding="utf-8")
        try:
            of = record(nbformat.reads(text, as_version=4)).get("solution")
        except Exception:  # noqa: BLE001 - not a notebook we wrote
            of = None
        if of == path.name and is_as_generated(text):
            path.unlink()
            print(f"removed {path}: {source / path.name} is gone")
        elif of == path.name:
            print(f"kept {path}: {source / path.name} is gone, but the lab was edited or run; delete it by hand")
        elif of:
            print(f"kept {path}: a new version of {target / of} waiting to be merged by hand; delete it then")
        else:
            print(f"kept {path}: not generated by `make labs`")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python -m mllib.labs SOLUTIONS_DIR LABS_DIR [NOTEBOOK_NAME ...]")
    main(*sys.argv[1:])
