"""``medseg info`` and ``medseg convert``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import typer

from medseg.cli.vocabulary import INPUT_NAMES, OUTPUT_NAMES, hidden_argument, input_option, output_option, pick

_SERIES_COLUMNS = ("series_uid", "modality", "description", "images", "size", "orientation", "geometry", "first_file")
_META_KEYS = ("format", "modality", "series_uid", "number_of_slices", "rescale", "patient_geometry", "resampled",
              "resample_reason")

log = logging.getLogger(__name__)


def _volume_summary(volume: Any) -> dict[str, Any]:
    summary = volume.summary()
    for key in _META_KEYS:
        if key in volume.meta:
            summary[key] = volume.meta[key]
    summary["warnings"] = list(volume.meta.get("warnings", []))
    return summary


def info(
    input: Optional[Path] = input_option("DICOM folder/file, NIfTI, NRRD or MHA."),
    input_arg: Optional[Path] = hidden_argument("PATH"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    series: Optional[str] = typer.Option(
        None, "--series", help="Load this SeriesInstanceUID from a DICOM folder and describe the volume."
    ),
    resample: bool = typer.Option(False, "--resample", help="With --series: resample tilt/uneven spacing."),
) -> None:
    """Describe an image: the series in a DICOM folder (with a geometry verdict each), or the
    shape, spacing (mm), orientation, value range and geometry warnings of one volume."""
    path: Path = pick(INPUT_NAMES, input, ("PATH", input_arg))
    from medseg.io import list_series, load

    if path.is_dir() and series is None:
        rows = [s.to_dict() for s in list_series(path)]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        console = Console()
        if not console.is_terminal:
            console = Console(width=240)  # piped output: keep UIDs on one line
        table = Table(title=f"{len(rows)} image series under {path}")
        for col in _SERIES_COLUMNS:
            table.add_column(col, no_wrap=col in ("series_uid", "orientation", "size"), overflow="fold")
        for r in rows:
            desc = r["description"] + (" [localizer]" if r["localizer"] else "")
            first = Path(r["first_file"])
            values = {
                **r,
                "description": desc,
                "size": "x".join(str(v) for v in r["size"]),
                "first_file": first.relative_to(path) if first.is_relative_to(path) else first,
            }
            table.add_row(*(str(values.get(c, "")) for c in _SERIES_COLUMNS))
        console.print(table)
        return
    volume = load(path, series_uid=series, resample=resample)
    summary = _volume_summary(volume)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for key, value in summary.items():
        if key == "warnings":
            continue
        typer.echo(f"{key:16s} {value}")
    for warning in summary["warnings"]:
        typer.secho(f"warning          {warning}", fg=typer.colors.YELLOW)


def convert(
    input: Optional[Path] = input_option("Input image (DICOM folder/file, NIfTI, NRRD, MHA)."),
    output: Optional[Path] = output_option("Output file (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd)."),
    input_arg: Optional[Path] = hidden_argument("INPUT"),
    output_arg: Optional[Path] = hidden_argument("OUTPUT"),
    series: Optional[str] = typer.Option(None, "--series", help="SeriesInstanceUID to convert."),
    resample: bool = typer.Option(False, "--resample", help="Resample tilted/unevenly spaced series onto a regular grid."),
) -> None:
    """Convert an image between formats, keeping voxels and geometry exactly."""
    input = pick(INPUT_NAMES, input, ("INPUT", input_arg))
    output = pick(OUTPUT_NAMES, output, ("OUTPUT", output_arg))
    from medseg.io import load, save

    volume = load(input, series_uid=series, resample=resample)
    if volume.meta.get("patient_geometry") is False:
        log.warning("%s: no ImagePositionPatient/ImageOrientationPatient (%s): the geometry written to %s is "
                    "made up (identity orientation at the origin)", input, volume.meta.get("modality") or "?", output)
    save(volume, output)
    typer.echo(f"wrote {output}: {volume}")
    if volume.meta.get("resampled"):
        typer.secho(f"resampled: {volume.meta.get('resample_reason')}", fg=typer.colors.YELLOW)


def register(app: typer.Typer) -> None:
    app.command()(info)
    app.command()(convert)
