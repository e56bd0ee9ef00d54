"""The two tests every lab check gets: it passes the solution, and it rejects a wrong answer
with a message naming the exercise and the input it failed on."""
import pytest

from mllib.checks import CheckFailed
from mllib.runtime import generator


def assert_passes(check, solution, capsys) -> None:
    check(solution)
    assert f"✔ {check.__name__}: matches the reference" in capsys.readouterr().out


def assert_rejects(check, wrong) -> None:
    first = next(iter(check.make_cases(generator(0))[0]))  # the name of the check's first input
    with pytest.raises(CheckFailed, match=rf"{check.__name__}, on input #\d+ \({first}="):
        check(wrong)
