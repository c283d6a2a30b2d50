"""PACS in medseg (DICOMweb, or DIMSE): query for series, fetch them complete, push DICOM-SEG back.

The API that ``medseg batch --pacs`` builds on (all names import lazily; ``requests`` and
``pydicom`` are imported only inside the functions that use them)::

    from medseg.pacs import PacsClient, query_series, fetch_series, push_seg

    client = PacsClient("https://pacs.example.org/dicom-web", auth="basic")  # MEDSEG_PACS_USER/PASSWORD
    # or DIMSE (C-ECHO, C-FIND, C-GET, C-STORE): DimseClient("dicom://PACS_AE@host:104", calling_ae="MEDSEG");
    # open_client(url, ...) picks one by the URL scheme
    refs = query_series(client, where=["Modality=CT", "StudyDate=20250101-20250131"], max_series=200)
    # or: query_series(client, series=["1.2.3...", ...])
    for ref in refs:                                  # SeriesRef: study_uid, series_uid, modality, ...
        folder = fetch_series(client, ref, cache_dir)  # cache_dir/{SeriesInstanceUID}/{SOPInstanceUID}.dcm
        ...                                            # segment folder, write OUT/.../seg.dcm
        seg_series_uid = push_seg(client, seg_path, ref.study_uid)

- ``query_series(client, *, where=..., series=[...], max_series=None) -> list[SeriesRef]``: a
  closed StudyDate range is queried per day, every query paged until an empty page, answers
  filtered again client-side; more than ``max_series`` matches raises :class:`PacsError`.
- ``fetch_series(client, ref, cache_dir) -> Path``: the series folder, whose files are exactly
  the QIDO instance list (a complete folder is reused, partial files swept, missing
  instances refetched); else :class:`IncompleteSeriesError` ("server returned 8/9 instances").
  Keep ``cache_dir`` inside the run's output folder.
- ``push_seg(client, seg_path, study_uid) -> str``: STOW-RS, then QIDO must list the SEG;
  returns its SeriesInstanceUID. Re-pushing the same file is idempotent.

Every error is a :class:`PacsError` (a :class:`medseg.errors.MedsegError`) whose message holds
no query string, patient value or credential; credentials come only from environment
variables or a 0600 file (:mod:`medseg.pacs.auth`).
"""

from __future__ import annotations

from medseg.lazy import lazy_exports
from medseg.pacs.errors import IncompleteSeriesError, PacsAuthError, PacsError, PacsHTTPError, PacsTimeoutError

_LAZY = {
    "PacsClient": "medseg.pacs.client", "ClientConfig": "medseg.pacs.client",
    "DimseClient": "medseg.pacs.dimse", "DimseConfig": "medseg.pacs.dimse", "open_client": "medseg.pacs.connect",
    "SeriesRef": "medseg.pacs.query", "query_series": "medseg.pacs.query", "list_instances": "medseg.pacs.query",
    "parse_where": "medseg.pacs.query",
    "fetch_series": "medseg.pacs.retrieve", "push_seg": "medseg.pacs.push",
    "load_credentials": "medseg.pacs.auth", "AuthKind": "medseg.pacs.auth",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [*_LAZY, "PacsError", "PacsAuthError", "PacsHTTPError", "PacsTimeoutError", "IncompleteSeriesError"]
