"""``medseg demo --fast``: cohort -> train -> batch (NIfTI + DICOM-SEG) -> evaluate -> report, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.mark.slow
def test_fast_demo_end_to_end(tmp_path: Path) -> None:
    import pydicom

    from medseg.io.manifest import is_complete, read_manifest
    from medseg.demo import _cached_model
    from medseg.io import load

    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "medseg", "demo", "--out", str(out), "--fast", "--workers", "1"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mean Dice:" in proc.stdout and "report:" in proc.stdout

    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["ok"] == 2 and summary["failed"] == 0 and summary["trained"] is True
    assert summary["mean_dice"] is not None and 0.0 <= summary["mean_dice"] <= 1.0
    assert _cached_model(out / "model_fast")  # a second run reuses it instead of training

    records = read_manifest(out / "batch" / "manifest.jsonl")
    assert sorted(r["study_id"] for r in records) == ["case_000", "case_001"]
    for r in records:
        assert r["status"] == "ok" and is_complete(r, out / "batch")
        assert set(r["outputs"]) == {"nifti", "dicomseg", "overlay"}
        assert r["metrics"]["per_label"], r["metrics"]
        seg = load(out / "batch" / r["outputs"]["nifti"]["path"])
        ct = load(out / "cohort" / r["study_id"])
        assert seg.spatial_shape == ct.spatial_shape
        np.testing.assert_allclose(seg.affine, ct.affine, atol=1e-4)
        ds = pydicom.dcmread(out / "batch" / r["outputs"]["dicomseg"]["path"], stop_before_pixels=True)
        assert ds.Modality == "SEG" and ds.ReferencedSeriesSequence[0].SeriesInstanceUID == r["series_uid"]
    html = (out / "batch" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2
