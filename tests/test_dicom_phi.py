"""No patient name reaches logs or warnings when a DICOM-SEG is written (issue 10 item 11, issue 12 item 4)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

DECUBITUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "dcm_qa_decubitus" / "In"


def test_seg_writer_emits_no_warning_or_log_with_the_patient_name(tmp_path, caplog):
    from medseg.io import load
    from medseg.io.dicom.seg import write_dicom_seg

    series = next((p for p in sorted(DECUBITUS.rglob("*")) if p.is_dir() and any(p.glob("*.dcm"))), None)
    if series is None:
        pytest.skip(f"no DICOM series under {DECUBITUS}")
    volume = load(series)
    name = str(pydicom.dcmread(volume.meta["source_files"][0], stop_before_pixels=True).PatientName)
    assert name, "the test needs a source with a patient name"
    labels = volume.with_array((volume.array > np.percentile(volume.array, 90)).astype(np.uint8), is_label=True)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        write_dicom_seg(labels, volume.meta["source_files"], tmp_path / "seg.dcm", label_names={1: "bright"})
    assert (tmp_path / "seg.dcm").is_file()
    texts = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [t for t in texts if name in t], texts
