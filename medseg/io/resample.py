"""Resampling an irregular slice stack (gantry tilt, uneven spacing, missing slices)
onto a regular orthogonal grid.

The output grid keeps the in-plane axes and pixel size of the slices; its third axis
is the slice normal with the smallest slice step found in the series. Every output
voxel is interpolated along the normal between the two source slices that bracket it,
each sampled at the voxel's in-plane position (bilinear; nearest-neighbour for labels).
The in-plane extent grows to cover every tilted slice, so no source pixel is lost;
voxels outside every slice get ``fill`` (default: the stack minimum, e.g. air in CT).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medseg.errors import InputError


def regular_grid_from_stack(
    stack: np.ndarray,
    affine: np.ndarray,
    positions_mm: np.ndarray,
    inplane_shift_mm: np.ndarray,
    *,
    is_label: bool = False,
    step_mm: float | None = None,
    fill: float | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Place ``stack`` on a regular orthogonal grid.

    Args:
        stack: ``(n, rows, cols)`` slices, sorted along the normal.
        affine: 4x4 voxel -> RAS+ mm of the first slice: columns 0/1 are the in-plane
            axes (column and row directions times pixel size), column 2 points along
            the slice normal (its length is ignored), column 3 is the first slice's origin.
        positions_mm: ``(n,)`` slice positions along the normal relative to the first (ascending).
        inplane_shift_mm: ``(n, 2)`` offset of each slice origin from the first, along
            affine columns 0 and 1 (mm); non-zero for gantry tilt.
        is_label: nearest-neighbour sampling (labels never get interpolated values).
        step_mm: output slice spacing; default the smallest step between source slices.
        fill: value outside the source slices; default the stack minimum.

    Returns:
        ``array [i, j, k]`` (i = columns, j = rows), its 4x4 RAS+ affine, and a record of
        the output grid (step, shape, in-plane origin offset).
    """
    from scipy import ndimage

    stack = np.asarray(stack)
    n, rows, cols = stack.shape
    d = np.asarray(positions_mm, dtype=np.float64)
    shift = np.asarray(inplane_shift_mm, dtype=np.float64).reshape(n, 2)
    if n < 2:
        raise InputError("resampling needs at least 2 slices")
    steps = np.diff(d)
    if np.any(steps <= 0):
        raise InputError("slice positions must be strictly increasing to resample")
    step = float(step_mm) if step_mm else float(steps.min())
    sx = float(np.linalg.norm(affine[:3, 0]))
    sy = float(np.linalg.norm(affine[:3, 1]))
    normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
    u0, v0 = float(shift[:, 0].min()), float(shift[:, 1].min())
    ni = cols + math.ceil((float(shift[:, 0].max()) - u0) / sx - 1e-6)
    nj = rows + math.ceil((float(shift[:, 1].max()) - v0) / sy - 1e-6)
    nk = int(math.floor(d[-1] / step + 1e-6)) + 1
    cval = float(stack.min()) if fill is None else float(fill)
    out_dtype = stack.dtype if is_label else np.result_type(stack.dtype, np.float32)
    out = np.empty((nk, nj, ni), dtype=out_dtype)
    order = 0 if is_label else 1

    def sample(k: int) -> np.ndarray:
        # out[tj, ti] = stack[k][tj + (v0 - dv_k) / sy, ti + (u0 - du_k) / sx]
        offset = ((v0 - shift[k, 1]) / sy, (u0 - shift[k, 0]) / sx)
        return ndimage.affine_transform(
            stack[k], np.ones(2), offset=offset, output_shape=(nj, ni), order=order,
            mode="constant", cval=cval, output=np.float64 if not is_label else stack.dtype,
        )

    cache: dict[int, np.ndarray] = {}

    def slice_at(k: int) -> np.ndarray:
        if k not in cache:
            if len(cache) > 2:
                cache.pop(min(cache))
            cache[k] = sample(k)
        return cache[k]

    for tk in range(nk):
        w = tk * step
        kf = float(np.interp(w, d, np.arange(n)))
        k0 = min(int(math.floor(kf)), n - 2)
        t = kf - k0
        if is_label:
            out[tk] = slice_at(k0 if t < 0.5 else k0 + 1)
        elif t < 1e-9:
            out[tk] = slice_at(k0)
        elif t > 1 - 1e-9:
            out[tk] = slice_at(k0 + 1)
        else:
            out[tk] = (1 - t) * slice_at(k0) + t * slice_at(k0 + 1)
    new_affine = np.eye(4)
    new_affine[:3, 0] = affine[:3, 0]
    new_affine[:3, 1] = affine[:3, 1]
    new_affine[:3, 2] = normal * step
    new_affine[:3, 3] = affine[:3, 3] + (u0 / sx) * affine[:3, 0] + (v0 / sy) * affine[:3, 1]
    record = {
        "slice_step_mm": step,
        "shape": [ni, nj, nk],
        "inplane_origin_offset_mm": [u0, v0],
        "interpolation": "nearest" if is_label else "linear",
    }
    return np.transpose(out, (2, 1, 0)), new_affine, record


__all__ = ["regular_grid_from_stack"]
