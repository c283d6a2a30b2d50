"""Prompts for SAM2 on medical volumes: points, boxes and masks on one slice.

A :class:`SlicePrompt` lives on one plane ``slice_index`` along ``axis`` (0, 1, 2 =
i, j, k of the volume array). In-plane coordinates are voxel indices ``(a, b)``
along the two remaining array axes, in increasing axis order (for ``axis=2``:
``(i, j)``). Prompts can be given in voxel indices ``(i, j, k)`` or in world RAS+ mm,
read from JSON, or derived from a mask (a reference label or another model's output),
so that no per-case CSV of boxes is ever needed.

JSON format (``coordinates`` is ``"voxel"`` or ``"world"``; ``slice`` is optional when
the coordinates say it; ``points``/``box`` are 3D coordinates, or 2D in-plane voxel
indices when ``slice`` is given)::

    {"coordinates": "world", "axis": 2,
     "prompts": [{"object_id": 1, "points": [[x, y, z]], "point_labels": [1]},
                 {"object_id": 2, "box": [[x0, y0, z0], [x1, y1, z1]]}]}
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.volume import Volume

PROMPT_KINDS = ("box", "points", "box+points", "mask")


def in_plane_axes(axis: int) -> tuple[int, int]:
    """The two array axes spanning a plane normal to ``axis`` (rows, cols), in order."""
    if axis not in (0, 1, 2):
        raise InputError(f"slice axis must be 0, 1 or 2 (i, j, k), got {axis}")
    a, b = (ax for ax in range(3) if ax != axis)
    return a, b


@dataclass
class SlicePrompt:
    """Prompts for one object on one slice.

    Attributes:
        slice_index: index of the plane along ``axis`` (voxels).
        axis: array axis normal to the plane (0, 1, 2 = i, j, k).
        object_id: label value the object gets in the output label map (>= 1).
        points: ``(N, 2)`` float in-plane voxel indices ``(a, b)``, or ``None``.
        point_labels: ``(N,)`` int, 1 = inside the object, 0 = outside.
        box: ``(4,)`` float ``[a0, b0, a1, b1]`` in-plane voxel indices (corners, inclusive).
        mask: ``(rows, cols)`` bool mask prompt on the plane.
    """

    slice_index: int
    axis: int = 2
    object_id: int = 1
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        in_plane_axes(self.axis)
        self.slice_index = int(self.slice_index)
        self.object_id = int(self.object_id)
        if self.object_id < 1:
            raise InputError(f"prompt object_id must be >= 1 (0 is background), got {self.object_id}")
        if self.points is not None:
            self.points = np.asarray(self.points, dtype=np.float64).reshape(-1, 2)
            labels = np.ones(len(self.points), np.int64) if self.point_labels is None else self.point_labels
            self.point_labels = np.asarray(labels, dtype=np.int64).reshape(-1)
            if len(self.point_labels) != len(self.points):
                raise InputError(
                    f"{len(self.points)} prompt points but {len(self.point_labels)} point labels"
                )
            if not np.all(np.isin(self.point_labels, (0, 1))):
                raise InputError(f"point labels must be 0 (outside) or 1 (inside), got {self.point_labels.tolist()}")
        elif self.point_labels is not None:
            raise InputError("point labels given without points")
        if self.box is not None:
            box = np.asarray(self.box, dtype=np.float64).reshape(-1)
            if box.shape != (4,):
                raise InputError(f"a box is [a0, b0, a1, b1], got {box.tolist()}")
            self.box = np.concatenate([np.minimum(box[:2], box[2:]), np.maximum(box[:2], box[2:])])
        if self.mask is not None:
            self.mask = np.asarray(self.mask).astype(bool)
            if self.mask.ndim != 2:
                raise InputError(f"a mask prompt is a 2D plane, got shape {self.mask.shape}")
        if self.points is None and self.box is None and self.mask is None:
            raise InputError(f"prompt for object {self.object_id} on slice {self.slice_index} has no point, box or mask")

    @property
    def kind(self) -> str:
        """``"box"``, ``"points"``, ``"box+points"``, ``"mask"`` (or combinations with ``+mask``)."""
        parts = [p for p, v in (("box", self.box), ("points", self.points), ("mask", self.mask)) if v is not None]
        return "+".join(parts)

    def check_plane(self, spatial_shape: Sequence[int]) -> None:
        """Raise :class:`InputError` when the prompt does not fit a volume of ``spatial_shape``."""
        n = spatial_shape[self.axis]
        if not 0 <= self.slice_index < n:
            raise InputError(f"prompt slice {self.slice_index} is outside 0..{n - 1} along axis {self.axis}")
        a, b = in_plane_axes(self.axis)
        plane = (spatial_shape[a], spatial_shape[b])
        if self.mask is not None and self.mask.shape != plane:
            raise InputError(f"mask prompt has shape {self.mask.shape}, the plane is {plane}")
        for name, coords in (("point", self.points), ("box", None if self.box is None else self.box.reshape(2, 2))):
            if coords is None:
                continue
            if np.any(coords < -0.5) or np.any(coords > np.array(plane) - 0.5):
                raise InputError(
                    f"prompt {name} {coords.tolist()} lies outside the {plane[0]}x{plane[1]} plane "
                    f"(slice {self.slice_index}, axis {self.axis})"
                )

    def to_json(self, volume: Volume | None = None) -> dict[str, Any]:
        """JSON form in voxel indices ``(i, j, k)``, or world mm when ``volume`` is given."""
        out: dict[str, Any] = {"object_id": self.object_id, "slice": self.slice_index}
        if self.points is not None:
            out["points"] = _to_3d(self.points, self, volume)
            out["point_labels"] = self.point_labels.tolist()
        if self.box is not None:
            out["box"] = _to_3d(self.box.reshape(2, 2), self, volume)
        if self.mask is not None:
            out["mask_rle"] = _rle_encode(self.mask)
        return out


def _to_3d(coords2d: np.ndarray, prompt: SlicePrompt, volume: Volume | None) -> list[list[float]]:
    a, b = in_plane_axes(prompt.axis)
    ijk = np.zeros((len(coords2d), 3))
    ijk[:, a], ijk[:, b], ijk[:, prompt.axis] = coords2d[:, 0], coords2d[:, 1], prompt.slice_index
    if volume is not None:
        return np.round(volume.world_coordinates(ijk), 4).tolist()
    return ijk.tolist()


def _rle_encode(mask: np.ndarray) -> dict[str, Any]:
    flat = np.concatenate([[0], mask.reshape(-1).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    return {"shape": list(mask.shape), "starts_lengths": np.stack([edges[::2], edges[1::2] - edges[::2]], 1).reshape(-1).tolist()}


def _rle_decode(data: dict[str, Any]) -> np.ndarray:
    shape = tuple(int(s) for s in data["shape"])
    flat = np.zeros(int(np.prod(shape)), dtype=bool)
    sl = np.asarray(data["starts_lengths"], dtype=np.int64).reshape(-1, 2)
    for start, length in sl:
        flat[start : start + length] = True
    return flat.reshape(shape)


def _slice_of(coords3d: np.ndarray, axis: int, where: str) -> int:
    values = coords3d[:, axis]
    idx = np.rint(values).astype(int)
    if np.ptp(values) > 0.5 or idx.min() != idx.max():
        raise InputError(
            f"{where}: coordinates lie on different slices along axis {axis} "
            f"(voxel positions {np.round(values, 2).tolist()}); give one prompt per slice"
        )
    return int(idx[0])


def prompt_from_coordinates(
    volume: Volume,
    *,
    axis: int = 2,
    object_id: int = 1,
    points: Sequence[Sequence[float]] | np.ndarray | None = None,
    point_labels: Sequence[int] | None = None,
    box: Sequence[Sequence[float]] | np.ndarray | None = None,
    slice_index: int | None = None,
    coordinates: str = "voxel",
    where: str = "prompt",
) -> SlicePrompt:
    """A :class:`SlicePrompt` from 3D coordinates (voxel ``(i, j, k)`` or world RAS+ mm).

    ``points`` is ``(N, 3)``; ``box`` is two opposite corners ``(2, 3)``. With
    ``slice_index`` given, voxel coordinates may also be 2D in-plane ``(a, b)``.
    The slice is the rounded coordinate along ``axis``; every coordinate must be on it.

    Raises:
        InputError: coordinates on different slices, outside the volume, or malformed.
    """
    if coordinates not in ("voxel", "world"):
        raise InputError(f"{where}: coordinates must be 'voxel' or 'world', got {coordinates!r}")
    a, b = in_plane_axes(axis)
    inv = np.linalg.inv(volume.affine)
    parts: dict[str, np.ndarray] = {}
    for name, raw in (("points", points), ("box", box)):
        if raw is None:
            continue
        arr = np.asarray(raw, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr.reshape(-1, 3 if coordinates == "world" or slice_index is None else 2)
        if arr.shape[-1] == 2 and coordinates == "voxel" and slice_index is not None:
            full = np.zeros((len(arr), 3))
            full[:, a], full[:, b], full[:, axis] = arr[:, 0], arr[:, 1], slice_index
            arr = full
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise InputError(f"{where}: {name} must be a list of [x, y, z] coordinates, got shape {arr.shape}")
        if coordinates == "world":
            arr = arr @ inv[:3, :3].T + inv[:3, 3]
        parts[name] = arr
    if not parts:
        raise InputError(f"{where}: no points or box")
    all_coords = np.concatenate(list(parts.values()))
    if slice_index is None:
        slice_index = _slice_of(all_coords, axis, where)
    else:
        off = np.abs(all_coords[:, axis] - slice_index)
        if np.any(off > 0.5 + 1e-6):
            raise InputError(
                f"{where}: coordinates lie {float(off.max()):.2f} voxels off slice {slice_index} along axis {axis}"
            )
    prompt = SlicePrompt(
        slice_index=slice_index,
        axis=axis,
        object_id=object_id,
        points=None if "points" not in parts else parts["points"][:, [a, b]],
        point_labels=None if point_labels is None else np.asarray(point_labels),
        box=None if "box" not in parts else parts["box"][:, [a, b]].reshape(-1),
    )
    prompt.check_plane(volume.spatial_shape)
    return prompt


def parse_prompts(data: Any, volume: Volume, *, source: str = "prompts") -> list[SlicePrompt]:
    """Prompts from a decoded JSON document (see the module docstring for the format)."""
    if isinstance(data, list):
        data = {"prompts": data}
    if not isinstance(data, dict) or not isinstance(data.get("prompts"), list) or not data["prompts"]:
        raise InputError(f"{source}: expected {{'prompts': [...]}} with at least one prompt")
    coords = data.get("coordinates", "voxel")
    axis = int(data.get("axis", 2))
    known = {"object_id", "label", "slice", "points", "point_labels", "box", "mask_rle", "axis", "name"}
    out = []
    for n, item in enumerate(data["prompts"]):
        where = f"{source}: prompt #{n}"
        if not isinstance(item, dict):
            raise InputError(f"{where}: expected an object, got {item!r}")
        unknown = sorted(set(item) - known)
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; accepted: {', '.join(sorted(known))}")
        obj = int(item.get("object_id", item.get("label", 1)))
        ax = int(item.get("axis", axis))
        if "mask_rle" in item:
            if "slice" not in item:
                raise InputError(f"{where}: a mask prompt needs 'slice'")
            prompt = SlicePrompt(slice_index=int(item["slice"]), axis=ax, object_id=obj, mask=_rle_decode(item["mask_rle"]))
            prompt.check_plane(volume.spatial_shape)
        else:
            try:
                prompt = prompt_from_coordinates(
                    volume, axis=ax, object_id=obj, points=item.get("points"), point_labels=item.get("point_labels"),
                    box=item.get("box"), slice_index=item.get("slice"), coordinates=coords, where=where,
                )
            except (TypeError, ValueError) as exc:
                if isinstance(exc, InputError):
                    raise
                raise InputError(f"{where}: {exc}") from exc
        if "name" in item:
            prompt.meta["name"] = str(item["name"])
        out.append(prompt)
    return out


def load_prompts(path: str | os.PathLike[str], volume: Volume) -> list[SlicePrompt]:
    """Read a prompts JSON file (see the module docstring) for ``volume``.

    Raises:
        InputError: unreadable file or invalid prompt (names the file and the prompt).
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: no such prompts file") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{p}: not a valid JSON prompts file ({exc})") from exc
    return parse_prompts(data, volume, source=str(p))


