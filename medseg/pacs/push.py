"""STOW-RS of a DICOM-SEG to its study, then a QIDO check that the PACS lists it.

A SEG written once per result keeps its UIDs, so pushing the same file again is idempotent
(Orthanc answers a duplicate STOW with success and keeps one series).
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

from medseg.pacs.client import PacsClient, check_uid
from medseg.pacs.errors import PacsError

log = logging.getLogger(__name__)

_FAILED_SOP_SEQUENCE = "00081198"


def _header(path: Path) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is refused the same way
        raise PacsError(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None


def push_seg(client: PacsClient, seg_path: str | os.PathLike[str], study_uid: str) -> str:
    """STOW-RS ``seg_path`` to ``/studies/{study_uid}`` and check QIDO lists it; returns the SEG's
    SeriesInstanceUID.

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
    boundary = f"medseg-{uuid.uuid4().hex}"
    body = b"".join([f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), path.read_bytes(),
                     f"\r\n--{boundary}--\r\n".encode()])
    url = client.url("studies", study_uid)
    response = client.request(
        "POST", url, data=body, ok=(200, 202),
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                 "Accept": "application/dicom+json"})
    try:
        answer = response.json() if response.content.strip() else {}
    except ValueError:
        answer = {}
    failed = answer.get(_FAILED_SOP_SEQUENCE, {}).get("Value") if isinstance(answer, dict) else None
    if failed:
        reason = failed[0].get("00081197", {}).get("Value", ["?"])[0] if isinstance(failed[0], dict) else "?"
        raise PacsError(f"STOW of {path.name} to study {study_uid}: the PACS refused the instance "
                        f"(FailureReason {reason})")
    listed = client.get_json("studies", study_uid, "series", series_uid, "instances",
                             params={"SOPInstanceUID": sop_uid})
    if not listed:
        raise PacsError(f"STOW of {path.name} to study {study_uid} answered HTTP {response.status_code}, "
                        f"but QIDO does not list SOP Instance {sop_uid} of series {series_uid}")
    log.info("pushed DICOM-SEG series %s to study %s (listed by QIDO)", series_uid, study_uid)
    return series_uid


__all__ = ["push_seg"]
