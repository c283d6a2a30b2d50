"""``run_batch``: discover studies, skip finished ones on resume, run a backend, stream the manifest.

Output folder layout::

    OUTPUT/manifest.jsonl          one record per study (see medseg.io.manifest)
    OUTPUT/run.json                the run's options and summary (rewritten at the end)
    OUTPUT/report.html             the HTML report (medseg.report)
    OUTPUT/studies/<study_id>/     seg.nii.gz, seg.dcm (DICOM input), overlay.png
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.batch.discover import Study, discover_studies
from medseg.io.manifest import MANIFEST_NAME, append_record, plan_resume, read_manifest
from medseg.batch.worker import WorkerConfig, process_study, result_key
from medseg.errors import ConfigError, InputError
from medseg.io.atomic import write_text_atomic

log = logging.getLogger(__name__)

BACKENDS = ("local", "dask")
RecordCallback = Callable[[dict[str, Any]], None]


@dataclass
class BatchResult:
    """What a batch run did.

    Attributes:
        output_dir: the output folder.
        total: studies discovered.
        skipped: studies already complete (``resume``), not run again.
        records: the records written by this run, in completion order.
        elapsed_s: wall time of the processing phase in seconds.
        report: the HTML report path (``None`` when not written).
    """

    output_dir: Path
    total: int
    skipped: int
    records: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    report: Path | None = None

    def count(self, status: str) -> int:
        """Records of this run with ``status`` (``ok``, ``failed``, ``lost``)."""
        return sum(1 for r in self.records if r.get("status") == status)

    @property
    def exit_code(self) -> int:
        """0 when every study of this run succeeded, 1 when any failed or was lost."""
        return 0 if all(r.get("status") == "ok" for r in self.records) else 1

    @property
    def studies_per_minute(self) -> float:
        """Throughput of this run (records per minute of wall time)."""
        return 60.0 * len(self.records) / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _check_model(model: Path, prompt_model: Path | None, prompt_masks: Path | None) -> dict[str, Any]:
    """Validate the model(s) and prompt sources in the parent process, before any worker starts.

    Returns ``model.json`` of the model (``{}`` for a bare SAM2 checkpoint).
    """
    from medseg.inference.factory import check_prompt_sources
    from medseg.models.export import read_info

    if prompt_masks is not None and not prompt_masks.is_dir():
        raise ConfigError(f"--prompt-masks {prompt_masks}: not a folder")
    check_prompt_sources([model], prompt_model=prompt_model, prompt_labels_given=prompt_masks is not None)
    try:
        return read_info(model)
    except InputError:  # a bare SAM2 checkpoint file or a raw nnU-Net model folder: no model.json
        return {}


def worker_config(
    model: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    input_dir: str | os.PathLike[str] | None = None,
    workers: int = 1,
    formats: Sequence[str] = ("nifti", "dicomseg"),
    device: str | None = None,
    tta: bool = False,
    reference_dir: str | os.PathLike[str] | None = None,
    prompt_model: str | os.PathLike[str] | None = None,
    prompt_masks: str | os.PathLike[str] | None = None,
    prompt_kind: str = "box",
    sam_mode: str = "propagate",
    sam_config: str | None = None,
    image_size: int | None = None,
) -> WorkerConfig:
    """The :class:`WorkerConfig` (absolute paths, threads per worker, ``result_key``) of a batch run."""
    def absolute(p: str | os.PathLike[str] | None) -> str | None:
        return str(Path(p).resolve()) if p else None

    config = WorkerConfig(
        model=str(Path(model).resolve()), output_dir=str(Path(output_dir).resolve()), formats=tuple(formats),
        device=device, tta=tta, reference_dir=absolute(reference_dir), input_dir=absolute(input_dir),
        threads=max(1, (os.cpu_count() or 1) // max(1, workers)), prompt_model=absolute(prompt_model),
        prompt_masks=absolute(prompt_masks), prompt_kind=prompt_kind, sam_mode=sam_mode, sam_config=sam_config,
        image_size=image_size,
    )
    return dataclasses.replace(config, result_key=result_key(config))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def run_batch(
    model: str | os.PathLike[str],
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    workers: int = 1,
    backend: str = "local",
    scheduler: str | None = None,
    resume: bool = False,
    reference_dir: str | os.PathLike[str] | None = None,
    formats: Sequence[str] = ("nifti", "dicomseg"),
    device: str | None = None,
    tta: bool = False,
    max_retries: int = 2,
    study_timeout: float | None = 3600.0,
    report: bool = True,
    on_start: Callable[[int, int], None] | None = None,
    on_record: RecordCallback | None = None,
    func: Callable[[Study, WorkerConfig], dict[str, Any]] = process_study,
    prompt_model: str | os.PathLike[str] | None = None,
    prompt_masks: str | os.PathLike[str] | None = None,
    prompt_kind: str = "box",
    sam_mode: str = "propagate",
    sam_config: str | None = None,
    image_size: int | None = None,
) -> BatchResult:
    """Segment every study under ``input_dir`` with ``model``; write outputs and the manifest to ``output_dir``.

    Args:
        model: run folder or exported model folder.
        input_dir: folder searched recursively for DICOM series and NIfTI/NRRD/MHA files.
        output_dir: where outputs, ``manifest.jsonl``, ``run.json`` and ``report.html`` go.
        workers: worker processes (each loads the model once).
        backend: ``"local"`` (processes on this machine) or ``"dask"``.
        scheduler: Dask scheduler address (``backend="dask"`` only); default a LocalCluster.
        resume: keep studies already complete in the manifest (checksums verified), run the rest.
        reference_dir: folder of reference label maps; each study is then evaluated.
        formats: ``"nifti"`` and/or ``"dicomseg"`` (DICOM inputs only).
        device: torch device for the workers (default: CUDA when available).
        tta: mirror test-time augmentation.
        max_retries: re-runs of a study whose worker process died, before it is recorded as lost.
        study_timeout: wall limit of one study in seconds (None: no limit), on both backends; a study
            past it is recorded ``failed`` with ``timed out after N s`` and the batch goes on.
        report: write ``report.html`` at the end.
        on_start: called with ``(studies to run, studies skipped)`` before processing.
        on_record: called with each record as it is written.
        func: the per-study function (tests and custom pipelines); must be a module-level function.
        prompt_model: with a SAM2 ``model``: U-Net export whose prediction prompts SAM2.
        prompt_masks: with a SAM2 ``model``: folder of per-study prompt label maps (named like references).
        prompt_kind: ``box``, ``points``, ``box+points`` or ``mask`` (prompts derived from the label map).
        sam_mode: ``propagate`` or ``slices`` (SAM2 only).
        sam_config, image_size: architecture and input size of a bare SAM2 checkpoint
            (default: read from the checkpoint).

    Raises:
        ConfigError: bad options, or an output folder holding a previous run's
            manifest without ``resume``.
        InputError: ``input_dir`` is not a folder or holds no study, or no model export at ``model``.
        ModelError: the model's ``model.json`` is invalid.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} unknown; choose from {', '.join(BACKENDS)}")
    if scheduler and backend != "dask":
        raise ConfigError("--scheduler needs --backend dask")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigError(f"max_retries must be 0 or more, got {max_retries}")
    if study_timeout is not None and not (study_timeout > 0 and study_timeout < float("inf")):
        raise ConfigError(f"study_timeout must be a positive number of seconds, got {study_timeout}")
    model_path, out = Path(model), Path(output_dir)
    model_info = _check_model(model_path, Path(prompt_model) if prompt_model else None,
                              Path(prompt_masks) if prompt_masks else None)
    if reference_dir is not None and not Path(reference_dir).is_dir():
        raise ConfigError(f"--reference {reference_dir}: not a folder")
    manifest = out / MANIFEST_NAME
    if not resume and read_manifest(manifest):
        raise ConfigError(f"{out} already holds a batch manifest; pass --resume to continue it or choose a new folder")

    excluded = [out] + [Path(p) for p in (reference_dir, prompt_masks) if p]
    studies = discover_studies(input_dir, exclude=excluded)
    if not studies:
        raise InputError(f"{input_dir}: no DICOM series and no NIfTI/NRRD/MHA files found")
    out.mkdir(parents=True, exist_ok=True)
    config = worker_config(model_path, out, input_dir=input_dir, workers=workers, formats=formats, device=device,
                           tta=tta, reference_dir=reference_dir, prompt_model=prompt_model, prompt_masks=prompt_masks,
                           prompt_kind=prompt_kind, sam_mode=sam_mode, sam_config=sam_config, image_size=image_size)
    done, _ = plan_resume([s.study_id for s in studies], out, result_key=config.result_key) if resume else (set(), [])
    todo = [s for s in studies if s.study_id not in done]
    info: dict[str, Any] = {
        "model": config.model, "model_sha256": model_info.get("sha256"), "result_key": config.result_key,
        "labels": {k: v for k, v in model_info.get("labels", {}).items() if str(k) != "0"},
        "input": config.input_dir, "output": config.output_dir, "backend": backend,
        "scheduler": scheduler, "workers": workers, "formats": list(formats), "reference": config.reference_dir,
        "prompt_model": config.prompt_model, "prompt_masks": config.prompt_masks,
        "started": _now(), "studies": len(studies), "skipped": len(done),
        "study_timeout_s": study_timeout,
    }
    write_text_atomic(out / "run.json", json.dumps(info, indent=2))
    log.info("%d studies found under %s: %d to run, %d already complete", len(studies), input_dir, len(todo), len(done))
    if on_start is not None:
        on_start(len(todo), len(done))

    result = BatchResult(output_dir=out, total=len(studies), skipped=len(done))
    start = time.perf_counter()
    extra = {"scheduler": scheduler} if backend == "dask" else {}
    for record in _backend(backend)(todo, config, workers=workers, max_retries=max_retries, func=func,
                                    study_timeout=study_timeout, **extra):
        record = append_or_note(manifest, record)
        result.records.append(record)
        if on_record is not None:
            on_record(record)
    result.elapsed_s = time.perf_counter() - start

    info.update(finished=_now(), elapsed_s=round(result.elapsed_s, 3), ok=result.count("ok"),
                failed=result.count("failed"), lost=result.count("lost"),
                studies_per_minute=round(result.studies_per_minute, 3))
    write_text_atomic(out / "run.json", json.dumps(info, indent=2))
    if report:
        from medseg.report.html import write_report

        result.report = write_report(out)
    return result


def append_or_note(manifest: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Append ``record`` to the manifest; when that fails (disk full, read-only), log one line and return
    the record with ``manifest_error`` set: a failed append never ends the run."""
    try:
        append_record(manifest, record)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        log.error("%s: cannot append the record of %s (%s)", manifest, record.get("study_id"), reason)
        return {**record, "manifest_error": f"{manifest}: {reason}"}
    return record


def _backend(name: str) -> Callable[..., Any]:
    if name == "dask":
        from medseg.batch.dask_backend import run_dask

        return run_dask
    from medseg.batch.local import run_local

    return run_local


__all__ = ["run_batch", "BatchResult", "BACKENDS"]
