"""The source side of a DICOM-SEG: which frames it references, and the patient/study it belongs to.

The frames come from the reader's frame table (``Volume.meta["dicom_frames"]``, see
:func:`medseg.io.dicom.frames.frame_table`), or from the reader's own scan of the source
files when the labels do not carry one: the SEG writer never sorts slices itself.
Patient and study attributes come from ONE source file; Type 2 attributes that
de-identification removed are written empty, malformed values are emptied with a warning.
"""

from __future__ import annotations

import copy
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.volume import Volume

log = logging.getLogger(__name__)

#: Type 2 attributes of the Patient and General Study modules, and the pattern a value must match.
TYPE2_PATIENT_STUDY: dict[str, re.Pattern[str] | None] = {
    "PatientName": None,
    "PatientID": None,
    "PatientBirthDate": re.compile(r"\d{8}"),
    "PatientSex": re.compile(r"[MFO]"),
    "StudyID": None,
    "AccessionNumber": None,
    "StudyDate": re.compile(r"\d{8}"),
    "StudyTime": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"),
    "ReferringPhysicianName": None,
}
#: Single-frame SOP class given to the stand-in dataset highdicom reads (its references are rewritten).
_STAND_IN_CLASS = "1.2.840.10008.5.1.4.1.1.2"
_MULTIFRAME_ONLY = ("NumberOfFrames", "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence",
                    "FrameIncrementPointer", "GridFrameOffsetVector")


