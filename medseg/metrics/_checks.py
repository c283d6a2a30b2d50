"""Input checks and cropping shared by every metric family (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medseg.errors import InputError

Spacing = Sequence[float] | float | None


def as_mask(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as a boolean mask; accepts bool, or integer/float arrays holding only 0 and 1."""
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{name}: expected a binary mask, got dtype {arr.dtype}")
    if arr.size and not np.isin(np.unique(arr), (0, 1)).all():
        values = np.unique(arr)[:6]
        raise InputError(
            f"{name}: expected a binary mask (0/1 or bool), found values {values.tolist()}; "
            "select a label first, e.g. mask = labels == 3, or use evaluate_labels()"
        )
    return arr.astype(bool)


def as_labels(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as a non-negative integer label map (bool and integral floats accepted)."""
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        if arr.size and not np.all(np.mod(arr, 1) == 0):
            raise InputError(f"{name}: label map holds non-integer values (dtype {arr.dtype})")
        if arr.size and arr.min() < 0:
            raise InputError(f"{name}: label map holds negative labels (min {float(arr.min())})")
        top = float(arr.max()) if arr.size else 0.0
        arr = arr.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int64)
    elif arr.dtype.kind not in "iu":
        raise InputError(f"{name}: expected an integer label map, got dtype {arr.dtype}")
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise InputError(f"{name}: label map holds negative labels (min {int(arr.min())})")
    return arr


def check_pair(pred: np.ndarray, ref: np.ndarray, *, ndims: tuple[int, ...] = (2, 3)) -> None:
    """Raise :class:`InputError` unless ``pred`` and ``ref`` have the same 2D/3D shape."""
    if pred.shape != ref.shape:
        raise InputError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if pred.ndim not in ndims:
        raise InputError(
            f"expected a {' or '.join(f'{d}D' for d in ndims)} array, got shape {pred.shape}"
        )


def check_spacing(spacing: Spacing, ndim: int) -> np.ndarray:
    """Spacing in mm per array axis as a float64 vector of length ``ndim`` (None means 1 mm)."""
    if spacing is None:
        return np.ones(ndim)
    sp = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
    if sp.size == 1 and np.ndim(spacing) == 0:
        sp = np.full(ndim, float(sp[0]))
    if sp.ndim != 1 or sp.size != ndim:
        raise InputError(f"spacing {tuple(sp.tolist())} has {sp.size} values for a {ndim}D array")
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(f"spacing must be positive and finite, got {tuple(sp.tolist())} mm")
    return sp


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The tightest box holding every True voxel of ``mask`` (None when empty).

    One pass over the array (a projection along the last axis), then work on the
    projection and on the box only.
    """
    if mask.ndim == 1:
        idx = np.flatnonzero(mask)
        return None if idx.size == 0 else (slice(int(idx[0]), int(idx[-1]) + 1),)
    lead = bounding_box(mask.any(axis=-1))
    if lead is None:
        return None
    last = np.flatnonzero(mask[lead].any(axis=tuple(range(mask.ndim - 1))))
    return (*lead, slice(int(last[0]), int(last[-1]) + 1))


def union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    """The smallest box holding boxes ``a`` and ``b`` (either may be None)."""
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def crop_pad(mask: np.ndarray, box: tuple[slice, ...], pad: int = 1) -> np.ndarray:
    """``mask[box]`` with ``pad`` zero voxels added on every side (outside the image is background)."""
    return np.pad(mask[box], pad, mode="constant", constant_values=False)


__all__ = ["as_mask", "as_labels", "check_pair", "check_spacing", "bounding_box", "union_box", "crop_pad"]
