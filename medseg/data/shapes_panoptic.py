"""A small synthetic panoptic dataset in the COCO panoptic layout: disks and squares (things) on a sky and a
ground (stuff).

For tests, the panoptic CPU pipeline and its figure, where no real panoptic set can be downloaded. Every
image is RGB ``uint8`` ``[H, W, 3]``: a wavy horizon splits it into a bluish textured sky above and a brownish
textured ground below (in about one image in five the horizon lies outside the image: one stuff class only);
on it, the separate disks and squares of :func:`medseg.data.shapes.write_shapes_instances` (objects never
touch). The layout is the one :mod:`medseg.data.instance_datasets` reads as ``coco_panoptic``, as panopticapi
writes it::

    ROOT/images/<split>/<stem>.png
    ROOT/annotations/panoptic_<split>.json     (images, annotations with segments_info, categories + isthing)
    ROOT/annotations/panoptic_<split>/<stem>.png  (RGB, segment id = R + 256 G + 256^2 B, 0 = VOID)

Categories (:data:`PANOPTIC_CATEGORIES`): 1 disk and 2 square (``isthing: 1``, one segment per object), 3 sky
and 4 ground (``isthing: 0``, one segment per class present). Segment ids are drawn at random below 256^3
(COCO's are arbitrary too), so all three channels of the PNG carry them. No pixel is VOID and no segment is
crowd; tests add those where they need them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.shapes import CLASSES, _draw, _texture
from medseg.io.atomic import atomic_path, write_text_atomic

#: COCO panoptic categories of the set: the shapes' classes are things, sky and ground stuff
PANOPTIC_CATEGORIES: tuple[dict[str, Any], ...] = (
    {"id": 1, "name": CLASSES[1], "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": CLASSES[2], "isthing": 1, "color": [0, 0, 142]},
    {"id": 3, "name": "sky", "isthing": 0, "color": [70, 130, 180]},
    {"id": 4, "name": "ground", "isthing": 0, "color": [152, 251, 152]},
)
SKY, GROUND = 3, 4
_TINTS = {SKY: np.array([90.0, 140.0, 215.0]), GROUND: np.array([120.0, 95.0, 50.0])}


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids ``[H, W]`` (below 256^3) -> panopticapi's RGB ``[H, W, 3]`` uint8 (``R + 256 G + 256^2 B``)."""
    arr = np.asarray(ids, np.int64)
    return np.stack([arr % 256, arr // 256 % 256, arr // 65536 % 256], axis=-1).astype(np.uint8)


def shapes_panoptic_image(rng: np.random.Generator, size: Sequence[int] = (96, 128),
                          max_objects: int = 4) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """One ``(image [H, W, 3] uint8, segments [H, W] int64, {segment: category})`` drawn with ``rng``; the
    segments are numbered 1..N here (things first), :func:`write_shapes_panoptic` renumbers them."""
    h, w = int(size[0]), int(size[1])
    image, _, ids, classes = _draw(rng, (h, w), max_objects, separate=True)
    yy, xx = np.mgrid[0:h, 0:w]
    level = (rng.choice([-0.2, 1.2]) if rng.uniform() < 0.2 else rng.uniform(0.3, 0.7)) * h
    sky = yy < level + 0.08 * h * np.sin(rng.uniform(1, 3) * 2 * np.pi * xx / w + rng.uniform(0, 2 * np.pi))
    background = ids == 0
    segments = ids.astype(np.int64)
    table = {int(k): int(v) for k, v in classes.items()}
    for cls, region in ((SKY, sky), (GROUND, ~sky)):
        texture = 0.5 * _texture(rng, h, w) + 0.5 * _TINTS[cls] + rng.normal(0, 8, (h, w, 3))
        stuff = region & background
        image[stuff] = np.clip(texture[stuff], 0, 255).astype(np.uint8)
        if stuff.any():
            table[len(table) + 1] = cls
            segments[stuff] = len(table)
    return image, segments, table


def _segment_info(mask: np.ndarray, segment_id: int, category: int) -> dict[str, Any]:
    ys, xs = np.nonzero(mask)
    return {"id": segment_id, "category_id": category, "iscrowd": 0, "area": int(mask.sum()),
            "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]}


def write_shapes_panoptic(root: str | os.PathLike[str], *, n_train: int = 24, n_val: int = 8,
                          size: Sequence[int] = (96, 128), seed: int = 0, max_objects: int = 4) -> Path:
    """Write ``n_train + n_val`` images of :func:`shapes_panoptic_image` as a COCO panoptic dataset with splits
    ``train`` and ``val`` (see the module docstring); returns ``root``."""
    from PIL import Image

    out = Path(root)
    rng = np.random.default_rng(seed)
    stems = [f"scene_{i:03d}" for i in range(n_train + n_val)]
    used: set[int] = set()
    for split, names in (("train", stems[:n_train]), ("val", stems[n_train:])):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "annotations" / f"panoptic_{split}").mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for image_id, stem in enumerate(names, 1 + (n_train if split == "val" else 0)):
            image, segments, table = shapes_panoptic_image(rng, size, max_objects)
            coded = np.zeros_like(segments)
            infos = []
            for n, category in table.items():
                segment_id = int(rng.integers(1, 256 ** 3))
                while segment_id in used:
                    segment_id = int(rng.integers(1, 256 ** 3))
                used.add(segment_id)
                coded[segments == n] = segment_id
                infos.append(_segment_info(segments == n, segment_id, category))
            with atomic_path(out / "images" / split / f"{stem}.png") as tmp:
                Image.fromarray(image).save(tmp, format="PNG")
            with atomic_path(out / "annotations" / f"panoptic_{split}" / f"{stem}.png") as tmp:
                Image.fromarray(id_to_rgb(coded)).save(tmp, format="PNG")
            images.append({"id": image_id, "file_name": f"{stem}.png", "height": int(size[0]), "width": int(size[1])})
            annotations.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": infos})
        document = {"info": {"description": "medseg synthetic shapes panoptic set"}, "images": images,
                    "annotations": annotations, "categories": [dict(c) for c in PANOPTIC_CATEGORIES]}
        write_text_atomic(out / "annotations" / f"panoptic_{split}.json", json.dumps(document) + "\n")
    return out


__all__ = ["PANOPTIC_CATEGORIES", "id_to_rgb", "shapes_panoptic_image", "write_shapes_panoptic"]
