"""Class labels of ordinary-image datasets: :class:`LabelSpec` (raw mask value -> train index) and the
published label tables of Cityscapes, PASCAL VOC and COCO-Stuff.

A mask on disk holds *raw* values; training and scoring use *train indices* ``0..K-1`` plus one
``ignore_index`` (left out of loss and metrics). :meth:`LabelSpec.apply` maps one to the other
with a lookup table; a raw value that is neither a class nor ignore after mapping is an error,
never silently a class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError

LABEL_KEYS = ("names", "ignore_index", "reduce_zero_label", "id_mapping")
_BAD = -1  # lookup-table entry of a raw value that is neither a class nor ignore

#: Cityscapes labels as cityscapesScripts' ``helpers/labels.py``: (name, labelId, trainId, colour);
#: trainId 255 = ignored in training and evaluation (license plate, id -1, never occurs in labelIds PNGs).
CITYSCAPES_LABELS: tuple[tuple[str, int, int, tuple[int, int, int]], ...] = (
    ("unlabeled", 0, 255, (0, 0, 0)), ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)), ("out of roi", 3, 255, (0, 0, 0)),
    ("static", 4, 255, (0, 0, 0)), ("dynamic", 5, 255, (111, 74, 0)), ("ground", 6, 255, (81, 0, 81)),
    ("road", 7, 0, (128, 64, 128)), ("sidewalk", 8, 1, (244, 35, 232)), ("parking", 9, 255, (250, 170, 160)),
    ("rail track", 10, 255, (230, 150, 140)), ("building", 11, 2, (70, 70, 70)), ("wall", 12, 3, (102, 102, 156)),
    ("fence", 13, 4, (190, 153, 153)), ("guard rail", 14, 255, (180, 165, 180)),
    ("bridge", 15, 255, (150, 100, 100)), ("tunnel", 16, 255, (150, 120, 90)), ("pole", 17, 5, (153, 153, 153)),
    ("polegroup", 18, 255, (153, 153, 153)), ("traffic light", 19, 6, (250, 170, 30)),
    ("traffic sign", 20, 7, (220, 220, 0)), ("vegetation", 21, 8, (107, 142, 35)),
    ("terrain", 22, 9, (152, 251, 152)), ("sky", 23, 10, (70, 130, 180)), ("person", 24, 11, (220, 20, 60)),
    ("rider", 25, 12, (255, 0, 0)), ("car", 26, 13, (0, 0, 142)), ("truck", 27, 14, (0, 0, 70)),
    ("bus", 28, 15, (0, 60, 100)), ("caravan", 29, 255, (0, 0, 90)), ("trailer", 30, 255, (0, 0, 110)),
    ("train", 31, 16, (0, 80, 100)), ("motorcycle", 32, 17, (0, 0, 230)), ("bicycle", 33, 18, (119, 11, 32)),
    ("license plate", -1, -1, (0, 0, 142)),
)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

#: the 171 COCO-Stuff 164k classes in train-index order (80 things, then 91 stuff)
COCO_STUFF_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush", "banner", "blanket", "branch", "bridge", "building-other",
    "bush", "cabinet", "cage", "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes",
    "clouds", "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other", "fruit",
    "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves", "light", "mat", "metal",
    "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other",
    "plastic", "platform", "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug",
    "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone",
    "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick",
    "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other",
    "waterdrops", "window-blind", "window-other", "wood",
)
#: raw ``stuffthingmaps`` ids (0-based, 0..181) that no COCO-Stuff 164k class uses
COCO_STUFF_UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)


def _names(seq: Any) -> dict[int, str]:
    return {i: str(n) for i, n in enumerate(seq)}


@dataclass(frozen=True)
class LabelSpec:
    """How raw mask values become train indices.

    Attributes:
        names: train index -> class name, indices ``0..K-1`` contiguous.
        ignore_index: the mask value left out of loss and metrics (raw and train side alike).
        reduce_zero_label: raw 0 -> ignore, raw ``k`` -> ``k - 1`` (the ADE20K convention).
        id_mapping: raw value -> train index (or ``ignore_index``); raw values it does not list,
            other than ``ignore_index`` itself, are errors.

    Example:
        >>> spec = LabelSpec({0: "wall", 1: "floor"}, reduce_zero_label=True)
        >>> spec.apply(np.array([[0, 1, 2, 255]])).tolist()
        [[255, 0, 1, 255]]
        >>> spec.bad_values(np.array([[3, 1]]))
        [3]
    """

    names: dict[int, str]
    ignore_index: int = 255
    reduce_zero_label: bool = False
    id_mapping: dict[int, int] | None = None

    def __post_init__(self) -> None:
        k = len(self.names)
        if k == 0 or sorted(self.names) != list(range(k)):
            raise ConfigError(f"names: class indices must be 0..K-1 without gaps, got {sorted(self.names)[:12]}")
        if not isinstance(self.ignore_index, int) or isinstance(self.ignore_index, bool) or \
                not 0 <= self.ignore_index <= 65535:
            raise ConfigError(f"ignore_index: expected an integer 0..65535, got {self.ignore_index!r}")
        if self.ignore_index < k:
            raise ConfigError(f"ignore_index: {self.ignore_index} is a class index (classes are 0..{k - 1}); "
                              "give an ignore_index of K or more (255 by convention)")
        if self.id_mapping is not None:
            if self.reduce_zero_label:
                raise ConfigError("reduce_zero_label: cannot be combined with id_mapping (whose keys are raw "
                                  "values); write the zero reduction into id_mapping")
            bad = sorted({t for t in self.id_mapping.values() if not (0 <= t < k or t == self.ignore_index)})
            if bad:
                raise ConfigError(f"id_mapping: target(s) {bad} are neither a class (0..{k - 1}) nor "
                                  f"ignore_index {self.ignore_index}")

    @property
    def num_classes(self) -> int:
        """``K``, the number of train classes."""
        return len(self.names)

    @cached_property
    def _lut(self) -> np.ndarray:
        """raw value -> train index (``_BAD`` for values that are neither)."""
        k, ign = self.num_classes, self.ignore_index
        keys = list(self.id_mapping) if self.id_mapping else []
        lut = np.full(max([k + 1, ign + 1, 256] + [r + 1 for r in keys]), _BAD, dtype=np.int64)
        if self.id_mapping is not None:
            for raw, train in self.id_mapping.items():
                lut[raw] = train
        elif self.reduce_zero_label:
            lut[0] = ign
            lut[1:k + 1] = np.arange(k)
        else:
            lut[:k] = np.arange(k)
        if self.id_mapping is None or ign not in self.id_mapping:
            lut[ign] = ign
        return lut

    def _lookup(self, raw: np.ndarray) -> np.ndarray:
        arr = np.asarray(raw)
        if arr.dtype.kind not in "biu":
            raise InputError(f"mask of dtype {arr.dtype}: expected integer label values")
        lut = self._lut
        top = int(arr.max()) if arr.size else 0
        if top >= len(lut):
            lut = np.concatenate([lut, np.full(top + 1 - len(lut), _BAD, dtype=np.int64)])
        return lut[arr]

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Raw mask ``[H, W]`` -> train indices ``[H, W]`` ``int64`` (``ignore_index`` kept).

        Raises:
            InputError: the mask holds values that are neither a class nor ignore (named).
        """
        out = self._lookup(raw)
        if (out == _BAD).any():
            raise InputError(f"mask values {self._bad(raw, out)} {self.describe_bad()}")
        return out

    def bad_values(self, raw: np.ndarray) -> list[int]:
        """Raw values of ``raw`` that are neither a class nor ignore after mapping (sorted)."""
        out = self._lookup(raw)
        return self._bad(raw, out) if (out == _BAD).any() else []

    @staticmethod
    def _bad(raw: np.ndarray, out: np.ndarray) -> list[int]:
        return [int(v) for v in np.unique(np.asarray(raw)[out == _BAD])]

    def describe_bad(self) -> str:
        """Why a value is bad, in words: what the raw values may be."""
        k, ign = self.num_classes, self.ignore_index
        if self.id_mapping is not None:
            return f"are not in labels.id_mapping (raw values {_ranges(sorted(self.id_mapping))}) nor ignore {ign}"
        if self.reduce_zero_label:
            return f"are not classes: with reduce_zero_label raw values are 0 (ignore), 1..{k} or {ign}"
        return f"are not classes 0..{k - 1} nor ignore {ign}"


