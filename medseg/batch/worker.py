"""The per-study function that every backend runs: :func:`process_study`.

It takes a :class:`~medseg.batch.discover.Study` and a small picklable
:class:`WorkerConfig`, never a model object: the :class:`~medseg.inference.Predictor`
is built on first use and cached for the life of the worker process, so each worker
loads the model once. It never raises for a study's own problems: it returns a
manifest record whose ``status`` is ``"ok"`` or ``"failed"`` with the reason.

Outputs go to ``OUTPUT/studies/<study_id>/`` (``seg.nii.gz``, ``seg.dcm``,
``overlay.png``), written by :func:`medseg.inference.outputs.write_outputs` (the path
``medseg predict`` and ``medseg sam2 segment`` use), each atomically.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import shutil
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.batch.discover import IMAGE_SUFFIXES, Study
from medseg.errors import MedsegError, OutputError
from medseg.inference.outputs import FORMATS, OutputNames, parse_formats, resolve_formats, write_outputs
from medseg.inference.segmenter import foreground_names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs, as plain values (picklable, small).

    Attributes:
        model: a run folder or exported model folder (``model.pt`` + ``model.json``).
        output_dir: the batch output folder.
        formats: output formats, a subset of ``("nifti", "dicomseg")``; DICOM-SEG is
            written for DICOM inputs only.
        device: torch device (``None``: CUDA when available, else CPU).
        tta: mirror test-time augmentation.
        reference_dir: folder of reference label maps; when set each study is evaluated.
        input_dir: the batch input folder (to match references by relative path).
        overlays: write ``overlay.png`` for the report.
        threads: torch CPU threads per worker (``None``: leave torch's default).
        prompt_model: with a SAM2 ``model``: the U-Net export whose prediction prompts SAM2.
        prompt_masks: with a SAM2 ``model``: folder of per-study label maps that prompt SAM2
            (matched to studies like references).
        prompt_kind: how prompts are derived from a label map (``box``, ``points``, ``box+points``, ``mask``).
        sam_mode: ``propagate`` (whole volume from the key slices) or ``slices`` (key slices only).
        sam_config, image_size: architecture and input size of a bare SAM2 checkpoint (``None``: from the file).
        result_key: :func:`result_key` of this config, recorded with every study so that
            ``--resume`` keeps only results of the same model and settings.
    """

    model: str
    output_dir: str
    formats: tuple[str, ...] = ("nifti",)
    device: str | None = None
    tta: bool = False
    reference_dir: str | None = None
    input_dir: str | None = None
    overlays: bool = True
    threads: int | None = None
    prompt_model: str | None = None
    prompt_masks: str | None = None
    prompt_kind: str = "box"
    sam_mode: str = "propagate"
    sam_config: str | None = None
    image_size: int | None = None
    result_key: str = ""

    def __post_init__(self) -> None:
        parse_formats(self.formats)  # ConfigError naming the known formats


#: manifest timing names of the written outputs (as before the shared writer)
_TIMING_KEYS = {"nifti": "write_nifti", "dicomseg": "write_dicomseg", "overlay": "overlay"}

def _weights_sha256(path: str | None) -> str:
    """What identifies a model's results: an export's recorded weights hash together with its model
    section (a model set's members and their hashes live there); a bare checkpoint file's SHA-256;
    for a folder without ``model.json`` (a raw nnU-Net model folder), the hashes of its files."""
    if path is None:
        return ""
    import hashlib
    import json

    from medseg.errors import InputError
    from medseg.io.atomic import sha256_file
    from medseg.models.export import read_info

    try:
        info = read_info(path)
        return hashlib.sha256(json.dumps({"sha256": info.get("sha256", ""), "model": info["model"]},
                                         sort_keys=True).encode()).hexdigest()
    except InputError:
        p = Path(path)
        if p.is_file():
            return sha256_file(p)
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".pth", ".pt", ".json"))
        return hashlib.sha256("".join(f"{f.relative_to(p)}:{sha256_file(f)};" for f in files).encode()).hexdigest()


def result_key(config: WorkerConfig) -> str:
    """Short hash of what decides a study's outputs: weights (model and prompt model), TTA, formats,
    overlays, prompt settings. Reads ``model.json`` only (no weights are hashed for exports)."""
    import hashlib
    import json

    parts = {"model": _weights_sha256(config.model), "prompt_model": _weights_sha256(config.prompt_model),
             "prompt_masks": config.prompt_masks is not None, "tta": config.tta, "formats": sorted(config.formats),
             "overlays": config.overlays, "prompt_kind": config.prompt_kind, "sam_mode": config.sam_mode,
             "sam_config": config.sam_config, "image_size": config.image_size}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


