"""Mapping predictions from the model's grid back onto the input's exact grid.

The model grid is the input after axis flips/permutations (``to_canonical``) and
resampling to the target spacing (``resample_to_spacing``), so the map from an input
voxel index to a model voxel index is a scaled, shifted, signed axis permutation. For
label maps :func:`labels_to_grid` then reduces nearest-neighbour resampling to one
index vector per axis (``np.ix_`` gather): no interpolation, no float copy, memory of
the output only. Other grids fall back to ``scipy.ndimage.affine_transform``.

All affines are 4x4 voxel index ``(i, j, k)`` -> RAS+ mm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medseg.errors import InputError


def index_map(src_affine: np.ndarray, dst_affine: np.ndarray) -> np.ndarray:
    """4x4 matrix mapping a destination voxel index to the source voxel index."""
    return np.linalg.solve(np.asarray(src_affine, dtype=np.float64), np.asarray(dst_affine, dtype=np.float64))


def _axis_pairs(matrix: np.ndarray, *, atol: float = 1e-6) -> list[int] | None:
    """For a scaled signed permutation, the destination axis feeding each source axis."""
    pairs = []
    for s in range(3):
        row = np.abs(matrix[s, :3])
        d = int(np.argmax(row))
        if row[d] <= atol or np.any(np.delete(row, d) > atol * max(row[d], 1.0)):
            return None
        pairs.append(d)
    return pairs if sorted(pairs) == [0, 1, 2] else None


def _as_slice(idx: np.ndarray) -> slice | None:
    """``idx`` (source indices, one per destination index) as the slice that selects the same, where it is an
    arithmetic progression with a non-zero step; else ``None``."""
    if idx.size == 0:
        return None
    step = int(idx[1] - idx[0]) if idx.size > 1 else 1
    if step == 0 or not np.array_equal(idx, idx[0] + step * np.arange(idx.size)):
        return None
    stop = int(idx[-1]) + step
    return slice(int(idx[0]), stop if stop >= 0 else None, step)


def labels_to_grid(
    labels: np.ndarray,
    src_affine: np.ndarray,
    dst_shape: Sequence[int],
    dst_affine: np.ndarray,
) -> np.ndarray:
    """Nearest-neighbour resampling of a label map ``[i, j, k]`` onto ``(dst_shape, dst_affine)``.

    Every destination voxel takes the label of the source voxel whose centre is nearest
    (points outside the source take the nearest edge voxel). Exact for pure flips and
    permutations. Returns an array of ``dst_shape`` with the dtype of ``labels``.
    """
    if labels.ndim != 3 or len(dst_shape) != 3:
        raise InputError(f"labels_to_grid expects 3D grids, got {labels.shape} -> {tuple(dst_shape)}")
    m = index_map(src_affine, dst_affine)
    pairs = _axis_pairs(m)
    dst_shape = tuple(int(n) for n in dst_shape)
    if pairs is None:  # general (oblique relative) grids
        from scipy import ndimage

        return ndimage.affine_transform(
            labels, m[:3, :3], offset=m[:3, 3], output_shape=dst_shape, order=0, mode="nearest"
        )
    index_vectors = []
    for s, d in enumerate(pairs):
        pos = m[s, d] * np.arange(dst_shape[d], dtype=np.float64) + m[s, 3]
        idx = np.floor(pos + 0.5 + 1e-9).astype(np.intp)
        index_vectors.append(np.clip(idx, 0, labels.shape[s] - 1))
    slices = [_as_slice(idx) for idx in index_vectors]
    if all(sl is not None for sl in slices):  # flips, permutations, crops, strides: a view, one copy below
        gathered = labels[tuple(slices)]
    else:
        gathered = labels[np.ix_(*index_vectors)]  # axes in source order, sizes of the paired dst axes
    order = [pairs.index(d) for d in range(3)]  # destination axis d comes from source axis pairs.index(d)
    return np.ascontiguousarray(gathered.transpose(order))


def probabilities_to_grid(
    probabilities: np.ndarray,
    src_affine: np.ndarray,
    dst_shape: Sequence[int],
    dst_affine: np.ndarray,
) -> np.ndarray:
    """Linear resampling of ``[C, i, j, k]`` class probabilities onto the destination grid.

    One channel at a time (float32 output ``[C, *dst_shape]``); points outside the source
    take the nearest edge value.
    """
    from medseg.transforms.preprocess import resample_to_grid
    from medseg.volume import Volume

    dst_shape = tuple(int(n) for n in dst_shape)
    out = np.empty((probabilities.shape[0], *dst_shape), dtype=np.float32)
    for c in range(probabilities.shape[0]):
        vol = Volume(probabilities[c], src_affine)
        out[c] = resample_to_grid(vol, dst_shape, dst_affine, order=1).array
    return out


__all__ = ["index_map", "labels_to_grid", "probabilities_to_grid"]
