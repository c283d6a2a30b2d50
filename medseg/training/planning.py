"""Dataset fingerprint and plan: what nnU-Net decides before training, as an editable JSON.

:func:`plan_dataset` reads every training case (reoriented to RAS, no resampling) and
records median spacing and shape, foreground intensity statistics, class frequencies
and anisotropy. From these it derives:

- ``preprocessing``: orientation, target spacing (median; for anisotropic data the
  10th percentile of the coarse axis, as nnU-Net), normalisation (``ct`` with the
  foreground 0.5/99.5 percentiles, mean and std for CT; per-image ``zscore`` otherwise);
- ``configurations``: for ``3d`` and ``2d``, a patch size (voxels, multiple of the network's
  downsampling factor) and batch size that fit ``memory_budget_mb``;
- ``recommended``: ``"2d"`` when the slice spacing is more than 3x the in-plane
  spacing (anisotropy), else ``"3d"``.

The plan is a plain JSON file (:func:`save_plan` / :func:`load_plan`) that users may edit;
training uses it unless the config overrides a value.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.io.atomic import write_text_atomic

log = logging.getLogger(__name__)

PLAN_VERSION = 1
ANISOTROPY_THRESHOLD = 3.0
_SAMPLES_PER_CASE = 20000
# activation memory per voxel per base filter of a U-Net in training (fwd + bwd, fp32), bytes;
# calibrated so that a 3D patch 128^3, batch 2, 32 base filters needs ~6.4 GB (nnU-Net's default fits 8 GB with AMP)
_BYTES_PER_VOXEL_FILTER = 48.0


def fingerprint(dataset: Any, *, seed: int = 0) -> dict[str, Any]:
    """Spacing, shape, foreground intensities and class frequencies of ``dataset``'s cases.

    Returns a JSON-compatible dict; spacings in mm and shapes in voxels, both in RAS
    axis order (i: R-L, j: P-A, k: I-S) after :func:`~medseg.transforms.preprocess.to_canonical`.
    """
    from medseg.data.datasets import load_case
    from medseg.transforms.preprocess import to_canonical

    rng = np.random.default_rng(seed)
    spacings, shapes, samples = [], [], []
    counts: dict[int, int] = {}
    total = 0
    for case in dataset.cases:
        image, label = load_case(case)
        image = to_canonical(image)
        spacings.append([round(s, 5) for s in image.spacing])
        shapes.append(list(image.spatial_shape))
        if label is None:
            continue
        label = to_canonical(label)
        lab = label.array
        values, n = np.unique(lab, return_counts=True)
        for v, c in zip(values.tolist(), n.tolist()):
            counts[int(v)] = counts.get(int(v), 0) + int(c)
        total += lab.size
        first = image.array[0] if image.channel_first else image.array
        fg = first[lab > 0]
        if fg.size:
            take = min(fg.size, _SAMPLES_PER_CASE)
            samples.append(rng.choice(fg.ravel(), size=take, replace=False).astype(np.float64))
    fg_all = np.concatenate(samples) if samples else np.zeros(0)
    intensity = (
        {
            "percentile_00_5": float(np.percentile(fg_all, 0.5)),
            "percentile_99_5": float(np.percentile(fg_all, 99.5)),
            "mean": float(fg_all.mean()),
            "std": float(fg_all.std()),
            "median": float(np.median(fg_all)),
            "samples": int(fg_all.size),
        }
        if fg_all.size
        else {}
    )
    return {
        "num_cases": len(dataset.cases),
        "spacings_mm": spacings,
        "shapes": shapes,
        "median_spacing_mm": [float(v) for v in np.median(np.asarray(spacings), axis=0)],
        "median_shape": [int(v) for v in np.median(np.asarray(shapes), axis=0)],
        "foreground_intensity": intensity,
        "class_frequencies": {str(k): counts[k] / total for k in sorted(counts)} if total else {},
    }


def target_spacing(spacings: list[list[float]]) -> list[float]:
    """Median spacing; on anisotropic data (coarse axis > 3x the finest) the coarse axis
    takes the 10th percentile of its spacings (nnU-Net's rule)."""
    arr = np.asarray(spacings, dtype=np.float64)
    target = np.median(arr, axis=0)
    coarse = int(np.argmax(target))
    if target[coarse] > ANISOTROPY_THRESHOLD * np.min(target):
        target[coarse] = max(np.percentile(arr[:, coarse], 10), ANISOTROPY_THRESHOLD * np.min(target) * 0.999)
    return [round(float(t), 4) for t in target]


def estimate_memory_mb(patch_size: list[int], batch_size: int, base_filters: int) -> float:
    """Rough training memory (MB) of a U-Net: activations of one fwd+bwd pass in fp32."""
    return batch_size * math.prod(patch_size) * base_filters * _BYTES_PER_VOXEL_FILTER / 2**20


def fit_patch(
    shape: list[int],
    *,
    divisor: int,
    memory_budget_mb: float,
    base_filters: int,
    min_batch: int = 2,
    max_patch: int | None = None,
) -> tuple[list[int], int]:
    """Largest patch (multiple of ``divisor``, at most the median shape rounded up) and batch size
    that fit the memory budget; the longest axis is shrunk first (nnU-Net's rule)."""
    patch = [max(divisor, int(math.ceil(s / divisor)) * divisor) for s in shape]
    if max_patch:
        patch = [min(p, max(divisor, max_patch // divisor * divisor)) for p in patch]
    while estimate_memory_mb(patch, min_batch, base_filters) > memory_budget_mb and max(patch) > divisor:
        axis = int(np.argmax(patch))
        patch[axis] -= divisor
    batch = min_batch
    # spend leftover memory on a larger batch (at most 5% of the dataset's voxels per step, nnU-Net-like)
    while estimate_memory_mb(patch, batch + 1, base_filters) <= memory_budget_mb and batch < 8:
        batch += 1
    return patch, batch


def _patch_multiple(name: str, config: dict[str, Any], *, dims: int) -> int:
    """One factor every patch axis is a multiple of: the lcm of the family's per-axis input multiple."""
    from medseg.models.registry import get_model_spec

    spec = get_model_spec(name)
    if spec.spatial_dims != dims:
        raise ConfigError(f"model {name!r} is {spec.spatial_dims}D; the {dims}d configuration needs a {dims}D model")
    return math.lcm(*spec.size_multiple(config))


def plan_dataset(
    dataset: Any,
    *,
    memory_budget_mb: float = 8000.0,
    base_filters: int = 32,
    model_3d: tuple[str, dict[str, Any]] = ("unet3d", {}),
    model_2d: tuple[str, dict[str, Any]] = ("unet2d", {}),
    max_patch: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Fingerprint ``dataset`` (a :class:`~medseg.data.datasets.Dataset`) and derive a plan.

    Args:
        memory_budget_mb: memory a training step may use (MB); decides patch and batch size.
        base_filters: feature channels of the network's first level (memory model).
        model_3d, model_2d: ``(registry name, config)`` of the networks the ``3d`` and ``2d``
            configurations are planned for: patch sizes are multiples of the input multiple
            each family declares (:meth:`medseg.models.ModelSpec.size_multiple`).
        max_patch: cap on every patch axis (voxels), e.g. for CPU training.
    """
    fp = fingerprint(dataset, seed=seed)
    spacing = target_spacing(fp["spacings_mm"])
    median_spacing = np.asarray(fp["median_spacing_mm"])
    shape_at_target = [
        int(round(n * s / t)) for n, s, t in zip(fp["median_shape"], median_spacing, spacing)
    ]
    anisotropy = float(max(spacing) / min(spacing))
    recommended = "2d" if anisotropy > ANISOTROPY_THRESHOLD else "3d"
    if dataset.modality == "CT" and fp["foreground_intensity"]:
        fi = fp["foreground_intensity"]
        normalization = {
            "kind": "ct",
            "clip": [round(fi["percentile_00_5"], 3), round(fi["percentile_99_5"], 3)],
            "mean": round(fi["mean"], 4),
            "std": round(max(fi["std"], 1e-3), 4),
        }
    else:
        normalization = {"kind": "zscore", "percentiles": [0.5, 99.5]}
    patch3, batch3 = fit_patch(
        shape_at_target, divisor=_patch_multiple(*model_3d, dims=3), memory_budget_mb=memory_budget_mb,
        base_filters=base_filters, max_patch=max_patch,
    )
    patch2, batch2 = fit_patch(
        shape_at_target[:2], divisor=_patch_multiple(*model_2d, dims=2), memory_budget_mb=memory_budget_mb / 4,
        base_filters=base_filters, min_batch=8, max_patch=max_patch and max(32, 2 * max_patch),
    )
    return {
        "plan_version": PLAN_VERSION,
        "dataset": {
            "root": str(dataset.root),
            "name": dataset.name,
            "format": dataset.format,
            "modality": dataset.modality,
            "labels": {str(k): v for k, v in sorted(dataset.labels.items())},
            "channel_names": {str(k): v for k, v in sorted(dataset.channel_names.items())},
        },
        "fingerprint": fp,
        "preprocessing": {
            "orientation": "RAS",
            "target_spacing_mm": spacing,
            "normalization": normalization,
            "image_order": 1,
        },
        "anisotropy": round(anisotropy, 3),
        "recommended": recommended,
        "memory_budget_mb": memory_budget_mb,
        "configurations": {
            "3d": {"spatial_dims": 3, "patch_size": patch3, "batch_size": batch3,
                   "estimated_memory_mb": round(estimate_memory_mb(patch3, batch3, base_filters), 1)},
            "2d": {"spatial_dims": 2, "patch_size": patch2, "batch_size": batch2,
                   "estimated_memory_mb": round(estimate_memory_mb(patch2, batch2, base_filters), 1)},
        },
    }


def save_plan(plan: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``plan`` as indented JSON (atomic)."""
    write_text_atomic(path, json.dumps(plan, indent=2) + "\n")
    return Path(path)


def load_plan(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a plan JSON and check the keys training needs."""
    p = Path(path)
    try:
        plan = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{p}: not a readable plan ({exc})") from exc
    for key in ("preprocessing", "configurations"):
        if key not in plan:
            raise InputError(f"{p}: plan is missing {key!r}")
    for key in ("3d", "2d"):
        if key not in plan["configurations"]:
            raise InputError(f"{p}: plan configurations lack {key!r}")
    return plan


__all__ = ["PLAN_VERSION", "fingerprint", "target_spacing", "plan_dataset", "save_plan", "load_plan",
           "estimate_memory_mb", "fit_patch"]
