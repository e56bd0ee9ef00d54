"""Each lecture's "Further reading" and "Questions to think about", from one bibliography.

``lectures/readings.toml`` lists every paper once (authors and year, title, an arXiv ID, a DOI
or a URL; ``survey = true`` for a survey, one or two per lecture) and, per lecture, the papers it recommends (``runs = true`` for those whose method or
result the lecture runs) with one sentence on what to read there, and its discussion questions
with model answers for the instructor. ``python -m mllib.readings`` writes the two Markdown
cells at the end of each lecture (the answers in a collapsed ``<details>`` block), replacing the
cells it wrote before (they carry the tag ``readings``); it runs no code, so outputs stay.
"""
import json
import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIBLIOGRAPHY = ROOT / "lectures" / "readings.toml"
TAG = "readings"


def load(path: pathlib.Path = BIBLIOGRAPHY) -> dict:
    """The bibliography: {"papers": {key: {...}}, "lectures": {stem: {"reading": [...], "questions": [...]}}}."""
    with open(path, "rb") as file:
        return tomllib.load(file)


def link(paper: dict) -> str:
    """The paper's address: arXiv, else its DOI, else its URL."""
    if "arxiv" in paper:
        return f"https://arxiv.org/abs/{paper['arxiv']}"
    if "doi" in paper:
        return f"https://doi.org/{paper['doi']}"
    return paper["url"]


def reading_cell(bibliography: dict, stem: str) -> str:
    """The Markdown of a lecture's reading list: the papers it runs first, then the others."""
    entries = sorted(bibliography["lectures"][stem]["reading"], key=lambda e: not e.get("runs", False))
    lines = ["## Further reading", ""]
    for entry in entries:
        paper = bibliography["papers"][entry["paper"]]
        tag = " *(run in this lecture)*" if entry.get("runs") else " *(survey)*" if paper.get("survey") else ""
        lines.append(f"- {paper['cite']}, [{paper['title']}]({link(paper)}).{tag} {entry['read']}")
    return "\n".join(lines)


def questions_cell(bibliography: dict, stem: str) -> str:
    """The Markdown of a lecture's discussion questions, the model answers folded away."""
    questions = bibliography["lectures"][stem]["questions"]
    lines = ["## Questions to think about", ""]
    lines += [f"{number}. {q['q']}" for number, q in enumerate(questions, 1)]
    lines += ["", "<details><summary>Model answers, for the instructor</summary>", ""]
    lines += [f"{number}. {q['a']}" for number, q in enumerate(questions, 1)]
    lines += ["", "</details>"]
    return "\n".join(lines)


def cells(bibliography: dict, stem: str) -> list[dict]:
    """The two cells that end lecture ``stem`` (nbformat 4 Markdown cells, tagged ``readings``)."""
    texts = {"further-reading": reading_cell(bibliography, stem), "questions": questions_cell(bibliography, stem)}
    return [{"cell_type": "markdown", "id": name, "metadata": {"slideshow": {"slide_type": "slide"}, "tags": [TAG]},
             "source": text.splitlines(keepends=True)} for name, text in texts.items()]  # fmt: skip


def write(notebook: pathlib.Path, bibliography: dict) -> bool:
    """Replace the lecture's ``readings`` cells by freshly generated ones; True if it changed."""
    text = notebook.read_text()
    content = json.loads(text)
    kept = [c for c in content["cells"] if TAG not in c.get("metadata", {}).get("tags", [])]
    content["cells"] = kept + cells(bibliography, notebook.stem)
    new = json.dumps(content, indent=1, ensure_ascii=False) + "\n"
    if new != text:
        notebook.write_text(new)
    return new != text


def main() -> None:
    bibliography = load()
    for stem in bibliography["lectures"]:
        notebook = ROOT / "lectures" / f"{stem}.ipynb"
        if write(notebook, bibliography):
            print(f"updated {notebook.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
