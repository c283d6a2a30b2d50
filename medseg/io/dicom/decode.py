"""DICOM pixel decoding: raw frames in a ``(slices, rows, columns[, samples])`` stack.

Uncompressed little-endian single-frame files are read straight from the file offset
found while reading headers (no second header parse); everything else goes through
pydicom's pixel handlers (pylibjpeg-openjpeg, pylibjpeg-rle, python-gdcm, pyjpegls, all
permissively licensed), with SimpleITK/GDCM as a last resort. Files are decoded in a
thread pool. Rescale slope/intercept are applied per frame by :func:`rescale`; a Modality
LUT Sequence, where present, is applied by pydicom (``pydicom.pixels.apply_modality_lut``)
while decoding. What pydicom logs during an attempt that medseg recovers from (a plugin
that failed before another succeeded, or before the SimpleITK fallback did) is kept off
the user's stderr: it goes to medseg's debug log, one line per record, without traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
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


#: what :func:`decode_frames` reports when frames come back in output units already
BY_SIMPLEITK = "SimpleITK"
BY_MODALITY_LUT = "Modality LUT Sequence"


class _PydicomLogHold(logging.Filter):
    """Holds back the records pydicom logs in the threads that are inside :func:`_held_pydicom_log`."""

    def __init__(self) -> None:
        super().__init__()
        self.held: dict[int, list[logging.LogRecord]] = {}
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        with self.lock:
            bucket = self.held.get(threading.get_ident())
        if bucket is None:
            return True
        bucket.append(record)
        return False


_HOLD = _PydicomLogHold()
_HOLD_INSTALLED: set[str] = set()


def _install_hold() -> None:
    """Attach the filter to pydicom's loggers (a logger's filters see only its own records)."""
    import pydicom  # noqa: F401  (its loggers exist once it is imported)

    names = ["pydicom", *(n for n in logging.Logger.manager.loggerDict if n.startswith("pydicom."))]
    with _HOLD.lock:
        for name in names:
            if name not in _HOLD_INSTALLED:
                logging.getLogger(name).addFilter(_HOLD)
                _HOLD_INSTALLED.add(name)


@contextlib.contextmanager
def _held_pydicom_log(path: Path) -> Iterator[None]:
    """Run a decoding attempt with pydicom's log records of this thread held back.

    Afterwards records without exception info are handled as usual; tracebacks of failed
    attempts (pydicom logs one per plugin that fails) become one debug line each.
    """
    _install_hold()
    ident = threading.get_ident()
    bucket: list[logging.LogRecord] = []
    with _HOLD.lock:
        _HOLD.held[ident] = bucket
    try:
        yield
    finally:
        with _HOLD.lock:
            del _HOLD.held[ident]
        for record in bucket:
            if record.exc_info or record.levelno >= logging.ERROR:
                log.debug("%s: pydicom: %s", path, record.getMessage().splitlines()[0] if record.getMessage() else "")
            else:
                logging.getLogger(record.name).handle(record)


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


def _decode_file(path: Path, frames: Sequence[FrameHeader],
                 pre: tuple[str, Any] | None = None) -> tuple[dict[int | None, np.ndarray], str | None]:
    """Decode ``frames`` of one file with pydicom (SimpleITK fallback).

    Returns a mapping frame index -> array ``(rows, cols[, 3])`` and, when the values are
    in output units already, what put them there (:data:`BY_SIMPLEITK`: the fallback
    applies slope/intercept itself; :data:`BY_MODALITY_LUT`), else None.
    """
    import pydicom

    first = frames[0]
    ts_name = TRANSFER_SYNTAX_NAMES.get(first.transfer_syntax, first.transfer_syntax or "unknown syntax")
    try:
        ds = pydicom.dcmread(str(path), force=True)
    except Exception as exc:
        raise InputError(f"{path}: cannot read DICOM file ({type(exc).__name__}: {exc})") from exc
    photometric = first.photometric.upper()
    lut = bool(first.extra.get("modality_lut"))
    complete = _check_extent(path, first)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InputError(f"{path}: no complete pixel data element ({ts_name}; truncated or damaged file)")
    with _held_pydicom_log(path):
        try:
            arr = _pixel_array(ds, path, first.transfer_syntax, pre)
            if photometric == "PALETTE COLOR":
                from pydicom.pixels import apply_color_lut

                arr = apply_color_lut(arr, ds)
        except NativeCrash as exc:  # SimpleITK decodes with GDCM too: no fallback after a GDCM crash
            raise InputError(f"{path}: cannot decode pixel data ({ts_name}): {exc}") from exc
        except Exception as exc:  # pydicom raises many types for undecodable data
            reason = " ".join(line.strip() for line in f"{type(exc).__name__}: {exc}".splitlines())[:300]
            if photometric == "PALETTE COLOR":
                raise InputError(f"{path}: cannot apply the palette colour lookup table ({reason})") from exc
            if lut:
                raise InputError(f"{path}: cannot decode pixel data ({ts_name}) to apply its Modality LUT "
                                 f"Sequence: {reason}") from exc
            if not complete:
                raise InputError(f"{path}: cannot decode pixel data ({ts_name}), the pixel data element is cut "
                                 f"off (truncated file): {reason}") from exc
            try:
                fallback = _decode_with_sitk(path, first)
            except NativeCrash as crash:
                raise InputError(f"{path}: cannot decode pixel data ({ts_name}): {reason}; "
                                 f"the SimpleITK fallback failed too: {crash}") from crash
            if fallback is None:
                raise InputError(f"{path}: cannot decode pixel data ({ts_name}): {reason}") from exc
            log.info("%s: decoded with SimpleITK after pydicom failed (%s)", path, reason)
            arr, applied = fallback, BY_SIMPLEITK
        else:
            applied = None
    if lut:
        arr, applied = _apply_modality_lut(path, arr, ds), BY_MODALITY_LUT
    n = first.number_of_frames
    if "mosaic" in first.extra:
        from medseg.io.dicom.mosaic import split_mosaic

        n_images, m, r, c = first.extra["mosaic"]
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2:
            raise InputError(f"{path}: MOSAIC image decodes to shape {arr.shape}, expected 2D")
        if arr.shape[0] < m * r or arr.shape[1] < m * c:
            raise InputError(f"{path}: MOSAIC image decodes to {arr.shape[1]}x{arr.shape[0]} pixels, "
                             f"fewer than {m}x{m} tiles of {c}x{r}")
        tiles = split_mosaic(arr, n_images, m, r, c)
        return {f.frame: tiles[f.frame or 0] for f in frames}, applied
    colour = first.samples_per_pixel > 1 or photometric == "PALETTE COLOR"
    if n == 1 and arr.ndim == (3 if colour else 2):
        arr = arr[None]
    expected = (n, first.rows, first.columns)
    if tuple(arr.shape[:3]) != expected:
        raise InputError(f"{path}: decoded pixel data has shape {arr.shape}, header says {expected}")
    return {f.frame: arr[f.frame or 0] for f in frames}, applied


class NativeCrash(RuntimeError):
    """A native decoder killed the child process it ran in (SIGABRT, SIGSEGV)."""


#: seconds a decode in a child process may take
CHILD_DECODE_TIMEOUT_S = 300.0


def _plugins(transfer_syntax: str) -> tuple[str, ...]:
    try:
        from pydicom.pixels import get_decoder

        return tuple(get_decoder(transfer_syntax).available_plugins)
    except Exception:  # native syntaxes have no decoder plugins; an unknown syntax: pydicom says so later
        return ()


def _pixel_array(ds: Any, path: Path, transfer_syntax: str, pre: tuple[str, Any] | None = None) -> np.ndarray:
    """The pixel array of ``ds``. python-gdcm aborts the whole process on some corrupt JPEG/JPEG-LS
    streams, so where another plugin exists they are tried first (in this process) and GDCM runs only
    after they all failed, in a child process (:class:`NativeCrash` when it dies). Where GDCM is the only
    plugin, ``pre`` is its result from :func:`decode_many_in_child` (one child for a whole series)."""
    plugins = _plugins(transfer_syntax)
    if plugins == ("gdcm",):  # GDCM is the only decoder (JPEG Lossless): always in a child
        if pre is not None:
            status, value = pre
            if status == "ok":
                return value
            if status == "crash":
                raise NativeCrash(value)
            raise RuntimeError(value)
        return decode_in_child(path, "gdcm")
    if "gdcm" not in plugins:
        return _guarded(ds)
    failure: Exception | None = None
    for name in plugins:
        if name == "gdcm":
            continue
        try:
            ds.pixel_array_options(decoding_plugin=name)
            return _guarded(ds)
        except Exception as exc:  # the next plugin may decode it
            failure = exc
            log.debug("%s: %s could not decode the pixel data (%s)", path, name, type(exc).__name__)
    try:
        return decode_in_child(path, "gdcm")
    except NativeCrash:
        raise
    except Exception:
        raise failure if failure is not None else RuntimeError("no decoder plugin succeeded") from None


def _child_decode(path: str, how: str, expected: tuple[int, int, int] | None) -> tuple[str, Any]:
    """The decode run by :func:`decode_in_child`, inside the child process."""
    try:
        if how == "gdcm":
            import pydicom

            ds = pydicom.dcmread(path, force=True)
            ds.pixel_array_options(decoding_plugin="gdcm")
            return "ok", ds.pixel_array
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        reader.ReadImageInformation()
        size = tuple(reader.GetSize())
        size = size if len(size) > 2 else (*size, 1)
        if expected is not None and size[:3] != tuple(expected):  # it would pad missing frames with zeros
            return "error", f"SimpleITK reads size {size}, the header says {tuple(expected)}"
        img = reader.Execute()
        return "ok", (sitk.GetArrayFromImage(img), img.GetNumberOfComponentsPerPixel())
    except Exception as exc:
        return "error", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def _child_decode_many(paths: list[str]) -> dict[str, tuple[str, Any]]:
    return {p: _child_decode(p, "gdcm", None) for p in paths}


def decode_many_in_child(paths: Sequence[Path]) -> dict[Path, tuple[str, Any]]:
    """GDCM decodes of ``paths`` in one child process: path -> ("ok", array) / ("error", message) /
    ("crash", message). When the child dies, each file is decoded in a child of its own, so that the
    crash is put on the file that caused it."""
    import pickle
    import subprocess
    import sys

    code = ("import pickle, sys; from medseg.io.dicom.decode import _child_decode_many; "
            "sys.stdout.buffer.write(pickle.dumps(_child_decode_many(pickle.loads(sys.stdin.buffer.read()))))")
    try:
        done = subprocess.run([sys.executable, "-c", code], input=pickle.dumps([str(p) for p in paths]),
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              timeout=CHILD_DECODE_TIMEOUT_S * max(1, len(paths)) ** 0.5, check=False)
        if done.returncode == 0 and done.stdout:
            got = pickle.loads(done.stdout)  # our own child's output
            return {p: got[str(p)] for p in paths}
    except subprocess.TimeoutExpired:
        pass
    out: dict[Path, tuple[str, Any]] = {}
    for p in paths:
        try:
            out[p] = ("ok", decode_in_child(p, "gdcm"))
        except NativeCrash as exc:
            out[p] = ("crash", str(exc))
        except RuntimeError as exc:
            out[p] = ("error", str(exc))
    return out


_CHILD_CODE = (
    "import pickle, sys; from medseg.io.dicom.decode import _child_decode; "
    "args = pickle.loads(sys.stdin.buffer.read()); sys.stdout.buffer.write(pickle.dumps(_child_decode(*args)))"
)


def decode_in_child(path: Path, how: str, expected: tuple[int, int, int] | None = None) -> Any:
    """Decode ``path`` with GDCM (``how="gdcm"``, via pydicom) or SimpleITK (``"sitk"``) in a child
    process, so that a native abort or segfault ends the child, not the caller. With ``expected``
    (columns, rows, frames), SimpleITK decodes only when its reading of the header gives that size.

    Raises:
        NativeCrash: the child died (the signal is named) or ran past :data:`CHILD_DECODE_TIMEOUT_S`.
        RuntimeError: the decoder reported an error.
    """
    import pickle
    import signal
    import subprocess
    import sys

    payload = pickle.dumps((str(path), how, tuple(expected) if expected else None))
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD_CODE], input=payload, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=CHILD_DECODE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise NativeCrash(f"the {how} decoder ran past {CHILD_DECODE_TIMEOUT_S:g} s") from None
    if done.returncode != 0 or not done.stdout:
        code = done.returncode
        what = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        raise NativeCrash(f"the {how} decoder crashed ({what})")
    status, value = pickle.loads(done.stdout)  # our own child's output
    if status != "ok":
        raise RuntimeError(value)
    return value


def _guarded(ds: Any) -> np.ndarray:
    """``ds.pixel_array``; a native decoder's panic (pylibjpeg-rle raises a Rust ``PanicException``,
    a BaseException) becomes a ``RuntimeError`` so the callers' ``except Exception`` sees it."""
    try:
        return ds.pixel_array
    except Exception:
        raise
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise RuntimeError(f"decoder panicked ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc


def _check_extent(path: Path, first: FrameHeader) -> bool:
    """Refuse, before decoding, frames the pixel data cannot hold; True when the element is complete."""
    from medseg.io.dicom.extent import check_claimed_frames, pixel_extent

    extent = None
    if first.pixel_offset is not None:
        ts = first.transfer_syntax
        try:
            extent = pixel_extent(path, first.pixel_offset, explicit_vr=ts != IMPLICIT_LE,
                                  big_endian=ts == "1.2.840.10008.1.2.2")
        except OSError as exc:
            raise InputError(f"{path}: cannot read file ({exc.strerror or type(exc).__name__})") from exc
    n = 1 if "mosaic" in first.extra else first.number_of_frames
    rows, cols = (first.rows, first.columns)
    if "mosaic" in first.extra:
        _, m, r, c = first.extra["mosaic"]
        rows, cols = m * r, m * c
    check_claimed_frames(path, extent, frames=n, rows=rows, columns=cols, samples=first.samples_per_pixel,
                         bits_allocated=int(first.extra.get("bits_allocated", 16)), photometric=first.photometric)
    return extent is None or extent.complete


def _apply_modality_lut(path: Path, arr: np.ndarray, ds: Any) -> np.ndarray:
    """Stored values -> output units through the Modality LUT Sequence (pydicom's implementation)."""
    from pydicom.pixels import apply_modality_lut

    try:
        return apply_modality_lut(arr, ds)
    except Exception as exc:  # a malformed LUT descriptor or data
        raise InputError(f"{path}: cannot apply the Modality LUT Sequence ({type(exc).__name__}: {exc})") from exc


def _decode_with_sitk(path: Path, first: FrameHeader) -> np.ndarray | None:
    """The frames of ``path`` decoded by SimpleITK/GDCM in a child process, or None; only when SimpleITK's
    reading of the header gives exactly the header's size (it pads missing frames with zeros otherwise).

    Raises:
        NativeCrash: GDCM inside SimpleITK killed the child.
    """
    expected = None if "mosaic" in first.extra else (first.columns, first.rows, first.number_of_frames)
    try:
        arr, components = decode_in_child(path, "sitk", expected)  # GDCM inside SimpleITK can abort too
    except NativeCrash:
        raise
    except Exception:  # SimpleITK raises RuntimeError with GDCM's message
        return None
    if arr.ndim == 2 or (arr.ndim == 3 and components > 1):
        arr = arr[None]
    return arr


def decode_frames(frames: Sequence[FrameHeader]) -> tuple[np.ndarray, str | None]:
    """Decode ``frames`` (same size) into a ``(n, rows, cols)`` or ``(n, rows, cols, 3)`` stack.

    Returns the raw stored values (no rescale) and None; or, when frames came back in
    output units already (the SimpleITK fallback, a Modality LUT Sequence), the stack in
    output units and what converted them (:data:`BY_SIMPLEITK` or :data:`BY_MODALITY_LUT`).
    When only some frames were converted, every other one is rescaled here and the
    stack is float32.

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
        and not f.extra.get("modality_lut")
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
    applied_to: dict[int, str] = {}

    gdcm_only = [p for p, ks in by_file.items() if _plugins(frames[ks[0]].transfer_syntax) == ("gdcm",)]
    pre = decode_many_in_child(gdcm_only) if gdcm_only else {}

    def decode_one(item: tuple[Path, list[int]]) -> tuple[list[int], dict[int | None, np.ndarray], str | None]:
        path, ks = item
        arrays, applied = _decode_file(path, [frames[k] for k in ks], pre.get(path))
        return ks, arrays, applied

    with ThreadPoolExecutor(_workers()) as pool:
        for ks, arrays, applied in pool.map(decode_one, by_file.items()):
            for k in ks:
                results[k] = arrays[frames[k].frame]
                if applied:
                    applied_to[k] = applied
    rescaled_ks = set(applied_to)
    how = sorted(set(applied_to.values()))
    if how == [BY_MODALITY_LUT] and len(rescaled_ks) == n:
        pass  # every frame through its LUT: keep the LUT's integer type
    elif rescaled_ks:  # bring every frame to rescaled float32 values
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
    return stack, " + ".join(how) if how else None


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


__all__ = ["decode_frames", "rescale", "TRANSFER_SYNTAX_NAMES", "BY_SIMPLEITK", "BY_MODALITY_LUT"]
