"""Read a DICOM-SEG back right after writing it, before it counts as written.

The check reads the file with pydicom and highdicom and compares it with what the writer
meant: the attributes readers need (Type 1 pixel measures and orientation, Type 2 patient
and study attributes), one segment per label, each frame referencing the source frame at
its position, and frame pixels equal to the sampled labels, with no labelled source frame
missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import MedsegError

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber",
          "StudyDate", "StudyTime", "ReferringPhysicianName")


class SegCheckError(MedsegError):
    """A DICOM-SEG medseg wrote does not read back to what it should hold."""


def check_written(tmp: Path, final: Path, table: dict[str, Any], seg_pixels: np.ndarray, n_segments: int) -> None:
    """Raise :class:`SegCheckError` naming ``final`` when the SEG at ``tmp`` is not right.

    Args:
        tmp: the file just written.
        final: the path it will be known by (for the message).
        table: the source frame table the SEG was built from.
        seg_pixels: segment number of every pixel of every source frame, ``(frames, rows, cols)``.
        n_segments: the number of segments described.
    """
    problem = _problem(tmp, table, seg_pixels, n_segments)
    if problem:
        raise SegCheckError(f"{final}: the DICOM-SEG written fails its read-back check: {problem}")


def _problem(path: Path, table: dict[str, Any], seg_pixels: np.ndarray, n_segments: int) -> str | None:
    import highdicom as hd
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
        hd.seg.segread(str(path))
        frames = ds.pixel_array
    except Exception as exc:  # any failure to read back is the finding
        return f"cannot be read back ({type(exc).__name__}: {exc})"
    if str(ds.get("SOPClassUID", "")) != SEG_CLASS:
        return f"SOPClassUID is {ds.get('SOPClassUID')}, not Segmentation Storage"
    missing = [k for k in _TYPE2 if k not in ds]
    if missing:
        return f"Type 2 attribute(s) {', '.join(missing)} absent"
    problem = _shared_problem(ds) or (None if len(ds.SegmentSequence) == n_segments
                                      else f"{len(ds.SegmentSequence)} segments, expected {n_segments}")
    if problem:
        return problem
    frames = frames[None] if frames.ndim == 2 else frames
    return _frames_problem(ds, frames, table, seg_pixels)


def _shared_problem(ds: Any) -> str | None:
    shared = ds.get("SharedFunctionalGroupsSequence")
    if not shared:
        return "no SharedFunctionalGroupsSequence"
    pm = shared[0].get("PixelMeasuresSequence")
    if not pm or not pm[0].get("PixelSpacing") or pm[0].get("SliceThickness") in (None, ""):
        return "PixelMeasuresSequence lacks PixelSpacing or SliceThickness"
    po = shared[0].get("PlaneOrientationSequence")
    if not po or not po[0].get("ImageOrientationPatient"):
        return "PlaneOrientationSequence lacks ImageOrientationPatient"
    return None


def _frames_problem(ds: Any, frames: np.ndarray, table: dict[str, Any], seg_pixels: np.ndarray) -> str | None:
    """Each SEG frame at a source position, referencing that source frame, with the expected pixels."""
    index = {tuple(np.round(item["position"], 3)): k for k, item in enumerate(table["frames"])}
    seen: set[tuple[int, int]] = set()
    for f, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ipp = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        k = index.get(tuple(np.round(ipp, 3)))
        if k is None:
            return f"frame {f + 1} at {ipp} mm lies on no source frame"
        item = table["frames"][k]
        refs = [s for d in group.get("DerivationImageSequence", []) for s in d.get("SourceImageSequence", [])]
        if not any(str(r.ReferencedSOPInstanceUID) == item["sop_instance_uid"]
                   and (item["frame_number"] is None or int(r.get("ReferencedFrameNumber", 0)) == item["frame_number"])
                   for r in refs):
            return f"frame {f + 1} does not reference its source {item['file']}"
        ident = group.get("SegmentIdentificationSequence") or ds.SharedFunctionalGroupsSequence[0].get(
            "SegmentIdentificationSequence")
        if not ident:
            return f"frame {f + 1} names no segment (SegmentIdentificationSequence)"
        number = int(ident[0].ReferencedSegmentNumber)
        seen.add((k, number))
        if not np.array_equal(frames[f] > 0, seg_pixels[k] == number):
            return f"frame {f + 1} (segment {number}, source {item['file']}) differs from the labels"
    for k in range(seg_pixels.shape[0]):
        for number in np.unique(seg_pixels[k]):
            if number and (k, int(number)) not in seen:
                return f"no frame for segment {int(number)} on source frame {k + 1} ({table['frames'][k]['file']})"
    return None


__all__ = ["check_written", "SegCheckError"]
