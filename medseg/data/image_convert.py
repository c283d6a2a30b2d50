"""Palette PNGs and RGB colour masks -> class-index masks, counted (``medseg convert-images``).

A :class:`ColourTable` maps exact RGB colours to class indices (``voc``: the PASCAL VOC
colour map; ``cityscapes``: the 19 train classes' colours of cityscapesScripts, the other
labels' colours -> ignore; or a JSON file). :func:`convert_masks` converts a folder:

- palette (``P``) PNGs: without a table their palette indices are the classes; with one, each
  used palette entry's colour is looked up in the table;
- RGB/RGBA masks (alpha dropped): exact colour lookup on packed ``uint32`` RGB, vectorised;
- gray masks are already indices and are copied.

Colours not in the table become ``ignore_index`` and are counted per file (pixels and the most
frequent colours) in the returned :class:`Conversion` and in ``OUT/conversion.json``; nothing is
dropped silently. Every mask is written atomically with :func:`medseg.io.images.save_mask`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.image_labels import CITYSCAPES_LABELS, VOC_CLASSES
from medseg.errors import ConfigError, InputError
from medseg.io.images import files_by_stem, save_mask
from medseg.io.tables import write_json

PALETTES = ("voc", "cityscapes")
TARGETS = ("index",)  # what colour-mask conversion writes; instance datasets: medseg.data.instance_convert
REPORT = "conversion.json"
_TOP_COLOURS = 5  # unknown colours listed per file


@dataclass(frozen=True)
class ColourTable:
    """Exact RGB colour -> class index (an index may be ``ignore_index``: a known colour that is ignored)."""

    name: str
    colours: dict[tuple[int, int, int], int]
    ignore_index: int = 255
    names: dict[int, str] = field(default_factory=dict)

    def lookup(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, unknown)`` of ``rgb`` ``[..., 3]``: unknown colours get ``ignore_index``
        and ``True`` in the boolean ``unknown``.

        Example:
            >>> t = ColourTable("t", {(0, 0, 0): 0, (255, 0, 0): 1})
            >>> idx, unknown = t.lookup(np.array([[[255, 0, 0], [0, 0, 0], [9, 9, 9]]], np.uint8))
            >>> idx.tolist(), int(unknown.sum())
            ([[1, 0, 255]], 1)
        """
        packed = pack_rgb(rgb)
        keys = np.array(sorted(pack_rgb(np.array(c, np.uint8)) for c in self.colours), dtype=np.uint32)
        values = np.array([self.colours[unpack_rgb(int(k))] for k in keys], dtype=np.int64)
        pos = np.minimum(np.searchsorted(keys, packed), len(keys) - 1)
        known = keys[pos] == packed
        return np.where(known, values[pos], self.ignore_index), ~known

    def palette(self) -> list[int]:
        """A flat PNG palette (index -> its first colour) for viewing the written masks."""
        flat, done = [0] * 768, set()
        for colour, index in self.colours.items():
            if index < 256 and index not in done:
                flat[3 * index: 3 * index + 3] = colour
                done.add(index)
        return flat


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """``[..., 3]`` RGB -> ``[...]`` ``uint32`` ``r << 16 | g << 8 | b``."""
    arr = np.asarray(rgb).astype(np.uint32)
    return (arr[..., 0] << 16) | (arr[..., 1] << 8) | arr[..., 2]


def unpack_rgb(value: int) -> tuple[int, int, int]:
    return (value >> 16) & 255, (value >> 8) & 255, value & 255


def voc_colour_map(n: int = 256) -> list[tuple[int, int, int]]:
    """The PASCAL VOC colour map (the devkit's bit-interleaving of the index), entries ``0..n-1``."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


def voc_colour_table() -> ColourTable:
    """The 21 VOC classes' colours and the border colour (224, 224, 192) -> 255."""
    cmap = voc_colour_map()
    colours = {cmap[i]: i for i in range(len(VOC_CLASSES))}
    colours[cmap[255]] = 255
    return ColourTable("voc", colours, 255, dict(enumerate(VOC_CLASSES)))