_PREDICTORS: dict[tuple[Any, ...], Any] = {}
_STATE: dict[str, Any] = {"model_loads": 0, "threads_set": False}


def get_predictor(config: WorkerConfig) -> tuple[Any, float]:
    """The cached Predictor of this process for ``config`` and the seconds spent loading it now (0 if cached)."""
    key = (str(Path(config.model).resolve()), config.device, config.tta, config.prompt_model,
           config.prompt_masks is not None, config.prompt_kind, config.sam_mode, config.sam_config, config.image_size)
    if key in _PREDICTORS:
        return _PREDICTORS[key], 0.0
    from medseg.inference.factory import PromptSettings, load_segmenter

    start = time.perf_counter()
    predictor = load_segmenter(config.model, device=config.device, tta=config.tta, prompt_model=config.prompt_model,
                               prompt_labels_given=config.prompt_masks is not None,
                               prompts=PromptSettings(kind=config.prompt_kind, mode=config.sam_mode,
                                                      sam_config=config.sam_config, image_size=config.image_size))
    _PREDICTORS[key] = predictor
    _STATE["model_loads"] += 1
    elapsed = time.perf_counter() - start
    log.info("worker %d loaded model %s in %.2f s", os.getpid(), config.model, elapsed)
    return predictor, elapsed


def _versions() -> dict[str, str]:
    import numpy

    import medseg

    versions = {"medseg": medseg.__version__, "python": platform.python_version(), "numpy": numpy.__version__}
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return versions


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def find_reference(study: Study, reference_dir: str | os.PathLike[str], input_dir: str | None) -> Path | None:
    """The reference label map of ``study`` under ``reference_dir``, or ``None``.

    Looked up, in order: ``<study_id>`` with any image suffix; the input's path
    relative to the input folder (same name, or with any image suffix for a DICOM
    folder); the input's file name.
    """
    ref = Path(reference_dir)
    stems = [study.study_id]
    if input_dir is not None:
        try:
            rel = Path(study.path).resolve().relative_to(Path(input_dir).resolve())
            stems.append(rel.as_posix())
        except ValueError:
            pass
    stems.append(Path(study.path).name)
    for stem in stems:
        direct = ref / stem
        if direct.is_file():
            return direct
        base = stem
        for suffix in IMAGE_SUFFIXES:
            if base.lower().endswith(suffix):
                base = base[: -len(suffix)]
                break
        for suffix in IMAGE_SUFFIXES:
            candidate = ref / f"{base}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _evaluate(study: Study, labels: Any, names: dict[int, str], config: WorkerConfig) -> dict[str, Any]:
    from medseg.io import load
    from medseg.metrics import evaluate_labels

    ref_path = find_reference(study, config.reference_dir, config.input_dir)  # type: ignore[arg-type]
    if ref_path is None:
        return {"error": f"no reference label map for {study.study_id} under {config.reference_dir}"}
    ref = load(ref_path)
    if not ref.same_grid(labels, atol=1e-3):
        return {"reference": str(ref_path),
                "error": f"{ref_path}: reference grid {ref.spatial_shape} differs from the input's {labels.spatial_shape}"}
    rows = evaluate_labels(labels.array, ref.array, labels=sorted(names), spacing=labels.spacing)
    for row in rows:
        row["name"] = names.get(int(row["label"]), str(row["label"]))
    return {"reference": str(ref_path), "per_label": rows}


def _prompt_labels(study: Study, config: WorkerConfig) -> dict[str, Any]:
    """``{"prompt_labels": Volume}`` from ``config.prompt_masks`` for SAM2, else ``{}``."""
    if config.prompt_masks is None:
        return {}
    from medseg.errors import InputError
    from medseg.io import load

    path = find_reference(study, config.prompt_masks, config.input_dir)
    if path is None:
        raise InputError(f"no prompt label map for {study.study_id} under {config.prompt_masks}")
    return {"prompt_labels": load(path)}  # the refiner checks it lies on the image grid


def _set_threads(config: WorkerConfig) -> None:
    if config.threads and not _STATE["threads_set"]:
        import torch

        torch.set_num_threads(int(config.threads))
        _STATE["threads_set"] = True


def stage_file(output_dir: str | os.PathLike[str], pid: int) -> Path:
    """Where worker ``pid`` notes the stage it is in, so that its death can be reported with it."""
    return Path(output_dir) / f".worker-{pid}.stage"


