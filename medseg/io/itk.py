"""NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) through SimpleITK.

ITK images live in LPS: ``origin``, ``spacing`` and the ``direction`` matrix (columns =
unit world directions of the x, y, z index axes). medseg's affine is RAS+, so

    affine[:3, :3] = diag(-1, -1, 1) @ direction @ diag(spacing)
    affine[:3, 3]  = diag(-1, -1, 1) @ origin

and ITK's index ``(x, y, z)`` is medseg's ``(i, j, k)``. Multi-component (vector/RGB)
images become channel-first volumes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.io.atomic import atomic_path
from medseg.volume import Volume

_FLIP = np.diag([-1.0, -1.0, 1.0])


def load_itk(path: str | Path) -> Volume:
    """Load a 2D/3D NRRD or MetaImage file as a :class:`~medseg.Volume` (``[i, j, k]``, RAS+ mm).

    Raises:
        InputError: unreadable file, or an image with more than 3 spatial dimensions.
    """
    import SimpleITK as sitk

    p = Path(path)
    try:
        img = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        reason = next((line for line in first if "ERROR" in line or "exception" in line.lower()), first[-1] if first else "")
        raise InputError(f"{p}: not a readable NRRD/MetaImage file ({reason.strip()[:300]})") from exc
    dim = img.GetDimension()
    if dim == 4 and img.GetSize()[3] == 1:
        img = img[:, :, :, 0]
        dim = 3
    if dim not in (2, 3):
        raise InputError(f"{p}: expected a 2D or 3D image, got {dim}D of size {img.GetSize()}")
    array = sitk.GetArrayFromImage(img)  # [z, y, x(, c)]
    components = img.GetNumberOfComponentsPerPixel()
    spatial_axes = list(range(dim))[::-1]
    if components > 1:
        array = np.transpose(array, (dim, *spatial_axes))  # [c, x, y(, z)]
    else:
        array = np.transpose(array, spatial_axes)
    spacing = np.array(img.GetSpacing(), dtype=np.float64)
    direction = np.array(img.GetDirection(), dtype=np.float64).reshape(dim, dim)
    origin = np.array(img.GetOrigin(), dtype=np.float64)
    d3 = np.eye(3)
    d3[:dim, :dim] = direction
    s3 = np.ones(3)
    s3[:dim] = spacing
    o3 = np.zeros(3)
    o3[:dim] = origin
    affine = np.eye(4)
    affine[:3, :3] = _FLIP @ d3 @ np.diag(s3)
    affine[:3, 3] = _FLIP @ o3
    meta = {"source": str(p), "format": "nrrd" if p.suffix.lower() in (".nrrd", ".nhdr") else "metaimage"}
    return Volume(np.ascontiguousarray(array) if array.flags.c_contiguous else array, affine, meta,
                  channel_first=components > 1)


def save_itk(volume: Volume, path: str | Path) -> Path:
    """Write ``volume`` as NRRD or MetaImage (by extension), atomically, compressed.

    Geometry is written as ITK's LPS origin/spacing/direction; a sheared affine (axes
    not orthogonal) is refused. Labels are stored as uint8/uint16, integral images as
    int16 where the values fit.

    Raises:
        InputError: the affine is sheared or the array cannot be stored.
    """
    import SimpleITK as sitk

    from medseg.io.nifti import smallest_dtype

    p = Path(path)
    m = volume.affine[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    if np.any(spacing[: volume.ndim] == 0):
        raise InputError(f"{p}: the affine has a zero-length axis; cannot write it")
    direction = _FLIP @ (m / np.where(spacing > 0, spacing, 1.0))
    d = direction[:, : volume.ndim]
    if not np.allclose(d.T @ d, np.eye(volume.ndim), atol=1e-6):
        raise InputError(f"{p}: cannot write a sheared affine (axes not orthogonal) to NRRD/MetaImage; resample first")
    array = volume.array
    dtype = smallest_dtype(array, is_label=volume.is_label)
    array = np.asarray(array).astype(dtype, copy=False)
    ndim = volume.ndim
    if volume.channel_first:
        img = sitk.GetImageFromArray(np.transpose(array, (*range(ndim, 0, -1), 0)), isVector=True)
    else:
        img = sitk.GetImageFromArray(np.transpose(array, tuple(range(ndim - 1, -1, -1))))
    img.SetSpacing([float(s) for s in spacing[:ndim]])
    img.SetOrigin([float(v) for v in (_FLIP @ volume.affine[:3, 3])[:ndim]])
    img.SetDirection([float(v) for v in direction[:ndim, :ndim].ravel()])
    with atomic_path(p) as tmp:
        try:
            sitk.WriteImage(img, str(tmp), useCompression=True)
        except RuntimeError as exc:
            raise InputError(f"{p}: SimpleITK could not write the image ({str(exc).strip().splitlines()[-1]})") from exc
    if p.suffix.lower() in (".mhd", ".nhdr"):
        _rename_detached_data(p)
    return p


def _rename_detached_data(final: Path) -> None:
    """A ``.mhd``/``.nhdr`` header names a separate data file, written under the temporary
    name by the atomic write: give it the header's stem and point the header at it."""
    text = final.read_text(errors="replace")
    for line in text.splitlines():
        key, sep, value = line.partition("=" if final.suffix.lower() == ".mhd" else ":")
        if not sep or key.strip().lower().replace(" ", "") not in ("elementdatafile", "datafile"):
            continue
        data_name = value.strip()
        src = final.parent / data_name
        suffix = data_name[data_name.index(".partial") + len(".partial"):] if ".partial" in data_name else ""
        if not suffix or not src.exists():
            return
        dst_name = final.stem + suffix
        src.replace(final.parent / dst_name)
        new_line = f"{key}{sep}{' ' if value.startswith(' ') else ''}{dst_name}"
        with atomic_path(final) as tmp:
            tmp.write_text(text.replace(line, new_line, 1))
        return


__all__ = ["load_itk", "save_itk"]
