"""Overlap metrics: Dice, IoU (Jaccard), precision, recall, volume difference, mIoU.

Binary functions take two masks of the same shape (bool or 0/1). For label maps, one
integer confusion matrix (:func:`confusion`) gives every label's counts in one pass;
:func:`overlap_from_confusion` turns it into per-label metrics and :func:`miou`
accumulates it over a dataset.

Empty masks: when prediction and reference are both empty, every ratio returns
``empty_score`` (NaN by default; pass 1.0 to score "nothing predicted, nothing there"
as perfect). When only one is empty, Dice/IoU are 0.0; precision is NaN when
nothing is predicted (0/0) and recall is NaN when the reference is empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.metrics._checks import Spacing, as_labels, as_mask, bounding_box, check_pair, check_spacing, union_box

_CHUNK_VOXELS = 1 << 22  # voxels per slab in confusion(): bounds the temporary memory (~40 MB)


def _counts(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int]:
    """(true positives, predicted voxels, reference voxels) of two binary masks, on their joint box."""
    p, r = as_mask(pred, "prediction"), as_mask(ref, "reference")
    check_pair(p, r, ndims=(1, 2, 3, 4))
    box = union_box(bounding_box(p), bounding_box(r)) if p.ndim > 1 else None
    if box is None and p.ndim > 1:
        return 0, 0, 0
    if box is not None:
        p, r = p[box], r[box]
    return int(np.count_nonzero(p & r)), int(np.count_nonzero(p)), int(np.count_nonzero(r))


def _ratio(num: float, den: float, empty_score: float) -> float:
    return float(num / den) if den > 0 else float(empty_score)


def dice(pred: np.ndarray, ref: np.ndarray, *, empty_score: float = float("nan")) -> float:
    """Dice coefficient ``2|P∩R| / (|P| + |R|)`` in [0, 1]; ``empty_score`` when both are empty.

    Example:
        >>> import numpy as np
        >>> dice(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))
        0.5
    """
    tp, n_p, n_r = _counts(pred, ref)
    return _ratio(2 * tp, n_p + n_r, empty_score)


def iou(pred: np.ndarray, ref: np.ndarray, *, empty_score: float = float("nan")) -> float:
    """Intersection over union (Jaccard) ``|P∩R| / |P∪R|``; ``empty_score`` when both are empty."""
    tp, n_p, n_r = _counts(pred, ref)
    return _ratio(tp, n_p + n_r - tp, empty_score)


def precision(pred: np.ndarray, ref: np.ndarray, *, empty_score: float = float("nan")) -> float:
    """Precision ``|P∩R| / |P|``; ``empty_score`` when the prediction is empty."""
    tp, n_p, _ = _counts(pred, ref)
    return _ratio(tp, n_p, empty_score)


def recall(pred: np.ndarray, ref: np.ndarray, *, empty_score: float = float("nan")) -> float:
    """Recall (sensitivity) ``|P∩R| / |R|``; ``empty_score`` when the reference is empty."""
    tp, _, n_r = _counts(pred, ref)
    return _ratio(tp, n_r, empty_score)


def volume_difference(
    pred: np.ndarray,
    ref: np.ndarray,
    *,
    spacing: Spacing = None,
    relative: bool = True,
    empty_score: float = float("nan"),
) -> float:
    """Signed volume difference, prediction minus reference.

    ``relative=True``: ``(|P| - |R|) / |R|`` (dimensionless; ``inf`` when only the reference
    is empty, ``empty_score`` when both are). ``relative=False``: the difference in mm^3
    (2D: mm^2) using ``spacing`` (None: 1 mm, i.e. voxels).
    """
    _, n_p, n_r = _counts(pred, ref)
    if relative:
        if n_r == 0:
            return float(empty_score) if n_p == 0 else float("inf")
        return float((n_p - n_r) / n_r)
    voxel = float(np.prod(check_spacing(spacing, np.asarray(pred).ndim)))
    return float((n_p - n_r) * voxel)


def confusion(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> np.ndarray:
    """Integer confusion matrix ``C[ref_label, pred_label]`` (voxel counts), shape ``[n, n]``.

    Labels must lie in ``[0, num_classes)``. The count runs in slabs, so the temporary
    memory stays bounded (about 40 MB) for any image size.

    Raises:
        InputError: shapes differ, an array is not an integer label map, or a label is
            outside ``[0, num_classes)``.
    """
    p, r = as_labels(pred, "prediction"), as_labels(ref, "reference")
    if p.shape != r.shape:
        raise InputError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    if num_classes < 1:
        raise InputError(f"num_classes must be >= 1, got {num_classes}")
    for name, arr in (("prediction", p), ("reference", r)):
        if arr.size and int(arr.max()) >= num_classes:
            raise InputError(f"{name} holds label {int(arr.max())}, outside [0, {num_classes})")
    flat_p, flat_r = p.reshape(-1), r.reshape(-1)
    cm = np.zeros(num_classes * num_classes, dtype=np.int64)
    for start in range(0, flat_p.size, _CHUNK_VOXELS):
        stop = start + _CHUNK_VOXELS
        idx = flat_r[start:stop].astype(np.int64) * num_classes + flat_p[start:stop]
        cm += np.bincount(idx, minlength=num_classes * num_classes)
    return cm.reshape(num_classes, num_classes)


def overlap_from_confusion(
    cm: np.ndarray,
    labels: Sequence[int] | None = None,
    *,
    empty_score: float = float("nan"),
) -> list[dict[str, Any]]:
    """Per-label overlap metrics from a confusion matrix ``C[ref, pred]``.

    Returns one dict per label (default: every label but 0) with ``label``, ``tp``,
    ``fp``, ``fn``, ``pred_voxels``, ``ref_voxels``, ``dice``, ``iou``, ``precision``,
    ``recall`` and ``volume_difference`` (relative; see :func:`volume_difference`).
    """
    cm = np.asarray(cm, dtype=np.int64)
    n = cm.shape[0]
    labels = list(range(1, n)) if labels is None else [int(x) for x in labels]
    rows = []
    for lab in labels:
        if not 0 <= lab < n:
            raise InputError(f"label {lab} outside the confusion matrix [0, {n})")
        tp = int(cm[lab, lab])
        n_p, n_r = int(cm[:, lab].sum()), int(cm[lab, :].sum())
        if n_r:
            vd = (n_p - n_r) / n_r
        else:
            vd = float(empty_score) if n_p == 0 else float("inf")
        rows.append({
            "label": lab, "tp": tp, "fp": n_p - tp, "fn": n_r - tp,
            "pred_voxels": n_p, "ref_voxels": n_r,
            "dice": _ratio(2 * tp, n_p + n_r, empty_score),
            "iou": _ratio(tp, n_p + n_r - tp, empty_score),
            "precision": _ratio(tp, n_p, empty_score),
            "recall": _ratio(tp, n_r, empty_score),
            "volume_difference": float(vd),
        })
    return rows


def miou(
    preds: Iterable[np.ndarray],
    refs: Iterable[np.ndarray],
    *,
    num_classes: int,
    ignore_index: int | None = None,
    per_image: bool = False,
) -> dict[str, Any]:
    """Mean IoU of a semantic segmentation dataset.

    Default (as mmsegmentation): intersections and unions of each class are summed
    over all images, IoU per class is ``I / U`` (NaN for a class absent from both
    predictions and references of the whole dataset), and mIoU is the NaN-mean over
    classes. ``per_image=True`` instead averages, over images, each image's NaN-mean IoU
    (classes absent from an image do not count for it).

    Args:
        preds, refs: label maps, paired in order; each pair of the same shape.
        num_classes: labels lie in ``[0, num_classes)`` (plus ``ignore_index``).
        ignore_index: reference label whose voxels are left out (e.g. 255).

    Returns:
        ``{"miou", "iou_per_class" (list, NaN for absent classes), "images"}``.
    """
    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    image_means: list[float] = []
    count = 0
    for pred, ref in zip(preds, refs, strict=True):
        p, r = as_labels(pred, "prediction"), as_labels(ref, "reference")
        if p.shape != r.shape:
            raise InputError(f"image {count}: prediction shape {p.shape} differs from reference {r.shape}")
        if ignore_index is not None:
            keep = r != ignore_index
            p, r = p[keep], r[keep]
        cm = confusion(p, r, num_classes)
        total += cm
        if per_image:
            image_means.append(_nanmean(_iou_per_class(cm)))
        count += 1
    per_class = _iou_per_class(total)
    value = float(np.mean(image_means)) if per_image and image_means else _nanmean(per_class)
    return {"miou": value, "iou_per_class": per_class.tolist(), "images": count}


def _iou_per_class(cm: np.ndarray) -> np.ndarray:
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(axis=0) + cm.sum(axis=1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


__all__ = [
    "dice",
    "iou",
    "precision",
    "recall",
    "volume_difference",
    "confusion",
    "overlap_from_confusion",
    "miou",
]
