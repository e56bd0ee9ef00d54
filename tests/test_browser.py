"""Widgets in a real browser: JupyterLab as `make lab` starts it, driven by headless Chromium.

nbval cannot see a front end that fails to display widgets ("Error displaying widget",
mismatched ipywidgets and JupyterLab versions); this test can. It needs Debian's
`chromium` and the `playwright` package; without them it is skipped, except under CI=true,
where a skip is a failure (`.ci/run` installs Chromium).
"""
import contextlib
import json
import os
import re
import shutil
import time

import nbformat
import pytest

from lab_server import TOKEN, running_lab, start_kernel_session
from notebooks import ROOT, code_cells

# Debian names it chromium; elsewhere point CHROMIUM at a Chromium or Chrome binary.
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"]  # fmt: skip
WIDGET = "application/vnd.jupyter.widget-view+json"
BROKEN = re.compile(r"Error displaying widget|Error rendering|Failed to load model|Could not find model")
IN_BROWSER = ["lectures/00_introduction.ipynb", "lectures/05_byzantine_robustness.ipynb"]  # a gallery, an interact
# The src of the image in the same output as the first slider (interact's or a gallery's).
FIGURE_NEAR_SLIDER = """() => {
  const slider = document.querySelector('.widget-slider');
  const img = slider && slider.closest('.jp-OutputArea-output').querySelector('img');
  return img ? img.src : null;
}"""

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None

missing = None if CHROMIUM and sync_playwright else "Chromium (apt-get install chromium, or CHROMIUM=path) or playwright is missing"
if missing and os.environ.get("CI") == "true":
    raise RuntimeError(f"the browser test cannot run in CI: {missing}")
pytestmark = pytest.mark.skipif(missing is not None, reason=f"browser test skipped: {missing}")


