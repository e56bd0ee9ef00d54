"""The reading lists and discussion questions (issue #21): one bibliography, lectures in sync with it."""
import ast
import collections
import json
import re

import pytest

from mllib import readings
from notebooks import ROOT

BIBLIOGRAPHY = readings.load()
LECTURES = [f"{n:02d}" for n in range(1, 11)]
ARXIV, DOI, URL = re.compile(r"\d{4}\.\d{4,5}"), re.compile(r"10\.\d{4,9}/\S+"), re.compile(r"https://[\w.-]+\.\w+/\S*")
CITED = re.compile(r"(?i)(?:arxiv[: ]*|arxiv\.org/abs/)(\d{4}\.\d{4,5})|(?:doi[: ]*|doi\.org/)(10\.\d{4,9}/[\w./-]*\w)")
SOURCES = {path: path.read_text() for path in sorted((ROOT / "mllib").rglob("*.py"))}
DOCSTRINGS = [doc for text in SOURCES.values() for node in ast.walk(ast.parse(text))
              if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
              and (doc := ast.get_docstring(node))]  # fmt: skip


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
    surveys = [e for e in lecture["reading"] if BIBLIOGRAPHY["papers"][e["paper"]].get("survey")]
    assert 1 <= len(surveys) <= 2, "one or two surveys per lecture"
    assert all(e["paper"] in BIBLIOGRAPHY["papers"] for e in lecture["reading"])
    assert 2 <= len(lecture["questions"]) <= 3 and all(q["q"] and q["a"] for q in lecture["questions"])


def test_no_paper_is_recommended_by_more_than_two_lectures_and_every_paper_is_used():
    uses = collections.Counter(e["paper"] for lecture in BIBLIOGRAPHY["lectures"].values() for e in lecture["reading"])
    assert max(uses.values()) <= 2 and set(uses) == set(BIBLIOGRAPHY["papers"])


def identifier(paper: dict) -> str | None:
    """How mllib cites a paper: arXiv:<id>, else doi:<doi> (a paper with only a URL has neither)."""
    return f"arXiv:{paper['arxiv']}" if "arxiv" in paper else f"doi:{paper['doi']}" if "doi" in paper else None


RUN = sorted({e["paper"] for lecture in BIBLIOGRAPHY["lectures"].values() for e in lecture["reading"] if e.get("runs")})


@pytest.mark.parametrize("key", [key for key in RUN if identifier(BIBLIOGRAPHY["papers"][key])])
def test_every_paper_a_lecture_runs_is_cited_with_its_id_in_a_docstring(key):
    paper = BIBLIOGRAPHY["papers"][key]
    cited = {m[0] for doc in DOCSTRINGS for m in CITED.finditer(doc)}
    assert identifier(paper) in cited, f"no docstring in mllib cites {paper['cite']} as {identifier(paper)}"


def test_every_id_in_mllib_is_a_bibliography_papers_in_a_citation_of_its_first_author():
    papers = {identifier(p): p for p in BIBLIOGRAPHY["papers"].values() if identifier(p)}
    for path, text in SOURCES.items():
        for m in CITED.finditer(text):
            where = f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m[0]}"
            assert m[0] in papers, f"{where} is not arXiv:<id> or doi:<doi> of a paper in lectures/readings.toml"
            author = re.split(r",| and | \(", papers[m[0]]["cite"])[0]
            before = text[max(0, m.start() - 200):m.start()]  # the citation the ID sits in
            assert re.search(rf"\b{re.escape(author)}\b", before), f"{where} is by {author}, who is not named before it"


@pytest.mark.parametrize("number", LECTURES)
def test_the_lecture_ends_with_the_generated_cells(number):
    cells = json.loads((ROOT / "lectures" / f"{stem(number)}.ipynb").read_text())["cells"]
    assert cells[-2:] == readings.cells(BIBLIOGRAPHY, stem(number)), "run python -m mllib.readings"
