"""Siemens MOSAIC images: one DICOM image holding a grid of slices (EPI, DTI, fMRI).

A mosaic of ``R x C`` pixels with ``N`` = NumberOfImagesInMosaic (0019,100A) holds
``m x m`` tiles (``m = ceil(sqrt(N))``) of ``R/m x C/m`` pixels, read row by row.
ImagePositionPatient refers to the corner of the whole mosaic; the first slice's
corner is shifted by half the difference in size (the formula used by dcm2niix and
nibabel). Slices follow the CSA header's SliceNormalVector, ``SpacingBetweenSlices``
apart (SliceThickness when absent).
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import numpy as np

from medseg.errors import InputError

log = logging.getLogger(__name__)

N_MOSAIC_TAG = (0x0019, 0x100A)


def mosaic_count(ds: Any) -> int | None:
    """NumberOfImagesInMosaic of a Siemens MOSAIC image, else None."""
    image_type = [str(v).upper() for v in (ds.get("ImageType") or ())]
    if "MOSAIC" not in image_type or N_MOSAIC_TAG not in ds:
        return None
    try:
        n = int(ds[N_MOSAIC_TAG].value)
    except (TypeError, ValueError):
        return None
    return n if n > 1 else None


def _csa_slice_normal(ds: Any) -> np.ndarray | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nibabel.nicom warns that its readers are experimental
            from nibabel.nicom import csareader

            header = csareader.get_csa_header(ds, "image")
            normal = csareader.get_slice_normal(header) if header else None
    except Exception:  # a malformed private CSA header: fall back to the IOP cross product
        return None
    if normal is None:
        return None
    normal = np.asarray(normal, dtype=np.float64)
    norm = float(np.linalg.norm(normal))
    return normal / norm if norm > 0 else None


def mosaic_layout(
    ds: Any, n_images: int, iop: tuple[float, ...], ipp: tuple[float, ...], spacing: tuple[float, float]
) -> tuple[int, int, int, list[tuple[float, float, float]], list[str]]:
    """(tiles per side, tile rows, tile columns, LPS position of each slice, warnings)."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    m = int(math.ceil(math.sqrt(n_images)))
    r, c = rows // m, cols // m
    if rows % m or cols % m:  # scanner mosaics are whole tiles; where slices lie is then undefined
        raise InputError(
            f"MOSAIC of {cols}x{rows} pixels is not a {m}x{m} grid of whole tiles for {n_images} images "
            f"({cols / m:.4g} pixels a tile): the file was altered or NumberOfImagesInMosaic is wrong"
        )
    row_dir = np.asarray(iop[:3], dtype=np.float64)
    col_dir = np.asarray(iop[3:], dtype=np.float64)
    first = (
        np.asarray(ipp, dtype=np.float64)
        + row_dir * spacing[1] * (cols - c) / 2.0
        + col_dir * spacing[0] * (rows - r) / 2.0
    )
    warn: list[str] = []
    normal = _csa_slice_normal(ds)
    cross = np.cross(row_dir, col_dir)
    if normal is None:
        normal = cross
        warn.append("MOSAIC without a CSA SliceNormalVector: slice order assumed along the IOP normal")
    elif abs(abs(float(normal @ cross)) - 1.0) > 1e-3:
        normal = cross * np.sign(float(normal @ cross) or 1.0)
        warn.append("CSA SliceNormalVector is not perpendicular to the image plane; used the IOP normal")
    try:
        step = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
    except (TypeError, ValueError, OverflowError):
        raise InputError("MOSAIC: SpacingBetweenSlices/SliceThickness is not a number") from None
    if not math.isfinite(step) or step <= 0:
        raise InputError(f"MOSAIC: slice spacing {step:g} mm is not positive and finite")
    positions = [tuple(float(v) for v in first + t * step * normal) for t in range(n_images)]
    return m, r, c, positions, warn


def split_mosaic(arr: np.ndarray, n_images: int, m: int, r: int, c: int) -> np.ndarray:
    """Tiles of a ``(R, C)`` mosaic as ``(n_images, r, c)`` in acquisition order."""
    tiles = arr[: m * r, : m * c].reshape(m, r, m, c).transpose(0, 2, 1, 3).reshape(m * m, r, c)
    return tiles[:n_images]


__all__ = ["mosaic_count", "mosaic_layout", "split_mosaic"]
