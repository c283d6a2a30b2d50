"""The header of one DICOM image frame: the record the series scan, geometry checks and decoder share.

Positions and directions are in DICOM patient coordinates (LPS mm); :data:`LPS_TO_RAS`
turns a direction matrix into medseg's RAS+ convention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class FrameHeader:
    """What medseg needs from one image frame; positions and directions in LPS mm."""

    path: Path
    frame: int | None  # frame index in a multi-frame file, None for a single-frame file
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    modality: str
    description: str
    series_number: int | None
    instance_number: int | None
    rows: int
    columns: int
    samples_per_pixel: int
    photometric: str
    number_of_frames: int
    iop: tuple[float, ...] | None  # 6 direction cosines: row direction, column direction
    ipp: tuple[float, float, float] | None
    pixel_spacing: tuple[float, float] | None  # (between rows, between columns) mm
    slope: float
    intercept: float
    image_type: tuple[str, ...]
    transfer_syntax: str
    pixel_offset: int | None  # file offset of the PixelData element (single-frame files)
    gantry_tilt: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name if self.frame is None else f"{self.path.name}[frame {self.frame + 1}]"

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type


def frame_table(frames: Sequence[FrameHeader], *, slice_spacing_mm: float) -> dict[str, Any]:
    """JSON-compatible record of the source frames of a volume, in the order of its k axis.

    What a DICOM-SEG writer needs to reference the source without reopening it:
    ``orientation`` (IOP, 6 floats), ``pixel_spacing`` (between rows, between columns; mm),
    ``rows``/``columns`` of each frame, ``slice_thickness_mm`` (header value, else the
    slice spacing), ``slice_spacing_mm`` and ``frames``: one item per k index with
    ``file``, ``sop_class_uid``, ``sop_instance_uid``, ``frame_number`` (1-based in a
    multi-frame file, else None), ``mosaic_tile`` (0-based tile of a Siemens MOSAIC,
    else None) and ``position`` (ImagePositionPatient of the frame, LPS mm, or None).
    """
    first = frames[0]
    thickness = first.extra.get("header_slice_thickness")
    return {
        "orientation": [float(v) for v in first.iop] if first.iop is not None else None,
        "pixel_spacing": [float(v) for v in first.pixel_spacing] if first.pixel_spacing is not None else None,
        "rows": int(first.rows),
        "columns": int(first.columns),
        "slice_thickness_mm": float(thickness) if thickness else float(slice_spacing_mm),
        "slice_spacing_mm": float(slice_spacing_mm),
        "frames": [_frame_item(f) for f in frames],
    }


def _frame_item(f: FrameHeader) -> dict[str, Any]:
    mosaic = "mosaic" in f.extra
    return {
        "file": str(f.path),
        "sop_class_uid": f.sop_class_uid,
        "sop_instance_uid": f.sop_instance_uid,
        "frame_number": f.frame + 1 if f.frame is not None and not mosaic else None,
        "mosaic_tile": f.frame if mosaic else None,
        "position": [float(v) for v in f.ipp] if f.ipp is not None else None,
    }


__all__ = ["FrameHeader", "LPS_TO_RAS", "frame_table"]
