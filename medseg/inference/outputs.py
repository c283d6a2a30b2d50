"""The one trip from a segmentation to its files: :func:`write_outputs`, and a study's record.

``medseg predict`` (:func:`predict_to_files`), ``medseg batch`` (``medseg.batch.worker``) and
``medseg sam2 segment`` (:func:`medseg.inference.sam2.segment_study`) all write NIfTI,
DICOM-SEG, class probabilities and overlays through :func:`write_outputs`, with the same
format vocabulary (:data:`FORMATS`), the same DICOM test (the loaded volume's
``meta["format"]``) and the same checksums (:func:`medseg.io.atomic.sha256_file`). Every
file is written atomically, so a killed run never leaves a complete-looking partial output.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, InputError, MedsegError, OutputError
from medseg.volume import Volume

log = logging.getLogger(__name__)

#: Label-map output formats (probabilities and overlays are separate switches).
FORMATS = ("nifti", "dicomseg")
_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


def study_stem(path: str | os.PathLike[str]) -> str:
    """Output name stem of an input: the file name without ``.nii.gz``/suffix, or the folder name.

    Example:
        >>> study_stem("scans/ct_001.nii.gz"), study_stem("dicom/series_7/")
        ('ct_001', 'series_7')
    """
    name = Path(path).name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or "study"
    return name or "study"


def parse_formats(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"nifti,dicomseg"`` -> ``("nifti", "dicomseg")``; ``None`` means the default.

    Raises:
        ConfigError: an unknown or empty format list (names the known ones).
    """
    if text is None:
        return None
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in items if t not in FORMATS]
    if unknown or not items:
        raise ConfigError(f"--formats: unknown format(s) {unknown or text!r}; known: {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(items))


def is_dicom(volume: Volume) -> bool:
    """True when ``volume`` was loaded from DICOM (so a DICOM-SEG can reference its files)."""
    return volume.meta.get("format") == "dicom" and bool(volume.meta.get("source_files"))


def resolve_formats(volume: Volume, formats: Sequence[str] | None, *, strict: bool, source: str = "") -> tuple[str, ...]:
    """The formats to write for ``volume``: default NIfTI, plus DICOM-SEG for DICOM input.

    Args:
        formats: asked formats, or ``None`` for the default.
        strict: DICOM-SEG asked for a non-DICOM input raises (``medseg predict``); otherwise
            it is dropped for that study (``medseg batch`` over mixed folders).

    Raises:
        InputError: ``strict`` and DICOM-SEG asked for a non-DICOM input.
    """
    dicom = is_dicom(volume)
    wanted = tuple(formats) if formats else (("nifti", "dicomseg") if dicom else ("nifti",))
    parse_formats(wanted)
    if "dicomseg" in wanted and not dicom:
        if strict:
            raise InputError(f"{source or 'input'}: DICOM-SEG output needs a DICOM input; "
                             f"this is {volume.meta.get('format', 'not DICOM')}")
        wanted = tuple(f for f in wanted if f != "dicomseg")
    return wanted


@dataclass(frozen=True)
class OutputNames:
    """File names of one study's outputs inside its output folder."""

    nifti: str
    dicomseg: str
    probabilities: str
    overlay: str

    @classmethod
    def for_stem(cls, stem: str, tag: str = "seg") -> "OutputNames":
        """``{stem}_{tag}.nii.gz``, ``{stem}_{tag}.dcm``, ``{stem}_probabilities.nii.gz``, ``{stem}_overlay.png``."""
        return cls(f"{stem}_{tag}.nii.gz", f"{stem}_{tag}.dcm", f"{stem}_probabilities.nii.gz", f"{stem}_overlay.png")

    @classmethod
    def plain(cls) -> "OutputNames":
        """``seg.nii.gz``, ``seg.dcm``, ``probabilities.nii.gz``, ``overlay.png`` (one folder per study)."""
        return cls("seg.nii.gz", "seg.dcm", "probabilities.nii.gz", "overlay.png")


@dataclass
class WrittenOutputs:
    """What :func:`write_outputs` wrote: paths and SHA-256 per output kind, seconds per kind,
    and the reason for each kind that could not be written (``failed``)."""

    paths: dict[str, Path] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def failure_message(self) -> str:
        """One line: ``"dicomseg: <reason>; overlay: <reason> (kept: nifti)"``."""
        kept = f" (kept: {', '.join(self.paths)})" if self.paths else ""
        return "; ".join(f"{k}: {v}" for k, v in self.failed.items()) + kept

    def entries(self, relative_to: Path) -> dict[str, dict[str, Any]]:
        """Manifest entries ``{kind: {"path" (relative), "sha256", "bytes"}}``."""
        return {k: {"path": p.relative_to(relative_to).as_posix(), "sha256": self.checksums[k],
                    "bytes": p.stat().st_size} for k, p in self.paths.items()}


def write_outputs(
    labels: Volume,
    image: Volume,
    out_dir: str | os.PathLike[str],
    *,
    names: OutputNames,
    formats: Sequence[str],
    label_names: Mapping[int, str],
    probabilities: Volume | None = None,
    overlay: bool = False,
    title: str = "",
    algorithm_name: str = "medseg",
    keep_going: bool = False,
) -> WrittenOutputs:
    """Write a study's label map (and optional probabilities / overlay) into ``out_dir``.

    Args:
        labels: integer labels on ``image``'s grid.
        image: the input volume (its DICOM source files are referenced by the DICOM-SEG).
        names: the file names (:class:`OutputNames`).
        formats: subset of :data:`FORMATS`, already resolved with :func:`resolve_formats`.
        label_names: ``{value: name}`` of the foreground labels (DICOM-SEG segments, overlay legend).
        probabilities: class probabilities ``[C, i, j, k]`` to write as a 4D NIfTI.
        overlay: also write a PNG of three orthogonal slices.
        title: overlay title.
        algorithm_name: the DICOM-SEG's algorithm name.
        keep_going: when one output fails, record why in ``failed`` and write the others
            (every output already written is kept); otherwise raise at the first failure.

    Raises:
        InputError: DICOM-SEG asked for a non-DICOM ``image``; errors of the writers
            (only without ``keep_going``).
    """
    from medseg.io import save
    from medseg.io.atomic import sha256_file

    out = Path(out_dir)
    result = WrittenOutputs()
    foreground = {int(k): str(v) for k, v in label_names.items() if int(k) != 0}

    def nifti() -> Any:
        return save(labels, out / names.nifti)

    def dicomseg() -> Any:
        if not is_dicom(image):
            raise InputError(f"{image.meta.get('source', 'input')}: DICOM-SEG output needs a DICOM input")
        from medseg.io.dicom.seg import write_dicom_seg

        return write_dicom_seg(labels, image.meta["source_files"], out / names.dicomseg, label_names=foreground,
                               algorithm_name=algorithm_name)

    def probs() -> Any:
        return save(probabilities, out / names.probabilities)

    def overlay_png() -> Any:
        from medseg.plots.overlays import write_overlay

        return write_overlay(image, labels, out / names.overlay, label_names=foreground, title=title)

    writers = {"nifti": nifti, "dicomseg": dicomseg}
    parse_formats(list(formats))
    jobs = [(kind, writers[kind]) for kind in formats]
    jobs += [("probabilities", probs)] if probabilities is not None else []
    jobs += [("overlay", overlay_png)] if overlay else []
    for kind, writer in jobs:
        t = time.perf_counter()
        try:
            path = writer()
        except Exception as exc:  # one format failing keeps the others (and what is already written)
            if not keep_going:
                raise
            result.failed[kind] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, MedsegError) else str(exc)
            log.warning("%s output not written: %s", kind, result.failed[kind])
            continue
        result.paths[kind] = Path(path)
        result.checksums[kind] = sha256_file(path)
        result.timings_s[kind] = time.perf_counter() - t
    return result


