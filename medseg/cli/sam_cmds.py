"""``medseg sam2 ...``: promptable SAM2 segmentation (sub-app; typer + stdlib only at import)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from medseg.cli.vocabulary import INPUT_NAMES, OUTPUT_NAMES, hidden_option, input_option, output_option, pick

sam2_app = typer.Typer(
    name="sam2",
    help="SAM2: segment slices or whole volumes from points, boxes or masks (local checkpoints only).",
    no_args_is_help=True,
)


def _preprocess(window: Optional[str], level: Optional[float], width: Optional[float], mr: bool):
    from medseg.sam.preprocess import Preprocess

    if mr:
        return Preprocess(mode="mr")
    if level is not None or width is not None:
        return Preprocess(mode="ct", level=level, width=width)
    if window is not None:
        return Preprocess(mode="ct", window=window)
    return None


def _numbers(text: str, n: tuple[int, ...], what: str) -> list[float]:
    from medseg.errors import ConfigError

    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ConfigError(f"{what} {text!r}: expected comma-separated numbers") from None
    if len(values) not in n:
        raise ConfigError(f"{what} {text!r}: expected {' or '.join(map(str, n))} numbers, got {len(values)}")
    return values


def _cli_prompts(points: list[str], box: Optional[str], coordinates: str, object_id: int, axis: int) -> dict:
    """The prompts JSON document for --point/--box (parsed against the volume later)."""
    item: dict = {"object_id": object_id}
    if points:
        parsed = [_numbers(p, (3, 4), "--point") for p in points]
        item["points"] = [p[:3] for p in parsed]
        item["point_labels"] = [int(p[3]) if len(p) == 4 else 1 for p in parsed]
    if box:
        b = _numbers(box, (6,), "--box")
        item["box"] = [b[:3], b[3:]]
    return {"coordinates": coordinates, "axis": axis, "prompts": [item]}


@sam2_app.command("segment")
def segment(
    model: Path = typer.Option(..., "--model", help="Checkpoint: Meta's .pt ({'model': ...}), a medseg fine-tune .pt, or an export folder."),
    input: Optional[Path] = input_option("Study: DICOM folder/file, NIfTI, NRRD or MHA."),
    output: Optional[Path] = output_option("Output folder."),
    out: Optional[Path] = hidden_option("--out"),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="Prompts JSON (world or voxel coordinates)."),
    point: Optional[list[str]] = typer.Option(None, "--point", help="Prompt point 'x,y,z' or 'x,y,z,label' (label 1 inside, 0 outside); repeatable."),
    box: Optional[str] = typer.Option(None, "--box", help="Prompt box: two corners 'x0,y0,z0,x1,y1,z1' on one slice."),
    coordinates: str = typer.Option("world", "--coordinates", help="For --point/--box: world (RAS+ mm) or voxel (i,j,k)."),
    object_id: int = typer.Option(1, "--object-id", help="For --point/--box: label value of the object."),
    prompt_mask: Optional[Path] = typer.Option(None, "--prompt-mask", help="Derive prompts from this label map (same grid)."),
    prompt_kind: str = typer.Option("box", "--prompt-kind", help="With --prompt-mask: box, points, box+points or mask."),
    key_slices: str = typer.Option("largest", "--key-slices", help="With --prompt-mask: largest, center, all or a step N."),
    axis: int = typer.Option(2, "--axis", help="Slice axis of the prompts (0, 1, 2 = i, j, k)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="With --prompt-mask: label values to prompt, e.g. 1,4 (default: all)."),
    mode: str = typer.Option("propagate", "--mode", help="propagate (whole volume) or slices (prompted slices only)."),
    config: Optional[str] = typer.Option(None, "--config", help="SAM2 architecture (tiny, small, base_plus, large, sam2.1_hiera_t, ...) when the checkpoint does not say."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Model input size (default: checkpoint's, else 1024; 512 is ~4x faster on CPU)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: CUDA when available)."),
    window: Optional[str] = typer.Option(None, "--window", help="CT window preset: abdomen, liver, lung, bone, brain, ..."),
    level: Optional[float] = typer.Option(None, "--level", help="Custom CT window level (HU), with --width."),
    width: Optional[float] = typer.Option(None, "--width", help="Custom CT window width (HU), with --level."),
    mr: bool = typer.Option(False, "--mr", help="Percentile scaling (MR or uncalibrated images)."),
    series: Optional[str] = typer.Option(None, "--series", help="SeriesInstanceUID when the DICOM folder holds several."),
    formats: Optional[str] = typer.Option(None, "--formats", help="nifti,dicomseg (default: NIfTI, plus DICOM-SEG for DICOM input)."),
) -> None:
    """Segment a study from prompts (file or mask) and write NIfTI / DICOM-SEG + prompts + a JSON record."""
    input, out = pick(INPUT_NAMES, input), pick(OUTPUT_NAMES, output, ("--out", out))
    from medseg.errors import ConfigError
    from medseg.models.sam2 import load_sam2
    from medseg.inference.sam2 import segment_study

    fmt = None
    if formats:
        fmt = tuple(f.strip() for f in formats.split(",") if f.strip())
        bad = [f for f in fmt if f not in ("nifti", "dicomseg")]
        if bad:
            raise ConfigError(f"--formats: unknown {bad}; known: nifti, dicomseg")
    ks: str | int = int(key_slices) if key_slices.isdigit() else key_slices
    try:
        wanted = [int(v) for v in labels.split(",") if v.strip()] if labels else None
    except ValueError:
        raise ConfigError(f"--labels: expected comma-separated integers, got {labels!r}") from None
    if point or box:
        if prompts is not None or prompt_mask is not None:
            raise ConfigError("give --point/--box, --prompts or --prompt-mask, not several")
        prompts = _cli_prompts(point or [], box, coordinates, object_id, axis)
    net = load_sam2(model, config=config, image_size=image_size, device=device)
    record = segment_study(
        net, input, out, prompts=prompts, prompt_mask=prompt_mask, prompt_kind=prompt_kind, key_slices=ks,
        labels=wanted, axis=axis, mode=mode, preprocess=_preprocess(window, level, width, mr), series_uid=series, formats=fmt,
    )
    typer.echo(json.dumps(record["outputs"], indent=2))


@sam2_app.command("prompts")
def prompts_cmd(
    input: Optional[Path] = input_option("Label map (reference or a model's prediction)."),
    output: Optional[Path] = output_option("Prompts JSON to write (world coordinates, mm)."),
    mask: Optional[Path] = hidden_option("--mask"),
    out: Optional[Path] = hidden_option("--out"),
    kind: str = typer.Option("box", "--kind", help="box, points, box+points or mask."),
    key_slices: str = typer.Option("largest", "--key-slices", help="largest, center, all or a step N."),
    axis: int = typer.Option(2, "--axis", help="Slice axis (0, 1, 2 = i, j, k)."),
    margin: float = typer.Option(0.0, "--margin", help="Voxels added on each side of boxes."),
    positives: int = typer.Option(1, "--positives", help="Positive points per prompt (point kinds)."),
    negatives: int = typer.Option(0, "--negatives", help="Negative points per prompt (point kinds)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the point sampling."),
) -> None:
    """Derive SAM2 prompts from a label map and write them as JSON (no per-case CSV needed)."""
    mask, out = pick(INPUT_NAMES, input, ("--mask", mask)), pick(OUTPUT_NAMES, output, ("--out", out))
    from medseg.io import load
    from medseg.sam.prompts import prompts_from_mask, save_prompts

    ks: str | int = int(key_slices) if key_slices.isdigit() else key_slices
    volume = load(mask)
    plist = prompts_from_mask(volume, axis=axis, kind=kind, key_slices=ks, n_positive=positives,
                              n_negative=negatives, margin=margin, seed=seed)
    save_prompts(plist, out, volume=volume)
    typer.echo(f"{len(plist)} prompt(s) -> {out}")


@sam2_app.command("configs")
def configs() -> None:
    """List the SAM2 architectures that can be built (from the installed sam2 package)."""
    from medseg.models.sam2 import ALIASES, CONFIGS

    for name, path in CONFIGS.items():
        aliases = [a for a, target in ALIASES.items() if target == name]
        typer.echo(f"{name:16s} {path}  {'aliases: ' + ', '.join(aliases) if aliases else ''}")


def register(app: typer.Typer) -> None:
    app.add_typer(sam2_app, name="sam2")


__all__ = ["register", "sam2_app"]
