"""Instance segmentation: COCO mask AP (pycocotools) and panoptic quality (PQ, SQ, RQ).

Instances are given as instance label maps: 0 is background, every other value one
object (2D ``[i, j]`` or 3D ``[i, j, k]``). The COCO matching is pycocotools' own, not a
re-implementation; a 3D map is flattened to 2D for it, which keeps every IoU exact
(the small/medium/large area ranges are then in voxels with COCO's thresholds).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.metrics._checks import as_labels

log = logging.getLogger(__name__)

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _instance_ids(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    return ids[ids != 0]


def _as_2d(labels: np.ndarray) -> np.ndarray:
    return labels if labels.ndim == 2 else labels.reshape(labels.shape[0], -1)


def mask_ap(
    preds: Sequence[np.ndarray],
    scores: Sequence[Mapping[int, float]],
    refs: Sequence[np.ndarray],
    *,
    pred_classes: Sequence[Mapping[int, int]] | None = None,
    ref_classes: Sequence[Mapping[int, int]] | None = None,
    max_detections: int = 100,
) -> dict[str, float]:
    """COCO mask average precision over a set of images (IoU 0.50:0.05:0.95, 101 recall points).

    Args:
        preds: one predicted instance label map per image.
        scores: per image, the confidence of each predicted instance id.
        refs: one reference instance label map per image (same shapes as ``preds``).
        pred_classes, ref_classes: per image, the category of each instance id
            (default: a single category 1 for every instance).
        max_detections: COCO's largest ``maxDets`` (detections kept per image by score).

    Returns:
        ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``, ``AR1``, ``AR10``, ``AR100``,
        ``ARs``, ``ARm``, ``ARl`` in [0, 1]; ``AR100`` is the recall at ``max_detections``.
        Empty inputs: no predicted instance (but references) gives 0.0; no reference
        instance at all (with or without predictions) gives NaN, where COCO reports -1
        because precision and recall are undefined.
    """
    from pycocotools import mask as mask_utils

    if not len(preds) == len(scores) == len(refs):
        raise InputError(f"got {len(preds)} predictions, {len(scores)} score maps, {len(refs)} references")
    images, gts, dts, cats = [], [], [], set()
    for n, (pred, score, ref) in enumerate(zip(preds, scores, refs)):
        p, r = as_labels(pred, f"prediction {n}"), as_labels(ref, f"reference {n}")
        if p.shape != r.shape or p.ndim not in (2, 3):
            raise InputError(f"image {n}: prediction {p.shape} and reference {r.shape} must be the same 2D/3D shape")
        p2, r2 = _as_2d(p), _as_2d(r)
        images.append({"id": n, "height": p2.shape[0], "width": p2.shape[1]})
        for ids, arr, out, classes, is_gt in (
            (_instance_ids(r2), r2, gts, ref_classes, True),
            (_instance_ids(p2), p2, dts, pred_classes, False),
        ):
            for inst in ids.tolist():
                rle = mask_utils.encode(np.asfortranarray((arr == inst).astype(np.uint8)))
                cat = int(classes[n].get(inst, 1)) if classes is not None else 1
                cats.add(cat)
                ann: dict[str, Any] = {"image_id": n, "category_id": cat, "segmentation": rle,
                                       "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist()}
                if is_gt:
                    ann.update(id=len(out) + 1, iscrowd=0)
                else:
                    if inst not in score:
                        raise InputError(f"image {n}: no score for predicted instance {inst}")
                    ann.update(score=float(score[inst]))
                out.append(ann)
    gt = {"images": images, "annotations": gts, "categories": [{"id": c} for c in sorted(cats | {1})]}
    ev = run_cocoeval(gt, dts, max_detections=max_detections)
    return coco_stats(ev)


def run_cocoeval(gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]], *, max_detections: int = 100) -> Any:
    """pycocotools' ``COCOeval(iouType="segm")`` on a ground-truth dict and a result list: evaluated,
    accumulated and summarised (its printout goes to the debug log). Returns the ``COCOeval``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        coco_gt = COCO()
        coco_gt.dataset = dict(gt)
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes([dict(r) for r in results])
        else:
            coco_dt = COCO()
            coco_dt.dataset = {"images": gt["images"], "annotations": [], "categories": gt["categories"]}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.params.maxDets = [1, 10, max_detections]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    log.debug("pycocotools:\n%s", buffer.getvalue())
    return ev


def coco_stats(ev: Any) -> dict[str, float]:
    """``COCOeval.stats`` by name (:data:`COCO_STAT_NAMES`); COCO's -1 (undefined) becomes NaN."""
    return {name: (float(v) if v >= 0 else float("nan")) for name, v in zip(COCO_STAT_NAMES, ev.stats)}


