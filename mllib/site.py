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
import copy
import html
import json
import os
import pathlib
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


def slide_metadata(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Mark cells for slides (jupyterlab-deck, reveal.js): a '#' or '##' heading opens a slide, a
    '###' heading a subslide, the parameters cell (the first code cell) is skipped, and every
    other cell carries no slide type, so it continues the slide it follows (jupyterlab-deck 0.2
    hides a cell marked '-', nbformat's other spelling of "continue")."""
    first_code = next(i for i, c in enumerate(notebook.cells) if c.cell_type == "code")
    for index, cell in enumerate(notebook.cells):
        heading = cell.source.lstrip().split(" ", 1)[0] if cell.cell_type == "markdown" else ""
        kind = "skip" if index == first_code else {"#": "slide", "##": "slide", "###": "subslide"}.get(heading)
        if kind:
            cell.metadata["slideshow"] = {"slide_type": kind}
        else:
            cell.metadata.pop("slideshow", None)
    return notebook


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
