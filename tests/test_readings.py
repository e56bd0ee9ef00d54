"""The reading lists and discussion questions (issue #21): one bibliography, lectures in sync with it."""
import collections
import json
import re

import pytest

from mllib import readings
from notebooks import ROOT

BIBLIOGRAPHY = readings.load()
LECTURES = [f"{n:02d}" for n in range(1, 11)]
ARXIV, DOI, URL = re.compile(r"\d{4}\.\d{4,5}"), re.compile(r"10\.\d{4,9}/\S+"), re.compile(r"https://[\w.-]+\.\w+/\S*")


def stem(number: str) -> str:
    return next(p.stem for p in (ROOT / "lectures").glob(f"{number}_*.ipynb"))


@pytest.mark.parametrize("key", list(BIBLIOGRAPHY["papers"]))
def test_every_paper_has_an_author_year_title_and_a_well_formed_link(key):
    paper = BIBLIOGRAPHY["papers"][key]
    assert re.search(r"\(\d{4}\)$", paper["cite"]) and paper["title"], paper
    assert ARXIV.fullmatch(paper.get("arxiv", "0000.0000")) and DOI.fullmatch(paper.get("doi", "10.0000/x"))
    assert ("arxiv" in paper or "doi" in paper) or URL.fullmatch(paper["url"]), paper


@pytest.mark.parametrize("number", LECTURES)
def test_each_lecture_recommends_what_it_runs(number):
    lecture = BIBLIOGRAPHY["lectures"][stem(number)]
    assert len(lecture["reading"]) >= 4
    ran = [e for e in lecture["reading"] if e.get("runs")]
    assert len(ran) >= 3 and all(len(e["read"]) > 20 for e in lecture["reading"])
    assert all(e["paper"] in BIBLIOGRAPHY["papers"] for e in lecture["reading"])
    assert 2 <= len(lecture["questions"]) <= 3 and all(q["q"] and q["a"] for q in lecture["questions"])


def test_no_paper_is_recommended_by_more_than_two_lectures_and_every_paper_is_used():
    uses = collections.Counter(e["paper"] for lecture in BIBLIOGRAPHY["lectures"].values() for e in lecture["reading"])
    assert max(uses.values()) <= 2 and set(uses) == set(BIBLIOGRAPHY["papers"])


def test_arxiv_ids_in_the_docstrings_agree_with_the_bibliography():
    known = {p["arxiv"] for p in BIBLIOGRAPHY["papers"].values() if "arxiv" in p}
    cited = {m for path in (ROOT / "mllib").rglob("*.py")
             for m in re.findall(r"arXiv[: ]*(\d{4}\.\d{4,5})|arxiv\.org/abs/(\d{4}\.\d{4,5})", path.read_text())}  # fmt: skip
    assert {a or b for a, b in cited} <= known


@pytest.mark.parametrize("number", LECTURES)
def test_the_lecture_ends_with_the_generated_cells(number):
    cells = json.loads((ROOT / "lectures" / f"{stem(number)}.ipynb").read_text())["cells"]
    assert cells[-2:] == readings.cells(BIBLIOGRAPHY, stem(number)), "run python -m mllib.readings"
