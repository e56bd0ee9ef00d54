"""Notebook outputs compared by meaning: text exactly, numbers exactly or within a declared tolerance.

nbval compares outputs as strings. Here an output is split into text and numbers; the text
must match exactly, and so must every number, unless the cell declares a tolerance for it in
its metadata::

    "tolerance": [
        {"pattern": "FedAvg +(\\\\S+) \\\\[(\\\\S+)–(\\\\S+)\\\\]", "tolerance": 0.03, "std": 0.012}
    ]

``pattern`` is a regular expression searched in the recorded output; every number inside one
of its groups may move by ``tolerance`` (absolute). ``std`` is that number's measured standard
deviation over seeds and kernel settings (``tests/survey.py`` measures it); a tolerance is at
most ``MAX_STDS`` times it and below ``MAX_RELATIVE`` of every number it covers.
"""
import copy
import re
from collections import defaultdict
from dataclasses import dataclass

# A number: not glued to a word or a dot before it ("e4m3", "x2", "v1.2" stay text).
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
SPACES = re.compile(r"[ \t]+")
MAX_STDS = 3.0
MAX_RELATIVE = 0.3
# Two floats printed at the same precision differ by float noise at most this much.
ROUNDING_SLACK = 1e-9


@dataclass(frozen=True)
class Tolerance:
    """A declared tolerance: the numbers inside ``pattern``'s groups may move by ``tolerance``."""

    pattern: str
    tolerance: float
    std: float

    @classmethod
    def from_metadata(cls, entry: dict) -> "Tolerance":
        missing = {"pattern", "tolerance", "std"} - set(entry)
        if missing:
            raise ValueError(f"a tolerance entry needs {sorted(missing)}, got {entry}")
        if re.compile(entry["pattern"]).groups == 0:
            raise ValueError(f"tolerance pattern {entry['pattern']!r} has no group around a number")
        return cls(entry["pattern"], float(entry["tolerance"]), float(entry["std"]))

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the groups this pattern matches in ``text``."""
        return [m.span(g) for m in re.finditer(self.pattern, text) for g in range(1, m.re.groups + 1)
                if m.span(g) != (-1, -1)]


def tolerances(metadata: dict) -> list[Tolerance]:
    """The tolerances a cell declares (none: every number compares exactly)."""
    return [Tolerance.from_metadata(entry) for entry in metadata.get("tolerance", [])]


def split_numbers(text: str) -> tuple[list[str], list[re.Match]]:
    """``text`` as the pieces between numbers (one more than numbers) and the numbers."""
    numbers = list(NUMBER.finditer(text))
    bounds = [0, *(i for m in numbers for i in m.span()), len(text)]
    return [text[a:b] for a, b in zip(bounds[::2], bounds[1::2])], numbers


def allowed_moves(recorded: str, rules: list[Tolerance]) -> dict[int, Tolerance]:
    """For each number of ``recorded`` (by index) the tolerance that covers it, if any."""
    _, numbers = split_numbers(recorded)
    covered = {}
    for rule in rules:
        for start, end in rule.spans(recorded):
            for i, number in enumerate(numbers):
                if start <= number.start() and number.end() <= end:
                    covered.setdefault(i, rule)
    return covered


def line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def differences(recorded: str, new: str, rules: list[Tolerance]) -> list[str]:
    """What differs between a recorded and a new output; empty when they agree by meaning.

    Text compares exactly (runs of spaces beside a number with a tolerance may change width);
    numbers compare exactly, or within the tolerance declared for them.
    """
    if recorded == new:
        return []
    old_text, old_numbers = split_numbers(recorded)
    new_text, new_numbers = split_numbers(new)
    if len(old_numbers) != len(new_numbers):
        return [f"the output now has {len(new_numbers)} numbers where {len(old_numbers)} were recorded"]
    covered = allowed_moves(recorded, rules)
    found = []
    for i, (old, now) in enumerate(zip(old_text, new_text)):
        beside_tolerance = i in covered or i - 1 in covered
        if old != now and not (beside_tolerance and SPACES.sub(" ", old) == SPACES.sub(" ", now)):
            where = line_of(recorded, old_numbers[i - 1].end() if i else 0)
            found.append(f"line {where}: text {old!r} became {now!r}")
    for i, (old, now) in enumerate(zip(old_numbers, new_numbers)):
        where = f"line {line_of(recorded, old.start())}"
        if i not in covered:
            if old.group() != now.group():
                found.append(f"{where}: {old.group()} became {now.group()} (compared exactly: no tolerance declared)")
        elif abs(float(old.group()) - float(now.group())) > covered[i].tolerance * (1 + ROUNDING_SLACK):
            found.append(f"{where}: {old.group()} became {now.group()}, beyond the tolerance "
                         f"{covered[i].tolerance:g} declared by {covered[i].pattern!r}")
    return found


def declaration_problems(recorded_texts: list[str], rules: list[Tolerance]) -> list[str]:
    """Why a cell's tolerances are not allowed, if they are not.

    Each covers at least one recorded number, is at most ``MAX_STDS`` times its measured std,
    and is below ``MAX_RELATIVE`` of every number it covers.
    """
    problems = []
    for rule in rules:
        covered = [float(m.group()) for text in recorded_texts
                   for i, m in enumerate(split_numbers(text)[1]) if allowed_moves(text, [rule]).get(i)]
        if not covered:
            problems.append(f"{rule.pattern!r} covers no number of the recorded outputs")
        if not 0 < rule.tolerance <= MAX_STDS * rule.std:
            problems.append(f"{rule.pattern!r}: tolerance {rule.tolerance:g} must be > 0 and at most "
                            f"{MAX_STDS:g} x its measured std {rule.std:g}")
        for value in covered:
            if rule.tolerance >= MAX_RELATIVE * abs(value):
                problems.append(f"{rule.pattern!r}: tolerance {rule.tolerance:g} reaches "
                                f"{MAX_RELATIVE:.0%} of the recorded {value:g}")
    return problems


def texts(output: dict) -> dict[str, str]:
    """The texts of one notebook output by key: the stream's name, or each ``text/`` MIME type
    (images and widget views are not compared)."""
    if output.get("output_type") == "stream":
        return {output["name"]: output["text"]}
    return {key: value for key, value in output.get("data", {}).items() if key.startswith("text/")}


def with_text(output: dict, key: str, text: str) -> dict:
    output = copy.deepcopy(output)
    if output.get("output_type") == "stream":
        output["text"] = text
    else:
        output["data"][key] = text
    return output


def reconciled(new: list, recorded: list, rules: list[Tolerance], sanitize) -> tuple[list, list[str]]:
    """The new outputs, where each text that agrees by meaning with the recorded one is replaced
    by it (so that nbval's string comparison passes it), and the differences in the others."""
    by_key = defaultdict(list)
    for output in recorded:
        for key, text in texts(output).items():
            by_key[key].append(text)
    seen, found, result = defaultdict(int), [], []
    for output in new:
        for key, text in texts(output).items():
            index, seen[key] = seen[key], seen[key] + 1
            if index < len(by_key[key]):  # nbval itself reports an extra output
                problems = differences(sanitize(by_key[key][index]), sanitize(text), rules)
                found += [f"{key} {p}" for p in problems]
                if not problems:
                    output = with_text(output, key, by_key[key][index])
        result.append(output)
    return result, found
