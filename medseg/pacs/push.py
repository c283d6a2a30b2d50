"""Push of a DICOM-SEG to its study (STOW-RS, or C-STORE over DIMSE), then a query (QIDO-RS or
C-FIND) that the PACS lists it.

A SEG written once per result keeps its UIDs, so pushing the same file again is idempotent
(Orthanc answers a duplicate STOW with success and keeps one series).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from medseg.pacs.errors import PacsError
from medseg.pacs.uids import check_uid

log = logging.getLogger(__name__)


def _header(path: Path) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is refused the same way
        raise PacsError(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None


def push_seg(client: Any, seg_path: str | os.PathLike[str], study_uid: str) -> str:
    """Store ``seg_path`` in study ``study_uid`` through ``client`` (a :class:`~medseg.pacs.client.PacsClient`:
    STOW-RS; a :class:`~medseg.pacs.dimse.DimseClient`: C-STORE) and check the PACS lists it; returns
    the SEG's SeriesInstanceUID.

    Raises:
        PacsError: the file is not a DICOM-SEG of ``study_uid``, the PACS reports the instance
            failed (FailedSOPSequence), or QIDO does not list it afterwards.
    """
    path = Path(seg_path)
    check_uid(study_uid, "StudyInstanceUID")
    ds = _header(path)
    if str(ds.get("Modality", "")) != "SEG":
        raise PacsError(f"{path}: Modality is {ds.get('Modality', '')!r}, not SEG; push_seg sends DICOM-SEG only")
    if str(ds.StudyInstanceUID) != study_uid:
        raise PacsError(f"{path}: StudyInstanceUID {ds.StudyInstanceUID} is not the target study {study_uid}")
    series_uid = check_uid(str(ds.SeriesInstanceUID), "SeriesInstanceUID")
    sop_uid = check_uid(str(ds.SOPInstanceUID), "SOPInstanceUID")
    client.store(path, study_uid)
    listed = client.find("instances", {"SOPInstanceUID": sop_uid}, study_uid=study_uid, series_uid=series_uid)
    if not listed:
        raise PacsError(f"push of {path.name} to study {study_uid} was accepted, but the PACS does not list "
                        f"SOP Instance {sop_uid} of series {series_uid}")
    log.info("pushed DICOM-SEG series %s to study %s (listed by the PACS)", series_uid, study_uid)
    return series_uid


__all__ = ["push_seg"]
