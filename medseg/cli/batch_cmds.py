"""``medseg batch``, ``medseg report`` and ``medseg demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from medseg.cli.predict_cmd import PROMPT_KIND_OPTION, PROMPT_MODEL_OPTION, SAM_MODE_OPTION
from medseg.cli.vocabulary import (
    INPUT_NAMES, OUTPUT_NAMES, hidden_argument, hidden_option, input_option, output_option, pick,
)


def summary_table(result: Any) -> Any:
    """A rich table of a batch result: counts, throughput, mean stage times."""
    from rich.table import Table

    from medseg.report.html import summarize

    summary = summarize(result.records)
    table = Table(title=f"batch summary - {result.output_dir}")
    table.add_column("item")
    table.add_column("value", justify="right")
    for key in ("ok", "failed", "lost"):
        table.add_row(key, str(summary[key]))
    table.add_row("skipped (already complete)", str(result.skipped))
    table.add_row("wall time (s)", f"{result.elapsed_s:.1f}")
    table.add_row("studies / min", f"{result.studies_per_minute:.2f}")
    for stage, secs in summary["mean_timings_s"].items():
        table.add_row(f"mean {stage} (s)", f"{secs:.3f}")
    if summary["mean_dice"] is not None:
        table.add_row("mean Dice", f"{summary['mean_dice']:.4f}")
    return table


def batch(
    model: Path = typer.Option(..., "--model", "-m", help="Run folder or exported model folder (model.json + model.pt)."),
    input: Optional[Path] = input_option("Folder searched recursively for DICOM series and NIfTI/NRRD/MHA files."),
    output: Optional[Path] = output_option("Output folder: studies/, manifest.jsonl, report.html."),
    workers: int = typer.Option(1, "--workers", "-j", help="Worker processes; each loads the model once."),
    backend: str = typer.Option("local", "--backend", help="local (processes on this machine) or dask."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask scheduler address (default: a LocalCluster)."),
    resume: bool = typer.Option(False, "--resume", help="Skip studies already complete (checksums verified); run the rest."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Folder of reference label maps: evaluate every study."),
    formats: str = typer.Option("nifti,dicomseg", "--formats", help="Comma-separated: nifti, dicomseg (DICOM inputs only)."),
    device: Optional[str] = typer.Option(None, "--device", help="torch device (default: CUDA when available)."),
    tta: bool = typer.Option(False, "--tta", help="Mirror test-time augmentation."),
    max_retries: int = typer.Option(2, "--max-retries", help="Re-runs of a study whose worker died, before 'lost'."),
    prompt_model: Optional[Path] = PROMPT_MODEL_OPTION,
    prompt_masks: Optional[Path] = typer.Option(
        None, "--prompt-masks", help="SAM2 --model only: folder of per-study prompt label maps (named like references)."),
    prompt_kind: str = PROMPT_KIND_OPTION,
    sam_mode: str = SAM_MODE_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="List the studies found and exit."),
    as_json: bool = typer.Option(False, "--json", help="With --dry-run: print JSON."),
) -> None:
    """Segment every study under a folder; one manifest line per study; exit status 1 if any failed."""
    input, output = pick(INPUT_NAMES, input), pick(OUTPUT_NAMES, output)
    from rich.console import Console

    console = Console(stderr=True)
    if dry_run:
        from medseg.batch.discover import discover_studies, format_listing

        excluded = [output] + [p for p in (reference, prompt_masks) if p]
        rows = format_listing(discover_studies(input, exclude=excluded))
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        from rich.table import Table

        table = Table(title=f"{len(rows)} studies under {input}")
        for col in ("study_id", "kind", "files", "series_uid", "description"):
            table.add_column(col)
        for r in rows:
            table.add_row(*(str(r[c]) for c in ("study_id", "kind", "files", "series_uid", "description")))
        Console().print(table)
        return

    from medseg.batch.runner import run_batch

    from medseg.batch.progress import rich_progress

    progress, on_start, on_record = rich_progress(console)
    with progress:
        result = run_batch(
            model, input, output, workers=workers, backend=backend, scheduler=scheduler, resume=resume,
            reference_dir=reference, formats=[f.strip() for f in formats.split(",") if f.strip()], device=device,
            tta=tta, max_retries=max_retries, on_start=on_start, on_record=on_record, prompt_model=prompt_model,
            prompt_masks=prompt_masks, prompt_kind=prompt_kind, sam_mode=sam_mode,
        )
    console.print(summary_table(result))
    console.print(f"manifest: {output / 'manifest.jsonl'}")
    if result.report is not None:
        console.print(f"report:   {result.report}")
    raise typer.Exit(result.exit_code)


def report(
    input: Optional[Path] = input_option("A `medseg batch` output folder."),
    output: Optional[Path] = output_option("HTML file to write (default INPUT/report.html)."),
    input_arg: Optional[Path] = hidden_argument("RUN_DIR"),
    out: Optional[Path] = hidden_option("--out"),
    max_overlays: int = typer.Option(200, "--max-overlays", help="Embed overlays of at most this many studies."),
) -> None:
    """Write the self-contained HTML report of a batch run (summary, table of studies, overlays)."""
    run_dir = pick(INPUT_NAMES, input, ("RUN_DIR", input_arg))
    out = pick(OUTPUT_NAMES, output, ("--out", out), required=False)
    from medseg.report.html import write_report

    path = write_report(run_dir, out, max_overlays=max_overlays)
    typer.echo(f"wrote {path}")


def demo(
    output: Optional[Path] = output_option("Output folder (the trained model is cached here) [default: demo_output]."),
    out: Optional[Path] = hidden_option("--out"),
    fast: bool = typer.Option(False, "--fast", help="A reduced demo: 2 tiny cases, a few training steps (tests)."),
    workers: int = typer.Option(2, "--workers", "-j", help="Batch worker processes."),
    retrain: bool = typer.Option(False, "--retrain", help="Train again even when a cached model exists."),
) -> None:
    """Synthetic CT cohort -> train a small 3D U-Net -> batch segment (DICOM-SEG + NIfTI) -> evaluate -> report."""
    out = pick(OUTPUT_NAMES, output, ("--out", out), required=False) or Path("demo_output")
    from rich.console import Console

    from medseg.demo import run_demo

    console = Console(stderr=True)
    result = run_demo(out, fast=fast, workers=workers, retrain=retrain, console=console)
    for line in result.lines():
        typer.echo(line)
    raise typer.Exit(0 if result.success else 1)


def register(app: typer.Typer) -> None:
    app.command()(batch)
    app.command()(report)
    app.command()(demo)
