"""Instance and panoptic datasets of ordinary images: four formats, one item type, masks decoded on demand.

Formats (:data:`INSTANCE_FORMATS`), detected by :func:`detect_instance_format` when not given:

- ``instance_masks``: ``DIR/images/<stem>.<ext>`` + ``DIR/masks/<stem>.png`` (16-bit instance ids,
  0 = background); ``DIR/instance_classes/<stem>.json`` maps instance id -> class id
  (``{"1": 2}`` or ``{"1": {"class": 2, "crowd": true}}``; every instance is class 1 when the file
  is absent); ``DIR/classes.json`` names the classes; ``DIR/splits.json`` as in ``image_folder``.
- ``coco_instances``: ``DIR/annotations/instances_<split>.json`` (or one given JSON file) with
  images in ``DIR/<split>/``, ``DIR/images/<split>/``, ``DIR/images/`` or ``DIR/``; polygons,
  uncompressed and compressed RLE are decoded by pycocotools; ``iscrowd`` objects are kept as
  ``Instance(crowd=True)`` (ignore regions for evaluation). Category ids are COCO's own (1..90
  for COCO itself: never remapped to 80 here).
- ``coco_panoptic``: ``DIR/annotations/panoptic_<split>.json`` + ``DIR/annotations/panoptic_<split>/``
  PNGs (segment id = R + 256 G + 256^2 B); things and stuff are all segments; ``InstanceDataset.things``
  holds the categories with ``isthing: 1``.
- ``yolo_seg``: ultralytics' layout, ``DIR/data.yaml`` (``names``, ``train``/``val``/``test`` image
  folders relative to ``path`` or ``DIR``) and ``labels/.../<stem>.txt`` next to ``images/.../``
  with lines ``class x1 y1 x2 y2 ...`` (normalised polygon vertices, at least three).

Class ids: one convention for every format, 0 is background (as in semantic masks). COCO and
instance_masks keep their ids; yolo_seg's 0-based class ``c`` is read as ``c + 1`` (and written
back as ``c``), its names shift with it.

Every reader checks what it can without decoding masks (files present, JSON shape, sizes in
headers) when the dataset is loaded; :func:`read_instances` decodes one image and raises one
:class:`~medseg.errors.InputError` naming the file for a bad mask, label line or class table.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.io.images import files_by_stem, read_mask
from medseg.io.tables import read_name_mapping

log = logging.getLogger(__name__)

INSTANCE_FORMATS: tuple[str, ...] = ("instance_masks", "coco_instances", "coco_panoptic", "yolo_seg")
SPLITS = ("train", "val", "test")
FORMAT_HINTS: dict[str, str] = {
    "instance_masks": "images/ + masks/ (16-bit instance ids) [+ instance_classes/]",
    "coco_instances": "annotations/instances_<split>.json (or a .json file)",
    "coco_panoptic": "annotations/panoptic_<split>.json + annotations/panoptic_<split>/",
    "yolo_seg": "data.yaml + images/ + labels/",
}
MAX_LISTED = 10


@dataclass
class Instance:
    """One object: ``mask`` is ``[H, W]`` bool at the image's full resolution."""

    id: int
    class_id: int
    mask: np.ndarray
    crowd: bool = False
    score: float | None = None


@dataclass(frozen=True)
class InstanceImage:
    """One image and the file(s) its instances come from; :meth:`read` decodes them (not cached).

    Attributes:
        stem: unique id within the dataset.
        image: the image file.
        size: ``(H, W)`` in pixels.
        split: ``"train"``, ``"val"`` or ``"test"``.
        annotation: the file holding this image's instances (mask PNG, label txt, JSON).
    """

    stem: str
    image: Path
    size: tuple[int, int]
    split: str = "train"
    annotation: Path | None = None
    loader: Callable[[], list[Instance]] = field(default=lambda: [], repr=False, compare=False)

    def read(self) -> list[Instance]:
        return self.loader()

    @property
    def instances(self) -> list[Instance]:
        return self.loader()


