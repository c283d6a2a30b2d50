"""Evaluate folders of predicted label masks against reference masks (ordinary 2D images).

:func:`evaluate_image_folder` is the logic behind ``medseg evaluate-images``. Files are
matched by stem (``cat_01.png`` with ``cat_01.tif``); files on one side only are listed in
the summary, the result and the log, never dropped silently.

Dataset metrics follow mmsegmentation's ``IoUMetric``: one confusion matrix summed over
every image (pixels whose reference is ``ignore_index`` left out), then per class
``IoU = I / U``, ``Dice = 2I / (P + R)``, ``Acc = I / R``; ``mIoU``, ``mDice`` and ``mAcc`` are
the means over classes that occur (NaN classes, absent from every prediction and
reference, are skipped) and ``aAcc`` (pixel accuracy) is ``trace / total``. Every class,
background (0) included, counts. Labels outside ``[0, num_classes)`` (other than
``ignore_index`` in the reference) are an error naming the file.

Outputs in ``out_dir``:

- ``metrics.csv``: one row per image and class (``image, class, name, status, pred_pixels,
  ref_pixels, dice, iou, boundary_iou``); ``status`` is ``ok``, ``missed``, ``spurious`` or
  ``both_empty`` (metrics NaN);
- ``summary.json``: dataset metrics, per class IoU/Dice/Acc and the
  :func:`medseg.metrics.summarize` statistics of the per-image values, the confusion
  matrix ``[ref, pred]``, unmatched files and the settings (NaN written as ``null``);
- ``iou_per_class.png``: a bar chart of the dataset IoU per class with the mIoU line.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.io.tables import json_safe, read_name_mapping, write_csv
from medseg.plots.charts import iou_bar_chart
from medseg.io.images import IMAGE_SUFFIXES, files_by_stem, read_mask
from medseg.evaluation.pairs import check_matches
from medseg.io.atomic import write_text_atomic

log = logging.getLogger(__name__)

PROGRESS_MIN_IMAGES = 20  # a progress bar is shown from this many images on (progress=None)
CSV_COLUMNS = ["image", "class", "name", "status", "pred_pixels", "ref_pixels", "dice", "iou", "boundary_iou"]


@dataclass
class ImageEvaluationResult:
    """What :func:`evaluate_image_folder` computed and wrote.

    Attributes:
        rows: one dict per image and class (the CSV rows).
        summary: the ``summary.json`` content (NaN kept as float NaN here).
        confusion: dataset confusion matrix ``[ref_class, pred_class]`` (pixel counts).
        files: paths written.
        unmatched_predictions: prediction files without a reference (names).
        unmatched_references: reference files without a prediction (names).
    """

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    confusion: np.ndarray
    files: list[Path] = field(default_factory=list)
    unmatched_predictions: list[str] = field(default_factory=list)
    unmatched_references: list[str] = field(default_factory=list)


def match_images(pred_dir: Path, ref_dir: Path) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Pair prediction and reference masks by file stem.

    Returns:
        ``(pairs, unmatched_prediction_files, unmatched_reference_files)``; pairs are
        ``(stem, pred_path, ref_path)`` sorted by stem; unmatched are file names.
    """
    preds, refs = files_by_stem(pred_dir), files_by_stem(ref_dir)
    if not refs:
        raise InputError(f"{ref_dir}: no reference masks ({', '.join(IMAGE_SUFFIXES)})")
    pairs = [(s, preds[s], refs[s]) for s in sorted(refs) if s in preds]
    return (pairs, sorted(preds[s].name for s in set(preds) - set(refs)),
            sorted(refs[s].name for s in set(refs) - set(preds)))


def load_class_names(path: str | os.PathLike[str], num_classes: int | None = None) -> list[str]:
    """Class names from JSON: a list ``["background", "cat", ...]``, ``{"0": "background", ...}``
    or ``{"background": 0, ...}``. Classes not named get their number as name."""
    p = Path(path)
    raw, mapping = read_name_mapping(p, noun="class")
    if not mapping:
        raise InputError(f"{p}: expected a JSON list of names or an object mapping class numbers to names")
    n = num_classes if num_classes is not None else max(mapping) + 1
    bad = sorted(k for k in mapping if not 0 <= k < n)
    if bad:
        raise InputError(f"{p}: class number(s) {bad} outside [0, {n})")
    return [mapping.get(i, str(i)) for i in range(n)]


def _check_labels(arr: np.ndarray, keep: np.ndarray | None, num_classes: int, path: Path, side: str) -> None:
    values = arr if keep is None else arr[keep]
    if values.size and int(values.max()) >= num_classes:
        bad = np.unique(values[values >= num_classes])[:5].tolist()
        raise InputError(f"{path}: {side} mask holds label(s) {bad} outside [0, {num_classes})"
                         + (" (and not the ignore index)" if side == "reference" and keep is not None else ""))


