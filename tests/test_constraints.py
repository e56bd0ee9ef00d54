"""One way to declare constraints: each kind accepts what a student would pass and rejects the
rest with a one-line message naming the argument, what it must be and what it got."""
import numpy as np
import pytest
import torch

from mllib.constraints import ClientMatrix, Function, Integer, OneOf, Probability, Real, Rule, constrain, shown


@constrain(Rule("f", lambda X, f: 2 * f < len(X), "f must be < n/2 for the n rows of X, got f={f}"),
           X=ClientMatrix(), f=Integer(min=0), lr=Real(gt=0), p=Probability(), mode=OneOf("a", "b"),
           hook=Function() | None)  # fmt: skip
def example(X, f=0, lr=0.1, p=0.5, mode="a", hook=None):
    return X, f, lr, p


@pytest.mark.parametrize(("call", "error", "message"), [
    (dict(lr=float("nan")), ValueError, "lr must be a finite number > 0, got nan"),
    (dict(lr=0), ValueError, "lr must be a finite number > 0, got 0"),
    (dict(lr="fast"), TypeError, "lr must be a finite number > 0, got 'fast'"),
    (dict(lr=float("inf")), ValueError, "lr must be a finite number > 0, got inf"),
    (dict(f=2.5), TypeError, "f must be an integer >= 0, got 2.5"),
    (dict(f=True), TypeError, "f must be an integer >= 0, got True"),
    (dict(f=-1), ValueError, "f must be an integer >= 0, got -1"),
    (dict(f=2), ValueError, "f must be < n/2 for the n rows of X, got f=2"),
    (dict(p=1.5), ValueError, "p must be a finite number in [0, 1], got 1.5"),
    (dict(mode="c"), ValueError, "mode must be one of ('a', 'b'), got 'c'"),
    (dict(hook=3), TypeError, "hook must be callable, or None, got 3"),
    (dict(X=torch.zeros(4)), ValueError, "X must be a client matrix of shape (n_clients, d), got a tensor of shape (4,)"),
    (dict(X=None), TypeError, "X must be a client matrix of shape (n_clients, d), got None"),
])  # fmt: skip
def test_a_bad_argument_gets_one_line_naming_it(call, error, message):
    arguments = dict(X=torch.zeros(4, 3)) | call
    with pytest.raises(error) as raised:
        example(**arguments)
    assert str(raised.value) == message


def test_what_a_student_passes_is_converted():
    X, f, lr, p = example([[1, 2], [3, 4], [5, 6]], np.int64(1), np.float32(0.5), torch.tensor(1.0))
    assert X.dtype == torch.get_default_dtype() and X[2, 1] == 6  # integers become floats, never truncated
    assert (type(f), type(lr), type(p)) == (int, float, float)
    assert torch.equal(example(np.ones((3, 2)))[0], torch.ones(3, 2, dtype=torch.float64))


def test_every_constraint_rejects_its_own_bad_values():
    for constraint in (Real(gt=0), Real(ge=0, le=1), Integer(min=1, max=5), OneOf("a"), ClientMatrix(), Probability()):
        for bad in constraint.bad_values():
            with pytest.raises((TypeError, ValueError), match="^x must be "):
                constraint.check("x", bad)


def test_a_constraint_on_a_missing_argument_fails_at_declaration():
    with pytest.raises(TypeError, match=r"has no argument \['lr'\]"):
        constrain(lr=Real(gt=0))(lambda x: x)


def test_messages_show_what_was_passed_briefly():
    assert shown(torch.zeros(3, 2)) == "a tensor of shape (3, 2)"
    assert shown(torch.zeros(3, dtype=torch.int64)) == "a tensor of shape (3,) and dtype torch.int64"
    assert shown(float("-inf")) == "-inf" and shown(list(range(100))) == "a list"