@dataclass
class InstanceDataset:
    """What :func:`load_instance_dataset` found.

    Attributes:
        class_names: class id -> name (ids >= 1 for objects; see the module docstring).
        things: class ids that are countable objects (all of them except coco_panoptic's stuff).
        sources: the annotation files read (COCO JSONs, data.yaml), for messages.
    """

    root: Path
    format: str
    items: list[InstanceImage]
    class_names: dict[int, str]
    things: frozenset[int]
    sources: list[Path] = field(default_factory=list)

    def split(self, name: str) -> list[InstanceImage]:
        if name not in SPLITS:
            raise InputError(f"unknown split {name!r}; known: {', '.join(SPLITS)}")
        return [item for item in self.items if item.split == name]


def read_instances(item: InstanceImage) -> list[Instance]:
    """The instances of one image (masks decoded)."""
    return item.read()


# --------------------------------------------------------------------------- detection
def _coco_jsons(root: Path, kind: str) -> list[Path]:
    return sorted((root / "annotations").glob(f"{kind}_*.json")) if (root / "annotations").is_dir() else []


def yaml_file(root: Path) -> Path | None:
    """The YOLO dataset YAML of folder ``root`` (``data.yaml``, ``data.yml`` or ``dataset.yaml``), or ``None``."""
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (root / name).is_file():
            return root / name
    return None


_MATCHERS: dict[str, Callable[[Path], bool]] = {
    "coco_panoptic": lambda r: bool(_coco_jsons(r, "panoptic")),
    "coco_instances": lambda r: bool(_coco_jsons(r, "instances")),
    "yolo_seg": lambda r: yaml_file(r) is not None,
    "instance_masks": lambda r: (r / "images").is_dir() and (r / "masks").is_dir(),
}


def _found(root: Path) -> str:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if not p.name.startswith("."))
    if (root / "annotations").is_dir():
        inner = sorted(p.name for p in (root / "annotations").iterdir())[:4]
        entries.append(f"annotations/ holding {', '.join(inner) or 'nothing'}")
    return ", ".join(entries[:8]) + (" ..." if len(entries) > 8 else "") or "nothing"


def detect_instance_format(root: str | os.PathLike[str]) -> str:
    """The format of ``root`` (a folder, or a COCO ``.json`` file), one of :data:`INSTANCE_FORMATS`.

    Raises:
        InputError: nothing matches (one line naming what was found).
    """
    path = Path(root)
    if path.is_file() and path.suffix.lower() == ".json":
        head = _read_json(path)
        anns = head.get("annotations") if isinstance(head, dict) else None
        return "coco_panoptic" if anns and isinstance(anns[0], dict) and "segments_info" in anns[0] \
            else "coco_instances"
    if not path.is_dir():
        raise InputError(f"{path}: no such dataset folder or COCO JSON file")
    for name, matches in _MATCHERS.items():
        if matches(path):
            return name
    expected = ", ".join(f"{n} ({h})" for n, h in FORMAT_HINTS.items())
    raise InputError(f"{path}: no instance dataset format recognised (found: {_found(path)}); expected one of "
                     f"{expected}")


def load_instance_dataset(root: str | os.PathLike[str], *, format: str | None = None,
                          images: str | os.PathLike[str] | None = None,
                          check_images: bool = True) -> InstanceDataset:
    """Read the dataset at ``root`` (see the module docstring); masks stay on disk until read.

    Args:
        format: one of :data:`INSTANCE_FORMATS` (detected when ``None``).
        images: the image folder of a COCO JSON given as ``root`` (default: searched, see above).
        check_images: refuse annotations whose image file is missing (evaluation only needs sizes).

    Raises:
        InputError: unknown format, layout not matching, missing images or masks, bad JSON (named).
    """
    path = Path(root)
    fmt = format or detect_instance_format(path)
    if fmt not in INSTANCE_FORMATS:
        raise InputError(f"unknown instance dataset format {fmt!r}; known: {', '.join(INSTANCE_FORMATS)}")
    if fmt == "instance_masks":
        return _read_instance_masks(path)
    if fmt == "yolo_seg":
        return _read_yolo(path)
    kind = "panoptic" if fmt == "coco_panoptic" else "instances"
    jsons = [path] if path.is_file() else _coco_jsons(path, kind)
    if not jsons:
        raise InputError(f"{path}: not a {fmt} dataset: expected {FORMAT_HINTS[fmt]} (found: "
                         f"{_found(path) if path.is_dir() else 'no such folder'})")
    reader = _read_coco_panoptic if fmt == "coco_panoptic" else _read_coco_instances
    parts = [reader(j, images, check_images) for j in jsons]
    items = [item for part in parts for item in part.items]
    _check_unique([i.stem for i in items], jsons[0].parent)
    names: dict[int, str] = {}
    things: set[int] = set()
    for part in parts:
        names.update(part.class_names)
        things |= part.things
    return InstanceDataset(path, fmt, items, dict(sorted(names.items())), frozenset(things), jsons)


