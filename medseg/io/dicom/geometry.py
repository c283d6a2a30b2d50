"""Slice sorting and geometry checks of one DICOM image series.

Frames are sorted by ImagePositionPatient projected on the slice normal
``cross(IOP[0:3], IOP[3:6])`` (never by InstanceNumber). The affine maps voxel
``(i, j, k)`` to RAS+ mm: ``i`` along IOP[0:3] (columns), ``j`` along IOP[3:6] (rows),
``k`` along the normal. Duplicate positions, inconsistent pixel spacing and slices off
a line raise :class:`~medseg.errors.InputError`; gantry tilt, missing slices and
non-uniform spacing are reported as ``regular=False`` with the problem in words, so
the loader can raise or resample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medseg.errors import InputError
from medseg.io.dicom.frames import FrameHeader

#: Position tolerance: slices closer than this along the normal are duplicates (mm).
DUPLICATE_TOL_MM = 1e-3
#: Allowed deviation of a slice from the fitted regular grid, as a fraction of the spacing.
SPACING_REL_TOL = 0.01
#: Allowed in-plane drift of slice origins over the whole stack, as a fraction of the pixel size.
INPLANE_REL_TOL = 0.05
#: Allowed absolute deviation (mm) added to the relative one (rounding in headers).
SPACING_ABS_TOL_MM = 1e-3


@dataclass
class Geometry:
    """Sorted frames and the regular-grid description of a series.

    ``affine`` is voxel ``(i, j, k)`` -> RAS+ mm; without patient geometry (``patient`` False:
    secondary capture, ultrasound, NM without ImagePositionPatient/ImageOrientationPatient)
    it is made up, an LPS-aligned grid at the origin. ``regular`` is False when slices are
    unevenly spaced or sheared (gantry tilt); ``problem`` then says why, and
    :mod:`medseg.io.resample` can place the slices on a regular grid.
    """

    frames: list[FrameHeader]
    affine: np.ndarray
    positions_mm: np.ndarray  # (n,) slice positions along the normal, sorted ascending
    inplane_shift_mm: np.ndarray  # (n, 2) offset of each IPP along (row dir, col dir) from the first
    regular: bool
    problem: str | None
    kind: str | None  # "tilt", "uneven", "missing" or None
    warnings: list[str]
    patient: bool = True  # False: no ImagePositionPatient/ImageOrientationPatient, the affine is made up


def _long_name(f: FrameHeader) -> str:
    """``folder/file`` (with the frame) for messages where two files share a name."""
    return f"{f.path.parent.name}/{f.name}"


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def check_geometry(frames: Sequence[FrameHeader], *, series: str) -> Geometry:
    """Sort ``frames`` along the slice normal and check that they form a regular grid.

    Raises:
        InputError: duplicate positions, inconsistent pixel spacing, slices that do not
            lie on a line. Tilt, uneven spacing and missing slices are returned as
            ``regular=False`` with ``problem`` set (the caller raises or resamples).
    """
    first = frames[0]
    _check_spacing(frames)
    warnings: list[str] = list(first.extra.get("mosaic_warnings", []))
    if first.iop is None or first.ipp is None or any(f.ipp is None for f in frames):
        return _geometry_without_positions(frames, series=series)
    row = np.asarray(first.iop[:3], dtype=np.float64)
    col = np.asarray(first.iop[3:], dtype=np.float64)
    row /= np.linalg.norm(row) or 1.0
    col /= np.linalg.norm(col) or 1.0
    if abs(float(row @ col)) > 1e-3:
        raise InputError(f"series {series}: ImageOrientationPatient {first.iop} is not orthogonal ({first.name})")
    normal = np.cross(row, col)
    spacing = first.pixel_spacing
    if spacing is None:
        spacing = (1.0, 1.0)
        warnings.append("no PixelSpacing: in-plane spacing set to 1 mm")
    bad = [f for f in frames if f.pixel_spacing is not None and not np.allclose(f.pixel_spacing, spacing, atol=1e-4)]
    if bad:
        raise InputError(
            f"series {series}: pixel spacing differs between slices ({list(spacing)} mm in {first.name}, "
            f"{list(bad[0].pixel_spacing or ())} mm in {bad[0].name})"
        )
    ipp = np.array([f.ipp for f in frames], dtype=np.float64)
    d = ipp @ normal
    order = np.argsort(d, kind="stable")
    frames = [frames[i] for i in order]
    ipp, d = ipp[order], d[order]
    steps = np.diff(d)
    dup = np.flatnonzero(steps < DUPLICATE_TOL_MM)
    if dup.size:
        a, b = frames[dup[0]], frames[dup[0] + 1]
        na, nb = (a.name, b.name) if a.name != b.name else (_long_name(a), _long_name(b))
        raise InputError(
            f"series {series}: {dup.size} duplicate slice position{'s' if dup.size > 1 else ''}: "
            f"{na} and {nb} are both at {_fmt(d[dup[0]])} mm along the slice normal "
            "(several acquisitions, echoes or time points in one series?); load the files of one of them"
        )
    rel = ipp - ipp[0]
    shift = np.column_stack([rel @ row, rel @ col])
    affine = np.eye(4)
    affine[:3, 0] = row * spacing[1]
    affine[:3, 1] = col * spacing[0]
    affine[:3, 3] = ipp[0]
    n = len(frames)
    problem, kind = None, None
    if n == 1:
        step = _single_slice_thickness(first)
        affine[:3, 2] = normal * step
    else:
        mean_step = (d[-1] - d[0]) / (n - 1)
        tol = SPACING_REL_TOL * mean_step + SPACING_ABS_TOL_MM
        dev = d - (d[0] + mean_step * np.arange(n))
        if np.max(np.abs(dev)) > tol:
            small = float(np.min(steps))
            ratios = steps / small
            if np.all(np.abs(ratios - np.round(ratios)) < 0.05) and np.max(ratios) > 1.5:
                g = int(np.argmax(steps))
                missing = int(round(float(np.sum(np.round(ratios) - 1))))
                kind = "missing"
                problem = (
                    f"{missing} missing slice{'s' if missing > 1 else ''}: gap of {_fmt(steps[g])} mm between "
                    f"{frames[g].name} ({_fmt(d[g])} mm) and {frames[g + 1].name} ({_fmt(d[g + 1])} mm), "
                    f"expected {_fmt(small)} mm"
                )
            else:
                kind = "uneven"
                g = int(np.argmax(np.abs(steps - np.median(steps))))
                problem = (
                    f"non-uniform slice spacing: steps from {_fmt(steps.min())} to {_fmt(steps.max())} mm "
                    f"(e.g. {_fmt(steps[g])} mm between {frames[g].name} and {frames[g + 1].name})"
                )
        # in-plane drift of the slice origins: gantry tilt (linear shear) or a broken stack
        fit = shift[-1] / (n - 1)
        lateral = shift - np.outer(d - d[0], fit / (mean_step if mean_step else 1.0))
        if np.max(np.abs(lateral)) > INPLANE_REL_TOL * min(spacing) + SPACING_ABS_TOL_MM:
            k = int(np.argmax(np.max(np.abs(lateral), axis=1)))
            raise InputError(
                f"series {series}: slice positions do not lie on a line: {frames[k].name} is "
                f"{_fmt(float(np.max(np.abs(lateral[k]))))} mm off the line through the first and last slice"
            )
        per_slice = float(np.linalg.norm(fit))
        if float(np.linalg.norm(shift[-1])) > INPLANE_REL_TOL * min(spacing) + SPACING_ABS_TOL_MM:
            angle = float(np.degrees(np.arctan2(per_slice, mean_step)))
            tilt_problem = (
                f"gantry tilt: slice origins shift {_fmt(per_slice)} mm per slice within the image plane "
                f"(sheared grid, about {angle:.2f} degrees"
                + (f"; GantryDetectorTilt {first.gantry_tilt:g}" if first.gantry_tilt else "")
                + ")"
            )
            problem = tilt_problem if problem is None else f"{tilt_problem}; {problem}"
            kind = "tilt"
        affine[:3, 2] = normal * mean_step
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine = lps_to_ras @ affine
    return Geometry(
        frames=list(frames),
        affine=affine,
        positions_mm=d - d[0],
        inplane_shift_mm=shift,
        regular=problem is None,
        problem=problem,
        kind=kind,
        warnings=warnings,
    )


def _check_spacing(frames: Sequence[FrameHeader]) -> None:
    """Raise for a PixelSpacing that is zero or negative (``0\\0`` in anonymised CR files)."""
    for f in frames:
        if f.pixel_spacing is not None and min(f.pixel_spacing) <= 0:
            text = "\\".join(f"{v:g}" for v in f.pixel_spacing)
            raise InputError(f"{f.path}: PixelSpacing {text} is not positive (a pixel size must be > 0 mm)")


def _single_slice_thickness(f: FrameHeader) -> float:
    t = f.extra.get("slice_thickness")
    return float(t) if t else 1.0


def _geometry_without_positions(frames: Sequence[FrameHeader], *, series: str) -> Geometry:
    """Frames without ImagePositionPatient/Orientation: stacked in file/frame order, 1 mm apart."""
    if len({(str(f.path), f.frame) for f in frames}) != len(frames):
        raise InputError(f"series {series}: the same frame was given twice")
    multi_file = len({f.path for f in frames}) > 1
    if multi_file:
        raise InputError(
            f"series {series}: {len(frames)} images without ImagePositionPatient/ImageOrientationPatient "
            f"({frames[0].name}, ...): cannot place them in space; load one file at a time"
        )
    _check_spacing(frames)
    spacing = frames[0].pixel_spacing or (1.0, 1.0)
    affine = np.diag([-spacing[1], -spacing[0], 1.0, 1.0])  # LPS-aligned default, as ITK does
    warnings = [
        "no patient geometry (ImagePositionPatient/ImageOrientationPatient): the geometry is made up, "
        "identity orientation at the origin"
        + (" with frames stacked 1 mm apart in file order" if len(frames) > 1 else "")
        + "; do not compare it in world space with other images"
    ]
    if frames[0].pixel_spacing is None:
        warnings.append("no PixelSpacing: in-plane spacing set to 1 mm")
    n = len(frames)
    return Geometry(
        frames=list(frames), affine=affine, positions_mm=np.arange(n, dtype=np.float64),
        inplane_shift_mm=np.zeros((n, 2)), regular=True, problem=None, kind=None, warnings=warnings,
        patient=False,
    )


__all__ = ["Geometry", "check_geometry", "DUPLICATE_TOL_MM", "SPACING_REL_TOL", "INPLANE_REL_TOL", "SPACING_ABS_TOL_MM"]
