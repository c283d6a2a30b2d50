"""Evaluate every structure of a label map against a reference label map in one call.

This is the stable per-study entry point used by ``medseg evaluate`` and the batch
runner: :func:`evaluate_labels` returns one flat dict per label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.metrics._checks import Spacing, as_labels, check_pair, check_spacing
from medseg.metrics.surface import MissingDistance, SurfaceMode, metrics_from_distances, surface_distances

OVERLAP_METRICS = ("dice", "iou", "precision", "recall", "volume_difference")
SURFACE_METRICS = ("hd", "hd95", "assd", "masd", "nsd")
ALL_METRICS = OVERLAP_METRICS + SURFACE_METRICS
DEFAULT_METRICS = ("dice", "hd95", "assd", "nsd")


def check_metric_names(metrics: Sequence[str]) -> tuple[str, ...]:
    """The metric names, validated against :data:`ALL_METRICS` (InputError names the unknown one)."""
    names = tuple(m.strip().lower() for m in metrics if m.strip())
    unknown = [m for m in names if m not in ALL_METRICS]
    if unknown:
        raise InputError(f"unknown metric {unknown[0]!r}; known: {', '.join(ALL_METRICS)}")
    if not names:
        raise InputError(f"no metric requested; known: {', '.join(ALL_METRICS)}")
    return names


def _status(n_pred: int, n_ref: int) -> str:
    if n_ref and n_pred:
        return "ok"
    if n_ref:
        return "missed"
    return "spurious" if n_pred else "both_empty"


def _merge_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None or b is None:
        return a or b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def evaluate_labels(
    pred: np.ndarray,
    ref: np.ndarray,
    *,
    labels: Sequence[int],
    spacing: Spacing = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    tolerance_mm: float = 2.0,
    surface: SurfaceMode = "voxel",
    percentile: float = 95.0,
    missing_distance: MissingDistance = "inf",
    empty_score: float = float("nan"),
) -> list[dict[str, Any]]:
    """Metrics of each label of a predicted label map against a reference label map.

    Each structure is cut out on the bounding box of its prediction and reference
    (found for all labels in one pass), so the cost depends on the structures'
    size, not the image's.

    Args:
        pred, ref: integer label maps of the same 2D/3D shape, ``[i, j(, k)]``; 0 is background.
        labels: the labels to evaluate, in output order.
        spacing: voxel size in mm per array axis (None: 1 mm).
        metrics: names from :data:`ALL_METRICS` (``dice``, ``iou``, ``precision``, ``recall``,
            ``volume_difference``, ``hd``, ``hd95``, ``assd``, ``masd``, ``nsd``).
        tolerance_mm: NSD tolerance in mm.
        surface: ``"voxel"`` or ``"surfel"`` boundary (see :mod:`medseg.metrics.surface`).
        percentile: the Hausdorff percentile reported as ``hd95``.
        missing_distance: distance when one of the two masks is empty (``"inf"``,
            ``"diagonal"`` or mm).
        empty_score: value of every ratio/distance when both masks are empty.

    Returns:
        One dict per label: ``label``, ``status`` (``ok``, ``missed``: reference but no
        prediction, ``spurious``: prediction but no reference, ``both_empty``),
        ``pred_voxels``, ``ref_voxels``, ``pred_volume_mm3``, ``ref_volume_mm3``, then the
        requested metrics (distances in mm).
    """
    from scipy import ndimage

    p, r = as_labels(pred, "prediction"), as_labels(ref, "reference")
    check_pair(p, r)
    sp = check_spacing(spacing, p.ndim)
    names = check_metric_names(metrics)
    wanted = [int(lab) for lab in labels]
    if any(lab <= 0 for lab in wanted):
        raise InputError(f"labels must be positive (0 is background), got {wanted}")
    top = max(wanted, default=0)
    boxes_p = ndimage.find_objects(p, max_label=top)
    boxes_r = ndimage.find_objects(r, max_label=top)
    voxel_mm3 = float(np.prod(sp))
    diagonal = float(np.linalg.norm(np.asarray(p.shape) * sp))
    need_surface = any(m in SURFACE_METRICS for m in names)
    rows = []
    for lab in wanted:
        box = _merge_box(boxes_p[lab - 1], boxes_r[lab - 1])
        if box is None:
            mp = mr = np.zeros((1,) * p.ndim, dtype=bool)
        else:
            mp, mr = p[box] == lab, r[box] == lab
        tp, n_p, n_r = int(np.count_nonzero(mp & mr)), int(np.count_nonzero(mp)), int(np.count_nonzero(mr))
        row: dict[str, Any] = {
            "label": lab, "status": _status(n_p, n_r), "pred_voxels": n_p, "ref_voxels": n_r,
            "pred_volume_mm3": n_p * voxel_mm3, "ref_volume_mm3": n_r * voxel_mm3,
        }
        values = _overlap(tp, n_p, n_r, empty_score)
        if need_surface:
            sd = replace(surface_distances(mp, mr, spacing=sp, surface=surface), diagonal_mm=diagonal)
            values.update(metrics_from_distances(
                sd, tolerance_mm=tolerance_mm, percentile=percentile,
                missing_distance=missing_distance, empty_score=empty_score,
            ))
        row.update({m: values[m] for m in names})
        rows.append(row)
    return rows


def _overlap(tp: int, n_p: int, n_r: int, empty_score: float) -> dict[str, float]:
    def ratio(num: float, den: float) -> float:
        return float(num / den) if den else float(empty_score)

    if n_r:
        vd = (n_p - n_r) / n_r
    else:
        vd = float(empty_score) if n_p == 0 else float("inf")
    return {
        "dice": ratio(2 * tp, n_p + n_r),
        "iou": ratio(tp, n_p + n_r - tp),
        "precision": ratio(tp, n_p),
        "recall": ratio(tp, n_r),
        "volume_difference": float(vd),
    }


__all__ = ["evaluate_labels", "check_metric_names", "ALL_METRICS", "DEFAULT_METRICS", "OVERLAP_METRICS", "SURFACE_METRICS"]
