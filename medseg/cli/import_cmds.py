"""``medseg import nnunet`` / ``medseg import monai-bundle`` / ``medseg import model-set``: models trained
elsewhere as medseg exports that ``medseg predict``/``medseg batch --model`` take like any other."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

import_app = typer.Typer(help="Import models trained elsewhere (nnU-Net v2, MONAI bundles) as medseg exports.",
                         no_args_is_help=True)

OUTPUT_OPTION = typer.Option(..., "--output", "--out", "-o", help="Export folder to write (model.json + model.pt).")


@import_app.command("nnunet")
def import_nnunet(
    model_folder: Path = typer.Argument(..., help="nnU-Net v2 model folder Dataset*/TRAINER__PLANS__CONFIG."),
    output: Path = OUTPUT_OPTION,
    folds: Optional[str] = typer.Option(None, "--folds", help="Comma list of folds, e.g. 0,1,2,3,4 or all (default: every fold found)."),
    checkpoint: str = typer.Option("final", "--checkpoint", help="final (checkpoint_final.pth) or best."),
) -> None:
    """Import an nnU-Net v2 trained-model folder (2d or 3d_fullres; no environment variables needed)."""
    from medseg.models.nnunet import import_model_folder

    fold_list = [f.strip() for f in folds.split(",") if f.strip()] if folds else None
    out = import_model_folder(model_folder, output, folds=fold_list, checkpoint=checkpoint)
    typer.echo(f"wrote {out}")


@import_app.command("monai-bundle")
def import_monai_bundle(
    bundle_dir: Path = typer.Argument(..., help="MONAI bundle folder (configs/inference.json, models/model.pt)."),
    output: Path = OUTPUT_OPTION,
) -> None:
    """Import a MONAI bundle: only its network_def and preprocessing transforms are read, under a whitelist."""
    from medseg.models.monai_bundle import import_bundle

    typer.echo(f"wrote {import_bundle(bundle_dir, output)}")


@import_app.command("model-set")
def import_model_set(
    models: list[Path] = typer.Argument(..., help="Imported exports (or nnU-Net folders), in priority order."),
    output: Path = OUTPUT_OPTION,
    overlap: str = typer.Option("first", "--overlap", help="Where two models label a voxel: first or last wins."),
) -> None:
    """Combine several models into one whose label maps merge (labels renumbered in model order)."""
    from medseg.inference.model_set import write_model_set

    typer.echo(f"wrote {write_model_set(models, output, overlap=overlap)}")


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")


__all__ = ["register", "import_app"]
