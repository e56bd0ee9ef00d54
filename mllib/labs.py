"""Generate the labs from the solutions: ``python -m mllib.labs solutions labs [NAME ...]``.

With names (``01_federated_learning.ipynb``), only those labs are written.

A solution marks each answer with ``### BEGIN SOLUTION`` / ``### END SOLUTION`` lines (the
nbgrader convention). In the lab, each region becomes ``# YOUR CODE HERE`` and
``raise NotImplementedError`` at the region's indentation, and every output is cleared.

A lab is a student's copy, so generating never destroys one. Each lab records what was
generated: ``metadata.mllib.lab`` holds the solution's file name and the SHA-256 of the
generated notebook (without that record). A lab that still matches its record, or that
already equals the new lab, is replaced; one that differs (a student edited or ran it) is
kept, and the new version is written beside it (``01_federated_learning.new.ipynb``) with a
line on stdout. A lab whose solution is gone is deleted only if it is exactly as generated.
"""
import copy
import hashlib
import pathlib
import sys
from collections.abc import Callable

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
RECORD = ("mllib", "lab")  # metadata.mllib.lab = {"solution": name, "sha256": digest}


class MarkerError(ValueError):
    """Nested, unmatched or unclosed solution markers."""


def strip_solutions(source: str, where: str = "cell") -> str:
    """Replace every solution region of ``source`` by the stub.

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
            out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError"]
        elif marker == END:
            if indent is None:
                raise MarkerError(f"{where}, line {number}: {END} without {BEGIN}")
            indent = None
        elif indent is None:
            out.append(line)
    if indent is not None:
        raise MarkerError(f"{where}: {BEGIN} is never closed")
    return "\n".join(out)


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
    """The lab notebook of a solution notebook: regions stubbed, outputs cleared, record added."""
    lab = nbformat.from_dict(copy.deepcopy(solution))
    for index, cell in enumerate(lab.cells):
        if cell.cell_type != "code":
            continue
        cell.source = strip_solutions(cell.source, f"{name}, cell {index}")
        cell.outputs = []
        cell.execution_count = None
        cell.metadata.pop("execution", None)
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