def panoptic_quality(
    pred: np.ndarray,
    ref: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    empty_score: float = float("nan"),
) -> dict[str, float]:
    """Panoptic quality of one instance label map against a reference (Kirillov et al. 2019).

    A predicted and a reference instance match when their IoU exceeds ``iou_threshold``
    (0.5 makes matches unique). ``PQ = sum(IoU of matches) / (TP + FP/2 + FN/2)``,
    ``SQ = mean IoU of matches``, ``RQ = TP / (TP + FP/2 + FN/2)``, so ``PQ = SQ * RQ``.
    For several categories, call it per category (mask the maps) and average.

    Returns:
        ``{"pq", "sq", "rq", "tp", "fp", "fn"}``. No instance in either map gives
        ``empty_score`` for pq/sq/rq; instances but no match gives pq = rq = 0 and sq NaN.
    """
    p, r = as_labels(pred, "prediction"), as_labels(ref, "reference")
    if p.shape != r.shape:
        raise InputError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    if not 0.5 <= iou_threshold < 1:
        raise InputError(f"iou_threshold must be in [0.5, 1) for unique matching, got {iou_threshold}")
    p_ids, p_area = np.unique(p[p != 0], return_counts=True)
    r_ids, r_area = np.unique(r[r != 0], return_counts=True)
    both = (p != 0) & (r != 0)
    pairs, inter = np.unique(np.stack([p[both], r[both]]).astype(np.int64), axis=1, return_counts=True)
    area_p = dict(zip(p_ids.tolist(), p_area.tolist()))
    area_r = dict(zip(r_ids.tolist(), r_area.tolist()))
    ious = []
    for (pi, ri), i in zip(pairs.T.tolist(), inter.tolist()):
        value = i / (area_p[pi] + area_r[ri] - i)
        if value > iou_threshold:
            ious.append(value)
    tp = len(ious)
    fp, fn = len(p_ids) - tp, len(r_ids) - tp
    denom = tp + 0.5 * fp + 0.5 * fn
    if denom == 0:
        return {"pq": float(empty_score), "sq": float(empty_score), "rq": float(empty_score), "tp": 0, "fp": 0, "fn": 0}
    sq = float(np.mean(ious)) if tp else float("nan")
    return {"pq": float(sum(ious) / denom), "sq": sq, "rq": float(tp / denom), "tp": tp, "fp": fp, "fn": fn}


#: the panoptic id of unlabeled pixels (panopticapi's VOID); category 0 marks labeled but unscored segments
VOID = 0


