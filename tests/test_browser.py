"""Widgets in a real browser: JupyterLab as `make lab` starts it, driven by headless Chromium.

nbval cannot see a front end that fails to display widgets ("Error displaying widget",
mismatched ipywidgets and JupyterLab versions); this test can. It needs Debian's
`chromium` and the `playwright` package; without them it is skipped, except under CI=true,
where a skip is a failure (`.ci/run` installs Chromium).
"""
import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import threading
import time
import urllib.request

import nbformat
import pytest

from lab_server import TOKEN, running_lab, start_kernel_session
from notebooks import LECTURES, ROOT, code_cells, read
from test_site import needs_npm

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
def chromium():
    """One browser for the module: Playwright's sync API allows one instance per thread, and
    pytest keeps every module-scoped fixture alive until the module ends."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def lab_page(tmp_path_factory, chromium):
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
    with running_lab(*lab_args) as base:
        yield base, chromium


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


# The static site (`make site`), served on 127.0.0.1 with every other host blocked.
STATE = "application/vnd.jupyter.widget-state+json"
WIDGETS_DRAWN = """() => ({
  math: document.querySelectorAll('.MathJax, .MathJax_Display').length,
  mathErrors: document.querySelectorAll('.MathJax_Error, merror').length,
  widgets: [...document.querySelectorAll('.jupyter-widgets')].map(w => w.innerText).join('\\n'),
  controls: document.querySelectorAll('.widget-slider, .widget-dropdown, .widget-text, .widget-button').length,
})"""


@pytest.fixture(scope="module")
def offline_site(tmp_path_factory, chromium):
    """The site's base URL on 127.0.0.1, a browser context that aborts (and records) every request
    to another host, and that record."""
    from mllib.site import build_site

    out = tmp_path_factory.mktemp("site")
    build_site(out)
    handler = functools.partial(QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base, elsewhere = f"http://127.0.0.1:{server.server_address[1]}", []

    def only_the_site(route):
        if route.request.url.startswith(base + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context = chromium.new_context(viewport={"width": 1280, "height": 720})
    context.route("**/*", only_the_site)
    yield base, context, elsewhere
    context.close()
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def has_math(path) -> bool:
    return any(c.cell_type == "markdown" and re.search(r"\$[^$]+\$", c.source) for c in nbformat.read(path, 4).cells)


def first_description(path) -> str:
    """The description of the first labelled control in the notebook's saved widget state."""
    state = nbformat.read(path, 4).metadata["widgets"][STATE]["state"]
    return next(m["state"]["description"] for m in state.values() if m["state"].get("description"))


@needs_npm
@pytest.mark.parametrize(
    "folder, lectures", [("lectures", LECTURES), ("slides", [LECTURES[1], LECTURES[7]])], ids=["pages", "slides"]
)  # two slide decks suffice: they load the same files as the pages, and math and widgets (01, 07)
def test_the_site_typesets_math_and_draws_saved_widgets_with_other_hosts_blocked(offline_site, folder, lectures, tmp_path):
    base, context, elsewhere = offline_site
    for lecture in lectures:
        page = context.new_page()
        failed = []
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.goto(f"{base}/{folder}/{lecture.stem}.html")
        page.wait_for_selector(".jupyter-widgets", state="attached", timeout=60_000)
        if has_math(lecture):  # MathJax typesets the page in one pass, then its queue is empty
            page.wait_for_function("() => MathJax.Hub.queue.pending === 0 && !MathJax.Hub.queue.running"
                                   " && document.querySelector('.MathJax')", timeout=90_000)  # fmt: skip
        drawn = page.evaluate(WIDGETS_DRAWN)
        page.screenshot(path=tmp_path / f"{folder}-{lecture.stem}.png")
        page.close()
        assert elsewhere == [] and failed == [], lecture.name
        assert drawn["mathErrors"] == 0 and (drawn["math"] > 0) == has_math(lecture), (lecture.name, drawn)
        assert drawn["controls"] >= 1 and not BROKEN.search(drawn["widgets"]), (lecture.name, drawn)
        assert first_description(lecture) in drawn["widgets"], lecture.name


