"""Self-checks for the labs: run a student's function against the reference on random inputs.

Each lab exercise has a check in ``mllib.checks.<topic>``, built with ``self_check``: a
function that draws test inputs from a seeded generator (``seed=0`` for the students; graders
run other seeds as hidden cases). The check passes when the student's function matches the
reference on every input and leaves the inputs unchanged; otherwise it raises ``CheckFailed``,
whose first line says what is wrong in at most 100 characters: for a ``Mistake`` students
actually make (a sign, a missing scale, the wrong axis), its own message and a hint, recognized
because the answer agrees with that wrong variant; otherwise what differed and on which input.
A build exercise lists the library functions and classes it asks the student to write (``forbid``):
while the check runs they raise, under every name mllib or the notebook gives them, so an answer that
calls them fails.

In a notebook a failed check shows its message alone, in red, without the traceback (IPython's
``_render_traceback_``); an error raised inside the student's own code keeps its full
traceback, with a note naming the check and the input.
"""
import functools
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..constraints import Function, Instance, Integer, Real, constrain
from ..runtime import generator

RED, RESET = "\x1b[31m", "\x1b[0m"


class CheckFailed(AssertionError):
    """A lab answer that does not match the reference: a one-line problem, then the details."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of a traceback: the message alone, in red."""
        return [f"{RED}✘ {line}{RESET}" if number == 0 else line for number, line in enumerate(str(self).splitlines())]


@dataclass(frozen=True)
class Mistake:
    """A wrong variant of an exercise, as students write it, with what to tell them.

    Attributes:
        wrong: the wrong implementation (same signature as the reference).
        says: what is wrong, in the student's terms ("the sign of the step is flipped").
        hint: where to look ("x moves against the gradient: x - lr * g").
    """

    wrong: Callable
    says: str
    hint: str


def self_check(reference: Callable, *, mistakes: Sequence[Mistake] = (), forbid: Sequence[Callable] = ()) -> Callable:
    """Decorate a case maker ``make_cases(gen) -> list[dict]`` into a check of answers.

    The check calls the answer and ``reference`` with each case's values as positional
    arguments; the decorated function's name is the exercise's name.

    Args:
        reference: the correct implementation.
        mistakes: the wrong variants the check recognizes, each with its message and hint.
        forbid: library functions and classes the answer must not call (a build exercise's algorithm).
    """

    def wrap(make_cases: Callable[[torch.Generator], list[dict]]) -> Callable:
        name = make_cases.__name__

        @constrain(answer=Function(), atol=Real(ge=0), rtol=Real(ge=0), seed=Integer(min=0))
        def check(answer: Callable, *, atol: float = 1e-5, rtol: float = 1e-4, seed: int = 0) -> None:
            cases = make_cases(generator(seed))
            for number, case in enumerate(cases, 1):
                got = run_answer(name, answer, case, number, forbid)
                problem = problem_with(got, case, reference, atol=atol, rtol=rtol)
                if problem:
                    raise CheckFailed(explain(name, problem, got, case, number, mistakes, atol=atol, rtol=rtol))
            print(f"✔ {name}: matches the reference on {len(cases)} inputs")

        signature = inspect.signature(check)  # check(answer, *, atol, rtol, seed), not make_cases(gen)
        functools.update_wrapper(check, make_cases).__signature__ = signature
        check.reference, check.make_cases, check.mistakes, check.forbid = reference, make_cases, mistakes, forbid
        return check

    return wrap


@constrain(name=Instance(str), value=Real(infinite=True), low=Real(), high=Real(), hint=Instance(str))
def number_in_range(name: str, value: float, low: float, high: float, *, hint: str) -> None:
    """Check an experiment question: a number read off the student's own run lies in [low, high].

    The range is what the experiment gives on any machine and seed (measured over seeds and
    kernel settings), not one run's digits.

    Args:
        name: the question's name. value: the student's number. low, high: the accepted range.
        hint: what to look at again when the number is outside it.

    Raises:
        CheckFailed: if ``value`` is outside [low, high] (or NaN).
    """
    if not low <= value <= high:
        raise CheckFailed(f"{name}: {value:.4g} is outside the range [{low:g}, {high:g}] your run should give\n"
                          f"hint: {hint}")  # fmt: skip
    print(f"✔ {name}: {value:.4g} is in the expected range")