# --------------------------------------------------------------------------- helpers
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read this JSON file ({exc})") from exc


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read this image ({exc})") from exc


def _check_unique(stems: list[str], where: Path) -> None:
    seen: set[str] = set()
    dup = sorted({s for s in stems if s in seen or seen.add(s)})  # type: ignore[func-returns-value]
    if dup:
        raise InputError(f"{where}: image stem(s) {', '.join(dup[:MAX_LISTED])} occur more than once "
                         "(in two splits or folders)")


def _split_of(name: str) -> str:
    for split in SPLITS:
        if split in name:
            return split
    return "train"


def _names(path: Path) -> dict[int, str]:
    if not path.is_file():
        return {}
    _, names = read_name_mapping(path, noun="class")
    if not names:
        raise InputError(f"{path}: no class names (expected a list of names or {{\"1\": name}})")
    return names


# --------------------------------------------------------------------------- instance_masks
def _instance_classes(path: Path, ids: Iterable[int]) -> dict[int, tuple[int, bool]]:
    """``{instance id: (class id, crowd)}`` from ``instance_classes/<stem>.json`` (class 1 when absent)."""
    ids = list(ids)
    if not path.is_file():
        return {i: (1, False) for i in ids}
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected {{\"<instance id>\": <class id>}} or {{\"<id>\": {{\"class\": c, "
                         "\"crowd\": false}}}}")
    table: dict[int, tuple[int, bool]] = {}
    for key, value in raw.items():
        entry = value if isinstance(value, dict) else {"class": value}
        cls, crowd = entry.get("class"), entry.get("crowd", False)
        if not str(key).isdigit() or not isinstance(cls, int) or isinstance(cls, bool) or cls < 1 \
                or not isinstance(crowd, bool):
            raise InputError(f"{path}: entry {key!r}: {value!r} is not an instance id -> class id >= 1 "
                             "(or {\"class\": c, \"crowd\": true|false})")
        table[int(key)] = (cls, crowd)
    missing = [i for i in ids if i not in table]
    if missing:
        raise InputError(f"{path}: instance id(s) {missing[:MAX_LISTED]} in the mask have no class; add them")
    return {i: table[i] for i in ids}


def _instance_mask_loader(mask_path: Path, classes_path: Path) -> Callable[[], list[Instance]]:
    def load() -> list[Instance]:
        arr = read_mask(mask_path)
        ids = [int(i) for i in np.unique(arr) if i != 0]
        table = _instance_classes(classes_path, ids)
        return [Instance(i, table[i][0], arr == i, crowd=table[i][1]) for i in ids]
    return load


def _read_instance_masks(root: Path) -> InstanceDataset:
    if not _MATCHERS["instance_masks"](root):
        raise InputError(f"{root}: not an instance_masks dataset: expected {FORMAT_HINTS['instance_masks']} "
                         f"(found: {_found(root) if root.is_dir() else 'no such folder'})")
    images, masks = files_by_stem(root / "images"), files_by_stem(root / "masks")
    missing = sorted(set(images) - set(masks))
    if missing:
        raise InputError(f"{root / 'masks'}: no mask for image(s) {', '.join(missing[:MAX_LISTED])}"
                         + (f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""))
    orphans = sorted(set(masks) - set(images))
    if orphans:
        log.warning("%s: %d mask(s) without an image ignored: %s", root, len(orphans), ", ".join(orphans[:5]))
    splits = {s: "train" for s in images}
    if (root / "splits.json").is_file():
        from medseg.data.image_layouts import _read_splits_json

        splits = _read_splits_json(root / "splits.json", list(images))
    items = []
    for stem, image in images.items():
        size = _image_size(masks[stem])
        if _image_size(image) != size:
            raise InputError(f"{masks[stem]}: mask is {size[1]}x{size[0]} but its image {image.name} is "
                             f"{_image_size(image)[1]}x{_image_size(image)[0]} (W x H)")
        classes = root / "instance_classes" / f"{stem}.json"
        items.append(InstanceImage(stem, image, size, splits[stem], masks[stem],
                                   _instance_mask_loader(masks[stem], classes)))
    names = _names(root / "classes.json")
    names.pop(0, None)
    return InstanceDataset(root, "instance_masks", items, names or {1: "object"},
                           frozenset(names or {1}), [root / "masks"])


# --------------------------------------------------------------------------- COCO
def _coco_image_dir(json_path: Path, images: str | os.PathLike[str] | None, files: list[str]) -> Path:
    if images is not None:
        return Path(images)
    split = json_path.stem.split("_", 1)[-1]
    base = json_path.parent.parent if json_path.parent.name == "annotations" else json_path.parent
    candidates = [base / split, base / "images" / split, base / "images", base]
    probe = files[0] if files else None
    for c in candidates:
        if probe is not None and (c / probe).is_file():
            return c
    return next((c for c in candidates if c.is_dir()), base)


def coco_body(path: Path) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """``(the JSON, {image id: {"file_name", "height", "width"}})`` of a COCO file, its shape checked."""
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or \
            not isinstance(data.get("categories", []), list):
        raise InputError(f"{path}: not a COCO annotation file (expected \"images\", \"annotations\", \"categories\")")
    images: dict[int, dict[str, Any]] = {}
    for entry in data["images"]:
        try:
            images[int(entry["id"])] = {"file_name": str(entry["file_name"]), "height": int(entry["height"]),
                                        "width": int(entry["width"])}
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: image entry {entry!r} lacks id/file_name/height/width") from exc
    return data, images


def _coco_items(path: Path, images: dict[int, dict[str, Any]], image_dir: Path, check_images: bool,
                loader: Callable[[int, dict[str, Any]], Callable[[], list[Instance]]],
                annotation: Callable[[int, dict[str, Any]], Path]) -> list[InstanceImage]:
    missing = [e["file_name"] for e in images.values() if not (image_dir / e["file_name"]).is_file()]
    if missing and check_images:
        raise InputError(f"{path}: {len(missing)} of {len(images)} image(s) missing from {image_dir}: "
                         f"{', '.join(missing[:MAX_LISTED])}; give the image folder (images=) or fix file_name")
    split = _split_of(path.stem)
    return [InstanceImage(Path(e["file_name"]).stem, image_dir / e["file_name"], (e["height"], e["width"]), split,
                          annotation(i, e), loader(i, e)) for i, e in images.items()]


def coco_annotation_mask(ann: dict[str, Any], height: int, width: int, where: str) -> np.ndarray:
    """A COCO annotation's ``segmentation`` (polygons, RLE) as an ``[H, W]`` bool mask (pycocotools)."""
    from pycocotools import mask as mask_utils

    seg = ann.get("segmentation")
    try:
        if isinstance(seg, list):
            if not seg or any(not isinstance(p, list) or len(p) < 6 or len(p) % 2 for p in seg):
                raise ValueError("polygons need an even number (>= 6) of coordinates each")
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
            rle = mask_utils.frPyObjects(seg, height, width)
        elif isinstance(seg, dict):
            rle = dict(seg, counts=seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"])
        else:
            raise ValueError(f"segmentation {type(seg).__name__}")
        mask = mask_utils.decode(rle).astype(bool)
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"{where}: annotation {ann.get('id')}: cannot decode its segmentation ({exc})") from exc
    if mask.shape != (height, width):
        raise InputError(f"{where}: annotation {ann.get('id')}: RLE size {mask.shape} differs from the image's "
                         f"{(height, width)}")
    return mask


def _read_coco_instances(path: Path, images_arg: Any, check_images: bool) -> InstanceDataset:
    data, images = coco_body(path)
    by_image: dict[int, list[dict[str, Any]]] = {i: [] for i in images}
    for ann in data.get("annotations", []):
        if not isinstance(ann, dict) or ann.get("image_id") not in by_image:
            raise InputError(f"{path}: annotation {ann.get('id') if isinstance(ann, dict) else ann!r} refers to "
                             f"image_id {ann.get('image_id') if isinstance(ann, dict) else None} not in \"images\"")
        by_image[ann["image_id"]].append(ann)
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in data.get("categories", [])}

    def loader(image_id: int, entry: dict[str, Any]) -> Callable[[], list[Instance]]:
        def load() -> list[Instance]:
            return [Instance(int(a.get("id", n + 1)), int(a["category_id"]),
                             coco_annotation_mask(a, entry["height"], entry["width"], str(path)),
                             crowd=bool(a.get("iscrowd", 0))) for n, a in enumerate(by_image[image_id])]
        return load

    image_dir = _coco_image_dir(path, images_arg, [e["file_name"] for e in images.values()])
    items = _coco_items(path, images, image_dir, check_images, loader, lambda i, e: path)
    return InstanceDataset(path, "coco_instances", items, names, frozenset(names), [path])


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """Panoptic PNG ``[H, W, 3]`` -> segment ids ``R + 256 G + 256^2 B`` (int64)."""
    arr = np.asarray(rgb).astype(np.int64)
    return arr[..., 0] + 256 * arr[..., 1] + 256 * 256 * arr[..., 2]