# Presenting with jupyterlab-deck (`make present`): JupyterLab's own notebook, so widgets stay live.
#
# A slide while presenting: its cells (their index in the notebook), its first line, its height,
# and whether it fits: jupyterlab-deck shows the notebook at most the viewport high
# (`max-height: 100vh`), and JupyterLab's scroller (.jp-WindowedPanel-outer, `overflow-y: auto`)
# scrolls a taller slide; it always has room to scroll (past the end), so a slide fits when
# the cells' panel (.jp-WindowedPanel-viewport) is no taller than the scroller shows.
SLIDE = """() => {
  const all = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
  const cells = all.filter(c => c.classList.contains('jp-deck-mod-visible'));
  const rects = cells.map(c => c.getBoundingClientRect());
  const scroller = document.querySelector('.jp-Notebook .jp-WindowedPanel-outer');
  const panel = scroller.querySelector('.jp-WindowedPanel-viewport');
  return {cells: cells.map(c => all.indexOf(c)),
          title: cells.length ? cells[0].innerText.trim().split('\\n')[0].slice(0, 80) : '',
          height: cells.length ? Math.max(...rects.map(r => r.bottom)) - Math.min(...rects.map(r => r.top)) : 0,
          fits: panel.getBoundingClientRect().height <= scroller.clientHeight + 1};
}"""
# After scrolling a slide with the mouse wheel, as a presenter would: how far it scrolled, and
# where its last cell ends.
SCROLLED = """() => {
  const scroller = document.querySelector('.jp-Notebook .jp-WindowedPanel-outer');
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell.jp-deck-mod-visible')];
  return {overflow: getComputedStyle(scroller).overflowY, top: scroller.scrollTop,
          bottom: cells[cells.length - 1].getBoundingClientRect().bottom, viewport: window.innerHeight};
}"""
CONTROLS = ".jp-deck-mod-visible .jp-OutputArea-output :is(.widget-slider, .widget-dropdown, .widget-text)"
# What a control's output shows: the figures and text next to it (interact's output, a gallery's image).
SHOWN = """control => {
  const area = control.closest('.jp-OutputArea-output');
  return [...area.querySelectorAll('img')].map(i => i.src).join() + [...area.querySelectorAll('.widget-output')].map(o => o.innerText).join();
}"""
VIEWPORT = {"width": 1280, "height": 720}
OVERFLOW_REPORT = ROOT / "build" / "slide-overflow"
# Slides taller than the screen, allowed because each is one cell that cannot be split; they
# scroll (checked). Keyed by the lecture and the start of the cell's source. None today: every
# tall slide was split (mllib.site.slide_metadata) or its cell split at the source.
TALL_SLIDES: dict[tuple[str, str], str] = {}


def presented_copy(lecture) -> str:
    """The lecture with the course metadata applied (`python -m mllib.site --metadata`), in build/."""
    from mllib.site import course_metadata

    notebook = nbformat.read(lecture, as_version=4)
    course_metadata(notebook, notebook.metadata["language_info"], slides=True)
    folder = ROOT / "build" / "browser-test" / "present"
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, folder / lecture.name)
    return f"build/browser-test/present/{lecture.name}"


def start_deck(page) -> None:
    """Start presenting at the first cell, as an instructor does: Command Palette, "Start Deck"."""
    page.locator(".jp-Notebook .jp-Cell").first.click()
    page.keyboard.press("Escape")
    page.keyboard.press("Control+Shift+C")
    page.wait_for_selector(".lm-CommandPalette-input:visible", timeout=10_000)
    page.keyboard.type("Start Deck")
    page.wait_for_selector(".lm-CommandPalette-item.lm-mod-active:has-text('Start Deck')", timeout=10_000)
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-jp-deck-mode='presenting']", state="attached", timeout=30_000)


