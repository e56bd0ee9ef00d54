"""`make site` and `make slides`: one HTML file per lecture, figures embedded, titles shown."""
import re
import shutil
import subprocess

import nbformat
import pytest

from mllib.site import build_site, slide_metadata, title
from notebooks import LECTURES, ROOT, SOLUTIONS, read


def figures(path) -> int:
    return sum("image/png" in o.get("data", {}) for c in read(path).cells if c.cell_type == "code" for o in c.outputs)


def test_site_has_a_page_per_notebook_with_its_title_and_figures(tmp_path):
    pages = build_site(tmp_path)
    index = (tmp_path / "index.html").read_text()
    for notebook in LECTURES + SOLUTIONS:
        page = tmp_path / notebook.parent.name / f"{notebook.stem}.html"
        assert page in pages
        text = page.read_text()
        assert title(read(notebook)).split(":")[0] in text
        assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', text)) == figures(notebook)
        assert f'href="{notebook.parent.name}/{page.name}"' in index


@pytest.mark.skipif(shutil.which("npm") is None, reason="make slides needs npm for reveal.js")
def test_make_slides_writes_offline_reveal_slides():
    subprocess.run(["make", "--no-print-directory", "slides"], cwd=ROOT, check=True, capture_output=True)
    for lecture in LECTURES:
        page = ROOT / "build" / "slides" / f"{lecture.stem}.slides.html"
        text = page.read_text()
        assert title(read(lecture)).split(":")[0] in text
        for script in ["reveal.js/dist/reveal.js", "requirejs/require.js", "jquery/dist/jquery.min.js", "mathjax/MathJax.js"]:
            assert f"../node_modules/{script}" in text
            assert (page.parent / "../node_modules" / script).resolve().exists()
        assert not re.search(r"(src|href)=\"https://\S*(reveal|require|jquery|mathjax)", text, re.I)


@pytest.mark.parametrize("lecture", LECTURES, ids=lambda p: p.name)
def test_lectures_carry_their_slide_metadata(lecture):
    notebook = read(lecture)
    expected = slide_metadata(nbformat.from_dict(notebook))
    assert [c.metadata.get("slideshow") for c in notebook.cells] == [c.metadata["slideshow"] for c in expected.cells]
