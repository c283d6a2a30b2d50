"""Evaluate predicted label maps against references: files or folders -> CSV, JSON, box plots.

:func:`evaluate_folder` is the logic behind ``medseg evaluate``. Cases are matched by
file name (extension removed); cases present on one side only are reported in the
summary and the log, never dropped silently. Geometry must match (same grid within
1e-4 mm), unless ``resample=True``, which maps the prediction nearest-neighbour onto the
reference grid. Spacing comes from the reference file.

Outputs in ``out_dir``:

- ``metrics.csv``: one row per case and label (``case, label, name, status, ...metrics``);
  ``inf`` and ``nan`` are written as such;
- ``summary.json``: per label and metric the :func:`medseg.metrics.summarize` statistics
  (mean, std, median, IQR, bootstrap 95% CI, counts of NaN/inf), the counts of
  ``missed``/``spurious``/``both_empty`` cases per label, the unmatched cases and the
  settings; NaN/inf statistics are written as ``null``;
- ``boxplot_<metric>.png``: one box per label over the finite values, the tick label
  giving the number of cases and how many were NaN/inf.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.evaluation.pairs import check_matches
from medseg.io.atomic import write_text_atomic
from medseg.io.tables import json_safe, read_name_mapping, write_csv
from medseg.plots.charts import metric_boxplot
from medseg.metrics.labels import DEFAULT_METRICS, check_metric_names

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


@dataclass
class EvaluationResult:
    """What :func:`evaluate_folder` computed and wrote.

    Attributes:
        rows: one dict per case and label (the CSV rows).
        summary: the ``summary.json`` content.
        files: paths written (CSV, JSON, PNGs).
        unmatched_predictions: case names with a prediction but no reference.
        unmatched_references: case names with a reference but no prediction.
    """

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    unmatched_predictions: list[str] = field(default_factory=list)
    unmatched_references: list[str] = field(default_factory=list)


def case_name(path: Path) -> str:
    """The case name of an image file: its name without the image extension."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _image_files(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES) and not p.name.startswith("."):
            name = case_name(p)
            if name in files:
                raise InputError(f"{folder}: two files for case {name!r}: {files[name].name}, {p.name}")
            files[name] = p
    return files


BATCH_PREDICTION = "seg.nii.gz"  # a batch's label map: OUTPUT/studies/<study_id>/seg.nii.gz


def _batch_studies(pred: Path) -> Path | None:
    """The ``studies`` folder when ``pred`` is a ``medseg batch`` output (or its ``studies`` folder)."""
    for folder in (pred / "studies", pred):
        if folder.is_dir() and any(p.is_file() for p in folder.glob(f"*/{BATCH_PREDICTION}")):
            return folder
    return None


def _prediction_files(pred: Path) -> dict[str, Path]:
    """Prediction files by case: a folder of label maps, or a batch output (case = study ID)."""
    studies = _batch_studies(pred)
    if studies is None:
        return _image_files(pred)
    return {d.name: d / BATCH_PREDICTION for d in sorted(studies.iterdir()) if (d / BATCH_PREDICTION).is_file()}


def batch_label_names(pred: str | os.PathLike[str]) -> dict[int, str]:
    """Label names a ``medseg batch`` output recorded in its ``run.json`` (``{}`` when there are none)."""
    pred = Path(pred)
    studies = _batch_studies(pred) if pred.is_dir() else None
    if studies is None:
        return {}
    for run in (studies.parent / "run.json", studies / "run.json"):
        if run.is_file():
            try:
                labels = json.loads(run.read_text(encoding="utf-8")).get("labels") or {}
            except (json.JSONDecodeError, UnicodeDecodeError):
                return {}
            return {int(k): str(v) for k, v in labels.items() if str(k).isdigit() and int(k) != 0}
    return {}


