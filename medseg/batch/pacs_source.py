"""``medseg batch --pacs``: query a PACS, fetch each series complete, segment it, push the SEG.

:func:`run_pacs_batch` runs the backends of :func:`~medseg.batch.runner.run_batch` (local
processes or Dask, one model per worker, the same records, failure isolation, resume and
report); only the source of the studies and the optional push are new. Fetching and
segmenting overlap: a network thread fetches the series in order, at most ``workers +
prefetch`` ahead of the records that came back, while each worker's per-study function
(:func:`segment_fetched`) waits for its series' state file and then segments it; so a batch
takes about max(fetch, segment) per series rather than their sum. A series that fails to fetch
becomes its failed record through the same path. With ``push`` a third thread sends each SEG as its
record arrives, so that a push never holds a worker idle. Layout, all inside the output folder::

    OUTPUT/pacs_cache/<SeriesInstanceUID>/   the fetched instances ({SOPInstanceUID}.dcm)
    OUTPUT/pacs_cache/.state/<UID>.json      fetched ok, or the failed record (written by the network thread)
    OUTPUT/pacs_cache/.incomplete/<UID>/     a series the PACS did not return whole (kept for the next try)
    OUTPUT/manifest.jsonl                    one record per series; study_id is the SeriesInstanceUID
    OUTPUT/pushed.jsonl                      one line per push attempt (see :data:`PUSHED_NAME`)

Resume is keyed by SeriesInstanceUID: a series complete in the manifest is not fetched again;
its SEG is pushed only when ``pushed.jsonl`` has no ``ok`` line for that same file (SHA-256),
and then it is the same file. Nothing here logs or records query values, patient data,
credentials or URLs with query strings.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.batch.discover import Study, discover_studies
from medseg.batch.local import StudyFunc
from medseg.batch.runner import BatchResult, RecordCallback, _check_model, run_batch, worker_config
from medseg.batch.worker import WorkerConfig, process_study
from medseg.errors import ConfigError, MedsegError
from medseg.io.atomic import write_text_atomic
from medseg.io.manifest import MANIFEST_NAME, append_record, latest_records, plan_resume, read_manifest

log = logging.getLogger(__name__)

CACHE_NAME = "pacs_cache"
_INCOMPLETE = ".incomplete"
_STATE = ".state"  # one JSON file per series of the run: fetched ok, or its failed record
DEFAULT_PREFETCH = 1
#: Push records, one JSON line each (appended with one ``write`` + ``fsync``): ``study_id`` and
#: ``series_uid`` (the source series), ``study_uid``, ``seg_series_uid``, ``seg_path``,
#: ``seg_sha256``, ``time`` (UTC ISO 8601), ``status`` (``ok`` | ``failed``), ``error`` (reason or null).
PUSHED_NAME = "pushed.jsonl"
DEFAULT_MAX_SERIES = 200


@dataclass
class PacsBatchResult(BatchResult):
    """A :class:`BatchResult` (``records`` include series that failed to fetch) plus the PACS facts.

    Attributes:
        series: series selected by the query.
        fetched: SeriesInstanceUIDs fetched (or found complete in the cache) by this run.
        pushes: the push records of this run (see :data:`PUSHED_NAME`).
        cache_removed: whether ``OUTPUT/pacs_cache`` was removed at the end.
    """

    series: int = 0
    fetched: list[str] = field(default_factory=list)
    pushes: list[dict[str, Any]] = field(default_factory=list)
    cache_removed: bool = False

    @property
    def exit_code(self) -> int:
        """0 when every series of this run was segmented (and pushed, when asked), else 1."""
        return 0 if super().exit_code == 0 and all(p["status"] == "ok" for p in self.pushes) else 1


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def read_series_file(path: str | os.PathLike[str]) -> list[str]:
    """SeriesInstanceUIDs of a text file: one per line; blank lines and ``#`` comments ignored."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [s for s in (line.split("#", 1)[0].strip() for line in lines) if s]


def _failed(uid: str, cache: Path, exc: BaseException, seconds: float) -> dict[str, Any]:
    """The manifest record of a series that never reached segmentation (redacted message)."""
    from medseg.pacs.redact import redact

    return {"study_id": uid, "input": str(cache / uid), "kind": "dicom", "series_uid": uid, "status": "failed",
            "error": {"type": type(exc).__name__, "message": redact(str(exc) or type(exc).__name__)},
            "timings_s": {"fetch": round(seconds, 4)}, "outputs": {}, "metrics": None, "source": "pacs",
            "started": _now(), "finished": _now()}


