"""WADO-RS retrieval of one series into a cache folder, complete or not at all.

The answer is asked for with ``transfer-syntax=*`` (the stored files, no transcoding: with the
default Accept, Orthanc drops an instance it cannot transcode from an HTTP 200 answer). Parts
are streamed to ``*.part`` files inside the series folder, each one's Study/Series/SOP Instance
UIDs checked against the request, and only then renamed to ``{SOPInstanceUID}.dcm``. A series
is complete when its SOP Instance UIDs equal the QIDO instance list; missing instances are
fetched again one by one, and a series still incomplete raises
:class:`~medseg.pacs.errors.IncompleteSeriesError` (``server returned 8/9 instances``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medseg.pacs.client import PacsClient, check_uid
from medseg.pacs.errors import IncompleteSeriesError, PacsAuthError, PacsError, PacsTimeoutError
from medseg.pacs.multipart import Part, boundary_of, iter_parts
from medseg.pacs.query import SeriesRef, list_instances
from medseg.pacs.redact import redact

log = logging.getLogger(__name__)

CHUNK = 1 << 20


def deadline_s(n_instances: int, *, base_s: float = 120.0, per_instance_s: float = 2.0) -> float:
    """The default time allowed to fetch a series: grows with its size.

    >>> deadline_s(300)
    720.0
    """
    return base_s + per_instance_s * n_instances


def _chunks(response: Any, deadline: float, where: str) -> Iterator[bytes]:
    import requests

    try:
        for chunk in response.iter_content(CHUNK):
            if time.monotonic() > deadline:
                raise PacsTimeoutError(f"{where}: the series deadline passed while receiving")
            yield chunk
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        if "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower():
            raise PacsTimeoutError(f"{where}: no data within the idle read timeout") from None
        raise PacsError(f"{where}: the connection broke while receiving: {redact(exc)}") from None


def _part_uids(part: Part) -> tuple[str, str, str]:
    """(Study, Series, SOP Instance UID) of a received part: medseg's fast header reader for plain
    little-endian files, pydicom for the rest."""
    import pydicom

    from medseg.io.dicom.fasthdr import read_fast_header

    ctype = part.headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
    if ctype != "application/dicom":
        raise PacsError(f"a part of Content-Type {ctype!r}, expected application/dicom")
    try:
        fast = read_fast_header(part.path)
        ds = fast[0] if fast else pydicom.dcmread(
            part.path, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
        return str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", "")), str(ds.get("SOPInstanceUID", ""))
    except Exception as exc:  # noqa: BLE001 - any unreadable part is rejected the same way
        raise PacsError(f"a part of {part.size} bytes is not a readable DICOM file ({type(exc).__name__})") from None


def _receive(client: PacsClient, ref: SeriesRef, folder: Path, segments: list[str], expected: set[str],
             deadline: float) -> int:
    """One WADO-RS request; valid instances of ``expected`` land as ``{uid}.dcm``; returns how many."""
    where = "GET " + client.where(client.url(*segments))
    stored = 0
    with client.stream(*segments) as response:
        boundary = boundary_of(response.headers.get("Content-Type", ""))
        for part in iter_parts(_chunks(response, deadline, where), boundary, folder):
            try:
                study, series, sop = _part_uids(part)
                if study != ref.study_uid or series != ref.series_uid or sop not in expected:
                    log.warning("%s: dropped a part that is not an instance of the requested series", where)
                    continue
                os.replace(part.path, folder / f"{check_uid(sop)}.dcm")
                stored += 1
            except PacsError as exc:
                log.warning("%s: dropped a part: %s", where, exc)
            finally:
                part.path.unlink(missing_ok=True)
    return stored


def _sweep(folder: Path, expected: set[str]) -> set[str]:
    """Delete partial and foreign files; the SOP Instance UIDs already present."""
    have = set()
    for path in folder.iterdir():
        if path.is_file() and path.suffix == ".dcm" and path.stem in expected and path.stat().st_size > 0:
            have.add(path.stem)
        elif path.is_file():
            path.unlink()
    return have


def fetch_series(client: PacsClient, ref: SeriesRef, cache_dir: str | os.PathLike[str], *,
                 rounds: int = 3, deadline: float | None = None) -> Path:
    """Retrieve a series to ``cache_dir/{SeriesInstanceUID}/`` (one ``{SOPInstanceUID}.dcm`` per
    instance) and return that folder, complete: its files are exactly the QIDO instance list.

    A folder that is already complete is reused without a request; partial (``*.part``) and
    foreign files are deleted first. The whole series is asked for once, then each missing
    instance, at most ``rounds`` requests per instance in all. ``deadline`` (s) defaults to
    :func:`deadline_s` of the instance count.

    Raises:
        IncompleteSeriesError: instances still missing (``server returned 8/9 instances``).
        PacsError: the PACS lists no instance, or a request failed on every try.
    """
    root = Path(cache_dir)
    folder = root / check_uid(ref.series_uid, "SeriesInstanceUID")
    check_uid(ref.study_uid, "StudyInstanceUID")
    folder.mkdir(parents=True, exist_ok=True)
    expected_list = list_instances(client, ref)
    if not expected_list:
        raise PacsError(f"series {ref.series_uid}: the PACS lists no instance")
    expected = set(expected_list)
    have = _sweep(folder, expected)
    if have == expected:
        log.info("series %s: %d instance(s) already complete in the cache", ref.series_uid, len(have))
        return folder
    start = time.monotonic()
    end = start + (deadline if deadline is not None else deadline_s(len(expected)))
    series_path = ["studies", ref.study_uid, "series", ref.series_uid]
    last_error: PacsError | None = None
    for attempt in range(rounds):
        missing = expected - have
        if not missing:
            break
        whole = attempt == 0 and len(missing) > 1
        requests_ = [series_path] if whole else [[*series_path, "instances", uid] for uid in sorted(missing)]
        for segments in requests_:
            if time.monotonic() > end:
                last_error = PacsTimeoutError(f"series {ref.series_uid}: the deadline passed")
                break
            try:
                _receive(client, ref, folder, segments, expected, end)
            except PacsAuthError:
                raise
            except PacsError as exc:
                last_error = exc
                log.warning("series %s: %s", ref.series_uid, exc)
        have = _sweep(folder, expected)
    if have != expected:
        why = f" (last error: {last_error})" if last_error else ""
        raise IncompleteSeriesError(
            f"series {ref.series_uid}: server returned {len(have)}/{len(expected)} instances after "
            f"{rounds} tries{why}; the series is not used", received=len(have), expected=len(expected))
    log.info("series %s: %d instance(s) fetched in %.2f s", ref.series_uid, len(have), time.monotonic() - start)
    return folder


__all__ = ["fetch_series", "deadline_s"]