def read_panoptic_png(path: Path) -> np.ndarray:
    """The segment-id map of a panoptic PNG (RGB) as ``[H, W]`` int64."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return rgb_to_id(np.asarray(img.convert("RGB")))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read this panoptic PNG ({exc})") from exc


def panoptic_segments(path: Path, ids: np.ndarray, segments: list[dict[str, Any]]) -> list[Instance]:
    """Instances of one panoptic PNG's id map; every non-zero id in it must be in ``segments``."""
    present = set(np.unique(ids).tolist()) - {0}
    listed = {int(s["id"]): s for s in segments}
    unknown = sorted(present - set(listed))
    if unknown:
        raise InputError(f"{path}: segment id(s) {unknown[:MAX_LISTED]} in the PNG are not in its segments_info")
    return [Instance(i, int(s["category_id"]), ids == i, crowd=bool(s.get("iscrowd", 0)))
            for i, s in listed.items()]


def _read_coco_panoptic(path: Path, images_arg: Any, check_images: bool) -> InstanceDataset:
    data, images = coco_body(path)
    png_dir = path.with_suffix("")
    per_image: dict[int, dict[str, Any]] = {}
    for ann in data.get("annotations", []):
        if not isinstance(ann, dict) or ann.get("image_id") not in images or "file_name" not in ann \
                or not isinstance(ann.get("segments_info"), list):
            raise InputError(f"{path}: panoptic annotation {ann!r:.80} lacks image_id/file_name/segments_info")
        per_image[ann["image_id"]] = ann
    missing = [a["file_name"] for a in per_image.values() if not (png_dir / a["file_name"]).is_file()]
    if missing:
        raise InputError(f"{path}: {len(missing)} panoptic PNG(s) missing from {png_dir}: "
                         f"{', '.join(missing[:MAX_LISTED])}")
    cats = data.get("categories", [])
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in cats}
    things = frozenset(int(c["id"]) for c in cats if c.get("isthing", 1))

    def loader(image_id: int, entry: dict[str, Any]) -> Callable[[], list[Instance]]:
        def load() -> list[Instance]:
            ann = per_image.get(image_id)
            if ann is None:
                return []
            png = png_dir / ann["file_name"]
            return panoptic_segments(png, read_panoptic_png(png), ann["segments_info"])
        return load

    image_dir = _coco_image_dir(path, images_arg, [e["file_name"] for e in images.values()])
    items = _coco_items(path, {i: e for i, e in images.items()}, image_dir, check_images, loader,
                        lambda i, e: png_dir / per_image[i]["file_name"] if i in per_image else path)
    return InstanceDataset(path, "coco_panoptic", items, names, things, [path])


