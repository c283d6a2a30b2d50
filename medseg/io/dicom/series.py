"""DICOM headers, series grouping, slice sorting and geometry checks (no pixel decoding).

Every image frame becomes a :class:`FrameHeader` (one per single-frame file, one per
frame of an enhanced multi-frame file). Frames are grouped by SeriesInstanceUID, then
by orientation and image size; non-image objects (SR, RTSTRUCT, SEG, presentation
states, ...) and localizers are set aside. A group is sorted by ImagePositionPatient
projected on the slice normal (never by InstanceNumber) and checked for duplicate
positions, missing slices, non-uniform spacing and gantry tilt
(:mod:`medseg.io.dicom.geometry`).

Geometry convention (shared with :mod:`medseg.data.dicom_writer`): volume axis ``i``
follows IOP[0:3] (the direction in which the column index grows along a row), ``j``
follows IOP[3:6] (the direction in which the row index grows), ``k`` follows the slice
normal ``cross(IOP[0:3], IOP[3:6])`` in sorted order. DICOM patient coordinates are
LPS; the affine is RAS+ (x and y negated).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.io.dicom.fasthdr import read_fast_header
from medseg.io.dicom.frames import LPS_TO_RAS, FrameHeader
from medseg.io.dicom.geometry import check_geometry

log = logging.getLogger(__name__)

#: SOP classes that never hold an image volume (checked before "has pixel data").
NON_IMAGE_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
    "1.2.840.10008.5.1.4.1.1.66.5": "surface segmentation",
    "1.2.840.10008.5.1.4.1.1.481.3": "RTSTRUCT",
    "1.2.840.10008.5.1.4.1.1.481.4": "RT treatment record",
    "1.2.840.10008.5.1.4.1.1.481.5": "RTPLAN",
    "1.2.840.10008.5.1.4.1.1.481.6": "RT treatment record",
    "1.2.840.10008.5.1.4.1.1.481.7": "RT treatment record",
    "1.2.840.10008.5.1.4.1.1.481.8": "RTPLAN",
    "1.2.840.10008.5.1.4.1.1.481.9": "RT treatment record",
    "1.2.840.10008.5.1.4.1.1.11.1": "presentation state",
    "1.2.840.10008.5.1.4.1.1.66": "raw data",
    "1.2.840.10008.5.1.4.1.1.66.1": "registration",
    "1.2.840.10008.5.1.4.1.1.66.2": "fiducials",
    "1.2.840.10008.5.1.4.1.1.66.3": "registration",
    "1.2.840.10008.5.1.4.1.1.67": "real world value mapping",
    "1.2.840.10008.5.1.4.1.1.104.1": "encapsulated PDF",
    "1.2.840.10008.5.1.4.1.1.104.2": "encapsulated CDA",
    "1.2.840.10008.5.1.4.1.1.104.3": "encapsulated STL",
    "1.2.840.10008.1.3.10": "DICOMDIR",
}
_NON_IMAGE_PREFIXES = {
    "1.2.840.10008.5.1.4.1.1.88.": "SR",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state",
    "1.2.840.10008.5.1.4.1.1.9.": "waveform",
    "1.2.840.10008.5.1.4.34.": "RT instruction",
}


@dataclass
class SeriesInfo:
    """One image series (a group of frames sharing UID, orientation and size)."""

    series_uid: str
    modality: str
    description: str
    series_number: int | None
    frames: list[FrameHeader]
    localizer: bool = False
    geometry: str = "ok"  # "ok" or the problem found by check_geometry
    part: int | None = None  # when one SeriesInstanceUID splits by orientation/size

    @property
    def images(self) -> int:
        return len(self.frames)

    @property
    def size(self) -> tuple[int, int]:
        """(columns, rows) of each image, i.e. the in-plane size along (i, j)."""
        return (self.frames[0].columns, self.frames[0].rows)

    @property
    def orientation(self) -> str:
        """Orientation code of the (i, j, k) axes, e.g. ``LPS`` for axial DICOM; ``?`` if unknown."""
        f = self.frames[0]
        if f.iop is None:
            return "?"
        from medseg.volume import orientation_codes

        row, col = np.array(f.iop[:3]), np.array(f.iop[3:])
        aff = np.eye(4)
        aff[:3, :3] = LPS_TO_RAS @ np.column_stack([row, col, np.cross(row, col)])
        return orientation_codes(aff)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible summary (no patient data)."""
        paths = sorted({str(f.path) for f in self.frames})
        return {
            "series_uid": self.series_uid,
            "part": self.part,
            "modality": self.modality,
            "description": self.description,
            "series_number": self.series_number,
            "images": self.images,
            "files": len(paths),
            "size": list(self.size),
            "orientation": self.orientation,
            "localizer": self.localizer,
            "geometry": self.geometry,
            "study_uid": self.frames[0].study_uid,
            "first_file": paths[0],
        }


