"""The round engine: its loop and record, and every algorithm run through it equal to its result
before the refactor (tests/references/engine.pt, written by the old code)."""
import ast
import pathlib
import sys

import pytest
import torch

import mllib
from mllib import engine
from notebooks import ROOT

sys.path.insert(0, str(ROOT / "tests" / "references"))
import engine_cases  # noqa: E402

REFERENCE = torch.load(ROOT / "tests" / "references" / "engine.pt")


@pytest.mark.parametrize("name", list(engine_cases.CASES))
def test_every_algorithm_equals_its_result_before_the_refactor(name):
    result, expected = engine_cases.CASES[name](), REFERENCE[name]
    assert result.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(result[key], expected[key], rtol=1e-6, atol=1e-7, msg=f"{name}: {key}")


class Counter(engine.Rounds):
    def __init__(self):
        self.done = []

    def round(self, r):
        self.done.append(r)
        self.bits_sent = 8 * r


def test_run_records_every_eval_every_rounds_and_the_last():
    history = engine.run(Counter(), 7, metrics={"rounds so far": lambda a: len(a.done)}, eval_every=3,
                         record_start=True)  # fmt: skip
    assert history.rounds == [0, 3, 6, 7]
    assert history["rounds so far"] == history.metrics["rounds so far"] == [0, 3, 6, 7]
    assert history.bits == [0, 24, 48, 56]
    assert len(history.seconds) == 4 and history.seconds == sorted(history.seconds)
    assert history.algorithm.done == list(range(1, 8))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, None])
def test_run_rejects_rounds_that_are_not_positive_integers(bad):
    with pytest.raises(ValueError, match=f"rounds must be an integer >= 1, got {bad!r}"):
        engine.run(Counter(), bad)


def test_history_reads_metrics_by_name_and_says_which_exist():
    history = engine.run(Counter(), 4, metrics={"accuracy": lambda a: 0.25 * len(a.done)})
    assert history.accuracy == [0.25, 0.5, 0.75, 1.0]
    assert history.rounds_to(0.7) == 3 and history.mean_last(2) == 0.875
    with pytest.raises(AttributeError, match="metrics: \\['accuracy'\\]"):
        history.loss  # noqa: B018
    with pytest.raises(ValueError, match="k must be in \\[1, 4\\]"):
        history.mean_last(5)


def test_federated_checks_what_its_aggregate_returns():
    federation = engine.Federated(torch.zeros(3), local=lambda x, S: x.expand(len(S), -1), weights=torch.ones(4),
                                  select=engine.everyone(4), aggregate=lambda M, p: M)  # fmt: skip
    with pytest.raises(ValueError, match=r"aggregate must return one row of shape \(3,\), got \(4, 3\)"):
        federation.round(1)


def round_loops(path: pathlib.Path) -> list[int]:
    """Lines of ``for`` loops over ``range(...)`` whose bounds name rounds."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.For) and "range" in ast.unparse(node.iter) and "rounds" in ast.unparse(node.iter):
            found.append(node.lineno)
    return found


@pytest.mark.xfail(strict=True, reason="issue #24: the topic loops are being moved onto the engine")
def test_the_loop_over_rounds_appears_once_in_mllib():
    loops = {str(p.relative_to(ROOT)): round_loops(p) for p in (ROOT / "mllib").rglob("*.py")}
    loops = {path: lines for path, lines in loops.items() if lines}
    assert list(loops) == ["mllib/engine.py"] and len(loops["mllib/engine.py"]) == 1, loops