def select_series(client: Any, *, where: Mapping[str, str] | Iterable[str] | None = None,
                  series: Sequence[str] = (), max_series: int | None = DEFAULT_MAX_SERIES
                  ) -> tuple[list[Any], list[tuple[str, BaseException]]]:
    """The :class:`~medseg.pacs.query.SeriesRef` of the run, and the listed UIDs not found.

    With ``series`` each UID is looked up on its own (and must match ``where``), so one
    missing series fails alone; without, ``where`` is one query.

    Raises:
        ConfigError: neither ``where`` nor ``series``, or more series than ``max_series``.
        PacsError: a malformed UID or ``where``, a query that matched more than
            ``max_series``, or the PACS refusing the credentials.
    """
    from medseg.pacs.client import check_uid
    from medseg.pacs.errors import PacsAuthError, PacsError
    from medseg.pacs.query import parse_where, query_series

    filters = parse_where(where)
    uids = list(dict.fromkeys(check_uid(u.strip(), "SeriesInstanceUID") for u in series))
    if not uids:
        if not filters:
            raise ConfigError("a PACS batch needs --where KEY=VALUE, --series UID or --series-file")
        return query_series(client, where=filters, max_series=max_series), []
    if max_series is not None and len(uids) > max_series:
        raise ConfigError(f"{len(uids)} series listed, more than --max-series {max_series}; "
                          "split the list or raise --max-series")
    refs, missing = [], []
    for uid in uids:
        try:
            refs.extend(query_series(client, where=filters, series=[uid]))
        except PacsAuthError:
            raise
        except PacsError as exc:
            missing.append((uid, exc))
    return refs, missing


def _cache_dir(out: Path) -> Path:
    cache = out / CACHE_NAME
    if cache.is_symlink() or (cache / _INCOMPLETE).is_symlink():
        raise ConfigError(f"{cache} is a symbolic link; the PACS cache must lie inside the output folder")
    return cache


def _tidy_cache(cache: Path, keep: set[str]) -> None:
    """Delete loose files and the folders of series outside this run (they would be segmented)."""
    if not cache.is_dir():
        return
    for path in cache.iterdir():
        if path.name in (_INCOMPLETE, _STATE):
            continue
        if path.is_dir() and not path.is_symlink() and path.name in keep:
            continue
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        log.info("PACS cache: removed %s (not a series of this run)", path.name)


def _fetch(client: Any, ref: Any, cache: Path) -> Path:
    """:func:`fetch_series` into the cache; a series not returned whole is parked under ``.incomplete``
    (discovery skips hidden folders) so that it is never segmented and its instances are reused."""
    from medseg.pacs.errors import IncompleteSeriesError
    from medseg.pacs.retrieve import fetch_series

    folder, parked = cache / ref.series_uid, cache / _INCOMPLETE / ref.series_uid
    if parked.is_dir() and not folder.exists():
        os.replace(parked, folder)
    try:
        return fetch_series(client, ref, cache)
    except IncompleteSeriesError:
        parked.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(parked, ignore_errors=True)
        os.replace(folder, parked)
        raise
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


