"""Boundary IoU (Cheng et al., CVPR 2021) and a physical, millimetre variant for 2D/3D.

Pixel definition (2D, the paper's official code): the boundary band of a mask is the
mask minus its erosion by a 3x3 square applied ``d`` times with zero padding (pixels
outside the image are background), ``d = round(dilation_ratio * image diagonal)`` and
at least 1. Boundary IoU is ``|Bp ∩ Br| / |Bp ∪ Br|``.

Physical definition (``width_mm=...``, 2D or 3D): the band is every mask voxel whose
centre lies within ``width_mm`` (Euclidean, ``spacing`` honoured) of a background voxel
centre, outside the image counting as background, plus the mask's border voxels
(mask minus its 4/6-connected erosion) so that the band is never thinner than one voxel.

Empty masks: both empty gives ``empty_score`` (NaN by default); only one empty gives 0.0.
"""

from __future__ import annotations

import numpy as np

from medseg.errors import InputError
from medseg.metrics._checks import Spacing, as_mask, check_pair, check_spacing


def boundary_band(mask: np.ndarray, *, dilation_ratio: float = 0.02) -> np.ndarray:
    """The official Boundary IoU band of a 2D mask (bool ``[i, j]``), see the module docstring."""
    from scipy import ndimage

    m = as_mask(mask, "mask")
    if m.ndim != 2:
        raise InputError(f"the pixel Boundary IoU is defined for 2D masks, got shape {m.shape}; use width_mm=")
    if not dilation_ratio > 0:
        raise InputError(f"dilation_ratio must be positive, got {dilation_ratio}")
    h, w = m.shape
    d = max(1, int(round(dilation_ratio * np.sqrt(h**2 + w**2))))
    eroded = ndimage.binary_erosion(m, structure=np.ones((3, 3), bool), iterations=d, border_value=0)
    return m & ~eroded


def boundary_band_mm(mask: np.ndarray, *, width_mm: float, spacing: Spacing = None) -> np.ndarray:
    """The physical boundary band of a 2D/3D mask (see the module docstring); ``width_mm`` in mm."""
    import edt

    from medseg.metrics.surface import _border_voxels

    m = as_mask(mask, "mask")
    if m.ndim not in (2, 3):
        raise InputError(f"expected a 2D or 3D mask, got shape {m.shape}")
    if not (np.isfinite(width_mm) and width_mm > 0):
        raise InputError(f"width_mm must be a positive number of mm, got {width_mm}")
    sp = check_spacing(spacing, m.ndim)
    if not m.any():
        return m.copy()
    dist = edt.edt(m, anisotropy=tuple(sp), black_border=True, parallel=1)
    padded = np.pad(m, 1)
    return (m & (dist <= width_mm)) | _border_voxels(padded)


def boundary_iou(
    pred: np.ndarray,
    ref: np.ndarray,
    *,
    dilation_ratio: float = 0.02,
    width_mm: float | None = None,
    spacing: Spacing = None,
    empty_score: float = float("nan"),
) -> float:
    """Boundary IoU of two masks.

    Args:
        pred, ref: binary masks of the same shape.
        dilation_ratio: band width as a fraction of the image diagonal (2D pixel
            definition, Cheng et al. 2021; ignored when ``width_mm`` is given).
        width_mm: use the physical definition with this band width in mm (2D/3D).
        spacing: voxel size in mm per array axis, for ``width_mm`` (None: 1 mm).
        empty_score: value when both masks are empty.

    Example:
        >>> import numpy as np
        >>> a = np.zeros((10, 10), bool); a[2:8, 2:8] = True
        >>> boundary_iou(a, a)
        1.0
    """
    p, r = as_mask(pred, "prediction"), as_mask(ref, "reference")
    check_pair(p, r)
    if width_mm is None:
        if spacing is not None:
            raise InputError("spacing is used with width_mm=; the pixel definition has no spacing")
        bp, br = boundary_band(p, dilation_ratio=dilation_ratio), boundary_band(r, dilation_ratio=dilation_ratio)
    else:
        bp = boundary_band_mm(p, width_mm=width_mm, spacing=spacing)
        br = boundary_band_mm(r, width_mm=width_mm, spacing=spacing)
    union = int(np.count_nonzero(bp | br))
    if union == 0:
        return float(empty_score)
    return float(np.count_nonzero(bp & br) / union)


__all__ = ["boundary_iou", "boundary_band", "boundary_band_mm"]
