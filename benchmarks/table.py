"""Write the README's performance table from ``benchmarks/results.json`` (what `make bench` measured).

Every comparison with a goal (``benchmarks.GOALS``) gets a row: the library's time, the
reference and its time, the ratio, the goal and whether it is met; a comparison the last
`make bench` did not measure (a peer library missing) says so. Below the table, each goal the
run missed gets a line: by how much, and what bounds it (``benchmarks/misses.toml``, written
from a profile; a miss without an explanation says so). The table sits in README.md between the
two ``BEGIN``/``END`` comment lines and is replaced whole.

Run: ``python -m benchmarks.table`` (`make bench` runs it last).
"""
import json
import pathlib
import sys
import tomllib

from benchmarks import GOALS, RESULTS

MISSES = pathlib.Path(__file__).with_name("misses.toml")

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- BEGIN benchmarks table: python -m benchmarks.table -->", "<!-- END benchmarks table -->"


def seconds(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def table(entries: list[dict]) -> str:
    """The Markdown table of ``entries`` (results.json), one row per goal."""
    by_name = {e["name"]: e for e in entries}
    machines = sorted({f"{e['cpu']}, {e['threads']} thread{'s' * (e['threads'] > 1)}" for e in entries})
    lines = [f"Measured by `make bench` on {'; '.join(machines) or 'no machine yet'}:", "",
             "| comparison | ours | reference | reference's time | ratio | goal | met |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, goal in GOALS.items():
        e = by_name.get(name)
        if e is None:
            lines.append(f"| {name} | not measured | | | | {goal} | |")
            continue
        lines.append(f"| {name} | {seconds(e['ours_s'])} | {e['reference']} | {seconds(e['reference_s'])} | "
                     f"{e['ratio']:.2f} | {goal} | {'yes' if e['met'] else 'no'} |")  # fmt: skip
    return "\n".join(lines + missed([e for e in entries if not e["met"]]))


def shortfall(entry: dict) -> str:
    """How far ``entry``'s ratio is from its goal, as a factor (2.5x means 2.5 times too slow)."""
    goal = GOALS[entry["name"]]
    factor = goal.bound / entry["ratio"] if goal.at_least else entry["ratio"] / goal.bound
    return f"{factor:.2f}x"


def missed(entries: list[dict]) -> list[str]:
    """One line per missed goal: by how much, and what bounds it (``misses.toml``)."""
    if not entries:
        return []
    bounds = tomllib.loads(MISSES.read_text())
    lines = ["", "Goals missed in this run, by how much, and what bounds them (`benchmarks/misses.toml`):", ""]
    for e in entries:
        miss = bounds.get(e["name"], {"bound": "Not explained yet: profile it.", "profile": ""})
        lines.append(f"- **{e['name']}**: {shortfall(e)} short of the goal. {miss['bound']} {miss['profile']}".rstrip())
    return lines


def main() -> None:
    entries = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    text = README.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"README.md has no benchmarks table to replace (the lines {BEGIN!r} and {END!r})")
    before, rest = text.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    README.write_text(f"{before}{BEGIN}\n{table(entries)}\n{END}{after}")
    print(f"README.md: the benchmarks table from {len(entries)} measured comparisons")


if __name__ == "__main__":
    main()
