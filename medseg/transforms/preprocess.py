"""The deterministic preprocessing shared by training and inference: one implementation.

Three steps, always in this order (see ``preprocess_pair``):

1. :func:`to_canonical` - reorder/flip the voxel axes so that they point along the
   requested orientation (default ``"RAS"``). Exact: no interpolation.
2. :func:`resample_to_spacing` - resample onto a grid of the target spacing (mm),
   labels nearest-neighbour (``order=0``).
3. :func:`~medseg.transforms.intensity.normalize_intensity` - the one normalisation
   vocabulary (CT clip + standardise, per-image percentile clip + z-score, ...), as the
   ``normalization`` dict of a plan / ``model.json`` says.

Only numpy, scipy and nibabel's orientation helpers are used, so results are the
same on every machine. The MONAI training recipes call these functions through the
``MedsegPreprocessd`` transform instead of re-implementing them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.transforms.intensity import NORMALIZATION_KINDS, normalize_intensity
from medseg.volume import Volume

log = logging.getLogger(__name__)

_SPACING_RTOL = 1e-3  # relative tolerance under which a spacing counts as already reached


# --------------------------------------------------------------------------- orientation
def to_canonical(volume: Volume, orientation: str = "RAS", *, copy: bool = True) -> Volume:
    """Permute and flip the voxel axes so that they point along ``orientation``.

    The world position of every voxel is unchanged (the affine is updated to match),
    no value is interpolated, and the operation is exactly undone by
    ``to_canonical(result, volume.orientation)`` for non-oblique volumes. For an oblique
    volume each axis goes to the world axis it is closest to (nibabel's rule).
    2D volumes are returned unchanged (copied). ``meta["canonical_from"]`` records the
    original orientation code.

    Args:
        volume: image or label map, ``[i, j, k]`` or ``[c, i, j, k]``.
        orientation: three letters, one of L/R, P/A, I/S each (e.g. ``"RAS"``, ``"LPS"``).
        copy: False returns a view of the input's array (permuted and flipped, so possibly with
            negative strides) instead of a contiguous copy: for callers that only read it.
    """
    import nibabel.orientations as nio

    code = orientation.upper()
    if len(code) != 3 or sorted(_axis_of(c) for c in code) != [0, 1, 2]:
        raise ConfigError(f"orientation {orientation!r} is not a valid 3-letter code such as 'RAS' or 'LPS'")
    if volume.ndim != 3:
        return volume.with_array(volume.array.copy() if copy else volume.array)
    current = nio.io_orientation(volume.affine)
    target = nio.axcodes2ornt(tuple(code))
    transform = nio.ornt_transform(current, target)
    if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
        return volume.with_array(volume.array.copy() if copy else volume.array, canonical_from=volume.orientation)
    spatial_shape = volume.spatial_shape
    array = volume.array
    # apply_orientation works on the leading 3 axes; move channels to the end first
    if volume.channel_first:
        array = np.moveaxis(array, 0, -1)
    array = nio.apply_orientation(array, transform)
    if volume.channel_first:
        array = np.moveaxis(array, -1, 0)
    affine = volume.affine @ nio.inv_ornt_aff(transform, spatial_shape)
    return Volume(
        np.ascontiguousarray(array) if copy else array,
        affine,
        {**volume.meta, "canonical_from": volume.orientation},
        is_label=volume.is_label,
        channel_first=volume.channel_first,
    )


def _axis_of(letter: str) -> int:
    for axis, pair in enumerate((("L", "R"), ("P", "A"), ("I", "S"))):
        if letter in pair:
            return axis
    return -1


# --------------------------------------------------------------------------- resampling
def target_grid(volume: Volume, spacing_mm: Sequence[float]) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine of the grid with spacing ``spacing_mm`` covering ``volume``.

    Each axis gets ``max(1, round(n * s / t))`` voxels (``n`` voxels of ``s`` mm
    resampled to ``t`` mm); the new grid is centred on the old field of view and keeps
    the axis directions. Returns ``(shape [i, j, k], affine 4x4 voxel->RAS+ mm)``.
    """
    old = np.asarray(volume.spacing, dtype=np.float64)
    new = np.asarray([float(s) for s in spacing_mm], dtype=np.float64)
    if new.shape != old.shape or not np.all(np.isfinite(new)) or np.any(new <= 0):
        raise ConfigError(
            f"target spacing must be {volume.ndim} positive numbers (mm), got {list(spacing_mm)!r}"
        )
    n = np.asarray(volume.spatial_shape, dtype=np.float64)
    shape = np.maximum(1, np.round(n * old / new)).astype(int)
    scale = new / old  # old voxels per new voxel
    # continuous old index of new voxel p: q = p * scale + shift (centred field of view)
    shift = (n * old - shape * new) / (2 * old) + (scale - 1) / 2
    nd = volume.ndim
    index_map = np.eye(4)
    index_map[:nd, :nd] = np.diag(scale)
    index_map[:nd, 3] = shift
    affine = volume.affine @ index_map
    return tuple(int(s) for s in shape), affine


