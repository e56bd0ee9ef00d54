"""The two-command set-up: packaging, pins, CI, and JupyterLab starting as `make lab` starts it."""
import re
import tomllib
import urllib.request

import pytest
import yaml

from lab_server import TOKEN, running_lab, status
from notebooks import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CONDA_NAMES = {"torch": "pytorch"}


def package_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.\-]+", requirement.strip()).group(0).lower()


def conda_packages() -> set[str]:
    dependencies = (ROOT / "environment.yml").read_text().split("dependencies:")[1]
    listed = [line.strip()[2:] for line in dependencies.splitlines() if re.match(r"^  - [A-Za-z]", line)]
    return {package_name(p) for p in listed} - {"python", "pip"}


def test_environment_yml_lists_the_packages_of_pyproject():
    extras = PYPROJECT["optional-dependencies"]
    wanted = PYPROJECT["dependencies"] + extras["dev"] + extras["flower"]
    assert conda_packages() == {CONDA_NAMES.get(package_name(r), package_name(r)) for r in wanted}


def test_torch_is_a_range_for_users_and_pinned_to_the_cpu_build_for_make():
    torch_requirement = next(r for r in PYPROJECT["dependencies"] if package_name(r) == "torch")
    assert ">=" in torch_requirement and "==" not in torch_requirement
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text().splitlines()
    assert "torchvision" not in (ROOT / "constraints.txt").read_text()


def test_ci_runs_the_readme_test_command():
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")
    readme = (ROOT / "README.md").read_text()
    assert "make lab" in readme and "make test" in readme


def test_the_github_workflow_runs_make_test_on_linux_and_macos_arm64_with_two_pythons():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yml").read_text())
    job = workflow["jobs"]["test"]
    assert [step["run"] for step in job["steps"] if "run" in step] == ["make test"]
    matrix = job["strategy"]["matrix"]
    assert any(os.startswith("ubuntu") for os in matrix["os"]) and "macos-14" in matrix["os"]  # macos-14: arm64
    oldest = PYPROJECT["requires-python"].removeprefix(">=")
    assert len(matrix["python"]) == 2 and oldest in matrix["python"]


def test_the_github_workflow_runs_the_readmes_set_up_without_make_on_windows():
    job = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yml").read_text())["jobs"]["without-make"]
    set_up, start = re.search(r"```bat\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1).splitlines()
    commands = [step["run"] for step in job["steps"] if "run" in step]
    assert job["runs-on"].startswith("windows") and commands[0] == set_up
    assert commands[1].startswith(start) and "--execute lectures/" in commands[2]


def test_readme_pyproject_and_environment_name_the_same_oldest_python():
    oldest = PYPROJECT["requires-python"].removeprefix(">=")
    assert f"Python {oldest}+" in (ROOT / "README.md").read_text()
    assert f"python>={oldest}" in (ROOT / "environment.yml").read_text()


def test_jupyterlab_starts_as_make_lab_starts_it():
    with running_lab() as base:
        assert status(base)["kernels"] == 0
        with urllib.request.urlopen(f"{base}/lab?token={TOKEN}", timeout=5) as page:
            assert page.status == 200 and b"JupyterLab" in page.read()


@pytest.mark.parametrize("folder", ["lectures", "labs", "solutions", "mllib", "tests", "benchmarks"])
def test_the_layout_shows_the_course(folder):
    assert (ROOT / folder).is_dir()
