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

MODULES = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if p.name not in ("__init__.py", "table.py"))


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
            full, quick = max(full), max(quick, default=0)  # () at quick size: none
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


# ---- results.json and the README's table (issue #25)

ISSUE_25_GOALS = {  # the issue's table, as constants: a goal changes only with the issue
    "vectorized clients vs a deep-copy loop, 10 clients": ">= 20",
    "vectorized clients vs a deep-copy loop, 100 clients": ">= 20",
    "vectorized clients vs a deep-copy loop, 1000 clients": ">= 20",
    "vectorized local step vs one matmul of the same FLOPs": "<= 3",
    "FedAvg steady round vs Flower's simulation engine": ">= 50",
    "SCAFFOLD round vs a per-client loop": ">= 20",
    "MIME round vs a per-client loop": ">= 20",
    "Ditto personal steps vs a per-client loop": ">= 20",
    "coordinate median vs one pass over the client matrix": "<= 10",
    "trimmed mean vs one pass over the client matrix": "<= 10",
    "Krum vs one pass over the client matrix": "<= 10",
    "geometric median vs one pass over the client matrix": "<= 20",
    "centered clipping vs one pass over the client matrix": "<= 20",
    "rounding to bf16 vs torch's cast": "<= 2",
    "rounding to fp16 vs torch's cast": "<= 2",
    "rounding to fp8_e4m3 vs torch's cast": "<= 2",
    "rounding to fp8_e5m2 vs torch's cast": "<= 2",
    "stochastic rounding to bf16 vs torch's cast": "<= 3",
    "Lasso with duality-gap working sets vs scikit-learn's Lasso": "<= 3",
    "PGD vs torchattacks": ">= 1",
    "DP-SGD step (ghost clipping) vs Opacus ghost clipping": ">= 2",
    "DP-SGD step (ghost clipping) vs a plain non-private step": "<= 2",
    "time per round, 10,000 clients vs 1,000 (cohort of 100)": "<= 1.5",
}


def test_the_goals_are_the_issues():
    from benchmarks import GOALS

    assert {name: str(goal).split(" ", 3)[-1] for name, goal in GOALS.items()} == ISSUE_25_GOALS
    speedups = {name for name, goal in GOALS.items() if goal.at_least}
    assert all(GOALS[name].ratio_of == "reference / ours" for name in speedups)


@pytest.mark.parametrize("name", list(ISSUE_25_GOALS))
def test_every_goal_is_recorded_by_a_benchmark(name):
    sources = "".join(p.read_text() for p in MODULES)
    stem = name.split(",")[0].split(" vs ")[0]
    assert any(part in sources for part in (name, stem.split(" ")[0])), f"no benchmark records {name!r}"


def test_record_writes_one_entry_per_comparison_and_the_table_shows_it(tmp_path, monkeypatch):
    import benchmarks
    from benchmarks import table

    monkeypatch.setattr(benchmarks, "RESULTS", tmp_path / "results.json")
    monkeypatch.setattr(benchmarks, "QUICK", False)
    name = "PGD vs torchattacks"
    benchmarks.record(name, ours_s=2.0, reference="torchattacks", reference_s=3.0)
    entry = benchmarks.record(name, ours_s=4.0, reference="torchattacks", reference_s=3.0)  # replaces the first
    entries = json.loads((tmp_path / "results.json").read_text())
    assert entries == [entry] and entry["ratio"] == 0.75 and entry["met"] is False
    assert {"name", "ours_s", "reference", "reference_s", "ratio", "goal", "met", "cpu", "threads"} <= entry.keys()
    text = table.table(entries)
    assert f"| {name} | 4.00 s | torchattacks | 3.00 s | 0.75 | reference / ours >= 1 | no |" in text
    assert "| FedAvg steady round vs Flower's simulation engine | not measured |" in text
    with pytest.raises(KeyError):
        benchmarks.record("a comparison without a goal", ours_s=1.0, reference="x", reference_s=1.0)


def test_the_readme_table_is_the_generated_one():
    from benchmarks import RESULTS, table

    entries = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    assert table.table(entries) in (ROOT / "README.md").read_text(), "run python -m benchmarks.table"


def test_every_missed_goal_says_what_bounds_it():
    import tomllib

    from benchmarks import GOALS, RESULTS, table

    misses = tomllib.loads(table.MISSES.read_text())
    assert set(misses) <= set(GOALS), f"not comparisons of benchmarks.GOALS: {set(misses) - set(GOALS)}"
    assert all(set(miss) == {"bound", "profile"} and all(miss.values()) for miss in misses.values())
    entries = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    unexplained = [e["name"] for e in entries if not e["met"] and e["name"] not in misses]
    assert not unexplained, f"explain in benchmarks/misses.toml what bounds {unexplained} (with a profile)"


def test_the_table_says_by_how_much_a_goal_is_missed_and_why(tmp_path, monkeypatch):
    from benchmarks import table

    monkeypatch.setattr(table, "MISSES", tmp_path / "misses.toml")
    table.MISSES.write_text('["PGD vs torchattacks"]\nbound = "Bounded."\nprofile = "Profiled."\n')
    pgd = dict(name="PGD vs torchattacks", ours_s=4.0, reference="torchattacks", reference_s=3.0, ratio=0.75,
               met=False, cpu="cpu", threads=1)  # fmt: skip
    lasso = dict(pgd, name="Lasso with duality-gap working sets vs scikit-learn's Lasso", ratio=6.0)
    text = table.table([pgd, lasso])
    assert "- **PGD vs torchattacks**: 1.33x short of the goal. Bounded. Profiled." in text
    assert "- **Lasso with duality-gap working sets vs scikit-learn's Lasso**: 2.00x short of the goal. Not explained" in text
