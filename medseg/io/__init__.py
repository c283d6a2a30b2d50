"""Readers and writers. ``load`` and ``save`` choose the format from the path.

Formats: DICOM (folder, list of files, single or enhanced multi-frame file),
NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``, ``.mhd``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def load(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    series_uid: str | None = None,
    resample: bool = False,
) -> Volume:
    """Load an image as a :class:`~medseg.Volume` (array ``[i, j, k]``, affine voxel->RAS+ mm).

    Args:
        path: a NIfTI/NRRD/MHA file, a DICOM file (single-frame, enhanced multi-frame
            CT/MR, RT dose, Siemens mosaic), a folder searched recursively for DICOM
            files, or a list of DICOM files.
        series_uid: the DICOM SeriesInstanceUID to load when a folder holds several.
        resample: for DICOM with gantry tilt, uneven slice spacing or a missing slice,
            resample onto a regular orthogonal grid (recorded in ``meta["resampled"]`` and
            ``meta["resample_reason"]``) instead of raising.

    Raises:
        InputError: the path does not exist, the format is unknown, or the data is
            corrupt or geometrically inconsistent (the message says which file and why).
    """
    if isinstance(path, (list, tuple)):
        from medseg.io.dicom import load_dicom

        paths = [Path(p) for p in path]
        for p in paths:
            require_regular_file(p)
        where = paths[0] if paths else Path("(empty list)")
        return checked_volume(_named(where, lambda: load_dicom(paths, series_uid=series_uid, resample=resample)), where)
    p = Path(path)
    return checked_volume(_named(p, lambda: _load_path(p, series_uid=series_uid, resample=resample)), p)


def _named(where: Path, read: "Callable[[], Volume]") -> Volume:
    """Run a reader; an InputError raised without the file's name (``Volume``'s own checks) gets it."""
    try:
        return read()
    except InputError as exc:
        if str(where) in str(exc) or where.name in str(exc):
            raise
        raise InputError(f"{where}: {exc}") from exc


def require_regular_file(path: Path) -> os.stat_result:
    """``os.stat`` of ``path``, refusing what is not a regular file (a FIFO, socket or device blocks or
    never ends: a ``*.dcm`` FIFO or a link to ``/dev/zero``) without opening it.

    Raises:
        InputError: missing, unreadable or not a regular file.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or type(exc).__name__})") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path}: not a regular file ({_file_kind(st.st_mode)}); refusing to read it")
    return st


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "a special file"


def checked_volume(volume: Volume, where: Path) -> Volume:
    """Refuse a degenerate volume: no voxels, a zero or non-finite voxel size, NaN/inf voxel values.

    Raises:
        InputError: naming ``where`` and what is wrong.
    """
    if volume.array.size == 0:
        raise InputError(f"{where}: the image has no voxels (array shape {volume.array.shape})")
    spacing = np.linalg.norm(volume.affine[:3, :3], axis=0)[: volume.ndim]
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"{where}: voxel size {[float(f'{s:.4g}') for s in spacing]} mm is not positive and finite "
                         "(a zero or broken spacing/direction in the header)")
    if abs(float(np.linalg.det(volume.affine[:3, :3]))) == 0 and volume.ndim == 3:
        raise InputError(f"{where}: the voxel axes are degenerate (the direction matrix is singular)")
    array = volume.array
    if array.dtype.kind in "fc":
        flat = array.reshape(-1)
        step = 1 << 22
        for start in range(0, flat.size, step):  # chunked: no full-size boolean copy
            chunk = flat[start:start + step]
            if not np.all(np.isfinite(chunk)):
                bad = int(np.count_nonzero(~np.isfinite(flat)))
                raise InputError(f"{where}: {bad} voxel(s) are NaN or infinite; medseg needs finite intensities")
    return volume


def _load_path(p: Path, *, series_uid: str | None, resample: bool) -> Volume:
    if os.path.lexists(p) and not os.path.isdir(p):
        require_regular_file(p)
    elif not p.exists():
        raise InputError(f"{p}: no such file or folder")
    suffix = _suffix(p)
    if p.is_dir() or suffix in ("", ".dcm", ".ima", ".dicom"):
        from medseg.io.dicom import load_dicom

        return load_dicom(p, series_uid=series_uid, resample=resample)
    if suffix in NIFTI_SUFFIXES:
        from medseg.io.nifti import load_nifti

        return load_nifti(p)
    if suffix in ITK_SUFFIXES:
        from medseg.io.itk import load_itk

        return load_itk(p)
    from medseg.io.dicom import is_dicom_file, load_dicom

    if is_dicom_file(p):
        return load_dicom(p, series_uid=series_uid, resample=resample)
    raise InputError(
        f"{p}: unknown image format {suffix!r}; expected a DICOM file or folder, "
        f"{', '.join(NIFTI_SUFFIXES + ITK_SUFFIXES)}"
    )


def save(volume: Volume, path: str | os.PathLike[str]) -> Path:
    """Write ``volume`` to ``path``, the format chosen by the extension; atomic.

    NIfTI gets qform = sform = the affine; NRRD/MHA get origin, spacing and direction
    in LPS as ITK expects. Labels are stored as uint8/uint16.
    """
    p = Path(path)
    suffix = _suffix(p)
    if suffix in NIFTI_SUFFIXES:
        from medseg.io.nifti import save_nifti

        return save_nifti(volume, p)
    if suffix in ITK_SUFFIXES:
        from medseg.io.itk import save_itk

        return save_itk(volume, p)
    raise InputError(
        f"{p}: cannot write format {suffix!r}; use one of {', '.join(NIFTI_SUFFIXES + ITK_SUFFIXES)} "
        "(DICOM-SEG is written by medseg.io.dicom.seg)"
    )


def list_series(folder: str | os.PathLike[str]) -> list["SeriesInfo"]:
    """Every image series found under ``folder`` (recursive): UID, modality, size, orientation."""
    from medseg.io.dicom import list_series as _list_series

    return _list_series(Path(folder))


def __getattr__(name: str):  # lazy access to SeriesInfo without importing pydicom
    if name == "SeriesInfo":
        from medseg.io.dicom import SeriesInfo

        return SeriesInfo
    raise AttributeError(name)


__all__ = ["load", "save", "list_series", "SeriesInfo", "checked_volume", "require_regular_file"]
