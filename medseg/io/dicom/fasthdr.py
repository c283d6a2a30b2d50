"""A minimal reader for the header of plain single-frame DICOM images.

pydicom's full header parse is the slowest step of loading a large series (about
1.5 ms a file). This reader walks the top-level elements of a Part-10 file with a
little-endian dataset (explicit or implicit VR), keeps the ~25 elements medseg needs
as raw bytes and records where PixelData starts. It hands everything it does not
handle back to pydicom (returns None): files without the ``DICM`` preamble, big-endian
or deflated datasets, multi-frame files, functional groups, RT dose grids, Siemens
mosaics, float pixel data, a Modality LUT Sequence, anything malformed or longer than the bytes it read.
The test suite checks that it yields the same headers as the pydicom path.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

IMPLICIT_LE = "1.2.840.10008.1.2"
_BIG_OR_DEFLATED = ("1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99")
_LONG_VRS = {b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"SQ", b"UC", b"UR", b"UT", b"UN", b"SV", b"UV"}
_HEAD_BYTES = 1 << 16

#: tag -> keyword of the elements kept (all string VRs or US).
NEEDED: dict[int, str] = {
    0x00080008: "ImageType",
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x00080060: "Modality",
    0x0008103E: "SeriesDescription",
    0x00180050: "SliceThickness",
    0x00180088: "SpacingBetweenSlices",
    0x00181120: "GantryDetectorTilt",
    0x00181164: "ImagerPixelSpacing",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00200011: "SeriesNumber",
    0x00200013: "InstanceNumber",
    0x00200032: "ImagePositionPatient",
    0x00200037: "ImageOrientationPatient",
    0x00200052: "FrameOfReferenceUID",
    0x00280002: "SamplesPerPixel",
    0x00280004: "PhotometricInterpretation",
    0x00280008: "NumberOfFrames",
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280030: "PixelSpacing",
    0x00280100: "BitsAllocated",
    0x00280101: "BitsStored",
    0x00280103: "PixelRepresentation",
    0x00281052: "RescaleIntercept",
    0x00281053: "RescaleSlope",
}
_KEYWORD_TO_TAG = {v: k for k, v in NEEDED.items()}
#: elements whose presence sends the file to pydicom (multi-frame geometry, dose grids, mosaics, float
#: pixels, a Modality LUT Sequence)
_BAIL = {0x52009229, 0x52009230, 0x3004000C, 0x3004000E, 0x0019100A, 0x7FE00008, 0x7FE00009, 0x00283000}
_PIXEL_DATA = 0x7FE00010


class _Bail(Exception):
    """This file is for pydicom."""


class _Value:
    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value


class _FileMeta:
    def __init__(self, ts: str) -> None:
        self.TransferSyntaxUID = ts


class RawHeader:
    """The few elements of one file, as raw bytes, with the tiny part of pydicom's Dataset
    interface that :func:`medseg.io.dicom.series.frames_from_dataset` uses."""

    def __init__(self, values: dict[int, bytes], transfer_syntax: str) -> None:
        self._values = values
        self.file_meta = _FileMeta(transfer_syntax)
        self.original_encoding = (transfer_syntax == IMPLICIT_LE, True)

    def __len__(self) -> int:
        return len(self._values)

    def _tag(self, key: int | str) -> int | None:
        return key if isinstance(key, int) else _KEYWORD_TO_TAG.get(key)

    def __contains__(self, key: int | str) -> bool:
        return self._tag(key) in self._values

    def get_item(self, tag: int) -> _Value:
        return _Value(self._values[tag])

    def get(self, key: int | str, default: Any = None) -> Any:
        tag = self._tag(key)
        if tag not in self._values:
            return default
        return self._values[tag].decode("latin-1").strip(" \x00") or default


def _element(buf: bytes, pos: int, explicit: bool) -> tuple[int, int, int, bytes]:
    """(tag, value start, length, VR) of the element at ``pos``."""
    group, elem = struct.unpack_from("<HH", buf, pos)
    tag = (group << 16) | elem
    if group == 0xFFFE or not explicit:
        (length,) = struct.unpack_from("<I", buf, pos + 4)
        return tag, pos + 8, length, b""
    vr = buf[pos + 4 : pos + 6]
    if vr in _LONG_VRS:
        (length,) = struct.unpack_from("<I", buf, pos + 8)
        return tag, pos + 12, length, vr
    if not vr.isalpha():
        raise _Bail
    (length,) = struct.unpack_from("<H", buf, pos + 6)
    return tag, pos + 8, length, vr


def _skip_sequence(buf: bytes, pos: int, explicit: bool) -> int:
    """Position after the delimiter of an undefined-length sequence starting at ``pos``."""
    while True:
        tag, start, length, _ = _element(buf, pos, explicit)
        if tag == 0xFFFEE0DD:
            return start
        if tag != 0xFFFEE000:
            raise _Bail
        pos = _skip_item(buf, start, explicit) if length == 0xFFFFFFFF else start + length


def _skip_item(buf: bytes, pos: int, explicit: bool) -> int:
    """Position after the delimiter of an undefined-length item starting at ``pos``."""
    while True:
        tag, start, length, vr = _element(buf, pos, explicit)
        if tag == 0xFFFEE00D:
            return start
        if length == 0xFFFFFFFF:
            if vr == b"UN":
                raise _Bail  # implicit VR content inside explicit VR: leave it to pydicom
            pos = _skip_sequence(buf, start, explicit)
        else:
            pos = start + length
        if pos > len(buf):
            raise _Bail


def read_fast_header(path: Path) -> tuple[RawHeader, int | None] | None:
    """The needed elements and the file offset of PixelData (None without pixels), or
    None when the file must be read by pydicom."""
    try:
        with open(path, "rb") as fp:
            buf = fp.read(_HEAD_BYTES)
            whole = len(buf) < _HEAD_BYTES
        if buf[128:132] != b"DICM":
            return None
        return _parse(buf, whole)
    except (_Bail, struct.error, IndexError, UnicodeDecodeError, OSError):
        return None


def _parse(buf: bytes, whole: bool) -> tuple[RawHeader, int | None] | None:
    pos, ts = 132, ""
    while pos + 8 <= len(buf):  # file meta: explicit VR little endian, group 0002
        (group,) = struct.unpack_from("<H", buf, pos)
        if group != 0x0002:
            break
        tag, start, length, _ = _element(buf, pos, True)
        if length == 0xFFFFFFFF:
            raise _Bail
        if tag == 0x00020010:
            ts = buf[start : start + length].decode("ascii").strip(" \x00")
        pos = start + length
    if not ts or ts in _BIG_OR_DEFLATED:
        return None
    explicit = ts != IMPLICIT_LE
    values: dict[int, bytes] = {}
    while pos + 8 <= len(buf):
        tag, start, length, vr = _element(buf, pos, explicit)
        if tag == _PIXEL_DATA:
            return _finish(values, ts), pos
        if tag in _BAIL:
            return None
        if length == 0xFFFFFFFF:
            if vr == b"UN":
                raise _Bail
            pos = _skip_sequence(buf, start, explicit)
            continue
        end = start + length
        if tag in NEEDED:
            if end > len(buf):
                raise _Bail
            values[tag] = buf[start:end]
        pos = end
    if not whole or pos != len(buf):
        return None  # header longer than what was read, or a broken element: pydicom decides
    return _finish(values, ts), None


def _finish(values: dict[int, bytes], ts: str) -> RawHeader:
    header = RawHeader(values, ts)
    frames = header.get("NumberOfFrames")
    if frames not in (None, "1") or "MOSAIC" in (header.get("ImageType") or "").upper():
        raise _Bail
    return header


__all__ = ["read_fast_header", "RawHeader", "NEEDED"]