#: the largest grid :func:`resample_to_spacing` makes (2**31 voxels: 8 GiB as float32)
MAX_RESAMPLED_VOXELS = 2**31


def resample_to_spacing(volume: Volume, spacing_mm: Sequence[float], *, order: int, copy: bool = True) -> Volume:
    """Resample ``volume`` to voxels of ``spacing_mm`` (mm, per array axis ``i, j, k``).

    The new grid is described by :func:`target_grid`. Values outside the old field of
    view take the nearest edge value. When the spacing already matches (relative
    difference < 1e-3 on every axis) the array is returned unchanged (copied).

    Args:
        volume: image or label map (``[i, j, k]``, ``[i, j]`` or channel-first).
        spacing_mm: target voxel size in mm for each spatial axis.
        order: spline order - 0 nearest (label maps must use 0), 1 linear, 3 cubic.
        copy: False returns the input itself when the spacing already matches.

    Raises:
        ConfigError: a label map with ``order != 0`` or a bad spacing.
    """
    if volume.is_label and order != 0:
        raise ConfigError(f"label maps are resampled with order=0 (nearest), got order={order}")
    if order not in (0, 1, 2, 3, 4, 5):
        raise ConfigError(f"interpolation order must be 0..5, got {order}")
    old = np.asarray(volume.spacing)
    new = np.asarray([float(s) for s in spacing_mm])
    if new.shape == old.shape and np.all(np.abs(new - old) <= _SPACING_RTOL * old):
        return volume.with_array(volume.array.copy()) if copy else volume
    shape, affine = target_grid(volume, spacing_mm)
    voxels = int(np.prod([int(n) for n in shape], dtype=np.float64))
    if voxels > MAX_RESAMPLED_VOXELS:
        raise InputError(f"resampling the {'x'.join(map(str, volume.spatial_shape))} volume to "
                         f"{[round(float(v), 4) for v in spacing_mm]} mm would make a grid of {voxels:.3g} voxels "
                         f"(the limit is {MAX_RESAMPLED_VOXELS:.3g}); check the model's target spacing")
    return resample_to_grid(volume, shape, affine, order=order)


