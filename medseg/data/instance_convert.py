"""Instance datasets from one format to another, every loss counted (``medseg convert-images --from``).

:func:`convert_instances` reads any :data:`~medseg.data.instance_datasets.INSTANCE_FORMATS` dataset
and writes one of :data:`TARGETS`:

- ``instance_masks``: ``images/``, ``masks/<stem>.png`` (16-bit ids renumbered 1..n per image in
  annotation order), ``instance_classes/<stem>.json``, ``classes.json``, ``splits.json``; where COCO
  objects overlap the later one keeps the pixel (``overlap_pixels``; objects left with no pixel:
  ``instances_hidden``);
- ``coco``: ``images/<split>/`` + ``annotations/instances_<split>.json`` with compressed RLE
  segmentations (exact: no polygon approximation), ``iscrowd`` kept, category ids kept;
- ``yolo_seg``: ``images/<split>/``, ``labels/<split>/<stem>.txt``, ``data.yaml``; one polygon per
  object traced on the 2x-upsampled mask (so pycocotools' rasterisation gives the mask back): holes
  are filled (``holes_filled``), an object in several parts keeps its largest part
  (``multipart="largest"``, ``parts_dropped``) or becomes one object per part (``"split"``,
  ``parts_split``), crowd regions are dropped (``crowd_dropped``); class ``c`` is written ``c - 1``
  and ids missing between 1 and the largest are named ``unused_<id>`` (``unused_class_ids``);
- from ``coco_panoptic``, stuff segments are objects of no target but ``semantic`` (``stuff_dropped``);
- ``semantic``: the ``image_folder`` layout (``masks/<stem>.png`` class ids, 0 background), crowd
  regions -> ``ignore_index`` (``crowd_pixels_ignored``), and so do coco_panoptic's VOID pixels
  (``void_pixels_ignored``); overlaps as for instance_masks.

COCO's category ids are never remapped unless ``coco80=True`` (the 80 used ids of COCO's 91 -> 1..80).
Counts go into the returned :class:`InstanceConversion` and ``OUT/conversion.json``, per image too.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.instance_datasets import (
    Instance,
    InstanceDataset,
    InstanceImage,
    load_instance_dataset,
)
from medseg.errors import ConfigError, InputError
from medseg.io.images import save_mask
from medseg.io.tables import write_json

#: ``--from`` names -> dataset formats
SOURCES: dict[str, str] = {"coco": "coco_instances", "coco_instances": "coco_instances",
                           "coco_panoptic": "coco_panoptic", "yolo_seg": "yolo_seg",
                           "instance_masks": "instance_masks"}
TARGETS = ("coco", "yolo_seg", "instance_masks", "semantic")
MULTIPART = ("largest", "split")
REPORT = "conversion.json"
log = logging.getLogger(__name__)
#: the 80 category ids COCO 2017 uses out of its 91 (ultralytics' coco91_to_coco80_class order)
COCO80_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32,
              33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
              60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90)


@dataclass
class InstanceConversion:
    """What :func:`convert_instances` did: totals of each loss kind and the images that had one."""

    source: str
    target: str
    images: int
    instances: int
    written: int
    losses: dict[str, int]
    per_image: list[dict[str, Any]]
    class_names: dict[int, str]
    report: Path


def write_instance_png(path: str | os.PathLike[str], ids: np.ndarray) -> Path:
    """Write an ``[H, W]`` instance-id map as a 16-bit PNG (0 background), atomically."""
    from PIL import Image

    from medseg.io.atomic import atomic_path

    arr = np.asarray(ids)
    if arr.ndim != 2 or (arr.size and (arr.min() < 0 or arr.max() > 65535)):
        raise InputError(f"{path}: instance ids must be an [H, W] map in 0..65535")
    with atomic_path(path) as tmp:
        Image.fromarray(arr.astype(np.uint16)).save(tmp, format="PNG")
    return Path(path)


def mask_polygons(mask: np.ndarray) -> tuple[list[np.ndarray], int]:
    """``(outer polygons [N, 2] x, y in pixel-edge coordinates, largest first; number of holes)``.

    Traced with OpenCV on the 2x-upsampled bounding box, so that pycocotools' polygon rasterisation
    (:func:`~medseg.data.instance_datasets.polygons_to_mask`) returns the pixels of each part; the
    vertices lie a quarter pixel outside boundary pixel centres (what OpenCV's ``fillPoly`` expects too).
    """
    try:
        import cv2
    except ImportError as exc:
        raise ConfigError("tracing polygons needs OpenCV: pip install opencv-python-headless "
                          "(the yolo extra brings it)") from exc
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not rows.size:
        return [], 0
    top, left = int(rows[0]), int(cols[0])
    crop = mask[top: rows[-1] + 1, left: cols[-1] + 1].astype(np.uint8)
    big = np.pad(np.kron(crop, np.ones((2, 2), np.uint8)), 1)
    contours, hierarchy = cv2.findContours(big, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return [], 0
    outer = [c for c, h in zip(contours, hierarchy[0]) if h[3] == -1]
    holes = sum(1 for h in hierarchy[0] if h[3] != -1)
    outer.sort(key=lambda c: -cv2.contourArea(c))
    # contour points of the upsampled crop are at upsampled pixel indices: /2 gives x0..x1-0.5; +0.25
    # centres them in the range of shifts [0, 0.5) over which pycocotools rasterises the original pixels
    polys = [(c.reshape(-1, 2).astype(np.float64) - 1) / 2 + (left + 0.25, top + 0.25) for c in outer if len(c) >= 3]
    return polys, holes


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _id_map(instances: list[Instance], size: tuple[int, int], count: Counter[str]) -> np.ndarray:
    """Instances painted in order (1..n; a later one keeps shared pixels, counted)."""
    ids = np.zeros(size, np.int64)
    for n, inst in enumerate(instances, 1):
        count["overlap_pixels"] += int(np.count_nonzero(inst.mask & (ids != 0)))
        ids[inst.mask] = n
    present = set(np.unique(ids).tolist())
    count["instances_hidden"] += sum(1 for n in range(1, len(instances) + 1) if n not in present)
    return ids


class _Writer:
    """One target format; ``add`` writes one image, ``finish`` the dataset-level files."""

    def __init__(self, out: Path, ds: InstanceDataset, names: dict[int, str], options: dict[str, Any]) -> None:
        self.out, self.ds, self.names, self.options = out, ds, names, options
        self.splits: dict[str, str] = {}

    def add(self, item: InstanceImage, instances: list[Instance], count: Counter[str]) -> int:
        raise NotImplementedError

    def finish(self, totals: Counter[str]) -> None:
        pass

    def _flat_image(self, item: InstanceImage) -> None:
        _link_or_copy(item.image, self.out / "images" / f"{item.stem}{item.image.suffix.lower()}")
        self.splits[item.stem] = item.split

    def _flat_finish(self, names: dict[int, str]) -> None:
        write_json(self.out / "classes.json", {str(k): v for k, v in sorted(names.items())})
        if set(self.splits.values()) - {"train"}:
            by_split: dict[str, list[str]] = {}
            for stem, split in self.splits.items():
                by_split.setdefault(split, []).append(stem)
            write_json(self.out / "splits.json", by_split)


class _InstanceMasks(_Writer):
    def add(self, item: InstanceImage, instances: list[Instance], count: Counter[str]) -> int:
        self._flat_image(item)
        ids = _id_map(instances, item.size, count)
        write_instance_png(self.out / "masks" / f"{item.stem}.png", ids)
        table = {str(n): ({"class": i.class_id, "crowd": True} if i.crowd else i.class_id)
                 for n, i in enumerate(instances, 1)}
        write_json(self.out / "instance_classes" / f"{item.stem}.json", table)
        return len(instances)

    def finish(self, totals: Counter[str]) -> None:
        self._flat_finish(self.names)


class _Semantic(_Writer):
    def add(self, item: InstanceImage, instances: list[Instance], count: Counter[str]) -> int:
        self._flat_image(item)
        ignore = self.options["ignore_index"]
        labels = np.zeros(item.size, np.int64)
        taken = np.zeros(item.size, bool)
        for inst in instances:
            count["overlap_pixels"] += int(np.count_nonzero(inst.mask & taken))
            taken |= inst.mask
            if inst.crowd:
                count["crowd_pixels_ignored"] += int(np.count_nonzero(inst.mask))
            labels[inst.mask] = ignore if inst.crowd else inst.class_id
        if self.ds.format == "coco_panoptic":  # pixels in no segment are VOID (unlabeled), not background
            labels[~taken] = ignore
            count["void_pixels_ignored"] += int(np.count_nonzero(~taken))
        save_mask(self.out / "masks" / f"{item.stem}.png", labels)
        return len(instances)

    def finish(self, totals: Counter[str]) -> None:
        self._flat_finish({0: "background", **self.names})


class _Coco(_Writer):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.per_split: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def add(self, item: InstanceImage, instances: list[Instance], count: Counter[str]) -> int:
        from pycocotools import mask as mask_utils

        body = self.per_split.setdefault(item.split, {"images": [], "annotations": []})
        image_id = len(body["images"]) + 1
        name = item.image.name
        _link_or_copy(item.image, self.out / "images" / item.split / name)
        body["images"].append({"id": image_id, "file_name": name, "height": item.size[0], "width": item.size[1]})
        for inst in instances:
            rle = mask_utils.encode(np.asfortranarray(inst.mask.astype(np.uint8)))
            body["annotations"].append({
                "id": len(body["annotations"]) + 1, "image_id": image_id, "category_id": int(inst.class_id),
                "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
                "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": int(inst.crowd)})
        return len(instances)

    def finish(self, totals: Counter[str]) -> None:
        cats = [{"id": k, "name": v, "supercategory": ""} for k, v in sorted(self.names.items())]
        for split, body in self.per_split.items():
            write_json(self.out / "annotations" / f"instances_{split}.json",
                       {"info": {"description": f"medseg convert-images from {self.ds.format}"},
                        "images": body["images"], "annotations": body["annotations"], "categories": cats})


class _Yolo(_Writer):
    def add(self, item: InstanceImage, instances: list[Instance], count: Counter[str]) -> int:
        _link_or_copy(item.image, self.out / "images" / item.split / item.image.name)
        self.splits[item.stem] = item.split
        h, w = item.size
        lines = []
        for inst in instances:
            if inst.crowd:
                count["crowd_dropped"] += 1
                continue
            polys, holes = mask_polygons(inst.mask)
            count["holes_filled"] += holes
            if not polys:
                count["empty_dropped"] += 1
                continue
            if len(polys) > 1:
                key = "parts_split" if self.options["multipart"] == "split" else "parts_dropped"
                count[key] += len(polys) - 1
                polys = polys if self.options["multipart"] == "split" else polys[:1]
            for poly in polys:
                xy = np.clip(poly / (w, h), 0.0, 1.0).ravel()
                lines.append(" ".join([str(inst.class_id - 1)] + [f"{v:.6f}" for v in xy]))
        label = self.out / "labels" / item.split / f"{item.stem}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return len(lines)

    def finish(self, totals: Counter[str]) -> None:
        import yaml

        from medseg.io.atomic import write_text_atomic

        top = max(self.names, default=1)
        names = {k - 1: self.names.get(k, f"unused_{k}") for k in range(1, top + 1)}
        totals["unused_class_ids"] += sum(1 for k in range(1, top + 1) if k not in self.names)
        splits = sorted(set(self.splits.values()))
        data: dict[str, Any] = {"path": ".", **{s: f"images/{s}" for s in splits}}
        if "val" not in data:
            data["val"] = data.get("train", f"images/{splits[0]}" if splits else "images/train")
        data["names"] = names
        write_text_atomic(self.out / "data.yaml", yaml.safe_dump(data, sort_keys=False))


_WRITERS: dict[str, Callable[..., _Writer]] = {"instance_masks": _InstanceMasks, "semantic": _Semantic,
                                               "coco": _Coco, "yolo_seg": _Yolo}


def _coco80(names: dict[int, str]) -> Callable[[int], int]:
    table = {old: new for new, old in enumerate(COCO80_IDS, 1)}

    def remap(class_id: int) -> int:
        if class_id not in table:
            raise InputError(f"category id {class_id} is not one of COCO's 80 used ids; convert without --coco80")
        return table[class_id]
    return remap


def convert_instances(input: str | os.PathLike[str], output: str | os.PathLike[str], *, source: str | None = None,
                      to: str, multipart: str = "largest", coco80: bool = False, ignore_index: int = 255,
                      images: str | os.PathLike[str] | None = None) -> InstanceConversion:
    """Convert the instance dataset at ``input`` into ``output`` as ``to`` (see the module docstring).

    Raises:
        ConfigError: an unknown ``source``, ``to`` or ``multipart``.
        InputError: the dataset's own errors (missing images, bad label lines, ids without a class).
    """
    if source is not None and source not in SOURCES:
        raise ConfigError(f"--from: unknown format {source!r}; known: {', '.join(SOURCES)}")
    if to not in TARGETS:
        raise ConfigError(f"--to: unknown target {to!r}; known: {', '.join(TARGETS)} (and index, for colour masks)")
    if multipart not in MULTIPART:
        raise ConfigError(f"--multipart: unknown {multipart!r}; known: {', '.join(MULTIPART)}")
    ds = load_instance_dataset(input, format=SOURCES[source] if source else None, images=images)
    names = dict(ds.class_names)
    if to != "semantic" and ds.format == "coco_panoptic":
        names = {k: v for k, v in names.items() if k in ds.things}
    remap = _coco80(names) if coco80 else None
    if remap is not None:
        names = {remap(k): v for k, v in names.items() if k in COCO80_IDS}
    if to == "semantic" and max(names, default=0) >= ignore_index:
        raise ConfigError(f"class id {max(names)} collides with the ignore index {ignore_index}; give another")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    writer = _WRITERS[to](out, ds, names, {"multipart": multipart, "ignore_index": ignore_index})
    totals: Counter[str] = Counter()
    per_image, n_in, n_out = [], 0, 0
    for item in ds.items:
        instances = item.read()
        if to != "semantic" and ds.format == "coco_panoptic":  # stuff is not an object
            count_stuff = sum(1 for i in instances if i.class_id not in ds.things)
            instances = [i for i in instances if i.class_id in ds.things]
        else:
            count_stuff = 0
        if remap is not None:
            instances = [Instance(i.id, remap(i.class_id), i.mask, i.crowd, i.score) for i in instances]
        unnamed = sorted({i.class_id for i in instances} - set(names))
        names.update({c: str(c) for c in unnamed})
        count: Counter[str] = Counter(stuff_dropped=count_stuff)
        n_in += len(instances) + count_stuff
        n_out += writer.add(item, instances, count)
        totals.update(count)
        if +count:
            per_image.append({"image": item.stem, **dict(+count)})
    writer.finish(totals)
    losses = {k: v for k, v in sorted(totals.items()) if v}
    if losses:
        log.warning("%s -> %s: what the target cannot hold (see %s): %s", ds.format, to, out / REPORT,
                    ", ".join(f"{k} {v}" for k, v in losses.items()))
    result = InstanceConversion(ds.format, to, len(ds.items), n_in, n_out, losses, per_image, names, out / REPORT)
    write_json(result.report, {"from": ds.format, "to": to, "multipart": multipart, "coco80": coco80,
                               "images": result.images, "instances_read": n_in, "objects_written": n_out,
                               "losses": losses, "class_names": {str(k): v for k, v in sorted(names.items())},
                               "per_image": per_image})
    return result


__all__ = ["SOURCES", "TARGETS", "MULTIPART", "REPORT", "COCO80_IDS", "InstanceConversion", "convert_instances",
           "mask_polygons", "write_instance_png"]
