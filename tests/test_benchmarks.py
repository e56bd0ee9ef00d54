"""The benchmarks without running them (`make bench-quick` runs them in `make test`): every
benchmarks/*.py imports, takes its sizes from the one BENCH_QUICK switch of
benchmarks/__init__.py, and binds no name twice (issue #20: ``def sparse`` hid the module)."""
import ast
import importlib
import json
import os
import subprocess
import sys

import pytest

from notebooks import ROOT

MODULES = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if p.name != "__init__.py")


def tree(path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def size_calls(module: ast.Module) -> list[ast.Call]:
    calls = (n for n in ast.walk(module) if isinstance(n, ast.Call))
    return [call for call in calls if isinstance(call.func, ast.Name) and call.func.id == "size"]


def test_there_are_benchmarks():
    assert len(MODULES) >= 10, [p.name for p in MODULES]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_sizes_come_from_the_shared_switch(path):
    module = tree(path)
    imported = {
        alias.name for node in module.body if isinstance(node, ast.ImportFrom) and node.module == "benchmarks"
        for alias in node.names
    }  # fmt: skip
    assert "size" in imported, f"{path.name}: no `from benchmarks import size`"
    assert size_calls(module), f"{path.name} never calls size(full, quick): bench-quick would run it at full size"
    source = path.read_text()
    for duplicate in ("BENCH_QUICK", "environ", "getenv"):  # one mechanism, in benchmarks/__init__.py
        assert duplicate not in source, f"{path.name} reads the environment itself ({duplicate})"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_quick_sizes_are_not_larger(path):
    for call in size_calls(tree(path)):
        assert len(call.args) == 2 and not call.keywords, f"{path.name}:{call.lineno}: size(full, quick)"
        try:
            full, quick = (ast.literal_eval(arg) for arg in call.args)
        except ValueError:  # computed, e.g. size(len(data.y_train), 500)
            continue
        if isinstance(full, tuple):
            full, quick = max(full), max(quick)
        assert quick <= full, f"{path.name}:{call.lineno}: the quick size {quick} exceeds the full {full}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_no_function_hides_an_import(path):
    module = tree(path)
    imported = {
        (alias.asname or alias.name).split(".")[0]
        for node in module.body if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }  # fmt: skip
    defined = {node.name for node in module.body if isinstance(node, ast.FunctionDef | ast.ClassDef)}
    assigned = {
        target.id for node in module.body if isinstance(node, ast.Assign)
        for target in node.targets if isinstance(target, ast.Name)
    }  # fmt: skip
    assert not imported & (defined | assigned), f"{path.name} rebinds imported names {imported & (defined | assigned)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_imports(path):
    try:
        module = importlib.import_module(f"benchmarks.{path.stem}")
    except ModuleNotFoundError as error:  # a peer library that `make bench` installs (torchattacks)
        if error.name.split(".")[0] in ("benchmarks", "mllib"):
            raise
        pytest.skip(f"{error.name} is not installed (make .venv/.bench-installed)")
    assert callable(module.main)


SWITCH = """
import json
from benchmarks import QUICK, best_time, size
calls = []
seconds, result = best_time(lambda: calls.append(1) or len(calls), 3, warm_up=True)
print(json.dumps({"quick": QUICK, "size": size(1000, 10), "calls": len(calls), "result": result}))
"""


@pytest.mark.parametrize("value, expected", [
    (None, {"quick": False, "size": 1000, "calls": 4, "result": 4}),  # warm-up and 3 repeats
    ("0", {"quick": False, "size": 1000, "calls": 4, "result": 4}),
    ("1", {"quick": True, "size": 10, "calls": 1, "result": 1}),  # one call, no warm-up
])  # fmt: skip
def test_bench_quick_switch(value, expected):
    env = {k: v for k, v in os.environ.items() if k != "BENCH_QUICK"}
    if value is not None:
        env["BENCH_QUICK"] = value
    out = subprocess.run([sys.executable, "-c", SWITCH], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == expected
