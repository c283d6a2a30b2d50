"""``medseg import nnunet`` / ``medseg import monai-bundle`` / ``medseg import model-set``: models trained
elsewhere as medseg exports that ``medseg predict``/``medseg batch --model`` take like any other."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medseg.cli.vocabulary import (
    INPUT_NAMES, OUTPUT_NAMES, hidden_argument, hidden_option, input_option, output_option, pick,
)

import_app = typer.Typer(help="Import models trained elsewhere (nnU-Net v2, MONAI bundles) as medseg exports.",
                         no_args_is_help=True)

OUTPUT_HELP = "Export folder to write (model.json + model.pt)."


@import_app.command("nnunet")
def import_nnunet(
    input: Optional[Path] = input_option("nnU-Net v2 model folder Dataset*/TRAINER__PLANS__CONFIG."),
    output: Optional[Path] = output_option(OUTPUT_HELP),
    model_folder: Optional[Path] = hidden_argument("MODEL_FOLDER"),
    out: Optional[Path] = hidden_option("--out"),
    folds: Optional[str] = typer.Option(None, "--folds", help="Comma list of folds, e.g. 0,1,2,3,4 or all (default: every fold found)."),
    checkpoint: str = typer.Option("final", "--checkpoint", help="final (checkpoint_final.pth) or best."),
) -> None:
    """Import an nnU-Net v2 trained-model folder (2d or 3d_fullres; no environment variables needed)."""
    model_folder = pick(INPUT_NAMES, input, ("MODEL_FOLDER", model_folder))
    output = pick(OUTPUT_NAMES, output, ("--out", out))
    from medseg.models.nnunet import import_model_folder

    fold_list = [f.strip() for f in folds.split(",") if f.strip()] if folds else None
    out = import_model_folder(model_folder, output, folds=fold_list, checkpoint=checkpoint)
    typer.echo(f"wrote {out}")


@import_app.command("monai-bundle")
def import_monai_bundle(
    input: Optional[Path] = input_option("MONAI bundle folder (configs/inference.json, models/model.pt)."),
    output: Optional[Path] = output_option(OUTPUT_HELP),
    bundle_dir: Optional[Path] = hidden_argument("BUNDLE_DIR"),
    out: Optional[Path] = hidden_option("--out"),
) -> None:
    """Import a MONAI bundle: only its network_def and preprocessing transforms are read, under a whitelist."""
    bundle_dir = pick(INPUT_NAMES, input, ("BUNDLE_DIR", bundle_dir))
    output = pick(OUTPUT_NAMES, output, ("--out", out))
    from medseg.models.monai_bundle import import_bundle

    typer.echo(f"wrote {import_bundle(bundle_dir, output)}")


@import_app.command("model-set")
def import_model_set(
    models: list[Path] = typer.Argument(..., help="Imported exports (or nnU-Net folders), in priority order."),
    output: Optional[Path] = output_option(OUTPUT_HELP),
    out: Optional[Path] = hidden_option("--out"),
    overlap: str = typer.Option("first", "--overlap", help="Where two models label a voxel: first or last wins."),
) -> None:
    """Combine several models into one whose label maps merge (labels renumbered in model order)."""
    output = pick(OUTPUT_NAMES, output, ("--out", out))
    from medseg.inference.model_set import write_model_set

    typer.echo(f"wrote {write_model_set(models, output, overlap=overlap)}")


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")


__all__ = ["register", "import_app"]
