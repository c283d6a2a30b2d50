"""Intensity preprocessing for SAM2: CT windowing and MR percentile scaling (one vocabulary).

SAM2 expects an RGB image with values in ``[0, 255]`` that it normalises with the
ImageNet mean and standard deviation. Medical volumes are mapped to that range
*once per volume* (so that every slice of a propagation sees the same mapping), then
each slice is resized to the model's square input and replicated to 3 channels.

Numpy only at import time; torch is imported inside :func:`slice_to_tensor`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.transforms.intensity import IMAGENET_MEAN, IMAGENET_STD, normalize_intensity
from medseg.volume import Volume

#: Preset CT windows, name -> (level, width) in Hounsfield units.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "abdomen": (40.0, 400.0),
    "soft_tissue": (50.0, 350.0),
    "liver": (60.0, 160.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "wide": (40.0, 2000.0),
}

#: ImageNet statistics SAM2 normalises its 0..1 RGB input with: ``IMAGENET_MEAN`` / ``IMAGENET_STD``
#: of :mod:`medseg.transforms.intensity` (imported above).

_MODES = ("auto", "ct", "mr", "none")


@dataclass(frozen=True)
class Preprocess:
    """How a volume's intensities become SAM2's 8-bit-range input.

    Attributes:
        mode: ``"ct"`` (window in HU), ``"mr"`` (percentile scaling, any modality
            without calibrated units), ``"none"`` (values already in ``[0, 255]``), or
            ``"auto"``: ``"ct"`` when ``meta["modality"] == "CT"``, else ``"mr"``.
        window: a :data:`CT_WINDOWS` preset name, used when ``level``/``width`` are unset.
        level: custom window centre in HU (with ``width``).
        width: custom window width in HU (> 0).
        percentiles: lower and upper percentile (0..100) of the non-zero voxels mapped
            to 0 and 255 in MR mode.
    """

    mode: str = "auto"
    window: str = "abdomen"
    level: float | None = None
    width: float | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ConfigError(f"preprocess.mode must be one of {', '.join(_MODES)}, got {self.mode!r}")
        if (self.level is None) != (self.width is None):
            raise ConfigError("preprocess: give both level and width for a custom CT window, or neither")
        if self.width is not None and not self.width > 0:
            raise ConfigError(f"preprocess.width must be > 0 HU, got {self.width}")
        if self.level is None and self.window not in CT_WINDOWS:
            raise ConfigError(
                f"preprocess.window: unknown CT window {self.window!r}; known: {', '.join(CT_WINDOWS)}"
            )
        lo, hi = (float(p) for p in self.percentiles)
        if not 0.0 <= lo < hi <= 100.0:
            raise ConfigError(f"preprocess.percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        object.__setattr__(self, "percentiles", (lo, hi))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Preprocess":
        """Build from a config mapping (unknown keys raise :class:`ConfigError`)."""
        data = dict(data or {})
        known = {"mode", "window", "level", "width", "percentiles"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"preprocess: unknown key(s) {', '.join(unknown)}; accepted: {', '.join(sorted(known))}")
        if "percentiles" in data:
            data["percentiles"] = tuple(data["percentiles"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form (inverse of :meth:`from_dict`)."""
        return {
            "mode": self.mode,
            "window": self.window,
            "level": self.level,
            "width": self.width,
            "percentiles": list(self.percentiles),
        }

    def resolved_mode(self, volume: Volume) -> str:
        """``"ct"``, ``"mr"`` or ``"none"`` for this volume (``auto`` looks at ``meta['modality']``)."""
        if self.mode != "auto":
            return self.mode
        return "ct" if str(volume.meta.get("modality", "")).upper() == "CT" else "mr"

    def normalization(self, volume: Volume) -> dict[str, Any]:
        """The :mod:`medseg.transforms.intensity` spec this mapping means for ``volume``."""
        mode = self.resolved_mode(volume)
        if mode == "ct":
            level, width = self.ct_window()
            return {"kind": "window", "level": level, "width": width}
        if mode == "mr":
            return {"kind": "percentile_window", "percentiles": list(self.percentiles)}
        return {"kind": "clip255"}

    def ct_window(self) -> tuple[float, float]:
        """``(level, width)`` in HU of the CT window."""
        if self.level is not None and self.width is not None:
            return float(self.level), float(self.width)
        return CT_WINDOWS[self.window]


def window_ct(array: np.ndarray, level: float, width: float) -> np.ndarray:
    """Map HU to ``[0, 255]`` float32 (the ``window`` normalisation): ``level - width/2`` -> 0, ``+ width/2`` -> 255.

    Example:
        >>> window_ct(np.array([-1000.0, 40.0, 240.0]), 40, 400).tolist()
        [0.0, 127.5, 255.0]
    """
    return normalize_intensity(array, {"kind": "window", "level": level, "width": width})


def scale_percentiles(array: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Map the ``low``..``high`` percentiles of the non-zero voxels to ``[0, 255]`` (``percentile_window``).

    A constant image maps to zeros.
    """
    return normalize_intensity(array, {"kind": "percentile_window", "percentiles": [low, high]})


def scale_volume(volume: Volume, preprocess: Preprocess | None = None) -> np.ndarray:
    """The whole volume mapped to SAM2's ``[0, 255]`` float32 range, shape ``[i, j, k]`` (or 2D).

    Raises:
        InputError: a multi-channel volume (SAM2 takes one grey channel replicated).
    """
    pre = preprocess or Preprocess()
    if volume.channel_first:
        raise InputError(f"SAM2 takes a single-channel volume, got array shape {volume.shape}")
    return normalize_intensity(volume.array, pre.normalization(volume))


def take_slice(array: np.ndarray, slice_index: int, axis: int) -> np.ndarray:
    """The 2D plane ``array`` at ``slice_index`` along ``axis``; rows/cols are the other two axes in order.

    Raises:
        InputError: axis not in 0..2 or index out of range.
    """
    if array.ndim != 3:
        raise InputError(f"expected a 3D array [i, j, k], got shape {array.shape}")
    if axis not in (0, 1, 2):
        raise InputError(f"slice axis must be 0, 1 or 2 (i, j, k), got {axis}")
    n = array.shape[axis]
    if not 0 <= slice_index < n:
        raise InputError(f"slice index {slice_index} is outside 0..{n - 1} along axis {axis}")
    return np.take(array, int(slice_index), axis=axis)


def slice_to_tensor(plane: np.ndarray, image_size: int, device: Any = "cpu") -> Any:
    """A ``[rows, cols]`` plane in ``[0, 255]`` -> SAM2 input tensor ``[3, S, S]`` (resized, normalised).

    Resizing is bilinear to the square ``image_size`` (aspect ratio not kept, as in SAM2).
    """
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.ascontiguousarray(plane, dtype=np.float32), device=device)[None, None] / 255.0
    if t.shape[-2:] != (image_size, image_size):
        t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return ((t.expand(1, 3, -1, -1) - mean) / std)[0]


__all__ = [
    "CT_WINDOWS",
    "Preprocess",
    "window_ct",
    "scale_percentiles",
    "scale_volume",
    "take_slice",
    "slice_to_tensor",
]
