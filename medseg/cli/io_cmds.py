"""``medseg info`` and ``medseg convert``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def info(
    path: Path = typer.Argument(..., help="DICOM folder/file, NIfTI, NRRD or MHA."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Describe an image: the series in a DICOM folder, or shape/spacing/orientation of a volume."""
    from medseg.io import list_series, load

    if path.is_dir():
        series = list_series(path)
        rows = [s.to_dict() for s in series]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{len(rows)} series under {path}")
        for col in ("series_uid", "modality", "description", "images", "size", "orientation"):
            table.add_column(col)
        for r in rows:
            table.add_row(*(str(r.get(c, "")) for c in ("series_uid", "modality", "description", "images", "size", "orientation")))
        Console().print(table)
        return
    volume = load(path)
    summary = volume.summary()
    summary["warnings"] = volume.meta.get("warnings", [])
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for key, value in summary.items():
        typer.echo(f"{key:12s} {value}")


def convert(
    input: Path = typer.Argument(..., help="Input image (DICOM folder/file, NIfTI, NRRD, MHA)."),
    output: Path = typer.Argument(..., help="Output file; format from the extension."),
    series: Optional[str] = typer.Option(None, "--series", help="SeriesInstanceUID to convert."),
    resample: bool = typer.Option(False, "--resample", help="Resample tilted/unevenly spaced series onto a regular grid."),
) -> None:
    """Convert an image between formats, keeping voxels and geometry exactly."""
    from medseg.io import load, save

    volume = load(input, series_uid=series, resample=resample)
    save(volume, output)
    typer.echo(f"wrote {output}: {volume}")


def register(app: typer.Typer) -> None:
    app.command()(info)
    app.command()(convert)