# -- header reading ---------------------------------------------------------------------------
_TAG_CACHE: dict[str, int] = {}


def _text(ds: Any, keyword: str) -> str | None:
    """A string-VR element's value without pydicom's value conversion (it dominates header
    reading time): raw bytes are decoded as Latin-1 and stripped; multi-values stay joined
    by backslashes. None when absent or empty."""
    tag = _TAG_CACHE.get(keyword)
    if tag is None:
        from pydicom.datadict import tag_for_keyword

        tag = _TAG_CACHE.setdefault(keyword, int(tag_for_keyword(keyword)))
    if ds is None or tag not in ds:
        return None
    value = ds.get_item(tag).value
    if value is None:
        return None
    if isinstance(value, bytes):
        text = value.decode("latin-1")
    elif isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    text = text.strip(" \x00")
    return text or None


def _us(ds: Any, keyword: str) -> int | None:
    """An unsigned-short element's value, read from the raw bytes when not yet converted."""
    tag = _TAG_CACHE.get(keyword)
    if tag is None:
        from pydicom.datadict import tag_for_keyword

        tag = _TAG_CACHE.setdefault(keyword, int(tag_for_keyword(keyword)))
    if tag not in ds:
        return None
    value = ds.get_item(tag).value
    if isinstance(value, bytes):
        if len(value) < 2:
            return None
        encoding = getattr(ds, "original_encoding", None) or (None, True)
        return int.from_bytes(value[:2], "little" if encoding[1] is not False else "big")
    return _int(value)


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split("\\")
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _float(value: Any, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _first(ds: Any, seq_name: str) -> Any:
    seq = ds.get(seq_name) if ds is not None else None
    return seq[0] if seq else None


def sop_class_of(ds: Any) -> str:
    """SOPClassUID of a header; for a dataset without any identifying element (a DICOMDIR),
    its file meta's MediaStorageSOPClassUID."""
    sop = _text(ds, "SOPClassUID")
    if sop or any(t in ds for t in _IDENTIFYING_TAGS):
        return sop or ""
    meta = getattr(ds, "file_meta", None)
    return str(getattr(meta, "MediaStorageSOPClassUID", "") or "").strip(" \x00")


def is_non_image(sop_class_uid: str) -> str | None:
    """The kind of a non-image object (``"SR"``, ``"SEG"`` ...) or None for image classes."""
    if sop_class_uid in NON_IMAGE_SOP_CLASSES:
        return NON_IMAGE_SOP_CLASSES[sop_class_uid]
    for prefix, kind in _NON_IMAGE_PREFIXES.items():
        if sop_class_uid.startswith(prefix):
            return kind
    return None


DEFLATED = "1.2.840.10008.1.2.1.99"
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_IDENTIFYING_TAGS = ("SOPClassUID", "Modality", "Rows", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_PIXEL_TAGS_LE = (b"\xe0\x7f\x10\x00", b"\xe0\x7f\x08\x00", b"\xe0\x7f\x09\x00")
_PIXEL_TAGS_BE = (b"\x7f\xe0\x00\x10", b"\x7f\xe0\x00\x08", b"\x7f\xe0\x00\x09")


def read_dataset_header(path: Path, *, preamble: bool | None = None) -> tuple[Any, int | None, str]:
    """``pydicom`` dataset without pixel data; file offset of the pixel element (or None);
    the kind of pixel element: ``"int"`` (PixelData), ``"float"``, ``"none"`` or ``"unknown"``
    (deflated files, whose offsets refer to the inflated stream).

    Raises:
        InputError: the file is not DICOM or its header is truncated/corrupt.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with open(path, "rb") as fp:
            if preamble is None:
                preamble = has_dicm_marker(path)
            ds = pydicom.dcmread(fp, stop_before_pixels=True, force=not preamble)
            offset = fp.tell()
            tag = fp.read(4)
    except InvalidDicomError as exc:
        raise InputError(f"{path}: not a DICOM file ({exc})") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read file ({exc})") from exc
    except Exception as exc:  # pydicom raises many types on corrupt headers
        raise InputError(f"{path}: corrupt or truncated DICOM header ({type(exc).__name__}: {exc})") from exc
    if is_non_image(sop_class_of(ds)):
        return ds, None, "none"  # a DICOMDIR or another non-image object: the caller sets it aside
    if len(ds) == 0 or not any(t in ds for t in _IDENTIFYING_TAGS):
        if preamble:
            raise InputError(
                f"{path}: no DICOM image: the file ({path.stat().st_size} bytes) has the DICM marker but no "
                "SOP class, UIDs or image module (truncated header, or a DICOM fragment without an image)"
            )
        raise InputError(
            f"{path}: no DICOM image: no SOP class, modality, UID or image pixel module could be read "
            "(not a DICOM file, or a DICOM fragment without an image)"
        )
    if tag in _PIXEL_TAGS_LE or tag in _PIXEL_TAGS_BE:
        return ds, offset, "int" if tag in (_PIXEL_TAGS_LE[0], _PIXEL_TAGS_BE[0]) else "float"
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if ts == DEFLATED and "Rows" in ds:
        return ds, None, "unknown"  # the deflated stream hides the pixel element from fp.tell()
    return ds, None, "none"


def has_dicm_marker(path: Path) -> bool:
    """True when ``path`` has the Part-10 preamble and ``DICM`` marker."""
    try:
        with open(path, "rb") as fp:
            fp.seek(128)
            return fp.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """True for a file with the ``DICM`` preamble or a preamble-less file pydicom can parse."""
    p = Path(path)
    if not is_regular_file(p):
        return False
    if has_dicm_marker(p):
        return True
    try:
        read_dataset_header(p)
    except InputError:
        return False
    return True


def frames_from_dataset(ds: Any, path: Path, pixel_offset: int | None, *, pixel_kind: str) -> list[FrameHeader]:
    """Frame headers of one file (one per frame for multi-frame files); [] without pixels.

    ``ds`` is a header read with ``stop_before_pixels``; ``pixel_offset`` and
    ``pixel_kind`` come from :func:`read_dataset_header`.
    """
    if pixel_kind == "none":
        return []
    float_pixels = pixel_kind == "float"
    if pixel_kind != "int":
        pixel_offset = None
    n_frames = _int(_text(ds, "NumberOfFrames")) or 1
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    spacing = _floats(_text(ds, "PixelSpacing"), 2)
    if spacing is None:
        spacing = _floats(_text(ds, "ImagerPixelSpacing"), 2)
    base = dict(
        path=path,
        series_uid=_text(ds, "SeriesInstanceUID") or "",
        study_uid=_text(ds, "StudyInstanceUID") or "",
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID") or "",
        sop_class_uid=_text(ds, "SOPClassUID") or "",
        sop_instance_uid=_text(ds, "SOPInstanceUID") or "",
        modality=_text(ds, "Modality") or "",
        description=_text(ds, "SeriesDescription") or "",
        series_number=_int(_text(ds, "SeriesNumber")),
        instance_number=_int(_text(ds, "InstanceNumber")),
        rows=_us(ds, "Rows") or 0,
        columns=_us(ds, "Columns") or 0,
        samples_per_pixel=_us(ds, "SamplesPerPixel") or 1,
        photometric=_text(ds, "PhotometricInterpretation") or "",
        number_of_frames=n_frames,
        image_type=tuple(v.strip().upper() for v in (_text(ds, "ImageType") or "").split("\\") if v.strip()),
        transfer_syntax=ts,
        gantry_tilt=_float(_text(ds, "GantryDetectorTilt"), 0.0) if "GantryDetectorTilt" in ds else None,
    )
    iop = _floats(_text(ds, "ImageOrientationPatient"), 6)
    ipp = _floats(_text(ds, "ImagePositionPatient"), 3)
    slope = _float(_text(ds, "RescaleSlope"), 1.0)
    intercept = _float(_text(ds, "RescaleIntercept"), 0.0)
    pixel_info = {
        "bits_allocated": _us(ds, "BitsAllocated") or 16,
        "bits_stored": _us(ds, "BitsStored") or _us(ds, "BitsAllocated") or 16,
        "pixel_representation": _us(ds, "PixelRepresentation") or 0,
        "float_pixels": float_pixels,
        "header_slice_thickness": _float(_text(ds, "SliceThickness"), 0.0),
        "modality_lut": "ModalityLUTSequence" in ds,
    }
    thickness = _float(_text(ds, "SpacingBetweenSlices"), _float(_text(ds, "SliceThickness"), 0.0))
    if "DoseGridScaling" in ds:
        slope = _float(_text(ds, "DoseGridScaling"), 1.0)
    from medseg.io.dicom.mosaic import mosaic_count

    n_mosaic = mosaic_count(ds) if n_frames == 1 and "MOSAIC" in base["image_type"] else None
    if base["rows"] <= 0 or base["columns"] <= 0:
        raise InputError(f"{path}: image of {base['columns']}x{base['rows']} pixels (Rows and Columns must be positive)")
    if n_frames > 1 or n_mosaic or "PerFrameFunctionalGroupsSequence" in ds:
        _check_counts(ds, path, pixel_offset, n_frames, n_mosaic, base, pixel_info)
    if n_mosaic and iop is not None and ipp is not None and spacing is not None:
        from medseg.io.dicom.mosaic import mosaic_layout

        try:
            m, r, c, positions, warn = mosaic_layout(ds, n_mosaic, iop, ipp, spacing)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from exc
        base.update(rows=r, columns=c)
        mosaic = {"mosaic": (n_mosaic, m, r, c), "mosaic_warnings": warn}
        return [
            FrameHeader(frame=t, iop=iop, ipp=pos, pixel_spacing=spacing, slope=slope, intercept=intercept,
                        pixel_offset=None, extra={"slice_thickness": thickness, **pixel_info, **mosaic},
                        **base)  # type: ignore[arg-type]
            for t, pos in enumerate(positions)
        ]
    if n_frames == 1 and "PerFrameFunctionalGroupsSequence" not in ds:
        return [
            FrameHeader(frame=None, iop=iop, ipp=ipp, pixel_spacing=spacing, slope=slope,
                        intercept=intercept, pixel_offset=pixel_offset,
                        extra={"slice_thickness": thickness, **pixel_info}, **base)  # type: ignore[arg-type]
        ]
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    offsets = ds.get("GridFrameOffsetVector")  # RT Dose: frame positions along the normal
    frames: list[FrameHeader] = []
    for n in range(n_frames):
        fg = per_frame[n] if per_frame is not None and n < len(per_frame) else None
        f_iop, f_ipp, f_spacing, f_slope, f_inter = iop, ipp, spacing, slope, intercept
        f_thick, f_info = thickness, pixel_info
        for group in (shared, fg):  # per-frame values override shared ones
            if group is None:
                continue
            po = _first(group, "PlaneOrientationSequence")
            if po is not None:
                f_iop = _floats(_text(po, "ImageOrientationPatient"), 6) or f_iop
            pp = _first(group, "PlanePositionSequence")
            if pp is not None:
                f_ipp = _floats(_text(pp, "ImagePositionPatient"), 3) or f_ipp
            pm = _first(group, "PixelMeasuresSequence")
            if pm is not None:
                f_spacing = _floats(_text(pm, "PixelSpacing"), 2) or f_spacing
                f_thick = _float(_text(pm, "SliceThickness"), f_thick)
                f_info = {**f_info, "header_slice_thickness": _float(_text(pm, "SliceThickness"), 0.0)}
            pv = _first(group, "PixelValueTransformationSequence")
            if pv is not None:
                f_slope = _float(_text(pv, "RescaleSlope"), f_slope)
                f_inter = _float(_text(pv, "RescaleIntercept"), f_inter)
        if fg is None and offsets is not None and ipp is not None and iop is not None:
            try:
                # relative offsets start at 0; absolute ones (first = IPP z) work the same way
                off = float(offsets[n]) - float(offsets[0])
            except (IndexError, TypeError, ValueError):
                off = None
            if off is not None:
                normal = np.cross(iop[:3], iop[3:])
                f_ipp = tuple(float(v) for v in np.asarray(ipp) + off * normal)
        elif fg is None and n > 0:
            f_ipp = None  # a multi-frame file without per-frame positions: no geometry
        frames.append(
            FrameHeader(frame=n, iop=f_iop, ipp=f_ipp, pixel_spacing=f_spacing, slope=f_slope,
                        intercept=f_inter, pixel_offset=pixel_offset,
                        extra={"slice_thickness": f_thick, **f_info}, **base)  # type: ignore[arg-type]
        )
    return frames


def _check_counts(ds: Any, path: Path, offset: int | None, n_frames: int, n_mosaic: int | None,
                  base: dict[str, Any], pixel_info: dict[str, Any]) -> None:
    """Refuse frame or tile counts that the pixel data cannot hold, before one header per frame is built."""
    from medseg.io.dicom.extent import check_claimed_frames, frame_bytes, pixel_extent

    rows, cols, spp = base["rows"], base["columns"], base["samples_per_pixel"]
    if n_mosaic and n_mosaic > rows * cols:
        raise InputError(f"{path}: NumberOfImagesInMosaic {n_mosaic} exceeds the {cols}x{rows} pixels of the mosaic")
    ts = base["transfer_syntax"]
    extent = None
    if offset is not None and ts != DEFLATED:
        try:
            extent = pixel_extent(path, offset, explicit_vr=ts != "1.2.840.10008.1.2",
                                  big_endian=ts == "1.2.840.10008.1.2.2")
        except OSError as exc:
            raise InputError(f"{path}: cannot read file ({exc.strerror or type(exc).__name__})") from exc
    else:  # no offset known: the file size still bounds what a native file can hold
        size = os.stat(path).st_size
        if ts in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2") and \
                n_frames * frame_bytes(rows, cols, spp, pixel_info["bits_allocated"], base["photometric"]) > size:
            raise InputError(f"{path}: NumberOfFrames {n_frames} of {cols}x{rows} pixels needs more bytes "
                             f"than the file holds ({size})")
    check_claimed_frames(path, extent, frames=n_frames, rows=rows, columns=cols, samples=spp,
                         bits_allocated=pixel_info["bits_allocated"], photometric=base["photometric"])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and n_frames > 1 and len(per_frame) not in (0, n_frames):
        raise InputError(f"{path}: NumberOfFrames {n_frames} but {len(per_frame)} per-frame functional groups")


@dataclass
class Scan:
    """The result of reading headers: image frames and what was set aside (path, reason)."""

    frames: list[FrameHeader]
    skipped: list[tuple[Path, str]]


def is_regular_file(path: str | os.PathLike[str]) -> bool:
    """True for a regular file (links followed), checked with ``os.stat`` so that a FIFO, socket or
    device (a link to ``/dev/zero``) is never opened: reading one blocks or never ends."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def iter_files(folder: Path) -> list[Path]:
    """All regular files under ``folder`` (recursive, hidden files and folders skipped), sorted.

    FIFOs, sockets, devices and broken links are left out (logged), never opened."""
    out: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.startswith("."):
                continue
            path = Path(root) / f
            if is_regular_file(path):
                out.append(path)
            else:
                log.warning("skipping %s: not a regular file", path)
    return out


#: what pydicom raises when a damaged element is converted on first use: ValueError, NotImplementedError
#: (an unknown VR), its BytesLengthException and more; any of them, for one file's header attributes
_MALFORMED = (Exception,)


def scan(paths: Sequence[Path], *, strict: bool, use_fast: bool = True, skip_unreadable: bool = False) -> Scan:
    """Read the headers of ``paths``.

    Args:
        use_fast: read plain single-frame files with :mod:`medseg.io.dicom.fasthdr`
            (pydicom reads every other file, and all of them when False).
        strict: raise :class:`InputError` for a file that is not DICOM (explicit file
            lists); otherwise (folder scans) such files (notes, JSON sidecars, ...) are set
            aside with a reason. A file with the ``DICM`` marker or a DICOM extension
            (``.dcm``, ``.dicom``, ``.ima``) that cannot be read raises too, unless
            ``skip_unreadable`` (batch discovery: the file is set aside and logged).
    """
    frames: list[FrameHeader] = []
    skipped: list[tuple[Path, str]] = []
    for path in paths:
        fast = read_fast_header(path) if use_fast else None
        if fast is not None and "SOPClassUID" in fast[0]:
            ds, offset = fast
            pixel_kind = "int" if offset is not None else "none"
        else:
            preamble = has_dicm_marker(path)
            try:
                ds, offset, pixel_kind = read_dataset_header(path, preamble=preamble)
            except InputError as exc:
                claims = strict or preamble or path.suffix.lower() in DICOM_SUFFIXES
                if claims and not skip_unreadable:
                    raise  # a file that claims to be DICOM but is not: never skip it silently
                if claims:
                    log.warning("skipping %s", exc)
                skipped.append((path, "unreadable DICOM" if claims else "not DICOM"))
                continue
        try:
            sop = sop_class_of(ds)
            kind = is_non_image(sop)
            if kind is not None:
                skipped.append((path, kind))
                continue
            try:
                found = frames_from_dataset(ds, path, offset, pixel_kind=pixel_kind)
            except InputError:
                raise
            except _MALFORMED as exc:  # pydicom converts values lazily: a damaged element fails on first use
                # the library's message may quote the element's value (patient data): only its type is kept
                raise InputError(f"{path}: malformed DICOM header element ({type(exc).__name__} while reading "
                                 "the image attributes)") from exc
        except InputError as exc:
            if not skip_unreadable:
                raise
            log.warning("skipping %s", exc)
            skipped.append((path, "unreadable DICOM"))
            continue
        if not found:
            skipped.append((path, f"no pixel data ({ds.get('Modality', '?')})"))
            continue
        frames.extend(found)
    return Scan(frames, skipped)


# -- grouping -----------------------------------------------------------------------------
def _group_key(f: FrameHeader) -> tuple[Any, ...]:
    iop = tuple(np.round(f.iop, 3)) if f.iop is not None else None
    return (f.series_uid, iop, f.rows, f.columns, f.samples_per_pixel)


def group_series(frames: Iterable[FrameHeader]) -> list[SeriesInfo]:
    """Group frames by SeriesInstanceUID, then orientation (to 1e-3) and image size."""
    groups: dict[tuple[Any, ...], list[FrameHeader]] = {}
    for f in frames:
        groups.setdefault(_group_key(f), []).append(f)
    out: list[SeriesInfo] = []
    parts: dict[str, int] = {}
    for key, members in groups.items():
        first = members[0]
        info = SeriesInfo(
            series_uid=first.series_uid,
            modality=first.modality,
            description=first.description,
            series_number=first.series_number,
            frames=members,
            localizer=all(m.is_localizer for m in members),
        )
        parts[first.series_uid] = parts.get(first.series_uid, 0) + 1
        out.append(info)
    for uid, count in parts.items():
        if count > 1:
            for n, info in enumerate(s for s in out if s.series_uid == uid):
                info.part = n + 1
    for uid, count in parts.items():
        members = [s for s in out if s.series_uid == uid]
        if count > 1 and all(len(s.frames) <= 3 for s in members):
            for info in members:  # tri-plane pilot or AP + lateral scout: a few images per plane
                info.localizer = True
    for info in out:
        if not info.localizer and len(info.frames) <= 3 and any(
            s.series_uid == info.series_uid and s is not info and len(s.frames) > len(info.frames) for s in out
        ):
            info.localizer = True  # a few odd-orientation images inside a larger series
        try:
            geometry = check_geometry(info.frames, series=info.series_uid)
            notes = ([geometry.problem] if geometry.problem else []) + geometry.warnings
            info.geometry = "; ".join(notes) if notes else "ok"
        except InputError as exc:
            info.geometry = str(exc).split(": ", 1)[-1]
    out.sort(key=lambda s: (s.localizer, s.series_number if s.series_number is not None else 1 << 30, s.series_uid, s.part or 0))
    return out


def drop_duplicate_instances(frames: Sequence[FrameHeader]) -> tuple[list[FrameHeader], list[str]]:
    """Frames without repeats of the same SOP instance (and frame), and a warning if any were dropped.

    Copies of one file (an export merged twice, ``0001.dcm`` beside ``0001 (1).dcm``) carry the
    same SOPInstanceUID: the first file (in path order) is kept.
    """
    kept: list[FrameHeader] = []
    first_of: dict[tuple[str, int | None], FrameHeader] = {}
    dropped: list[tuple[FrameHeader, FrameHeader]] = []
    for f in frames:
        key = (f.sop_instance_uid or f"file:{f.path}", f.frame)
        if key in first_of and first_of[key].path != f.path:
            dropped.append((f, first_of[key]))
            continue
        first_of.setdefault(key, f)
        kept.append(f)
    if not dropped:
        return kept, []
    files = {str(d.path) for d, _ in dropped}
    dup, orig = dropped[0]
    warning = (f"dropped {len(files)} duplicate file(s) holding SOP instances already read "
               f"(e.g. {dup.path} repeats {orig.path})")
    log.warning(warning)
    return kept, [warning]


def main_stack(series: Sequence[SeriesInfo]) -> tuple[SeriesInfo | None, str | None]:
    """The image stack to use among the parts of one SeriesInstanceUID, and a note when one was picked.

    Localizer parts are ignored; of the others the one with the most images wins (ties: the
    first in :func:`group_series` order). Returns (None, None) when only localizers remain.
    """
    real = [s for s in series if not s.localizer]
    if not real:
        return None, None
    best = max(real, key=lambda s: len(s.frames))  # max keeps the first of equal counts
    if len(real) == 1:
        return best, None
    others = ", ".join(f"{s.images} images {s.orientation} {s.size[0]}x{s.size[1]}" for s in real if s is not best)
    note = (f"series {best.series_uid} holds {len(real)} stacks with different orientation or image size; "
            f"using the main one ({best.images} images {best.orientation} {best.size[0]}x{best.size[1]}), "
            f"ignoring {others}")
    return best, note


__all__ = [
    "NON_IMAGE_SOP_CLASSES",
    "is_non_image",
    "sop_class_of",
    "drop_duplicate_instances",
    "has_dicm_marker",
    "DICOM_SUFFIXES",
    "main_stack",
    "FrameHeader",
    "SeriesInfo",
    "Scan",
    "scan",
    "iter_files",
    "is_regular_file",
    "group_series",
    "is_dicom_file",
    "read_dataset_header",
    "frames_from_dataset",
]