def _boundary_ious(pred: np.ndarray, ref: np.ndarray, keep: np.ndarray | None, classes: Sequence[int],
                   dilation_ratio: float) -> dict[int, float]:
    """Boundary IoU per class (Cheng et al. 2021 bands); ignored pixels are left out of both bands."""
    from medseg.metrics.boundary import boundary_band, boundary_iou

    out: dict[int, float] = {}
    for c in classes:
        p, r = pred == c, ref == c
        if keep is None:
            out[c] = boundary_iou(p, r, dilation_ratio=dilation_ratio)
            continue
        bp = boundary_band(p & keep, dilation_ratio=dilation_ratio) & keep
        br = boundary_band(r, dilation_ratio=dilation_ratio) & keep
        union = int(np.count_nonzero(bp | br))
        out[c] = float(np.count_nonzero(bp & br) / union) if union else float("nan")
    return out


def pair_confusion(pred: np.ndarray, ref: np.ndarray, *, num_classes: int, ignore_index: int | None,
                   pred_name: str | os.PathLike[str] = "prediction",
                   ref_name: str | os.PathLike[str] = "reference") -> tuple[np.ndarray, np.ndarray | None]:
    """Confusion matrix ``[ref, pred]`` of one ``[H, W]`` mask pair, pixels whose reference is
    ``ignore_index`` left out; also the kept-pixel mask (``None`` when nothing is ignored).

    The one per-image step of ``medseg evaluate-images`` and of ordinary-image training's validation.

    Raises:
        InputError: sizes differ, or a label outside ``[0, num_classes)`` (naming the file).

    Example:
        >>> pair_confusion(np.array([[0, 1]]), np.array([[0, 255]]), num_classes=2, ignore_index=255)[0].tolist()
        [[1, 0], [0, 0]]
    """
    from medseg.metrics import confusion

    if pred.shape != ref.shape:
        raise InputError(f"{pred_name}: prediction size {pred.shape[1]}x{pred.shape[0]} (WxH) differs from "
                         f"reference {ref_name} size {ref.shape[1]}x{ref.shape[0]}")
    keep = None
    if ignore_index is not None and (ref == ignore_index).any():
        keep = ref != ignore_index
    _check_labels(ref, keep, num_classes, Path(ref_name), "reference")
    _check_labels(pred, keep, num_classes, Path(pred_name), "prediction")
    cm = confusion(pred if keep is None else pred[keep], ref if keep is None else ref[keep], num_classes)
    return cm, keep


