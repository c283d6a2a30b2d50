"""DICOM Segmentation objects (binary SEG) written and read with highdicom.

:func:`write_dicom_seg` turns a label :class:`~medseg.Volume` into a binary DICOM-SEG
that references its source series: one segment per label value present (coded with
SNOMED CT when the name is a known structure), frames aligned with the source images
sorted along the slice normal, the source's Frame of Reference and study. Every pixel
of every source frame takes the label of the volume voxel at that pixel's world
position (exact when the volume was loaded from that series; nearest voxel otherwise).

:func:`read_dicom_seg` reads a SEG back into a label Volume, either on the grid of its
source series (``source_files``) or on the grid highdicom derives from the SEG frames.
The original label values are kept: each segment carries ``TrackingID = "medseg label N"``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.io.atomic import atomic_path
from medseg.volume import Volume

log = logging.getLogger(__name__)

_LPS = np.array([-1.0, -1.0, 1.0])
_TRACKING = re.compile(r"^medseg label (\d+)$")
#: Label names (lower case, ``_`` for spaces, side suffixes removed) -> SNOMED CT attribute of pydicom's ``codes.SCT``.
_KNOWN_STRUCTURES = {
    "liver": "Liver", "kidney": "Kidney", "spleen": "Spleen", "lung": "Lung", "pancreas": "Pancreas",
    "heart": "Heart", "aorta": "Aorta", "stomach": "Stomach", "brain": "Brain", "prostate": "Prostate",
    "bladder": "Bladder", "urinary_bladder": "Bladder", "gallbladder": "Gallbladder", "esophagus": "Esophagus",
    "spine": "Spine", "bone": "Bone",
}
_ABNORMAL = {"tumour": "Tumor", "tumor": "Tumor", "lesion": "Tumor", "neoplasm": "Neoplasm", "mass": "Mass"}


@dataclass(frozen=True)
class _Frame:
    """Geometry of one source image frame (LPS mm)."""

    dataset: Any
    frame_index: int  # 0 for single-frame files
    position: np.ndarray  # ImagePositionPatient
    row_dir: np.ndarray  # IOP[0:3], direction of increasing column index
    col_dir: np.ndarray  # IOP[3:6], direction of increasing row index
    spacing: tuple[float, float]  # PixelSpacing (between rows, between columns)
    rows: int
    columns: int


def _frames_of(path: Path) -> list[_Frame]:
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as exc:  # pydicom raises several types for non-DICOM files
        raise InputError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    return _frame_geometry(ds, path)


def _frame_geometry(ds: Any, path: Path) -> list[_Frame]:
    """Geometry of every frame of ``ds`` (functional groups first, then top-level attributes)."""
    frames = []
    for f in range(int(ds.get("NumberOfFrames", 1) or 1)):
        pos, ori, pm = (_group_item(ds, f, s) for s in
                        ("PlanePositionSequence", "PlaneOrientationSequence", "PixelMeasuresSequence"))
        ipp = pos.ImagePositionPatient if pos is not None else ds.get("ImagePositionPatient")
        iop = ori.ImageOrientationPatient if ori is not None else ds.get("ImageOrientationPatient")
        ps = pm.get("PixelSpacing") if pm is not None else None
        ps = ps or ds.get("PixelSpacing")
        if ipp is None or iop is None or ps is None:
            raise InputError(f"{path}: frame {f + 1} lacks ImagePositionPatient/ImageOrientationPatient/PixelSpacing")
        iop = np.asarray([float(v) for v in iop])
        frames.append(
            _Frame(ds, f, np.asarray([float(v) for v in ipp]), iop[:3], iop[3:], (float(ps[0]), float(ps[1])),
                   int(ds.Rows), int(ds.Columns))
        )
    return frames


def _pixel_to_voxel(frame: _Frame, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Continuous voxel index of pixel (0, 0), and its change per column and per row."""
    inv = np.linalg.inv(affine)
    to_index = inv[:3, :3] * _LPS[None, :]  # LPS mm -> voxel index (linear part)
    base = to_index @ frame.position + inv[:3, 3]
    d_col = to_index @ (frame.row_dir * frame.spacing[1])
    d_row = to_index @ (frame.col_dir * frame.spacing[0])
    return base, d_col, d_row


