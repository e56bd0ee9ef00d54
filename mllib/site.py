"""Render the course to static HTML that works offline: ``python -m mllib.site OUT`` (``make site``).

The site has one page per lecture and per solution and a reveal.js slide deck per lecture, with
outputs, figures and the widgets' saved state embedded, and an index that follows the course
map. Every script, stylesheet and font the pages load is copied into ``OUT/static`` (with its
licence): require.js, jQuery, reveal.js and the widget manager (``@jupyter-widgets/html-manager``)
from the npm packages ``make`` installs into ``build/node_modules`` (listed in
``assets/package.json``), MathJax 2.7.9 from the pip package ``jupyter-server-mathjax``. So the
site opens from a USB stick in a lecture hall without network, math typeset and widgets drawn
from their saved state (a saved widget shows its state; moving it computes nothing: that needs
a kernel, see ``make present``).

``python -m mllib.site --metadata`` writes the notebook metadata every course notebook carries
(``course_metadata``: the kernel's name as JupyterLab writes it, one ``language_info``, and on
lectures the slide marks that jupyterlab-deck and reveal.js read) into the lectures and solutions;
``make labs`` then carries it to the labs.
"""
import base64
import copy
import html
import json
import math
import os
import pathlib
import re
import shutil
import sys
from importlib.metadata import files, version

import jinja2
import jupyter_server_mathjax
import nbformat
from nbconvert import HTMLExporter, SlidesExporter

ROOT = pathlib.Path(__file__).resolve().parents[1]
NODE_MODULES = ROOT / "build" / "node_modules"
MATHJAX = pathlib.Path(jupyter_server_mathjax.__file__).parent / "static"
STATIC = "static"
# The kernel as JupyterLab names it when it saves a notebook.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
# What each npm package contributes to OUT/static: (package, file or folder in it, name in static/).
NPM_FILES = [
    ("requirejs", "require.js", "require.js"),
    ("jquery", "dist/jquery.min.js", "jquery.min.js"),
    ("@jupyter-widgets/html-manager", "dist", "html-manager"),  # embed-amd.js and its fonts
    ("reveal.js", "dist/reveal.js", "reveal.js/dist/reveal.js"),
    ("reveal.js", "dist/reveal.css", "reveal.js/dist/reveal.css"),
    # The white theme: its fonts ship with reveal.js (other themes load theirs from Google Fonts).
    ("reveal.js", "dist/theme/white.css", "reveal.js/dist/theme/white.css"),
    ("reveal.js", "dist/theme/fonts/source-sans-pro", "reveal.js/dist/theme/fonts/source-sans-pro"),
    ("reveal.js", "plugin/notes", "reveal.js/plugin/notes"),
]
LICENCE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "dist/embed.js.LICENSE.txt")
# nbconvert's template (lab or reveal) with MathJax told to use the web fonts that
# jupyter-server-mathjax ships (STIX-Web, as Jupyter's classic notebook did), neither the fast
# preview nor the hidden MathML for screen readers asking for TeX fonts it does not ship, and
# without the Mermaid loader, a module from a CDN (the course draws no Mermaid diagram).
OFFLINE_TEMPLATE = """{%- extends 'TEMPLATE/index.html.j2' -%}
{%- block html_head_js_mathjax -%}
{{ super() }}
<script type="text/x-mathjax-config">
MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null},
                  "fast-preview": {disabled: true},
                  styles: {".MJX_Assistive_MathML *": {"font-family": "inherit !important"}}});
</script>
{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
SKIPPED = shutil.ignore_patterns("*.map", "embed.js", "libembed-amd.js")  # not loaded by the pages


def title(notebook: nbformat.NotebookNode) -> str:
    """The first level-1 heading of a notebook."""
    for cell in notebook.cells:
        for line in cell.source.splitlines() if cell.cell_type == "markdown" else ():
            if line.startswith("# "):
                return line[2:].strip()
    raise ValueError("a course notebook starts with a markdown cell holding its '# title'")


# How much of a slide the cells may fill, by ``estimated_height``: at 1280x720 jupyterlab-deck
# shows 700 px of cells (100vh less the notebook's padding), and the estimate errs by up to about
# 50 px a cell; filled to 640 px by estimate, the tallest slide of the lectures measured 653 px.
SLIDE_BUDGET = 640


def slide_metadata(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Mark cells for slides (jupyterlab-deck, reveal.js): a '#' or '##' heading opens a slide, a
    '###' heading a subslide, the parameters cell (the first code cell) is skipped. What follows
    a heading continues its slide while the slide fits a 1280x720 screen (``estimated_height``);
    the first cell that would not fit opens the next slide, taking along the markdown cells right
    before it (the text that introduces a figure stays with it). A slide, not a subslide:
    jupyterlab-deck 0.2 links a subslide that directly follows a one-cell subslide to the slide
    above them, so "down" skips the one-cell subslide. Other cells carry no slide type
    (jupyterlab-deck 0.2 hides a cell marked '-', nbformat's other spelling of "continue")."""
    first_code = next(i for i, c in enumerate(notebook.cells) if c.cell_type == "code")
    state = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    kinds: dict[int, str] = {first_code: "skip"}
    group: list[int] = []  # the cells of the (sub)slide being filled

    def height(cells: list[int]) -> float:
        return sum(estimated_height(notebook.cells[i], state) for i in cells)

    for index, cell in enumerate(notebook.cells):
        if index == first_code:
            continue
        heading = cell.source.lstrip().split(" ", 1)[0] if cell.cell_type == "markdown" else ""
        kind = {"#": "slide", "##": "slide", "###": "subslide"}.get(heading)
        if kind or not group:
            group = [index]
            if kind:
                kinds[index] = kind
            continue
        if height(group + [index]) <= SLIDE_BUDGET:
            group.append(index)
            continue
        # Too tall: open a slide at the markdown run that introduces this cell, if they fit.
        start = len(group)
        while start > 1 and notebook.cells[group[start - 1]].cell_type == "markdown":
            start -= 1
        if start == len(group) or height(group[start:] + [index]) > SLIDE_BUDGET:
            start = len(group)
        group = group[start:] + [index]
        kinds[group[0]] = "slide"
    for index, cell in enumerate(notebook.cells):
        if kinds.get(index):
            cell.metadata["slideshow"] = {"slide_type": kinds[index]}
        else:
            cell.metadata.pop("slideshow", None)
    return notebook


WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# Output width while presenting at 1280x720 (a wider figure is scaled down), and characters per
# line of markdown text and of printed output before they wrap.
OUTPUT_WIDTH, TEXT_CHARACTERS, OUTPUT_CHARACTERS = 1135, 150, 130


def estimated_height(cell: nbformat.NotebookNode, widget_state: dict) -> float:
    """A cell's height in pixels while presenting at 1280x720 with JupyterLab's default theme:
    a linear model fitted to the heights Chromium measured on the lectures (tests/test_browser.py),
    within about 50 px a cell. ``widget_state`` is the notebook's saved widget state."""
    if cell.cell_type == "markdown":
        return markdown_height(cell.source)
    return 7 + 18 * len(cell.source.splitlines()) + outputs_height(cell.get("outputs", []), widget_state)


def markdown_height(source: str) -> float:
    """Headings, table rows, lines of display math, and paragraphs and list items wrapped at
    TEXT_CHARACTERS (links counted by their text; what a closed <details> holds is hidden)."""
    height, blocks, in_math, in_details = -9.0, [], False, False
    for line in (line.strip() for line in source.splitlines()):
        if in_details or line.startswith("<details"):
            height += 22 if line.startswith("<details") else 0  # the summary line
            in_details = not line.startswith("</details")
        elif in_math or line.startswith("$$"):
            height += 0 if line == "$$" else 19
            in_math = in_math != (line.count("$$") % 2 == 1)  # "$$", "$$ x" or "x $$" opens or closes
        elif line.startswith(("#", "|")):
            heading = {"#": 65, "##": 57, "###": 48}.get(line.split(" ", 1)[0], 0)
            height += heading or (0 if set(line) <= set("|-: ") else 34)  # a table's rule has no height
        elif line:
            item = re.match(r"([-*]|\d+\.) ", line)
            if item or not blocks or blocks[-1] is None:
                height += 6 if item else 22
                blocks.append([])
            blocks[-1].append(re.sub(r"[*_`]", "", re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", line)))
            continue
        blocks.append(None)  # a blank line, a heading or a table ends a paragraph
    lines = sum(math.ceil(len(" ".join(block)) / TEXT_CHARACTERS) for block in blocks if block)
    return height + 20.8 * lines


def outputs_height(outputs: list, widget_state: dict) -> float:
    """Printed lines, figures (scaled to OUTPUT_WIDTH), HTML lines (a displayed source), and a
    widget's controls and the figures its saved Output widgets hold."""
    height = 0.0
    for output in outputs:
        data = output.get("data", {})
        height += 9
        if output.get("output_type") == "stream":
            height += 16.7 * wrapped_lines(output["text"])
        elif WIDGET_VIEW in data:
            height += widget_height(data[WIDGET_VIEW]["model_id"], widget_state)
        elif "image/png" in data:
            width, tall = png_size(data["image/png"])
            height += tall * min(1.0, OUTPUT_WIDTH / width)
        elif "text/html" in data:
            height += 16.8 * len(re.sub(r"(?s)<style.*?</style>", "", data["text/html"]).strip().split("\n"))
        elif "text/plain" in data:
            height += 16.7 * wrapped_lines(data["text/plain"])
    return height


def widget_height(model_id: str, state: dict) -> float:
    """18 px a control, what the Output widgets hold, and 356 px for an Image widget (its picture
    is not saved), over the widget tree below ``model_id``."""
    height, seen, stack = 0.0, set(), [model_id]
    while stack:
        model = stack.pop()
        if model in seen or model not in state:
            continue
        seen.add(model)
        name, values = state[model]["model_name"], state[model]["state"]
        stack += re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(values))
        if name == "OutputModel":
            height += outputs_height(values.get("outputs", []), state) - 9 * len(values.get("outputs", []))
        elif name == "ImageModel":
            height += 356
        elif not re.search(r"Layout|Style|Box", name):
            height += 18
    return height


def wrapped_lines(text: str) -> int:
    return sum(max(1, math.ceil(len(line) / OUTPUT_CHARACTERS)) for line in text.rstrip("\n").split("\n"))


def png_size(encoded: str) -> tuple[int, int]:
    """Width and height of a base64 PNG, from its header."""
    header = base64.b64decode(encoded[:44])
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def course_metadata(notebook: nbformat.NotebookNode, language_info: dict, slides: bool) -> nbformat.NotebookNode:
    """The notebook-level metadata every course notebook carries: the kernel as JupyterLab names
    it, one ``language_info`` for the whole course, and on a lecture (``slides``) its slide marks."""
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    notebook.metadata["language_info"] = copy.deepcopy(language_info)
    return slide_metadata(notebook) if slides else notebook


def apply_course_metadata(root: pathlib.Path = ROOT) -> list[pathlib.Path]:
    """Write ``course_metadata`` into every lecture and solution under ``root`` that lacks it (the
    labs take it from their solutions with ``make labs``); return the notebooks changed.
    Running it twice changes nothing."""
    lectures = sorted((root / "lectures").glob("*.ipynb"))
    language_info = nbformat.read(lectures[0], as_version=4).metadata["language_info"]
    changed = []
    for path in lectures + sorted((root / "solutions").glob("*.ipynb")):
        before = path.read_text()
        notebook = course_metadata(nbformat.read(path, as_version=4), language_info, path.parent.name == "lectures")
        after = nbformat.writes(notebook) + "\n"
        if after != before:
            path.write_text(after)
            changed.append(path)
    return changed


def copy_assets(static: pathlib.Path, node_modules: pathlib.Path = NODE_MODULES) -> None:
    """Copy every script, stylesheet and font the pages load into ``static``, and each
    package's licence into ``static/licenses`` (named in ``static/licenses/README.md``).

    Raises:
        FileNotFoundError: an npm package is missing (``make site`` installs them with npm).
    """
    static.mkdir(parents=True, exist_ok=True)
    licences = static / "licenses"
    licences.mkdir(exist_ok=True)
    lines = ["# Third-party files in this folder\n"]
    for package in dict.fromkeys(name for name, _, _ in NPM_FILES):
        folder = node_modules / package
        if not (folder / "package.json").exists():
            raise FileNotFoundError(f"{folder} is missing: `make site` installs it with npm (assets/package.json)")
        meta = json.loads((folder / "package.json").read_text())
        lines.append(f"- {package} {meta['version']}, licence {meta.get('license')}")
        for name in LICENCE_FILES:
            if (folder / name).exists():
                shutil.copy(folder / name, licences / f"{package.replace('/', '__')}.{pathlib.Path(name).name}")
    for package, source, target in NPM_FILES:
        copy_into(static / target, node_modules / package / source)
    copy_into(static / "mathjax", MATHJAX)
    shutil.copy(MATHJAX / "LICENSE", licences / "mathjax.LICENSE")
    # The widget manager's npm package ships no licence file: its project's, from the ipywidgets wheel.
    ipywidgets_licence = next(f for f in files("ipywidgets") if f.name == "LICENSE")
    shutil.copy(ipywidgets_licence.locate(), licences / "@jupyter-widgets__html-manager.LICENSE")
    lines.append(f"- MathJax from the pip package jupyter-server-mathjax {version('jupyter-server-mathjax')}, licence Apache-2.0")
    (licences / "README.md").write_text("\n".join(lines) + "\n")


def copy_into(target: pathlib.Path, source: pathlib.Path) -> None:
    """Copy a file or a folder (without what the pages never load) to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, ignore=SKIPPED, dirs_exist_ok=True)
    else:
        shutil.copy(source, target)


def offline(static: str, template: str) -> dict:
    """nbconvert's settings for its ``template`` (lab, reveal) that load every script from
    ``static`` (a URL relative to the page)."""
    return {
        "require_js_url": f"{static}/require.js",
        "widget_renderer_url": f"{static}/html-manager/embed-amd.js",
        # jupyter-server-mathjax ships the HTML-CSS and SVG outputs, with this combined config.
        "mathjax_url": f"{static}/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe",
        "extra_loaders": [jinja2.DictLoader({"offline.html.j2": OFFLINE_TEMPLATE.replace("TEMPLATE", template)})],
        "template_file": "offline.html.j2",
    }


def page_exporter() -> HTMLExporter:
    return HTMLExporter(embed_images=True, **offline(f"../{STATIC}", "lab"))


def slides_exporter() -> SlidesExporter:
    """reveal.js slides of a lecture, one slide per heading (``slide_metadata``)."""
    return SlidesExporter(
        embed_images=True, reveal_url_prefix=f"../{STATIC}/reveal.js", reveal_theme="white",
        jquery_url=f"../{STATIC}/jquery.min.js", **offline(f"../{STATIC}", "reveal"),
    )  # fmt: skip


def build_site(out: pathlib.Path, node_modules: pathlib.Path = NODE_MODULES) -> list[pathlib.Path]:
    """Write every lecture and solution as an HTML page, every lecture as slides, the index and
    the static assets under ``out``; return the pages, the index first."""
    copy_assets(out / STATIC, node_modules)
    exporters = {"lectures": page_exporter(), "slides": slides_exporter(), "solutions": page_exporter()}
    rows, pages = [], []
    for lecture in sorted((ROOT / "lectures").glob("*.ipynb")):
        links = []
        for folder, exporter in exporters.items():
            source = ROOT / ("lectures" if folder == "slides" else folder) / lecture.name
            if not source.exists():
                continue
            body, _ = exporter.from_notebook_node(nbformat.read(source, as_version=4))
            page = out / folder / f"{lecture.stem}.html"
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(body)
            pages.append(page)
            links.append(f'<a href="{folder}/{page.name}">{folder.rstrip("s")}</a>')
        heading = html.escape(title(nbformat.read(lecture, as_version=4)))
        rows.append(f"<li>{heading}: {' | '.join(links)}</li>")
    index = out / "index.html"
    index.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Collaborative and decentralized "
        "machine learning</title></head><body><h1>Collaborative and decentralized machine learning</h1>"
        f"<ol start='0'>{''.join(rows)}</ol></body></html>\n"
    )
    return [index, *pages]


if __name__ == "__main__":
    if sys.argv[1:] == ["--metadata"]:
        for path in apply_course_metadata():
            print(f"metadata written: {path.relative_to(ROOT)}")
    elif len(sys.argv) == 2:
        build_site(pathlib.Path(sys.argv[1]))
        print(f"Open {os.path.join(sys.argv[1], 'index.html')} in a browser; it needs no network.")
    else:
        sys.exit("usage: python -m mllib.site OUT | python -m mllib.site --metadata")
