"""The HTML report and PNG overlays: content, escaping, and rendering in headless Chromium."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from medseg.io.manifest import append_record, output_entry
from medseg.errors import InputError
from medseg.report.html import render_report, summarize, write_report
from medseg.plots.overlays import render_overlay, write_overlay


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def phantom():
    from medseg.data.phantom import LABELS, make_phantom

    image, labels = make_phantom((48, 48, 24), (4.0, 4.0, 6.0), seed=3, orientation="LPS")
    return image, labels, LABELS


def test_overlay_has_one_row_per_structure_and_coloured_labels(phantom) -> None:
    image, labels, names = phantom
    present = [v for v in np.unique(labels.array) if v > 0]
    png = _png(render_overlay(image, labels, label_names=names, title="case", max_structures=3))
    rgb = png.astype(int)
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    assert (saturation > 60).mean() > 0.005  # coloured label overlay drawn over the grey image
    one = _png(render_overlay(image, labels, label_names=names, max_structures=1))
    assert len(present) >= 3 and png.shape[0] > 2.5 * one.shape[0]  # rows grow with the structures shown
    empty = labels.with_array(np.zeros_like(labels.array))
    blank = _png(render_overlay(image, empty))
    assert (blank.astype(int).max(axis=2) - blank.astype(int).min(axis=2) > 60).mean() < 1e-4


def test_overlay_rejects_mismatched_grids(phantom) -> None:
    image, labels, _ = phantom
    with pytest.raises(InputError, match="same grid"):
        render_overlay(image, _shifted(labels))


def _shifted(labels):
    from medseg import Volume

    affine = labels.affine.copy()
    affine[:3, 3] += 10.0
    return Volume(labels.array, affine, is_label=True)


def _fake_run(root: Path, phantom) -> Path:
    """A batch output folder with two ok studies (overlays, metrics) and one failed study."""
    image, labels, names = phantom
    for n, sid in enumerate(["case_a", "case_b"]):
        overlay = write_overlay(image, labels, root / "studies" / sid / "overlay.png", label_names=names, title=sid)
        append_record(root / "manifest.jsonl", {
            "study_id": sid, "input": f"/data/{sid}", "kind": "dicom", "series_uid": f"1.2.3.{n}", "status": "ok",
            "error": None, "image": {"shape": [48, 48, 24]},
            "timings_s": {"load": 0.1, "predict": 0.5 + n, "total": 1.0 + n},
            "outputs": {"overlay": output_entry(overlay, root)},
            "metrics": {"per_label": [{"label": 1, "name": "liver", "dice": 0.8 + 0.1 * n, "hd95": 3.0},
                                      {"label": 2, "name": "kidney_left", "dice": 0.6, "hd95": float("nan")}]},
        })
    append_record(root / "manifest.jsonl", {
        "study_id": "case_<bad>", "input": "/data/bad.nii.gz", "kind": "file", "status": "failed",
        "error": {"type": "InputError", "message": "/data/bad.nii.gz: not a readable NIfTI file <&>"},
        "timings_s": {"total": 0.01}, "outputs": {}, "metrics": None,
    })
    return root


def test_summary_and_html_content(tmp_path: Path, phantom) -> None:
    run = _fake_run(tmp_path, phantom)
    from medseg.io.manifest import read_manifest

    summary = summarize(read_manifest(run / "manifest.jsonl"))
    assert (summary["ok"], summary["failed"], summary["lost"]) == (2, 1, 0)
    assert summary["metrics_per_label"]["liver"]["dice"] == pytest.approx(0.85)
    assert summary["mean_dice"] == pytest.approx((0.85 + 0.6) / 2)
    assert summary["mean_timings_s"]["predict"] == pytest.approx(1.0)
    text = render_report(run)
    assert text.count('src="data:image/png;base64,') == 2
    assert "not a readable NIfTI file &lt;&amp;&gt;" in text and "case_&lt;bad&gt;" in text
    assert "<script" not in text and "http://" not in text and "https://" not in text  # self-contained
    with pytest.raises(InputError, match="manifest"):
        render_report(tmp_path / "nothing_here")


@pytest.mark.apt
@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path: Path, phantom) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (make apt-deps)")
    run = _fake_run(tmp_path / "run", phantom)
    page = write_report(run)
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(base + ["--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    imgs = re.findall(r'<img[^>]*src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', dom.stdout)
    assert len(imgs) == 2
    shot = tmp_path / "shot.png"
    out = subprocess.run(base + [f"--screenshot={shot}", "--window-size=1200,2000", "--hide-scrollbars",
                                 page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    pixels = _png(shot.read_bytes()).astype(int)
    non_white = (pixels.min(axis=2) < 200).mean()
    coloured = ((pixels.max(axis=2) - pixels.min(axis=2)) > 60).mean()
    grey_dark = ((pixels.max(axis=2) < 90) & (pixels.max(axis=2) - pixels.min(axis=2) < 20)).mean()
    assert non_white > 0.05  # not a blank page
    assert grey_dark > 0.01  # the CT slices (dark grey/black pixels) were decoded and drawn
    assert coloured > 0.002  # the label colours too
