"""Constraints on the arguments of public functions: declared once beside the signature, checked in one place.

    @constrain(X=ClientMatrix(), f=Integer(min=0), lr=Real(gt=0), name=OneOf("ring", "torus"))
    def something(X, f, lr, name): ...

Before the body runs, each declared argument is checked, and converted where a student would
expect it (a list or a NumPy array where a tensor belongs becomes a tensor; an integer tensor
where floats are computed becomes the default float dtype, never truncated). A bad argument
raises ``TypeError`` (wrong kind) or ``ValueError`` (right kind, wrong value) whose first line
names it, says what it must be and what it got::

    lr must be a finite number > 0, got nan
    X must be a client matrix of shape (n_clients, d), got a tensor of shape (4,)

Relations between arguments (f below half the rows, one weight per row) are ``Rule``s checked
after the single arguments. ``constrain`` keeps the declarations on the function
(``__constraints__``), so that a test can walk the public API and feed each argument values
its constraint rejects.

Why not a library: jaxtyping + beartype name the argument but raise a ten-line
``TypeCheckError`` about ``Float[Tensor, 'clients d']``, and neither checks value ranges;
pydantic's ``validate_call`` checks ranges but not tensors, and its messages list error
locations in its own vocabulary. A student reads one line in the words of the lecture, so the
course keeps a small checker of its own (scikit-learn's ``validate_params`` is the model).
"""
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

NAN, INF = float("nan"), float("inf")


def shown(value) -> str:
    """A short description of what a caller passed, for error messages."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return f"tensor({value.item()!r})"
        dtype = "" if value.dtype.is_floating_point else f" and dtype {value.dtype}"
        return f"a tensor of shape {tuple(value.shape)}{dtype}"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


class Constraint:
    """What one argument must be. Subclasses set ``description`` and ``check``."""

    description = "valid"

    def check(self, name: str, value):
        """Return ``value`` (converted where the constraint converts) or raise."""
        raise NotImplementedError

    def fail(self, name: str, value, error=ValueError):
        raise error(f"{name} must be {self.description}, got {shown(value)}")

    def bad_values(self) -> list:
        """Values this constraint rejects (for the test that walks the API)."""
        return [None, "text"]

    def __or__(self, other):
        if other is None:
            return Optional(self)
        if isinstance(other, Constraint):
            return Either(self, other)
        return NotImplemented


class Either(Constraint):
    """What ``first`` or ``second`` accepts (``Tensor(2) | Function()``), converted by the first that does."""

    def __init__(self, first: Constraint, second: Constraint):
        self.first, self.second = first, second
        self.description = f"{first.description}, or {second.description}"

    def check(self, name, value):
        errors = []
        for constraint in (self.first, self.second):
            try:
                return constraint.check(name, value)
            except (TypeError, ValueError) as error:
                errors.append(type(error))
        self.fail(name, value, ValueError if ValueError in errors else TypeError)  # the right kind, a wrong value

    def bad_values(self):
        return [v for v in self.first.bad_values() if _rejects(self.second, v)]


def _rejects(constraint: Constraint, value) -> bool:
    try:
        constraint.check("value", value)
    except (TypeError, ValueError):
        return True
    return False


class Optional(Constraint):
    """``None``, or what ``inner`` accepts (``Integer(min=1) | None``)."""

    def __init__(self, inner: Constraint):
        self.inner = inner
        self.description = f"{inner.description}, or None"

    def check(self, name, value):
        if value is None:
            return None
        try:
            return self.inner.check(name, value)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{name} must be {self.description}, got {shown(value)}") from None

    def bad_values(self):
        return [v for v in self.inner.bad_values() if v is not None]


def _real(value) -> float | None:
    """``value`` as a Python float if it is a real number (not a bool), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, torch.Tensor):
        return float(value) if value.dim() == 0 and not value.dtype.is_complex and value.dtype != torch.bool else None
    if isinstance(value, np.ndarray):
        return float(value) if value.ndim == 0 and value.dtype.kind in "iuf" else None
    return float(value) if isinstance(value, numbers.Real) else None