def match_cases(pred: Path, ref: Path) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Pair prediction and reference files by case name.

    Both may be files (one case, named after the reference) or folders; ``pred`` may also be
    a ``medseg batch`` output folder (or its ``studies/``): its cases are the study IDs, whose
    ``seg.nii.gz`` is matched to the reference ``<study_id>.nii.gz`` (or other image suffix).

    Returns:
        ``(pairs, unmatched_predictions, unmatched_references)``; pairs are
        ``(case, pred_path, ref_path)`` sorted by case.
    """
    for p in (pred, ref):
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
    if pred.is_file() and ref.is_file():
        return [(case_name(ref), pred, ref)], [], []
    if pred.is_file() != ref.is_file():
        raise InputError(f"--pred {pred} and --ref {ref} must both be files or both be folders")
    preds, refs = _prediction_files(pred), _image_files(ref)
    if not refs:
        raise InputError(f"{ref}: no reference images ({', '.join(IMAGE_SUFFIXES)})")
    pairs = [(c, preds[c], refs[c]) for c in sorted(refs) if c in preds]
    return pairs, sorted(set(preds) - set(refs)), sorted(set(refs) - set(preds))


def load_label_names(path: Path) -> dict[int, str]:
    """Read ``{"1": "liver", ...}`` or ``{"liver": 1, ...}`` from a JSON file (background 0 dropped)."""
    raw, names = read_name_mapping(path, noun="label")
    if not isinstance(raw, dict) or not names:
        raise InputError(f"{path}: expected a JSON object mapping labels to names")
    names.pop(0, None)  # background is never evaluated
    return names


def resample_nearest(moving: Any, target: Any) -> np.ndarray:
    """The label array of Volume ``moving`` sampled nearest-neighbour on Volume ``target``'s grid."""
    from scipy import ndimage

    if moving.ndim != target.ndim:
        raise InputError(f"cannot resample a {moving.ndim}D prediction onto a {target.ndim}D reference")
    m = np.linalg.inv(moving.affine) @ target.affine  # target voxel -> moving voxel
    n = target.ndim
    return ndimage.affine_transform(
        moving.array, m[:n, :n], offset=m[:n, 3], output_shape=target.spatial_shape,
        order=0, mode="constant", cval=0,
    )


def _load_label_map(path: Path) -> Any:
    """A label Volume from an image file, or from a DICOM-SEG (``.dcm``) on its own frame grid."""
    from medseg.io import load

    if path.name.lower().endswith(".dcm"):
        from medseg.io.dicom.seg import read_dicom_seg

        return read_dicom_seg(path)
    return load(path)


def is_voxel_aligned(moving: Any, target: Any, *, atol: float = 1e-3) -> bool:
    """True when every voxel centre of ``moving`` is a voxel centre of ``target``.

    That is: the voxel-to-voxel map is a signed axis permutation (same spacing, axes possibly
    reordered or flipped) plus an integer shift, so nearest-neighbour placement is exact.
    """
    if moving.ndim != target.ndim:
        return False
    m = np.linalg.inv(target.affine) @ moving.affine  # moving voxel -> target voxel
    n = moving.ndim
    rot, offset = m[:n, :n], m[:n, n]
    perm = np.round(rot)
    signed_permutation = np.all(np.abs(perm).sum(axis=0) == 1) and np.all(np.abs(perm).sum(axis=1) == 1)
    return bool(signed_permutation and np.allclose(rot, perm, atol=atol)
                and np.allclose(offset, np.round(offset), atol=atol))


def present_labels(array: np.ndarray) -> list[int]:
    """The non-zero labels present in a label map (one pass, no sort of the voxels)."""
    from scipy import ndimage

    from medseg.metrics._checks import as_labels

    boxes = ndimage.find_objects(as_labels(array, "label map"))
    return [n + 1 for n, box in enumerate(boxes) if box is not None]


