"""Render the course to static HTML: ``python -m mllib.site OUT`` (``make site``), and slides.

The site has one page per lecture and per solution, with outputs and figures embedded, and an
index that follows the course map. ``python -m mllib.site OUT --slides NODE_MODULES`` writes reveal.js
slides of the lectures instead, with reveal.js and its helpers from local npm packages (no CDN).
"""
import html
import os
import pathlib
import sys

import nbformat
from nbconvert import HTMLExporter, SlidesExporter

ROOT = pathlib.Path(__file__).resolve().parents[1]


def title(notebook: nbformat.NotebookNode) -> str:
    """The first level-1 heading of a notebook."""
    for cell in notebook.cells:
        for line in cell.source.splitlines() if cell.cell_type == "markdown" else ():
            if line.startswith("# "):
                return line[2:].strip()
    raise ValueError("a course notebook starts with a markdown cell holding its '# title'")


def slide_metadata(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Mark cells for slides (RISE, reveal.js): a '#' or '##' heading opens a slide, a '###'
    heading a subslide, the parameters cell (the first code cell) is skipped, and everything
    else continues the slide it follows."""
    first_code = next(i for i, c in enumerate(notebook.cells) if c.cell_type == "code")
    for index, cell in enumerate(notebook.cells):
        heading = cell.source.lstrip().split(" ", 1)[0] if cell.cell_type == "markdown" else ""
        kind = {"#": "slide", "##": "slide", "###": "subslide"}.get(heading, "-")
        cell.metadata["slideshow"] = {"slide_type": "skip" if index == first_code else kind}
    return notebook


def build_site(out: pathlib.Path) -> list[pathlib.Path]:
    """Write every lecture and solution as HTML under ``out`` and an index page; return the pages."""
    exporter = HTMLExporter(embed_images=True)
    rows, pages = [], []
    for lecture in sorted((ROOT / "lectures").glob("*.ipynb")):
        links = []
        for folder in ("lectures", "solutions"):
            source = ROOT / folder / lecture.name
            if not source.exists():
                continue
            notebook = nbformat.read(source, as_version=4)
            body, _ = exporter.from_notebook_node(notebook)
            page = out / folder / f"{lecture.stem}.html"
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(body)
            pages.append(page)
            links.append(f'<a href="{folder}/{page.name}">{folder[:-1]}</a>')
        heading = html.escape(title(nbformat.read(lecture, as_version=4)))
        rows.append(f"<li>{heading}: {' | '.join(links)}</li>")
    index = out / "index.html"
    index.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Collaborative and decentralized "
        "machine learning</title></head><body><h1>Collaborative and decentralized machine learning</h1>"
        f"<ol start='0'>{''.join(rows)}</ol></body></html>\n"
    )
    return [index, *pages]


def build_slides(out: pathlib.Path, node_modules: pathlib.Path) -> list[pathlib.Path]:
    """Write each lecture as reveal.js slides under ``out``; reveal.js, require.js, jQuery and
    MathJax load from the npm packages in ``node_modules``, so the slides work offline."""
    out.mkdir(parents=True, exist_ok=True)
    local = pathlib.Path(os.path.relpath(pathlib.Path(node_modules).resolve(), out.resolve())).as_posix()
    exporter = SlidesExporter(
        reveal_url_prefix=f"{local}/reveal.js",
        require_js_url=f"{local}/requirejs/require.js",
        jquery_url=f"{local}/jquery/dist/jquery.min.js",
        mathjax_url=f"{local}/mathjax/MathJax.js?config=TeX-AMS_CHTML-full,Safe",
        embed_images=True,
    )
    pages = []
    for lecture in sorted((ROOT / "lectures").glob("*.ipynb")):
        body, _ = exporter.from_notebook_node(nbformat.read(lecture, as_version=4))
        page = out / f"{lecture.stem}.slides.html"
        page.write_text(body)
        pages.append(page)
    return pages


if __name__ == "__main__":
    if len(sys.argv) == 2:
        build_site(pathlib.Path(sys.argv[1]))
    elif len(sys.argv) == 4 and sys.argv[2] == "--slides":
        build_slides(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[3]))
    else:
        sys.exit("usage: python -m mllib.site OUT [--slides NODE_MODULES_DIR]")
