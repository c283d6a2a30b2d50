"""The published folder layouts of ordinary-image segmentation datasets: detection and item lists.

Each reader returns a :class:`Layout` (the items, the layout's default labels, and where its split
came from); :mod:`medseg.data.image_datasets` merges the config's ``labels:`` block over it.

=================  ============================================================================
format             files read
=================  ============================================================================
image_folder       ``images/<stem>.<ext>`` + ``masks/<stem>.png`` (or ``images/{train,val,test}/``
                   + ``masks/{train,val,test}/``), ``classes.json``, optional ``splits.json``
cityscapes         ``leftImg8bit/<split>/<city>/<x>_leftImg8bit.png`` +
                   ``gtFine/<split>/<city>/<x>_gtFine_labelIds.png`` (or ``_labelTrainIds.png``)
ade20k             ``[ADEChallengeData2016/]images/{training,validation}/*.jpg`` +
                   ``annotations/{training,validation}/*.png``, optional ``objectInfo150.{txt,csv}``
voc                ``[VOCdevkit/VOC2012/]JPEGImages/*.jpg`` + ``SegmentationClass/*.png`` +
                   ``ImageSets/Segmentation/{train,val,trainval,test}.txt``
coco_stuff164k     ``images/{train2017,val2017}/*.jpg`` + ``annotations/<split>/<x>_labelTrainIds.png``
                   (mmsegmentation's converted masks) or the raw ``stuffthingmaps`` ``<x>.png``
=================  ============================================================================
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from medseg.data.image_labels import (
    LabelSpec, cityscapes_labels, cityscapes_train_id_labels, coco_stuff_labels, numbered_labels, voc_labels,
)
from medseg.errors import InputError
from medseg.io.images import IMAGE_SUFFIXES, files_by_stem
from medseg.io.tables import read_name_mapping

log = logging.getLogger(__name__)

IMAGE_FORMATS: tuple[str, ...] = ("image_folder", "cityscapes", "ade20k", "voc", "coco_stuff164k")
SPLITS = ("train", "val", "test")

#: format -> (short description for errors, where an item's mask is expected)
FORMAT_HINTS: dict[str, tuple[str, str]] = {
    "image_folder": ("images/ + masks/", "masks/<stem>.png"),
    "cityscapes": ("leftImg8bit/ + gtFine/", "gtFine/<split>/<city>/<x>_gtFine_labelIds.png"),
    "ade20k": ("[ADEChallengeData2016/]images/training + annotations/training",
               "annotations/<split>/<stem>.png"),
    "voc": ("[VOCdevkit/VOC2012/]JPEGImages/ + SegmentationClass/", "SegmentationClass/<stem>.png"),
    "coco_stuff164k": ("images/train2017 + annotations/train2017", "annotations/<split>/<stem>_labelTrainIds.png"),
}


@dataclass(frozen=True)
class ImageItem:
    """One image and its mask.

    Attributes:
        stem: unique id within the dataset (for cityscapes e.g. ``"aachen_000000_000019"``).
        image: the image file.
        mask: the mask file, ``None`` when the layout has none for this image.
        split: ``"train"``, ``"val"`` or ``"test"`` (``"train"`` when the layout has no split information).
    """

    stem: str
    image: Path
    mask: Path | None
    split: str


@dataclass
class Layout:
    """What a layout reader found: items, default labels, and the source of the split (or ``None``)."""

    root: Path
    items: list[ImageItem]
    labels: LabelSpec | None
    splits_from: str | None


# --------------------------------------------------------------------------- detection
def _base(root: Path, *nested: str) -> Path:
    """``root/nested...`` when that folder exists (the archive's own top folder), else ``root``."""
    inner = root.joinpath(*nested)
    return inner if inner.is_dir() else root


def _ade_base(root: Path) -> Path:
    return _base(root, "ADEChallengeData2016")


def _voc_base(root: Path) -> Path:
    for nested in (("VOCdevkit", "VOC2012"), ("VOC2012",)):
        if root.joinpath(*nested).is_dir():
            return root.joinpath(*nested)
    return root


def _any_dir(base: Path, first: str, second: str, subs: Iterable[str]) -> bool:
    return any((base / first / s).is_dir() and (base / second / s).is_dir() for s in subs)


#: format -> test of the layout's folders
_MATCHERS: dict[str, Callable[[Path], bool]] = {
    "image_folder": lambda r: (r / "images").is_dir() and (r / "masks").is_dir(),
    "cityscapes": lambda r: (r / "leftImg8bit").is_dir() and (r / "gtFine").is_dir(),
    "ade20k": lambda r: _any_dir(_ade_base(r), "images", "annotations", ("training", "validation")),
    "voc": lambda r: (_voc_base(r) / "JPEGImages").is_dir() and (_voc_base(r) / "SegmentationClass").is_dir(),
    "coco_stuff164k": lambda r: _any_dir(r, "images", "annotations", ("train2017", "val2017")),
}
#: format -> (folder whose presence suggests it, the folder then missing), for the error's "found:"
_HALVES = {"image_folder": ("images", "masks"), "cityscapes": ("leftImg8bit", "gtFine"),
           "voc": ("JPEGImages", "SegmentationClass")}


def _found(root: Path) -> str:
    """What ``root`` holds, in a few words: half layouts, folders, image files by suffix."""
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    dirs = {p.name for p in entries if p.is_dir()}
    words = [f"{a}/ without {b}/" for a, b in _HALVES.values() if a in dirs and b not in dirs]
    halves = {a for a, _ in _HALVES.values()}
    others = sorted(d for d in dirs if d not in halves)
    if others:
        words.append(", ".join(f"{d}/" for d in others[:6]) + (" ..." if len(others) > 6 else ""))
    suffixes = Counter(p.suffix.lower() for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    words += [f"{n} {s} files" for s, n in sorted(suffixes.items())]
    if (root / "dataset.json").is_file():
        words.append("dataset.json (a medical dataset: train on it without dataset.format)")
    return ", ".join(words) or "nothing"


def detect_image_format(root: str | os.PathLike[str]) -> str:
    """The layout of the dataset folder ``root`` (one of :data:`IMAGE_FORMATS`).

    Raises:
        InputError: ``root`` is not a folder, or no layout matches (one line naming what was found).
    """
    path = Path(root)
    if not path.is_dir():
        raise InputError(f"{path}: no such dataset folder")
    for name, matches in _MATCHERS.items():
        if matches(path):
            return name
    expected = ", ".join(f"{n} ({FORMAT_HINTS[n][0]})" for n in IMAGE_FORMATS)
    raise InputError(f"{path}: no image dataset layout recognised (found: {_found(path)}); expected one of {expected}")


def check_format(root: Path, fmt: str) -> None:
    """Raise :class:`InputError` when ``root`` is not laid out as ``fmt``."""
    if fmt not in IMAGE_FORMATS:
        raise InputError(f"unknown image dataset format {fmt!r}; known: {', '.join(IMAGE_FORMATS)}")
    if not root.is_dir():
        raise InputError(f"{root}: no such dataset folder")
    if not _MATCHERS[fmt](root):
        raise InputError(f"{root}: not a {fmt} layout: expected {FORMAT_HINTS[fmt][0]} (found: {_found(root)})")


# --------------------------------------------------------------------------- readers
def _pair(images: dict[str, Path], masks: dict[str, Path], split: str) -> list[ImageItem]:
    return [ImageItem(stem, path, masks.get(stem), split) for stem, path in images.items()]


def _split_dirs(root: Path, first: str, second: str, names: dict[str, str]) -> list[ImageItem]:
    """Items of ``root/first/<folder>`` paired by stem with ``root/second/<folder>`` ({folder: split})."""
    items: list[ImageItem] = []
    for folder, split in names.items():
        if (root / first / folder).is_dir():
            masks = files_by_stem(root / second / folder) if (root / second / folder).is_dir() else {}
            items += _pair(files_by_stem(root / first / folder), masks, split)
    return items


def _class_names(root: Path) -> LabelSpec | None:
    path = root / "classes.json"
    if not path.is_file():
        return None
    _, names = read_name_mapping(path, noun="class")
    if not names:
        raise InputError(f"{path}: no class names (expected a list of names or {{\"0\": name}})")
    try:
        return LabelSpec(names)
    except Exception as exc:
        raise InputError(f"{path}: {exc}") from exc


def _read_splits_json(path: Path, stems: list[str]) -> dict[str, str]:
    """``{stem: split}`` from ``{"train": [...], "val": [...], "test": [...]}`` (one fold of a list too)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable splits.json ({exc})") from exc
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict) or set(data) - set(SPLITS) or \
            not all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in data.values()):
        raise InputError(f"{path}: expected {{\"train\": [stems], \"val\": [stems], \"test\": [stems]}}")
    known, where = set(stems), {}
    for split, listed in data.items():
        for stem in listed:
            if stem in where:
                raise InputError(f"{path}: {stem!r} is listed in both {where[stem]} and {split}")
            where[stem] = split
    missing = sorted(set(where) - known)
    if missing:
        raise InputError(f"{path}: {len(missing)} listed stem(s) have no image in images/: {', '.join(missing[:10])}")
    unlisted = [s for s in stems if s not in where]
    if unlisted and "train" in data:
        raise InputError(f"{path}: {len(unlisted)} image(s) are in no split: {', '.join(unlisted[:10])}; list them, "
                         "or drop the \"train\" key so that every unlisted image trains")
    return {s: where.get(s, "train") for s in stems}


def read_image_folder(root: Path) -> Layout:
    """``images/`` + ``masks/`` (flat with an optional ``splits.json``, or split subfolders) + ``classes.json``."""
    labels = _class_names(root)
    if any((root / "images" / s).is_dir() for s in SPLITS):
        return Layout(root, _split_dirs(root, "images", "masks", {s: s for s in SPLITS}), labels, "folders")
    images = files_by_stem(root / "images")
    items = _pair(images, files_by_stem(root / "masks"), "train")
    if not (root / "splits.json").is_file():
        return Layout(root, items, labels, None)
    splits = _read_splits_json(root / "splits.json", list(images))
    return Layout(root, [ImageItem(i.stem, i.image, i.mask, splits[i.stem]) for i in items], labels, "splits.json")


def read_cityscapes(root: Path) -> Layout:
    """``leftImg8bit/<split>/<city>/`` with ``gtFine`` labelIds (mapped to the 19 trainIds), or labelTrainIds."""
    found = [p for p in (root / "gtFine").glob("*/*/*_gtFine_label*Ids.png")]
    train_ids = bool(found) and not any(p.name.endswith("_gtFine_labelIds.png") for p in found)
    suffix = "_gtFine_labelTrainIds.png" if train_ids else "_gtFine_labelIds.png"
    items: list[ImageItem] = []
    for split in SPLITS:
        for city in sorted(p for p in (root / "leftImg8bit" / split).glob("*") if p.is_dir()):
            for image in sorted(city.glob("*_leftImg8bit.png")):
                stem = image.name[: -len("_leftImg8bit.png")]
                mask = root / "gtFine" / split / city.name / f"{stem}{suffix}"
                items.append(ImageItem(stem, image, mask if mask.is_file() else None, split))
    return Layout(root, items, cityscapes_train_id_labels() if train_ids else cityscapes_labels(), "folders")


def _ade_names(base: Path) -> LabelSpec:
    """Names from ``objectInfo150.txt``/``.csv`` (first synonym of each), else ``class_1..class_150``."""
    spec = numbered_labels(150, first=1, reduce_zero_label=True)
    for path in (base / "objectInfo150.csv", base / "objectInfo150.txt", base.parent / "objectInfo150.csv",
                 base.parent / "objectInfo150.txt"):
        if path.is_file():
            break
    else:
        log.info("%s: no objectInfo150.txt/.csv; classes are named class_1..class_150", base)
        return spec
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="," if path.suffix == ".csv" else "\t"))
        names = {int(r["Idx"]) - 1: r["Name"].replace(";", ",").split(",")[0].strip() for r in rows}
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: expected columns Idx and Name ({exc})") from exc
    if sorted(names) != list(range(150)) or not all(names.values()):
        raise InputError(f"{path}: expected 150 rows with Idx 1..150 and a Name, got {len(names)}")
    return LabelSpec(names, reduce_zero_label=True)


def read_ade20k(root: Path) -> Layout:
    """ADE20K SceneParsing: ``images/{training,validation}`` + ``annotations/...``, reduce_zero_label."""
    base = _ade_base(root)
    items = _split_dirs(base, "images", "annotations", {"training": "train", "validation": "val"})
    return Layout(base, items, _ade_names(base), "folders")


def _voc_list(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_voc(root: Path) -> Layout:
    """PASCAL VOC 2012: ``ImageSets/Segmentation/*.txt`` lists, ``JPEGImages``, palette ``SegmentationClass``."""
    base = _voc_base(root)
    sets = base / "ImageSets" / "Segmentation"
    lists = {s: _voc_list(sets / f"{s}.txt") for s in SPLITS if (sets / f"{s}.txt").is_file()}
    if not {"train", "val"} & set(lists) and (sets / "trainval.txt").is_file():
        lists["train"] = _voc_list(sets / "trainval.txt")
    images, masks = files_by_stem(base / "JPEGImages"), files_by_stem(base / "SegmentationClass")
    if not lists:
        log.info("%s: no ImageSets/Segmentation lists; %d JPEGImages without a SegmentationClass mask left out",
                 base, len(set(images) - set(masks)))
        items = [ImageItem(s, images[s], masks[s], "train") for s in images if s in masks]
        return Layout(base, items, voc_labels(), None)
    missing = [f"{s}.txt: {stem}" for s, stems in lists.items() for stem in stems if stem not in images]
    if missing:
        raise InputError(f"{sets}: {len(missing)} listed image(s) missing from JPEGImages/: {', '.join(missing[:5])}")
    items = [ImageItem(stem, images[stem], masks.get(stem), s) for s, stems in lists.items() for stem in stems]
    return Layout(base, items, voc_labels(), "ImageSets/Segmentation")


def read_coco_stuff164k(root: Path) -> Layout:
    """COCO-Stuff 164k: ``*_labelTrainIds.png`` (0..170, 255) when present, else raw ``stuffthingmaps`` ids."""
    converted = next((root / "annotations").glob("*2017/*_labelTrainIds.png"), None) is not None
    items: list[ImageItem] = []
    for folder, split in (("train2017", "train"), ("val2017", "val"), ("test2017", "test")):
        if not (root / "images" / folder).is_dir():
            continue
        ann = root / "annotations" / folder
        masks = files_by_stem(ann) if ann.is_dir() else {}
        if converted:
            masks = {s[: -len("_labelTrainIds")]: p for s, p in masks.items() if s.endswith("_labelTrainIds")}
        items += _pair(files_by_stem(root / "images" / folder), masks, split)
    return Layout(root, items, coco_stuff_labels(raw=not converted), "folders")


READERS: dict[str, Callable[[Path], Layout]] = {
    "image_folder": read_image_folder, "cityscapes": read_cityscapes, "ade20k": read_ade20k,
    "voc": read_voc, "coco_stuff164k": read_coco_stuff164k,
}

__all__ = ["IMAGE_FORMATS", "SPLITS", "FORMAT_HINTS", "ImageItem", "Layout", "detect_image_format",
           "check_format", "READERS"]
