"""The Dask distributed backend (optional extra ``medseg[distributed]``).

The same per-study function as the local backend runs as one Dask task per study;
each Dask worker process keeps its own cached model. With ``scheduler=None`` a
``LocalCluster`` is started with one single-threaded worker process per worker;
otherwise the client connects to an existing scheduler (e.g. one started by
dask-jobqueue on SLURM/PBS, or on Kubernetes).

Two Dask defaults are changed for the clusters this module starts (they do not
reach the workers of an existing cluster, whose own Dask config rules there):

- the nanny's ``MALLOC_TRIM_THRESHOLD_`` is unset (it makes torch CPU inference
  about 1.7x slower), and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` are set to the
  worker's share of the cores instead of 1;
- ``distributed.scheduler.allowed-failures`` is ``max_retries``: a study whose worker
  died is re-run that many times, then recorded as ``"lost"``.

The per-study wall limit is kept inside the worker process: before a study starts, its start time
and the worker's PID go into a deadline note in the output folder, and ``faulthandler``'s watchdog
(a native thread, so a study stuck in native code holding the GIL is stopped too) dumps the stack
into that note and ends the process at the limit. The nanny starts a new worker; the study's next
attempt, or the client when Dask gives up on it, finds the expired note and records the study
``failed: timed out after N s`` (never run again). The output folder must be shared by the workers
and the client, as it already is for the outputs.
"""

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medseg.batch.discover import Study
from medseg.batch.local import StudyFunc, last_stage, lost_record, timeout_record
from medseg.batch.worker import WorkerConfig, process_study
from medseg.errors import ConfigError

log = logging.getLogger(__name__)


def dask_config(*, threads_per_worker: int, max_retries: int) -> dict[str, Any]:
    """The Dask config overrides used while a batch runs (see the module docstring)."""
    threads = str(max(1, threads_per_worker))
    return {
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
        "distributed.nanny.pre-spawn-environ.OMP_NUM_THREADS": threads,
        "distributed.nanny.pre-spawn-environ.MKL_NUM_THREADS": threads,
        "distributed.nanny.pre-spawn-environ.OPENBLAS_NUM_THREADS": threads,
        "distributed.scheduler.allowed-failures": int(max_retries),
    }


def _import_distributed() -> Any:
    try:
        import dask  # noqa: F401
        import distributed
    except ImportError as exc:
        raise ConfigError(
            "backend 'dask' needs Dask distributed: pip install 'medseg[distributed]'"
        ) from exc
    return distributed


@contextlib.contextmanager
def dask_client(
    *, scheduler: str | None = None, workers: int = 1, max_retries: int = 2, threads_per_worker: int | None = None
) -> Iterator[Any]:
    """A ``distributed.Client``: connected to ``scheduler``, or to a new ``LocalCluster`` of ``workers`` processes.

    The LocalCluster has one single-threaded worker process per worker (torch inside
    uses ``threads_per_worker`` threads, default: CPU cores / workers) and no dashboard.
    """
    distributed = _import_distributed()
    import dask

    threads = threads_per_worker or max(1, (os.cpu_count() or 1) // max(1, workers))
    with dask.config.set(dask_config(threads_per_worker=threads, max_retries=max_retries)):
        if scheduler:
            try:
                client = distributed.Client(scheduler, timeout="30s")
            except OSError as exc:
                raise ConfigError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler ({exc})") from exc
            with client:
                yield client
            return
        with distributed.LocalCluster(
            n_workers=max(1, workers), threads_per_worker=1, processes=True, dashboard_address=None,
            silence_logs=logging.WARNING,
        ) as cluster, distributed.Client(cluster) as client:
            yield client


def deadline_note(config: Any, study: Study) -> Path:
    """Where a study's start time, worker PID and (past the limit) stack dump are noted."""
    base = getattr(config, "output_dir", None) or tempfile.gettempdir()
    return Path(base) / f".study-{hashlib.sha256(study.study_id.encode()).hexdigest()[:24]}.deadline"


def expired_record(config: Any, study: Study, timeout: float) -> dict[str, Any] | None:
    """The timeout record of a study whose last attempt was stopped at its deadline (the note is
    removed), or None when no attempt ran past it."""
    note = deadline_note(config, study)
    try:
        started, pid = note.read_text().split()[:2]
        expired = time.time() >= float(started) + timeout - 0.5
    except (OSError, ValueError):
        return None
    if not expired:
        return None
    note.unlink(missing_ok=True)
    return timeout_record(study, timeout, 1, last_stage(config, int(pid)))


def run_with_deadline(func: StudyFunc, study: Study, config: Any, timeout: float | None) -> dict[str, Any]:
    """``func(study, config)`` in a Dask worker, the process ended at ``timeout`` seconds (see the
    module docstring); the record of an earlier attempt stopped at the deadline when there was one."""
    if timeout is None:
        return func(study, config)
    earlier = expired_record(config, study, timeout)
    if earlier is not None:
        return earlier
    note = deadline_note(config, study)
    with open(note, "w", encoding="utf-8") as stream:  # the watchdog writes the stack here at the limit
        stream.write(f"{time.time():.3f} {os.getpid()}\n")
        stream.flush()
        faulthandler.dump_traceback_later(timeout, exit=True, file=stream)
        try:
            return func(study, config)
        finally:
            faulthandler.cancel_dump_traceback_later()
            note.unlink(missing_ok=True)


def run_dask(
    studies: list[Study],
    config: WorkerConfig,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    max_retries: int = 2,
    func: StudyFunc = process_study,
    study_timeout: float | None = None,
) -> Iterator[dict[str, Any]]:
    """Process ``studies`` as Dask tasks; yields records as they complete (in completion order).

    A task whose worker died more than ``max_retries`` times (Dask's ``KilledWorker``)
    gives a ``"lost"`` record; any other task error gives a ``"failed"`` record. A study past
    ``study_timeout`` seconds (None: no limit) has its worker process ended and is recorded
    ``failed: timed out after N s``, not retried.
    """
    if not studies:
        return
    distributed = _import_distributed()
    with dask_client(scheduler=scheduler, workers=workers, max_retries=max_retries,
                     threads_per_worker=config.threads) as client:
        by_key: dict[str, Study] = {}
        futures = []
        for study in studies:
            future = client.submit(run_with_deadline, func, study, config, study_timeout,
                                   key=f"medseg-study-{study.study_id}", pure=False)
            by_key[future.key] = study
            futures.append(future)
        for future in distributed.as_completed(futures):
            study = by_key[future.key]
            if future.status == "finished":
                yield future.result()
                continue
            exc = future.exception()
            expired = expired_record(config, study, study_timeout) if study_timeout is not None else None
            if isinstance(exc, distributed.KilledWorker) and expired is not None:
                log.warning("study %s timed out after %g s", study.study_id, study_timeout)
                yield expired
            elif isinstance(exc, distributed.KilledWorker):
                log.warning("study %s lost: its worker died %d times", study.study_id, max_retries + 1)
                yield lost_record(study, "Dask worker died", max_retries + 1)
            else:
                record = lost_record(study, "", 1)
                record["status"] = "failed"
                record["error"] = {"type": type(exc).__name__, "message": str(exc) or type(exc).__name__}
                yield record
            future.release()


__all__ = ["run_dask", "dask_client", "dask_config", "run_with_deadline", "deadline_note"]
