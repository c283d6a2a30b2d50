"""``medseg predict``: segment one study (image file or DICOM folder) with a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medseg.cli.vocabulary import INPUT_NAMES, OUTPUT_NAMES, hidden_argument, input_option, output_option, pick

# shared with `medseg batch`: how a SAM2 --model is prompted
PROMPT_MODEL_OPTION = typer.Option(
    None, "--prompt-model", help="SAM2 --model only: U-Net export whose prediction prompts SAM2.")
PROMPT_KIND_OPTION = typer.Option("box", "--prompt-kind", help="SAM2: box, points, box+points or mask.")
SAM_CONFIG_OPTION = typer.Option(
    None, "--config", help="SAM2 checkpoint only: architecture (tiny, small, base_plus, large, sam2.1_hiera_t, ...); "
    "default: read from the checkpoint.")
IMAGE_SIZE_OPTION = typer.Option(None, "--image-size", help="SAM2 only: input size in pixels (default: the checkpoint's).")
SAM_MODE_OPTION = typer.Option("propagate", "--sam-mode", help="SAM2: propagate (whole volume) or slices (key slices).")


def predict(
    input: Optional[Path] = input_option("Image file (NIfTI/NRRD/MHA) or DICOM folder/file."),
    output: Optional[Path] = output_option("Folder for the outputs (created)."),
    input_arg: Optional[Path] = hidden_argument("INPUT"),
    output_arg: Optional[Path] = hidden_argument("OUTPUT"),
    model: list[Path] = typer.Option(..., "--model", "-m", help="RUN_DIR or exported model folder; repeat for an ensemble."),
    formats: Optional[str] = typer.Option(
        None, "--formats", help="Comma list of nifti,dicomseg (default: nifti, plus dicomseg for DICOM input)."
    ),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cuda:1, cpu (default: CUDA when available)."),
    tta: bool = typer.Option(False, "--tta", help="Mirror test-time augmentation (8 flips in 3D)."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Also write class probabilities (float32, 4D NIfTI)."),
    series: Optional[str] = typer.Option(None, "--series", help="SeriesInstanceUID when the folder holds several."),
    prompt_model: Optional[Path] = PROMPT_MODEL_OPTION,
    prompt_mask: Optional[Path] = typer.Option(
        None, "--prompt-mask", help="SAM2 --model only: label map on the input grid that prompts SAM2."),
    prompt_kind: str = PROMPT_KIND_OPTION,
    sam_mode: str = SAM_MODE_OPTION,
    sam_config: Optional[str] = SAM_CONFIG_OPTION,
    image_size: Optional[int] = IMAGE_SIZE_OPTION,
) -> None:
    """Segment one study; writes STEM_seg.nii.gz, STEM_seg.dcm (DICOM input) and STEM_prediction.json.

    --model is a U-Net export (repeat for an ensemble) or a SAM2 export/checkpoint, which
    then needs --prompt-model or --prompt-mask.
    """
    input = pick(INPUT_NAMES, input, ("INPUT", input_arg))
    output_dir = pick(OUTPUT_NAMES, output, ("OUTPUT", output_arg))
    _check_input(input)  # before torch is imported and the model loaded
    from medseg.inference.factory import PromptSettings, load_segmenter
    from medseg.inference.outputs import parse_formats, predict_to_files

    wanted = parse_formats(formats)
    predictor = load_segmenter(model if len(model) > 1 else model[0], device=device, tta=tta,
                               prompt_model=prompt_model, prompt_labels_given=prompt_mask is not None,
                               prompts=PromptSettings(kind=prompt_kind, mode=sam_mode, sam_config=sam_config,
                                                      image_size=image_size))
    record = predict_to_files(
        predictor, input, output_dir, formats=wanted, probabilities=probabilities, series_uid=series,
        prompt_mask=prompt_mask,
    )
    for kind, path in record["outputs"].items():
        typer.echo(f"{kind:14s} {path}")
    t = record["timings_s"]
    typer.echo(f"done in {t['total']:.2f} s (network {t.get('network_s', 0.0):.2f} s)")


def _check_input(path: Path) -> None:
    """Refuse a missing input, or one that is neither a folder nor a regular file (a FIFO blocks)."""
    import os

    from medseg.errors import InputError

    if not os.path.lexists(path):
        raise InputError(f"{path}: no such file or folder")
    if not path.is_dir():
        from medseg.io import require_regular_file

        require_regular_file(path)


def register(app: typer.Typer) -> None:
    app.command()(predict)
