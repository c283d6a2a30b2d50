"""A small synthetic ordinary-image dataset in the ``image_folder`` layout: disks and squares on textures.

For ``make demo``-style runs, notebooks, tests and the CPU pipelines, where no real annotated image set
can be downloaded. Every image is RGB ``uint8`` ``[H, W, 3]`` on a smooth random texture with
pixel noise; objects are filled disks (class 1) and axis-aligned squares (class 2) of random size,
colour and position, drawn in random order (later objects cover earlier ones, and the mask says so).
The layout written is the one :mod:`medseg.data.image_datasets` reads::

    ROOT/images/<stem>.png     ROOT/masks/<stem>.png (0 background, 1 disk, 2 square)
    ROOT/classes.json          ROOT/splits.json ({"train": [...], "val": [...]})

:func:`write_shapes_instances` writes the same kind of images as an ``instance_masks`` dataset
(:mod:`medseg.data.instance_datasets`): every object its own id, objects never overlap::

    ROOT/images/<stem>.png     ROOT/masks/<stem>.png (16-bit instance ids, 0 background)
    ROOT/instance_classes/<stem>.json ({"<id>": 1 disk | 2 square})
    ROOT/classes.json          ROOT/splits.json
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.io.atomic import write_text_atomic
from medseg.io.images import save_mask

CLASSES = ("background", "disk", "square")


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w, 3), np.float32)
    for _ in range(4):
        fy, fx = rng.uniform(0.5, 4, 2) * 2 * np.pi / np.array([h, w])
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(fy * yy + fx * xx + phase)[..., None]
        out += wave * rng.uniform(10, 35, 3)
    return out + rng.uniform(60, 190, 3)


def _draw(rng: np.random.Generator, size: Sequence[int], max_objects: int,
          separate: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, int]]:
    """Image ``[H, W, 3]`` uint8, class mask, instance mask ``[H, W]`` uint16 and ``{instance: class}``;
    with ``separate``, an object that would touch an earlier one is left out."""
    h, w = int(size[0]), int(size[1])
    image = _texture(rng, h, w)
    mask = np.zeros((h, w), np.uint8)
    ids = np.zeros((h, w), np.uint16)
    classes: dict[int, int] = {}
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(1, 3))
        r = rng.uniform(0.08, 0.2) * min(h, w)
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        inside = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) if cls == 1 else \
            ((np.abs(yy - cy) <= r * 0.9) & (np.abs(xx - cx) <= r * 0.9))
        colour = rng.uniform(0, 255, 3)
        if separate and (ids[inside] != 0).any():
            continue
        image[inside] = colour
        mask[inside] = cls
        ids[inside] = len(classes) + 1
        classes[len(classes) + 1] = cls
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask, ids, classes


def shapes_image(rng: np.random.Generator, size: Sequence[int] = (96, 128),
                 max_objects: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image [H, W, 3] uint8, mask [H, W] uint8)`` pair drawn with ``rng``."""
    image, mask, _, _ = _draw(rng, size, max_objects, separate=False)
    return image, mask


def write_shapes_dataset(root: str | os.PathLike[str], *, n_train: int = 24, n_val: int = 8,
                         size: Sequence[int] = (96, 128), seed: int = 0) -> Path:
    """Write ``n_train + n_val`` images of :func:`shapes_image` as an ``image_folder`` dataset; returns ``root``."""
    from PIL import Image

    from medseg.io.atomic import atomic_path

    out = Path(root)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    stems = [f"shapes_{i:03d}" for i in range(n_train + n_val)]
    for stem in stems:
        image, mask = shapes_image(rng, size)
        with atomic_path(out / "images" / f"{stem}.png") as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        save_mask(out / "masks" / f"{stem}.png", mask)
    write_text_atomic(out / "classes.json", json.dumps(list(CLASSES)) + "\n")
    write_text_atomic(out / "splits.json", json.dumps({"train": stems[:n_train], "val": stems[n_train:]}) + "\n")
    return out


def write_shapes_instances(root: str | os.PathLike[str], *, n_train: int = 24, n_val: int = 8,
                           size: Sequence[int] = (96, 128), seed: int = 0, max_objects: int = 4) -> Path:
    """Write ``n_train + n_val`` images with separate disks and squares as an ``instance_masks``
    dataset (see the module docstring); returns ``root``."""
    from PIL import Image

    from medseg.io.atomic import atomic_path

    out = Path(root)
    for folder in ("images", "masks", "instance_classes"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    stems = [f"objects_{i:03d}" for i in range(n_train + n_val)]
    for stem in stems:
        image, _, ids, classes = _draw(rng, size, max_objects, separate=True)
        with atomic_path(out / "images" / f"{stem}.png") as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        save_mask(out / "masks" / f"{stem}.png", ids)
        write_text_atomic(out / "instance_classes" / f"{stem}.json",
                          json.dumps({str(k): v for k, v in classes.items()}) + "\n")
    write_text_atomic(out / "classes.json", json.dumps({"1": CLASSES[1], "2": CLASSES[2]}) + "\n")
    write_text_atomic(out / "splits.json", json.dumps({"train": stems[:n_train], "val": stems[n_train:]}) + "\n")
    return out


__all__ = ["CLASSES", "shapes_image", "write_shapes_dataset", "write_shapes_instances"]
