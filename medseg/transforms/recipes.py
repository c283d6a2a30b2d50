"""MONAI dictionary-transform recipes composed from YAML, with checked names and arguments.

A recipe file (shipped ones: ``medseg/configs/transforms/*.yaml``, named ``ct_3d``, ``mri_2d``)
has up to three lists of steps:

.. code-block:: yaml

    preprocess:            # deterministic, run once per case and cached
      - MedsegOrientd: {}
      - MedsegSpacingd: {}
      - MedsegNormalized: {}
    train:                 # random sampling and augmentation, run per sample
      - RandCropByPosNegLabeld: {spatial_size: "@patch_size", pos: 2, neg: 1}
      - RandFlipd: {spatial_axis: 0, prob: 0.5}
    val: []

Each step is ``{TransformName: {argument: value}}``. Names must be in :data:`ALLOWED`
(MONAI transforms by name, plus the medseg ones below); no import path is ever read
from a config. ``keys`` defaults to ``[image, label]`` (``[image]`` for intensity
transforms). String values ``"@name"`` are replaced from the context (``patch_size``,
``spatial_dims``, ...). The ``Medsegxxxd`` steps call :mod:`medseg.transforms.preprocess`,
the one implementation shared with inference; they take ``Volume`` values and
``MedsegToArrayd`` turns them into channel-first float32 / int16 numpy arrays.

This module imports MONAI at import time; nothing under ``import medseg`` imports it.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import MapTransform

from medseg.errors import ConfigError
from medseg.volume import Volume

log = logging.getLogger(__name__)

# MONAI dictionary transforms a recipe may name; value: applies to the label too?
MONAI_ALLOWED: dict[str, bool] = {
    "CropForegroundd": True,
    "SpatialPadd": True,
    "CenterSpatialCropd": True,
    "RandSpatialCropd": True,
    "RandCropByPosNegLabeld": True,
    "RandCropByLabelClassesd": True,
    "RandFlipd": True,
    "RandAxisFlipd": True,
    "RandRotate90d": True,
    "RandRotated": True,
    "RandZoomd": True,
    "RandAffined": True,
    "Rand2DElasticd": True,
    "Rand3DElasticd": True,
    "SqueezeDimd": True,
    "RandScaleIntensityd": False,
    "RandShiftIntensityd": False,
    "RandAdjustContrastd": False,
    "RandGaussianNoised": False,
    "RandGaussianSmoothd": False,
    "RandHistogramShiftd": False,
    "RandBiasFieldd": False,
    "ScaleIntensityRanged": False,
    "NormalizeIntensityd": False,
    "EnsureTyped": True,
    "FgBgToIndicesd": True,
    "ClassesToIndicesd": True,
}
MEDSEG_TRANSFORMS = ("MedsegOrientd", "MedsegSpacingd", "MedsegNormalized", "MedsegToArrayd")
ALLOWED = tuple(sorted(MEDSEG_TRANSFORMS + tuple(MONAI_ALLOWED)))
SECTIONS = ("preprocess", "train", "val")
# transforms that interpolate: images get (bi/tri)linear, labels nearest, unless ``mode`` is given
_INTERPOLATING = ("RandRotated", "RandZoomd", "RandAffined", "Rand2DElasticd", "Rand3DElasticd")


class MedsegOrientd(MapTransform):
    """Reorient ``Volume`` values to ``orientation`` (exact; :func:`to_canonical`)."""

    def __init__(self, keys: Any = ("image", "label"), orientation: str = "RAS", allow_missing_keys: bool = True):
        super().__init__(keys, allow_missing_keys)
        self.orientation = orientation

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        from medseg.transforms.preprocess import to_canonical

        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = to_canonical(d[key], self.orientation)
        return d


class MedsegSpacingd(MapTransform):
    """Resample ``Volume`` values to ``spacing_mm`` (:func:`resample_to_spacing`; labels order 0)."""

    def __init__(self, keys: Any = ("image", "label"), spacing_mm: Any = None, image_order: int = 1,
                 allow_missing_keys: bool = True):
        super().__init__(keys, allow_missing_keys)
        self.spacing_mm = spacing_mm
        self.image_order = image_order

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        from medseg.transforms.preprocess import resample_to_spacing

        d = dict(data)
        if self.spacing_mm is None:
            return d
        for key in self.key_iterator(d):
            vol: Volume = d[key]
            d[key] = resample_to_spacing(vol, list(self.spacing_mm)[: vol.ndim],
                                         order=0 if vol.is_label else self.image_order)
        return d


class MedsegNormalized(MapTransform):
    """Normalise image intensities per the plan (:func:`normalize_intensity`, per channel)."""

    def __init__(self, keys: Any = ("image",), normalization: Any = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.normalization = dict(normalization or {"kind": "none"})

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        from medseg.transforms.preprocess import normalize_intensity

        d = dict(data)
        for key in self.key_iterator(d):
            vol: Volume = d[key]
            if vol.channel_first:
                arr = np.stack([normalize_intensity(c, self.normalization) for c in vol.array])
            else:
                arr = normalize_intensity(vol.array, self.normalization)
            d[key] = vol.with_array(arr)
        return d


class MedsegToArrayd(MapTransform):
    """``Volume`` -> channel-first numpy array (image float32, label int16); the
    affine goes to ``{key}_affine``."""

    def __init__(self, keys: Any = ("image", "label"), allow_missing_keys: bool = True):
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            vol: Volume = d[key]
            arr = vol.array if vol.channel_first else vol.array[None]
            arr = arr.astype(np.int16 if vol.is_label else np.float32, copy=False)
            d[key] = np.ascontiguousarray(arr)
            d[f"{key}_affine"] = vol.affine.copy()
        return d


_CLASSES: dict[str, type] = {
    c.__name__: c for c in (MedsegOrientd, MedsegSpacingd, MedsegNormalized, MedsegToArrayd)
}




def transform_class(name: str) -> type:
    """The transform class allowed under ``name``; :class:`ConfigError` lists the valid names."""
    if name not in ALLOWED:
        raise ConfigError(f"unknown transform {name!r}; valid names: {', '.join(ALLOWED)}")
    if name in _CLASSES:
        return _CLASSES[name]
    import monai.transforms as mt

    return getattr(mt, name)


def _substitute(value: Any, context: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, str) and value.startswith("@"):
        key = value[1:]
        if key not in context:
            raise ConfigError(f"{where}: {value!r} refers to an unknown value; known: {', '.join('@' + k for k in sorted(context))}")
        return context[key]
    if isinstance(value, list):
        return [_substitute(v, context, where) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, context, where) for k, v in value.items()}
    return value


def build_step(step: Any, context: Mapping[str, Any], *, where: str = "recipe") -> Any:
    """One transform from ``{Name: {args}}`` (or a bare ``Name``), arguments checked."""
    if isinstance(step, str):
        step = {step: {}}
    if not isinstance(step, dict) or len(step) != 1:
        raise ConfigError(f"{where}: each step must be {{TransformName: {{arguments}}}}, got {step!r}")
    (name, args), = step.items()
    args = dict(args or {})
    where = f"{where}.{name}"
    cls = transform_class(name)
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p in params if p not in ("self", "args", "kwargs")]
    unknown = sorted(set(args) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown argument(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    if "keys" in params and "keys" not in args and name not in MEDSEG_TRANSFORMS:
        args["keys"] = ["image", "label"] if MONAI_ALLOWED.get(name, True) else ["image"]
    args = _substitute(args, context, where)
    if name in _INTERPOLATING and "mode" in params and "mode" not in args:
        # images bilinear, labels nearest: one mode per key
        spatial = int(context.get("spatial_dims", 3))
        interp = "trilinear" if spatial == 3 and name == "RandZoomd" else "bilinear"
        args["mode"] = [interp if k == "image" else "nearest" for k in args["keys"]]
    if name in MEDSEG_TRANSFORMS:
        args = {**_medseg_defaults(name, context), **args}
    try:
        return cls(**args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: bad arguments {args}: {exc}") from exc


def _medseg_defaults(name: str, context: Mapping[str, Any]) -> dict[str, Any]:
    pre = context.get("preprocessing", {}) or {}
    if name == "MedsegOrientd":
        return {"orientation": pre.get("orientation", "RAS")}
    if name == "MedsegSpacingd":
        return {"spacing_mm": pre.get("target_spacing_mm"), "image_order": int(pre.get("image_order", 1))}
    if name == "MedsegNormalized":
        return {"normalization": pre.get("normalization", {"kind": "none"})}
    return {}


def load_recipe(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, list[Any]]:
    """Read a recipe (YAML path, shipped recipe name such as ``ct_3d``, or a dict) and check its
    sections; returns ``{section: steps}``."""
    if isinstance(source, Mapping):
        data, where = dict(source), "transforms"
    else:
        from medseg.configs import load_yaml_text, part_path

        path = Path(source)
        if isinstance(source, str) and path.suffix not in (".yaml", ".yml") and not path.is_file():
            path = part_path("transforms", source)
        if not path.is_file():
            raise ConfigError(f"transforms.recipe: no such recipe file {path}")
        data, where = load_yaml_text(path.read_text(encoding="utf-8"), str(path)) or {}, str(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a recipe must be a mapping with sections {', '.join(SECTIONS)}")
    unknown = sorted(set(data) - set(SECTIONS) - {"description"})
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {', '.join(unknown)}; valid: {', '.join(SECTIONS)}")
    out: dict[str, list[Any]] = {}
    for section in SECTIONS:
        steps = data.get(section) or []
        if not isinstance(steps, list):
            raise ConfigError(f"{where}.{section} must be a list of steps")
        for i, step in enumerate(steps):  # check names early, before any data is read
            name = step if isinstance(step, str) else next(iter(step), None) if isinstance(step, dict) else None
            if name is None:
                raise ConfigError(f"{where}.{section}[{i}]: a step must be {{TransformName: {{arguments}}}}")
            transform_class(str(name))
        out[section] = steps
    return out


def build_recipe(recipe: Mapping[str, list[Any]], section: str, context: Mapping[str, Any]) -> Any:
    """A ``monai.transforms.Compose`` of one section of ``recipe``, with ``context`` substituted."""
    from monai.transforms import Compose

    if section not in SECTIONS:
        raise ConfigError(f"unknown recipe section {section!r}; valid: {', '.join(SECTIONS)}")
    steps = [build_step(s, context, where=f"transforms.{section}[{i}]") for i, s in enumerate(recipe.get(section, []))]
    return Compose(steps)


__all__ = ["ALLOWED", "SECTIONS", "MEDSEG_TRANSFORMS", "transform_class", "build_step", "load_recipe", "build_recipe"]
