"""One spelling of inputs and outputs for every ``medseg`` command.

A command that reads one thing takes it as ``--input/-i``; one that writes takes ``--output/-o``
(``evaluate`` keeps ``--pred``/``--ref`` for its two inputs). The spellings used before (a
positional input or output, ``--out``, ``sam2 prompts --mask``) still work as hidden aliases,
so older scripts keep running; :func:`pick` merges an option with its aliases.
typer, click and the standard library only (imported by ``medseg --help``).
"""

from __future__ import annotations

from typing import Any

import typer

INPUT_NAMES = ("--input", "-i")
OUTPUT_NAMES = ("--output", "-o")


def input_option(help: str) -> Any:
    """``--input/-i`` with no default: :func:`pick` checks it was given under one spelling."""
    return typer.Option(None, *INPUT_NAMES, help=help, show_default=False)


def output_option(help: str) -> Any:
    """``--output/-o`` with no default: :func:`pick` checks it was given under one spelling."""
    return typer.Option(None, *OUTPUT_NAMES, help=help, show_default=False)


def hidden_option(*names: str) -> Any:
    """An old option spelling, accepted and left out of ``--help``."""
    return typer.Option(None, *names, hidden=True)


def hidden_argument(metavar: str) -> Any:
    """An old positional spelling, optional and left out of the option list of ``--help``
    (the usage line still shows ``[METAVAR]``)."""
    return typer.Argument(None, hidden=True, show_default=False, metavar=metavar)


def pick(names: tuple[str, ...], value: Any, *aliases: tuple[str, Any], required: bool = True) -> Any:
    """The value of an option given under its spelling ``names`` or one of its old ``aliases``
    (``(spelling, value)`` pairs, ``None`` when not given).

    Raises:
        typer.BadParameter: when it is given twice with different values, or is required and
            missing (a usage error: exit status 2).
    """
    hint = " / ".join(f"'{n}'" for n in names)
    given = [(names[0], value)] if value is not None else []
    given += [(spelling, v) for spelling, v in aliases if v is not None]
    if len({str(v) for _, v in given}) > 1:
        shown = ", ".join(f"{spelling} {v}" for spelling, v in given)
        raise typer.BadParameter(f"given twice with different values ({shown}); give it once", param_hint=hint)
    if given:
        return given[0][1]
    if required:
        raise typer.BadParameter("missing: this option is required", param_hint=hint)
    return None


__all__ = ["INPUT_NAMES", "OUTPUT_NAMES", "input_option", "output_option", "hidden_option", "hidden_argument", "pick"]