@pytest.fixture(scope="module")
def lab_page(tmp_path_factory):
    # Never autosave (the browser's outputs must not overwrite the committed notebooks), and
    # render every cell, not only those in view, so that every widget can be counted.
    settings = tmp_path_factory.mktemp("lab-settings")
    for plugin, values in [("docmanager-extension/plugin", {"autosave": False}),
                           ("notebook-extension/tracker", {"windowingMode": "none"}),
                           ("apputils-extension/notification", {"fetchNews": "false"})]:  # fmt: skip
        path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    workspaces = tmp_path_factory.mktemp("lab-workspaces")  # no tabs restored from earlier runs
    lab_args = (f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={workspaces}")
    with running_lab(*lab_args) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield base, browser
        browser.close()


def open_notebook(browser, base: str, relative: str):
    """A fresh page showing only this notebook (`reset` drops the tabs of the last page),
    its kernel started and idle."""
    start_kernel_session(base, relative)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{base}/lab/tree/{relative}?reset&token={TOKEN}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    deadline = time.monotonic() + 180  # generous: nbval keeps the other core busy
    steady = 0  # the kernel reports idle, connects, then idle again: wait for 2 s of idle
    while steady < 4 and time.monotonic() < deadline:
        accept_dialogs(page)
        steady = steady + 1 if idle.count() else 0
        page.wait_for_timeout(500)
    states = [e.get_attribute("data-status") for e in page.locator(".jp-Notebook-ExecutionIndicator").all()]
    assert steady >= 4, f"the kernel of {relative} did not start (status {states})"
    return page


def accept_dialogs(page) -> None:
    """Accept JupyterLab's "Select Kernel" dialog, which shows up when the kernel list is late."""
    for button in page.locator(".jp-Dialog .jp-mod-accept").all():
        button.click()


def run_all_cells(page, n_code_cells: int) -> None:
    """Clear every output, run all cells from the Run menu, and wait for the last one."""
    prompts = "[...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent.trim())"
    accept_dialogs(page)
    page.get_by_role("menuitem", name="Edit", exact=True).click()
    page.get_by_text("Clear Outputs of All Cells", exact=True).click()
    page.wait_for_function(f"() => {prompts}.every(p => !/[0-9]/.test(p))", timeout=10_000)
    for _ in range(3):  # under load a menu click can be lost: retry until the cells start
        accept_dialogs(page)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_text("Run All Cells", exact=True).click()
        with contextlib.suppress(PlaywrightTimeout):
            page.wait_for_function(f"() => {prompts}.some(p => /[0-9*]/.test(p))", timeout=30_000)
            break
    page.wait_for_function(f"() => {prompts}.includes('[{n_code_cells}]:')", timeout=400_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", state="attached", timeout=60_000)


def widget_errors(page) -> list[str]:
    return [text for text in page.locator(".jp-OutputArea-output").all_inner_texts() if BROKEN.search(text)]


def sliders_created(path) -> int:
    """Sliders in the widget outputs the notebook recorded (their reprs name them)."""
    reprs = [o["data"].get("text/plain", "") for c in code_cells(path) for o in c.outputs if WIDGET in o.get("data", {})]
    return sum(len(re.findall(r"\w*Slider\(", r)) for r in reprs)


@pytest.mark.parametrize("relative", IN_BROWSER)
def test_widgets_render_and_answer_a_slider_within_a_second(lab_page, relative, tmp_path):
    base, browser = lab_page
    path = ROOT / relative
    page = open_notebook(browser, base, relative)
    run_all_cells(page, len([c for c in code_cells(path) if c.source.strip()]))
    page.screenshot(path=tmp_path / f"{path.stem}.png", full_page=True)
    assert widget_errors(page) == []
    expected = sliders_created(path)
    handles = page.locator(".widget-slider .noUi-handle")
    with contextlib.suppress(PlaywrightTimeout):  # views render a moment after their cell ends
        page.wait_for_function(f"() => document.querySelectorAll('.widget-slider').length >= {expected}", timeout=30_000)
    assert handles.count() == expected >= 1
    before = page.evaluate(FIGURE_NEAR_SLIDER)
    assert before, "no figure next to the slider"
    handles.first.focus()
    start = time.monotonic()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(f"old => {{ const src = ({FIGURE_NEAR_SLIDER})(); return src && src !== old; }}",
                           arg=before, timeout=10_000)  # fmt: skip
    assert time.monotonic() - start < 1.0, "the widget took more than a second to redraw"
    page.screenshot(path=tmp_path / f"{path.stem}-moved.png", full_page=True)


def slider_notebook(model_version: str) -> nbformat.NotebookNode:
    """A notebook whose one cell displays a slider that names the given model version."""
    source = (
        "import ipywidgets, traitlets\n"
        "class Slider(ipywidgets.IntSlider):\n"
        f"    _model_module_version = traitlets.Unicode({model_version!r}).tag(sync=True)\n"
        f"    _view_module_version = traitlets.Unicode({model_version!r}).tag(sync=True)\n"
        "Slider()"
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


@pytest.mark.parametrize("version, renders", [("2.0.0", True), ("99.0.0", False)], ids=["control", "negative-control"])
def test_a_widget_that_cannot_render_is_caught(lab_page, version, renders, tmp_path):
    """The same checks on a slider whose model version exists, and on one whose does not."""
    base, browser = lab_page
    folder = ROOT / "build" / "browser-test"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"slider_{version.split('.')[0]}.ipynb"
    try:
        (folder / name).write_text(json.dumps(slider_notebook(version)))
        page = open_notebook(browser, base, f"build/browser-test/{name}")
        run_all_cells(page, 1)
        page.wait_for_timeout(2_000)  # let the widget manager render or give up
        page.screenshot(path=tmp_path / f"{name}.png")
        assert (page.locator(".widget-slider").count() == 1 and not widget_errors(page)) == renders
    finally:
        shutil.rmtree(folder, ignore_errors=True)