def _pixel_indices(frame: _Frame, affine: np.ndarray, shape: Sequence[int]) -> tuple[tuple[np.ndarray, ...], np.ndarray, float]:
    """Integer voxel indices ``(i, j, k)`` of every pixel (``[rows, cols]`` each), inside mask, max rounding error."""
    base, d_col, d_row = _pixel_to_voxel(frame, affine)
    r = np.arange(frame.rows, dtype=np.float64)[:, None]
    c = np.arange(frame.columns, dtype=np.float64)[None, :]
    idx, inside, err = [], np.ones((frame.rows, frame.columns), dtype=bool), 0.0
    for a in range(3):
        pos = base[a] + c * d_col[a] + r * d_row[a]
        rounded = np.rint(pos)
        err = max(err, float(np.abs(pos - rounded).max()))
        ia = rounded.astype(np.intp)
        inside &= (ia >= 0) & (ia < shape[a])
        idx.append(np.clip(ia, 0, shape[a] - 1))
    return tuple(idx), inside, err


def _plane_view(frame: _Frame, affine: np.ndarray, shape: Sequence[int]) -> tuple[tuple[Any, ...], bool] | None:
    """Basic-slicing index of the voxel plane that a frame covers exactly, and whether to transpose it.

    ``None`` unless the frame's pixels fall exactly (within 1e-3 voxel) on voxel centres of one
    axis-aligned plane, entirely inside the grid: the usual case of labels predicted on the
    series' own grid. ``volume[index]`` (transposed when the flag is set) is then ``[rows, cols]``.
    """
    base, d_col, d_row = _pixel_to_voxel(frame, affine)
    a_c, a_r = int(np.argmax(np.abs(d_col))), int(np.argmax(np.abs(d_row)))
    if a_c == a_r or np.abs(base - np.rint(base)).max() > 1e-3:
        return None
    for d, a in ((d_col, a_c), (d_row, a_r)):
        if abs(abs(d[a]) - 1.0) > 1e-3 or np.abs(np.delete(d, a)).max() > 1e-3:
            return None
    b = np.rint(base).astype(int)
    a_k = 3 - a_c - a_r
    if not 0 <= b[a_k] < shape[a_k]:
        return None
    index: list[Any] = [None, None, None]
    index[a_k] = int(b[a_k])
    for a, step, n in ((a_c, int(np.sign(d_col[a_c])), frame.columns), (a_r, int(np.sign(d_row[a_r])), frame.rows)):
        start, end = int(b[a]), int(b[a]) + step * (n - 1)
        if min(start, end) < 0 or max(start, end) >= shape[a]:
            return None
        index[a] = slice(start, end + 1) if step > 0 else slice(start, end - 1 if end > 0 else None, -1)
    return tuple(index), a_c < a_r


def _sorted_source_frames(source_files: Sequence[str | os.PathLike[str]]) -> list[_Frame]:
    if not source_files:
        raise InputError("write_dicom_seg needs the source image files of the series")
    frames = [fr for p in source_files for fr in _frames_of(Path(p))]
    uids = {str(fr.dataset.get("SeriesInstanceUID", "")) for fr in frames}
    if len(uids) > 1:
        raise InputError(f"source files belong to {len(uids)} series ({', '.join(sorted(uids))}); give one series")
    if len({fr.dataset.SOPInstanceUID for fr in frames}) == len(frames):  # single-frame files: sort spatially
        normal = np.cross(frames[0].row_dir, frames[0].col_dir)
        frames.sort(key=lambda fr: float(fr.position @ normal))
    return frames


def _present_values(array: np.ndarray) -> list[int]:
    """Sorted nonzero values of an integer array (fast for few labels)."""
    if array.size == 0:
        return []
    top, low = int(array.max()), int(array.min())
    if low >= 0 and top <= 64:
        return [v for v in range(1, top + 1) if (array == v).any()]
    if low >= 0 and top < 65536:
        seen = np.zeros(top + 1, dtype=bool)
        seen[array.ravel()] = True
        return [int(v) for v in np.flatnonzero(seen) if v != 0]
    return [int(v) for v in np.unique(array) if v != 0]


def _coded(name: str) -> tuple[Any, Any]:
    """(category, type) codes for a structure name."""
    from pydicom.sr.codedict import codes

    key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    base = re.sub(r"_(left|right|l|r)$|^(left|right)_", "", key)
    if base in _ABNORMAL:
        return codes.SCT.MorphologicallyAbnormalStructure, getattr(codes.SCT, _ABNORMAL[base])
    if base in _KNOWN_STRUCTURES:
        return codes.SCT.AnatomicalStructure, getattr(codes.SCT, _KNOWN_STRUCTURES[base])
    return codes.SCT.Tissue, codes.SCT.Tissue


