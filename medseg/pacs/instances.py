"""A received instance file, checked before it joins a series folder (every transport, one rule).

A file written by a transport (a WADO-RS multipart part, a C-GET C-STORE sub-operation) keeps a
temporary name until its Study/Series/SOP Instance UIDs are read and match the request; only then
is it renamed to ``{SOPInstanceUID}.dcm`` inside the series folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.pacs.errors import PacsError
from medseg.pacs.uids import check_uid

if TYPE_CHECKING:
    from medseg.pacs.query import SeriesRef

log = logging.getLogger(__name__)


def file_uids(path: Path) -> tuple[str, str, str]:
    """(Study, Series, SOP Instance UID) of a received file: medseg's fast header reader for plain
    little-endian files, pydicom for the rest.

    Raises:
        PacsError: the file is not a readable DICOM file.
    """
    import pydicom

    from medseg.io.dicom.fasthdr import read_fast_header

    try:
        fast = read_fast_header(path)
        ds = fast[0] if fast else pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
        return str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", "")), str(ds.get("SOPInstanceUID", ""))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is rejected the same way
        raise PacsError(f"a received file of {path.stat().st_size} bytes is not a readable DICOM file "
                        f"({type(exc).__name__})") from None


def keep_instance(path: Path, ref: "SeriesRef", folder: Path, expected: Collection[str], where: str) -> bool:
    """Rename ``path`` to ``folder/{SOPInstanceUID}.dcm`` when it is an instance of ``ref`` listed in
    ``expected``; otherwise log one line and leave it (the caller deletes it). Returns whether kept."""
    try:
        study, series, sop = file_uids(path)
    except PacsError as exc:
        log.warning("%s: dropped a received file: %s", where, exc)
        return False
    if study != ref.study_uid or series != ref.series_uid or sop not in expected:
        log.warning("%s: dropped a received file that is not an instance of the requested series", where)
        return False
    os.replace(path, folder / f"{check_uid(sop)}.dcm")
    return True


__all__ = ["file_uids", "keep_instance"]