class Real(Constraint):
    """A finite real number in an interval: ``Real(gt=0)``, ``Real(ge=0, lt=1)``.

    Accepts int, float, NumPy and 0-d torch scalars; returns a Python float. NaN and the
    infinities are rejected unless ``infinite=True`` (then +-inf pass, NaN never does).
    """

    def __init__(self, *, gt=None, ge=None, lt=None, le=None, infinite: bool = False):
        self.gt, self.ge, self.lt, self.le, self.infinite = gt, ge, lt, le, infinite
        bounds = [f"> {gt:g}" if gt is not None else "", f">= {ge:g}" if ge is not None else "",
                  f"< {lt:g}" if lt is not None else "", f"<= {le:g}" if le is not None else ""]  # fmt: skip
        bounds = " and ".join(b for b in bounds if b)
        kind = "a number (inf allowed)" if infinite else "a finite number"
        self.description = f"{kind} {bounds}".strip() if bounds else kind
        low, high = (gt if gt is not None else ge), (lt if lt is not None else le)
        if low is not None and high is not None:  # an interval: (0, 1], [0, 1], ...
            left, right = "(" if gt is not None else "[", ")" if lt is not None else "]"
            self.description = f"{kind} in {left}{low:g}, {high:g}{right}"

    def check(self, name, value):
        x = _real(value)
        if x is None:
            self.fail(name, value, TypeError)
        if math.isnan(x) or (math.isinf(x) and not self.infinite):
            self.fail(name, value)
        if ((self.gt is not None and not x > self.gt) or (self.ge is not None and not x >= self.ge)
                or (self.lt is not None and not x < self.lt) or (self.le is not None and not x <= self.le)):  # fmt: skip
            self.fail(name, value)
        return x

    def bad_values(self):
        bad = [None, "text", NAN, [1.0]]
        bad += [] if self.infinite else [INF, -INF]
        for low, open_ in ((self.gt, True), (self.ge, False)):
            if low is not None:
                bad += [low - 1.0] + ([low] if open_ else [])
        for high, open_ in ((self.lt, True), (self.le, False)):
            if high is not None:
                bad += [high + 1.0] + ([high] if open_ else [])
        return bad


class Reals(Constraint):
    """A non-empty sequence of numbers, each what ``Real(**bounds)`` accepts; returns a tuple of floats."""

    def __init__(self, **bounds):
        self.each = Real(**bounds)
        self.description = f"a non-empty sequence of numbers, each {self.each.description}"

    def check(self, name, value):
        if isinstance(value, torch.Tensor | np.ndarray) and value.ndim == 1:
            value = value.tolist()
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
            self.fail(name, value, TypeError if not isinstance(value, Sequence) or isinstance(value, str) else ValueError)
        try:
            return tuple(self.each.check(name, v) for v in value)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{name} must be {self.description}, got {shown(value)}") from None

    def bad_values(self):
        return [None, "text", [], 3.0] + [[v] for v in self.each.bad_values() if v is not None and v != [1.0]]


def Probability() -> Real:  # noqa: N802 (reads as a type beside Real and Integer)
    """A probability: a finite number in [0, 1]."""
    return Real(ge=0.0, le=1.0)


class Integer(Constraint):
    """A whole number in a range: ``Integer(min=1)``. Accepts int, NumPy integers and 0-d
    integer tensors (not bools, not floats, not even 3.0); returns an int."""

    def __init__(self, *, min: int | None = None, max: int | None = None):  # noqa: A002 (the natural words)
        self.min, self.max = min, max
        if min is not None and max is not None:
            self.description = f"an integer in [{min}, {max}]"
        elif min is not None:
            self.description = f"an integer >= {min}"
        elif max is not None:
            self.description = f"an integer <= {max}"
        else:
            self.description = "an integer"

    def check(self, name, value):
        if isinstance(value, bool) or not isinstance(value, (numbers.Integral, torch.Tensor, np.ndarray)):
            self.fail(name, value, TypeError)
        if isinstance(value, (torch.Tensor, np.ndarray)):
            dtype_ok = (value.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
                        if isinstance(value, torch.Tensor) else value.dtype.kind in "iu")  # fmt: skip
            if value.ndim != 0 or not dtype_ok:
                self.fail(name, value, TypeError)
        k = int(value)
        if (self.min is not None and k < self.min) or (self.max is not None and k > self.max):
            self.fail(name, value)
        return k

    def bad_values(self):
        bad = [None, "text", 2.5, NAN, INF]
        bad += [] if self.min is None else [self.min - 1]
        bad += [] if self.max is None else [self.max + 1]
        return bad


class OneOf(Constraint):
    """One of a fixed set of options (names of topologies, attacks, formats, ...)."""

    def __init__(self, *options):
        self.options = options
        self.description = f"one of {options!r}"

    def check(self, name, value):
        try:
            if value in self.options:
                return value
        except TypeError:  # an unhashable or incomparable value
            pass
        self.fail(name, value)

    def bad_values(self):
        return [None, "not an option", 3.5]


