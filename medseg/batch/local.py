"""The default backend: a pool of worker processes on this machine, one model each.

Each worker is a ``spawn``-ed process that loads the model once (on its first
study) and then takes one study at a time over its own pipe, so the parent always
knows which study each worker holds. When a worker process dies (killed, out of
memory, a crash in native code) the parent starts a replacement and re-queues the
study, up to ``max_retries`` times; after that the study is recorded as ``"lost"``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

from medseg.batch.discover import Study
from medseg.batch.worker import WorkerConfig, process_study

log = logging.getLogger(__name__)

StudyFunc = Callable[[Study, WorkerConfig], dict[str, Any]]


def _die_with_parent() -> None:
    """On Linux, ask the kernel to kill this worker when the batch process dies (no orphans writing late)."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except OSError:
            log.debug("prctl(PR_SET_PDEATHSIG) unavailable")


def _worker_main(conn: Connection, func: StudyFunc, config: WorkerConfig) -> None:
    _die_with_parent()
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        conn.send(func(task, config))


#: default per-study wall limit in seconds (a study that blocks or loops is stopped and recorded)
DEFAULT_STUDY_TIMEOUT_S = 3600.0


def timeout_record(study: Study, seconds: float, attempts: int, stage: str | None = None) -> dict[str, Any]:
    """The manifest record of a study stopped at the per-study wall limit."""
    where = f" (last stage: {stage})" if stage else ""
    return {
        "study_id": study.study_id, "input": study.path, "kind": study.kind, "series_uid": study.series_uid,
        "status": "failed", "error": {"type": "StudyTimeout", "message": f"timed out after {seconds:g} s{where}"},
        "timings_s": {}, "outputs": {}, "metrics": None, "attempts": attempts,
    }


def lost_record(study: Study, reason: str, attempts: int) -> dict[str, Any]:
    """The manifest record of a study whose worker died on every attempt."""
    return {
        "study_id": study.study_id, "input": study.path, "kind": study.kind, "series_uid": study.series_uid,
        "status": "lost", "error": {"type": "WorkerLost", "message": f"{reason} ({attempts} attempts)"},
        "timings_s": {}, "outputs": {}, "metrics": None, "attempts": attempts,
    }


class _Slot:
    def __init__(self, ctx: Any, func: StudyFunc, config: WorkerConfig) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child, func, config), daemon=True)
        self.process.start()
        child.close()
        self.study: Study | None = None
        self.started = 0.0

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def run_local(
    studies: list[Study],
    config: WorkerConfig,
    *,
    workers: int = 1,
    max_retries: int = 2,
    func: StudyFunc = process_study,
    study_timeout: float | None = DEFAULT_STUDY_TIMEOUT_S,
) -> Iterator[dict[str, Any]]:
    """Process ``studies`` on ``workers`` local processes; yields records as studies finish.

    Args:
        studies: the studies to run.
        config: the worker configuration (sent once to each worker process).
        workers: number of worker processes (each holds one model).
        max_retries: how many times a study is re-queued after its worker died.
        func: the per-study function (a module-level function, picklable).
        study_timeout: wall limit of one study in seconds (None: no limit); a study past it has
            its worker killed and replaced, and is recorded ``failed: timed out after N s``
            (not retried), while the other studies go on.
    """
    if not studies:
        return
    ctx = mp.get_context("spawn")
    queue: deque[Study] = deque(studies)
    attempts: dict[str, int] = {}
    slots = [_Slot(ctx, func, config) for _ in range(max(1, min(workers, len(studies))))]
    try:
        for slot in slots:
            _assign(slot, queue, attempts)
        while any(slot.study is not None for slot in slots):
            busy = [s for s in slots if s.study is not None]
            wait_s = None
            if study_timeout is not None:
                wait_s = max(0.0, min(s.started + study_timeout for s in busy) - time.monotonic())
            ready = wait([s.conn for s in busy] + [s.process.sentinel for s in busy], timeout=wait_s)
            for n, slot in enumerate(slots):
                if slot.study is None:
                    continue
                if (study_timeout is not None and slot.conn not in ready
                        and time.monotonic() - slot.started >= study_timeout):
                    study = slot.study
                    log.warning("study %s timed out after %g s; stopping worker %d", study.study_id, study_timeout,
                                slot.process.pid)
                    slot.process.kill()
                    slot.process.join()
                    slot.conn.close()
                    slot.study = None
                    yield timeout_record(study, study_timeout, attempts[study.study_id],
                                         last_stage(config, slot.process.pid))
                    if queue:
                        slots[n] = _Slot(ctx, func, config)
                        _assign(slots[n], queue, attempts)
                    continue
                if slot.conn in ready or slot.conn.poll():
                    try:
                        record = slot.conn.recv()
                    except (EOFError, OSError):
                        record = None
                    if record is not None:
                        record["attempts"] = attempts[slot.study.study_id]
                        slot.study = None
                        yield record
                        _assign(slot, queue, attempts)
                        continue
                if slot.process.sentinel in ready or not slot.process.is_alive():
                    study = slot.study
                    slot.process.join(timeout=5)
                    code = slot.process.exitcode
                    log.warning("worker %d died (exit code %s) while processing %s", slot.process.pid, code,
                                study.study_id)
                    slot.study = None
                    slot.conn.close()
                    stage = last_stage(config, slot.process.pid)
                    if attempts[study.study_id] > max_retries:
                        where = f" in stage {stage} on {study.path}" if stage else f" on {study.path}"
                        yield lost_record(study, f"worker process died (exit code {code}){where}",
                                          attempts[study.study_id])
                    else:
                        queue.appendleft(study)
                    if queue:
                        slots[n] = _Slot(ctx, func, config)
                        _assign(slots[n], queue, attempts)
    finally:
        for slot in slots:
            slot.stop() if slot.process.is_alive() else slot.conn.close()
            last_stage(config, slot.process.pid)  # remove the note of a worker that ended normally


def last_stage(config: Any, pid: int | None) -> str | None:
    """The stage a dead worker noted last (and the note removed), or None."""
    out = getattr(config, "output_dir", None)
    if out is None or pid is None:
        return None
    from medseg.batch.worker import stage_file

    path = stage_file(out, pid)
    try:
        stage = path.read_text().strip() or None
        path.unlink()
    except OSError:
        return None
    return stage


def _assign(slot: _Slot, queue: deque[Study], attempts: dict[str, int]) -> None:
    if not queue:
        return
    study = queue.popleft()
    attempts[study.study_id] = attempts.get(study.study_id, 0) + 1
    slot.study = study
    slot.started = time.monotonic()
    try:
        slot.conn.send(study)
    except (BrokenPipeError, OSError):  # the worker died while idle: its sentinel reports it, the study is re-queued
        log.debug("worker %s gone before it received %s", slot.process.pid, study.study_id)


__all__ = ["run_local", "lost_record", "timeout_record", "last_stage", "StudyFunc", "DEFAULT_STUDY_TIMEOUT_S"]
