"""DICOM loading: a folder, a list of files or one (multi-frame) file -> :class:`~medseg.Volume`.

Rules (see :mod:`medseg.io.dicom.series` for the geometry convention):

* group by SeriesInstanceUID, then by orientation and image size; non-image objects
  (SR, RTSTRUCT, SEG, presentation states, ...) and localizers are ignored;
* sort by ImagePositionPatient projected on the slice normal, never by InstanceNumber;
* duplicate positions, a missing slice, non-uniform spacing, gantry tilt and several
  series in one folder raise :class:`~medseg.errors.InputError` naming the slice and the
  millimetres; ``resample=True`` instead resamples tilt/uneven spacing onto a regular
  orthogonal grid and records it in ``meta["resampled"]`` / ``meta["resample_reason"]``;
* RescaleSlope/Intercept are applied per slice (int16 when integral and in range,
  else float32); a Modality LUT Sequence is applied instead where present;
* images without ImagePositionPatient/ImageOrientationPatient (secondary capture,
  ultrasound, ...) get a made-up LPS-aligned affine at the origin, recorded as
  ``meta["patient_geometry"] = False`` with a warning in ``meta["warnings"]``.

The volume array is ``[i, j, k]``: i along the image columns (IOP[0:3]), j along the
rows (IOP[3:6]), k along the slice normal; the affine maps to RAS+ mm.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.io.dicom.geometry import check_geometry
from medseg.io.dicom.frames import frame_table
from medseg.io.dicom.series import (
    SeriesInfo,
    drop_duplicate_instances,
    group_series,
    is_dicom_file,
    is_regular_file,
    iter_files,
    main_stack,
    scan,
)
from medseg.volume import Volume

log = logging.getLogger(__name__)


def _collect(path_or_list: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> tuple[list[Path], bool, str]:
    """Files to read, whether non-DICOM files are errors, and a name for messages."""
    if isinstance(path_or_list, (list, tuple)):
        paths = [Path(p) for p in path_or_list]
        if not paths:
            raise InputError("empty list of DICOM files")
        for p in paths:
            if not is_regular_file(p):
                raise InputError(f"{p}: no such file" if not os.path.lexists(p) else f"{p}: not a regular file")
        return paths, True, f"{paths[0].parent} ({len(paths)} files)"
    p = Path(path_or_list)
    if p.is_dir():
        files = iter_files(p)
        if not files:
            raise InputError(f"{p}: folder is empty (no files found, recursively)")
        return files, False, str(p)
    if is_regular_file(p):
        return [p], True, str(p)
    if os.path.lexists(p):
        raise InputError(f"{p}: not a regular file (a FIFO, socket, device or broken link); refusing to read it")
    raise InputError(f"{p}: no such file or folder")


def _describe_skipped(skipped: list[tuple[Path, str]]) -> str:
    counts: dict[str, int] = {}
    for _, reason in skipped:
        counts[reason] = counts.get(reason, 0) + 1
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))


def _series_line(s: SeriesInfo) -> str:
    part = f" part {s.part}" if s.part else ""
    desc = f" '{s.description}'" if s.description else ""
    loc = " localizer" if s.localizer else ""
    return f"{s.series_uid}{part} ({s.modality}{desc}, {s.images} images {s.size[0]}x{s.size[1]} {s.orientation}{loc})"


def list_series(folder: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[SeriesInfo]:
    """Every image series under ``folder`` (recursive), localizers last; non-DICOM files skipped.

    Each :class:`SeriesInfo` has ``to_dict()`` with series_uid, modality, description,
    images, size (columns, rows), orientation, localizer and a geometry verdict.
    """
    paths, _, _ = _collect(folder)
    return group_series(scan(paths, strict=False).frames)


def _refuse_odd_slices(series: list[SeriesInfo], real: list[SeriesInfo], where: str) -> None:
    """A few images of a series in the main stack's plane but of another size (or sample count), not
    marked LOCALIZER, are damaged slices of that stack: loading without them would give a shorter
    volume, so they are an error naming the file."""
    for main in real:
        for other in series:
            if other is main or other.series_uid != main.series_uid or len(other.frames) > 3 or \
                    len(other.frames) >= len(main.frames) or any(f.is_localizer for f in other.frames):
                continue
            a, b = main.frames[0], other.frames[0]
            if a.iop is None or b.iop is None or not np.allclose(a.iop, b.iop, atol=1e-3):
                continue
            raise InputError(
                f"{other.frames[0].path}: image of {b.columns}x{b.rows} pixels ({b.samples_per_pixel} sample(s)) "
                f"in the plane of series {main.series_uid}, whose {len(main.frames)} other images are "
                f"{a.columns}x{a.rows} ({a.samples_per_pixel}): a damaged slice; repair or remove the file"
            )


def _choose(series: list[SeriesInfo], series_uid: str | None, where: str) -> tuple[SeriesInfo, str | None]:
    """The series to load and, when one stack of a multi-part series was picked, a note saying so."""
    if series_uid is not None:
        chosen = [s for s in series if s.series_uid == series_uid]
        if not chosen:
            raise InputError(
                f"{where}: no image series with SeriesInstanceUID {series_uid}; found: "
                + "; ".join(_series_line(s) for s in series)
            )
        real = [s for s in chosen if not s.localizer] or chosen
    else:
        real = [s for s in series if not s.localizer] or series
    _refuse_odd_slices(series, real, where)
    if len(real) > 1 and len({s.series_uid for s in real}) == 1:
        best, note = main_stack(real)
        if best is not None:
            log.info("%s: %s", where, note)
            return best, note
        files = ", ".join(Path(s.frames[0].path).name for s in real[:3]) + (", ..." if len(real) > 3 else "")
        raise InputError(
            f"{where}: series {real[0].series_uid} holds only localizer-like stacks ({len(real)} stacks of at most "
            f"3 images in different orientations or sizes, a scout or tri-plane pilot), no image volume; "
            f"load one of its files ({files}) to get a single plane"
        )
    if len(real) > 1:
        what = f"series {series_uid} has {len(real)} parts with different orientation or image size" if series_uid \
            else f"{len(real)} image series"
        raise InputError(
            f"{where}: {what}; choose one with series_uid=... (medseg convert --series UID): "
            + "; ".join(_series_line(s) for s in real)
        )
    return real[0], None


def load_dicom(
    path_or_list: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    series_uid: str | None = None,
    resample: bool = False,
) -> Volume:
    """Load one DICOM image series as a :class:`~medseg.Volume` (``[i, j, k]``, RAS+ mm affine).

    Args:
        path_or_list: a folder (searched recursively), a list of files or a single file
            (single-frame, enhanced multi-frame CT/MR, RT dose, ...).
        series_uid: the SeriesInstanceUID to load when there are several image series.
        resample: resample gantry tilt, uneven spacing or missing slices onto a regular
            orthogonal grid (recorded in ``meta``) instead of raising.

    Raises:
        InputError: no image, several series and none chosen, duplicate slice positions,
            irregular geometry without ``resample``, an undecodable or truncated file.
    """
    paths, strict, where = _collect(path_or_list)
    found = scan(paths, strict=strict)
    if not found.frames:
        skipped = f" ({_describe_skipped(found.skipped)})" if found.skipped else ""
        raise InputError(f"{where}: no DICOM image found in {len(paths)} file(s){skipped}")
    frames, duplicate_notes = drop_duplicate_instances(found.frames)
    series = group_series(frames)
    chosen, note = _choose(series, series_uid, where)
    geometry = check_geometry(chosen.frames, series=chosen.series_uid)
    if not geometry.regular and not resample:
        raise InputError(
            f"{where}: series {chosen.series_uid}: {geometry.problem}; "
            "pass resample=True (medseg convert --resample) to resample onto a regular grid"
        )
    from medseg.io.dicom.decode import decode_frames, rescale

    stack, applied_by = decode_frames(geometry.frames)
    if applied_by:
        record: dict[str, Any] = {"applied_by": applied_by}
        if stack.ndim == 3 and np.all(np.mod(stack, 1) == 0) and stack.min() >= -32768 and stack.max() <= 32767:
            stack = stack.astype(np.int16)
    else:
        stack, record = rescale(stack, geometry.frames)
    warnings = duplicate_notes + list(geometry.warnings) + ([note] if note else [])
    if found.skipped:
        warnings.append(f"ignored {len(found.skipped)} file(s): {_describe_skipped(found.skipped)}")
    others = [s for s in series if s is not chosen]
    if others:
        warnings.append(f"{len(others)} other series or localizers under {where} were not loaded")
    meta: dict[str, Any] = {
        "format": "dicom",
        "modality": chosen.modality,
        "series_uid": chosen.series_uid,
        "study_uid": chosen.frames[0].study_uid,
        "frame_of_reference_uid": chosen.frames[0].frame_of_reference_uid,
        "series_description": chosen.description,
        "transfer_syntax": sorted({f.transfer_syntax for f in chosen.frames}),
        "source_files": [str(f.path) for f in geometry.frames] if len({f.path for f in geometry.frames}) > 1
        else [str(geometry.frames[0].path)],
        "number_of_slices": len(geometry.frames),
        "dicom_frames": frame_table(geometry.frames, slice_spacing_mm=float(np.linalg.norm(geometry.affine[:3, 2]))),
        "rescale": record,
        "warnings": warnings,
        "patient_geometry": geometry.patient,
        "resampled": False,
        "resample_reason": None,
    }
    colour = stack.ndim == 4
    if not geometry.regular:
        if colour:
            raise InputError(f"{where}: series {chosen.series_uid}: {geometry.problem}; cannot resample colour images")
        from medseg.io.resample import regular_grid_from_stack

        array, affine, grid = regular_grid_from_stack(
            stack, geometry.affine, geometry.positions_mm, geometry.inplane_shift_mm
        )
        if stack.dtype == np.int16:
            array = array.astype(np.float32)
        meta.update(resampled=True, resample_reason=geometry.problem, resample_grid=grid)
        warnings.append(f"resampled onto a regular grid: {geometry.problem}")
        log.info("%s: resampled series %s: %s", where, chosen.series_uid, geometry.problem)
        return Volume(array, affine, meta)
    if colour:
        array = np.transpose(stack, (3, 2, 1, 0))  # [c, i, j, k]
        return Volume(array, geometry.affine, meta, channel_first=True)
    return Volume(np.transpose(stack, (2, 1, 0)), geometry.affine, meta)


__all__ = ["load_dicom", "list_series", "is_dicom_file", "SeriesInfo"]
