"""Instance segmentation scored by pycocotools (``medseg evaluate-images --task instance``).

:func:`evaluate_instances` builds one COCO ground truth and one COCO result list and runs
pycocotools' own ``COCOeval(iouType="segm")`` on them at full resolution: mask AP
(IoU 0.50:0.05:0.95, 101 recall points, up to ``max_detections`` per image), AP50, AP75,
the size ranges and AR, overall and per class (read from ``COCOeval.eval["precision"]``
exactly as ``summarize`` does). ``iscrowd`` references are COCO's ignore regions.

References: a COCO instances JSON (passed to pycocotools as it is; missing ``area``/``iscrowd``
filled in) or any folder :func:`~medseg.data.instance_datasets.load_instance_dataset` reads.
Predictions: a folder of ``<stem>_instances.png`` (16-bit ids, full resolution) +
``<stem>_instances.json`` (``{"instances": [{"id", "class", "score"}]}``), or a COCO results
JSON (``[{"image_id", "category_id", "segmentation", "score"}]``, image ids of a COCO JSON
reference). Images without a prediction file count with no detections (listed).

Matched instances (pycocotools' own matches at IoU 0.5) also get their mask IoU and the
Boundary IoU of :func:`medseg.metrics.boundary.boundary_iou` (Cheng et al., 2% of the diagonal).

Outputs in ``out_dir``: ``metrics.csv`` (one row per class and an ``all`` row),
``instances.csv`` (one row per prediction: match, IoU, Boundary IoU), ``summary.json`` and
``ap_per_class.png``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.instance_datasets import (
    PREDICTION_SUFFIX,
    InstanceImage,
    coco_annotation_mask,
    coco_body,
    load_instance_dataset,
    read_instance_prediction,
)
from medseg.errors import InputError
from medseg.io.tables import write_csv, write_json
from medseg.metrics.instance import coco_stats, run_cocoeval
from medseg.plots.charts import class_bar_chart

log = logging.getLogger(__name__)

CSV_COLUMNS = ["class", "name", "ref_instances", "ref_crowd", "pred_instances", "ap", "ap50", "ap75",
               "matched50", "mean_iou50", "boundary_iou"]
INSTANCE_COLUMNS = ["image", "pred_id", "class", "score", "ref_id", "iou", "boundary_iou"]


@dataclass
class InstanceEvaluationResult:
    """What :func:`evaluate_instances` computed and wrote (``summary`` is the ``summary.json`` content)."""

    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    instances: list[dict[str, Any]]
    files: list[Path] = field(default_factory=list)
    unmatched_predictions: list[str] = field(default_factory=list)
    unmatched_references: list[str] = field(default_factory=list)


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def reference_coco(ref: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, int]]:
    """``(COCO ground-truth dict, {stem: image id})`` of a COCO JSON or an instance dataset folder
    (:func:`items_coco`)."""
    path = Path(ref)
    if path.is_file() and path.suffix.lower() == ".json":
        data, images = coco_body(path)
        data = dict(data, annotations=[dict(a) for a in data.get("annotations", [])])
        for ann in data["annotations"]:
            ann.setdefault("iscrowd", 0)
            if "area" not in ann and ann.get("image_id") in images:
                entry = images[ann["image_id"]]
                ann["area"] = float(coco_annotation_mask(ann, entry["height"], entry["width"], str(path)).sum())
        return data, {Path(e["file_name"]).stem: i for i, e in images.items()}
    ds = load_instance_dataset(path, check_images=False)
    return items_coco(ds.items, ds.class_names)


def items_coco(items: list[InstanceImage], class_names: dict[int, str]) -> tuple[dict[str, Any], dict[str, int]]:
    """``(COCO ground-truth dict, {stem: image id})`` of instance dataset items: images numbered 1, 2, ... by
    stem, one RLE annotation per non-empty instance (``iscrowd`` from :attr:`Instance.crowd`), the categories
    ``class_names`` and any other class present. The reference of ``evaluate-images --task instance`` on a
    dataset folder and of the validation of instance training."""
    from pycocotools import mask as mask_utils

    images_out, anns, stems = [], [], {}
    for n, item in enumerate(sorted(items, key=lambda i: i.stem), 1):
        stems[item.stem] = n
        images_out.append({"id": n, "file_name": item.image.name, "height": item.size[0], "width": item.size[1]})
        for inst in item.read():
            if not inst.mask.any():
                continue
            rle = _rle(inst.mask)
            anns.append({"id": len(anns) + 1, "image_id": n, "category_id": int(inst.class_id), "segmentation": rle,
                         "area": float(inst.mask.sum()), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                         "iscrowd": int(inst.crowd)})
    cats = sorted(set(class_names) | {a["category_id"] for a in anns})
    return ({"images": images_out, "annotations": anns,
             "categories": [{"id": c, "name": class_names.get(c, str(c))} for c in cats]}, stems)


def segment_results(image_id: int, ids: np.ndarray, info: dict[int, tuple[int, float | None]], *,
                    where: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """COCO results of one image's segment prediction: ``ids [H, W]`` and ``{id: (class, score)}`` (as
    :func:`~medseg.data.instance_datasets.read_instance_prediction` gives), one RLE result per non-empty id
    in id order, each with its ``"pred_id"``.

    Raises:
        InputError: an instance without a score (``where`` named; AP ranks by score).
    """
    results = []
    for inst, (cls, score) in sorted(info.items()):
        mask = ids == inst
        if not mask.any():
            continue
        if score is None:
            raise InputError(f"{where}: instance {inst} has no score; AP ranks by score")
        results.append({"image_id": image_id, "category_id": cls, "segmentation": _rle(mask), "score": score,
                        "pred_id": inst})
    return results


def prediction_results(pred: str | os.PathLike[str], gt: dict[str, Any], stems: dict[str, int],
                       ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str], list[str]]:
    """``(COCO results, [{image, pred_id}] per result, unmatched prediction files, references without one)``."""
    path = Path(pred)
    sizes = {e["id"]: (int(e["height"]), int(e["width"])) for e in gt["images"]}
    by_id = {v: k for k, v in stems.items()}
    if path.is_file():
        raw = json.loads(path.read_text(encoding="utf-8")) if path.suffix.lower() == ".json" else None
        results = raw.get("annotations") if isinstance(raw, dict) else raw
        if not isinstance(results, list):
            raise InputError(f"{path}: expected a COCO results list [{{\"image_id\", \"category_id\", "
                             "\"segmentation\", \"score\"}}]")
        unknown = sorted({r.get("image_id") for r in results if r.get("image_id") not in sizes}, key=str)
        if unknown:
            raise InputError(f"{path}: image_id(s) {unknown[:10]} are not images of the reference")
        seen = {r["image_id"] for r in results}
        return (results, [{"image": by_id.get(r["image_id"], r["image_id"]), "pred_id": n + 1}
                          for n, r in enumerate(results)], [], sorted(by_id[i] for i in sizes if i not in seen))
    if not path.is_dir():
        raise InputError(f"{path}: no such prediction folder or COCO results JSON")
    files = {p.name[: -len(PREDICTION_SUFFIX) - 4]: p for p in sorted(path.glob(f"*{PREDICTION_SUFFIX}.png"))}
    if not files:
        raise InputError(f"{path}: no <stem>{PREDICTION_SUFFIX}.png prediction files")
    results, where = [], []
    for stem, png in files.items():
        if stem not in stems:
            continue
        ids, info = read_instance_prediction(png)
        if ids.shape != sizes[stems[stem]]:
            raise InputError(f"{png}: {ids.shape[1]}x{ids.shape[0]} but its reference image is "
                             f"{sizes[stems[stem]][1]}x{sizes[stems[stem]][0]} (W x H); predict at full resolution")
        for result in segment_results(stems[stem], ids, info, where=png.with_suffix(".json")):
            where.append({"image": stem, "pred_id": result.pop("pred_id")})
            results.append(result)
    unmatched = sorted(files[s].name for s in files if s not in stems)
    return results, where, unmatched, sorted(s for s in stems if s not in files)


def _mean(values: np.ndarray) -> float:
    kept = values[values > -1]
    return float(np.mean(kept)) if kept.size else float("nan")


def per_class_ap(ev: Any) -> dict[int, dict[str, float]]:
    """AP, AP50, AP75 per category from ``ev.eval["precision"]`` [T, R, K, A, M] (area all, largest maxDets)."""
    precision = ev.eval["precision"]
    t50, t75 = (int(np.argmin(np.abs(ev.params.iouThrs - t))) for t in (0.5, 0.75))
    return {int(c): {"ap": _mean(precision[:, :, k, 0, -1]), "ap50": _mean(precision[t50, :, k, 0, -1]),
                     "ap75": _mean(precision[t75, :, k, 0, -1])} for k, c in enumerate(ev.params.catIds)}


def boundary_iou_of_pair(pred: np.ndarray, ref: np.ndarray, *, dilation_ratio: float = 0.02) -> float:
    """:func:`medseg.metrics.boundary.boundary_iou` of two ``[H, W]`` masks, computed on their joint bounding box.

    The same number as on the whole image: the band width stays ``round(dilation_ratio * image diagonal)``
    pixels (the ratio is rescaled to the box's diagonal) and outside the box both masks are background,
    which is what the erosion assumes beyond any edge.
    """
    from medseg.metrics.boundary import boundary_iou

    both = pred | ref
    rows, cols = np.flatnonzero(both.any(1)), np.flatnonzero(both.any(0))
    if not rows.size:
        return boundary_iou(pred, ref, dilation_ratio=dilation_ratio)
    width = max(1, int(round(dilation_ratio * float(np.hypot(*pred.shape)))))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    diagonal = float(np.hypot(rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0]))
    return boundary_iou(pred[box], ref[box], dilation_ratio=width / diagonal)


def matched_instances(ev: Any, where: list[dict[str, Any]], *, boundary: bool) -> list[dict[str, Any]]:
    """One row per prediction: the reference pycocotools matched at IoU 0.5, mask IoU, Boundary IoU."""
    t50 = int(np.argmin(np.abs(ev.params.iouThrs - 0.5)))
    area_all = ev.params.areaRng[ev.params.areaRngLbl.index("all")]
    match: dict[int, int] = {}
    for entry in ev.evalImgs:
        if entry is None or list(entry["aRng"]) != list(area_all):
            continue
        for d, g in zip(entry["dtIds"], entry["dtMatches"][t50]):
            if g:
                match[int(d)] = int(g)
    gt, dt = ev.cocoGt, ev.cocoDt
    rows = []
    for n, info in enumerate(where, 1):
        ann = dt.anns[n]
        row = {**info, "class": int(ann["category_id"]), "score": float(ann["score"]), "ref_id": match.get(n),
               "iou": float("nan"), "boundary_iou": float("nan")}
        if n in match:
            p, r = dt.annToMask(ann).astype(bool), gt.annToMask(gt.anns[match[n]]).astype(bool)
            row["iou"] = float((p & r).sum() / (p | r).sum())
            if boundary:
                row["boundary_iou"] = boundary_iou_of_pair(p, r)
        rows.append(row)
    return rows


def _class_rows(ev: Any, gt: dict[str, Any], instances: list[dict[str, Any]], names: dict[int, str],
                ) -> list[dict[str, Any]]:
    aps = per_class_ap(ev)
    rows = []
    for c in sorted(aps):
        refs = [a for a in gt["annotations"] if a["category_id"] == c]
        mine = [r for r in instances if r["class"] == c]
        hits = [r for r in mine if r["ref_id"] is not None]
        rows.append({"class": c, "name": names.get(c, str(c)), "ref_instances": sum(not a["iscrowd"] for a in refs),
                     "ref_crowd": sum(bool(a["iscrowd"]) for a in refs), "pred_instances": len(mine), **aps[c],
                     "matched50": len(hits), "mean_iou50": _nanmean([r["iou"] for r in hits]),
                     "boundary_iou": _nanmean([r["boundary_iou"] for r in hits])})
    return rows


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if v == v]
    return float(np.mean(kept)) if kept else float("nan")


def evaluate_instances(pred: str | os.PathLike[str], ref: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                       *, class_names: dict[int, str] | None = None, boundary: bool = True,
                       max_detections: int = 100) -> InstanceEvaluationResult:
    """Score instance predictions against references (see the module docstring) and write the outputs.

    Raises:
        InputError: unreadable or inconsistent inputs (named), or no reference image at all.
    """
    gt, stems = reference_coco(ref)
    if not gt["images"]:
        raise InputError(f"{ref}: no reference images")
    results, where, unmatched_pred, unmatched_ref = prediction_results(pred, gt, stems)
    known = {c["id"] for c in gt["categories"]}
    extra = sorted({r["category_id"] for r in results} - known)
    if extra:
        raise InputError(f"{pred}: predicted class(es) {extra} are not categories of the reference "
                         f"({sorted(known)}); COCO ids are never remapped")
    ev = run_cocoeval(gt, results, max_detections=max_detections)
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in gt["categories"]}
    names.update(class_names or {})
    instances = matched_instances(ev, where, boundary=boundary)
    rows = _class_rows(ev, gt, instances, names)
    stats = coco_stats(ev)
    hits = [r for r in instances if r["ref_id"] is not None]
    overall = {"class": "all", "name": "all", "ref_instances": sum(r["ref_instances"] for r in rows),
               "ref_crowd": sum(r["ref_crowd"] for r in rows), "pred_instances": len(instances),
               "ap": stats["AP"], "ap50": stats["AP50"], "ap75": stats["AP75"], "matched50": len(hits),
               "mean_iou50": _nanmean([r["iou"] for r in hits]),
               "boundary_iou": _nanmean([r["boundary_iou"] for r in hits])}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"task": "instance", "images": len(gt["images"]), "coco": stats,
               "classes": {str(r["class"]): {k: v for k, v in r.items() if k != "class"} for r in rows},
               "overall": overall, "max_detections": max_detections, "boundary": boundary,
               "unmatched_predictions": unmatched_pred, "references_without_prediction": unmatched_ref,
               "definitions": "pycocotools COCOeval(iouType='segm') at full resolution; per-class AP from "
                              "eval['precision'][:, :, k, area=all, maxDets=-1]; Boundary IoU over pycocotools' "
                              "matches at IoU 0.5 (dilation 2% of the image diagonal)"}
    files = [out / "metrics.csv", out / "instances.csv", out / "summary.json", out / "ap_per_class.png"]
    write_csv(files[0], rows + [overall], CSV_COLUMNS)
    write_csv(files[1], instances, INSTANCE_COLUMNS)
    write_json(files[2], summary)
    class_bar_chart(files[3], [str(r["name"]) for r in rows], [r["ap"] for r in rows], stats["AP"],
                    "mask AP")
    if unmatched_ref:
        log.warning("%d reference image(s) without a prediction (scored with no detections): %s",
                    len(unmatched_ref), ", ".join(unmatched_ref[:5]))
    return InstanceEvaluationResult(summary, rows, instances, files, unmatched_pred, unmatched_ref)


__all__ = ["evaluate_instances", "reference_coco", "items_coco", "segment_results", "prediction_results", "per_class_ap",
           "matched_instances", "boundary_iou_of_pair", "InstanceEvaluationResult", "CSV_COLUMNS",
           "INSTANCE_COLUMNS"]