def panoptic_stats(
    pred: np.ndarray,
    pred_segments: Mapping[int, int],
    ref: np.ndarray,
    ref_segments: Mapping[int, tuple[int, bool]],
) -> dict[int, dict[str, float]]:
    """Per-category PQ counts of one image, following panopticapi's ``pq_compute_single_core``.

    Args:
        pred: ``[H, W]`` predicted segment ids; :data:`VOID` (0) pixels are unlabeled.
        pred_segments: predicted segment id -> category id.
        ref: ``[H, W]`` reference segment ids; 0 is VOID (unlabeled, ignored).
        ref_segments: reference segment id -> ``(category id, iscrowd)``.

    A segment of category 0 is labeled but never scored (e.g. the background of a things-only
    reference: predictions on it are false positives, unlike predictions on VOID).
    Matching: same category, reference not crowd, ``IoU > 0.5`` where the union leaves out the
    prediction's pixels on reference VOID. An unmatched prediction is a false positive unless more
    than half of it lies on VOID or on crowd regions of its category. Unmatched non-crowd
    references are false negatives.

    Returns:
        ``{category: {"tp", "fp", "fn", "iou"}}`` (``iou``: the sum over matches).

    Raises:
        InputError: shapes differ, or a segment id in a map is missing from its table.
    """
    p, r = np.asarray(pred, np.int64), np.asarray(ref, np.int64)
    if p.shape != r.shape:
        raise InputError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    for arr, table, side in ((p, pred_segments, "prediction"), (r, ref_segments, "reference")):
        unknown = sorted(set(np.unique(arr).tolist()) - set(table) - {VOID})
        if unknown:
            raise InputError(f"{side}: segment id(s) {unknown[:10]} are in the map but not in its segment list")
    area_p = dict(zip(*(v.tolist() for v in np.unique(p, return_counts=True))))
    area_r = dict(zip(*(v.tolist() for v in np.unique(r, return_counts=True))))
    base = int(p.max(initial=0)) + 1
    pairs, inter = np.unique(r.ravel() * base + p.ravel(), return_counts=True)
    overlap = {(int(k) // base, int(k) % base): int(n) for k, n in zip(pairs.tolist(), inter.tolist())}
    stats: dict[int, dict[str, float]] = {}

    def cat(c: int) -> dict[str, float]:
        return stats.setdefault(c, {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0})

    matched_r, matched_p = set(), set()
    for (ri, pi), n in overlap.items():
        if ri == VOID or pi == VOID or ri not in ref_segments or pi not in pred_segments:
            continue
        r_cat, crowd = ref_segments[ri]
        if crowd or r_cat != pred_segments[pi] or r_cat == 0:
            continue
        union = area_p[pi] + area_r[ri] - n - overlap.get((VOID, pi), 0)
        iou = n / union
        if iou > 0.5:
            cat(r_cat)["tp"] += 1
            cat(r_cat)["iou"] += iou
            matched_r.add(ri)
            matched_p.add(pi)
    crowd_of: dict[int, set[int]] = {}
    for ri, (c, crowd) in ref_segments.items():
        if crowd:
            crowd_of.setdefault(c, set()).add(ri)
        elif ri not in matched_r and c != 0 and ri in area_r:
            cat(c)["fn"] += 1
    for pi, c in pred_segments.items():
        if pi in matched_p or c == 0 or pi not in area_p:
            continue
        ignored = overlap.get((VOID, pi), 0) + sum(overlap.get((ri, pi), 0) for ri in crowd_of.get(c, ()))
        if ignored / area_p[pi] > 0.5:
            continue
        cat(c)["fp"] += 1
    return stats


def sum_panoptic_stats(per_image: Iterable[Mapping[int, Mapping[str, float]]]) -> dict[int, dict[str, float]]:
    """The per-category counts of :func:`panoptic_stats` summed over images (panopticapi's ``PQStat`` sum)."""
    totals: dict[int, dict[str, float]] = {}
    for stats in per_image:
        for c, s in stats.items():
            acc = totals.setdefault(c, {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0})
            for k in acc:
                acc[k] += s[k]
    return totals


def fill_unsegmented(ids: np.ndarray, segments: dict[int, Any], entry: Any) -> None:
    """Give the pixels of ``ids`` [H, W] in no segment (:data:`VOID`) one new segment, in place; ``segments``
    (segment id -> its table entry) gains ``entry`` for it: category 0 (labeled, never scored), the background
    of a prediction (``0``, or ``(0, False)`` where entries carry the crowd flag)."""
    free = ids == VOID
    if free.any():
        filler = max(segments, default=0) + 1
        ids[free] = filler
        segments[filler] = entry


def panoptic_summary(stats: Mapping[int, Mapping[str, float]], things: set[int] | frozenset[int],
                     categories: Sequence[int] | None = None) -> dict[str, Any]:
    """PQ, SQ, RQ per category and averaged over All, Things and Stuff (panopticapi's ``pq_average``).

    Per category ``PQ = sum IoU / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP`` (0 without TP),
    ``RQ = TP / (TP + FP/2 + FN/2)``; a category with no TP, FP or FN is left out of the averages
    (its values are NaN), the averages are plain means over the remaining categories (NaN when none).
    """
    cats = sorted(set(categories) if categories is not None else set(stats))
    per: dict[int, dict[str, float]] = {}
    for c in cats:
        s = stats.get(c, {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0})
        denom = s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"]
        nan = float("nan")
        per[c] = {"pq": s["iou"] / denom if denom else nan,
                  "sq": (s["iou"] / s["tp"] if s["tp"] else 0.0) if denom else nan,
                  "rq": s["tp"] / denom if denom else nan,
                  "tp": int(s["tp"]), "fp": int(s["fp"]), "fn": int(s["fn"]), "isthing": c in things}
    groups: dict[str, dict[str, float]] = {}
    members = {"all": set(cats), "things": set(cats) & set(things), "stuff": set(cats) - set(things)}
    for name, group in members.items():
        rows = [per[c] for c in cats if c in group and per[c]["pq"] == per[c]["pq"]]
        groups[name] = {k: (float(np.mean([row[k] for row in rows])) if rows else float("nan"))
                        for k in ("pq", "sq", "rq")}
        groups[name]["n"] = len(rows)
    return {"per_class": per, **groups}


__all__ = ["mask_ap", "run_cocoeval", "coco_stats", "panoptic_quality", "panoptic_stats", "panoptic_summary", "VOID",
           "sum_panoptic_stats", "fill_unsegmented",
           "COCO_STAT_NAMES"]
