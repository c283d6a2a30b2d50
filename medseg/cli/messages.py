"""Console messages shared by several commands (typer only)."""

from __future__ import annotations

from collections.abc import Sequence

import typer


def warn_unmatched(unmatched_references: Sequence[str], unmatched_predictions: Sequence[str]) -> None:
    """Warn on stderr about references and predictions that found no partner (first 10 of each named)."""
    for side, names in (("reference", unmatched_references), ("prediction", unmatched_predictions)):
        if names:
            shown = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
            typer.secho(f"warning: {len(names)} {side}(s) without a match, not evaluated: {shown}",
                        fg=typer.colors.YELLOW, err=True)


__all__ = ["warn_unmatched"]
