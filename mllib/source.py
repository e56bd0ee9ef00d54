"""The library's own code in a lecture: displayed from the source that runs, never a copy.

    show_source(federated.server_step)

shows the function's code, syntax-highlighted, as the module defines it, without what is not
the algorithm: the decorators that declare its argument constraints (``mllib.constraints``)
and the docstring (the lecture gives the update rule as math beside it). Editing the function
changes what the lecture shows (and nbval then asks for the notebook to be re-recorded).
"""
import ast
import inspect
import textwrap
from collections.abc import Callable

from IPython.display import Code


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
    return Code(f"# {module}.{function.__qualname__}\n{''.join(kept)}", language="python")
