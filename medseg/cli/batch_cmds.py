"""``medseg batch``, ``medseg report`` and ``medseg demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from medseg.cli.predict_cmd import (
    IMAGE_SIZE_OPTION, PROMPT_KIND_OPTION, PROMPT_MODEL_OPTION, SAM_CONFIG_OPTION, SAM_MODE_OPTION,
)
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
    max_retries: int = typer.Option(2, "--max-retries", min=0,
                                    help="Re-runs of a study whose worker died, before 'lost' (0 or more)."),
    study_timeout: float = typer.Option(
        3600.0, "--study-timeout", min=1.0, max=1e7,
        help="Seconds one study may take (local and Dask backends); past it the study is recorded 'failed: timed out' "
             "and the batch goes on."),
    prompt_model: Optional[Path] = PROMPT_MODEL_OPTION,
    prompt_masks: Optional[Path] = typer.Option(
        None, "--prompt-masks", help="SAM2 --model only: folder of per-study prompt label maps (named like references)."),
    prompt_kind: str = PROMPT_KIND_OPTION,
    sam_mode: str = SAM_MODE_OPTION,
    sam_config: Optional[str] = SAM_CONFIG_OPTION,
    image_size: Optional[int] = IMAGE_SIZE_OPTION,
    dry_run: bool = typer.Option(False, "--dry-run", help="List the studies found (with --pacs: the series) and exit."),
    as_json: bool = typer.Option(False, "--json", help="With --dry-run: print JSON."),
    pacs: Optional[str] = typer.Option(
        None, "--pacs", help="DICOMweb root URL (https://host/dicom-web) or DIMSE service dicom://AE_TITLE@host:port: "
        "take the studies from this PACS instead of --input.",
        rich_help_panel="PACS"),
    where: list[str] = typer.Option(
        [], "--where", help="With --pacs: KEY=VALUE DICOM matching key (repeatable), e.g. Modality=CT.",
        rich_help_panel="PACS"),
    series: list[str] = typer.Option([], "--series", help="With --pacs: a SeriesInstanceUID (repeatable).",
                                     rich_help_panel="PACS"),
    series_file: Optional[Path] = typer.Option(
        None, "--series-file", help="With --pacs: a file of SeriesInstanceUIDs, one per line (# comments).",
        rich_help_panel="PACS"),
    push: bool = typer.Option(False, "--push", help="With --pacs: send each DICOM-SEG to its study (STOW-RS or "
                              "C-STORE), verified.",
                              rich_help_panel="PACS"),
    max_series: int = typer.Option(200, "--max-series", help="With --pacs: refuse a query matching more series.",
                                   rich_help_panel="PACS"),
    keep_cache: bool = typer.Option(False, "--keep-cache", help="With --pacs: keep OUTPUT/pacs_cache (the fetched "
                                    "series); else it is removed once its series are done.", rich_help_panel="PACS"),
    auth: str = typer.Option("auto", "--auth", help="With --pacs: auto, none, basic (MEDSEG_PACS_USER/"
                             "MEDSEG_PACS_PASSWORD) or bearer (MEDSEG_PACS_TOKEN).", rich_help_panel="PACS"),
    auth_file: Optional[Path] = typer.Option(
        None, "--auth-file", help="With --pacs: 0600 file with user:password (basic) or the token (bearer).",
        rich_help_panel="PACS"),
    insecure_http: bool = typer.Option(False, "--insecure-http", help="With --pacs: allow http:// or dicom:// to a "
                                       "host that is not loopback (unencrypted).", rich_help_panel="PACS"),
    calling_ae: Optional[str] = typer.Option(
        None, "--calling-ae", help="With a dicom:// --pacs: medseg's AE title, registered there as a modality "
        "(default MEDSEG, or $MEDSEG_PACS_CALLING_AE).", rich_help_panel="PACS"),
    prefetch: int = typer.Option(1, "--prefetch", min=0, max=64, help="With --pacs: series fetched ahead of the workers while they "
                                 "segment (0: fetch and segment in turn).", rich_help_panel="PACS"),
) -> None:
    """Segment every study under a folder, or the series a PACS query selects (--pacs); one manifest line per
    study; exit status 1 if any failed."""
    pacs_given = {"--where": where, "--series": series, "--series-file": series_file, "--push": push,
                  "--keep-cache": keep_cache, "--auth-file": auth_file, "--insecure-http": insecure_http,
                  "--calling-ae": calling_ae}
    if pacs is None and any(pacs_given.values()):
        raise typer.BadParameter(f"{', '.join(k for k, v in pacs_given.items() if v)} need(s) --pacs",
                                 param_hint="'--pacs'")
    if pacs is not None and input is not None:
        raise typer.BadParameter("give --input or --pacs, not both", param_hint="'--pacs'")
    input, output = pick(INPUT_NAMES, input, required=pacs is None), pick(OUTPUT_NAMES, output)
    from rich.console import Console

    console = Console(stderr=True)
    options = dict(workers=workers, backend=backend, scheduler=scheduler, resume=resume, reference_dir=reference,
                   formats=[f.strip() for f in formats.split(",") if f.strip()], device=device, tta=tta,
                   max_retries=max_retries, study_timeout=study_timeout, prompt_model=prompt_model, prompt_masks=prompt_masks,
                   prompt_kind=prompt_kind, sam_mode=sam_mode, sam_config=sam_config, image_size=image_size)
    if pacs is not None:
        _pacs_batch(console, model, pacs, output, where=where, series=series, series_file=series_file, push=push,
                    max_series=max_series, keep_cache=keep_cache, auth=auth, auth_file=auth_file,
                    insecure_http=insecure_http, calling_ae=calling_ae, prefetch=prefetch, dry_run=dry_run,
                    as_json=as_json, options=options)
        return
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
        result = run_batch(model, input, output, on_start=on_start, on_record=on_record, **options)
    console.print(summary_table(result))
    console.print(f"manifest: {output / 'manifest.jsonl'}")
    if result.report is not None:
        console.print(f"report:   {result.report}")
    raise typer.Exit(result.exit_code)


def _pacs_batch(console: Any, model: Path, pacs: str, output: Path, *, where: list[str], series: list[str],
                series_file: Optional[Path], push: bool, max_series: int, keep_cache: bool, auth: str,
                auth_file: Optional[Path], insecure_http: bool, calling_ae: Optional[str], prefetch: int,
                dry_run: bool, as_json: bool, options: dict[str, Any]) -> None:
    """``medseg batch --pacs``: :func:`medseg.batch.pacs_source.run_pacs_batch` with a progress bar."""
    from medseg.batch.pacs_source import read_series_file, run_pacs_batch, select_series
    from medseg.cli.pacs_cmds import _client

    if options["reference_dir"] is not None or options["prompt_masks"] is not None:
        raise typer.BadParameter("--reference and --prompt-masks need --input (matched by file path)",
                                 param_hint="'--pacs'")
    uids = [*series, *(read_series_file(series_file) if series_file else [])]
    with _client(pacs, auth, auth_file, insecure_http, calling_ae) as client:
        if dry_run:
            refs, missing = select_series(client, where=where, series=uids, max_series=max_series)
            rows = [r.to_dict() for r in refs] + [{"series_uid": u, "error": str(e)} for u, e in missing]
            typer.echo(json.dumps(rows, indent=1) if as_json else
                       "\n".join(f"{r['series_uid']}  {r.get('modality', '')}  {r.get('n_instances') or ''}  "
                                 f"{r.get('series_description', r.get('error', ''))}" for r in rows))
            return
        from medseg.batch.progress import rich_progress

        progress, on_start, on_record = rich_progress(console)
        with progress:
            result = run_pacs_batch(model, client, output, where=where, series=uids, max_series=max_series,
                                    push=push, keep_cache=keep_cache, prefetch=prefetch, on_start=on_start,
                                    on_record=on_record,
                                    **{k: v for k, v in options.items() if k not in ("reference_dir", "prompt_masks")})
    table = summary_table(result)
    table.add_row("series selected", str(result.series))
    table.add_row("series fetched", str(len(result.fetched)))
    if push:
        table.add_row("SEG pushed", str(sum(p["status"] == "ok" for p in result.pushes)))
        table.add_row("push failed", str(sum(p["status"] != "ok" for p in result.pushes)))
    console.print(table)
    console.print(f"manifest: {output / 'manifest.jsonl'}")
    if push:
        console.print(f"pushed:   {output / 'pushed.jsonl'}")
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
