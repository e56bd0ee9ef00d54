"""Self-checks for the labs: run a student's function against the reference on random inputs.

Each lab exercise has a check in ``mllib.checks.<topic>``, built with ``self_check``: a
function that draws test inputs from a fixed-seed generator. The check passes when the
student's function matches the reference on every input and leaves the inputs unchanged;
otherwise it raises ``CheckFailed`` saying what differed and on which input.
"""
import functools
from collections.abc import Callable

import torch

from ..runtime import generator


class CheckFailed(AssertionError):
    """A lab answer that does not match the reference."""


def self_check(reference: Callable) -> Callable:
    """Decorate a case maker ``make_cases(gen) -> list[dict]`` into a check of answers.

    The check calls the answer and ``reference`` with each case's values as positional
    arguments; the decorated function's name is the exercise's name.
    """

    def wrap(make_cases: Callable[[torch.Generator], list[dict]]) -> Callable:
        @functools.wraps(make_cases)
        def check(answer: Callable, *, atol: float = 1e-5, rtol: float = 1e-4) -> None:
            cases = make_cases(generator(0))
            for number, case in enumerate(cases, 1):
                compare_on_case(make_cases.__name__, answer, reference, case, number, atol=atol, rtol=rtol)
            print(f"✔ {make_cases.__name__}: matches the reference on {len(cases)} inputs")

        check.reference, check.make_cases = reference, make_cases
        return check

    return wrap


def compare_on_case(
    name: str, answer: Callable, reference: Callable, case: dict, number: int, *, atol: float, rtol: float
) -> None:
    """Run one case; raise ``CheckFailed`` with a readable message on any difference."""
    where = f"{name}, on input #{number} ({describe(case)})"
    given = {k: _clone(v) for k, v in case.items()}
    try:
        got = answer(*given.values())
    except NotImplementedError:
        raise CheckFailed(f"{name}: not implemented yet; replace `raise NotImplementedError` by your code") from None
    except Exception as err:  # the student sees their own error, with the input that caused it
        raise CheckFailed(f"{where}: your function raised {type(err).__name__}: {err}") from err
    for key, value in case.items():
        if isinstance(value, torch.Tensor) and not torch.equal(given[key], value):
            raise CheckFailed(f"{where}: your function modified its input {key!r}; work on a copy")
    expected = reference(*(_clone(v) for v in case.values()))
    problem = difference(got, expected, atol=atol, rtol=rtol)
    if problem:
        raise CheckFailed(f"{where}: {problem}")


def difference(got, expected, *, atol: float, rtol: float) -> str | None:
    """What differs between an answer and the expected value, or None if they match."""
    if not isinstance(expected, torch.Tensor):
        return None if got == expected else f"got {got!r}, expected {expected!r}"
    if not isinstance(got, torch.Tensor):
        return f"expected a torch.Tensor, got {type(got).__name__}"
    if got.shape != expected.shape:
        return f"output has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    got, expected = got.double(), expected.double()
    wrong = ~torch.isclose(got, expected, atol=atol, rtol=rtol, equal_nan=True)
    if not wrong.any():
        return None
    gap = torch.where(wrong, (got - expected).abs().nan_to_num(float("inf")), 0)
    index = tuple(int(i) for i in torch.unravel_index(gap.argmax(), gap.shape))
    at = f" at index {index}" if index else ""
    return (
        f"{int(wrong.sum())} of {wrong.numel()} values differ; the largest gap{at}: "
        f"got {got[index].item():.6g}, expected {expected[index].item():.6g}"
    )


def describe(case: dict) -> str:
    """A short description of a case: small tensors in full, large ones by shape."""

    def one(value) -> str:
        if isinstance(value, torch.Tensor):
            if value.numel() <= 6:
                return f"tensor({[round(v, 4) for v in value.flatten().tolist()]}, shape {tuple(value.shape)})"
            return f"tensor of shape {tuple(value.shape)}"
        return repr(value)

    return ", ".join(f"{k}={one(v)}" for k, v in case.items())


def _clone(value):
    return value.clone() if isinstance(value, torch.Tensor) else value
