"""``medseg predict``: segment one study (image file or DICOM folder) with a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def predict(
    input: Path = typer.Argument(..., help="Image file (NIfTI/NRRD/MHA) or DICOM folder/file."),
    output_dir: Path = typer.Argument(..., help="Folder for the outputs (created)."),
    model: list[Path] = typer.Option(..., "--model", "-m", help="RUN_DIR or exported model folder; repeat for an ensemble."),
    formats: Optional[str] = typer.Option(
        None, "--formats", help="Comma list of nifti,dicomseg (default: nifti, plus dicomseg for DICOM input)."
    ),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cuda:1, cpu (default: CUDA when available)."),
    tta: bool = typer.Option(False, "--tta", help="Mirror test-time augmentation (8 flips in 3D)."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Also write class probabilities (float32, 4D NIfTI)."),
    series: Optional[str] = typer.Option(None, "--series", help="SeriesInstanceUID when the folder holds several."),
) -> None:
    """Segment one study; writes STEM_seg.nii.gz, STEM_seg.dcm (DICOM input) and STEM_prediction.json."""
    from medseg.inference import Predictor
    from medseg.inference.outputs import parse_formats, predict_to_files

    wanted = parse_formats(formats)
    predictor = Predictor.from_run(model if len(model) > 1 else model[0], device=device, tta=tta)
    record = predict_to_files(
        predictor, input, output_dir, formats=wanted, probabilities=probabilities, series_uid=series
    )
    for kind, path in record["outputs"].items():
        typer.echo(f"{kind:14s} {path}")
    t = record["timings_s"]
    typer.echo(f"done in {t['total']:.2f} s (network {t.get('network_s', 0.0):.2f} s)")


def register(app: typer.Typer) -> None:
    app.command()(predict)
