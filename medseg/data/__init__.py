"""Datasets and synthetic data: the CT phantom, its DICOM writer and cohort folders.

Import the submodules directly (``medseg.data.phantom``, ``medseg.data.dicom_writer``,
``medseg.data.cohort``); this package imports nothing heavy.
"""

from __future__ import annotations

__all__: list[str] = []
