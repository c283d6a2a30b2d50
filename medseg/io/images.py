"""Ordinary images and label masks with Pillow: PNG, JPEG (images only), TIFF, BMP -> numpy.

Images are ``[H, W, C]`` arrays (row, column, channel): gray images keep their bit depth
with ``C = 1``; everything else (RGB, RGBA, palette, CMYK, YCbCr, ...) becomes RGB ``uint8``
with ``C = 3`` (alpha is dropped). Masks are ``[H, W]`` integer label maps: gray
(``L``, 16-bit, 32-bit integer), bilevel and palette images, where a palette PNG keeps
its palette indices as labels (the colours are ignored). Colour masks are refused
(convert them to indices first), and so are JPEG masks (lossy compression changes labels).

Every problem raises :class:`medseg.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
_GRAY_MODES = ("L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_MASK_MODES = ("1", "L", "P", "I;16", "I;16L", "I;16B", "I;16N", "I")


def _open(path: str | os.PathLike[str], what: str) -> Any:
    """Open and fully decode ``path`` with Pillow (truncated or corrupt files raise here)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such {what} file")
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"{p}: unsupported {what} file type {p.suffix!r}; use {', '.join(IMAGE_SUFFIXES)}")
    try:
        img = Image.open(p)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{p}: cannot read this {what} file ({exc})") from exc
    if getattr(img, "n_frames", 1) > 1:
        raise InputError(f"{p}: holds {img.n_frames} frames; expected a single 2D {what}")
    return img


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image as ``[H, W, C]``: gray ``C = 1`` (bit depth kept), otherwise RGB ``uint8`` (``C = 3``).

    Raises:
        InputError: missing, unsupported or unreadable file (the message names it).
    """
    img = _open(path, "image")
    if img.mode in _GRAY_MODES:
        arr = np.asarray(img)
        if img.mode.startswith("I;16"):
            arr = arr.astype(np.uint16)
        return arr[..., None]
    if img.mode in ("1", "LA", "La"):
        return np.asarray(img.convert("L"))[..., None]
    return np.asarray(img.convert("RGB"))


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """A label mask as an ``[H, W]`` integer array (``uint8``, ``uint16`` or ``int32``).

    Palette PNGs give their palette indices. Bilevel images give 0/1.

    Raises:
        InputError: missing or unreadable file, a JPEG, a colour (RGB/RGBA/...) mask, or
            negative labels (the message names the file).
    """
    p = Path(path)
    if p.suffix.lower() in (".jpg", ".jpeg"):
        raise InputError(f"{p}: JPEG is lossy and changes label values; save masks as PNG, TIFF or BMP")
    img = _open(p, "mask")
    if img.mode not in _MASK_MODES:
        raise InputError(
            f"{p}: a {img.mode} (colour) image is not a label mask; save labels as a single-channel "
            "or palette (indexed) PNG whose pixel values are class indices"
        )
    arr = np.asarray(img)
    if img.mode == "1":
        return arr.astype(np.uint8)
    if img.mode.startswith("I;16"):
        return arr.astype(np.uint16)
    if img.mode == "I":
        arr = arr.astype(np.int32)
        if arr.size and arr.min() < 0:
            raise InputError(f"{p}: mask holds negative labels (min {int(arr.min())})")
    return arr


def save_mask(path: str | os.PathLike[str], mask: np.ndarray, *, palette: Any = None) -> Path:
    """Write an ``[H, W]`` label mask losslessly (PNG, TIFF or BMP, from the suffix).

    Labels up to 255 are written 8-bit (``L``, or ``P`` with ``palette``: a flat list of up to
    768 RGB values), larger ones 16-bit (PNG/TIFF only). Returns the path.
    """
    from PIL import Image

    from medseg.io.atomic import atomic_path

    p = Path(path)
    if p.suffix.lower() not in MASK_SUFFIXES:
        raise InputError(f"{p}: masks are written as {', '.join(MASK_SUFFIXES)}")
    arr = np.asarray(mask)
    if arr.ndim != 2 or arr.dtype.kind not in "biu":
        raise InputError(f"{p}: expected an [H, W] integer mask, got shape {arr.shape} dtype {arr.dtype}")
    top = int(arr.max()) if arr.size else 0
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise InputError(f"{p}: mask holds negative labels (min {int(arr.min())})")
    if top < 256:
        arr8 = np.ascontiguousarray(arr, dtype=np.uint8)
        img = Image.frombytes("P" if palette is not None else "L", (arr.shape[1], arr.shape[0]), arr8.tobytes())
        if palette is not None:
            flat = [int(v) for v in palette][:768]
            img.putpalette(flat + [0] * (768 - len(flat)))  # a full palette: PNG keeps 8-bit indices
    elif top < 65536 and p.suffix.lower() != ".bmp":
        img = Image.fromarray(arr.astype(np.uint16))
    else:
        raise InputError(f"{p}: label {top} does not fit a {p.suffix} mask")
    with atomic_path(p) as tmp:
        img.save(tmp, format=Image.registered_extensions()[p.suffix.lower()])
    return p


def files_by_stem(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """``{stem: path}`` of the image files (:data:`IMAGE_SUFFIXES`) directly in ``folder``, sorted by name.

    Raises:
        InputError: ``folder`` is not a folder, or two files share a stem (``a.png`` and ``a.jpg``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            if p.stem in files:
                raise InputError(f"{folder}: two files with the stem {p.stem!r}: {files[p.stem].name}, {p.name}")
            files[p.stem] = p
    return files


__all__ = ["read_image", "read_mask", "save_mask", "files_by_stem", "IMAGE_SUFFIXES", "MASK_SUFFIXES"]