def _evaluate_pair(stem: str, pred_path: Path, ref_path: Path, *, num_classes: int, ignore_index: int | None,
                   boundary: bool, dilation_ratio: float) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Confusion matrix and per-class rows of one image."""
    from medseg.metrics import overlap_from_confusion

    ref = read_mask(ref_path)
    pred = read_mask(pred_path)
    cm, keep = pair_confusion(pred, ref, num_classes=num_classes, ignore_index=ignore_index,
                              pred_name=pred_path, ref_name=ref_path)
    stats = overlap_from_confusion(cm, labels=range(num_classes))
    present = [s["label"] for s in stats if s["pred_voxels"] or s["ref_voxels"]]
    bious = _boundary_ious(pred, ref, keep, present, dilation_ratio) if boundary else {}
    rows = []
    for s in stats:
        n_p, n_r = s["pred_voxels"], s["ref_voxels"]
        status = "ok" if n_p and n_r else "missed" if n_r else "spurious" if n_p else "both_empty"
        rows.append({"image": stem, "class": s["label"], "status": status, "pred_pixels": n_p, "ref_pixels": n_r,
                     "dice": s["dice"], "iou": s["iou"], "boundary_iou": bious.get(s["label"], float("nan"))})
    return cm, rows


def dataset_metrics(cm: np.ndarray) -> dict[str, Any]:
    """mmsegmentation-style metrics of a confusion matrix ``[ref, pred]``: per class IoU, Dice, Acc
    (NaN for classes absent from predictions and references) and aAcc, mIoU, mDice, mAcc."""
    from medseg.metrics import overlap_from_confusion

    cm = np.asarray(cm, dtype=np.int64)
    stats = overlap_from_confusion(cm, labels=range(cm.shape[0]))
    iou = np.array([s["iou"] for s in stats])
    dice = np.array([s["dice"] for s in stats])
    acc = np.array([s["recall"] for s in stats])
    total = int(cm.sum())

    def nanmean(a: np.ndarray) -> float:
        finite = a[~np.isnan(a)]
        return float(finite.mean()) if finite.size else float("nan")

    return {"aacc": float(np.trace(cm) / total) if total else float("nan"), "miou": nanmean(iou),
            "mdice": nanmean(dice), "macc": nanmean(acc), "iou": iou.tolist(), "dice": dice.tolist(),
            "acc": acc.tolist(), "pred_pixels": cm.sum(axis=0).tolist(), "ref_pixels": cm.sum(axis=1).tolist()}


def evaluate_image_folder(
    pred_dir: str | os.PathLike[str],
    ref_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    num_classes: int,
    ignore_index: int | None = 255,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    boundary: bool = True,
    dilation_ratio: float = 0.02,
    plots: bool = True,
    progress: bool | None = None,
    on_image: Callable[[str], None] | None = None,
) -> ImageEvaluationResult:
    """Evaluate every prediction mask against the reference mask of the same stem.

    Args:
        pred_dir, ref_dir: folders of ``[H, W]`` label masks (PNG, TIFF, BMP; palette PNGs
            give their indices), matched by file stem.
        out_dir: output folder (created): ``metrics.csv``, ``summary.json``, ``iou_per_class.png``.
        num_classes: classes ``0 .. num_classes - 1`` (background included).
        ignore_index: reference value whose pixels are left out (``None``: none).
        class_names: one name per class (a list, or a mapping class -> name).
        boundary: compute the per-image Boundary IoU per class (``dilation_ratio`` of the
            image diagonal, Cheng et al. 2021).
        plots: write the IoU bar chart.
        progress: show a rich progress bar (``None``: when there are at least
            :data:`PROGRESS_MIN_IMAGES` images).
        on_image: called with each image stem when it is evaluated.

    Raises:
        InputError: no match at all, unreadable or colour masks, size mismatch, labels out
            of range (messages name the file).
        ConfigError: ``num_classes`` below 1 or class names of the wrong length.
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    names = _class_names(class_names, num_classes)
    pairs, only_pred, only_ref = match_images(Path(pred_dir), Path(ref_dir))
    check_matches(pairs, only_pred, only_ref, pred=pred_dir, ref=ref_dir, noun="image", how=" by file stem")
    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    rows: list[dict[str, Any]] = []
    image_miou: list[float] = []
    show = len(pairs) >= PROGRESS_MIN_IMAGES if progress is None else progress
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True, disable=not show) as bar:
        task = bar.add_task("evaluating images", total=len(pairs))
        for stem, p, r in pairs:
            cm, image_rows = _evaluate_pair(stem, p, r, num_classes=num_classes, ignore_index=ignore_index,
                                            boundary=boundary, dilation_ratio=dilation_ratio)
            total += cm
            for row in image_rows:
                row["name"] = names[row["class"]]
            rows.extend(image_rows)
            ious = np.array([row["iou"] for row in image_rows], dtype=np.float64)
            image_miou.append(float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan"))
            bar.advance(task)
            if on_image:
                on_image(stem)
    summary = _summary(total, rows, names, boundary, image_miou)
    summary.update(
        images=len(pairs), unmatched_predictions=only_pred, unmatched_references=only_ref,
        settings={"num_classes": num_classes, "ignore_index": ignore_index, "boundary": boundary,
                  "dilation_ratio": dilation_ratio, "pred_dir": str(pred_dir), "ref_dir": str(ref_dir)},
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "metrics.csv", out / "summary.json"]
    write_csv(files[0], rows, CSV_COLUMNS)
    write_text_atomic(files[1], json.dumps(json_safe(summary), indent=2) + "\n")
    if plots:
        files.append(out / "iou_per_class.png")
        iou_bar_chart(files[-1], names, summary["dataset"]["iou"], summary["dataset"]["miou"])
    return ImageEvaluationResult(rows, summary, total, files, only_pred, only_ref)


def _class_names(class_names: Sequence[str] | Mapping[int, str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(num_classes)]
    if isinstance(class_names, Mapping):
        bad = sorted(k for k in class_names if not 0 <= int(k) < num_classes)
        if bad:
            raise ConfigError(f"class_names has class number(s) {bad} outside [0, {num_classes})")
        return [str(class_names.get(i, i)) for i in range(num_classes)]
    names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ConfigError(f"class_names has {len(names)} names for num_classes={num_classes}")
    return names


def _summary(cm: np.ndarray, rows: list[dict[str, Any]], names: Sequence[str], boundary: bool,
             image_miou: list[float]) -> dict[str, Any]:
    from medseg.metrics import summarize

    data = dataset_metrics(cm)
    metrics = ["dice", "iou", "boundary_iou"] if boundary else ["dice", "iou"]
    classes = {}
    for c, name in enumerate(names):
        mine = [r for r in rows if r["class"] == c]
        statuses = [r["status"] for r in mine]
        classes[str(c)] = {
            "name": name, "iou": data["iou"][c], "dice": data["dice"][c], "acc": data["acc"][c],
            "pred_pixels": data["pred_pixels"][c], "ref_pixels": data["ref_pixels"][c],
            "missed": statuses.count("missed"), "spurious": statuses.count("spurious"),
            "both_empty": statuses.count("both_empty"),
            "per_image": {m: summarize([r[m] for r in mine]) for m in metrics},
        }
    finite = [v for v in image_miou if math.isfinite(v)]
    return {
        "dataset": {"aacc": data["aacc"], "miou": data["miou"], "mdice": data["mdice"], "macc": data["macc"],
                    "iou": data["iou"], "dice": data["dice"], "acc": data["acc"]},
        "per_image_miou": float(np.mean(finite)) if finite else float("nan"),
        "classes": classes,
        "confusion": cm.tolist(),
    }


__all__ = ["evaluate_image_folder", "ImageEvaluationResult", "match_images", "load_class_names", "dataset_metrics",
           "pair_confusion"]
