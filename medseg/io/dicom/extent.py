"""What the pixel data element of a file really holds, read before any frame header is built.

A header can claim any count (``NumberOfFrames`` 2**31, ``NumberOfImagesInMosaic`` 1e9,
``Rows`` 65535): building one record per claimed frame, or letting a decoder allocate for
the claim, stalls a batch with growing memory. :func:`pixel_extent` walks the pixel element
from its file offset (native: its length; encapsulated: its items up to the sequence
delimiter) without reading the pixel bytes, and :func:`check_claimed_frames` refuses a claim
the data cannot hold. Messages give counts and sizes only, never tag values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import InputError

_ITEM = 0xE000FFFE
_SEQ_DELIM = 0xE0DDFFFE
_LONG_VRS = {b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN"}
#: a frame that decodes to more than this many bytes is refused before decoding (16 GiB)
MAX_DECODED_BYTES = 16 << 30
#: encapsulated items walked at most (a damaged table of tiny items is refused, not walked forever)
MAX_ITEMS = 1 << 20


@dataclass(frozen=True)
class PixelExtent:
    """The pixel data element of one file.

    ``length``: bytes of native pixel data (None when encapsulated); ``fragments``: encapsulated
    items after the offset table (None when native); ``complete``: the element ends within the file
    (the sequence delimiter was found for encapsulated data); ``available``: bytes from the element's
    value to the end of the file.
    """

    length: int | None
    fragments: int | None
    complete: bool
    available: int


def pixel_extent(path: Path, offset: int, *, explicit_vr: bool = True, big_endian: bool = False) -> PixelExtent | None:
    """Read the pixel data element at ``offset`` of ``path``; None when it is not where expected."""
    order = "big" if big_endian else "little"
    size = os.stat(path).st_size
    with open(path, "rb") as fp:
        fp.seek(offset)
        head = fp.read(12)
        if len(head) < 8:
            return PixelExtent(0, None, False, 0)
        if explicit_vr and head[4:6] in _LONG_VRS:
            length, start = int.from_bytes(head[8:12], order), offset + 12
        elif explicit_vr and head[4:6].isalpha():
            length, start = int.from_bytes(head[6:8], order), offset + 8
        else:
            length, start = int.from_bytes(head[4:8], order), offset + 8
        available = max(0, size - start)
        if length != 0xFFFFFFFF:
            return PixelExtent(length, None, start + length <= size, available)
        pos, items = start, 0
        while items <= MAX_ITEMS:
            fp.seek(pos)
            item = fp.read(8)
            if len(item) < 8:
                return PixelExtent(None, max(0, items - 1), False, available)
            tag = int.from_bytes(item[:2], "little") | (int.from_bytes(item[2:4], "little") << 16)
            item_len = int.from_bytes(item[4:8], "little")
            if tag == _SEQ_DELIM:
                return PixelExtent(None, max(0, items - 1), True, available)
            if tag != _ITEM or item_len == 0xFFFFFFFF:
                return PixelExtent(None, max(0, items - 1), False, available)
            items += 1
            pos += 8 + item_len
            if pos > size:
                return PixelExtent(None, max(0, items - 1), False, available)
        return PixelExtent(None, items - 1, False, available)


def frame_bytes(rows: int, columns: int, samples: int, bits_allocated: int, photometric: str = "") -> int:
    """Bytes of one native frame (1-bit data packed; YBR_*_422 stores 2 values a pixel, not 3)."""
    pixels = rows * columns * (2 if samples == 3 and "422" in photometric.upper() else max(1, samples))
    return (pixels + 7) // 8 if bits_allocated == 1 else pixels * max(1, (bits_allocated + 7) // 8)


def check_claimed_frames(
    path: Path, extent: PixelExtent | None, *, frames: int, rows: int, columns: int, samples: int,
    bits_allocated: int, what: str = "NumberOfFrames", photometric: str = "",
) -> None:
    """Refuse a frame count or image size that the pixel data of ``path`` cannot hold.

    Raises:
        InputError: zero or negative sizes, more frames than the native data holds, more frames
            than an encapsulated element has items, or frames that would decode beyond
            :data:`MAX_DECODED_BYTES`.
    """
    if rows <= 0 or columns <= 0:
        raise InputError(f"{path}: image of {columns}x{rows} pixels (Rows and Columns must be positive)")
    if frames <= 0:
        raise InputError(f"{path}: {what} is {frames}; it must be at least 1")
    one = frame_bytes(rows, columns, samples, bits_allocated, photometric)
    if one * frames > MAX_DECODED_BYTES:
        raise InputError(
            f"{path}: {what} {frames} of {columns}x{rows} pixels would decode to {one * frames / 2**30:.3g} GiB "
            f"(more than {MAX_DECODED_BYTES >> 30} GiB): the header is damaged or the image is too large"
        )
    if extent is None:
        return
    if extent.length is not None:
        held = min(extent.length, extent.available)
        if one * frames > held:
            raise InputError(
                f"{path}: {what} {frames} of {columns}x{rows} pixels needs {one * frames} bytes of pixel data, "
                f"the file holds {held}"
                + (" (truncated file)" if not extent.complete else "")
            )
    elif extent.fragments is not None and extent.complete and frames > max(1, extent.fragments):
        raise InputError(
            f"{path}: {what} {frames} but the encapsulated pixel data holds {extent.fragments} fragment(s); "
            "every frame needs at least one"
        )
    elif extent.fragments is not None and not extent.complete and frames > max(1, extent.available // 8):
        raise InputError(f"{path}: {what} {frames} cannot fit in {extent.available} bytes of encapsulated pixel data "
                         "(truncated file)")


__all__ = ["PixelExtent", "pixel_extent", "check_claimed_frames", "frame_bytes", "MAX_DECODED_BYTES"]
