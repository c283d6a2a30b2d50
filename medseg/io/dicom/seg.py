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
from medseg.io.dicom.segcheck import SegCheckError
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
    """Geometry of one image frame (LPS mm)."""

    position: np.ndarray  # ImagePositionPatient
    row_dir: np.ndarray  # IOP[0:3], direction of increasing column index
    col_dir: np.ndarray  # IOP[3:6], direction of increasing row index
    spacing: tuple[float, float]  # PixelSpacing (between rows, between columns)
    rows: int
    columns: int


def _table_frames(table: dict[str, Any]) -> list[_Frame]:
    """Geometry of every frame of a reader frame table (:func:`medseg.io.dicom.frames.frame_table`)."""
    iop = np.asarray(table["orientation"], dtype=np.float64)
    spacing = (float(table["pixel_spacing"][0]), float(table["pixel_spacing"][1]))
    return [_Frame(np.asarray(item["position"], dtype=np.float64), iop[:3], iop[3:], spacing,
                   int(table["rows"]), int(table["columns"])) for item in table["frames"]]


def _frame_geometry(ds: Any, path: Path) -> list[_Frame]:
    """Geometry of every frame of a SEG dataset (functional groups first, then top-level attributes)."""
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
        frames.append(_Frame(np.asarray([float(v) for v in ipp]), iop[:3], iop[3:], (float(ps[0]), float(ps[1])),
                             int(ds.Rows), int(ds.Columns)))
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


def _side(key: str) -> str | None:
    """``"left"``/``"right"`` when a normalised label name carries a side, else None."""
    match = re.search(r"_(left|right|l|r)$|^(left|right)_", key)
    if match is None:
        return None
    side = match.group(1) or match.group(2)
    return {"l": "left", "r": "right"}.get(side, side)


def _coded(name: str) -> tuple[Any, Any, Any]:
    """(category, type, laterality modifier or None) codes for a structure name."""
    from pydicom.sr.codedict import codes

    key = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    base = re.sub(r"_(left|right|l|r)$|^(left|right)_", "", key)
    side = _side(key)
    modifier = {"left": codes.SCT.Left, "right": codes.SCT.Right}.get(side) if side else None
    if base in _ABNORMAL:
        return codes.SCT.MorphologicallyAbnormalStructure, getattr(codes.SCT, _ABNORMAL[base]), modifier
    if base in _KNOWN_STRUCTURES:
        return codes.SCT.AnatomicalStructure, getattr(codes.SCT, _KNOWN_STRUCTURES[base]), modifier
    return codes.SCT.Tissue, codes.SCT.Tissue, None


def _segment_description(number: int, value: int, name: str, algorithm: Any) -> Any:
    """One SegmentDescription; a side in the name becomes a SNOMED laterality modifier of the type."""
    import highdicom as hd

    category, kind, modifier = _coded(name)
    desc = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name[:64],
        segmented_property_category=category,
        segmented_property_type=kind,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_id=f"medseg label {value}",
        tracking_uid=hd.UID(),
    )
    if modifier is not None:
        desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept.from_code(modifier)]
    return desc


def _sample_labels(labels: Volume, frames: Sequence[_Frame], path: Path) -> np.ndarray:
    """Label value of every pixel of every source frame, ``(frames, rows, columns)``."""
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
    return pixels