def source_table(labels: Volume, source_files: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """The frame table of the source series: the labels' own when it lists exactly these files."""
    table = labels.meta.get("dicom_frames")
    files = {os.path.abspath(p) for p in source_files}
    if table and (not files or {os.path.abspath(f["file"]) for f in table["frames"]} == files):
        return table
    if not files:
        raise InputError("write_dicom_seg needs the source image files of the series")
    return _table_from_files([Path(p) for p in source_files])


def _table_from_files(paths: list[Path]) -> dict[str, Any]:
    """Frame table of files given without one: the reader's scan, grouping and sort."""
    from medseg.io.dicom.frames import frame_table
    from medseg.io.dicom.geometry import check_geometry
    from medseg.io.dicom.series import drop_duplicate_instances, group_series, main_stack, scan

    found = scan(paths, strict=True)
    frames, _ = drop_duplicate_instances(found.frames)
    if not frames:
        raise InputError(f"{paths[0]}: no image frame among the {len(paths)} source file(s)")
    uids = sorted({f.series_uid for f in frames})
    if len(uids) > 1:
        raise InputError(f"source files belong to {len(uids)} series ({', '.join(uids)}); give one series")
    chosen, _ = main_stack(group_series(frames))
    if chosen is None:
        raise InputError(f"{paths[0]}: the source files hold only localizer images")
    geometry = check_geometry(chosen.frames, series=chosen.series_uid)
    return frame_table(geometry.frames, slice_spacing_mm=float(np.linalg.norm(geometry.affine[:3, 2])))


def check_table(table: dict[str, Any]) -> None:
    """Raise :class:`InputError` naming the file when a DICOM-SEG cannot reference the frames."""
    first = table["frames"][0]["file"]
    if table.get("orientation") is None or table.get("pixel_spacing") is None:
        raise InputError(f"{first}: no ImageOrientationPatient/PixelSpacing; a DICOM-SEG needs patient geometry")
    for item in table["frames"]:
        if item["position"] is None:
            raise InputError(f"{item['file']}: no ImagePositionPatient; a DICOM-SEG needs patient geometry")
        if not item["sop_instance_uid"]:
            raise InputError(f"{item['file']}: no SOPInstanceUID; a DICOM-SEG must reference its source images")
        if not item["sop_class_uid"]:
            raise InputError(f"{item['file']}: no SOPClassUID; a DICOM-SEG must reference its source images")


def read_source_header(path: Path) -> Any:
    """The header of one source file (no pixels), checked for what a SEG copies from it."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    except Exception as exc:  # pydicom raises several types for damaged files
        raise InputError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    raw = ds.get("NumberOfFrames")
    if raw is not None and str(raw).strip() and not re.fullmatch(r"\s*\d+\s*", str(raw)):
        raise InputError(f"{path}: NumberOfFrames {str(raw)!r} is not an integer")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        if not str(ds.get(keyword, "") or "").strip():
            raise InputError(f"{path}: no {keyword}; a DICOM-SEG needs the source's {keyword}")
    return ds


def stand_in(ds: Any, table: dict[str, Any], path: Path) -> Any:
    """A single-frame copy of ``ds`` for highdicom: patient/study/series/frame of reference of
    the source, the geometry of the first frame of ``table``, Type 2 attributes filled."""
    out = copy.deepcopy(ds)
    for keyword in _MULTIFRAME_ONLY:
        if keyword in out:
            delattr(out, keyword)
    for tag in [t for t in out.keys() if t.is_private]:
        del out[tag]  # Siemens CSA (mosaic) headers: not part of a SEG
    first = table["frames"][0]
    out.SOPClassUID = _STAND_IN_CLASS
    out.SOPInstanceUID = first["sop_instance_uid"]
    out.Rows, out.Columns = int(table["rows"]), int(table["columns"])
    out.ImageOrientationPatient = [float(v) for v in table["orientation"]]
    out.ImagePositionPatient = [float(v) for v in first["position"]]
    out.PixelSpacing = [float(v) for v in table["pixel_spacing"]]
    out.SliceThickness = float(table["slice_thickness_mm"])
    fill_type2(out, path)
    if not str(out.get("Modality", "") or "").strip():
        out.Modality = "OT"
    return out


def fill_type2(ds: Any, path: Path) -> None:
    """Write absent Type 2 patient/study attributes as empty; empty malformed ones with a warning."""
    for keyword, pattern in TYPE2_PATIENT_STUDY.items():
        value = ds.get(keyword)
        text = "" if value is None else str(value).strip()
        if pattern is not None and text and not pattern.fullmatch(text):
            # the value itself is never logged: it may be a patient's data
            log.warning("%s: %s is not a valid %s value; written empty in the DICOM-SEG", path, keyword,
                        "date" if keyword.endswith("Date") else "DICOM")
            text = ""
        if value is None or not text or pattern is not None:
            setattr(ds, keyword, text)


def derivation_items(item: dict[str, Any]) -> Any:
    """DerivationImageSequence of one SEG frame: its source frame (mosaic: the whole mosaic image)."""
    from highdicom.sr import CodedConcept
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes

    source = Dataset()
    source.ReferencedSOPClassUID = item["sop_class_uid"]
    source.ReferencedSOPInstanceUID = item["sop_instance_uid"]
    if item["frame_number"] is not None:
        source.ReferencedFrameNumber = int(item["frame_number"])
    source.PurposeOfReferenceCodeSequence = [CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)]
    source.SpatialLocationsPreserved = "NO" if item["mosaic_tile"] is not None else "YES"
    derivation = Dataset()
    derivation.DerivationCodeSequence = [CodedConcept.from_code(codes.DCM.Segmentation)]
    derivation.SourceImageSequence = [source]
    return [derivation]


def referenced_series(table: dict[str, Any], series_uid: str) -> Any:
    """ReferencedSeriesSequence listing every distinct source SOP instance of the table."""
    from pydicom.dataset import Dataset

    instances = []
    seen: set[str] = set()
    for item in table["frames"]:
        if item["sop_instance_uid"] in seen:
            continue
        seen.add(item["sop_instance_uid"])
        ref = Dataset()
        ref.ReferencedSOPClassUID = item["sop_class_uid"]
        ref.ReferencedSOPInstanceUID = item["sop_instance_uid"]
        instances.append(ref)
    series = Dataset()
    series.SeriesInstanceUID = series_uid
    series.ReferencedInstanceSequence = instances
    return [series]


__all__ = ["source_table", "check_table", "read_source_header", "stand_in", "fill_type2",
           "derivation_items", "referenced_series", "TYPE2_PATIENT_STUDY"]
