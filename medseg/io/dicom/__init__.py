"""DICOM in medseg: reading image series into a :class:`~medseg.Volume` and writing DICOM-SEG.

Modules, lowest first: :mod:`.frames` (the per-frame header record), :mod:`.fasthdr`
(fast header reader), :mod:`.mosaic` (Siemens MOSAIC), :mod:`.geometry` (slice sorting
and grid checks), :mod:`.series` (header scan, non-image classes, grouping),
:mod:`.decode` (pixel decoding), :mod:`.reader` (``load_dicom``, ``list_series``) and
:mod:`.seg` (DICOM-SEG writer/reader, imported on demand: it needs highdicom).
"""

from __future__ import annotations

from medseg.io.dicom.reader import list_series, load_dicom
from medseg.io.dicom.series import SeriesInfo, is_dicom_file

__all__ = ["load_dicom", "list_series", "is_dicom_file", "SeriesInfo"]
