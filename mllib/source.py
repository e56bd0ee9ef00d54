"""The library's own code in a lecture: displayed from the source that runs, never a copy.

    show_source(federated.server_step)

shows the function's source, syntax-highlighted, as the module defines it, from its ``def``
on: the decorators that declare its argument constraints (``mllib.constraints``) are checks,
not the algorithm. Editing the function changes what the lecture shows (and nbval then asks
for the notebook to be re-recorded).
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
        ``def`` (or ``class``) line on.

    Raises:
        TypeError: for an object that is not a function, method or class of mllib.
    """
    module = getattr(inspect.getmodule(function), "__name__", "")
    if not (inspect.isfunction(function) or inspect.ismethod(function) or inspect.isclass(function)):
        raise TypeError(f"function must be a function, method or class of mllib, got {type(function).__name__}")
    if module.split(".")[0] != "mllib" or function.__name__ == "<lambda>":
        raise TypeError(f"function must be defined in mllib (its source is what runs), got {function!r}")
    source = textwrap.dedent(inspect.getsource(function))
    start = ast.parse(source).body[0].lineno - 1  # the def line: decorators come before it
    body = "".join(source.splitlines(keepends=True)[start:])
    return Code(f"# {module}.{function.__qualname__}\n{body}", language="python")