def cityscapes_colour_table() -> ColourTable:
    """``*_gtFine_color.png`` colours -> the 19 trainIds; the other labels' colours -> 255 (where a
    colour is shared, as pole/polegroup and car/license plate, the train class keeps it)."""
    colours: dict[tuple[int, int, int], int] = {}
    for _, _, train, colour in sorted(CITYSCAPES_LABELS, key=lambda row: not 0 <= row[2] < 255):
        colours.setdefault(colour, train if 0 <= train < 255 else 255)
    names = {t: n for n, _, t, _ in CITYSCAPES_LABELS if 0 <= t < 255}
    return ColourTable("cityscapes", colours, 255, names)


def _colour(value: Any, where: str) -> tuple[int, int, int]:
    if isinstance(value, str) and value.startswith("#") and len(value) == 7:
        try:
            return unpack_rgb(int(value[1:], 16))
        except ValueError:
            pass
    if isinstance(value, (list, tuple)) and len(value) == 3 and \
            all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value):
        return int(value[0]), int(value[1]), int(value[2])
    raise InputError(f"{where}: {value!r} is not a colour ([r, g, b] with 0..255, or \"#rrggbb\")")


def read_colour_table(path: str | os.PathLike[str]) -> ColourTable:
    """A colour table from JSON: ``{"colours": {"0": [0, 0, 0], "1": [[128, 0, 0], "#800001"]},
    "ignore_index": 255, "names": {"0": "background"}}``; ``colours`` may also be a list
    (position = index) and stand alone as the whole file. An index may list several colours.

    Raises:
        InputError: unreadable file, a bad colour, or one colour given to two indices (named).
    """
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read the colour table ({exc})") from exc
    meta = raw if isinstance(raw, dict) and ("colours" in raw or "colors" in raw) else {}
    body = meta.get("colours", meta.get("colors")) if meta else raw
    ignore = meta.get("ignore_index", 255)
    if isinstance(body, list):
        entries = list(enumerate(body))
    elif isinstance(body, dict):
        entries = list(body.items())
    else:
        entries = []
    if not entries or not isinstance(ignore, int) or isinstance(ignore, bool):
        raise InputError(f"{p}: expected {{\"colours\": {{index: [r, g, b]}}, \"ignore_index\": 255}} "
                         "or a list of colours")
    colours: dict[tuple[int, int, int], int] = {}
    for key, value in entries:
        try:
            index = int(key)
        except ValueError as exc:
            raise InputError(f"{p}: {key!r} is not a class index") from exc
        if not 0 <= index <= 65535:
            raise InputError(f"{p}: class index {index} is outside 0..65535")
        many = value if isinstance(value, list) and value and isinstance(value[0], (list, str)) else [value]
        for one in many:
            colour = _colour(one, f"{p}: index {index}")
            if colours.setdefault(colour, index) != index:
                raise InputError(f"{p}: colour {list(colour)} is given to indices {colours[colour]} and {index}")
    names = meta.get("names", {})
    try:
        named = dict(enumerate(names)) if isinstance(names, list) else {int(k): str(v) for k, v in names.items()}
    except (AttributeError, ValueError) as exc:
        raise InputError(f"{p}: names: expected a list or {{index: name}}, got {names!r}") from exc
    return ColourTable(p.name, colours, ignore, named)


def colour_table(spec: str | os.PathLike[str]) -> ColourTable:
    """``"voc"``, ``"cityscapes"`` or a JSON file (:func:`read_colour_table`)."""
    if str(spec) == "voc":
        return voc_colour_table()
    if str(spec) == "cityscapes":
        return cityscapes_colour_table()
    if not Path(spec).is_file():
        raise ConfigError(f"--palette: {spec!r} is neither {' nor '.join(PALETTES)} nor a JSON file")
    return read_colour_table(spec)


@dataclass
class FileCount:
    """One converted file: its mode, pixels, and the pixels (and colours) not in the table."""

    input: str
    output: str
    mode: str
    pixels: int
    unknown_pixels: int = 0
    unknown_colours: list[list[int]] = field(default_factory=list)  # [r, g, b, pixels], most frequent first


@dataclass
class Conversion:
    """What :func:`convert_masks` did: per-file counts and pixels per class (``ignore_index`` included)."""

    palette: str | None
    ignore_index: int
    files: list[FileCount]
    pixels_per_class: dict[int, int]
    names: dict[int, str]
    report: Path

    @property
    def unknown_pixels(self) -> int:
        return sum(f.unknown_pixels for f in self.files)


