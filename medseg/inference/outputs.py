"""One study from input path to output files: load, predict, write NIfTI / DICOM-SEG / probabilities.

Used by ``medseg predict``; every file is written atomically, so a killed run never
leaves a complete-looking partial output.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, InputError

log = logging.getLogger(__name__)

FORMATS = ("nifti", "dicomseg")


def study_stem(path: str | os.PathLike[str]) -> str:
    """Output name stem of an input: the file name without ``.nii.gz``/suffix, or the folder name."""
    p = Path(path)
    name = p.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or "study"
    return name or "study"


def parse_formats(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"nifti,dicomseg"`` -> ``("nifti", "dicomseg")``; ``None`` means the default."""
    if text is None:
        return None
    items = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in items if t not in FORMATS]
    if unknown or not items:
        raise ConfigError(f"--formats: unknown format(s) {unknown or text!r}; known: {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(items))


def predict_to_files(
    predictor: Any,
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
        predictor: a :class:`~medseg.inference.Predictor`.
        input_path: NIfTI/NRRD/MHA file or DICOM folder/file.
        formats: subset of ``("nifti", "dicomseg")``; default: NIfTI, plus DICOM-SEG for DICOM input.
        probabilities: also write class probabilities.
        series_uid: the series to use when a DICOM folder holds several.
        stem: output name stem (default from the input name).
        prompt_mask: for a SAM2 segmenter, a label map on the input grid whose objects prompt it.

    Raises:
        InputError: unreadable input, or DICOM-SEG asked for a non-DICOM input.
    """
    from medseg.io import load, save
    from medseg.io.atomic import write_text_atomic
    from medseg.models.export import sha256_file

    t0 = time.perf_counter()
    src = Path(input_path)
    out_dir = Path(output_dir)
    volume = load(src, series_uid=series_uid)
    t_load = time.perf_counter()
    is_dicom = volume.meta.get("format") == "dicom"
    wanted = tuple(formats) if formats else (("nifti", "dicomseg") if is_dicom else ("nifti",))
    if "dicomseg" in wanted and not is_dicom:
        raise InputError(f"{src}: DICOM-SEG output needs a DICOM input; this is {volume.meta.get('format', 'not DICOM')}")
    stem = stem or study_stem(src)
    extra = {"prompt_labels": load(Path(prompt_mask))} if prompt_mask is not None else {}
    result = predictor.predict(volume, return_probabilities=probabilities, **extra)
    labels, probs = result if probabilities else (result, None)
    t_pred = time.perf_counter()
    outputs: dict[str, str] = {}
    if "nifti" in wanted:
        outputs["nifti"] = str(save(labels, out_dir / f"{stem}_seg.nii.gz"))
    if "dicomseg" in wanted:
        from medseg.io.dicomseg import write_dicom_seg

        outputs["dicomseg"] = str(
            write_dicom_seg(labels, volume.meta["source_files"], out_dir / f"{stem}_seg.dcm",
                            label_names=predictor.label_names)
        )
    if probs is not None:
        outputs["probabilities"] = str(save(probs, out_dir / f"{stem}_probabilities.nii.gz"))
    t_write = time.perf_counter()
    record = {
        "input": str(src),
        "series_uid": volume.meta.get("series_uid"),
        "status": "ok",
        "model_sha256": predictor.model_sha256,
        "labels_present": [v for v in sorted(predictor.label_names) if v != 0 and (labels.array == v).any()],
        "shape": list(volume.spatial_shape),
        "outputs": outputs,
        "checksums": {k: sha256_file(v) for k, v in outputs.items()},
        "timings_s": {
            "load": round(t_load - t0, 4),
            **{k: round(v, 4) for k, v in predictor.last_timings.items()},
            "predict": round(t_pred - t_load, 4),
            "write": round(t_write - t_pred, 4),
            "total": round(t_write - t0, 4),
        },
    }
    write_text_atomic(out_dir / f"{stem}_prediction.json", json.dumps(record, indent=2) + "\n")
    log.info("%s -> %s in %.2f s", src, out_dir, record["timings_s"]["total"])
    return record


__all__ = ["FORMATS", "study_stem", "parse_formats", "predict_to_files"]