class Instance(Constraint):
    """An instance of a class (``Instance(FlatModel)``, ``Instance(torch.Generator)``)."""

    def __init__(self, *classes: type, description: str | None = None):
        self.classes = classes
        names = " or ".join(c.__name__ for c in classes)
        self.description = description or f"a {names}"

    def check(self, name, value):
        if not isinstance(value, self.classes):
            self.fail(name, value, TypeError)
        return value

    def bad_values(self):
        return [v for v in (None, "text", 2.5) if not isinstance(v, self.classes)]


class Function(Constraint):
    """Something callable (an aggregator, an attack, a metric)."""

    description = "callable"

    def check(self, name, value):
        if not callable(value):
            self.fail(name, value, TypeError)
        return value


def converted(value, *, floating: bool = True):
    """``value`` as the library takes a tensor: a list, tuple, NumPy array or number becomes a tensor
    (``torch.as_tensor``); with ``floating``, an integer tensor becomes the default float dtype,
    never truncated. Anything else comes back as it is, for a check to name."""
    if isinstance(value, (list, tuple, np.ndarray, numbers.Real)) and not isinstance(value, bool):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            return value
    if floating and isinstance(value, torch.Tensor) and not (value.dtype.is_floating_point or value.is_complex()
                                                             or value.dtype == torch.bool):  # fmt: skip
        value = value.to(torch.get_default_dtype())
    return value


class Tensor(Constraint):
    """A tensor of a given rank: lists and NumPy arrays are converted with ``torch.as_tensor``.

    Args:
        ndim: the allowed numbers of dimensions (one int or several).
        floating: integer tensors become the default float dtype (True), are kept (False).
        finite: reject NaN and infinite entries.
        empty: allow a tensor with no entries.
        integer: an integer tensor (indices, counts): floats are rejected, not rounded.
        boolean: also accept a bool tensor (an adjacency matrix), kept as it is.
        description: how the message names it, e.g. "a client matrix of shape (n_clients, d)".
    """

    def __init__(self, ndim: int | Sequence[int] | None = None, *, floating: bool = True, finite: bool = False,
                 empty: bool = False, integer: bool = False, boolean: bool = False,
                 description: str | None = None):  # fmt: skip
        self.ndim = (ndim,) if isinstance(ndim, int) else tuple(ndim) if ndim is not None else None
        self.floating, self.finite, self.empty, self.integer = floating and not integer, finite, empty, integer
        self.boolean = boolean
        rank = "" if self.ndim is None else " of " + " or ".join(f"{k} dimension{'s' * (k != 1)}" for k in self.ndim)
        self.description = description or f"a tensor{rank}"

    def check(self, name, value):
        value = converted(value, floating=False)
        if not isinstance(value, torch.Tensor) or (value.dtype == torch.bool and not self.boolean) or value.is_complex():
            self.fail(name, value, TypeError)
        if self.floating and not value.dtype.is_floating_point:
            value = value.to(torch.get_default_dtype())
        if self.integer and value.dtype.is_floating_point:
            self.fail(name, value, TypeError)
        if self.ndim is not None and value.dim() not in self.ndim:
            self.fail(name, value)
        if not self.empty and value.numel() == 0:
            self.fail(name, value)
        if self.finite and value.dtype.is_floating_point and not torch.isfinite(value).all():
            raise ValueError(f"{name} must be {self.description} with finite entries, got NaN or inf in it")
        return value

    def bad_values(self):
        bad = [None, "text", torch.zeros(0)]
        if self.ndim is not None:
            bad.append(torch.zeros(*([2] * (max(self.ndim) + 1))))
            bad.append(torch.tensor(1.0) if 0 not in self.ndim else torch.zeros(2, 2, 2, 2, 2))
        return bad


def Indices(*, empty: bool = False) -> Tensor:  # noqa: N802
    """A 1-D tensor of integer indices (a list is converted)."""
    return Tensor(1, integer=True, empty=empty, description="a 1-D tensor of integer indices")


def ClientMatrix(*, stack: bool = False, finite: bool = False) -> Tensor:  # noqa: N802
    """The client matrix (n_clients, d), or with ``stack`` also a stack of them (runs, n_clients, d)."""
    matrix = "a client matrix of shape (n_clients, d)"
    if stack:
        return Tensor((2, 3), finite=finite, description=f"{matrix} or a stack (runs, n_clients, d)")
    return Tensor(2, finite=finite, description=matrix)


