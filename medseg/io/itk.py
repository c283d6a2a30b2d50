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
    check_header(p)
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


_HEADER_BYTES = 1 << 16
#: the most voxels a header may claim before SimpleITK allocates for it (2**33, 8 Gi voxels)
MAX_VOXELS = 1 << 33


def _header_lines(p: Path, *, nrrd: bool) -> list[tuple[str, str]]:
    """(key, value) pairs of a NRRD or MetaImage text header (keys lower case, spaces removed)."""
    with open(p, "rb") as fp:
        head = fp.read(_HEADER_BYTES)
    out: list[tuple[str, str]] = []
    for raw in head.split(b"\n"):
        line = raw.rstrip(b"\r").decode("latin-1")
        if nrrd and not line.strip() and out:
            break  # a blank line ends a NRRD header; the data follows
        if line.startswith("#"):
            continue
        key, sep, value = line.partition(":=" if nrrd and ":=" in line else (":" if nrrd else "="))
        if not sep:
            continue
        key = key.strip().lower().replace(" ", "")
        out.append((key, value.strip()))
        if not nrrd and key == "elementdatafile":
            break  # the last MetaImage header line
    return out


def _ints(value: str) -> list[int] | None:
    try:
        return [int(v) for v in value.split()]
    except ValueError:
        return None


def _inside(p: Path, name: str, what: str) -> None:
    """Refuse a detached data file outside the header's folder (an absolute path, ``..``, a link out)."""
    target = (p.parent / name).resolve()
    home = p.parent.resolve()
    if Path(name).is_absolute() or (target != home and home not in target.parents):
        raise InputError(f"{p}: {what} names a data file outside the header's folder; refusing to read it "
                         "(copy the data file beside the header and name it relatively)")


_SPELLING = {"ndims": "NDims", "dimsize": "DimSize", "elementdatafile": "ElementDataFile", "datafile": "data file",
             "data_file": "data file", "dimension": "dimension", "sizes": "sizes"}


def check_header(p: Path) -> None:
    """Validate a NRRD/MetaImage header before SimpleITK parses it: dimensions 1..4, sizes positive and
    consistent (SimpleITK crashes on ``NDims = -1``), the voxel count bounded, and detached data files
    inside the header's folder (a header naming ``/etc/passwd`` would read any file on the host).

    Raises:
        InputError: naming the file and the header field.
    """
    from medseg.io import require_regular_file

    require_regular_file(p)
    nrrd = p.suffix.lower() in (".nrrd", ".nhdr")
    try:
        fields = _header_lines(p, nrrd=nrrd)
    except OSError as exc:
        raise InputError(f"{p}: cannot read ({exc.strerror or type(exc).__name__})") from None
    values = dict(fields)
    ndim_key, size_key, data_keys = ("dimension", "sizes", ("datafile", "data_file")) if nrrd else \
        ("ndims", "dimsize", ("elementdatafile",))
    if nrrd and not fields:
        return  # not a text header: SimpleITK says what it is
    ndim = _ints(values.get(ndim_key, ""))
    if ndim_key in values and (ndim is None or len(ndim) != 1 or not 1 <= ndim[0] <= 4):
        raise InputError(f"{p}: not a readable NRRD/MetaImage file "
                         f"(header field {_SPELLING[ndim_key]} must be one integer from 1 to 4)")
    if size_key in values:
        sizes = _ints(values[size_key])
        if sizes is None or any(v <= 0 for v in sizes) or (ndim and len(sizes) < ndim[0]):
            raise InputError(f"{p}: not a readable NRRD/MetaImage file (header field {_SPELLING[size_key]} "
                             f"must hold {ndim[0] if ndim else 'N'} positive integers)")
        total = 1
        for v in sizes[: ndim[0] if ndim else len(sizes)]:
            total *= v
        if total > MAX_VOXELS:
            raise InputError(f"{p}: header field {_SPELLING[size_key]} claims {total} voxels (more than {MAX_VOXELS})")
    elif ndim_key in values:
        raise InputError(f"{p}: not a readable NRRD/MetaImage file "
                         f"(header has {_SPELLING[ndim_key]} but no {_SPELLING[size_key]})")
    for key, value in fields:
        if key not in data_keys:
            continue
        first = value.split()[0] if value.split() else ""
        if not nrrd and first.upper() == "LOCAL":
            continue
        if first.upper() == "LIST":
            raise InputError(f"{p}: header field {_SPELLING[key]} LIST (data split over files) is not supported")
        _inside(p, value if not nrrd or len(value.split()) == 1 else first, _SPELLING[key])


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


__all__ = ["load_itk", "save_itk", "check_header"]
