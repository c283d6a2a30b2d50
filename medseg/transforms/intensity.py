"""The one vocabulary of intensity normalisations, used by training, both predictors and SAM2.

A normalisation is a small dict, ``{"kind": NAME, ...options}``, stored in a plan and in an
export's ``model.json`` (``preprocessing.normalization``). The same name means the same
arithmetic everywhere: the volume predictor, the image predictor (``medseg predict-images``),
training and SAM2's windowing all call :func:`normalize_intensity`, so an export is
normalised identically whichever command runs it.

Kinds (:data:`NORMALIZATIONS`):

- ``none``: cast to float32.
- ``ct``: clip to ``clip`` = ``[lo, hi]`` (HU; optional), then ``(x - mean) / std``
  (dataset statistics from the plan).
- ``zscore``: per image (and channel): clip to the ``percentiles`` (default ``[0.5, 99.5]``)
  of the nonzero values (all values when none is nonzero, or with ``nonzero: false``), then
  subtract the mean and divide by the standard deviation of those clipped values. Every
  value is transformed. ``{"kind": "zscore", "percentiles": [0, 100], "nonzero": false}``
  is the plain per-image mean/std.
- ``scale``: divide by ``max`` (default: 65535 for 16-bit input, else 255) -> 0..1.
- ``imagenet``: ``scale``, then per channel ``(x - mean_c) / std_c`` with the ImageNet
  statistics (a 1-channel image uses their averages 0.449 / 0.226).
- ``window``: CT window ``level``/``width`` (HU) mapped to 0..255, clipped (SAM2's CT input).
- ``percentile_window``: the ``percentiles`` of the nonzero finite values mapped to 0..255,
  clipped (SAM2's MR input; NaN counts as the low end).
- ``clip255``: values clipped to 0..255 (input already in 8-bit range).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from medseg.errors import ConfigError

#: kind -> one line saying what it computes
NORMALIZATIONS: dict[str, str] = {
    "ct": "clip to [lo, hi] HU, then (x - mean) / std",
    "zscore": "clip to percentiles of nonzero values, then z-score of those values",
    "none": "float32 cast",
    "scale": "divide by the full range (255, or 65535 for 16-bit) -> 0..1",
    "imagenet": "scale to 0..1, then ImageNet mean/std per channel",
    "window": "CT window level/width (HU) -> 0..255",
    "percentile_window": "percentiles of nonzero values -> 0..255",
    "clip255": "clip to 0..255",
}
NORMALIZATION_KINDS = tuple(NORMALIZATIONS)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SAMPLE_LIMIT = 2_000_000  # percentiles of a regular subsample above this many values: same result, faster


def normalize_intensity(
    array: np.ndarray, spec: Mapping[str, Any] | None, *, channel: int | None = None, channels: int = 1
) -> np.ndarray:
    """Normalise one channel's intensities as ``spec`` says; a new float32 array of the same shape.

    Args:
        array: intensities of one channel, any shape.
        spec: ``{"kind": ..., options}`` (``None`` means ``{"kind": "none"}``).
        channel, channels: which channel of how many this is (``imagenet`` only).

    Raises:
        ConfigError: unknown ``kind`` (lists the known ones) or a bad option (names it).

    Example:
        >>> normalize_intensity(np.array([-1000.0, 60.0, 1000.0]),
        ...                     {"kind": "ct", "clip": [-160, 240], "mean": 60, "std": 50}).tolist()
        [-4.400000095367432, 0.0, 3.5999999046325684]
        >>> normalize_intensity(np.array([-1000.0, 40.0, 240.0]), {"kind": "window", "level": 40, "width": 400}).tolist()
        [0.0, 127.5, 255.0]
    """
    spec = spec or {"kind": "none"}
    kind = str(spec.get("kind", "")).lower()
    function = _KINDS.get(kind)
    if function is None:
        raise ConfigError(f"normalization.kind {spec.get('kind')!r} is not supported; valid kinds: "
                          f"{', '.join(NORMALIZATION_KINDS)}")
    if kind == "imagenet":
        return _imagenet(array, spec, channel or 0, channels)
    return function(array, spec)


def normalize_channels(array: np.ndarray, spec: Mapping[str, Any] | None, *, channel_axis: int) -> np.ndarray:
    """:func:`normalize_intensity` applied to each channel along ``channel_axis``; float32."""
    moved = np.moveaxis(np.asarray(array), channel_axis, 0)
    n = moved.shape[0]
    out = np.stack([normalize_intensity(moved[c], spec, channel=c, channels=n) for c in range(n)])
    return np.moveaxis(out, 0, channel_axis)


def check_normalization(spec: Mapping[str, Any] | None) -> None:
    """Raise :class:`ConfigError` when ``spec`` is not a valid normalisation (before any work)."""
    normalize_intensity(np.array([0.0, 1.0, 2.0], np.float32), spec)


def _none(x: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    return np.array(x, dtype=np.float32)


def _ct(x: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    out = np.array(x, dtype=np.float32)
    clip = spec.get("clip")
    if clip is not None:
        lo, hi = _pair(clip, "normalization.clip")
        np.clip(out, lo, hi, out=out)
    std = float(spec.get("std", 1.0))
    if not np.isfinite(std) or std <= 0:
        raise ConfigError(f"normalization.std must be a positive number, got {spec.get('std')!r}")
    out -= np.float32(float(spec.get("mean", 0.0)))
    out /= np.float32(std)
    return out


def _zscore(x: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    p_lo, p_hi = _percentiles(spec)
    mask = x != 0
    values = x[mask] if (spec.get("nonzero", True) and mask.any()) else x.ravel()
    if values.size == 0:
        return x.copy()
    lo, hi = np.percentile(values.astype(np.float64), [p_lo, p_hi])
    out = np.clip(x, np.float32(lo), np.float32(hi))
    clipped = np.clip(values.astype(np.float64), lo, hi)
    out -= np.float32(clipped.mean())
    out /= np.float32(max(float(clipped.std()), 1e-8))
    return out


def _full_range(x: np.ndarray, spec: Mapping[str, Any]) -> float:
    full = spec.get("max")
    if full is None:
        return 65535.0 if np.asarray(x).dtype == np.uint16 else 255.0
    if not float(full) > 0:
        raise ConfigError(f"normalization.max must be > 0, got {full!r}")
    return float(full)


def _scale(x: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    return np.asarray(x, dtype=np.float32) / np.float32(_full_range(x, spec))


def _imagenet(x: np.ndarray, spec: Mapping[str, Any], channel: int, channels: int) -> np.ndarray:
    mean = IMAGENET_MEAN[channel % 3] if channels == 3 else float(np.mean(IMAGENET_MEAN))
    std = IMAGENET_STD[channel % 3] if channels == 3 else float(np.mean(IMAGENET_STD))
    return (_scale(x, spec) - np.float32(mean)) / np.float32(std)


def _window(x: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    level, width = float(spec.get("level", 40.0)), float(spec.get("width", 400.0))
    if not width > 0:
        raise ConfigError(f"normalization.width must be > 0 HU, got {width}")
    out = np.array(x, dtype=np.float32)  # a copy; then in place (volumes can be large)
    out -= np.float32(level - width / 2.0)
    out *= np.float32(255.0 / width)
    return np.clip(out, 0.0, 255.0, out=out)


def _percentile_window(x: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    low, high = _percentiles(spec)
    finite = arr[np.isfinite(arr)]
    sample = finite[finite != 0] if np.any(finite != 0) else finite
    if sample.size == 0:
        return np.zeros(arr.shape, dtype=np.float32)
    if sample.size > _SAMPLE_LIMIT:
        sample = sample[:: sample.size // (_SAMPLE_LIMIT // 2)]
    lo, hi = np.percentile(sample, [low, high])
    if not hi > lo:
        return np.zeros(arr.shape, dtype=np.float32)
    out = np.nan_to_num(arr, nan=float(lo), copy=True)
    out -= np.float32(lo)
    out *= np.float32(255.0 / (hi - lo))
    return np.clip(out, 0.0, 255.0, out=out)


def _clip255(x: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.float32), 0.0, 255.0)


def _percentiles(spec: Mapping[str, Any]) -> tuple[float, float]:
    lo, hi = _pair(spec.get("percentiles", (0.5, 99.5)), "normalization.percentiles")
    if not 0.0 <= lo < hi <= 100.0:
        raise ConfigError(f"normalization.percentiles must satisfy 0 <= lo < hi <= 100, got {[lo, hi]}")
    return lo, hi


def _pair(value: Any, key: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a list of two numbers, got {value!r}") from None
    if not lo <= hi:
        raise ConfigError(f"{key} must be [low, high] with low <= high, got {[lo, hi]}")
    return lo, hi


_KINDS = {"none": _none, "ct": _ct, "zscore": _zscore, "scale": _scale, "imagenet": _imagenet,
          "window": _window, "percentile_window": _percentile_window, "clip255": _clip255}

__all__ = ["NORMALIZATIONS", "NORMALIZATION_KINDS", "normalize_intensity", "normalize_channels",
           "check_normalization", "IMAGENET_MEAN", "IMAGENET_STD"]
