"""``medseg phantom``: write synthetic CT cases (nnU-Net dataset or DICOM studies)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medseg.cli.vocabulary import OUTPUT_NAMES, hidden_argument, output_option, pick


def phantom(
    output: Optional[Path] = output_option("Output folder."),
    output_arg: Optional[Path] = hidden_argument("OUTPUT"),
    cases: int = typer.Option(3, "--cases", "-n", min=1, help="Number of cases."),
    fmt: str = typer.Option("nnunet", "--format", help="nnunet (NIfTI dataset + dataset.json) or dicom (CT series + label NIfTI)."),
    shape: tuple[int, int, int] = typer.Option((96, 96, 64), "--shape", help="Voxels along i j k."),
    spacing: tuple[float, float, float] = typer.Option((2.0, 2.0, 2.5), "--spacing", help="Voxel size in mm along i j k."),
    seed: int = typer.Option(0, "--seed", help="Case n uses seed + n."),
    noise_hu: float = typer.Option(20.0, "--noise-hu", help="Noise standard deviation in HU."),
    orientation: str = typer.Option("LPS", "--orientation", help="Axis code of i j k, e.g. LPS or RAS."),
    oblique_deg: float = typer.Option(0.0, "--oblique-deg", help="Rotate the grid by this angle (degrees)."),
    transfer_syntax: str = typer.Option(
        "explicit_le", "--transfer-syntax", help="DICOM only: explicit_le, implicit_le, deflate, rle, jpeg2000, jpegls."
    ),
    dataset_name: str = typer.Option("Dataset001_Phantom", "--dataset-name", help="nnU-Net dataset folder name."),
) -> None:
    """Write deterministic synthetic CT cases with exact label maps (liver, kidneys, spleen, lungs, spine, tumour)."""
    output = pick(OUTPUT_NAMES, output, ("OUTPUT", output_arg))
    from medseg.data.cohort import write_cohort

    out = write_cohort(
        output, cases, shape=shape, spacing=spacing, seed=seed, fmt=fmt, dataset_name=dataset_name,
        noise_hu=noise_hu, transfer_syntax=transfer_syntax, orientation=orientation, oblique_deg=oblique_deg,
    )
    typer.echo(f"wrote {cases} {fmt} phantom case(s) to {out}")


def register(app: typer.Typer) -> None:
    app.command()(phantom)