def write_dicom_seg(
    labels: Volume,
    source_files: Sequence[str | os.PathLike[str]],
    path: str | os.PathLike[str],
    *,
    label_names: Mapping[int, str],
    series_description: str = "medseg segmentation",
    algorithm_name: str = "medseg",
    algorithm_version: str | None = None,
    series_number: int = 300,
) -> Path:
    """Write ``labels`` as a binary DICOM-SEG referencing the source series; atomic.

    Args:
        labels: integer label map ``[i, j, k]`` on the grid of the source series (or any
            grid covering it: each source pixel takes the nearest voxel's label).
        source_files: the source series' image files (single-frame files in any order,
            or one enhanced multi-frame file); ``Volume.meta["source_files"]`` of a DICOM load.
        path: output ``.dcm`` file.
        label_names: ``{label value: name}``; each value present in ``labels`` (0 excluded)
            becomes one segment named after it (unknown values are named ``label N``).
        series_description: SeriesDescription of the SEG.
        algorithm_name, algorithm_version: the segmentation algorithm (AI family).
        series_number: SeriesNumber of the SEG.

    Returns: ``path``.

    Raises:
        InputError: source files unreadable, from several series, or not 3D labels.
    """
    import highdicom as hd

    import medseg

    if labels.ndim != 3 or labels.channel_first or labels.array.dtype.kind not in "iub":
        raise InputError(f"DICOM-SEG needs a 3D integer label map, got {labels!r}")
    frames = _sorted_source_frames(source_files)
    arr = labels.array
    pixels = np.zeros((len(frames), frames[0].rows, frames[0].columns), dtype=arr.dtype)
    worst = 0.0
    for n, fr in enumerate(frames):
        plane = _plane_view(fr, labels.affine, labels.spatial_shape)
        if plane is not None:
            view = arr[plane[0]]
            pixels[n] = view.T if plane[1] else view
            continue
        idx, inside, err = _pixel_indices(fr, labels.affine, labels.spatial_shape)
        worst = max(worst, err)
        pixels[n] = np.where(inside, arr[idx], 0)
    if worst > 1e-2:
        log.warning("%s: label grid is not the source grid (off by up to %.2f voxels); labels sampled nearest", path, worst)
    if pixels.size and int(pixels.min()) < 0:
        raise InputError(f"{path}: label values must be >= 0, found {int(pixels.min())}")
    present = _present_values(pixels)
    omit_empty = True
    if not present:  # a SEG needs at least one segment: record the named labels, empty
        present = sorted(k for k in label_names if int(k) != 0)[:1] or [1]
        omit_empty = False
        log.info("%s: no label present; writing an empty segment %d", path, present[0])
    lut = np.zeros(int(max(int(pixels.max()), max(present))) + 1, dtype=np.uint16)
    for number, value in enumerate(present, start=1):
        lut[value] = number
    seg_pixels = lut[pixels]
    seg_pixels = seg_pixels.astype(np.uint8 if len(present) < 256 else np.uint16)
    version = algorithm_version or medseg.__version__
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=_ai_family(), version=version
    )
    descriptions = []
    for number, value in enumerate(present, start=1):
        name = str(label_names.get(value, label_names.get(str(value), f"label {value}")))  # type: ignore[call-overload]
        category, kind = _coded(name)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name[:64],
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_id=f"medseg label {value}",
                tracking_uid=hd.UID(),
            )
        )
    sources = list({id(fr.dataset): fr.dataset for fr in frames}.values())  # one per file, in frame order
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=seg_pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=int(series_number),
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="medseg",
            manufacturer_model_name=algorithm_name[:64],
            software_versions=f"medseg {medseg.__version__}",
            device_serial_number="0",
            series_description=series_description[:64],
            omit_empty_frames=omit_empty,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: highdicom cannot build the SEG from {len(frames)} source frame(s): {exc}") from exc
    out = Path(path)
    with atomic_path(out) as tmp:
        seg.save_as(str(tmp))
    log.info("wrote DICOM-SEG %s: %d segment(s) over %d source frame(s)", out, len(present), len(frames))
    return out


def _ai_family() -> Any:
    from pydicom.sr.codedict import codes

    return codes.cid7162.ArtificialIntelligence


def _segment_values(ds: Any) -> dict[int, int]:
    """Segment number -> original label value (from TrackingID, else the segment number)."""
    values = {}
    for item in ds.SegmentSequence:
        number = int(item.SegmentNumber)
        match = _TRACKING.match(str(item.get("TrackingID", "")))
        values[number] = int(match.group(1)) if match else number
    return values


