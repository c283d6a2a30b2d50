"""The validation score of panoptic training (``medseg train`` on a ``coco_panoptic`` dataset, Mask2Former of
task ``panoptic``): the panoptic quality that ``medseg evaluate-images --task panoptic`` gives.

:mod:`medseg.training.instances` runs the panoptic run as it runs an instance run (the same run folder, the
same training samples: one target per thing instance and one per stuff class present, crowd in none); what it
takes from here is :class:`PanopticScorer`, its validation. Each validation image's segments
(:func:`medseg.models.mask2former.segments` with ``task="panoptic"``, the code ``predict-images`` runs on the
export) are scored against the reference that :func:`medseg.evaluation.panoptic.dataset_side` reads (the
evaluation's own reader: VOID unlabeled, crowd segments ignored) by :func:`medseg.metrics.instance.panoptic_stats`,
summed over the images and averaged by :func:`~medseg.metrics.instance.panoptic_summary` over the categories of
the dataset (things = its ``isthing`` categories). ``metrics.csv`` gets ``val_pq`` (the monitor: the best
checkpoint is the highest), ``val_sq``, ``val_rq``, ``val_pq_things``, ``val_pq_stuff`` and ``val_pq_<class>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError

MONITOR = "val_pq"
#: summary group -> ``metrics.csv`` column of its PQ (``all`` also logs SQ and RQ)
GROUP_COLUMNS = {"all": "val_pq", "things": "val_pq_things", "stuff": "val_pq_stuff"}


def prediction_segments(ids: np.ndarray, table: list[dict[str, Any]]) -> tuple[np.ndarray, dict[int, int]]:
    """``(segment ids [H, W] int64, {segment: class})`` of one image's :func:`~medseg.models.mask2former.segments`,
    as ``evaluate-images`` reads them back from ``predict-images``' files: pixels in no segment (0) form one
    segment of class 0 (labeled, never scored; the semantic union beside the files names no class there)."""
    from medseg.metrics.instance import fill_unsegmented

    out = np.asarray(ids, np.int64).copy()
    classes = {int(e["id"]): int(e["class"]) for e in table}
    fill_unsegmented(out, classes, 0)
    return out, classes


class PanopticScorer:
    """Validation PQ of the images ``stems`` of the panoptic dataset at ``root`` (see the module docstring).

    ``score(index, ids, table)`` gives the per-category counts of validation image ``index`` (picklable: the
    ranks of a distributed run gather them); ``metrics(results)`` the logged values of ``{index: counts}``.
    """

    task = "panoptic"
    monitor = MONITOR
    headline = ("val_pq", "val_sq", "val_rq")

    def __init__(self, root: str | Path, stems: list[str], labels: dict[str, str]) -> None:
        self.root, self.stems, self.labels = Path(root), list(stems), dict(labels)
        self._reference: Any = None

    def __getstate__(self) -> dict[str, Any]:  # the reader's loaders are closures: rebuilt where unpickled
        return {**self.__dict__, "_reference": None}

    def reference(self) -> Any:
        """The evaluation's reference side (:func:`medseg.evaluation.panoptic.dataset_side`) of ``root``."""
        from medseg.evaluation.panoptic import dataset_side

        if self._reference is None:
            self._reference = dataset_side(self.root)
        return self._reference

    def score(self, index: int, ids: np.ndarray, table: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
        from medseg.metrics.instance import panoptic_stats

        stem = self.stems[index]
        r_ids, r_table = self.reference().loaders[stem]()
        p_ids, p_table = prediction_segments(ids, table)
        if p_ids.shape != r_ids.shape:
            raise InputError(f"{stem}: prediction {p_ids.shape} and reference {r_ids.shape} differ (H, W)")
        return panoptic_stats(p_ids, p_table, r_ids, r_table)

    def metrics(self, results: dict[int, dict[int, dict[str, float]]]) -> dict[str, float]:
        """``val_pq`` ... of the summed counts (NaN where no category of a group has a TP, FP or FN)."""
        from medseg.metrics.instance import panoptic_summary, sum_panoptic_stats

        totals = sum_panoptic_stats(results.values())
        reference = self.reference()
        summary = panoptic_summary(totals, reference.things, sorted(set(reference.names) | set(totals)))
        out = {column: summary[group]["pq"] for group, column in GROUP_COLUMNS.items()}
        out.update(val_sq=summary["all"]["sq"], val_rq=summary["all"]["rq"])
        for c, row in summary["per_class"].items():
            out[f"val_pq_{self.labels.get(str(c), f'class_{c}')}"] = row["pq"]
        return out


__all__ = ["MONITOR", "GROUP_COLUMNS", "PanopticScorer", "prediction_segments"]