def _note_stage(config: WorkerConfig, stage: str) -> None:
    try:
        stage_file(config.output_dir, os.getpid()).write_text(stage)
    except OSError:  # a note for the report only
        pass


def process_study(study: Study, config: WorkerConfig) -> dict[str, Any]:
    """Segment one study and write its outputs; returns its manifest record (never raises for study errors).

    Stages timed (seconds, ``record["timings_s"]``): ``setup`` (first-call imports), ``model_load`` (0 once cached),
    ``load``, ``predict``, ``write_nifti``, ``write_dicomseg``, ``overlay``, ``evaluate``, ``total``.
    """
    start = time.perf_counter()
    record: dict[str, Any] = {
        "study_id": study.study_id, "input": study.path, "kind": study.kind, "series_uid": study.series_uid,
        "status": "failed", "error": None, "timings_s": {}, "outputs": {}, "metrics": None,
        "model": config.model, "model_sha256": None, "result_key": config.result_key, "versions": _versions(),
        "started": _now(),
    }
    timings: dict[str, float] = record["timings_s"]
    study_dir = Path(config.output_dir) / "studies" / study.study_id
    keep_outputs = False
    try:
        t = time.perf_counter()
        _set_threads(config)
        timings["setup"] = time.perf_counter() - t
        if study_dir.exists():  # stale files of an interrupted attempt are never reported as outputs
            shutil.rmtree(study_dir)
        study_dir.mkdir(parents=True)
        _note_stage(config, 'model_load')
        predictor, timings["model_load"] = get_predictor(config)
        record["model_sha256"] = getattr(predictor, "model_sha256", None)
        names = foreground_names(predictor)

        from medseg.io import load

        t = time.perf_counter()
        _note_stage(config, 'load')
        volume = load(study.load_arg)
        timings["load"] = time.perf_counter() - t
        record["series_uid"] = volume.meta.get("series_uid", study.series_uid)
        record["image"] = {"shape": list(volume.spatial_shape), "spacing_mm": [round(s, 4) for s in volume.spacing],
                           "orientation": volume.orientation}

        t = time.perf_counter()
        _note_stage(config, 'predict')
        labels = predictor.predict(volume, **_prompt_labels(study, config))
        timings["predict"] = time.perf_counter() - t
        record["predict_stages_s"] = {k: round(float(v), 4) for k, v in getattr(predictor, "last_timings", {}).items()}
        if not labels.same_grid(volume):
            raise MedsegError(f"prediction grid {labels.spatial_shape} differs from the input's {volume.spatial_shape}")

        _note_stage(config, 'write_outputs')
        written = write_outputs(labels, volume, study_dir, names=OutputNames.plain(),
                                formats=resolve_formats(volume, config.formats, strict=False), label_names=names,
                                overlay=config.overlays, title=study.study_id, keep_going=True)
        record["outputs"] = written.entries(Path(config.output_dir))
        timings.update({_TIMING_KEYS.get(k, k): v for k, v in written.timings_s.items()})
        if written.failed:  # the outputs written correctly stay, listed; the record says what failed and why
            record["format_errors"] = dict(written.failed)
            keep_outputs = True
            raise OutputError(f"{study.study_id}: {written.failure_message()}")
        if config.reference_dir:
            t = time.perf_counter()
            try:
                record["metrics"] = _evaluate(study, labels, names, config)
            except Exception as exc:  # a bad reference does not make the segmentation fail
                record["metrics"] = {"error": f"{type(exc).__name__}: {exc}"}
            timings["evaluate"] = time.perf_counter() - t
        import numpy as np

        present = {int(v) for v in np.unique(labels.array)} - {0}
        record["labels_present"] = sorted(names.get(v, str(v)) for v in present)
        record["status"] = "ok"
    except Exception as exc:  # a study's failure is recorded, never raised
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
        record["error"] = {"type": type(exc).__name__, "message": message}
        if not isinstance(exc, MedsegError):
            record["error"]["traceback"] = traceback.format_exc(limit=-4)
        log.warning("study %s failed: %s: %s", study.study_id, type(exc).__name__, message)
        if not keep_outputs:  # a study that failed before writing leaves nothing behind
            shutil.rmtree(study_dir, ignore_errors=True)
    timings["total"] = time.perf_counter() - start
    record["finished"] = _now()
    record["worker"] = {"pid": os.getpid(), "host": socket.gethostname(), "model_loads": _STATE["model_loads"]}
    return record


__all__ = ["WorkerConfig", "process_study", "stage_file", "get_predictor", "find_reference", "result_key", "FORMATS"]
