"""Per-label post-processing of a label map: connected components and holes.

Rules come from the ``postprocessing`` section of ``model.json``, keyed by label value::

    {"1": {"largest_component": true, "min_size_mm3": 0, "fill_holes": false}}

- ``largest_component``: ``true`` keeps the largest connected component of that label,
  an integer ``k`` keeps the ``k`` largest; removed voxels become background (0).
- ``min_size_mm3``: components smaller than this volume (mm³, from the voxel spacing)
  become background.
- ``fill_holes``: background voxels completely enclosed by the label take the label.

Components use 26-connectivity in 3D (8 in 2D). Each label is processed inside its own
bounding box, so the cost scales with the structure's size, not the image's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.errors import ConfigError

log = logging.getLogger(__name__)

_FIELDS = ("largest_component", "min_size_mm3", "fill_holes")


@dataclass(frozen=True)
class LabelRule:
    """Post-processing of one label value.

    Attributes:
        keep_largest: number of largest components kept (0 = keep all).
        min_size_mm3: components under this volume in mm³ are removed (0 = none).
        fill_holes: fill enclosed background with the label.
    """

    keep_largest: int = 0
    min_size_mm3: float = 0.0
    fill_holes: bool = False

    @property
    def is_noop(self) -> bool:
        return self.keep_largest == 0 and self.min_size_mm3 <= 0 and not self.fill_holes


def parse_rules(spec: Mapping[str, Any] | None, *, where: str = "postprocessing") -> dict[int, LabelRule]:
    """Validate the ``postprocessing`` dict; returns ``{label value: LabelRule}``.

    Raises:
        ConfigError: a key that is not a label value, an unknown field or a bad value.
    """
    rules: dict[int, LabelRule] = {}
    for key, body in (spec or {}).items():
        if not str(key).isdigit() or int(key) == 0:
            raise ConfigError(f"{where}: key {key!r} must be a label value >= 1")
        if not isinstance(body, Mapping):
            raise ConfigError(f"{where}.{key}: expected a mapping of {', '.join(_FIELDS)}, got {body!r}")
        unknown = sorted(set(body) - set(_FIELDS))
        if unknown:
            raise ConfigError(f"{where}.{key}: unknown field(s) {', '.join(unknown)}; known: {', '.join(_FIELDS)}")
        largest = body.get("largest_component", False)
        if isinstance(largest, bool):
            keep = 1 if largest else 0
        elif isinstance(largest, int) and largest >= 0:
            keep = largest
        else:
            raise ConfigError(f"{where}.{key}.largest_component must be true/false or a count >= 0, got {largest!r}")
        try:
            min_size = float(body.get("min_size_mm3", 0) or 0)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.{key}.min_size_mm3 must be a number, got {body.get('min_size_mm3')!r}") from None
        if min_size < 0 or not np.isfinite(min_size):
            raise ConfigError(f"{where}.{key}.min_size_mm3 must be >= 0, got {min_size}")
        rules[int(key)] = LabelRule(keep, min_size, bool(body.get("fill_holes", False)))
    return rules


def _components(cc3d: Any, mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """Connected components of ``mask`` (full connectivity) and their count. cc3d 4.1 raises
    ``maximum length exception`` on some masks of a few voxels (``[[[1, 0, 1]]]``: it sizes its
    union-find table too small); scipy labels those."""
    try:
        return cc3d.connected_components(mask, connectivity=connectivity, return_N=True)
    except RuntimeError:
        from scipy import ndimage

        return ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))


def postprocess_labels(
    labels: np.ndarray,
    rules: Mapping[int, LabelRule] | Mapping[str, Any] | None,
    *,
    spacing_mm: Sequence[float],
) -> np.ndarray:
    """Apply per-label rules to ``labels`` (``[i, j, k]`` or ``[i, j]``) in place; returns it.

    Args:
        labels: integer label map.
        rules: ``{label: LabelRule}`` or the raw ``postprocessing`` dict of ``model.json``.
        spacing_mm: voxel size along each array axis, in mm (for ``min_size_mm3``).
    """
    import cc3d
    from scipy import ndimage

    if rules and not all(isinstance(r, LabelRule) for r in rules.values()):
        rules = parse_rules(rules)  # type: ignore[arg-type]
    active = {k: r for k, r in (rules or {}).items() if not r.is_noop}
    if not active:
        return labels
    voxel_mm3 = float(np.prod(spacing_mm[: labels.ndim]))
    boxes = ndimage.find_objects(labels, max_label=max(active))
    connectivity = 26 if labels.ndim == 3 else 8
    for value, rule in sorted(active.items()):
        box = boxes[value - 1] if value - 1 < len(boxes) else None
        if box is None:
            continue  # label absent
        if rule.fill_holes:  # grow the box by one voxel so enclosed regions are seen as enclosed
            box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, labels.shape))
        view = labels[box]
        mask = view == value
        if rule.keep_largest or rule.min_size_mm3 > 0:
            cc, n = _components(cc3d, mask, connectivity)
            if n > 0:
                sizes = np.bincount(cc.ravel(), minlength=n + 1)
                sizes[0] = 0
                keep = np.ones(n + 1, dtype=bool)
                keep[0] = False
                if rule.min_size_mm3 > 0:
                    keep &= sizes * voxel_mm3 >= rule.min_size_mm3
                if rule.keep_largest and n > rule.keep_largest:
                    order = np.argsort(-sizes[1:], kind="stable")[: rule.keep_largest] + 1
                    top = np.zeros(n + 1, dtype=bool)
                    top[order] = True
                    keep &= top
                removed = mask & ~keep[cc]
                if removed.any():
                    log.debug("label %d: removed %d voxels in small/extra components", value, int(removed.sum()))
                    view[removed] = 0
                    mask &= ~removed
        if rule.fill_holes and mask.any():
            filled = ndimage.binary_fill_holes(mask) & (view == 0)
            view[filled] = value
    return labels


__all__ = ["LabelRule", "parse_rules", "postprocess_labels"]