def save_prompts(
    prompts: Sequence[SlicePrompt], path: str | os.PathLike[str], *, volume: Volume | None = None
) -> Path:
    """Write prompts as JSON (world mm when ``volume`` is given, else voxel indices); atomic."""
    from medseg.io.atomic import write_text_atomic

    axes = {p.axis for p in prompts}
    doc = {
        "coordinates": "world" if volume is not None else "voxel",
        "axis": axes.pop() if len(axes) == 1 else 2,
        "prompts": [{**p.to_json(volume), "axis": p.axis} for p in prompts],
    }
    write_text_atomic(path, json.dumps(doc, indent=1) + "\n")
    return Path(path)


# ----------------------------------------------------------------------------- from masks
def _key_slices(present: np.ndarray, areas: np.ndarray, key_slices: str | int) -> list[int]:
    idx = np.flatnonzero(present)
    if key_slices == "largest":
        return [int(np.argmax(areas))]
    if key_slices == "center":
        return [int(idx[len(idx) // 2])]
    if key_slices == "all":
        return idx.tolist()
    if isinstance(key_slices, int) and key_slices > 0:
        return idx[:: key_slices].tolist()
    raise InputError(f"key_slices must be 'largest', 'center', 'all' or a positive step, got {key_slices!r}")


def sample_points(
    plane_mask: np.ndarray,
    rng: np.random.Generator,
    *,
    n_positive: int = 1,
    n_negative: int = 0,
    negative_margin: int = 5,
) -> tuple[np.ndarray, np.ndarray]:
    """Points on a 2D mask: the innermost voxel first, then random inside; negatives in a ring outside.

    Returns:
        ``(points (N, 2) in-plane voxel indices, labels (N,))``.
    """
    from scipy import ndimage

    pts: list[np.ndarray] = []
    labels: list[int] = []
    if n_positive > 0:
        dist = ndimage.distance_transform_edt(np.pad(plane_mask, 1))[1:-1, 1:-1]
        pts.append(np.array(np.unravel_index(int(np.argmax(dist)), dist.shape), dtype=np.float64))
        labels.append(1)
        inside = np.argwhere(dist >= max(1.0, 0.5 * dist.max()) if dist.max() > 2 else plane_mask)
        if n_positive > 1 and len(inside):
            pick = rng.choice(len(inside), size=min(n_positive - 1, len(inside)), replace=False)
            pts.extend(inside[pick].astype(np.float64))
            labels.extend([1] * len(pick))
    if n_negative > 0:
        ring = ndimage.binary_dilation(plane_mask, iterations=max(1, negative_margin)) & ~plane_mask
        outside = np.argwhere(ring if ring.any() else ~plane_mask)
        if len(outside):
            pick = rng.choice(len(outside), size=min(n_negative, len(outside)), replace=False)
            pts.extend(outside[pick].astype(np.float64))
            labels.extend([0] * len(pick))
    return np.array(pts, dtype=np.float64).reshape(-1, 2), np.array(labels, dtype=np.int64)


def box_of(plane_mask: np.ndarray, *, margin: float = 0.0) -> np.ndarray:
    """``[a0, b0, a1, b1]`` bounding box (inclusive voxel indices) of a 2D mask, grown by ``margin`` voxels, clipped."""
    coords = np.argwhere(plane_mask)
    if not len(coords):
        raise InputError("cannot take the bounding box of an empty mask")
    lo, hi = coords.min(0) - margin, coords.max(0) + margin
    hi = np.minimum(hi, np.array(plane_mask.shape) - 1)
    return np.concatenate([np.maximum(lo, 0), hi]).astype(np.float64)


def prompts_from_mask(
    mask: Volume | np.ndarray,
    *,
    axis: int = 2,
    kind: str = "box",
    key_slices: str | int = "largest",
    labels: Sequence[int] | None = None,
    n_positive: int = 1,
    n_negative: int = 0,
    margin: float = 0.0,
    seed: int = 0,
) -> list[SlicePrompt]:
    """Derive prompts from a label map (a reference, or a U-Net prediction to refine).

    Args:
        mask: label map ``[i, j, k]`` (0 = background).
        axis: slice axis of the prompts.
        kind: ``"box"`` (bounding box of the object on the slice), ``"points"``
            (innermost point plus random positives / negatives), ``"box+points"`` or ``"mask"``.
        key_slices: ``"largest"`` (the slice of largest cross-section, one prompt per
            object), ``"center"`` (middle slice of the object's extent), ``"all"`` or a step ``n``
            (every n-th slice where the object is present).
        labels: label values to prompt (default: every non-zero value present).
        n_positive, n_negative: points per prompt for the point kinds.
        margin: voxels added on each side of boxes.
        seed: random seed of the point sampling.

    Returns:
        prompts ordered by object then slice; objects absent from the mask get none.
    """
    if kind not in PROMPT_KINDS:
        raise InputError(f"prompt kind must be one of {', '.join(PROMPT_KINDS)}, got {kind!r}")
    arr = np.asarray(mask.array if isinstance(mask, Volume) else mask)
    if arr.ndim != 3:
        raise InputError(f"prompts_from_mask needs a 3D label map [i, j, k], got shape {arr.shape}")
    in_plane_axes(axis)
    values = [int(v) for v in np.unique(arr) if v != 0] if labels is None else [int(v) for v in labels]
    rng = np.random.default_rng(seed)
    other = tuple(ax for ax in range(3) if ax != axis)
    out: list[SlicePrompt] = []
    for value in values:
        obj = arr == value
        areas = obj.sum(axis=other)
        if not areas.any():
            continue
        for s in _key_slices(areas > 0, areas, key_slices):
            plane = np.take(obj, s, axis=axis)
            pts = pl = box = pmask = None
            if "box" in kind:
                box = box_of(plane, margin=margin)
            if "points" in kind:
                pts, pl = sample_points(plane, rng, n_positive=n_positive, n_negative=n_negative)
            if kind == "mask":
                pmask = plane
            out.append(SlicePrompt(s, axis, value, points=pts, point_labels=pl, box=box, mask=pmask))
    return out


__all__ = [
    "PROMPT_KINDS",
    "SlicePrompt",
    "in_plane_axes",
    "prompt_from_coordinates",
    "parse_prompts",
    "load_prompts",
    "save_prompts",
    "prompts_from_mask",
    "sample_points",
    "box_of",
]
