"""NIfTI-1/2 reading and writing with nibabel (``.nii``, ``.nii.gz``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.io.atomic import atomic_path
from medseg.volume import Volume


def load_nifti(path: Path) -> Volume:
    """Load a 2D/3D NIfTI file; a 4D file with a trailing axis of size 1 is squeezed.

    Scaling (``scl_slope``/``scl_inter``) is applied; integer files without scaling
    keep their dtype. The affine is nibabel's best affine (sform, else qform). A file
    with intent NIFTI_INTENT_LABEL (as :func:`save_nifti` writes labels) loads as a label map.

    The array keeps the file's memory layout (NIfTI stores ``[i, j, k]`` with ``i`` fastest:
    Fortran order) and is read into memory once, without a memory map or a C-order copy:
    loading costs the array's size, not twice it.
    """
    import nibabel as nib

    try:
        img = nib.load(str(path), mmap=False)
        array = np.asarray(img.dataobj)
        if array.size == 0:  # nibabel reads no bytes as a 1D empty array: keep the header's shape
            array = array.reshape(img.shape)
    except Exception as exc:  # nibabel raises many types for corrupt files
        reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:300]
        raise InputError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {reason})") from exc
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise InputError(
            f"{path}: expected a 2D or 3D image, got a {array.ndim}D NIfTI of shape {array.shape}"
        )
    affine = np.asarray(img.affine, dtype=np.float64)
    _check_raw_pixdim(path, img, array.ndim)
    if array.ndim == 2:
        affine = affine.copy()
    meta = {
        "source": str(path),
        "format": "nifti",
        "qform_code": int(img.header["qform_code"]) if "qform_code" in img.header else None,
        "sform_code": int(img.header["sform_code"]) if "sform_code" in img.header else None,
    }
    is_label = int(img.header.get("intent_code", 0)) == 1002 and array.dtype.kind in "iu"  # NIFTI_INTENT_LABEL
    return Volume(array, affine, meta, is_label=is_label)


def _check_raw_pixdim(path: Path, img: object, ndim: int) -> None:
    """Refuse a zero/NaN voxel size in the file's own header when the affine comes from it (no sform):
    nibabel silently sets such sizes to 1 mm, which would make up a geometry."""
    from nibabel.openers import ImageOpener

    header = img.header  # type: ignore[attr-defined]
    if int(header.get("sform_code", 0)) > 0:
        return
    try:
        with ImageOpener(str(path)) as fobj:
            raw = type(header).from_fileobj(fobj, check=False)
    except Exception:  # the header was read once already; a second failure is not ours to explain
        return
    pixdim = np.asarray(raw["pixdim"][1:ndim + 1], dtype=np.float64)
    if not np.all(np.isfinite(pixdim)) or np.any(pixdim == 0):
        raise InputError(f"{path}: voxel size (pixdim) {[float(f'{v:.4g}') for v in pixdim]} is zero or not finite "
                         "and there is no sform: the geometry is unknown")


def smallest_dtype(array: np.ndarray, *, is_label: bool) -> np.dtype:
    """The storage dtype for ``array``: labels as uint8/uint16, integral images as int16.

    Float arrays whose values are all integers and fit are stored as integers;
    anything else keeps float32 (float64 is narrowed to float32).
    """
    if array.dtype == np.bool_:
        return np.dtype(np.uint8)
    if array.size == 0 or array.dtype in (np.uint8, np.int8, np.int16, np.uint16):
        return array.dtype  # already compact and exact: keep it
    if array.dtype.kind in "iu" or (array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0)):
        lo, hi = float(array.min()), float(array.max())
        candidates = ("uint8", "uint16", "int16", "int32") if is_label else ("int16", "int32")
        for name in candidates:
            info = np.iinfo(name)
            if lo >= info.min and hi <= info.max:
                return np.dtype(name)
    if array.dtype.kind == "f":
        return np.dtype(np.float32)
    return array.dtype


def save_nifti(volume: Volume, path: Path) -> Path:
    """Write ``volume`` as NIfTI with qform = sform = the volume's affine (code 1, scanner).

    Labels are written as uint8/uint16; integral images as int16 where they fit.
    A channel-first volume is written as a 4D file with channels last.
    The write is atomic.
    """
    import nibabel as nib

    m = volume.affine[:3, :3]
    norms = np.linalg.norm(m, axis=0, keepdims=True)
    unit = m / np.where(norms > 0, norms, 1.0)
    gram = unit.T @ unit
    if not np.allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-6):
        raise InputError(
            f"{path}: refusing to write a sheared affine (axes not orthogonal) to NIfTI; "
            "resample onto a regular grid first (medseg.io.load(..., resample=True))"
        )
    array = volume.array
    if volume.channel_first:
        array = np.moveaxis(array, 0, -1)
    dtype = smallest_dtype(array, is_label=volume.is_label)
    img = nib.Nifti1Image(np.asarray(array).astype(dtype, copy=False), volume.affine)
    img.set_qform(volume.affine, code=1)
    img.set_sform(volume.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if volume.is_label:
        img.header["intent_code"] = 1002  # NIFTI_INTENT_LABEL
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


__all__ = ["load_nifti", "save_nifti", "smallest_dtype"]