# --------------------------------------------------------------------------- yolo_seg
def read_yaml(path: Path) -> dict[str, Any]:
    """A YOLO dataset YAML as a dict (an :class:`InputError` naming ``path`` when unreadable or without ``names``)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read this YAML file ({exc})") from exc
    if not isinstance(data, dict) or "names" not in data:
        raise InputError(f"{path}: expected a YOLO data.yaml with names: and train:/val: image folders")
    return data


def yolo_names(path: Path, names: Any) -> dict[int, str]:
    """``names:`` of a data.yaml (a list or ``{0: name}``) as medseg class ids (``c + 1``)."""
    if isinstance(names, list):
        return {i + 1: str(n) for i, n in enumerate(names)}
    if isinstance(names, dict):
        try:
            return {int(k) + 1: str(v) for k, v in sorted(names.items(), key=lambda kv: int(kv[0]))}
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}: names: keys must be class numbers, got {list(names)[:5]}") from exc
    raise InputError(f"{path}: names: expected a list or {{0: name}}, got {names!r:.60}")


def label_path(image: Path) -> Path:
    """ultralytics' rule: the last ``images`` folder of the path becomes ``labels``, suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def parse_yolo_labels(path: Path, height: int, width: int, n_classes: int) -> list[tuple[int, np.ndarray]]:
    """``[(medseg class id, [N, 2] polygon in pixels x, y)]`` of one label txt (missing file: none).

    Raises:
        InputError: a line with an odd number of coordinates, fewer than 3 vertices, values outside
            [0, 1] or a class outside ``names`` (file and line named).
    """
    if not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            cls, coords = int(tokens[0]), np.array([float(t) for t in tokens[1:]])
        except ValueError as exc:
            raise InputError(f"{path}:{n}: not 'class x1 y1 x2 y2 ...' numbers ({exc})") from exc
        if coords.size % 2:
            raise InputError(f"{path}:{n}: {coords.size} coordinates, an odd count; polygon lines are "
                             "'class x1 y1 x2 y2 ...'")
        if coords.size < 6:
            raise InputError(f"{path}:{n}: {coords.size // 2} vertices; a polygon needs at least 3 (a 'class x y w h' "
                             "box line is detection, not segmentation)")
        if not np.all((coords >= 0) & (coords <= 1)):
            raise InputError(f"{path}:{n}: coordinate(s) outside [0, 1] (min {coords.min():g}, max {coords.max():g}); "
                             "YOLO polygons are normalised by the image width and height")
        if not 0 <= cls < n_classes:
            raise InputError(f"{path}:{n}: class {cls} is outside names (0..{n_classes - 1})")
        out.append((cls + 1, coords.reshape(-1, 2) * np.array([width, height])))
    return out