def _segment_names(ds: Any, values: Mapping[int, int]) -> dict[int, str]:
    return {values[int(item.SegmentNumber)]: str(item.SegmentLabel) for item in ds.SegmentSequence}


def read_dicom_seg(
    path: str | os.PathLike[str],
    *,
    source_files: Sequence[str | os.PathLike[str]] | None = None,
) -> Volume:
    """Read a binary/fractional DICOM-SEG into a label Volume (uint8/uint16, ``is_label``).

    Args:
        path: the SEG file.
        source_files: the source series; the labels are then placed on that series'
            grid (the grid :func:`medseg.io.load` gives it). Without them the grid is the
            one highdicom derives from the SEG frames (covering the segmented slices).

    Returns:
        labels ``[i, j, k]`` with the original label values (``TrackingID`` ``medseg label N``,
        else segment numbers); ``meta["label_names"]`` maps values to segment labels.
        Where segments overlap, the higher label value wins.
    """
    import pydicom

    p = Path(path)
    try:
        ds = pydicom.dcmread(str(p))
    except Exception as exc:
        raise InputError(f"{p}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    if str(ds.get("SOPClassUID", "")) != "1.2.840.10008.5.1.4.1.1.66.4":
        raise InputError(f"{p}: not a DICOM Segmentation object (SOPClassUID {ds.get('SOPClassUID')})")
    values = _segment_values(ds)
    meta = {"source": str(p), "format": "dicom-seg", "label_names": {str(k): v for k, v in _segment_names(ds, values).items()},
            "series_uid": str(ds.SeriesInstanceUID), "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", ""))}
    dtype = np.uint8 if max(values.values(), default=0) < 256 else np.uint16
    if source_files is None:
        return _read_own_grid(p, values, dtype, meta)
    from medseg.io import load

    grid = load([Path(f) for f in source_files], resample=True)
    out = np.zeros(grid.spatial_shape, dtype=dtype)
    pixels = ds.pixel_array
    if pixels.ndim == 2:
        pixels = pixels[None]
    threshold = 1 if str(ds.SegmentationType) == "BINARY" else max(int(ds.get("MaximumFractionalValue", 255)) // 2, 1)
    geometry = _frame_geometry(ds, p)
    frame_values = [_frame_value(ds, f, values) for f in range(len(geometry))]
    for f in sorted(range(len(geometry)), key=lambda f: frame_values[f]):  # higher values overwrite on overlap
        on = pixels[f] >= threshold
        plane = _plane_view(geometry[f], grid.affine, grid.spatial_shape)
        if plane is not None:
            view = out[plane[0]]
            (view.T if plane[1] else view)[on] = frame_values[f]
            continue
        idx, inside, err = _pixel_indices(geometry[f], grid.affine, grid.spatial_shape)
        if err > 1e-2:
            log.warning("%s: frame %d is off the source grid by %.2f voxels", p, f + 1, err)
        on &= inside
        out[tuple(a[on] for a in idx)] = frame_values[f]
    return Volume(out, grid.affine.copy(), meta, is_label=True)


def _group_item(ds: Any, f: int, seq: str) -> Any:
    """Item of functional group ``seq`` for frame ``f`` (per-frame first, then shared), or None."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    for group in (per_frame[f] if per_frame is not None and f < len(per_frame) else None,
                  ds.get("SharedFunctionalGroupsSequence", [None])[0]):
        if group is not None and seq in group and len(group[seq].value):
            return group[seq][0]
    return None


def _frame_value(ds: Any, f: int, values: Mapping[int, int]) -> int:
    item = _group_item(ds, f, "SegmentIdentificationSequence")
    if item is None:
        raise InputError(f"frame {f + 1} of the SEG names no segment (SegmentIdentificationSequence)")
    return values[int(item.ReferencedSegmentNumber)]


def _read_own_grid(path: Path, values: Mapping[int, int], dtype: Any, meta: dict[str, Any]) -> Volume:
    import highdicom as hd

    seg = hd.seg.segread(str(path))
    numbers = sorted(values, key=lambda n: values[n])  # higher label values win on overlap
    vol = seg.get_volume(segment_numbers=numbers, combine_segments=True, skip_overlap_checks=True)
    arr = np.asarray(vol.array)
    lut = np.zeros(max(values) + 1, dtype=dtype)
    for number, value in values.items():
        lut[number] = value
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(vol.affine, dtype=np.float64)
    return Volume(lut[arr.astype(np.intp)], ras, meta, is_label=True)


__all__ = ["write_dicom_seg", "read_dicom_seg"]
