"""Readers and writers. ``load`` and ``save`` choose the format from the path.

Formats: DICOM (folder, list of files, single or enhanced multi-frame file),
NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``, ``.mhd``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

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

        return load_dicom([Path(p) for p in path], series_uid=series_uid, resample=resample)
    p = Path(path)
    if not p.exists():
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


__all__ = ["load", "save", "list_series", "SeriesInfo"]
