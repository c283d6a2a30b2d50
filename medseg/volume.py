"""The data model: a voxel array that carries its geometry.

A :class:`Volume` is a numpy array indexed ``[i, j, k]`` (optionally with a
leading channel axis, ``[c, i, j, k]``) plus a 4x4 affine that maps voxel indices
``(i, j, k, 1)`` to RAS+ world coordinates in millimetres (the nibabel / MONAI
convention: x grows towards the patient's Right, y towards Anterior, z towards
Superior; DICOM's LPS is the same space with x and y negated).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from medseg.errors import InputError

_AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # (negative, positive) in RAS+


@dataclass
class Volume:
    """An image or label map with its voxel-to-world geometry.

    Attributes:
        array: voxel values, ``[i, j, k]`` (3D), ``[i, j]`` (2D) or ``[c, i, j, k]``
            when ``channel_first`` is set.
        affine: 4x4 float64 matrix, voxel index -> RAS+ world position in mm.
        meta: metadata (modality, series/study UIDs, source files, rescale,
            resampling record, ...). Plain JSON-compatible values.
        is_label: a label map; it is only ever resampled nearest-neighbour.
        channel_first: the array has a leading channel axis.
    """

    array: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    meta: dict[str, Any] = field(default_factory=dict)
    is_label: bool = False
    channel_first: bool = False

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise InputError(f"affine must be 4x4, got shape {affine.shape}")
        if not np.all(np.isfinite(affine)):
            raise InputError("affine contains NaN or infinite values")
        self.affine = affine
        ndim = self.array.ndim - (1 if self.channel_first else 0)
        if ndim not in (2, 3):
            raise InputError(
                f"Volume expects a 2D or 3D spatial array (plus an optional channel axis), "
                f"got array shape {self.array.shape} (channel_first={self.channel_first})"
            )

    # -- geometry -----------------------------------------------------------------
    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of the spatial axes ``(i, j, k)`` in voxels."""
        return tuple(self.array.shape[1:] if self.channel_first else self.array.shape)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the array, channel axis included."""
        return tuple(self.array.shape)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return len(self.spatial_shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each spatial array axis ``(i, j, k)``."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(float(s) for s in norms[: self.ndim])

    @property
    def origin(self) -> tuple[float, float, float]:
        """World position (RAS+ mm) of the centre of voxel ``(0, 0, 0)``."""
        return tuple(float(v) for v in self.affine[:3, 3])

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit world (RAS+) directions of i, j, k."""
        m = self.affine[:3, :3]
        return m / np.linalg.norm(m, axis=0, keepdims=True)

    @property
    def orientation(self) -> str:
        """Orientation code such as ``"RAS"`` or ``"LPS"``: where each axis points."""
        return orientation_codes(self.affine)

    @property
    def is_oblique(self) -> bool:
        """True when some axis is not aligned with a world axis (within 1e-4)."""
        d = np.abs(self.direction)
        return bool(np.any((d > 1e-4) & (d < 1 - 1e-4)))

    def world_coordinates(self, index: np.ndarray) -> np.ndarray:
        """Map voxel indices ``(..., 3)`` to RAS+ mm ``(..., 3)``."""
        index = np.asarray(index, dtype=np.float64)
        return index @ self.affine[:3, :3].T + self.affine[:3, 3]

    # -- construction helpers ----------------------------------------------------------
    def with_array(self, array: np.ndarray, *, is_label: bool | None = None, **meta: Any) -> "Volume":
        """A new Volume with the same geometry and a different array (same spatial shape)."""
        new = replace(
            self,
            array=np.asarray(array),
            affine=self.affine.copy(),
            meta={**self.meta, **meta},
            is_label=self.is_label if is_label is None else is_label,
            channel_first=np.asarray(array).ndim == self.ndim + 1,
        )
        if new.spatial_shape != self.spatial_shape:
            raise InputError(
                f"new array has spatial shape {new.spatial_shape}, expected {self.spatial_shape}"
            )
        return new

    def same_grid(self, other: "Volume", *, atol: float = 1e-4) -> bool:
        """True when both volumes share spatial shape and affine (within ``atol`` mm)."""
        return self.spatial_shape == other.spatial_shape and bool(
            np.allclose(self.affine, other.affine, atol=atol)
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-compatible description: shape, spacing, orientation, value range."""
        arr = self.array
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        return {
            "shape": list(self.spatial_shape),
            "channels": int(arr.shape[0]) if self.channel_first else 1,
            "dtype": str(arr.dtype),
            "spacing_mm": [round(s, 6) for s in self.spacing],
            "orientation": self.orientation,
            "origin_mm": [round(v, 4) for v in self.origin],
            "oblique": self.is_oblique,
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "is_label": self.is_label,
        }

    def __repr__(self) -> str:
        sp = "x".join(f"{s:.3g}" for s in self.spacing)
        return (
            f"Volume(shape={self.shape}, dtype={self.array.dtype}, spacing={sp} mm, "
            f"orientation={self.orientation}, label={self.is_label})"
        )


def orientation_codes(affine: np.ndarray) -> str:
    """Axis codes (e.g. ``"RAS"``) of the 3 spatial axes of ``affine``.

    Each array axis is assigned the world axis it is most aligned with; the letter
    says the direction in which the index grows.
    """
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    m = m / np.linalg.norm(m, axis=0, keepdims=True)
    codes = []
    used: set[int] = set()
    for col in range(3):
        order = np.argsort(-np.abs(m[:, col]))
        world = next(int(w) for w in order if int(w) not in used)
        used.add(world)
        neg, pos = _AXIS_LABELS[world]
        codes.append(pos if m[world, col] > 0 else neg)
    return "".join(codes)


__all__ = ["Volume", "orientation_codes"]
