"""``medseg evaluate``: score predicted label maps against references (CSV, JSON, box plots)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medseg.cli.messages import warn_unmatched
from medseg.cli.vocabulary import OUTPUT_NAMES, hidden_option, output_option, pick


def _parse_labels(text: Optional[str]) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        labels = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError as exc:
        raise typer.BadParameter(f"--labels expects comma-separated integers, got {text!r}") from exc
    if not labels or any(lab <= 0 for lab in labels):
        raise typer.BadParameter(f"--labels expects positive integers (0 is background), got {text!r}")
    return labels


def _parse_missing(text: str) -> str | float:
    if text in ("inf", "diagonal"):
        return text
    try:
        return float(text)
    except ValueError as exc:
        raise typer.BadParameter(f"--missing-distance expects inf, diagonal or a number of mm, got {text!r}") from exc


def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Predicted label file, or a folder of them (matched by name)."),
    ref: Path = typer.Option(..., "--ref", help="Reference label file, or a folder of them."),
    output: Optional[Path] = output_option("Output folder: metrics.csv, summary.json, boxplot_<metric>.png."),
    out: Optional[Path] = hidden_option("--out"),
    labels: Optional[str] = typer.Option(None, "--labels", help="Labels to evaluate, e.g. 1,2,3 (default: all found)."),
    label_names: Optional[Path] = typer.Option(
        None, "--label-names", help='JSON file {"1": "liver", ...}; its labels are evaluated unless --labels is given.'
    ),
    metrics: str = typer.Option(
        "dice,hd95,assd,nsd", "--metrics",
        help="Comma-separated: dice, iou, precision, recall, volume_difference, hd, hd95, assd, masd, nsd.",
    ),
    surface: str = typer.Option("voxel", "--surface", help="Boundary: voxel (equals MONAI) or surfel (equals DeepMind)."),
    tolerance_mm: float = typer.Option(2.0, "--tolerance-mm", help="NSD tolerance in mm."),
    missing_distance: str = typer.Option(
        "inf", "--missing-distance", help="Distance when one mask is empty: inf, diagonal, or mm."
    ),
    resample: bool = typer.Option(
        False, "--resample", help="Resample a prediction on another grid nearest-neighbour onto the reference."
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Cases evaluated in parallel (processes)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write a box plot PNG per metric."),
) -> None:
    """Evaluate predictions against references: per-case CSV, summary JSON and box plots."""
    out = pick(OUTPUT_NAMES, output, ("--out", out))
    from medseg.evaluation.volumes import evaluate_folder, load_label_names, match_cases

    names = load_label_names(label_names) if label_names else None
    pairs, _, _ = match_cases(pred, ref)
    from rich.progress import Progress

    with Progress(transient=True, disable=len(pairs) < 2) as progress:
        task = progress.add_task("evaluating", total=len(pairs))
        result = evaluate_folder(
            pred, ref, out,
            labels=_parse_labels(labels), label_names=names, metrics=metrics.split(","),
            surface=surface, tolerance_mm=tolerance_mm, missing_distance=_parse_missing(missing_distance),
            resample=resample, workers=workers, plots=plots,
            on_case=lambda case: progress.advance(task),
        )
    typer.echo(f"evaluated {result.summary['cases']} case(s); wrote {', '.join(str(f) for f in result.files)}")
    warn_unmatched(result.unmatched_references, result.unmatched_predictions)
    for lab, info in result.summary["labels"].items():
        stats = "  ".join(
            f"{m}={s['mean']:.4g}" + (f" ({s['n_inf']} inf)" if s["n_inf"] else "")
            for m, s in info["metrics"].items()
        )
        flags = f"missed={info['missed']} spurious={info['spurious']} empty={info['both_empty']}"
        typer.echo(f"  {info['name']:>12s}: {stats}  [{flags}]")


def register(app: typer.Typer) -> None:
    app.command()(evaluate)
