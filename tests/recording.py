"""Record notebooks, and survey how their outputs move on other kernels: tools for lecture authors.

    python tests/recording.py execute lectures/01_federated_learning.ipynb   # make execute
    python tests/recording.py survey lectures/01_federated_learning.ipynb    # make survey

``execute`` runs a notebook top to bottom and saves it with its outputs, deterministically:
no timestamps, widget model ids derived from the notebook's content, so that recording twice
on one machine changes nothing. ``survey`` reruns a notebook under the floating-point kernel
settings of ``make test-portable`` and other thread counts, without saving it, and reports
every number that moved, by how much, and whether a declared tolerance covers it; for each
tolerance it evaluates the ``std_of`` expression its entry names (a ``Spread`` or several)
after the cell, and reports the std over seeds pooled over the kernel settings.
"""
import argparse
import concurrent.futures
import hashlib
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import nbformat
from compare_numbers import allowed_moves, split_numbers, texts, tolerances
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The kernel settings of the perturbation pass (Makefile: PERTURBED), and more.
# Threads that wait sleep (OMP_WAIT_POLICY=PASSIVE): spinning threads of two kernels on two
# cores slow each other down many times over; results do not depend on it.
VARIANTS = {
    "as recorded": {},
    "MKL_CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
    "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
    "both, 2 threads": {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default", "MLLIB_THREADS": "2"},
    "3 threads": {"MLLIB_THREADS": "3"},
}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
PROBE = "survey-probe"


def execute(path: pathlib.Path, output: pathlib.Path | None = None, cwd: pathlib.Path | None = None) -> None:
    """Run the notebook at ``path`` top to bottom (its kernel in ``cwd``, by default the
    notebook's folder) and save it with its outputs, in place or to ``output``."""
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(cwd or path.parent)}}).execute()
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = coalesce_streams(cell.outputs)
    nbformat.write(with_stable_widget_ids(notebook, path.stem), output or path)


def coalesce_streams(outputs: list) -> list:
    """Consecutive prints to one stream as one output: a loaded machine may deliver one
    print in two messages (nbval merges them alike before comparing)."""
    merged = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if output.output_type == "stream" and previous and previous.output_type == "stream" and previous.name == output.name:
            previous.text += output.text
        else:
            merged.append(output)
    return merged


def with_stable_widget_ids(notebook: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The notebook with each random widget model id replaced by one derived from ``name`` and
    the order in which the outputs reach the widget (views first, then their children)."""
    state = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    order = []

    def visit(model_id):
        if model_id in state and model_id not in order:
            order.append(model_id)
            for child in re.findall(r"IPY_MODEL_(\w+)", json.dumps(state[model_id], sort_keys=True)):
                visit(child)

    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            visit(output.get("data", {}).get(WIDGET_VIEW, {}).get("model_id"))
    order += sorted(set(state) - set(order), key=lambda m: json.dumps(state[m], sort_keys=True))
    text = nbformat.writes(notebook)
    for index, model_id in enumerate(order):
        text = text.replace(model_id, hashlib.md5(f"{name}/{index}".encode()).hexdigest())
    return nbformat.reads(text, as_version=4)


def with_probes(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy with a cell after each tolerance-declaring cell that prints the std over seeds of
    the ``Spread`` (or the largest of the several) each tolerance's ``std_of`` names."""
    probed = nbformat.v4.new_notebook(metadata=notebook.metadata)
    for index, cell in enumerate(notebook.cells):
        probed.cells.append(cell)
        expressions = [e["std_of"] for e in cell.metadata.get("tolerance", []) if "std_of" in e]
        if expressions:
            source = ("import json\nfrom mllib.spread import Spread\n"
                      "stds = lambda s: [s.std] if isinstance(s, Spread) else [x.std for x in "
                      "(s.values() if isinstance(s, dict) else s)]\n"
                      f"print(json.dumps({{e: max(stds(eval(e))) for e in {expressions!r}}}))")
            probed.cells.append(nbformat.v4.new_code_cell(source, metadata={PROBE: index}))
    return probed


def run_variants(path: pathlib.Path, parallel: int) -> dict[str, nbformat.NotebookNode]:
    """The notebook, with probes, executed under every variant (``parallel`` at a time)."""
    with tempfile.TemporaryDirectory() as tmp:
        source = pathlib.Path(tmp) / path.name
        nbformat.write(with_probes(nbformat.read(path, as_version=4)), source)

        def run(numbered):
            index, variant = numbered
            output = source.with_name(f"{index}-{path.name}")
            env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **VARIANTS[variant]}
            subprocess.run([sys.executable, __file__, "execute", str(source), "--output", str(output),
                            "--cwd", str(path.parent)], env=env, check=True, cwd=ROOT)
            return nbformat.read(output, as_version=4)

        with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
            return dict(zip(VARIANTS, pool.map(run, enumerate(VARIANTS))))


