"""Ordinary-image semantic segmentation datasets in their published layouts, for ``medseg train``.

:func:`load_image_dataset` reads a folder laid out as one of :data:`IMAGE_FORMATS` (detected
when not given; see :mod:`medseg.data.image_layouts` for the files read) into an
:class:`ImageDataset`: its :class:`ImageItem` list (stem, image, mask, split) and a
:class:`LabelSpec` (the layout's defaults with the config's ``labels:`` block over them).
:func:`validate_image_dataset` checks every mask before training and raises one
:class:`~medseg.errors.InputError` listing every bad file; :func:`read_item` gives the image
``[H, W, C]`` and the mask as train indices ``[H, W]`` ``int64``.

No torch here: numpy and Pillow only.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.image_labels import LabelSpec, label_spec
from medseg.data.image_layouts import (
    FORMAT_HINTS, IMAGE_FORMATS, READERS, SPLITS, ImageItem, check_format, detect_image_format,
)
from medseg.errors import ConfigError, InputError
from medseg.io.images import read_image, read_mask

log = logging.getLogger(__name__)

MAX_LISTED = 20  # problems listed in one validation error; the rest are counted
PROGRESS_MIN_IMAGES = 20  # a progress bar is shown from this many items on (progress=None)
COLOUR_MODES = ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "LA", "PA")


@dataclass
class ImageDataset:
    """An ordinary-image dataset.

    Attributes:
        root: the dataset folder (the layout's own top folder, e.g. ``VOCdevkit/VOC2012``).
        format: one of :data:`IMAGE_FORMATS`.
        labels: raw mask value -> train index, class names, ignore index.
        items: every image, sorted by split then as the layout lists them.
        splits_from: what said which items are val (``"splits.json"``, ``"folders"``,
            ``"ImageSets/Segmentation"``), ``None`` when the layout has no split.
    """

    root: Path
    format: str
    labels: LabelSpec
    items: list[ImageItem]
    splits_from: str | None = None

    def split(self, name: str) -> list[ImageItem]:
        """The items of split ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; known: {', '.join(SPLITS)}")
        return [it for it in self.items if it.split == name]

    @property
    def has_splits(self) -> bool:
        """True when the layout said which items are val (``splits.json``, ``ImageSets``, folders)."""
        return self.splits_from is not None


def is_image_dataset(root: str | os.PathLike[str]) -> bool:
    """True when ``root`` is a folder in an ordinary-image layout (:func:`detect_image_format` succeeds).

    False for medseg's medical datasets (nnU-Net/MSD folders with ``dataset.json``, manifest files).
    """
    path = Path(root)
    if not path.is_dir() or ((path / "dataset.json").is_file() and (path / "imagesTr").is_dir()):
        return False
    try:
        detect_image_format(path)
    except InputError:
        return False
    return True


def load_image_dataset(root: str | os.PathLike[str], *, format: str | None = None,
                       labels: Mapping[str, Any] | LabelSpec | None = None) -> ImageDataset:
    """Read the dataset folder ``root`` (layout ``format``, detected when ``None``).

    ``labels``: a config ``labels:`` block (its values override the layout's defaults) or a
    ready :class:`LabelSpec` (used as it is).

    Raises:
        InputError: no or a different layout, unreadable layout files, two images with one stem,
            or no class names (an ``image_folder`` without ``classes.json`` and no ``labels.names``).
        ConfigError: a bad ``labels`` block (names the key).
    """
    path = Path(root)
    fmt = format or detect_image_format(path)
    check_format(path, fmt)
    layout = READERS[fmt](path)
    if isinstance(labels, LabelSpec):
        spec = labels
    elif layout.labels is None and not (labels or {}).get("names"):
        raise InputError(f"{path}: no classes.json; write the class names there (a list, index = mask value) "
                         "or give them as labels.names")
    else:
        spec = label_spec(labels, defaults=layout.labels)
    if not layout.items:
        raise InputError(f"{layout.root}: a {fmt} layout without any image")
    duplicates = _duplicate_stems(layout.items)
    if duplicates:
        raise InputError(f"{layout.root}: {len(duplicates)} stem(s) name two images: " + "; ".join(duplicates[:5]))
    order = {s: i for i, s in enumerate(SPLITS)}
    items = sorted(layout.items, key=lambda it: order[it.split])
    log.info("%s: %s layout, %d images (%s), %d classes", layout.root, fmt, len(items),
             ", ".join(f"{s} {sum(it.split == s for it in items)}" for s in SPLITS), spec.num_classes)
    return ImageDataset(layout.root, fmt, spec, items, layout.splits_from)


def _duplicate_stems(items: list[ImageItem]) -> list[str]:
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for it in items:
        by_stem[it.stem].append(it.image)
    return [f"{stem}: {', '.join(map(str, paths))}" for stem, paths in by_stem.items() if len(paths) > 1]


def _open_header(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.mode, img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: cannot read this file ({exc})") from exc


def _colour_hint(path: Path, mode: str) -> str:
    return (f"{path}: a colour ({mode}) mask where class indices are expected; run medseg convert-images "
            "-i MASKS -o OUT --palette voc|cityscapes|FILE.json to turn colours into indices")


def read_raw_mask(path: Path) -> np.ndarray:
    """The mask's raw values ``[H, W]``; a colour mask is refused with the ``convert-images`` hint."""
    mode, _ = _open_header(path)
    if mode in COLOUR_MODES:
        raise InputError(_colour_hint(path, mode))
    return read_mask(path)


def read_item(item: ImageItem, labels: LabelSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """``(image [H, W, C], mask [H, W] int64 train indices or None)`` of ``item``.

    The image is as :func:`medseg.io.images.read_image` gives it (``uint8``/``uint16``, alpha dropped).

    Raises:
        InputError: unreadable files, a colour mask, mask values outside ``labels``, or image and
            mask sizes that differ (the message names the file).
    """
    image = read_image(item.image)
    if item.mask is None:
        return image, None
    raw = read_raw_mask(item.mask)
    if raw.shape != image.shape[:2]:
        raise InputError(f"{item.mask}: mask is {raw.shape[1]}x{raw.shape[0]} px but image {item.image.name} "
                         f"is {image.shape[1]}x{image.shape[0]}")
    try:
        return image, labels.apply(raw)
    except InputError as exc:
        raise InputError(f"{item.mask}: {exc}") from exc


def _check_item(item: ImageItem, labels: LabelSpec, fmt: str) -> list[str]:
    """Problems of one item, each a line naming the file (image size read from the header only)."""
    if item.mask is None:
        if item.split == "test":
            return []
        return [f"{item.image}: no mask (expected {FORMAT_HINTS[fmt][1]})"]
    try:
        _, image_size = _open_header(item.image)
        mode, mask_size = _open_header(item.mask)
        if mode in COLOUR_MODES:
            return [_colour_hint(item.mask, mode)]
        problems = []
        if image_size != mask_size:
            problems.append(f"{item.mask}: mask is {mask_size[0]}x{mask_size[1]} px but image {item.image.name} "
                            f"is {image_size[0]}x{image_size[1]}")
        bad = labels.bad_values(read_mask(item.mask))
        if bad:
            shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
            problems.append(f"{item.mask}: values {shown} {labels.describe_bad()}")
        return problems
    except InputError as exc:
        return [str(exc)]


def validate_image_dataset(ds: ImageDataset, *, progress: bool | None = None) -> None:
    """Read every mask (and every image's size from its header) and raise one error listing every bad file.

    Checks: mask values outside the labels (not ignore), train/val images without a mask, colour
    masks where indices are expected, image and mask sizes that differ, two images with one stem.
    ``progress``: a progress bar on stderr (``None``: from :data:`PROGRESS_MIN_IMAGES` items on).

    Raises:
        InputError: one message, one line per problem (the first :data:`MAX_LISTED`, then a count).
    """
    from rich.console import Console
    from rich.progress import Progress

    problems = [f"two images with the stem {d}" for d in _duplicate_stems(ds.items)]
    show = len(ds.items) >= PROGRESS_MIN_IMAGES if progress is None else progress
    with Progress(console=Console(stderr=True), transient=True, disable=not show) as bar, \
            ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        task = bar.add_task("checking masks", total=len(ds.items))
        for found in pool.map(lambda it: _check_item(it, ds.labels, ds.format), ds.items):
            problems += found
            bar.advance(task)
    if problems:
        shown = problems[:MAX_LISTED] + ([f"... and {len(problems) - MAX_LISTED} more"]
                                         if len(problems) > MAX_LISTED else [])
        raise InputError(f"{ds.root}: {len(problems)} problem(s) in the {ds.format} dataset of {len(ds.items)} "
                         "images:\n  " + "\n  ".join(shown))


__all__ = [
    "IMAGE_FORMATS", "LabelSpec", "label_spec", "ImageItem", "ImageDataset", "detect_image_format",
    "is_image_dataset", "load_image_dataset", "read_item", "read_raw_mask", "validate_image_dataset",
]
