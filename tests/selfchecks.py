"""The two tests every lab check gets: it passes the solution, and it rejects a wrong answer
with a message naming the exercise."""
import pytest

from mllib.checks import CheckFailed


def assert_passes(check, solution, capsys) -> None:
    check(solution)
    assert f"✔ {check.__name__}: matches the reference" in capsys.readouterr().out


def assert_rejects(check, wrong) -> None:
    with pytest.raises(CheckFailed, match=rf"^{check.__name__}: "):
        check(wrong)