class _Pusher:
    """Pushes the SEG of finished series and appends each attempt to ``pushed.jsonl``."""

    def __init__(self, client: Any, out: Path, refs: Mapping[str, Any], *, enabled: bool) -> None:
        self.client, self.out, self.refs, self.enabled = client, out, refs, enabled
        self.path = out / PUSHED_NAME
        self.earlier = latest_records(read_manifest(self.path))  # the last push of each series by earlier runs
        self.records: list[dict[str, Any]] = []

    def pushed(self, record: Mapping[str, Any]) -> bool:
        """Whether the SEG of this manifest record is already pushed (an ``ok`` line for the same file)."""
        seg = (record.get("outputs") or {}).get("dicomseg") or {}
        last = self.earlier.get(record["study_id"])
        return bool(last and last.get("status") == "ok" and seg and last.get("seg_sha256") == seg.get("sha256"))

    def push(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        """Push the SEG of ``record`` (when enabled) and append the attempt to ``pushed.jsonl``."""
        if not self.enabled:
            return None
        from medseg.pacs.push import push_seg
        from medseg.pacs.redact import redact

        uid = record["study_id"]
        ref = self.refs[uid]
        seg = (record.get("outputs") or {}).get("dicomseg")
        entry: dict[str, Any] = {"study_id": uid, "series_uid": uid, "study_uid": ref.study_uid,
                                 "seg_series_uid": None, "seg_path": seg and seg["path"],
                                 "seg_sha256": seg and seg["sha256"], "status": "failed", "error": None}
        try:
            if not seg:
                raise ConfigError(f"series {uid}: no seg.dcm in its outputs (--formats without dicomseg?)")
            entry["seg_series_uid"] = push_seg(self.client, self.out / seg["path"], ref.study_uid)
            entry["status"] = "ok"
        except Exception as exc:  # a failed push is recorded, the batch goes on
            entry["error"] = f"{type(exc).__name__}: {redact(exc)}"
            log.warning("series %s: push failed: %s", uid, entry["error"])
        entry["time"] = _now()
        append_record(self.path, entry)
        self.records.append(entry)
        return entry


def _write_info(out: Path, pacs: dict[str, Any], result: PacsBatchResult, model: str | os.PathLike[str],
                model_info: Mapping[str, Any], options: Mapping[str, Any]) -> None:
    """``run.json``: the run's options and summary (the fields of run_batch's) plus the ``pacs`` facts."""
    import inspect

    info: dict[str, Any] = {
        "model": str(Path(model).resolve()), "model_sha256": model_info.get("sha256"),
        "result_key": _result_key(model, out, options),
        "labels": {k: v for k, v in model_info.get("labels", {}).items() if str(k) != "0"},
        "input": None, "output": str(out.resolve()), "backend": options.get("backend", "local"),
        "workers": options.get("workers", 1), "formats": list(options.get("formats", ("nifti", "dicomseg"))),
        "study_timeout_s": options.get("study_timeout",
                                       inspect.signature(run_batch).parameters["study_timeout"].default),
        "started": pacs["started"], "finished": pacs["finished"], "elapsed_s": round(result.elapsed_s, 3),
        "studies": result.total, "skipped": result.skipped, "ok": result.count("ok"),
        "failed": result.count("failed"), "lost": result.count("lost"),
        "studies_per_minute": round(result.studies_per_minute, 3), "pacs": pacs,
    }
    write_text_atomic(out / "run.json", json.dumps(info, indent=2))


def _sweep_done(cache: Path, finished: set[str]) -> bool:
    """Delete the cache folders of finished series; the cache itself when nothing else is left in it."""
    if not cache.is_dir():
        return False
    for uid in finished:
        if (cache / uid).is_dir():
            shutil.rmtree(cache / uid)
    shutil.rmtree(cache / _STATE, ignore_errors=True)
    incomplete = cache / _INCOMPLETE
    if incomplete.is_dir() and not any(incomplete.iterdir()):
        incomplete.rmdir()
    if any(cache.iterdir()):
        return False
    cache.rmdir()
    return True


def run_pacs_batch(
    model: str | os.PathLike[str],
    client: Any,
    output_dir: str | os.PathLike[str],
    *,
    where: Mapping[str, str] | Iterable[str] | None = None,
    series: Sequence[str] = (),
    max_series: int | None = DEFAULT_MAX_SERIES,
    push: bool = False,
    resume: bool = False,
    keep_cache: bool = False,
    prefetch: int = DEFAULT_PREFETCH,
    report: bool = True,
    on_start: Callable[[int, int], None] | None = None,
    on_record: RecordCallback | None = None,
    **batch_options: Any,
) -> PacsBatchResult:
    """Segment the series a PACS query selects; optionally push each DICOM-SEG back to its study.

    Args:
        model: run folder or exported model folder (as for :func:`run_batch`).
        client: a :class:`medseg.pacs.PacsClient` (its credentials, timeouts and retries are used).
        output_dir: the batch output folder; the fetched series live in ``output_dir/pacs_cache``.
        where: DICOM matching keys (``["Modality=CT", "StudyDate=20250101-20250131"]`` or a mapping).
        series: SeriesInstanceUIDs (each must also match ``where``); a UID the PACS does not
            have is recorded failed, the others run.
        max_series: refuse (before fetching anything) a selection of more series.
        push: STOW-RS each new DICOM-SEG to its source study and check QIDO lists it.
        resume: keep series complete in the manifest (not fetched again; pushed only if
            ``pushed.jsonl`` has no ``ok`` line for that same SEG file); run the rest.
        keep_cache: keep the fetched series; otherwise the folders of finished series are
            deleted and ``pacs_cache`` with them once empty (a fully successful run removes it).
        prefetch: series fetched ahead of the workers (a network thread fetches while the
            workers segment; at most ``workers + prefetch`` fetched series wait on disk).
        report: write ``report.html``.
        on_start, on_record: as for :func:`run_batch` (series that fail to fetch are reported too).
        **batch_options: any other keyword of :func:`run_batch` (``workers``, ``backend``,
            ``formats``, ``device``, ``tta``, ...). With ``backend="dask"`` the output folder must
            be visible to the Dask workers.

    Raises:
        ConfigError: bad options, or a previous manifest without ``resume``.
        PacsError: a bad query, more than ``max_series`` matches, or refused credentials.
    """
    out = Path(output_dir)
    model_info = _check_options(model, out, push=push, resume=resume, prefetch=prefetch, batch_options=batch_options)
    started = _now()
    refs, missing = select_series(client, where=where, series=series, max_series=max_series)
    cache = _cache_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    by_uid = {r.series_uid: r for r in refs}
    uids = [r.series_uid for r in refs] + [u for u, _ in missing]
    done, kept = plan_resume(uids, out, result_key=_result_key(model, out, batch_options)) if resume else (set(), [])
    log.info("PACS: %d series selected, %d not found, %d already complete", len(refs), len(missing), len(done))
    pusher = _Pusher(client, out, by_uid, enabled=push)
    for rec in kept:  # segmented by an earlier run but not pushed: push that same file now
        if push and rec["study_id"] in by_uid and not pusher.pushed(rec):
            pusher.push(rec)

    todo = [r for r in refs if r.series_uid not in done]
    _tidy_cache(cache, {r.series_uid for r in todo} | done)
    failures = [_failed(uid, cache, exc, 0.0) for uid, exc in missing]
    result = PacsBatchResult(output_dir=out, total=len(uids), skipped=len(done), series=len(uids))
    fetcher = _segment(model, client, todo, cache, out, result, failures=failures, pusher=pusher, prefetch=prefetch,
                       on_start=on_start, on_record=on_record, batch_options=dict(batch_options))
    result.pushes = pusher.records

    if not keep_cache:
        result.cache_removed = _sweep_done(cache, _finished(result, done, pusher))
    _write_info(out, {
        "pacs": client.base_url, "query_keys": sorted(_keys(where)), "series_listed": len(series),
        "series": len(uids), "not_found": len(missing), "fetched": len(fetcher.fetched),
        "fetch_s": round(fetcher.fetch_s, 3), "fetch_failed": fetcher.failed, "prefetch": prefetch, "push": push,
        "pushed": sum(p["status"] == "ok" for p in pusher.records),
        "push_failed": sum(p["status"] != "ok" for p in pusher.records),
        "cache_kept": keep_cache, "cache_removed": result.cache_removed, "started": started, "finished": _now(),
    }, result, model, model_info, batch_options)
    if fetcher.auth_error is not None:  # every series after it is recorded failed; the run itself fails too
        raise fetcher.auth_error
    if report:
        from medseg.report.html import write_report

        result.report = write_report(out)
    log.info("PACS batch: %d ok, %d failed, %d pushed, %d push failed", result.count("ok"),
             result.count("failed") + result.count("lost"), sum(p["status"] == "ok" for p in pusher.records),
             sum(p["status"] != "ok" for p in pusher.records))
    return result


def _check_options(model: str | os.PathLike[str], out: Path, *, push: bool, resume: bool, prefetch: int,
                   batch_options: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse bad options before any request to the PACS; returns the model's ``model.json``."""
    import inspect

    from medseg.batch.runner import BACKENDS

    unknown = set(batch_options) - set(inspect.signature(run_batch).parameters)
    if unknown:
        raise ConfigError(f"unknown batch option(s): {', '.join(sorted(unknown))}")
    if batch_options.get("backend", "local") not in BACKENDS:
        raise ConfigError(f"backend {batch_options['backend']!r} unknown; choose from {', '.join(BACKENDS)}")
    if not isinstance(prefetch, int) or prefetch < 0:
        raise ConfigError(f"prefetch must be 0 or more series, got {prefetch}")
    if batch_options.get("workers", 1) < 1:
        raise ConfigError(f"workers must be at least 1, got {batch_options['workers']}")
    if any(batch_options.get(k) is not None for k in ("input_dir", "reference_dir", "prompt_masks")):
        raise ConfigError("a PACS batch takes its studies from the PACS: input_dir, reference_dir and prompt_masks "
                          "(matched by file path) need a folder batch")
    if push and "dicomseg" not in batch_options.get("formats", ("nifti", "dicomseg")):
        raise ConfigError("--push sends the DICOM-SEG: keep dicomseg in --formats")
    prompt_model = batch_options.get("prompt_model")
    info = _check_model(Path(model), Path(prompt_model) if prompt_model else None, None)
    if not resume and read_manifest(out / MANIFEST_NAME):
        raise ConfigError(f"{out} already holds a batch manifest; pass --resume to continue it or choose a new folder")
    return info


def _result_key(model: str | os.PathLike[str], out: Path, batch_options: Mapping[str, Any]) -> str:
    """The ``result_key`` run_batch gives this run's records (same model weights and settings), so that
    resume skips (and does not refetch) only series that run_batch would skip too."""
    import inspect

    from medseg.batch.runner import worker_config

    accepted = set(inspect.signature(worker_config).parameters) - {"model", "output_dir"}
    return worker_config(model, out, **{k: v for k, v in batch_options.items() if k in accepted}).result_key


class _Prefetcher(threading.Thread):
    """The network thread: fetches the series in order, at most ``depth`` ahead of the records that
    came back, and leaves one state file per series (``pacs_cache/.state/<uid>.json``) for the
    worker that waits on it (:func:`segment_fetched`)."""

    def __init__(self, client: Any, refs: Sequence[Any], cache: Path, depth: int) -> None:
        super().__init__(name="medseg-pacs-prefetch", daemon=True)
        self.client, self.refs, self.cache = client, list(refs), cache
        self.slots = threading.Semaphore(max(1, depth))
        self.halt = threading.Event()
        self.fetched: list[str] = []
        self.failed = 0
        self.fetch_s = 0.0
        self.auth_error: BaseException | None = None

    def run(self) -> None:
        from medseg.pacs.errors import PacsAuthError

        for ref in self.refs:
            while not self.slots.acquire(timeout=0.1):
                if self.halt.is_set():
                    return
            if self.halt.is_set():
                return
            t = time.perf_counter()
            state: dict[str, Any] = {"status": "ok"}
            try:
                if self.auth_error is not None:
                    raise self.auth_error
                _fetch(self.client, ref, self.cache)
                self.fetched.append(ref.series_uid)
            except BaseException as exc:  # noqa: BLE001 - a series not fetched is recorded, the batch goes on
                if isinstance(exc, PacsAuthError) and self.auth_error is None:
                    self.auth_error = exc  # every later series is recorded failed without a request
                state = {"status": "failed", "record": _failed(ref.series_uid, self.cache, exc,
                                                               time.perf_counter() - t)}
                self.failed += 1
                log.warning("series %s: not segmented: %s", ref.series_uid, state["record"]["error"]["message"])
            finally:
                seconds = time.perf_counter() - t
                self.fetch_s += seconds
                write_text_atomic(_state_path(self.cache, ref.series_uid),
                                  json.dumps({**state, "fetch_s": round(seconds, 4)}))


class _PushThread(threading.Thread):
    """Pushes each finished series' SEG in turn, so that the backend hands the next series to the
    freed worker at once instead of after the push. A ``BaseException`` of a push (the process
    going down) stops the pushing; the batch raises it once the backend is done."""

    def __init__(self, pusher: _Pusher) -> None:
        super().__init__(name="medseg-pacs-push", daemon=True)
        self.pusher = pusher
        self.todo: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.error: BaseException | None = None

    def run(self) -> None:
        while (record := self.todo.get()) is not None:
            if self.error is None:
                try:
                    self.pusher.push(record)
                except BaseException as exc:  # noqa: BLE001 - handed to the batch's thread by finish()
                    self.error = exc


def _state_path(cache: Path, uid: str) -> Path:
    return cache / _STATE / f"{uid}.json"


def segment_fetched(study: Study, config: WorkerConfig, *, func: StudyFunc = process_study,
                    wait_s: float = 24 * 3600.0) -> dict[str, Any]:
    """The per-study function of a PACS batch (run in the worker): wait until the parent's network
    thread has fetched the series (its state file), then segment the series folder with ``func``;
    a series that failed to fetch, or holds no image series, gives its failed record."""
    cache = Path(str(config.input_dir))
    state_path = _state_path(cache, study.study_id)
    start = time.monotonic()
    while not state_path.is_file():
        if time.monotonic() - start > wait_s:
            return _failed(study.study_id, cache, MedsegError(
                f"series {study.study_id}: not fetched within {wait_s:g} s"), time.monotonic() - start)
        time.sleep(0.02)
    state = json.loads(state_path.read_text(encoding="utf-8"))
    waited = round(time.monotonic() - start, 4)
    if state["status"] != "ok":
        return state["record"]
    found = discover_studies(cache / study.study_id)
    if not found:  # the files held no image series (SEG or SR only)
        return _failed(study.study_id, cache, MedsegError(
            f"series {study.study_id}: the fetched files hold no image series to segment"), state["fetch_s"])
    record = func(dataclasses.replace(found[0], study_id=study.study_id), config)
    record.setdefault("timings_s", {}).update(fetch=state["fetch_s"], fetch_wait=waited)
    return record


def _segment(model: str | os.PathLike[str], client: Any, todo: Sequence[Any], cache: Path, out: Path,
             result: PacsBatchResult, *, failures: list[dict[str, Any]], pusher: _Pusher, prefetch: int,
             on_start: Callable[[int, int], None] | None, on_record: RecordCallback | None,
             batch_options: dict[str, Any]) -> _Prefetcher:
    """Fetch (a thread, ``prefetch`` series ahead of the workers) and segment (the backend's workers)
    at once; each record goes to the manifest, its SEG to the push thread, ``on_record`` hears of it."""
    import inspect

    from medseg.batch.runner import _backend, append_or_note

    manifest = out / MANIFEST_NAME
    backend, workers = batch_options.pop("backend", "local"), batch_options.pop("workers", 1)
    defaults = inspect.signature(run_batch).parameters  # run_batch's own defaults (study_timeout 3600 s)
    run_options = {k: batch_options.pop(k, defaults[k].default) for k in ("max_retries", "study_timeout", "scheduler")}
    if backend == "local":
        run_options.pop("scheduler")
    func = functools.partial(segment_fetched, func=batch_options.pop("func", process_study))
    config = worker_config(model, out, input_dir=cache, workers=workers, **{
        k: v for k, v in batch_options.items() if k not in ("input_dir", "reference_dir", "prompt_masks")})
    shutil.rmtree(cache / _STATE, ignore_errors=True)
    (cache / _STATE).mkdir(parents=True)
    prefetcher = _Prefetcher(client, todo, cache, depth=workers + prefetch)
    for rec in failures:
        append_record(manifest, rec)
    if on_start is not None:
        on_start(len(todo) + len(failures), result.skipped)
    result.records.extend(failures)
    for rec in failures:
        if on_record is not None:
            on_record(rec)
    studies = [Study(study_id=r.series_uid, kind="dicom", path=str(cache / r.series_uid), series_uid=r.series_uid,
                     description=" ".join(x for x in (r.modality, r.series_description) if x)) for r in todo]
    pushes = _PushThread(pusher)
    start = time.perf_counter()
    prefetcher.start()
    pushes.start()
    try:
        for record in _backend(backend)(studies, config, workers=workers, func=func, **run_options):
            prefetcher.slots.release()
            record = append_or_note(manifest, record)
            result.records.append(record)
            if record.get("status") == "ok" and record.get("study_id") in pusher.refs:
                pushes.todo.put(record)
            if on_record is not None:
                on_record(record)
    finally:
        prefetcher.halt.set()
        prefetcher.join()
        pushes.todo.put(None)
        pushes.join()
    if pushes.error is not None:
        raise pushes.error
    result.elapsed_s = time.perf_counter() - start
    result.fetched = prefetcher.fetched
    return prefetcher


def _finished(result: PacsBatchResult, done: set[str], pusher: _Pusher) -> set[str]:
    """Series needing nothing more: segmented (and, when pushing, pushed; earlier or now)."""
    tried = {p["study_id"] for p in pusher.records}
    pushed = {p["study_id"] for p in pusher.records if p["status"] == "ok"}
    ok = done | {r["study_id"] for r in result.records if r.get("status") == "ok"}
    return ok if not pusher.enabled else {u for u in ok if u in pushed or (u in done and u not in tried)}


def _keys(where: Mapping[str, str] | Iterable[str] | None) -> list[str]:
    """The keys of ``where`` (never its values: they may name a patient)."""
    if where is None:
        return []
    if isinstance(where, Mapping):
        return [str(k) for k in where]
    return [str(w).partition("=")[0].strip() for w in where]


__all__ = ["run_pacs_batch", "select_series", "read_series_file", "PacsBatchResult", "PUSHED_NAME", "CACHE_NAME",
           "DEFAULT_MAX_SERIES"]