def polygons_to_mask(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterise pixel-coordinate polygons (``[N, 2]`` x, y; edge coordinates) as COCO does."""
    from pycocotools import mask as mask_utils

    rles = mask_utils.frPyObjects([p.astype(np.float64).ravel().tolist() for p in polygons], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def yolo_dirs(path: Path, data: dict[str, Any], root: Path) -> list[tuple[str, Path]]:
    """``(split, image folder)`` of every ``train:``/``val:``/``test:`` entry of the YOLO YAML ``data`` (read
    from ``path``), resolved against its ``path:`` key or ``root``."""
    base = Path(data["path"]) if data.get("path") else root
    if not base.is_absolute():
        base = root / base
    dirs = []
    for split in SPLITS:
        value = data.get(split)
        for entry in (value if isinstance(value, list) else [value] if value else []):
            folder = base / str(entry)
            if not folder.is_dir():
                raise InputError(f"{path}: {split}: {folder} is not a folder of images (image lists in .txt files "
                                 "are not read)")
            dirs.append((split, folder))
    if not dirs:
        raise InputError(f"{path}: no train:/val:/test: image folder")
    return dirs


def _read_yolo(root: Path) -> InstanceDataset:
    path = yaml_file(root) if root.is_dir() else root
    if path is None:
        raise InputError(f"{root}: not a yolo_seg dataset: expected {FORMAT_HINTS['yolo_seg']} (found: {_found(root)})")
    data = read_yaml(path)
    names = yolo_names(path, data["names"])
    items = []
    seen: dict[Path, str] = {}
    for split, folder in yolo_dirs(path, data, path.parent):
        if folder in seen:
            continue
        seen[folder] = split
        for stem, image in files_by_stem(folder).items():
            h, w = _image_size(image)
            label = label_path(image)

            def load(label: Path = label, h: int = h, w: int = w) -> list[Instance]:
                polys = parse_yolo_labels(label, h, w, len(names))
                return [Instance(i + 1, cls, polygons_to_mask([poly], h, w)) for i, (cls, poly) in enumerate(polys)]

            items.append(InstanceImage(stem, image, (h, w), split, label, load))
    _check_unique([i.stem for i in items], path)
    return InstanceDataset(root, "yolo_seg", items, names, frozenset(names), [path])


__all__ = [
    "INSTANCE_FORMATS", "FORMAT_HINTS", "Instance", "InstanceImage", "InstanceDataset", "load_instance_dataset",
    "detect_instance_format", "read_instances", "coco_annotation_mask", "coco_body", "rgb_to_id", "read_panoptic_png",
    "panoptic_segments", "yolo_names", "yaml_file", "read_yaml", "yolo_dirs", "label_path", "parse_yolo_labels", "polygons_to_mask",
]


# --------------------------------------------------------------------------- predictions
PREDICTION_SUFFIX = "_instances"  # <stem>_instances.png (16-bit ids) + <stem>_instances.json


def read_instance_prediction(png: str | os.PathLike[str], table: str | os.PathLike[str] | None = None,
                             ) -> tuple[np.ndarray, dict[int, tuple[int, float | None]]]:
    """``(ids [H, W], {instance id: (class id, score)})`` of a ``<stem>_instances.png`` and its JSON
    ``{"instances": [{"id": 1, "class": 1, "score": 0.93}, ...]}`` (default: next to the PNG).

    Raises:
        InputError: unreadable files, an id in the PNG missing from the JSON, a bad entry (named).
    """
    png = Path(png)
    path = Path(table) if table is not None else png.with_suffix(".json")
    ids = read_mask(png).astype(np.int64)
    raw = _read_json(path) if path.is_file() else None
    entries = raw.get("instances") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        raise InputError(f"{path}: expected {{\"instances\": [{{\"id\": 1, \"class\": 1, \"score\": 0.9}}, ...]}} "
                         f"next to {png.name}")
    info: dict[int, tuple[int, float | None]] = {}
    for entry in entries:
        ok = isinstance(entry, dict) and isinstance(entry.get("id"), int) and isinstance(entry.get("class", 1), int)
        score = entry.get("score") if isinstance(entry, dict) else None
        if not ok or not (score is None or isinstance(score, (int, float))):
            raise InputError(f"{path}: entry {entry!r:.80} is not {{\"id\": int, \"class\": int, \"score\": number}}")
        info[int(entry["id"])] = (int(entry.get("class", 1)), None if score is None else float(score))
    missing = sorted(set(np.unique(ids).tolist()) - set(info) - {0})
    if missing:
        raise InputError(f"{path}: instance id(s) {missing[:MAX_LISTED]} of {png.name} are not listed")
    return ids, info


__all__ += ["PREDICTION_SUFFIX", "read_instance_prediction"]


def validate_instance_dataset(ds: InstanceDataset) -> None:
    """Decode every image's instances and raise one error listing every bad file.

    Checks: what :func:`read_instances` refuses (unreadable masks, bad label lines, ids without a
    class, undecodable segmentations), mask sizes that differ from the image's, class ids that are
    not in ``ds.class_names``.

    Raises:
        InputError: one message, one line per problem (the first :data:`MAX_LISTED`, then a count).
    """
    problems: list[str] = []
    for item in ds.items:
        try:
            instances = item.read()
        except InputError as exc:
            problems.append(str(exc))
            continue
        where = item.annotation or item.image
        shapes = sorted({i.mask.shape for i in instances if i.mask.shape != item.size})
        if shapes:
            problems.append(f"{where}: masks of {shapes[0]} for an image of {item.size} (H, W)")
        unknown = sorted({i.class_id for i in instances} - set(ds.class_names))
        if unknown:
            problems.append(f"{where}: class id(s) {unknown[:MAX_LISTED]} are not in the class names "
                            f"({', '.join(map(str, sorted(ds.class_names)[:MAX_LISTED]))})")
    if problems:
        shown = problems[:MAX_LISTED] + ([f"... and {len(problems) - MAX_LISTED} more"]
                                         if len(problems) > MAX_LISTED else [])
        raise InputError(f"{ds.root}: {len(problems)} problem(s) in the {ds.format} dataset of {len(ds.items)} "
                         "images:\n  " + "\n  ".join(shown))


__all__ += ["validate_instance_dataset"]
