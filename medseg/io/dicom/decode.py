"""DICOM pixel decoding: raw frames in a ``(slices, rows, columns[, samples])`` stack.

Uncompressed little-endian single-frame files are read straight from the file offset
found while reading headers (no second header parse); everything else goes through
pydicom's pixel handlers (pylibjpeg-openjpeg, pylibjpeg-rle, python-gdcm, pyjpegls, all
permissively licensed), with SimpleITK/GDCM as a last resort. Files are decoded in a
thread pool. Rescale slope/intercept are applied per frame by :func:`rescale`.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.io.dicom.frames import FrameHeader

log = logging.getLogger(__name__)

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
_NATIVE_LE = (EXPLICIT_LE, IMPLICIT_LE)
_LONG_VRS = {b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN", b"UT", b"SQ", b"UC", b"UR"}

TRANSFER_SYNTAX_NAMES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.5": "RLE Lossless",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
    "1.2.840.10008.1.2.4.51": "JPEG Extended",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.4.201": "HTJ2K Lossless",
    "1.2.840.10008.1.2.4.203": "HTJ2K",
}


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _native_dtype(f: FrameHeader) -> np.dtype | None:
    bits = f.extra.get("bits_allocated", 16)
    if (
        f.samples_per_pixel != 1
        or f.extra.get("float_pixels")
        or bits not in (8, 16, 32)
        or f.photometric.upper() not in ("MONOCHROME1", "MONOCHROME2")
    ):
        return None
    signed = f.extra.get("pixel_representation", 0) == 1
    return np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")


def _read_native(f: FrameHeader, dtype: np.dtype) -> np.ndarray | None:
    """Read an uncompressed little-endian frame from its file offset; None if not applicable."""
    if f.pixel_offset is None:
        return None
    count = f.rows * f.columns
    need = count * dtype.itemsize
    with open(f.path, "rb") as fp:
        fp.seek(f.pixel_offset)
        head = fp.read(12)
        if len(head) < 8:
            raise InputError(f"{f.path}: truncated file: pixel data element is cut off")
        if f.transfer_syntax == EXPLICIT_LE and head[4:6] in _LONG_VRS:
            length, start = int.from_bytes(head[8:12], "little"), 12
        elif f.transfer_syntax == EXPLICIT_LE and head[4:6].isalpha():
            length, start = int.from_bytes(head[6:8], "little"), 8
        else:
            length, start = int.from_bytes(head[4:8], "little"), 8
        if length == 0xFFFFFFFF:
            return None  # encapsulated although the syntax says native: let pydicom judge
        if length < need:
            raise InputError(
                f"{f.path}: pixel data holds {length} bytes, {f.rows}x{f.columns} pixels of "
                f"{dtype.itemsize * 8} bits need {need}"
            )
        fp.seek(f.pixel_offset + start)
        buf = fp.read(need)
    if len(buf) < need:
        raise InputError(f"{f.path}: truncated file: {len(buf)} of {need} pixel bytes present")
    arr = np.frombuffer(buf, dtype=dtype).reshape(f.rows, f.columns)
    stored = f.extra.get("bits_stored", dtype.itemsize * 8)
    if stored < dtype.itemsize * 8:
        arr = _fix_unused_bits(arr, stored, signed=dtype.kind == "i")
    return arr


def _fix_unused_bits(arr: np.ndarray, stored: int, *, signed: bool) -> np.ndarray:
    """Clear (unsigned) or sign-extend (signed) the bits above BitsStored, as pydicom does."""
    bits = arr.dtype.itemsize * 8
    if signed:
        shift = bits - stored
        return (arr << shift) >> shift
    return arr & np.array((1 << stored) - 1, dtype=arr.dtype)


def _decode_file(path: Path, frames: Sequence[FrameHeader]) -> tuple[dict[int | None, np.ndarray], bool]:
    """Decode ``frames`` of one file with pydicom (SimpleITK fallback).

    Returns a mapping frame index -> array ``(rows, cols[, 3])`` and whether the values
    are already rescaled (the SimpleITK fallback applies slope/intercept itself).
    """
    import pydicom

    first = frames[0]
    ts_name = TRANSFER_SYNTAX_NAMES.get(first.transfer_syntax, first.transfer_syntax or "unknown syntax")
    try:
        ds = pydicom.dcmread(str(path), force=True)
    except Exception as exc:
        raise InputError(f"{path}: cannot read DICOM file ({type(exc).__name__}: {exc})") from exc
    photometric = first.photometric.upper()
    try:
        arr = ds.pixel_array
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            arr = apply_color_lut(arr, ds)
    except Exception as exc:  # pydicom raises many types for undecodable data
        reason = f"{type(exc).__name__}: {exc}"
        if photometric == "PALETTE COLOR":
            raise InputError(f"{path}: cannot apply the palette colour lookup table ({reason})") from exc
        fallback = _decode_with_sitk(path, first)
        if fallback is None:
            raise InputError(f"{path}: cannot decode pixel data ({ts_name}): {reason}") from exc
        log.info("%s: decoded with SimpleITK after pydicom failed (%s)", path, reason)
        arr, rescaled = fallback, True
    else:
        rescaled = False
    n = first.number_of_frames
    if "mosaic" in first.extra:
        from medseg.io.dicom.mosaic import split_mosaic

        n_images, m, r, c = first.extra["mosaic"]
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2:
            raise InputError(f"{path}: MOSAIC image decodes to shape {arr.shape}, expected 2D")
        tiles = split_mosaic(arr, n_images, m, r, c)
        return {f.frame: tiles[f.frame or 0] for f in frames}, rescaled
    colour = first.samples_per_pixel > 1 or photometric == "PALETTE COLOR"
    if n == 1 and arr.ndim == (3 if colour else 2):
        arr = arr[None]
    expected = (n, first.rows, first.columns)
    if tuple(arr.shape[:3]) != expected:
        raise InputError(f"{path}: decoded pixel data has shape {arr.shape}, header says {expected}")
    return {f.frame: arr[f.frame or 0] for f in frames}, rescaled


def _decode_with_sitk(path: Path, first: FrameHeader) -> np.ndarray | None:
    try:
        import SimpleITK as sitk

        img = sitk.ReadImage(str(path))
        arr = sitk.GetArrayFromImage(img)
    except Exception:  # SimpleITK raises RuntimeError with GDCM's message
        return None
    if arr.ndim == 2 or (arr.ndim == 3 and img.GetNumberOfComponentsPerPixel() > 1):
        arr = arr[None]
    return arr


def decode_frames(frames: Sequence[FrameHeader]) -> tuple[np.ndarray, bool]:
    """Decode ``frames`` (same size) into a ``(n, rows, cols)`` or ``(n, rows, cols, 3)`` stack.

    Returns the raw stored values (no rescale) and whether any frame came back already
    rescaled from the SimpleITK fallback (then every frame is returned rescaled as float32).

    Raises:
        InputError: a file is truncated or its transfer syntax cannot be decoded.
    """
    n = len(frames)
    first = frames[0]
    native = _native_dtype(first)
    fast = [
        native is not None
        and f.frame is None
        and f.pixel_offset is not None
        and f.transfer_syntax in _NATIVE_LE
        and _native_dtype(f) == native
        for f in frames
    ]
    if native is not None and all(fast):
        out = np.empty((n, first.rows, first.columns), dtype=native)

        def read_one(k: int) -> bool:
            arr = _read_native(frames[k], native)
            if arr is None:
                return False
            out[k] = arr
            return True

        with ThreadPoolExecutor(_workers()) as pool:
            done = list(pool.map(read_one, range(n)))
        if all(done):
            return out, False
    # general path: decode per file (a multi-frame file is decoded once)
    by_file: dict[Path, list[int]] = defaultdict(list)
    for k, f in enumerate(frames):
        by_file[f.path].append(k)
    results: dict[int, np.ndarray] = {}
    rescaled_ks: set[int] = set()

    def decode_one(item: tuple[Path, list[int]]) -> tuple[list[int], dict[int | None, np.ndarray], bool]:
        path, ks = item
        arrays, rescaled = _decode_file(path, [frames[k] for k in ks])
        return ks, arrays, rescaled

    with ThreadPoolExecutor(_workers()) as pool:
        for ks, arrays, rescaled in pool.map(decode_one, by_file.items()):
            for k in ks:
                results[k] = arrays[frames[k].frame]
                if rescaled:
                    rescaled_ks.add(k)
    if rescaled_ks:  # bring every frame to rescaled float32 values
        for k in results:
            a = results[k].astype(np.float32)
            if k not in rescaled_ks and a.ndim == 2:
                a = a * np.float32(frames[k].slope) + np.float32(frames[k].intercept)
            results[k] = a
    shapes = {a.shape for a in results.values()}
    if len(shapes) > 1:
        raise InputError(f"{first.path.parent}: frames decode to different shapes {sorted(shapes)}")
    dtype = np.result_type(*{a.dtype for a in results.values()})
    stack = np.empty((n, *next(iter(shapes))), dtype=dtype)
    for k, a in results.items():
        stack[k] = a
    return stack, bool(rescaled_ks)


def rescale(stack: np.ndarray, frames: Sequence[FrameHeader]) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply each frame's RescaleSlope/Intercept (or DoseGridScaling) to ``stack`` (in place where possible).

    The result is int16 when every slope and intercept is integral and the values fit,
    otherwise float32 (colour stacks are returned unchanged). Returns the array and a
    JSON-compatible record of what was applied.
    """
    slopes = np.array([f.slope for f in frames], dtype=np.float64)
    inters = np.array([f.intercept for f in frames], dtype=np.float64)
    uniform = bool(np.all(slopes == slopes[0]) and np.all(inters == inters[0]))
    record: dict[str, Any] = (
        {"slope": float(slopes[0]), "intercept": float(inters[0])}
        if uniform
        else {"slope": slopes.tolist(), "intercept": inters.tolist()}
    )
    if stack.ndim == 4 or stack.size == 0:
        return stack, record
    identity = uniform and slopes[0] == 1 and inters[0] == 0
    integral = (
        stack.dtype.kind in "iu"
        and np.all(slopes == np.round(slopes))
        and np.all(inters == np.round(inters))
    )
    if integral:
        lo, hi = int(stack.min()), int(stack.max())
        ends = np.concatenate([slopes * lo + inters, slopes * hi + inters])
        if ends.min() >= -32768 and ends.max() <= 32767:
            if identity:
                return stack.astype(np.int16, copy=stack.dtype != np.int16), record
            if lo >= -32768 and hi <= 32767:
                out = stack.astype(np.int16, copy=stack.dtype != np.int16)
            else:
                out = stack.astype(np.int32)
            if uniform:
                if slopes[0] != 1:
                    out *= out.dtype.type(slopes[0])
                out += out.dtype.type(inters[0])
            else:
                out = out * slopes.astype(out.dtype)[:, None, None] + inters.astype(out.dtype)[:, None, None]
            return out.astype(np.int16, copy=False), record
    if identity and stack.dtype.kind in "iu":
        return stack, record  # integral but outside int16 (e.g. uint16 > 32767): keep it exact
    out = stack.astype(np.float32)
    if uniform:
        if slopes[0] != 1:
            out *= np.float32(slopes[0])
        if inters[0] != 0:
            out += np.float32(inters[0])
    else:
        out *= slopes.astype(np.float32)[:, None, None]
        out += inters.astype(np.float32)[:, None, None]
    return out, record


__all__ = ["decode_frames", "rescale", "TRANSFER_SYNTAX_NAMES"]
