"""Retrieval of one series into a cache folder, complete or not at all, by any transport.

``client.receive`` brings instances in: WADO-RS asks for ``transfer-syntax=*`` (the stored
files, no transcoding: with the default Accept, Orthanc drops an instance it cannot transcode
from an HTTP 200 answer) and streams parts to ``*.part`` files; DIMSE C-GET writes each C-STORE
sub-operation to a ``*.part`` file. Either way each file's Study/Series/SOP Instance UIDs are
checked against the request before it is renamed to ``{SOPInstanceUID}.dcm``. A series
is complete when its SOP Instance UIDs equal the QIDO instance list; missing instances are
fetched again one by one, and a series still incomplete raises
:class:`~medseg.pacs.errors.IncompleteSeriesError` (``server returned 8/9 instances``).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from medseg.pacs.errors import IncompleteSeriesError, PacsAuthError, PacsError, PacsTimeoutError
from medseg.pacs.query import SeriesRef, list_instances
from medseg.pacs.uids import check_uid

log = logging.getLogger(__name__)


def deadline_s(n_instances: int, *, base_s: float = 120.0, per_instance_s: float = 2.0) -> float:
    """The default time allowed to fetch a series: grows with its size.

    >>> deadline_s(300)
    720.0
    """
    return base_s + per_instance_s * n_instances


def _sweep(folder: Path, expected: set[str]) -> set[str]:
    """Delete partial and foreign files; the SOP Instance UIDs already present."""
    have = set()
    for path in folder.iterdir():
        if path.is_file() and path.suffix == ".dcm" and path.stem in expected and path.stat().st_size > 0:
            have.add(path.stem)
        elif path.is_file():
            path.unlink()
    return have


def fetch_series(client: Any, ref: SeriesRef, cache_dir: str | os.PathLike[str], *,
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
    last_error: PacsError | None = None
    for attempt in range(rounds):
        missing = expected - have
        if not missing:
            break
        whole = attempt == 0 and len(missing) > 1
        for sop_uid in [None] if whole else sorted(missing):
            if time.monotonic() > end:
                last_error = PacsTimeoutError(f"series {ref.series_uid}: the deadline passed")
                break
            try:
                client.receive(ref, folder, sop_uid, expected, end)
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
