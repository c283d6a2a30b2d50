"""Panoptic quality of folders of segment maps (``medseg evaluate-images --task panoptic``).

PQ, SQ and RQ follow panopticapi (Kirillov et al., CVPR 2019) through
:func:`medseg.metrics.instance.panoptic_stats` (per image: match at IoU > 0.5 within a category,
reference crowd and VOID handled as panopticapi does) summed over the images, then
:func:`~medseg.metrics.instance.panoptic_summary` (per class; All, Things, Stuff averages over the
classes with any TP, FP or FN).

Either side may be a COCO panoptic JSON (``panoptic_<split>.json`` with its PNG folder
``panoptic_<split>/``, segment id = R + 256 G + 256^2 B, 0 = VOID) or a folder the instance
readers know (reference images without a prediction are scored as predicting nothing);
predictions may also be ``predict-images`` output (``<stem>_instances.png`` +
``.json``, with the semantic ``<stem>.png`` next to them giving stuff classes where no instance is).
Things are the reference's ``isthing`` categories (every class of an instance dataset reference, named
or not; the semantic masks beside predictions are then not read).
Where an instance map has no instance, the pixels are background: a labeled segment that is never
scored (predictions on it are false positives, unlike predictions on VOID).

Outputs: ``metrics.csv`` (one row per class, then ``all``, ``things``, ``stuff``), ``summary.json``
and ``pq_per_class.png``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.instance_datasets import (
    PREDICTION_SUFFIX,
    Instance,
    detect_instance_format,
    load_instance_dataset,
    read_instance_prediction,
)
from medseg.errors import InputError
from medseg.plots.charts import class_bar_chart
from medseg.io.images import read_mask
from medseg.io.tables import write_csv, write_json
from medseg.metrics.instance import VOID, fill_unsegmented, panoptic_stats, panoptic_summary, sum_panoptic_stats

log = logging.getLogger(__name__)

CSV_COLUMNS = ["class", "name", "isthing", "pq", "sq", "rq", "tp", "fp", "fn"]
Segments = tuple[np.ndarray, dict[int, tuple[int, bool]]]


@dataclass
class PanopticSide:
    """One side of the evaluation: per stem a loader of ``(segment ids, {id: (class, crowd)})``."""

    loaders: dict[str, Callable[[], Segments]]
    names: dict[int, str]
    things: frozenset[int] | None  # None: every class is a thing (an instance dataset) or not known (predictions)


@dataclass
class PanopticEvaluationResult:
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    files: list[Path] = field(default_factory=list)
    unmatched_predictions: list[str] = field(default_factory=list)
    unmatched_references: list[str] = field(default_factory=list)


def _from_instances(instances: list[Instance], size: tuple[int, int], void_background: bool) -> Segments:
    ids = np.zeros(size, np.int64)
    table: dict[int, tuple[int, bool]] = {}
    for inst in instances:
        ids[inst.mask] = inst.id
        table[inst.id] = (inst.class_id, inst.crowd)
    if not void_background and (ids == VOID).any():
        background = max(table, default=0) + 1
        ids[ids == VOID] = background
        table[background] = (0, False)
    return ids, table


def dataset_side(path: Path) -> PanopticSide:
    """A COCO panoptic JSON / dataset folder, or an instance dataset (background = unscored segment)."""
    ds = load_instance_dataset(path, check_images=False)
    void = ds.format == "coco_panoptic"
    loaders = {item.stem: (lambda item=item: _from_instances(item.read(), item.size, void)) for item in ds.items}
    return PanopticSide(loaders, ds.class_names, ds.things if void else None)


def _prediction_segments(png: Path, semantic: Path | None, things: frozenset[int] | None) -> Segments:
    ids, info = read_instance_prediction(png)
    table = {i: (c, False) for i, (c, _) in info.items()}
    free = ids == VOID
    next_id = max(table, default=0) + 1
    if semantic is not None:
        labels = read_mask(semantic).astype(np.int64)
        if labels.shape != ids.shape:
            raise InputError(f"{semantic}: {labels.shape} differs from {png.name}'s {ids.shape}")
        for c in np.unique(labels[free]).tolist():
            if c != 0 and things is not None and c not in things:
                ids[free & (labels == c)] = next_id
                table[next_id] = (int(c), False)
                next_id += 1
    fill_unsegmented(ids, table, (0, False))
    return ids, table


def prediction_side(path: Path, things: frozenset[int] | None) -> PanopticSide:
    """``<stem>_instances.png`` + ``.json`` (+ ``<stem>.png`` semantic: its classes not in ``things`` are stuff;
    ``things=None``: every class is a thing and the semantic masks are not read) predictions."""
    files = {p.name[: -len(PREDICTION_SUFFIX) - 4]: p for p in sorted(path.glob(f"*{PREDICTION_SUFFIX}.png"))}
    loaders = {}
    for stem, png in files.items():
        semantic = path / f"{stem}.png"
        loaders[stem] = lambda png=png, sem=semantic: _prediction_segments(png, sem if sem.is_file() else None,
                                                                            things)
    return PanopticSide(loaders, {}, None)


def _side(path: str | os.PathLike[str], things: frozenset[int] | None) -> PanopticSide:
    p = Path(path)
    if p.is_dir() and any(p.glob(f"*{PREDICTION_SUFFIX}.png")):
        return prediction_side(p, things)
    if p.is_dir() or p.suffix.lower() == ".json":
        detect_instance_format(p)
        return dataset_side(p)
    raise InputError(f"{p}: neither a panoptic JSON, an instance dataset nor a folder of <stem>{PREDICTION_SUFFIX}.png")


def evaluate_panoptic(pred: str | os.PathLike[str], ref: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                      *, class_names: dict[int, str] | None = None) -> PanopticEvaluationResult:
    """PQ/SQ/RQ of ``pred`` against ``ref`` (see the module docstring); writes the outputs to ``out_dir``.

    Raises:
        InputError: unreadable inputs, shapes that differ, segment ids missing from their lists (named).
    """
    reference = _side(ref, None)
    prediction = _side(pred, reference.things)
    stems = sorted(reference.loaders)
    if not set(stems) & set(prediction.loaders):
        raise InputError(f"{pred}: no prediction matches a reference image of {ref} by stem")
    per_image = []
    for stem in stems:
        r_ids, r_table = reference.loaders[stem]()
        if stem in prediction.loaders:
            p_ids, p_table = prediction.loaders[stem]()
        else:  # scored as predicting nothing: every reference segment a false negative
            p_ids, p_table = np.zeros_like(r_ids), {}
        if p_ids.shape != r_ids.shape:
            raise InputError(f"{stem}: prediction {p_ids.shape} and reference {r_ids.shape} differ (H, W)")
        per_image.append(panoptic_stats(p_ids, {i: c for i, (c, _) in p_table.items()}, r_ids, r_table))
    totals = sum_panoptic_stats(per_image)
    names = {**reference.names, **(class_names or {})}
    categories = sorted(set(reference.names) | set(totals))
    things = reference.things if reference.things is not None else frozenset(categories)
    summary = panoptic_summary(totals, things, categories)
    rows = [{"class": c, "name": names.get(c, str(c)), **v} for c, v in summary["per_class"].items()]
    groups = [{"class": g, "name": g, "isthing": {"all": "", "things": True, "stuff": False}[g], **summary[g]}
              for g in ("all", "things", "stuff")]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    unmatched_pred = sorted(set(prediction.loaders) - set(reference.loaders))
    unmatched_ref = sorted(set(reference.loaders) - set(prediction.loaders))
    document = {"task": "panoptic", "images": len(stems), **{g: summary[g] for g in ("all", "things", "stuff")},
                "classes": {str(r["class"]): {k: v for k, v in r.items() if k != "class"} for r in rows},
                "unmatched_predictions": unmatched_pred, "references_without_prediction": unmatched_ref,
                "definitions": "panopticapi: match IoU > 0.5 per category (union without the prediction's pixels "
                               "on VOID), predictions more than half on VOID or on crowd of their class ignored; "
                               "PQ = sum IoU / (TP + FP/2 + FN/2), SQ = sum IoU / TP, RQ = TP / (TP + FP/2 + FN/2)"}
    files = [out / "metrics.csv", out / "summary.json", out / "pq_per_class.png"]
    write_csv(files[0], rows + groups, CSV_COLUMNS)
    write_json(files[1], document)
    class_bar_chart(files[2], [str(r["name"]) for r in rows], [r["pq"] for r in rows], summary["all"]["pq"], "PQ")
    if unmatched_ref:
        log.warning("%d reference image(s) without a prediction (scored as empty): %s", len(unmatched_ref),
                    ", ".join(unmatched_ref[:5]))
    return PanopticEvaluationResult(document, rows, files, unmatched_pred, unmatched_ref)


__all__ = ["evaluate_panoptic", "PanopticEvaluationResult", "dataset_side", "prediction_side", "CSV_COLUMNS"]