def survey(path: pathlib.Path, parallel: int = 2) -> bool:
    """Print how the numbers of ``path`` move under every variant; True when all stay covered."""
    recorded = nbformat.read(path, as_version=4)
    runs = run_variants(path, parallel)
    print(f"== {path.name}, {len(runs)} kernel settings: {', '.join(runs)}")
    covered = True
    code_index = {i: n for n, i in enumerate(i for i, c in enumerate(recorded.cells) if c.cell_type == "code")}
    for index, number in code_index.items():
        cell, rules = recorded.cells[index], tolerances(recorded.cells[index].metadata)
        outputs = {variant: [c for c in run.cells if PROBE not in c.metadata][index].outputs for variant, run in runs.items()}
        for o, old_output in enumerate(cell.outputs):
            for key, old in texts(old_output).items():
                news = {v: texts(out[o]).get(key, "") if o < len(out) else "" for v, out in outputs.items()}
                covered &= report_moves(f"Cell {number} {key}", old, news, rules)
        for entry in cell.metadata.get("tolerance", []):
            stds = [json.loads(c.outputs[0]["text"])[entry["std_of"]] for run in runs.values()
                    for c in run.cells if c.metadata.get(PROBE) == index] if "std_of" in entry else []
            if stds:
                pooled = math.sqrt(sum(s * s for s in stds) / len(stds))
                print(f"Cell {number}: std over seeds of {entry['std_of']}: {pooled:.3g}, pooled over "
                      f"{len(stds)} kernel settings (declared: {entry['std']:g}, tolerance {entry['tolerance']:g})")
    print("every number stays within its tolerance\n" if covered else "some numbers are not covered\n")
    return covered


def report_moves(where: str, old: str, news: dict[str, str], rules: list) -> bool:
    """Print each number of ``old`` that moved in some variant; True when tolerances cover all."""
    old_text, old_numbers = split_numbers(old)
    allowed = allowed_moves(old, rules)
    moved = {}
    for variant, new in news.items():
        new_text, new_numbers = split_numbers(new)
        if len(new_numbers) != len(old_numbers):
            print(f"{where}: {variant} printed {len(new_numbers)} numbers, {len(old_numbers)} recorded: NOT COVERED")
            return False
        changed_text = [(a, b) for a, b in zip(old_text, new_text) if a.split() != b.split()]
        if changed_text:
            print(f"{where}: {variant} changed the text {changed_text[0][0]!r} to {changed_text[0][1]!r}: NOT COVERED")
            return False
        for i, (a, b) in enumerate(zip(old_numbers, new_numbers)):
            if a.group() != b.group():
                moved.setdefault(i, []).append(f"{b.group()} ({variant})")
    ok = True
    for i, changes in moved.items():
        worst = max(abs(float(c.split()[0]) - float(old_numbers[i].group())) for c in changes)
        fine = i in allowed and worst <= allowed[i].tolerance * (1 + 1e-9)
        ok &= fine
        line = old.count("\n", 0, old_numbers[i].start()) + 1
        print(f"{where} line {line}: {old_numbers[i].group()} -> {', '.join(changes)}: "
              + (f"within {allowed[i].tolerance:g}" if fine else "NOT COVERED"))
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["execute", "survey"])
    parser.add_argument("notebooks", nargs="+", type=pathlib.Path)
    parser.add_argument("--output", type=pathlib.Path, help="execute: save here instead of in place")
    parser.add_argument("--cwd", type=pathlib.Path, help="execute: the folder the kernel starts in")
    args = parser.parse_args()
    if args.command == "execute":
        for path in args.notebooks:
            execute(path.resolve(), args.output and args.output.resolve(), args.cwd and args.cwd.resolve())
    else:
        results = [survey(path.resolve()) for path in args.notebooks]
        sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
