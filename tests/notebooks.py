"""Reading the course's notebooks: shared by the tests of notebooks, labs and claims."""
import ast
import importlib
import pathlib
import re

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
LECTURES = sorted((ROOT / "lectures").glob("*.ipynb"))
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
LABS = sorted((ROOT / "labs").glob("*.ipynb"))
VALIDATED = LECTURES + SOLUTIONS
IGNORED = {"nbval-ignore-output", "nbval-skip"}


def read(path: pathlib.Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(path: pathlib.Path) -> list:
    return [c for c in read(path).cells if c.cell_type == "code"]


def nbval_tags(cell) -> set[str]:
    """Tags plus nbval's comment markers (``# NBVAL_IGNORE_OUTPUT`` counts as the tag)."""
    tags = set(cell.metadata.get("tags", []))
    for line in cell.source.splitlines():
        marker = line.strip().lstrip("#").strip()
        if marker.startswith("NBVAL_"):
            tags.add(marker.lower().replace("_", "-"))
    return tags


def is_compared(cell) -> bool:
    return cell.execution_count is not None and not (nbval_tags(cell) & IGNORED)


def check_modules(path: pathlib.Path) -> dict[str, object]:
    """Aliases of ``mllib.checks`` modules a notebook imports: {"check": module}."""
    found = {}
    for cell in code_cells(path):
        for match in re.finditer(r"from mllib\.checks import (\w+)(?: as (\w+))?", cell.source):
            found[match.group(2) or match.group(1)] = importlib.import_module(f"mllib.checks.{match.group(1)}")
    return found


def solution_lines(source: str) -> set[int]:
    """1-based line numbers inside BEGIN/END SOLUTION regions."""
    inside, lines = False, set()
    for number, line in enumerate(source.splitlines(), 1):
        if line.strip() == "### BEGIN SOLUTION":
            inside = True
        elif line.strip() == "### END SOLUTION":
            inside = False
        elif inside:
            lines.add(number)
    return lines


def names_used(source: str, lines: set[int]) -> set[str]:
    """Attribute and plain names referenced on the given lines of a cell."""
    used = set()
    for node in ast.walk(ast.parse(source)):
        if getattr(node, "lineno", None) in lines:
            if isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.Name):
                used.add(node.id)
    return used