def deck_off(base: str) -> None:
    """jupyterlab-deck remembers that it presents (and hides the menus on the next page): forget."""
    request = urllib.request.Request(
        f"{base}/lab/api/settings/@deathbeds/jupyterlab-deck:plugin?token={TOKEN}", method="PUT",
        data=json.dumps({"raw": json.dumps({"active": False})}).encode(), headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert reply.status in (200, 204)


# The cells the deck shows, as a string that changes when the slide does.
SHOWN_CELLS = """() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')]
  .map((c, i) => c.classList.contains('jp-deck-mod-visible') ? i : -1).filter(i => i >= 0).join()"""


def each_slide(page):
    """Step through the deck (subslides first, then the next slide) and yield each slide once.
    After each step, wait for the deck to show other cells: under load it redraws late, and a
    second step taken before it did would skip a slide."""
    seen = set()
    for _ in range(500):
        slide = page.evaluate(SLIDE)
        if tuple(slide["cells"]) not in seen:
            seen.add(tuple(slide["cells"]))
            yield slide
        for direction in ("down", "forward"):
            button = page.locator(f".jp-deck-mod-direction-{direction}")
            if "jp-mod-disabled" not in (button.get_attribute("class") or ""):
                shown = page.evaluate(SHOWN_CELLS)
                button.click()
                with contextlib.suppress(PlaywrightTimeout):
                    page.wait_for_function(f"old => ({SHOWN_CELLS})() !== old", arg=shown, timeout=10_000)
                page.wait_for_timeout(300)  # the new cells lay out
                break
        else:
            return


def move(control) -> None:
    """Move a slider one step, or pick the next option of a dropdown, or double a number; then
    press the panel's Run button where it has one."""
    classes = control.get_attribute("class")
    if "widget-slider" in classes:
        control.locator(".noUi-handle").focus()
        control.page.keyboard.press("ArrowRight")
    elif "widget-dropdown" in classes:
        select = control.locator("select")
        select.select_option(index=(select.evaluate("s => s.selectedIndex") + 1) % select.locator("option").count())
    else:
        field = control.locator("input")
        field.fill(str(2 * float(field.input_value() or 1)))
        field.press("Enter")
    run = control.locator("xpath=ancestor::div[contains(@class, 'jp-OutputArea-output')]//button[normalize-space()='Run']")
    if run.count():  # a panel that computes on its Run button (the playground's)
        run.first.click()


@pytest.mark.parametrize("lecture", LECTURES, ids=lambda p: p.stem)
def test_presenting_a_lecture_its_widget_answers_and_every_slide_fits_the_screen(lab_page, lecture, tmp_path):
    base, browser = lab_page
    relative = presented_copy(lecture)
    deck_off(base)
    page = open_notebook(browser, base, relative)
    page.set_viewport_size(VIEWPORT)
    run_all_cells(page, len([c for c in code_cells(ROOT / relative) if c.source.strip()]))
    try:
        start_deck(page)
        slides, moved = [], None
        for slide in each_slide(page):
            slides.append(slide)
            if not slide["fits"]:
                page.mouse.move(VIEWPORT["width"] / 2, VIEWPORT["height"] / 2)
                page.mouse.wheel(0, slide["height"] - VIEWPORT["height"] + 40)  # to the slide's end
                page.wait_for_timeout(300)
                slide["scroll"] = page.evaluate(SCROLLED)
            control = page.locator(CONTROLS).first
            if moved is None and control.count():
                control.scroll_into_view_if_needed()
                before = control.evaluate(SHOWN)
                move(control)
                moved = False  # the first control is tried, once
                with contextlib.suppress(PlaywrightTimeout):
                    page.wait_for_function(f"([c, old]) => ({SHOWN})(c) !== old", arg=[control.element_handle(), before],
                                           timeout=60_000)  # fmt: skip
                    moved = slide["title"]
                page.screenshot(path=tmp_path / f"{lecture.stem}-moved.png")
        errors = widget_errors(page)
    finally:
        page.screenshot(path=tmp_path / f"{lecture.stem}-last.png")
        page.close()
        deck_off(base)
    assert errors == []
    headings = sum(c.metadata.get("slideshow", {}).get("slide_type") in ("slide", "subslide") for c in read(ROOT / relative).cells)
    assert len(slides) == headings, "the deck did not show every slide"
    overflowing = [s for s in slides if not s["fits"]]
    OVERFLOW_REPORT.mkdir(parents=True, exist_ok=True)
    (OVERFLOW_REPORT / f"{lecture.stem}.md").write_text(
        f"{lecture.name}: {len(overflowing)} of {len(slides)} slides taller than the screen at "
        f"{VIEWPORT['width']}x{VIEWPORT['height']} while presenting\n"
        + "".join(f"- {s['height']:.0f} px, cells {s['cells']}: {s['title']}\n" for s in overflowing)
    )
    cells = read(ROOT / relative).cells
    allowed = {key: reason for key, reason in TALL_SLIDES.items() if key[0] == lecture.stem}
    for slide in overflowing:
        starts = [key for key in allowed if cells[slide["cells"][0]].source.startswith(key[1])]
        assert len(slide["cells"]) == 1 and starts, (
            f"a slide of {slide['height']:.0f} px (cells {slide['cells']}, {slide['title']!r}) does not fit "
            f"{VIEWPORT['width']}x{VIEWPORT['height']}: split it (mllib.site.slide_metadata, or the cell itself)"
        )
        allowed.pop(starts[0])
    assert not allowed, f"listed as too tall but fits now: remove from TALL_SLIDES: {list(allowed)}"
    for slide in overflowing:
        assert slide["scroll"]["overflow"] in ("auto", "scroll") and slide["scroll"]["top"] > 0, slide
        assert 0 < slide["scroll"]["bottom"] <= slide["scroll"]["viewport"] + 1, f"the end of {slide['title']!r} is out of reach"
    assert moved, f"no widget of {lecture.name} answered while presenting"


def test_a_slide_taller_than_the_screen_scrolls_while_presenting(lab_page, tmp_path):
    """What TALL_SLIDES relies on, shown on a notebook whose one slide is a cell printing 80 lines."""
    from mllib.site import slide_metadata

    base, browser = lab_page
    printed = "".join(f"line {k}\n" for k in range(80))
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A tall slide"), nbformat.v4.new_code_cell("N = 80"),
        nbformat.v4.new_code_cell("for k in range(N):\n    print('line', k)", execution_count=2,
                                  outputs=[nbformat.v4.new_output("stream", name="stdout", text=printed)]),
    ])  # fmt: skip
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder = ROOT / "build" / "browser-test"
    folder.mkdir(parents=True, exist_ok=True)
    deck_off(base)
    try:
        (folder / "tall.ipynb").write_text(json.dumps(slide_metadata(notebook)))
        page = open_notebook(browser, base, "build/browser-test/tall.ipynb")
        page.set_viewport_size(VIEWPORT)
        start_deck(page)
        slides = list(each_slide(page))  # the title, then the printed lines: the deck ends on them
        page.mouse.move(VIEWPORT["width"] / 2, VIEWPORT["height"] / 2)
        page.mouse.wheel(0, slides[-1]["height"] - VIEWPORT["height"] + 40)  # to the slide's end
        page.wait_for_timeout(300)
        scrolled = page.evaluate(SCROLLED)
        page.screenshot(path=tmp_path / "tall.png")
        page.close()
    finally:
        deck_off(base)
        (folder / "tall.ipynb").unlink(missing_ok=True)
    assert [s["cells"] for s in slides] == [[0], [2]] and slides[0]["fits"] and not slides[1]["fits"], slides
    assert scrolled["overflow"] in ("auto", "scroll") and scrolled["top"] > 0, scrolled
    assert 0 < scrolled["bottom"] <= scrolled["viewport"] + 1, scrolled
