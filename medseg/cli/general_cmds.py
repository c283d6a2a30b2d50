"""``medseg evaluate-images`` (score folders of ordinary-image label masks) and ``medseg predict-images``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from medseg.cli.messages import warn_unmatched
from medseg.cli.vocabulary import INPUT_NAMES, OUTPUT_NAMES, hidden_option, input_option, output_option, pick


TASKS = ("semantic", "instance", "panoptic")


def evaluate_images(
    pred: Path = typer.Option(..., "--pred", help="Predictions: a folder of masks (semantic: matched by stem; instance/"
                                                  "panoptic: <stem>_instances.png + .json), or a COCO results / "
                                                  "panoptic JSON."),
    ref: Path = typer.Option(..., "--ref", help="References: a folder of masks (semantic), a COCO instances/panoptic "
                                                "JSON or an instance dataset folder (instance_masks, coco, yolo_seg)."),
    output: Optional[Path] = output_option("Output folder: metrics.csv, summary.json and a per-class bar chart."),
    out: Optional[Path] = hidden_option("--out"),
    task: str = typer.Option("semantic", "--task",
                             help="semantic (mIoU/mDice/aAcc), instance (mask AP through pycocotools, Boundary IoU "
                                  "of matches) or panoptic (PQ/SQ/RQ)."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", min=1,
                                              help="Classes 0..N-1, background included (semantic; required)."),
    ignore_index: int = typer.Option(
        255, "--ignore-index", help="Reference value left out of every metric (a negative value: none; semantic)."
    ),
    class_names: Optional[Path] = typer.Option(
        None, "--class-names", help='JSON: ["background", "cat", ...] or {"0": "background", ...}.'
    ),
    boundary: bool = typer.Option(
        True, "--boundary/--no-boundary",
        help="Boundary IoU: per image and class (semantic), of matched instances (instance)."),
    max_detections: int = typer.Option(100, "--max-detections", min=1,
                                       help="instance: detections kept per image by score (COCO's maxDets)."),
) -> None:
    """Evaluate predictions on ordinary images: semantic masks (mIoU), instances (mask AP) or panoptic (PQ)."""
    out = pick(OUTPUT_NAMES, output, ("--out", out))
    if task not in TASKS:
        raise typer.BadParameter(f"--task {task!r}: known: {', '.join(TASKS)}")
    if task != "semantic":
        _evaluate_instances(task, pred, ref, out, class_names, boundary, max_detections)
        return
    if num_classes is None:
        raise typer.BadParameter("--num-classes is required for --task semantic")
    from medseg.evaluation.images import evaluate_image_folder, load_class_names

    names = load_class_names(class_names, num_classes) if class_names else None
    result = evaluate_image_folder(pred, ref, out, num_classes=num_classes,
                                   ignore_index=ignore_index if ignore_index >= 0 else None,
                                   class_names=names, boundary=boundary)
    data = result.summary["dataset"]
    typer.echo(f"evaluated {result.summary['images']} image(s); wrote {', '.join(str(f) for f in result.files)}")
    warn_unmatched(result.unmatched_references, result.unmatched_predictions)
    typer.echo(f"  mIoU={data['miou']:.4f}  mDice={data['mdice']:.4f}  mAcc={data['macc']:.4f}  "
               f"aAcc={data['aacc']:.4f}")
    for c, info in result.summary["classes"].items():
        iou = "n/a" if info["iou"] != info["iou"] else f"{info['iou']:.4f}"
        typer.echo(f"  {c:>3s} {info['name']:>14s}: IoU={iou}  [missed={info['missed']} spurious={info['spurious']}]")


def _f(value: float) -> str:
    return "n/a" if value != value else f"{value:.4f}"


def _evaluate_instances(task: str, pred: Path, ref: Path, out: Path, class_names: Optional[Path], boundary: bool,
                        max_detections: int) -> None:
    """``--task instance|panoptic``: score, then print the table."""
    from medseg.io.tables import read_name_mapping

    names = read_name_mapping(class_names, noun="class")[1] if class_names else None
    if task == "instance":
        from medseg.evaluation.instances import evaluate_instances

        result = evaluate_instances(pred, ref, out, class_names=names, boundary=boundary,
                                    max_detections=max_detections)
        coco, overall = result.summary["coco"], result.summary["overall"]
        typer.echo(f"evaluated {result.summary['images']} image(s) (pycocotools, segm); wrote "
                   f"{', '.join(str(f) for f in result.files)}")
        warn_unmatched(result.unmatched_references, result.unmatched_predictions)
        typer.echo(f"  AP={_f(coco['AP'])}  AP50={_f(coco['AP50'])}  AP75={_f(coco['AP75'])}  "
                   f"AR{max_detections}={_f(coco['AR100'])}  Boundary IoU (matches @0.5)={_f(overall['boundary_iou'])}")
        for r in result.rows:
            typer.echo(f"  {r['class']:>3d} {r['name']:>14s}: AP={_f(r['ap'])}  AP50={_f(r['ap50'])}  "
                       f"AP75={_f(r['ap75'])}  [ref={r['ref_instances']} pred={r['pred_instances']} "
                       f"matched@0.5={r['matched50']}]")
        return
    from medseg.evaluation.panoptic import evaluate_panoptic

    presult = evaluate_panoptic(pred, ref, out, class_names=names)
    typer.echo(f"evaluated {presult.summary['images']} image(s) (panoptic); wrote "
               f"{', '.join(str(f) for f in presult.files)}")
    warn_unmatched(presult.unmatched_references, presult.unmatched_predictions)
    for group in ("all", "things", "stuff"):
        g = presult.summary[group]
        typer.echo(f"  {group:>6s}: PQ={_f(g['pq'])}  SQ={_f(g['sq'])}  RQ={_f(g['rq'])}  (classes: {g['n']})")
    for r in presult.rows:
        typer.echo(f"  {r['class']:>3d} {r['name']:>14s}: PQ={_f(r['pq'])}  SQ={_f(r['sq'])}  RQ={_f(r['rq'])}  "
                   f"[TP={r['tp']} FP={r['fp']} FN={r['fn']}{' thing' if r['isthing'] else ' stuff'}]")


def predict_images(
    model: Path = typer.Option(..., "--model", "-m",
                               help="Export folder (model.json + model.pt) of a 2D model, or a medseg train run folder."),
    input: Optional[Path] = input_option("Folder of images (PNG, JPEG, TIFF, BMP)."),
    output: Optional[Path] = output_option("Folder for <stem>.png masks and predictions.jsonl."),
    device: Optional[str] = typer.Option(None, "--device", help="cuda, cuda:1, cpu (default: CUDA when available)."),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Images per forward pass."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Predict again images whose mask exists."),
    mode: Optional[str] = typer.Option(
        None, "--mode", help="whole (pad to the model's multiple), slide (windows, logits averaged) or resize "
                             "(default: the export's inference.image_mode, else whole)."),
    window: Optional[str] = typer.Option(None, "--window", help="slide window HxW in pixels (e.g. 512x1024)."),
    stride: Optional[str] = typer.Option(None, "--stride", help="slide stride HxW in pixels (default 2/3 window)."),
    size: Optional[str] = typer.Option(None, "--size", help="resize target HxW in pixels."),
) -> None:
    """Segment a folder of ordinary images with an exported 2D model; exit status 1 if any image failed."""
    input, output = pick(INPUT_NAMES, input), pick(OUTPUT_NAMES, output)
    from medseg.inference.images import RECORDS_NAME, predict_image_folder

    records = predict_image_folder(model, input, output, device=device, batch_size=batch_size, overwrite=overwrite,
                                   mode=mode, window=_size(window, "--window"), stride=_size(stride, "--stride"),
                                   size=_size(size, "--size"))
    counts = {s: sum(r["status"] == s for r in records) for s in ("ok", "skipped", "failed")}
    typer.echo(f"{len(records)} image(s): {counts['ok']} segmented, {counts['skipped']} skipped (mask exists), "
               f"{counts['failed']} failed; records in {output / RECORDS_NAME}")
    failed = [r for r in records if r["status"] == "failed"]
    for r in failed[:10]:
        typer.secho(f"  failed: {r['error']}", fg=typer.colors.RED, err=True)
    if len(failed) > 10:
        typer.secho(f"  ... and {len(failed) - 10} more", fg=typer.colors.RED, err=True)
    if failed:
        raise typer.Exit(1)


def _size(text: Optional[str], option: str) -> Optional[tuple[int, int]]:
    """``"512x1024"`` -> ``(512, 1024)``; ``"512"`` -> ``(512, 512)``."""
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise typer.BadParameter(f"{option} {text!r}: expected HxW in pixels, e.g. 512x1024")
    h, w = int(parts[0]), int(parts[-1])
    return h, w


def register(app: typer.Typer) -> None:
    app.command("evaluate-images")(evaluate_images)
    app.command("predict-images")(predict_images)