def _evaluate_case(case: str, pred_path: Path, ref_path: Path, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    from medseg.metrics import evaluate_labels

    ref = _load_label_map(ref_path)
    pred = _load_label_map(pred_path)
    if ref.channel_first or pred.channel_first:
        raise InputError(f"case {case}: expected single-channel label maps")
    pred_array = pred.array
    if not pred.same_grid(ref):
        if pred.meta.get("format") == "dicom-seg" and is_voxel_aligned(pred, ref):
            # a DICOM-SEG covers only the segmented frames: placed exactly onto the reference grid
            pred_array = resample_nearest(pred, ref)
        elif not options["resample"]:
            raise InputError(
                f"case {case}: prediction {pred_path.name} grid (shape {pred.spatial_shape}, spacing "
                f"{tuple(round(s, 4) for s in pred.spacing)}) differs from reference {ref_path.name} (shape "
                f"{ref.spatial_shape}, spacing {tuple(round(s, 4) for s in ref.spacing)}); pass --resample "
                "to map the prediction nearest-neighbour onto the reference grid"
            )
        pred_array = resample_nearest(pred, ref)
    labels = options["labels"]
    if labels is None:
        labels = sorted(set(present_labels(ref.array)) | set(present_labels(pred_array)))
    rows = evaluate_labels(
        pred_array, ref.array, labels=labels, spacing=ref.spacing, metrics=options["metrics"],
        tolerance_mm=options["tolerance_mm"], surface=options["surface"],
        missing_distance=options["missing_distance"],
    )
    for row in rows:
        row["case"] = case
    return rows


def _both_empty_row(case: str, label: int, metrics: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"case": case, "label": label, "status": "both_empty", "pred_voxels": 0,
                           "ref_voxels": 0, "pred_volume_mm3": 0.0, "ref_volume_mm3": 0.0}
    row.update({m: float("nan") for m in metrics})
    return row


def evaluate_folder(
    pred: str | os.PathLike[str],
    ref: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    labels: Sequence[int] | None = None,
    label_names: Mapping[int, str] | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    surface: str = "voxel",
    tolerance_mm: float = 2.0,
    missing_distance: str | float = "inf",
    resample: bool = False,
    workers: int = 1,
    plots: bool = True,
    on_case: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Evaluate every matched case and write ``metrics.csv``, ``summary.json`` and box plots.

    Args:
        pred, ref: a prediction and a reference label file, or two folders of them.
        out_dir: output folder (created).
        labels: labels to evaluate; default the keys of ``label_names``, else every
            label found in any reference or prediction.
        label_names: names of labels, used in the CSV, JSON and plots.
        metrics: metric names (see :data:`medseg.metrics.ALL_METRICS`).
        surface, tolerance_mm, missing_distance: as :func:`medseg.metrics.evaluate_labels`.
        resample: map a prediction on a different grid nearest-neighbour onto the reference.
        workers: processes evaluating cases in parallel (1: in this process).
        plots: write the box plot PNGs.
        on_case: called with each case name when its evaluation is finished (progress).
    """
    names = check_metric_names(metrics)
    if surface not in ("voxel", "surfel"):
        raise InputError(f"unknown surface definition {surface!r}; use voxel or surfel")
    label_names = dict(label_names or batch_label_names(pred))
    if labels is None and label_names:
        labels = sorted(label_names)
    pairs, only_pred, only_ref = match_cases(Path(pred), Path(ref))
    check_matches(pairs, only_pred, only_ref, pred=pred, ref=ref, noun="case")
    options = {"labels": list(labels) if labels is not None else None, "metrics": names, "surface": surface,
               "tolerance_mm": tolerance_mm, "missing_distance": missing_distance, "resample": resample}
    per_case: dict[str, list[dict[str, Any]]] = {}
    if workers > 1 and len(pairs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_evaluate_case, c, p, r, options): c for c, p, r in pairs}
            for future in as_completed(futures):
                case = futures[future]
                per_case[case] = future.result()
                if on_case:
                    on_case(case)
    else:
        for case, p, r in pairs:
            per_case[case] = _evaluate_case(case, p, r, options)
            if on_case:
                on_case(case)
    all_labels = sorted({row["label"] for rows in per_case.values() for row in rows} | set(labels or []))
    rows: list[dict[str, Any]] = []
    for case, _, _ in pairs:
        have = {row["label"]: row for row in per_case[case]}
        for lab in all_labels:
            row = have.get(lab) or _both_empty_row(case, lab, names)
            row["name"] = label_names.get(lab, str(lab))
            rows.append(row)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = ["case", "label", "name", "status", "pred_voxels", "ref_voxels", "pred_volume_mm3",
               "ref_volume_mm3", *names]
    files = [out / "metrics.csv", out / "summary.json"]
    write_csv(files[0], rows, columns)
    summary = _summary(rows, all_labels, label_names, names)
    summary.update(
        cases=len(pairs), unmatched_predictions=only_pred, unmatched_references=only_ref,
        settings={"metrics": list(names), "surface": surface, "tolerance_mm": tolerance_mm,
                  "missing_distance": missing_distance, "resample": resample,
                  "pred": str(pred), "ref": str(ref)},
    )
    write_text_atomic(files[1], json.dumps(json_safe(summary), indent=2) + "\n")
    if plots:
        for metric in names:
            groups = [(label_names.get(lab, str(lab)),
                       np.array([r[metric] for r in rows if r["label"] == lab], dtype=np.float64))
                      for lab in all_labels]
            path = out / f"boxplot_{metric}.png"
            metric_boxplot(path, metric, groups)
            files.append(path)
    return EvaluationResult(rows, summary, files, only_pred, only_ref)


def _summary(rows: list[dict[str, Any]], labels: list[int], label_names: Mapping[int, str],
             metrics: Sequence[str]) -> dict[str, Any]:
    from medseg.metrics import summarize

    per_label = {}
    for lab in labels:
        mine = [r for r in rows if r["label"] == lab]
        statuses = [r["status"] for r in mine]
        per_label[str(lab)] = {
            "name": label_names.get(lab, str(lab)),
            "cases": len(mine),
            "missed": statuses.count("missed"),
            "spurious": statuses.count("spurious"),
            "both_empty": statuses.count("both_empty"),
            "metrics": {m: summarize([r[m] for r in mine]) for m in metrics},
        }
    return {"labels": per_label}


__all__ = ["evaluate_folder", "EvaluationResult", "match_cases", "case_name", "load_label_names", "resample_nearest"]