def run_answer(name: str, answer: Callable, case: dict, number: int, forbid: Sequence[Callable] = ()):
    """The answer's output on a copy of ``case``, or its input changed in place, as ``Modified``.

    Raises:
        CheckFailed: if the exercise is not done yet, or the answer calls a forbidden function.
        Exception: whatever the answer itself raised, with a note naming the check and the input.
    """
    given = {k: _clone(v) for k, v in case.items()}
    try:
        with _forbidden(forbid, name, getattr(answer, "__globals__", {})):
            got = answer(*given.values())
    except NotImplementedError:
        raise CheckFailed(f"{name}: not implemented yet\nreplace `raise NotImplementedError` by your code") from None
    except CheckFailed:
        raise
    except Exception as err:  # the student's own error: keep its traceback, say where it came from
        err.add_note(f"(raised by your function in the check {name}, on input #{number}: {describe(case)})")
        raise
    changed = [k for k, v in case.items() if isinstance(v, torch.Tensor) and not torch.equal(given[k], v)]
    return Modified(changed[0]) if changed else got


@dataclass(frozen=True)
class Modified:
    """An answer that changed its input ``key`` in place."""

    key: str


def problem_with(got, case: dict, reference: Callable, *, atol: float, rtol: float) -> str | None:
    """What is wrong with an answer's output on ``case`` (a short phrase), or None."""
    if isinstance(got, Modified):
        return f"your function modified its input {got.key!r}; work on a copy"
    if got is None:
        return "your function returned None; did you forget `return`?"
    return difference(got, reference(*(_clone(v) for v in case.values())), atol=atol, rtol=rtol)


def explain(name: str, problem: str, got, case: dict, number: int, mistakes: Sequence[Mistake], *, atol: float,
            rtol: float) -> str:  # fmt: skip
    """The message of a failed check: the known mistake the answer agrees with, else the problem."""
    where = f"on input #{number}: {describe(case)}"
    for mistake in mistakes:
        if not isinstance(got, Modified) and got is not None and _same(got, mistake.wrong, case, atol, rtol):
            return f"{name}: {mistake.says}\nhint: {mistake.hint}\n{where}"
    return f"{name}: {problem}\n{where}"


def _same(got, wrong: Callable, case: dict, atol: float, rtol: float) -> bool:
    try:
        return difference(got, wrong(*(_clone(v) for v in case.values())), atol=atol, rtol=rtol) is None
    except Exception:  # noqa: BLE001 (a mistake that cannot run on this case does not explain it)
        return False


class _forbidden:
    """While active, the ``functions`` raise ``CheckFailed`` wherever mllib or the caller reaches them."""

    def __init__(self, functions: Sequence[Callable], name: str, caller: dict):
        self.functions, self.name, self.caller, self.patched = functions, name, caller, []

    def __enter__(self):
        for function in self.functions:
            def refuse(*args, _function=function, **kwargs):
                raise CheckFailed(f"{self.name}: your function calls the library's {_function.__name__}\n"
                                  f"this exercise asks you to write {_function.__name__}'s update yourself")  # fmt: skip
            for namespace in [*_namespaces(), self.caller]:
                for key, value in list(namespace.items()):
                    if value is function:  # once per namespace: after patching it holds `refuse`
                        self.patched.append((namespace, key, value))
                        namespace[key] = refuse
        return self

    def __exit__(self, *exc):
        for namespace, key, value in reversed(self.patched):
            namespace[key] = value
        self.patched.clear()


def _namespaces() -> list[dict]:
    """The global namespaces a student's function can reach a library function through:
    every mllib module, and the notebook's (``__main__``)."""
    modules = [m for n, m in list(sys.modules.items()) if n == "mllib" or n.startswith("mllib.") or n == "__main__"]
    return [vars(m) for m in modules if m is not None]


def difference(got, expected, *, atol: float, rtol: float) -> str | None:
    """What differs between an answer and the expected value, or None if they match; a tuple
    (an exercise that returns several values) is compared element by element."""
    if isinstance(expected, tuple):
        if not isinstance(got, tuple | list) or len(got) != len(expected):
            return f"expected a tuple of {len(expected)} values, got {_short(got)}"
        problems = ((i, difference(g, e, atol=atol, rtol=rtol)) for i, (g, e) in enumerate(zip(got, expected)))
        return next((f"in returned value #{i + 1}: {problem}" for i, problem in problems if problem), None)
    if not isinstance(expected, torch.Tensor):
        return None if got == expected else f"got {_short(got)}, expected {_short(expected)}"
    if expected.dim() == 0 and isinstance(got, float | int) and not isinstance(got, bool):
        got = torch.tensor(float(got))  # a number where a 0-d tensor is expected: compare the values
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
        f"{int(wrong.sum())} of {wrong.numel()} values differ\n"
        f"the largest gap{at}: got {got[index].item():.6g}, expected {expected[index].item():.6g}"
    )


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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
