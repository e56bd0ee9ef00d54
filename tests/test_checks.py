"""The self-check machinery that every lab uses, and what every lab check must offer."""
import importlib
import pkgutil

import pytest
import torch

import mllib.checks
from mllib.checks import CheckFailed, Mistake, describe, difference, number_in_range, self_check
from mllib.runtime import generator


def reference_double(x):
    return 2 * x


def library_double(x):
    return 2 * x


@self_check(
    reference_double,
    mistakes=[Mistake(lambda x: -2 * x, "the sign is flipped", "double, not negate"),
              Mistake(lambda x: x, "the factor 2 is missing", "multiply by 2")],  # fmt: skip
    forbid=[library_double],
)
def double(gen):
    return [dict(x=torch.randn(3, generator=gen)), dict(x=torch.randn(2, 4, generator=gen))]


def test_a_correct_answer_passes_and_says_so(capsys):
    double(lambda x: x + x)
    assert "✔ double: matches the reference on 2 inputs" in capsys.readouterr().out


def test_the_check_knows_its_reference_and_mistakes():
    assert double.reference is reference_double and len(double.mistakes) == 2


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda x: 3 * x, "double: 3 of 3 values differ\nthe largest gap at index"),
        (lambda x: (2 * x).sum(), "double: output has shape ()"),
        (lambda x: (2 * x).tolist(), "double: expected a torch.Tensor, got list"),
        (lambda x: x.mul_(2), "double: your function modified its input 'x'"),
        (lambda x: None, "double: your function returned None; did you forget `return`?"),
        (lambda x: -2 * x, "double: the sign is flipped\nhint: double, not negate\non input #1: x=tensor("),
        (lambda x: x.clone(), "double: the factor 2 is missing\nhint: multiply by 2"),
        (lambda x: library_double(x), "double: your function calls the library's library_double"),
    ],
)
def test_a_wrong_answer_is_told_what_differed(answer, message):
    with pytest.raises(CheckFailed) as failure:
        double(answer)
    assert str(failure.value).startswith(message)


def test_the_forbidden_function_is_back_after_the_check():
    with pytest.raises(CheckFailed):
        double(lambda x: library_double(x))
    assert torch.equal(library_double(torch.ones(1)), torch.tensor([2.0]))


def test_an_error_in_the_students_code_keeps_its_traceback_with_a_note():
    with pytest.raises(IndexError) as error:
        double(lambda x: x[5])
    assert "in the check double, on input #1: x=tensor(" in error.value.__notes__[0]


def test_an_unfinished_exercise_is_told_to_fill_it_in():
    def stub(x):
        raise NotImplementedError

    with pytest.raises(CheckFailed, match="not implemented yet"):
        double(stub)


def test_a_failed_check_renders_as_its_message_alone_in_red():
    with pytest.raises(CheckFailed) as failure:
        double(lambda x: -2 * x)
    lines = failure.value._render_traceback_()
    assert lines[0] == "\x1b[31m✘ double: the sign is flipped\x1b[0m" and len(lines) <= 5


def test_bad_arguments_to_a_check_are_the_checks_error():
    with pytest.raises(ValueError, match="atol must be a finite number >= 0, got -1"):
        double(reference_double, atol=-1)
    with pytest.raises(TypeError, match="answer must be"):
        double(None)


def test_other_seeds_are_hidden_cases(capsys):
    assert not torch.equal(double.make_cases(generator(0))[0]["x"], double.make_cases(generator(1))[0]["x"])
    double(lambda x: x + x, seed=7)
    assert "✔ double" in capsys.readouterr().out


def test_an_experiment_answer_is_checked_against_its_range(capsys):
    number_in_range("rounds_to_target", 12, 10, 20, hint="count the rounds")
    assert "✔ rounds_to_target: 12 is in the expected range" in capsys.readouterr().out
    for value in (9, 21, float("inf")):
        with pytest.raises(CheckFailed, match=r"^rounds_to_target: .* is outside the range \[10, 20\]"):
            number_in_range("rounds_to_target", value, 10, 20, hint="count the rounds")
    with pytest.raises(TypeError, match="value must be"):
        number_in_range("rounds_to_target", "12", 10, 20, hint="count the rounds")
    with pytest.raises(ValueError, match="value must be a number .*, got nan"):
        number_in_range("rounds_to_target", float("nan"), 10, 20, hint="count the rounds")


def test_difference_points_at_the_largest_gap():
    got, expected = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 2.0], [3.0, 9.0]])
    assert difference(got, expected, atol=1e-5, rtol=0) == (
        "1 of 4 values differ\nthe largest gap at index (1, 1): got 4, expected 9"
    )
    assert difference(expected, expected, atol=0, rtol=0) is None
    assert difference(torch.tensor(1.0), torch.tensor(2.0), atol=0, rtol=0).endswith("got 1, expected 2")
    assert difference(3, 4, atol=0, rtol=0) == "got 3, expected 4"


def test_difference_compares_tuples_element_by_element():
    pair = (torch.tensor([1.0]), torch.tensor([2.0, 3.0]))
    assert difference(pair, pair, atol=0, rtol=0) is None
    assert difference(list(pair), pair, atol=0, rtol=0) is None
    assert difference((pair[0], torch.tensor([2.0, 4.0])), pair, atol=0, rtol=0).startswith(
        "in returned value #2: 1 of 2 values differ"
    )
    assert difference(pair[0], pair, atol=0, rtol=0).startswith("expected a tuple of 2 values, got tensor(")


def test_describe_shows_small_tensors_and_shapes_of_large_ones():
    text = describe(dict(w=torch.tensor([0.5, 1.25]), X=torch.zeros(10, 3), k=2))
    assert text == "w=tensor([0.5, 1.25], shape (2,)), X=tensor of shape (10, 3), k=2"


# ---- every lab check in mllib.checks


def lab_checks() -> dict[str, object]:
    found = {}
    for info in pkgutil.iter_modules(mllib.checks.__path__):
        module = importlib.import_module(f"mllib.checks.{info.name}")
        for name, value in vars(module).items():
            if callable(value) and hasattr(value, "make_cases") and value.__module__ == module.__name__:
                found[f"{info.name}.{name}"] = value
    return found


CHECKS = lab_checks()
MISTAKES = [(name, i) for name, check in CHECKS.items() for i in range(len(check.mistakes))]


@pytest.mark.parametrize("name, index", MISTAKES, ids=[f"{n}[{i}]" for n, i in MISTAKES])
def test_every_known_mistake_is_rejected_with_its_own_message(name, index):
    check, mistake = CHECKS[name], CHECKS[name].mistakes[index]
    with pytest.raises(CheckFailed) as failure:
        check(mistake.wrong)
    first, hint = str(failure.value).splitlines()[:2]
    assert first == f"{check.__name__}: {mistake.says}" and hint == f"hint: {mistake.hint}"
    assert len(first) <= 100, "the first line of a failed check states the problem in at most 100 characters"


@pytest.mark.parametrize("name", list(CHECKS))
def test_each_check_knows_three_mistakes_that_say_different_things(name):
    says = [mistake.says for mistake in CHECKS[name].mistakes]
    assert len(says) >= 3, "a lab check names at least three mistakes students make (issue #22)"
    assert len(set(says)) == len(says)