def resample_to_grid(
    volume: Volume, shape: Sequence[int], affine: np.ndarray, *, order: int, cval: float | None = None
) -> Volume:
    """Resample ``volume`` onto the grid ``(shape, affine)`` (affine voxel->RAS+ mm).

    Used to map predictions back to an input's exact grid. Points outside the source
    field of view take the nearest edge value, or ``cval`` when given. Label maps must
    use ``order=0``. Channel-first arrays are resampled channel by channel.
    """
    from scipy import ndimage

    if volume.is_label and order != 0:
        raise ConfigError(f"label maps are resampled with order=0 (nearest), got order={order}")
    nd = volume.ndim
    shape = tuple(int(s) for s in shape)
    if len(shape) != nd:
        raise InputError(f"target shape {shape} has {len(shape)} axes, the volume has {nd}")
    target = np.asarray(affine, dtype=np.float64)
    full = np.linalg.solve(_as4(volume.affine, nd), _as4(target, nd))  # target index -> source index
    matrix, offset = full[:nd, :nd], full[:nd, 3]
    if np.allclose(matrix, np.diag(np.diag(matrix)), atol=1e-9):
        matrix = np.diag(matrix)  # fast separable path in scipy
    mode, fill = ("nearest", 0.0) if cval is None else ("constant", float(cval))

    def _one(arr: np.ndarray) -> np.ndarray:
        # integers interpolate straight into a float32 output: no float copy of the (larger) source
        out = arr.dtype if arr.dtype.kind == "f" or order == 0 else np.float32
        return ndimage.affine_transform(
            arr, matrix, offset=offset, output_shape=shape, output=out, order=order, mode=mode, cval=fill,
            prefilter=order > 1,
        )

    if volume.channel_first:
        array = np.stack([_one(c) for c in volume.array])
    else:
        array = _one(volume.array)
    meta = {**volume.meta, "resampled_from": {"shape": list(volume.spatial_shape), "spacing_mm": list(volume.spacing)}}
    return Volume(array, target, meta, is_label=volume.is_label, channel_first=volume.channel_first)


def _as4(affine: np.ndarray, nd: int) -> np.ndarray:
    a = np.asarray(affine, dtype=np.float64)
    if nd == 3:
        return a
    # 2D volume: the affine is 4x4 but only i, j are used; make k an identity axis
    m = a.copy()
    m[:, 2] = 0.0
    m[2, 2] = m[2, 2] if abs(m[2, 2]) > 0 else 1.0
    if abs(np.linalg.det(m[:3, :3])) < 1e-12:
        m[:3, 2] = np.cross(m[:3, 0], m[:3, 1])
        m[:3, 2] /= max(np.linalg.norm(m[:3, 2]), 1e-12)
    return m


# --------------------------------------------------------------------------- all steps
def preprocess_pair(
    image: Volume,
    label: Volume | None,
    spec: Mapping[str, Any],
    *,
    image_order: int = 1,
) -> tuple[Volume, Volume | None]:
    """Apply the ``preprocessing`` section of a plan / ``model.json`` to an image (and label).

    ``spec`` keys: ``orientation`` (default ``"RAS"``), ``target_spacing_mm`` (list or
    ``None`` for no resampling), ``normalization`` (see :func:`normalize_intensity`),
    ``image_order`` (overrides the argument). Channel-first images are normalised per
    channel with the same spec. Returns the preprocessed image (float32) and label.
    """
    orientation = spec.get("orientation", "RAS")
    order = int(spec.get("image_order", image_order))
    # the image's intermediate steps are views: normalisation writes the one new (float32) array
    img = to_canonical(image, orientation, copy=False) if orientation else image
    lab = to_canonical(label, orientation) if (label is not None and orientation) else label
    spacing = spec.get("target_spacing_mm")
    if spacing is not None:
        if len(spacing) != img.ndim:
            spacing = list(spacing)[: img.ndim]
        img = resample_to_spacing(img, spacing, order=order, copy=False)
        if lab is not None:
            lab = resample_to_spacing(lab, spacing, order=0)
    norm = spec.get("normalization", {"kind": "none"})
    if img.channel_first:
        arr = np.stack([normalize_intensity(c, norm) for c in img.array])
    else:
        arr = normalize_intensity(img.array, norm)
    img = img.with_array(arr)
    return img, lab


__all__ = [
    "NORMALIZATION_KINDS",
    "normalize_intensity",
    "to_canonical",
    "target_grid",
    "resample_to_spacing",
    "resample_to_grid",
    "preprocess_pair",
]
