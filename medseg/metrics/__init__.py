"""Segmentation metrics: exact to a stated reference, explicit about conventions, fast.

Families (one module each; numpy/scipy only, heavier libraries imported inside functions):

- :mod:`~medseg.metrics.overlap`: ``dice``, ``iou``, ``precision``, ``recall``,
  ``volume_difference``, ``confusion``, ``overlap_from_confusion``, ``miou``;
- :mod:`~medseg.metrics.surface`: ``hd``, ``hd95``, ``assd``, ``masd``, ``nsd``,
  ``surface_metrics`` (all from one distance computation), ``surface_distances``;
  ``surface="voxel"`` equals MONAI, ``surface="surfel"`` equals DeepMind's surface-distance;
- :mod:`~medseg.metrics.boundary`: ``boundary_iou`` (Cheng et al. 2021, and a mm variant);
- :mod:`~medseg.metrics.instance`: ``mask_ap`` (COCO, pycocotools), ``panoptic_quality``;
- :mod:`~medseg.metrics.labels`: ``evaluate_labels`` (every label of a label map);
- :mod:`~medseg.metrics.aggregate`: ``summarize`` (counts NaN/inf cases, bootstrap CI).

Arrays are indexed ``[i, j(, k)]``; ``spacing`` is in mm per array axis; distances are in mm.
"""

from __future__ import annotations

from medseg.metrics.aggregate import bootstrap_ci, summarize
from medseg.metrics.boundary import boundary_iou
from medseg.metrics.instance import mask_ap, panoptic_quality
from medseg.metrics.labels import ALL_METRICS, DEFAULT_METRICS, evaluate_labels
from medseg.metrics.overlap import (
    confusion,
    dice,
    iou,
    miou,
    overlap_from_confusion,
    precision,
    recall,
    volume_difference,
)
from medseg.metrics.surface import (
    SurfaceDistances,
    assd,
    hd,
    hd95,
    masd,
    metrics_from_distances,
    nsd,
    surface_distances,
    surface_metrics,
)

__all__ = [
    "dice", "iou", "precision", "recall", "volume_difference", "confusion", "overlap_from_confusion", "miou",
    "hd", "hd95", "assd", "masd", "nsd", "surface_metrics", "surface_distances", "metrics_from_distances",
    "SurfaceDistances", "boundary_iou", "mask_ap", "panoptic_quality", "evaluate_labels", "ALL_METRICS",
    "DEFAULT_METRICS", "summarize", "bootstrap_ci",
]