def _ranges(values: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    parts: list[str] = []
    for v in values:
        if parts and isinstance(parts[-1], str) and parts[-1].split("-")[-1] == str(v - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{v}"
        else:
            parts.append(str(v))
    return ", ".join(parts)


def _int(value: Any, key: str, *, low: int = 0, high: int = 65535) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: expected an integer, got {value!r}") from exc
    if str(number) != str(value).strip() or not low <= number <= high:
        raise ConfigError(f"{key}: expected an integer {low}..{high}, got {value!r}")
    return number


def _parse_names(value: Any, key: str) -> dict[int, str]:
    if isinstance(value, (list, tuple)):
        items = list(enumerate(value))
    elif isinstance(value, Mapping):
        items = [(_int(k, f"{key}[{k!r}]"), v) for k, v in value.items()]
    else:
        raise ConfigError(f"{key}: expected a list of class names or {{index: name}}, got {value!r}")
    if not all(isinstance(n, str) and n for _, n in items):
        raise ConfigError(f"{key}: every class name must be a non-empty string, got {[n for _, n in items]}")
    return dict(sorted(items))


def label_spec(block: Mapping[str, Any] | None, *, defaults: LabelSpec | None = None,
               where: str = "labels") -> LabelSpec:
    """The :class:`LabelSpec` of a config ``labels:`` block; its values override ``defaults`` (the layout's).

    Keys: ``names`` (a list, or ``{index: name}``), ``ignore_index``, ``reduce_zero_label``,
    ``id_mapping`` (``{raw: train}``). Giving ``id_mapping`` drops the layout's
    ``reduce_zero_label`` and giving ``reduce_zero_label`` drops its ``id_mapping``
    (each replaces the layout's raw-value handling).

    Raises:
        ConfigError: an unknown key or bad value (names ``where.key``), or no class names at all.
    """
    block = dict(block or {})
    unknown = sorted(set(block) - set(LABEL_KEYS))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; known: {', '.join(LABEL_KEYS)}")
    block = {k: v for k, v in block.items() if v is not None}
    fields: dict[str, Any] = {}
    if "names" in block:
        fields["names"] = _parse_names(block["names"], f"{where}.names")
    if "ignore_index" in block:
        fields["ignore_index"] = _int(block["ignore_index"], f"{where}.ignore_index")
    if "reduce_zero_label" in block:
        if not isinstance(block["reduce_zero_label"], bool):
            raise ConfigError(f"{where}.reduce_zero_label: expected true or false, got {block['reduce_zero_label']!r}")
        fields["reduce_zero_label"] = block["reduce_zero_label"]
        if "id_mapping" not in block and block["reduce_zero_label"]:
            fields["id_mapping"] = None
    if "id_mapping" in block:
        mapping = block["id_mapping"]
        if not isinstance(mapping, Mapping) or not mapping:
            raise ConfigError(f"{where}.id_mapping: expected {{raw value: train index}}, got {mapping!r}")
        key = f"{where}.id_mapping"
        fields["id_mapping"] = {_int(r, f"{key}[{r!r}]"): _int(t, f"{key}[{r!r}]") for r, t in mapping.items()}
        fields.setdefault("reduce_zero_label", False)
    if defaults is None and "names" not in fields:
        raise ConfigError(f"{where}.names: missing; this dataset gives no class names, so list them here")
    try:
        return replace(defaults, **fields) if defaults is not None else LabelSpec(**fields)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc}") from exc


def cityscapes_labels() -> LabelSpec:
    """The 19 Cityscapes train classes read from ``*_gtFine_labelIds.png`` (other ids -> 255)."""
    names = {t: n for n, _, t, _ in CITYSCAPES_LABELS if 0 <= t < 255}
    return LabelSpec(names, id_mapping={i: t for _, i, t, _ in CITYSCAPES_LABELS if i >= 0})


def cityscapes_train_id_labels() -> LabelSpec:
    """The 19 Cityscapes train classes read from ``*_gtFine_labelTrainIds.png`` (already train indices)."""
    return replace(cityscapes_labels(), id_mapping=None)


def coco_stuff_labels(*, raw: bool) -> LabelSpec:
    """COCO-Stuff 164k's 171 classes: from ``*_labelTrainIds.png`` (``raw=False``) or from the raw
    ``stuffthingmaps`` ids 0..181 (``raw=True``, mapped as mmsegmentation's converter does)."""
    spec = LabelSpec(_names(COCO_STUFF_CLASSES))
    if not raw:
        return spec
    used = [i for i in range(182) if i not in COCO_STUFF_UNUSED_IDS]
    return replace(spec, id_mapping={r: t for t, r in enumerate(used)})


def voc_labels() -> LabelSpec:
    """The 21 PASCAL VOC classes (palette index = class, 255 = the ignored object borders)."""
    return LabelSpec(_names(VOC_CLASSES))


def numbered_labels(count: int, *, first: int = 0, **options: Any) -> LabelSpec:
    """``class_<first>..`` names when a dataset ships none (said so, not invented)."""
    return LabelSpec({i: f"class_{i + first}" for i in range(count)}, **options)


__all__ = [
    "LabelSpec", "label_spec", "LABEL_KEYS", "CITYSCAPES_LABELS", "VOC_CLASSES", "COCO_STUFF_CLASSES",
    "COCO_STUFF_UNUSED_IDS", "cityscapes_labels", "cityscapes_train_id_labels", "coco_stuff_labels",
    "voc_labels", "numbered_labels",
]
