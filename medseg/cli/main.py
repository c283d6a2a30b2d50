"""The ``medseg`` command. Each sub-command lives in its own module under ``medseg.cli``;
those modules import only typer and the standard library at import time, so that
``medseg --help`` answers quickly. Heavy work is imported inside the command bodies.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

app = typer.Typer(
    name="medseg",
    help="Medical and general image segmentation: load, train, predict, evaluate, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module under medseg.cli, attribute) of each command; a module may also export a sub-app.
COMMAND_MODULES: tuple[str, ...] = (
    "io_cmds", "batch_cmds", "phantom_cmds", "predict_cmd", "evaluate_cmd", "train_cmds", "sam_cmds", "general_cmds",
    "pacs_cmds", "import_cmds",
    "convert_cmds",
)


def _register() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"medseg.cli.{name}")
        module.register(app)


def _print_version(value: bool) -> None:
    if value:
        from medseg import __version__

        typer.echo(f"medseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the medseg version and exit."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )


_register()


def main() -> None:
    """Console-script entry point: medseg errors become a one-line message and exit code 2."""
    from medseg.errors import MedsegError

    try:
        app()
    except MedsegError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
