"""The README's other commands run: make execute, survey, labs, site and flower."""
import shutil
import subprocess

import nbformat
import pytest

from notebooks import LECTURES, ROOT


def make(*args: str, timeout: int = 300) -> str:
    done = subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_make_execute_records_twice_the_same_bytes(tmp_path):
    notebook = tmp_path / LECTURES[0].name  # the introduction: widgets and figures
    shutil.copy(LECTURES[0], notebook)
    make("execute", f"NOTEBOOKS={notebook}")
    first = notebook.read_bytes()
    make("execute", f"NOTEBOOKS={notebook}")
    assert notebook.read_bytes() == first
    assert b'"execution"' not in first and b"iopub" not in first  # no timestamps


def test_make_survey_reports_a_number_that_moves_and_its_tolerance(tmp_path):
    cell = nbformat.v4.new_code_cell(
        "import os\nfrom mllib.spread import Spread\nthreads = Spread([int(os.environ.get('MLLIB_THREADS', 1))] * 2)\n"
        "print(f'threads {threads.median:.0f}')",
        execution_count=1, outputs=[nbformat.v4.new_output("stream", name="stdout", text="threads 1\n")],
        metadata={"tolerance": [{"pattern": r"threads (\d)", "tolerance": 0.2, "std": 1, "std_of": "threads"}]},
    )  # fmt: skip
    notebook = tmp_path / "moves.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), notebook)
    done = subprocess.run(["make", "--no-print-directory", "survey", f"NOTEBOOKS={notebook}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode != 0  # 2 and 3 threads move the number beyond 0.2
    assert "Cell 0 stdout line 1: 1 -> 2 (both, 2 threads), 3 (3 threads): NOT COVERED" in done.stdout
    assert "std over seeds of threads: 0, pooled over 5 kernel settings" in done.stdout


def test_make_labs_regenerates_the_committed_labs():
    make("labs")
    changed = subprocess.run(["git", "status", "--porcelain", "labs"], cwd=ROOT, capture_output=True, text=True)
    assert changed.stdout == "", f"make labs changed labs/ (commit them):\n{changed.stdout}"


def test_make_site_writes_the_index():
    make("site")
    assert "lectures/00_introduction.html" in (ROOT / "build" / "site" / "index.html").read_text()


@pytest.mark.deployment
def test_make_flower_runs_a_round_on_the_deployment_runtime():
    pytest.importorskip("flwr", reason="the flower extra is not installed: pip install -e '.[flower]'")
    out = make("flower", "FLOWER_ARGS=--clients 2 --rounds 1", timeout=240)
    assert "round 1: test accuracy" in out
