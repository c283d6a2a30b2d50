"""Deterministic synthetic CT studies with an exact label map.

:func:`make_phantom` draws an abdomen/lower-thorax phantom: body outline with a
subcutaneous fat layer, both lungs, liver (with a hypodense tumour), spleen, both
kidneys in perirenal fat, and a lumbar-like spine of vertebral bodies, discs and
spinous processes. Values are Hounsfield units with Gaussian noise, clipped to the
usual CT range ``[-1024, 3071]``.

The anatomy lives in world space: it is laid out in *body coordinates* ``(u, v, w)``,
the RAS+ offsets from the centre of the field of view divided by the half extent of
the field of view along x (Right), y (Anterior) and z (Superior). So the same seed
gives the same anatomy in world space for any ``orientation`` or ``oblique_deg``,
and every structure fits whatever the shape and spacing. The patient's left is
``u < 0`` (RAS+: x grows to the patient's right).

The seed jitters position and size of every organ and places the tumour, so a
cohort has variation; the same arguments always give identical arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from medseg.errors import ConfigError
from medseg.volume import Volume

#: Label value -> structure name (background is 0).
LABELS: dict[int, str] = {
    1: "liver",
    2: "kidney_left",
    3: "kidney_right",
    4: "spleen",
    5: "lung_left",
    6: "lung_right",
    7: "spine",
    8: "tumour",
}

#: Mean Hounsfield units of each tissue before noise.
HU: dict[str, int] = {
    "air": -1000,
    "fat": -90,
    "soft_tissue": 30,
    "liver": 70,
    "spleen": 50,
    "kidney": 40,
    "lung": -850,
    "cancellous_bone": 350,
    "cortical_bone": 900,
    "disc": 80,
    "tumour": 20,
}

HU_MIN, HU_MAX = -1024, 3071
_CENTRE_RAS = np.array([3.0, 25.0, -120.0])  # world position (RAS+ mm) of the field-of-view centre
_PAIRS = {"L": (0, -1.0), "R": (0, 1.0), "P": (1, -1.0), "A": (1, 1.0), "I": (2, -1.0), "S": (2, 1.0)}
_CHUNK_VOXELS = 1 << 21  # voxels per slab of slices evaluated at once


# ----------------------------------------------------------------------------- geometry
def phantom_affine(
    shape: Sequence[int],
    spacing: Sequence[float],
    *,
    orientation: str = "LPS",
    oblique_deg: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The voxel->RAS+ affine of a phantom grid and the half extents (mm) along x, y, z.

    ``orientation`` gives the direction in which each array axis ``i, j, k`` grows
    (``"LPS"``: i to the patient's left, j posterior, k superior). ``oblique_deg``
    then rotates the grid about its centre by ``R_z(oblique_deg / 2) @ R_x(oblique_deg)``
    (a double-oblique tilt), so every axis is oblique for a non-zero angle.
    """
    code = orientation.upper()
    if len(code) != 3 or any(c not in _PAIRS for c in code) or len({_PAIRS[c][0] for c in code}) != 3:
        raise ConfigError(
            f"orientation {orientation!r} is not a valid axis code; use one letter from each of "
            "L/R, P/A, I/S, e.g. 'LPS' or 'RAS'"
        )
    direction = np.zeros((3, 3))
    half = np.zeros(3)
    for axis, letter in enumerate(code):
        world, sign = _PAIRS[letter]
        direction[world, axis] = sign
        half[world] = shape[axis] * spacing[axis] / 2.0
    if oblique_deg:
        a, b = math.radians(oblique_deg), math.radians(oblique_deg / 2.0)
        rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
        rz = np.array([[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
        direction = rz @ rx @ direction
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(spacing, dtype=np.float64)
    centre_index = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    affine[:3, 3] = _CENTRE_RAS - affine[:3, :3] @ centre_index
    return affine, half


# ----------------------------------------------------------------------------- anatomy
@dataclass(frozen=True)
class _Shape:
    """One painting step: a normalized bounding box and a painter on sub-box views."""

    lo: np.ndarray  # body-coordinate bounding box (u, v, w)
    hi: np.ndarray
    paint: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]


def _set(target: np.ndarray, mask: np.ndarray, value: int) -> None:
    """``target[mask] = value`` in place (views included), without fancy indexing."""
    np.copyto(target, value, where=mask, casting="unsafe")


def _ellipsoid(u: np.ndarray, v: np.ndarray, w: np.ndarray, c: np.ndarray, s: np.ndarray) -> np.ndarray:
    # u, v, w may be broadcast views ((n, 1, 1), ...): combine without in-place ops
    return ((u - c[0]) * (1.0 / s[0])) ** 2 + ((v - c[1]) * (1.0 / s[1])) ** 2 + ((w - c[2]) * (1.0 / s[2])) ** 2 <= 1.0


def _box(c: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return c - s, c + s


def _organ(label: int, hu: int, c: np.ndarray, s: np.ndarray) -> _Shape:
    def paint(u, v, w, lab, img):  # type: ignore[no-untyped-def]
        m = _ellipsoid(u, v, w, c, s)
        _set(lab, m, label)
        _set(img, m, hu)

    return _Shape(*_box(c, s), paint)


def _body(a: float, b: float, w0: float) -> _Shape:
    def paint(u, v, w, lab, img):  # type: ignore[no-untyped-def]
        # the outline widens smoothly towards one level of w: scale**2 = (1 + 0.05 (1 - (w - w0)**2))**2
        q = (u * u) * (1.0 / (a * a)) + (v * v) * (1.0 / (b * b))
        scale = w - w0
        scale *= scale
        scale *= -0.05
        scale += 1.05
        scale *= scale
        _set(img, q <= scale, HU["fat"])
        scale *= 0.92**2
        _set(img, q <= scale, HU["soft_tissue"])

    extent = np.array([a * 1.06, b * 1.06, 2.0])
    return _Shape(-extent, extent, paint)


def _kidney(label: int, c: np.ndarray, s: np.ndarray, side: float) -> _Shape:
    hilum_c = c + np.array([side * 0.9 * s[0], 0.0, 0.0])  # notch on the medial side
    hilum_s = s * np.array([0.45, 0.35, 0.3])
    fat_s = s * 1.3

    def paint(u, v, w, lab, img):  # type: ignore[no-untyped-def]
        _set(img, _ellipsoid(u, v, w, c, fat_s) & (lab == 0), HU["fat"])
        m = _ellipsoid(u, v, w, c, s) & ~_ellipsoid(u, v, w, hilum_c, hilum_s)
        _set(lab, m, label)
        _set(img, m, HU["kidney"])

    return _Shape(*_box(c, fat_s), paint)


def _lung(label: int, c: np.ndarray, s: np.ndarray, body_a: float, body_b: float) -> _Shape:
    def paint(u, v, w, lab, img):  # type: ignore[no-untyped-def]
        inner = (u / (body_a * 0.85)) ** 2 + (v / (body_b * 0.85)) ** 2 <= 1.0
        m = _ellipsoid(u, v, w, c, s) & inner
        _set(lab, m, label)
        _set(img, m, HU["lung"])

    return _Shape(*_box(c, s), paint)


def _spine(c_uv: np.ndarray, r: np.ndarray, process_len: float, half: np.ndarray, phase_mm: float) -> _Shape:
    period_mm, disc_mm = 28.0, 5.0

    def paint(u, v, w, lab, img):  # type: ignore[no-untyped-def]
        rad = ((u - c_uv[0]) / r[0]) ** 2 + ((v - c_uv[1]) / r[1]) ** 2
        cyl = rad <= 1.0
        in_vertebra = np.mod(w * half[2] - phase_mm, period_mm) >= disc_mm
        _set(img, cyl & ~in_vertebra, HU["disc"])
        body = cyl & in_vertebra
        process = (
            (np.abs(u - c_uv[0]) <= 0.3 * r[0])
            & (v < c_uv[1] - 0.9 * r[1])
            & (v >= c_uv[1] - r[1] - process_len)
            & in_vertebra
        )
        bone = body | process
        _set(lab, bone, 7)
        _set(img, bone, HU["cortical_bone"])
        _set(img, body & (rad <= 0.72**2), HU["cancellous_bone"])

    lo = np.array([c_uv[0] - r[0], c_uv[1] - r[1] - process_len, -2.0])
    hi = np.array([c_uv[0] + r[0], c_uv[1] + r[1], 2.0])
    return _Shape(lo, hi, paint)


def _tumour(c: np.ndarray, s: np.ndarray) -> _Shape:
    def paint(u, v, w, lab, img):  # type: ignore[no-untyped-def]
        m = _ellipsoid(u, v, w, c, s) & (lab == 1)
        _set(lab, m, 8)
        _set(img, m, HU["tumour"])

    return _Shape(*_box(c, s), paint)


def _anatomy(rng: np.random.Generator, half: np.ndarray, spacing: Sequence[float]) -> list[_Shape]:
    """The painting steps in order (later steps overwrite earlier ones)."""

    def jitter(c: Sequence[float], s: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.asarray(c, dtype=np.float64) + rng.uniform(-0.025, 0.025, 3),
            np.asarray(s, dtype=np.float64) * rng.uniform(0.93, 1.07, 3),
        )

    body_a, body_b = 0.86 * rng.uniform(0.96, 1.04), 0.66 * rng.uniform(0.96, 1.04)
    shapes = [_body(body_a, body_b, rng.uniform(-0.5, 0.5))]
    liver_c, liver_s = jitter((0.33, 0.08, 0.05), (0.40, 0.42, 0.35))
    shapes.append(_organ(1, HU["liver"], liver_c, liver_s))
    shapes.append(_organ(4, HU["spleen"], *jitter((-0.45, -0.15, 0.15), (0.14, 0.20, 0.18))))
    shapes.append(_kidney(2, *jitter((-0.33, -0.30, -0.25), (0.13, 0.14, 0.30)), side=1.0))
    shapes.append(_kidney(3, *jitter((0.33, -0.30, -0.25), (0.13, 0.14, 0.30)), side=-1.0))
    shapes.append(_lung(5, *jitter((-0.38, 0.0, 0.72), (0.30, 0.45, 0.55)), body_a, body_b))
    shapes.append(_lung(6, *jitter((0.38, 0.0, 0.75), (0.32, 0.45, 0.55)), body_a, body_b))
    r_mm = 0.13 * min(half[0], half[1]) * rng.uniform(0.93, 1.07)
    spine_r = np.array([r_mm / half[0], r_mm / half[1]])
    spine_c = np.array([rng.uniform(-0.02, 0.02), -0.33 + rng.uniform(-0.02, 0.02)])
    shapes.append(_spine(spine_c, spine_r, 0.13, half, rng.uniform(0.0, 28.0)))
    # tumour: a sphere (in mm) in the lower, lateral part of the liver, away from the lung dome
    direction = rng.normal(size=3)
    direction[2] = -abs(direction[2])
    direction /= np.linalg.norm(direction)
    centre = liver_c + direction * liver_s * rng.uniform(0.2, 0.5)
    radius_mm = max(0.3 * float(np.min(liver_s * half)) * rng.uniform(0.8, 1.25), 2.0 * max(spacing))
    shapes.append(_tumour(centre, radius_mm / half))
    return shapes


# ----------------------------------------------------------------------------- public API
def _check_args(shape: Sequence[int], spacing: Sequence[float], noise_hu: float, oblique_deg: float) -> None:
    if len(shape) != 3 or any(int(n) != n or n < 1 for n in shape):
        raise ConfigError(f"phantom shape must be 3 positive integers (i, j, k voxels), got {tuple(shape)}")
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ConfigError(f"phantom spacing must be 3 positive finite mm values, got {tuple(spacing)}")
    if not (math.isfinite(noise_hu) and noise_hu >= 0):
        raise ConfigError(f"noise_hu must be a finite value >= 0 HU, got {noise_hu}")
    if not math.isfinite(oblique_deg):
        raise ConfigError(f"oblique_deg must be finite, got {oblique_deg}")


def _index_box(shape_: _Shape, inv: np.ndarray, half: np.ndarray, grid: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Voxel index range [lo, hi) that holds the shape's body-coordinate box (conservative)."""
    corners = np.array([[x, y, z] for x in (shape_.lo[0], shape_.hi[0])
                        for y in (shape_.lo[1], shape_.hi[1]) for z in (shape_.lo[2], shape_.hi[2])])
    world = corners * half + _CENTRE_RAS
    index = world @ inv[:3, :3].T + inv[:3, 3]
    lo = np.clip(np.floor(index.min(axis=0)).astype(int) - 1, 0, grid)
    hi = np.clip(np.ceil(index.max(axis=0)).astype(int) + 2, 0, grid)
    return lo, hi


def _coordinate(row: np.ndarray, offset: float, index: tuple[np.ndarray, ...]) -> np.ndarray:
    """``offset + sum(row[a] * index[a])`` using only the axes it depends on (a broadcast view)."""
    out: np.ndarray | float = offset
    for coef, idx in zip(row, index):
        if coef != 0.0:
            out = out + float(coef) * idx
    return np.asarray(out, dtype=np.float32).reshape([1, 1, 1]) if np.ndim(out) == 0 else out


def _cut(array: np.ndarray, sub: tuple[slice, ...]) -> np.ndarray:
    """``array[sub]`` for an array broadcast along some axes (size 1 there)."""
    return array[tuple(s if n > 1 else slice(None) for s, n in zip(sub, array.shape))]


def make_phantom(
    shape: Sequence[int] = (96, 96, 64),
    spacing: Sequence[float] = (2.0, 2.0, 2.5),
    *,
    seed: int = 0,
    noise_hu: float = 20.0,
    orientation: str = "LPS",
    oblique_deg: float = 0.0,
) -> tuple[Volume, Volume]:
    """A synthetic CT study and its exact label map.

    Args:
        shape: voxels along the array axes ``(i, j, k)``.
        spacing: voxel size in mm along ``(i, j, k)``.
        seed: jitters organ positions/sizes and places the tumour; the same arguments
            always give identical arrays.
        noise_hu: standard deviation of the additive Gaussian noise, in HU (0: none).
        orientation: where each array axis points, e.g. ``"LPS"`` (i to the left, j
            posterior, k superior: a standard axial DICOM stack) or ``"RAS"``.
        oblique_deg: rotate the grid about its centre by this many degrees
            (``R_z(a/2) @ R_x(a)``); the anatomy stays put in world space.

    Returns:
        ``(image, labels)``: ``image`` is int16 HU ``[i, j, k]`` with ``meta["modality"] == "CT"``;
        ``labels`` is uint8 with values of :data:`LABELS` (0 = background), ``is_label=True``,
        on the same grid (affine voxel -> RAS+ mm).

    Example:
        >>> image, labels = make_phantom((32, 32, 16), (4.0, 4.0, 5.0), seed=1)
        >>> image.array.dtype.name, labels.array.dtype.name, image.orientation
        ('int16', 'uint8', 'LPS')
    """
    _check_args(shape, spacing, noise_hu, oblique_deg)
    grid = tuple(int(n) for n in shape)
    spacing_f = tuple(float(s) for s in spacing)
    affine, half = phantom_affine(grid, spacing_f, orientation=orientation, oblique_deg=oblique_deg)
    inv = np.linalg.inv(affine)
    shapes = _anatomy(np.random.default_rng(seed), half, spacing_f)
    boxes = [_index_box(s, inv, half, grid) for s in shapes]
    noise_rng = np.random.default_rng([int(seed), 0x9E3779B9])

    # body coordinate (u, v, w) of voxel (i, j, k) = B @ (i, j, k) + b, one row per world axis
    scale = affine[:3, :3] / half[:, None]
    offset = (affine[:3, 3] - _CENTRE_RAS) / half
    image = np.empty(grid, dtype=np.int16)
    labels = np.zeros(grid, dtype=np.uint8)
    ii = np.arange(grid[0], dtype=np.float32)[:, None, None]
    jj = np.arange(grid[1], dtype=np.float32)[None, :, None]
    step = max(1, _CHUNK_VOXELS // (grid[0] * grid[1]))
    for k0 in range(0, grid[2], step):
        k1 = min(grid[2], k0 + step)
        kk = np.arange(k0, k1, dtype=np.float32)[None, None, :]
        u, v, w = (_coordinate(scale[a], float(offset[a]), (ii, jj, kk)) for a in range(3))
        img = np.full((grid[0], grid[1], k1 - k0), HU["air"], dtype=np.int16)
        lab = labels[:, :, k0:k1]
        for shp, (lo, hi) in zip(shapes, boxes):
            ka, kb = max(lo[2], k0) - k0, min(hi[2], k1) - k0
            if ka >= kb:
                continue
            sub = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(ka, kb))
            if lo[0] >= hi[0] or lo[1] >= hi[1]:
                continue
            shp.paint(_cut(u, sub), _cut(v, sub), _cut(w, sub), lab[sub], img[sub])
        if noise_hu > 0:
            noisy = noise_rng.standard_normal(img.shape, dtype=np.float32)
            noisy *= np.float32(noise_hu)
            noisy += img
            np.rint(noisy, out=noisy)
            np.clip(noisy, HU_MIN, HU_MAX, out=noisy)
            image[:, :, k0:k1] = noisy
        else:
            image[:, :, k0:k1] = img
    meta = {
        "modality": "CT",
        "units": "HU",
        "source": "medseg.data.phantom",
        "phantom": {
            "seed": int(seed),
            "noise_hu": float(noise_hu),
            "orientation": orientation.upper(),
            "oblique_deg": float(oblique_deg),
        },
    }
    image_vol = Volume(image, affine, meta)
    label_meta = {**meta, "modality": "SEG", "units": "label", "labels": {str(k): v for k, v in LABELS.items()}}
    return image_vol, Volume(labels, affine.copy(), label_meta, is_label=True)


__all__ = ["LABELS", "HU", "make_phantom", "phantom_affine"]
