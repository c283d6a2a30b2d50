"""WADO-RS transport of one request: the multipart answer streamed to ``*.part`` files inside the
series folder, each part kept only when it is an instance of the requested series."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.pacs.errors import PacsError, PacsTimeoutError
from medseg.pacs.instances import keep_instance
from medseg.pacs.multipart import Part, boundary_of, iter_parts
from medseg.pacs.redact import redact

if TYPE_CHECKING:
    from medseg.pacs.client import PacsClient
    from medseg.pacs.query import SeriesRef

log = logging.getLogger(__name__)

CHUNK = 1 << 20


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


def _check_part(part: Part, where: str) -> bool:
    ctype = part.headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
    if ctype != "application/dicom":
        log.warning("%s: dropped a part of Content-Type %r, expected application/dicom", where, ctype)
        return False
    return True


def receive(client: "PacsClient", ref: "SeriesRef", folder: Path, sop_uid: str | None,
            expected: Collection[str], deadline: float) -> int:
    """One WADO-RS request: the whole series (``sop_uid`` None) or one instance; valid instances
    land as ``folder/{uid}.dcm``. Returns how many were kept.

    Raises:
        PacsError: the request failed (the caller counts what arrived and tries again).
    """
    segments = ["studies", ref.study_uid, "series", ref.series_uid, *(["instances", sop_uid] if sop_uid else [])]
    where = "GET " + client.where(client.url(*segments))
    stored = 0
    with client.stream(*segments) as response:
        boundary = boundary_of(response.headers.get("Content-Type", ""))
        for part in iter_parts(_chunks(response, deadline, where), boundary, folder):
            try:
                stored += _check_part(part, where) and keep_instance(part.path, ref, folder, expected, where)
            finally:
                part.path.unlink(missing_ok=True)
    return stored


__all__ = ["receive"]