def _segment_numbers(pixels: np.ndarray, present: list[int]) -> np.ndarray:
    """Label values -> segment numbers 1..n (uint8 or uint16)."""
    lut = np.zeros(int(max(int(pixels.max()), max(present))) + 1, dtype=np.uint16)
    for number, value in enumerate(present, start=1):
        lut[value] = number
    return lut[pixels].astype(np.uint8 if len(present) < 256 else np.uint16)


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
    """Write ``labels`` as a binary DICOM-SEG referencing the source series; checked, then atomic.

    The source frames come from ``labels.meta["dicom_frames"]`` (the frame table the reader
    recorded) when it lists exactly ``source_files``, else from the reader's scan of
    ``source_files``. One SEG frame per source frame and segment: single-frame files,
    frames of an enhanced multi-frame file, or tiles of a Siemens MOSAIC (each tile's frame
    references the mosaic image). Patient/study attributes come from one source file;
    Type 2 attributes that are absent are written empty.

    Args:
        labels: integer label map ``[i, j, k]`` on the grid of the source series (or any
            grid covering it: each source pixel takes the nearest voxel's label).
        source_files: the source series' image files (any order);
            ``Volume.meta["source_files"]`` of a DICOM load.
        path: output ``.dcm`` file.
        label_names: ``{label value: name}``; each value present in ``labels`` (0 excluded)
            becomes one segment named after it (unknown values are named ``label N``);
            ``left``/``right`` in a name becomes a SNOMED laterality modifier.
        series_description: SeriesDescription of the SEG.
        algorithm_name, algorithm_version: the segmentation algorithm (AI family).
        series_number: SeriesNumber of the SEG.

    Returns: ``path``.

    Raises:
        InputError: source files unreadable, from several series, without patient geometry
            or UIDs, or not 3D labels.
        SegCheckError: the written SEG does not read back to the labels (nothing is left at ``path``).
    """
    import highdicom as hd

    import medseg
    from medseg.io.dicom import segsource
    from medseg.io.dicom.segcheck import check_written  # noqa: F811

    out = Path(path)
    if labels.ndim != 3 or labels.channel_first or labels.array.dtype.kind not in "iub":
        raise InputError(f"DICOM-SEG needs a 3D integer label map, got {labels!r}")
    table = segsource.source_table(labels, source_files)
    segsource.check_table(table)
    first_file = Path(table["frames"][0]["file"])
    header = segsource.read_source_header(first_file)
    pixels = _sample_labels(labels, _table_frames(table), out)
    present = _present_values(pixels)
    omit_empty = True
    if not present:  # a SEG needs at least one segment: record the named labels, empty
        present = sorted(k for k in label_names if int(k) != 0)[:1] or [1]
        omit_empty = False
        log.info("%s: no label present; writing an empty segment %d", out, present[0])
    seg_pixels = _segment_numbers(pixels, present)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=_ai_family(), version=algorithm_version or medseg.__version__)
    names = {v: str(label_names.get(v, label_names.get(str(v), f"label {v}"))) for v in present}  # type: ignore[call-overload]
    descriptions = [_segment_description(n, v, names[v], algorithm) for n, v in enumerate(present, start=1)]
    try:
        seg = _build(hd, segsource.stand_in(header, table, first_file), table, seg_pixels, descriptions,
                     series_description=series_description, series_number=series_number,
                     algorithm_name=algorithm_name, omit_empty=omit_empty)
    except (ValueError, TypeError, AttributeError) as exc:
        # highdicom's message can quote attribute values (patient data): only its type is reported
        raise InputError(f"{out}: highdicom cannot build the SEG from {len(table['frames'])} source frame(s) "
                         f"of {first_file} ({type(exc).__name__})") from exc
    _reference_sources(seg, table, str(header.SeriesInstanceUID))
    with atomic_path(out) as tmp:
        seg.save_as(str(tmp))
        check_written(tmp, out, table, seg_pixels, len(present))
    log.info("wrote DICOM-SEG %s: %d segment(s) over %d source frame(s)", out, len(present), len(table["frames"]))
    return out


def _build(hd: Any, source: Any, table: dict[str, Any], seg_pixels: np.ndarray, descriptions: list[Any], *,
           series_description: str, series_number: int, algorithm_name: str, omit_empty: bool) -> Any:
    """The highdicom Segmentation, geometry given explicitly from the frame table."""
    import medseg

    positions = [hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, item["position"])
                 for item in table["frames"]]
    orientation = hd.PlaneOrientationSequence(hd.CoordinateSystemNames.PATIENT, table["orientation"])
    measures = hd.PixelMeasuresSequence(pixel_spacing=table["pixel_spacing"],
                                        slice_thickness=float(table["slice_thickness_mm"]),
                                        spacing_between_slices=float(table["slice_spacing_mm"]))
    with _quiet_highdicom():
        return hd.seg.Segmentation(
            source_images=[source],
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
            plane_positions=positions,
            plane_orientation=orientation,
            pixel_measures=measures,
        )


class _quiet_highdicom:
    """While a SEG is built: highdicom's logger at WARNING (its INFO lines flood batch logs), and its
    person-name warning dropped, because that warning quotes the patient's name (PHI) into logs."""

    def __enter__(self) -> None:
        import warnings

        self._logger = logging.getLogger("highdicom")
        self._level = self._logger.level
        self._logger.setLevel(max(self._level, logging.WARNING))
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.filterwarnings("ignore", message=r"(?s).*unlikely to represent the intended person name")

    def __exit__(self, *exc: object) -> None:
        self._warnings.__exit__(*exc)
        self._logger.setLevel(self._level)


def _reference_sources(seg: Any, table: dict[str, Any], series_uid: str) -> None:
    """Point every SEG frame at its source frame and list all source instances (replacing the stand-in's)."""
    from medseg.io.dicom import segsource

    by_position = {tuple(np.round(item["position"], 3)): item for item in table["frames"]}
    for group in seg.PerFrameFunctionalGroupsSequence:
        ipp = group.PlanePositionSequence[0].ImagePositionPatient
        item = by_position.get(tuple(np.round([float(v) for v in ipp], 3)))
        if item is None:
            raise InputError(f"SEG frame at {list(ipp)} matches no source frame")
        group.DerivationImageSequence = segsource.derivation_items(item)
    seg.ReferencedSeriesSequence = segsource.referenced_series(table, series_uid)
    if "SourceImageSequence" in seg:
        del seg.SourceImageSequence


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


__all__ = ["write_dicom_seg", "read_dicom_seg", "SegCheckError"]