def _unknown_colours(rgb: np.ndarray, unknown: np.ndarray) -> list[list[int]]:
    values, counts = np.unique(pack_rgb(rgb[unknown]), return_counts=True)
    top = np.argsort(-counts, kind="stable")[:_TOP_COLOURS]
    return [[*unpack_rgb(int(values[i])), int(counts[i])] for i in top]


def convert_mask(path: Path, table: ColourTable | None) -> tuple[np.ndarray, str, np.ndarray | None, np.ndarray]:
    """``(index mask, PIL mode, rgb or None, unknown)`` of one mask file (see the module docstring)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode, palette = img.mode, img.getpalette() if img.mode == "P" else None
            arr = np.asarray(img.convert("RGB") if mode in ("RGBA", "RGBX") else img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: cannot read this mask ({exc})") from exc
    if mode in ("RGB", "RGBA", "RGBX"):
        if table is None:
            raise InputError(f"{path}: an {mode} colour mask; give --palette voc|cityscapes|FILE.json to map colours")
        index, unknown = table.lookup(arr)
        return index, mode, arr, unknown
    if mode == "P" and table is not None:
        flat = np.zeros(768, np.uint8)
        flat[: len(palette or [])] = (palette or [])[:768]
        entry_index, entry_unknown = table.lookup(flat.reshape(256, 3))
        return entry_index[arr], mode, flat.reshape(256, 3)[arr], entry_unknown[arr]
    if mode not in ("P", "L", "1", "I;16", "I;16L", "I;16B", "I"):
        raise InputError(f"{path}: a {mode} image is not a mask convert-images can read (palette, RGB or gray)")
    index = arr.astype(np.int64)
    return index, mode, None, np.zeros(index.shape, bool)


def convert_masks(input_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str], *,
                  palette: str | os.PathLike[str] | None = None, to: str = "index") -> Conversion:
    """Convert every mask in ``input_dir`` to ``output_dir/<stem>.png`` index masks; write ``conversion.json``.

    Raises:
        InputError: no masks, a JPEG, an unreadable file, an RGB mask without ``palette`` (named).
        ConfigError: an unknown ``palette`` or ``to``.
    """
    if to not in TARGETS:
        raise ConfigError(f"--to: unknown target {to!r}; known: {', '.join(TARGETS)}")
    table = colour_table(palette) if palette is not None else None
    files = files_by_stem(input_dir)
    if not files:
        raise InputError(f"{input_dir}: no mask files (.png, .tif, .bmp)")
    lossy = [p.name for p in files.values() if p.suffix.lower() in (".jpg", ".jpeg")]
    if lossy:
        raise InputError(f"{input_dir}: JPEG masks {', '.join(lossy[:5])}: lossy compression changes colours; "
                         "use the original PNGs")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ignore = table.ignore_index if table else 255
    totals: Counter[int] = Counter()
    counts: list[FileCount] = []
    for stem, path in files.items():
        index, mode, rgb, unknown = convert_mask(path, table)
        target = out / f"{stem}.png"
        save_mask(target, index, palette=table.palette() if table and index.max(initial=0) < 256 else None)
        values, n = np.unique(index, return_counts=True)
        totals.update({int(v): int(c) for v, c in zip(values, n)})
        count = FileCount(path.name, target.name, mode, int(index.size), int(unknown.sum()))
        if count.unknown_pixels and rgb is not None:
            count.unknown_colours = _unknown_colours(rgb, unknown)
        counts.append(count)
    names = dict(table.names) if table else {}
    result = Conversion(table.name if table else None, ignore, counts, dict(sorted(totals.items())), names,
                        out / REPORT)
    write_json(result.report, _report(result))
    return result


def _report(c: Conversion) -> dict[str, Any]:
    return {
        "palette": c.palette, "to": "index", "ignore_index": c.ignore_index, "files": len(c.files),
        "unknown_pixels": c.unknown_pixels,
        "pixels_per_class": {str(k): v for k, v in c.pixels_per_class.items()},
        "names": {str(k): v for k, v in c.names.items()},
        "per_file": [vars(f) for f in c.files],
    }


__all__ = [
    "PALETTES", "TARGETS", "REPORT", "ColourTable", "FileCount", "Conversion", "pack_rgb", "unpack_rgb",
    "voc_colour_map", "voc_colour_table", "cityscapes_colour_table", "read_colour_table", "colour_table",
    "convert_mask", "convert_masks",
]
