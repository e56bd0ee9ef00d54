"""The course's claims, each declared once: what it says, the band its number must fall in, where it is shown.

A notebook states a claim with the number it computed, ``claim("fedavg-drift-k20", drift[20])``;
the declaration lives in ``claims/<notebook path>.toml`` (for ``lectures/01_federated_learning.ipynb``,
``lectures/claims/01_federated_learning.toml``; the labs state the claims of their solutions)::

    [fedavg-drift-k20]
    says = "With K = 20, FedAvg's fixed point is about 0.19 away from the optimum"
    above = 0.1
    below = 0.2

A numeric claim bounds the measured number with ``above`` (>), ``at_least`` (>=), ``below`` (<),
``at_most`` (<=) or ``equals`` (==). A claim with no bound is a relation the notebook computes
(``claim("scaffold-beats-fedavg", acc["SCAFFOLD"].low > acc["FedAvg"].high)``), and holds when
that is ``True``. ``tests/test_notebooks.py`` reads the same declarations: every declared claim
is stated in a compared cell of its notebook, every stated claim is declared there, and two-sided
bands are at most 0.1 wide.
"""
import functools
import math
import numbers
import operator
import pathlib
import tomllib

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK_FOLDERS = ("lectures", "solutions")
BOUNDS = {"above": operator.gt, "at_least": operator.ge, "below": operator.lt, "at_most": operator.le,
          "equals": operator.eq}  # fmt: skip
SYMBOLS = {"above": ">", "at_least": ">=", "below": "<", "at_most": "<=", "equals": "=="}


class ClaimError(AssertionError):
    """A claim a notebook states does not hold for the number it computed."""


def declaration_file(notebook: pathlib.Path) -> pathlib.Path:
    """Where the claims of a notebook are declared: ``<folder>/claims/<stem>.toml``."""
    return notebook.parent / "claims" / f"{notebook.stem}.toml"


@functools.cache
def declared() -> dict[str, dict]:
    """Every declared claim by name, each with ``says``, its bounds and ``notebook`` (where it is shown)."""
    claims = {}
    for folder in NOTEBOOK_FOLDERS:
        for path in sorted((ROOT / folder / "claims").glob("*.toml")):
            notebook = f"{folder}/{path.stem}.ipynb"
            for name, declaration in tomllib.loads(path.read_text()).items():
                _check_declaration(name, declaration, path)
                if name in claims:
                    raise ValueError(f"claim {name!r} is declared twice: {claims[name]['notebook']} and {notebook}")
                claims[name] = {**declaration, "notebook": notebook}
    return claims


def _check_declaration(name: str, declaration: dict, path: pathlib.Path) -> None:
    unknown = set(declaration) - {"says", *BOUNDS}
    if unknown or not declaration.get("says"):
        raise ValueError(f"{path.name}: claim {name!r} needs 'says' and may have {sorted(BOUNDS)}, got {sorted(declaration)}")


def bounds(declaration: dict) -> dict[str, float]:
    """The numeric bounds of a declared claim ({} for a relation the notebook computes)."""
    return {key: declaration[key] for key in BOUNDS if key in declaration}


def claim(name: str, measured) -> None:
    """State the claim declared as ``name`` with the number (or relation) the notebook computed.

    Raises:
        KeyError: no claim of that name is declared.
        TypeError: a number where a relation is declared, or the other way round.
        ClaimError: the claim does not hold; the message says what it claims and what was measured.
    """
    claims = declared()
    if name not in claims:
        raise KeyError(f"no claim {name!r} is declared in lectures/claims/ or solutions/claims/")
    declaration = claims[name]
    measured = measured.item() if isinstance(measured, torch.Tensor) and measured.numel() == 1 else measured
    limits = bounds(declaration)
    if limits:
        if isinstance(measured, bool) or not isinstance(measured, numbers.Real) or math.isnan(measured):
            raise TypeError(f"claim {name!r} bounds a number, got {measured!r}")
        failed = [f"{SYMBOLS[key]} {limit}" for key, limit in limits.items() if not BOUNDS[key](measured, limit)]
        if failed:
            raise ClaimError(f"{declaration['says']}: measured {measured:.6g}, which is not {' and '.join(failed)}")
    elif not isinstance(measured, (bool, np.bool_)):
        raise TypeError(f"claim {name!r} is a relation: pass the comparison itself, got {measured!r}")
    elif not measured:
        raise ClaimError(f"{declaration['says']}: not so in this run")