@dataclass(frozen=True)
class Rule:
    """A relation between arguments, checked after each one alone: ``Rule("f", lambda X, f:
    2 * f < len(X), "f must be < n/2 for the n rows of X")``; the message may use the
    arguments by name: "f must be < n/2, got f={f} for n={X.shape[0]}"."""

    argument: str
    holds: Callable[..., bool]
    message: str | Callable[..., str]

    def check(self, arguments: dict) -> None:
        names, takes_all = _wanted(self.holds)
        given = arguments if takes_all else {k: arguments[k] for k in names}
        if not self.holds(**given):
            if callable(self.message):  # a message that computes what was expected
                raise ValueError(self.message(**given))
            raise ValueError(self.message.format(**{k: _InMessage(v) for k, v in arguments.items()}))


def every_entry(argument: str, holds: Callable[[torch.Tensor], torch.Tensor], bounds: str) -> Rule:
    """The Rule that ``argument``, a number or a tensor, is ``bounds`` in every entry: ``holds``
    maps it, as a tensor, to a bool tensor (``every_entry("sigma", lambda v: v >= 0, ">= 0")``).
    For ranges a number constraint cannot state alone: ``Real(ge=0) | Tensor()`` takes -1.0 as a tensor."""

    def message(**arguments) -> str:
        value = torch.as_tensor(arguments[argument])
        where = f" in a tensor of shape {tuple(value.shape)}" if value.dim() else ""
        return f"{argument} must be {bounds}, got {shown(value[~holds(value)].flatten()[0].item())}{where}"

    return Rule(argument, lambda **arguments: bool(holds(torch.as_tensor(arguments[argument])).all()), message)


@functools.cache
def _wanted(function) -> tuple[tuple[str, ...], bool]:
    """The argument names a Rule's function takes, and whether it takes them all (``**a``); read once."""
    parameters = inspect.signature(function).parameters
    return tuple(parameters), any(p.kind is p.VAR_KEYWORD for p in parameters.values())


class _InMessage:
    """An argument as a Rule's message shows it: a tensor's shape as a tuple, a value as ``shown``."""

    def __init__(self, value):
        self.value = value

    def __getattr__(self, name):
        attribute = getattr(self.value, name)
        return tuple(attribute) if isinstance(attribute, torch.Size) else attribute

    def __format__(self, spec):
        return format(self.value, spec) if spec else shown(self.value)

    def __repr__(self):
        return repr(self.value)


def FloatDtype() -> OneOf:  # noqa: N802
    """A floating-point dtype (a float algorithm never computes in integers)."""
    return OneOf(torch.float16, torch.bfloat16, torch.float32, torch.float64)


def constrain(*rules: Rule, **constraints: Constraint):
    """Declare the constraints of a function's arguments (see the module); check them on each call.

    On a class (a dataclass, say) the constraints are those of its ``__init__``, checked once
    per construction.

    Raises:
        TypeError: at decoration time, for a constraint on an argument the function lacks.
    """

    def decorate(function):
        if inspect.isclass(function):
            function.__init__ = decorate(function.__init__)
            return function
        signature = inspect.signature(function)
        unknown = set(constraints) - set(signature.parameters)
        if unknown:
            raise TypeError(f"{function.__qualname__} has no argument {sorted(unknown)}")

        @functools.wraps(function)
        def checked(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            for name, constraint in constraints.items():
                if name in bound.arguments:
                    bound.arguments[name] = constraint.check(name, bound.arguments[name])
            if rules:
                bound.apply_defaults()
                for rule in rules:
                    rule.check(bound.arguments)
            return function(*bound.args, **bound.kwargs)

        checked.__constraints__ = dict(constraints)
        checked.__rules__ = rules
        return checked

    return decorate


def Generator() -> Instance:  # noqa: N802
    """A torch.Generator (``mllib.setup()`` returns one)."""
    return Instance(torch.Generator, description="a torch.Generator (mllib.setup() returns one)")


def Generators() -> Instance:  # noqa: N802
    """A torch.Generator, or a sequence of them (one per client)."""
    return Instance(torch.Generator, list, tuple, description="a torch.Generator or a list of one per client")


class Integers(Reals):
    """A non-empty sequence of whole numbers, each what ``Integer(**bounds)`` accepts (seeds, step
    counts, channel widths); returns a tuple of ints."""

    def __init__(self, **bounds):
        self.each = Integer(**bounds)
        self.description = f"a non-empty sequence of integers, each {self.each.description}"
