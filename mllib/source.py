"""The library's own code in a lecture: displayed from the source that runs, never a copy.

    show_source(federated.server_step)

shows the function's code, syntax-highlighted, as the module defines it, without what is not
the algorithm: the decorators that declare its argument constraints (``mllib.constraints``)
and the docstring (the lecture gives the update rule as math beside it). Editing the function
changes what the lecture shows (and nbval then asks for the notebook to be re-recorded).

A lecture also claims that what it displays is what its experiments ran: ``show_source`` marks
the function, and ``displayed_code_ran()`` later says whether every function displayed so far
has run since (``unrun_displayed()`` names those that have not).
"""
import ast
import inspect
import textwrap
import types
from collections.abc import Callable

from IPython.display import Code

from .constraints import Function, constrain

_displayed: set[str] = set()  # functions shown in this session, by qualified name
_ran: set[str] = set()  # displayed functions called since they were shown


@constrain(function=Function())
def show_source(function: Callable) -> Code:
    """The source of ``function`` (a function, method or class of mllib) as a displayable block.

    Args:
        function: what to show; it must be defined in mllib, where a lecture's experiment
            calls it (a lambda or a builtin has no source to show).

    Returns:
        An ``IPython.display.Code`` whose text is the module and name, then the source from the
        ``def`` (or ``class``) line on, without its docstring.

    Raises:
        TypeError: for an object that is not a function, method or class of mllib.
    """
    module = getattr(inspect.getmodule(function), "__name__", "")
    if not (inspect.isfunction(function) or inspect.ismethod(function) or inspect.isclass(function)):
        raise TypeError(f"function must be a function, method or class of mllib, got {type(function).__name__}")
    if module.split(".")[0] != "mllib" or function.__name__ == "<lambda>":
        raise TypeError(f"function must be defined in mllib (its source is what runs), got {function!r}")
    source = textwrap.dedent(inspect.getsource(function))
    lines = source.splitlines(keepends=True)
    definition = ast.parse(source).body[0]
    docstring = definition.body[0] if ast.get_docstring(definition) is not None else None
    kept = [line for number, line in enumerate(lines, 1)  # the def line on (decorators come before it)
            if number >= definition.lineno and not (docstring and docstring.lineno <= number <= docstring.end_lineno)]
    if not inspect.isclass(function):
        _watch(inspect.unwrap(function), f"{module}.{function.__qualname__}")
    return Code(f"# {module}.{function.__qualname__}\n{''.join(kept)}", language="python")


def _watch(function: types.FunctionType | types.MethodType, name: str) -> None:
    """Record each call of ``function`` from now on: its code is recompiled from its source with
    one statement first that notes the call, so every caller, however it holds the function,
    runs the marked code (line numbers unchanged)."""
    function = getattr(function, "__func__", function)  # a bound method's function
    code = function.__code__
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    definition = tree.body[0]
    definition.decorator_list = []  # the decorators already wrap the function object
    mark = ast.parse(f"__import__('mllib.source').source._ran.add({name!r})").body[0]
    definition.body.insert(0, ast.copy_location(mark, definition.body[0]))
    ast.increment_lineno(ast.fix_missing_locations(tree), code.co_firstlineno - 1)
    compiled = compile(tree, code.co_filename, "exec")
    marked = next(c for c in compiled.co_consts if isinstance(c, types.CodeType) and c.co_name == code.co_name)
    if marked.co_freevars == code.co_freevars:  # a closure (super() in a method) keeps its code, unwatched
        function.__code__ = marked
        _displayed.add(name)
        _ran.discard(name)


def unrun_displayed() -> list[str]:
    """The functions displayed with ``show_source`` that have not run since they were shown."""
    return sorted(_displayed - _ran)


def displayed_code_ran() -> bool:
    """Whether every function displayed with ``show_source`` has run since it was shown: the
    lecture's experiments called the code the lecture displays."""
    return not unrun_displayed()