def labels_present(labels: Volume, label_names: Mapping[int, str]) -> list[int]:
    """Foreground label values of ``label_names`` that occur in ``labels``, sorted."""
    import numpy as np

    present = {int(v) for v in np.unique(labels.array)} - {0}
    return sorted(v for v in present if v in {int(k) for k in label_names})


def predict_to_files(
    segmenter: Any,
    input_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    formats: Sequence[str] | None = None,
    probabilities: bool = False,
    series_uid: str | None = None,
    stem: str | None = None,
    prompt_mask: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Segment one study and write its outputs into ``output_dir``; returns a JSON-able record.

    Files: ``{stem}_seg.nii.gz`` (labels, the input's affine), ``{stem}_seg.dcm``
    (DICOM-SEG, DICOM input only), ``{stem}_probabilities.nii.gz`` (float32, 4D, classes
    last, when ``probabilities``) and ``{stem}_prediction.json`` (this record).

    Args:
        segmenter: a :class:`~medseg.inference.segmenter.Segmenter` (a Predictor, a SAM2 refiner).
        input_path: NIfTI/NRRD/MHA file or DICOM folder/file.
        formats: subset of :data:`FORMATS`; default: NIfTI, plus DICOM-SEG for DICOM input.
        probabilities: also write class probabilities.
        series_uid: the series to use when a DICOM folder holds several.
        stem: output name stem (default from the input name).
        prompt_mask: for a SAM2 segmenter, a label map on the input grid whose objects prompt it.

    Raises:
        InputError: unreadable input, or DICOM-SEG asked for a non-DICOM input.
        OutputError: an output format could not be written; the others and the record
            (``status: "failed"``, ``errors`` per format) are written first.
    """
    from medseg.inference.segmenter import foreground_names
    from medseg.io import load
    from medseg.io.atomic import write_text_atomic

    t0 = time.perf_counter()
    src, out_dir = Path(input_path), Path(output_dir)
    volume = load(src, series_uid=series_uid)
    t_load = time.perf_counter()
    wanted = resolve_formats(volume, formats, strict=True, source=str(src))
    stem = stem or study_stem(src)
    extra = {"prompt_labels": load(Path(prompt_mask))} if prompt_mask is not None else {}
    result = segmenter.predict(volume, return_probabilities=probabilities, **extra)
    labels, probs = result if probabilities else (result, None)
    t_pred = time.perf_counter()
    names = foreground_names(segmenter)
    written = write_outputs(labels, volume, out_dir, names=OutputNames.for_stem(stem), formats=wanted,
                            label_names=names, probabilities=probs, keep_going=True)
    t_write = time.perf_counter()
    record = {
        "input": str(src),
        "series_uid": volume.meta.get("series_uid"),
        "status": "failed" if written.failed else "ok",
        "errors": dict(written.failed),
        "model_sha256": segmenter.model_sha256,
        "labels_present": labels_present(labels, names),
        "shape": list(volume.spatial_shape),
        "outputs": {k: str(v) for k, v in written.paths.items()},
        "checksums": dict(written.checksums),
        "timings_s": {
            "load": round(t_load - t0, 4),
            **{k: round(v, 4) for k, v in segmenter.last_timings.items()},
            "predict": round(t_pred - t_load, 4),
            "write": round(t_write - t_pred, 4),
            "total": round(t_write - t0, 4),
        },
    }
    write_text_atomic(out_dir / f"{stem}_prediction.json", json.dumps(record, indent=2) + "\n")
    if written.failed:
        raise OutputError(f"{src}: {written.failure_message()}; record: {out_dir / f'{stem}_prediction.json'}")
    log.info("%s -> %s in %.2f s", src, out_dir, record["timings_s"]["total"])
    return record


__all__ = [
    "FORMATS", "OutputNames", "WrittenOutputs", "study_stem", "parse_formats", "is_dicom", "resolve_formats",
    "write_outputs", "labels_present", "predict_to_files",
]
