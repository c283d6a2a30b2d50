"""Write a :class:`~medseg.Volume` as a single-frame DICOM series (CT or MR Image Storage).

Geometry mapping (exact, checked by the tests against pydicom and SimpleITK):

* a slice is ``array[:, :, k]``; its pixel matrix is ``array[:, :, k].T``, so the
  DICOM **column** index is the volume's ``i`` and the **row** index is ``j``;
* ``ImageOrientationPatient`` = (unit direction of ``i``, unit direction of ``j``)
  in LPS, i.e. the RAS+ affine columns with x and y negated;
* ``PixelSpacing`` = ``[spacing_j, spacing_i]`` (row spacing, then column spacing);
* ``ImagePositionPatient`` of slice ``k`` = LPS position of the centre of voxel ``(0, 0, k)``.

So a DICOM reader that maps columns to ``i``, rows to ``j`` and sorts slices along
the normal gets back the same voxels on the same world grid.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.io.atomic import atomic_path
from medseg.volume import Volume

log = logging.getLogger(__name__)

#: Accepted ``transfer_syntax`` names -> DICOM transfer syntax UID.
TRANSFER_SYNTAXES: dict[str, str] = {
    "explicit_le": "1.2.840.10008.1.2.1",
    "implicit_le": "1.2.840.10008.1.2",
    "deflate": "1.2.840.10008.1.2.1.99",
    "rle": "1.2.840.10008.1.2.5",
    "jpeg2000": "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless only
    "jpegls": "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
}
_COMPRESSED = ("rle", "jpeg2000", "jpegls")
SOP_CLASSES: dict[str, str] = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
}
_DATE, _TIME = "20260101", "090000"  # fixed, so that the same call writes the same bytes
_LPS = np.diag([-1.0, -1.0, 1.0])


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


def _ds(values: Sequence[float]) -> list[str]:
    """Decimal String values: at most 16 characters, -0 normalised to 0."""
    out = []
    for value in values:
        v = float(value) + 0.0
        text = f"{v:.10g}"
        if len(text) > 16:
            text = f"{v:.9g}" if abs(v) >= 1e-4 else f"{v:.6e}"
        out.append("0" if text in ("-0", "0", "-0.0") else text)
    return out


def _geometry(volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]:
    """LPS (origin, unit i, unit j, k step vector, spacing) of the volume; i and j must be orthogonal."""
    m = _LPS @ volume.affine[:3, :3]
    origin = _LPS @ volume.affine[:3, 3]
    spacing = tuple(float(s) for s in np.linalg.norm(m, axis=0))
    row = m[:, 0] / spacing[0]
    col = m[:, 1] / spacing[1]
    if abs(float(row @ col)) > 1e-4:
        raise InputError(
            f"cannot write DICOM: the i and j axes are not orthogonal (cosine {float(row @ col):.6f}); "
            "ImageOrientationPatient needs perpendicular row and column directions"
        )
    return origin, row, col, m[:, 2], spacing  # type: ignore[return-value]


def _storage(array: np.ndarray, modality: str) -> tuple[np.ndarray, float, float]:
    """(stored uint16/int16 array, RescaleSlope, RescaleIntercept) for ``array``."""
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.size == 0:
        raise InputError("cannot write DICOM: the volume is empty")
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise InputError("cannot write DICOM: the volume contains NaN or infinite values")
        if np.all(np.mod(array, 1) == 0):
            array = array.astype(np.int64)
    if array.dtype.kind == "c" or array.dtype.kind not in "iuf":
        raise InputError(f"cannot write DICOM pixel data of dtype {array.dtype}")
    lo, hi = float(array.min()), float(array.max())
    if array.dtype.kind in "iu":
        if modality == "CT" and lo >= -1024 and hi <= 65535 - 1024:
            return (array + 1024).astype(np.uint16), 1.0, -1024.0
        if lo >= 0 and hi <= 65535:
            return array.astype(np.uint16), 1.0, 0.0
        if lo >= -32768 and hi <= 32767:
            return array.astype(np.int16), 1.0, 0.0
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    log.info("DICOM writer: quantising values %.6g..%.6g to uint16 with RescaleSlope %.6g", lo, hi, slope)
    stored = np.rint((array.astype(np.float64) - lo) / slope)
    return np.clip(stored, 0, 65535).astype(np.uint16), slope, lo


def _base_dataset(
    *,
    modality: str,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    patient_id: str,
    patient_name: str,
    series_description: str,
    series_number: int,
    rows: int,
    columns: int,
    pixel_spacing: Sequence[float],
    iop: Sequence[float],
    thickness: float,
    stored: np.ndarray,
    slope: float,
    intercept: float,
    gantry_tilt_deg: float,
):
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SOP_CLASSES[modality]
    # patient / study
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate, ds.StudyTime = _DATE, _TIME
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.StudyDescription = "medseg synthetic study"
    # series / frame of reference / equipment
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = int(series_number)
    ds.SeriesDescription = series_description
    ds.SeriesDate, ds.SeriesTime = _DATE, _TIME
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "ABDOMEN"
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "medseg"
    ds.ManufacturerModelName = "synthetic phantom"
    ds.SoftwareVersions = "medseg"
    # image
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if modality == "CT" else "OTHER"]
    ds.AcquisitionNumber = 1
    ds.ContentDate, ds.ContentTime = _DATE, _TIME
    ds.AcquisitionDate, ds.AcquisitionTime = _DATE, _TIME
    ds.PixelSpacing = _ds(pixel_spacing)
    ds.ImageOrientationPatient = _ds(iop)
    ds.SliceThickness = _ds([thickness])[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    if modality == "CT":
        ds.KVP = "120"
        ds.RescaleIntercept = _ds([intercept])[0]
        ds.RescaleSlope = _ds([slope])[0]
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        if gantry_tilt_deg:
            ds.GantryDetectorTilt = _ds([gantry_tilt_deg])[0]
    else:
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = "SP"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D"
        ds.RepetitionTime = "10"
        ds.EchoTime = "4"
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = "3"
        ds.ImagedNucleus = "1H"
        ds.SpacingBetweenSlices = _ds([thickness])[0]
        if slope != 1.0 or intercept != 0.0:
            ds.RescaleIntercept = _ds([intercept])[0]
            ds.RescaleSlope = _ds([slope])[0]
            ds.RescaleType = "US"
    return ds


def dicom_grid(volume: Volume) -> Volume:
    """``volume`` on the grid a DICOM reader builds from its written series.

    Readers sort slices along the normal ``row x column`` of ImageOrientationPatient;
    when the volume's k axis runs against that normal (e.g. orientation ``"LPI"``), the
    k axis is flipped (array and affine), so world positions are unchanged. Otherwise
    ``volume`` is returned as is.
    """
    m = _LPS @ volume.affine[:3, :3]
    if float(np.cross(m[:, 0], m[:, 1]) @ m[:, 2]) >= 0:
        return volume
    n_k = volume.spatial_shape[2]
    affine = volume.affine.copy()
    affine[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, n_k - 1.0]) + affine[:3, 3]
    affine[:3, 2] = -affine[:3, 2]
    array = volume.array[..., ::-1]
    return Volume(np.ascontiguousarray(array), affine, dict(volume.meta), volume.is_label, volume.channel_first)


def _slice_offsets(
    n_slices: int, k_step: np.ndarray, slice_positions: Sequence[float] | None
) -> np.ndarray:
    """Offsets (mm) of every slice from voxel (0, 0, 0) along the unit k direction."""
    step = float(np.linalg.norm(k_step))
    if slice_positions is None:
        return np.arange(n_slices, dtype=np.float64) * step
    offsets = np.asarray(slice_positions, dtype=np.float64)
    if offsets.shape != (n_slices,) or not np.all(np.isfinite(offsets)):
        raise ConfigError(
            f"slice_positions must hold {n_slices} finite offsets in mm (one per slice), "
            f"got shape {offsets.shape}"
        )
    return offsets


def write_dicom_series(
    image: Volume,
    folder: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    study_uid: str | None = None,
    patient_id: str = "PHANTOM001",
    patient_name: str = "Phantom^Test",
    series_description: str = "phantom CT",
    series_number: int = 1,
    transfer_syntax: str = "explicit_le",
    reverse_order: bool = False,
    instance_number_shuffle: bool = False,
    modality: str = "CT",
    slice_positions: Sequence[float] | None = None,
    gantry_tilt_deg: float = 0.0,
    seed: int | None = None,
    frame_of_reference_uid: str | None = None,
) -> list[Path]:
    """Write ``image`` (3D, ``[i, j, k]``) as one CT/MR Image Storage file per k-slice.

    Args:
        image: the volume; integer HU for CT are stored as uint16 with RescaleIntercept
            -1024 (values in [-1024, 64511]) or as int16; non-integral floats are
            quantised to uint16 with a RescaleSlope (logged).
        folder: output folder (created). Files are ``S{series:03d}_I{n:05d}.dcm`` in
            write order ``n`` (never built from patient tags); an existing file of the
            same name is replaced. Each file is written atomically.
        series_uid, study_uid, frame_of_reference_uid: UIDs to use; when omitted they are
            derived from ``seed`` (deterministic) or random when ``seed`` is None. SOP
            Instance UIDs are derived from the series UID and the slice index.
        transfer_syntax: one of :data:`TRANSFER_SYNTAXES` (all lossless).
        reverse_order: write the last slice first with InstanceNumber 1 (InstanceNumber
            then decreases along k).
        instance_number_shuffle: assign InstanceNumbers as a seeded random permutation,
            so that they say nothing about position.
        modality: ``"CT"`` (CT Image Storage) or ``"MR"`` (MR Image Storage).
        slice_positions: offset of each slice in mm from voxel ``(0, 0, 0)`` along the
            volume's unit k direction, overriding ``k * spacing_k`` (to build series with
            gaps, duplicate or uneven positions).
        gantry_tilt_deg: shear the stack as a tilted gantry does: slice ``k`` is moved by
            ``offset_k * tan(tilt)`` mm along the j (column) direction, orientation
            unchanged, and GantryDetectorTilt is set.
        seed: makes the generated UIDs and the shuffle reproducible.

    Returns:
        The written paths in write order.

    Raises:
        InputError: the volume is not 3D single-channel, has non-orthogonal i/j axes or
            values that cannot be stored.
        ConfigError: unknown transfer syntax or modality, wrong ``slice_positions``.
    """
    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise ConfigError(
            f"unknown transfer_syntax {transfer_syntax!r}; known: {', '.join(TRANSFER_SYNTAXES)}"
        )
    modality = modality.upper()
    if modality not in SOP_CLASSES:
        raise ConfigError(f"unknown modality {modality!r} for the DICOM writer; known: {', '.join(SOP_CLASSES)}")
    if image.channel_first or image.ndim != 3:
        raise InputError(f"the DICOM series writer needs a 3D single-channel volume, got array {image.shape}")
    if not math.isfinite(gantry_tilt_deg) or abs(gantry_tilt_deg) >= 60:
        raise ConfigError(f"gantry_tilt_deg must be finite and within (-60, 60) degrees, got {gantry_tilt_deg}")
    if transfer_syntax == "jpeg2000" and min(image.spatial_shape[:2]) < 32:
        raise ConfigError(
            "JPEG 2000 encoding (OpenJPEG with 6 resolution levels) needs at least 32 rows and columns, "
            f"got {image.spatial_shape[1]} rows x {image.spatial_shape[0]} columns"
        )
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

    origin, row, col, k_step, spacing = _geometry(image)
    n_slices = image.spatial_shape[2]
    offsets = _slice_offsets(n_slices, k_step, slice_positions)
    k_unit = k_step / np.linalg.norm(k_step)
    normal = np.cross(row, col)
    positions = origin[None, :] + offsets[:, None] * k_unit[None, :]
    if gantry_tilt_deg:
        positions += (offsets * math.tan(math.radians(gantry_tilt_deg)))[:, None] * col[None, :]
    thickness = abs(float(k_step @ normal))

    if study_uid is None:
        study_uid = _uid("medseg-study", seed, patient_id) if seed is not None else _uid(os.urandom(16).hex())
    if series_uid is None:
        series_uid = (
            _uid("medseg-series", study_uid, series_number, seed)
            if seed is not None
            else _uid(os.urandom(16).hex())
        )
    frame_uid = frame_of_reference_uid or _uid("medseg-frame", study_uid)
    stored, slope, intercept = _storage(image.array, modality)
    ds = _base_dataset(
        modality=modality, study_uid=study_uid, series_uid=series_uid, frame_uid=frame_uid,
        patient_id=patient_id, patient_name=patient_name, series_description=series_description,
        series_number=series_number, rows=image.spatial_shape[1], columns=image.spatial_shape[0],
        pixel_spacing=(spacing[1], spacing[0]), iop=[*row, *col], thickness=thickness, stored=stored,
        slope=slope, intercept=intercept, gantry_tilt_deg=gantry_tilt_deg,
    )
    order = list(range(n_slices))[::-1] if reverse_order else list(range(n_slices))
    instance_numbers = np.arange(1, n_slices + 1)
    if instance_number_shuffle:
        shuffle_seed = seed if seed is not None else int.from_bytes(hashlib.sha256(series_uid.encode()).digest()[:8], "little")
        instance_numbers = np.random.default_rng(shuffle_seed).permutation(instance_numbers)
    ts_uid = UID(TRANSFER_SYNTAXES[transfer_syntax])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for n, k in enumerate(order):
        sop_uid = _uid("medseg-sop", series_uid, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ts_uid
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = int(instance_numbers[n])
        ds.ImagePositionPatient = _ds(positions[k])
        ds.SliceLocation = _ds([float(positions[k] @ normal)])[0]
        pixels = np.ascontiguousarray(stored[:, :, k].T)
        if "PixelData" in ds:
            del ds.PixelData
        if transfer_syntax in _COMPRESSED:
            ds.compress(ts_uid, pixels, generate_instance_uid=False)
        else:
            ds.PixelData = pixels.tobytes()
            ds["PixelData"].VR = "OW"
        path = folder / f"S{int(series_number):03d}_I{n + 1:05d}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    log.debug("wrote %d %s slices of series %s to %s", len(paths), modality, series_uid, folder)
    return paths


__all__ = ["write_dicom_series", "dicom_grid", "TRANSFER_SYNTAXES", "SOP_CLASSES"]
