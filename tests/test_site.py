"""`make site`: one page per lecture and solution and slides per lecture, figures embedded,
titles shown, and every script, stylesheet and font served from the site's own folder.

tests/test_browser.py loads the site with every other host blocked."""
import json
import os
import re

import nbformat
import pytest

from mllib.site import KERNELSPEC, NODE_MODULES, build_site, course_metadata, slide_metadata, title
from notebooks import LABS, LECTURES, SOLUTIONS, read

# What a page loads: scripts, stylesheets, images, module imports (not the links a reader follows).
LOADED = re.compile(r"<script[^>]*\ssrc=\"([^\"]*)\"|<link[^>]*\shref=\"([^\"]*)\"|<img[^>]*\ssrc=\"([^\"]*)\"|import\(\"([^\"]*)\"")

missing = None if (NODE_MODULES / ".installed").exists() else "build/node_modules is missing (make site installs it with npm)"
if missing and os.environ.get("CI") == "true":
    raise RuntimeError(f"the site tests cannot run in CI: {missing}")
needs_npm = pytest.mark.skipif(missing is not None, reason=f"site test skipped: {missing}")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    return out, build_site(out)


def figures(path) -> int:
    return sum("image/png" in o.get("data", {}) for c in read(path).cells if c.cell_type == "code" for o in c.outputs)


def loaded(text: str) -> list[str]:
    return [next(group for group in match if group) for match in LOADED.findall(text)]


@needs_npm
def test_site_has_a_page_per_notebook_and_slides_per_lecture_with_titles_and_figures(site):
    out, pages = site
    index = (out / "index.html").read_text()
    for notebook, folder in [(n, n.parent.name) for n in LECTURES + SOLUTIONS] + [(n, "slides") for n in LECTURES]:
        page = out / folder / f"{notebook.stem}.html"
        assert page in pages
        text = page.read_text()
        assert title(read(notebook)).split(":")[0] in text
        assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', text)) == figures(notebook)
        assert f'href="{folder}/{page.name}"' in index


@needs_npm
def test_every_page_loads_only_files_of_the_site(site):
    out, pages = site
    for page in pages[1:]:  # the index loads nothing
        urls = loaded(page.read_text())
        assert urls, f"{page.name} loads nothing: the pattern missed nbconvert's tags"
        for url in urls:
            assert not re.match(r"[a-z]+://|//", url), f"{page.relative_to(out)} loads {url}"
            if not url.startswith("data:"):
                assert (page.parent / url.split("?")[0]).resolve().is_file(), f"{page.relative_to(out)}: {url} is missing"
    # The widget manager, require.js and MathJax, from the build folder.
    lecture = (out / "lectures" / "00_introduction.html").read_text()
    for script in ["../static/require.js", "../static/html-manager/embed-amd.js", "../static/mathjax/MathJax.js"]:
        assert script in lecture


@needs_npm
def test_stylesheets_import_nothing_from_another_host(site):
    out, _ = site
    sheets = list((out / "static").rglob("*.css"))
    assert sheets
    for sheet in sheets:
        assert not re.search(r"(url\(|@import)\s*['\"]?(https?:)?//", sheet.read_text()), sheet


@needs_npm
def test_the_site_names_the_licence_of_every_third_party_file(site):
    out, _ = site
    licences = out / "static" / "licenses"
    listing = (licences / "README.md").read_text()
    for package in ["requirejs", "jquery", "@jupyter-widgets/html-manager", "reveal.js", "jupyter-server-mathjax"]:
        assert package in listing
    assert len(list(licences.glob("*LICENSE*"))) >= 4


def test_slide_metadata_opens_a_slide_at_each_heading_and_skips_the_parameters():
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Title\ntext"), nbformat.v4.new_code_cell("N = 3"),
        nbformat.v4.new_markdown_cell("### Detail"), nbformat.v4.new_code_cell("print(N)"),
        nbformat.v4.new_markdown_cell("## Next"),
    ])  # fmt: skip
    notebook.cells[3].metadata["slideshow"] = {"slide_type": "-"}
    marks = [c.metadata.get("slideshow", {}).get("slide_type") for c in slide_metadata(notebook).cells]
    assert marks == ["slide", "skip", "subslide", None, "slide"]
    assert slide_metadata(notebook) == notebook  # idempotent


def test_slide_metadata_opens_a_slide_where_the_screen_is_full_with_the_text_that_introduces_it():
    printed = [nbformat.v4.new_output("stream", name="stdout", text="a line\n" * 25)]  # about 450 px
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("## Section"), nbformat.v4.new_code_cell("N = 3"),
        nbformat.v4.new_markdown_cell("First."), nbformat.v4.new_code_cell("print(N)", outputs=printed),
        nbformat.v4.new_markdown_cell("Second."), nbformat.v4.new_code_cell("print(N)", outputs=printed),
        nbformat.v4.new_code_cell("print(N)", outputs=printed * 3),  # taller than the screen alone
        nbformat.v4.new_markdown_cell("Short."),  # fits no slide beside it: a slide of its own
    ])  # fmt: skip
    marks = [c.metadata.get("slideshow", {}).get("slide_type") for c in slide_metadata(notebook).cells]
    assert marks == ["slide", "skip", None, None, "slide", None, "slide", "slide"]


def test_estimated_height_counts_lines_and_figures_scaled_to_the_screen():
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mllib.site import OUTPUT_WIDTH, estimated_height

    def figure(width: float) -> nbformat.NotebookNode:
        buffer = io.BytesIO()
        plt.figure(figsize=(width, 3), dpi=100).savefig(buffer, format="png")
        plt.close("all")
        data = {"image/png": base64.b64encode(buffer.getvalue()).decode(), "text/plain": "<Figure>"}
        return nbformat.v4.new_code_cell("plot()", outputs=[nbformat.v4.new_output("display_data", data=data)])

    narrow, wide = estimated_height(figure(4), {}), estimated_height(figure(2 * OUTPUT_WIDTH / 100), {})
    assert narrow == pytest.approx(7 + 18 + 9 + 300) and wide == pytest.approx(7 + 18 + 9 + 150)
    text = nbformat.v4.new_markdown_cell("## A heading\n" + "word " * 60 + "\n\n| a | b |\n|---|---|\n| 1 | 2 |")
    assert 150 < estimated_height(text, {}) < 250  # a heading, two lines of text, a table of two rows


def test_every_notebook_carries_the_course_metadata():
    """Applied by `python -m mllib.site --metadata` then `make labs` (which copies it to the labs)."""
    reference = read(LECTURES[0]).metadata["language_info"]
    for path in LECTURES + SOLUTIONS + LABS:
        notebook = read(path)
        assert notebook.metadata.get("kernelspec") == KERNELSPEC, path.name
        assert notebook.metadata.get("language_info") == reference, path.name
        if path in LECTURES:
            expected = course_metadata(nbformat.from_dict(json.loads(json.dumps(notebook))), reference, slides=True)
            assert [c.metadata for c in notebook.cells] == [c.metadata for c in expected.cells], path.name
