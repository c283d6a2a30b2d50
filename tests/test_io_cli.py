"""``medseg info`` and ``medseg convert`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli.main import app
from medseg.data.dicom_writer import write_dicom_series
from medseg.data.phantom import make_phantom
from medseg.errors import InputError
from medseg.io import load


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("study")
    image = make_phantom((20, 18, 6), (1.5, 1.5, 2.5), seed=1)[0]
    write_dicom_series(image, folder / "ct", seed=1, series_number=3, series_description="abdomen")
    return folder, image.array


def test_info_lists_series_as_json(study: tuple[Path, np.ndarray]) -> None:
    folder, _ = study
    result = CliRunner().invoke(app, ["info", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 1
    assert rows[0]["modality"] == "CT" and rows[0]["images"] == 6 and rows[0]["size"] == [20, 18]
    assert rows[0]["description"] == "abdomen" and rows[0]["geometry"] == "ok"


def test_info_table_and_volume_summary(study: tuple[Path, np.ndarray]) -> None:
    folder, array = study
    table = CliRunner().invoke(app, ["info", str(folder)])
    assert table.exit_code == 0 and "abdomen" in table.output and "1 image series" in table.output
    uid = load(folder).meta["series_uid"]
    result = CliRunner().invoke(app, ["info", str(folder), "--series", uid, "--json"])
    summary = json.loads(result.output)
    assert summary["shape"] == [20, 18, 6] and summary["spacing_mm"] == [1.5, 1.5, 2.5]
    assert summary["orientation"] == "LPS" and summary["min"] == float(array.min())
    assert summary["warnings"] == [] and summary["resampled"] is False


def test_convert_then_info(study: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    folder, array = study
    out = tmp_path / "ct.nii.gz"
    result = CliRunner().invoke(app, ["convert", str(folder), str(out)])
    assert result.exit_code == 0, result.output
    assert np.array_equal(load(out).array, array)
    result = CliRunner().invoke(app, ["info", str(out)])
    assert result.exit_code == 0 and "shape" in result.output and "[20, 18, 6]" in result.output


def test_convert_resample_flag(tmp_path: Path) -> None:
    image = make_phantom((20, 18, 6), (1.5, 1.5, 2.5), seed=1)[0]
    write_dicom_series(image, tmp_path / "tilt", seed=2, gantry_tilt_deg=10)
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "tilt"), str(tmp_path / "a.nii.gz")])
    assert isinstance(result.exception, InputError) and "gantry tilt" in str(result.exception)
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "tilt"), str(tmp_path / "a.nii.gz"), "--resample"])
    assert result.exit_code == 0, result.output
    assert "resampled: gantry tilt" in result.output
    assert load(tmp_path / "a.nii.gz").spatial_shape[2] == 6


def test_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "medseg", "convert", str(empty), str(tmp_path / "x.nii.gz")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and "folder is empty" in proc.stderr
    assert "Traceback" not in proc.stderr
