"""DICOM UID checks shared by every PACS transport (file names are made from UIDs only)."""

from __future__ import annotations

import re

from medseg.pacs.errors import PacsError

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def check_uid(uid: str, what: str = "UID") -> str:
    """``uid`` if it is a valid DICOM UID (digits and dots, at most 64 characters), else raise.

    >>> check_uid("1.2.840.10008.1.2")
    '1.2.840.10008.1.2'
    """
    if not isinstance(uid, str) or len(uid) > 64 or not _UID.match(uid):
        raise PacsError(f"not a valid DICOM {what}: {str(uid)[:70]!r} (digits and dots, at most 64 characters)")
    return uid


__all__ = ["check_uid"]
