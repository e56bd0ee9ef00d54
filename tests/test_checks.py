"""The self-check machinery that every lab uses."""
import pytest
import torch

from mllib.checks import CheckFailed, describe, difference, self_check


def reference_double(x):
    return 2 * x


@self_check(reference_double)
def double(gen):
    return [dict(x=torch.randn(3, generator=gen)), dict(x=torch.randn(2, 4, generator=gen))]


def test_a_correct_answer_passes_and_says_so(capsys):
    double(lambda x: x + x)
    assert "✔ double: matches the reference on 2 inputs" in capsys.readouterr().out


def test_the_check_knows_its_reference():
    assert double.reference is reference_double


@pytest.mark.parametrize(
    "answer, message",
    [
        (lambda x: 3 * x, "double, on input #1 (x=tensor("),
        (lambda x: (2 * x).sum(), "output has shape ()"),
        (lambda x: (2 * x).tolist(), "expected a torch.Tensor, got list"),
        (lambda x: x.mul_(2), "modified its input 'x'"),
        (lambda x: x / 0 * 0, "differ"),
        (lambda x: x[5], "your function raised IndexError"),
    ],
)
def test_a_wrong_answer_is_told_what_differed(answer, message):
    with pytest.raises(CheckFailed, match=message.replace("(", r"\(").replace(")", r"\)")):
        double(answer)


def test_an_unfinished_exercise_is_told_to_fill_it_in():
    def stub(x):
        raise NotImplementedError

    with pytest.raises(CheckFailed, match="not implemented yet"):
        double(stub)


def test_difference_points_at_the_largest_gap():
    got, expected = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 2.0], [3.0, 9.0]])
    assert difference(got, expected, atol=1e-5, rtol=0) == (
        "1 of 4 values differ; the largest gap at index (1, 1): got 4, expected 9"
    )
    assert difference(expected, expected, atol=0, rtol=0) is None
    assert difference(torch.tensor(1.0), torch.tensor(2.0), atol=0, rtol=0).endswith("got 1, expected 2")
    assert difference(3, 4, atol=0, rtol=0) == "got 3, expected 4"


def test_describe_shows_small_tensors_and_shapes_of_large_ones():
    text = describe(dict(w=torch.tensor([0.5, 1.25]), X=torch.zeros(10, 3), k=2))
    assert text == "w=tensor([0.5, 1.25], shape (2,)), X=tensor of shape (10, 3), k=2"
