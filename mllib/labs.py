"""Generate the labs from the solutions: ``python -m mllib.labs solutions labs [NAME ...]``.

With names (``01_federated_learning.ipynb``), only those labs are written.

A solution marks each answer with ``### BEGIN SOLUTION`` / ``### END SOLUTION`` lines (the
nbgrader convention). In the lab, each region becomes ``# YOUR CODE HERE`` and
``raise NotImplementedError`` at the region's indentation, and every output is cleared.
"""
import pathlib
import sys

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


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


def make_lab(solution: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """The lab notebook of a solution notebook: regions stubbed, outputs cleared."""
    lab = nbformat.from_dict(solution)
    for index, cell in enumerate(lab.cells):
        if cell.cell_type != "code":
            continue
        cell.source = strip_solutions(cell.source, f"{name}, cell {index}")
        cell.outputs = []
        cell.execution_count = None
        cell.metadata.pop("execution", None)
    return lab


def main(solutions: str, labs: str, *names: str) -> None:
    source, target = pathlib.Path(solutions), pathlib.Path(labs)
    target.mkdir(exist_ok=True)
    every = sorted(p.name for p in source.glob("*.ipynb"))
    for name in names or every:
        lab = make_lab(nbformat.read(source / name, as_version=4), name)
        nbformat.write(lab, target / name)
    if not names:
        for stale in {p.name for p in target.glob("*.ipynb")} - set(every):
            (target / stale).unlink()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python -m mllib.labs SOLUTIONS_DIR LABS_DIR [NOTEBOOK_NAME ...]")
    main(*sys.argv[1:])
