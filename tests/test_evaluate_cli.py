"""``medseg evaluate`` on folders of NIfTI predictions and references."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg import Volume
from medseg.errors import InputError
from medseg.evaluation.volumes import evaluate_folder
from medseg.io import load, save
from medseg.metrics import dice, surface_metrics

AFFINE = np.diag([0.8, 0.75, 2.5, 1.0])


def _ref() -> np.ndarray:
    ref = np.zeros((24, 24, 10), np.uint8)
    ref[3:15, 3:15, 2:7] = 1
    ref[17:21, 17:21, 3:6] = 2
    return ref


def _write_cases(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    cases = {}
    for n in range(3):
        ref = _ref()
        pred = np.roll(ref, n, axis=0)
        if n == 2:
            pred[pred == 2] = 0  # the small structure is missed
        cases[f"case{n}"] = (pred, ref)
        save(Volume(ref, AFFINE, is_label=True), root / "ref" / f"case{n}.nii.gz")
        save(Volume(pred, AFFINE, is_label=True), root / "pred" / f"case{n}.nii.gz")
    save(Volume(_ref(), AFFINE, is_label=True), root / "ref" / "lonely.nii.gz")  # no prediction
    return cases


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_evaluate_command_writes_csv_json_png(tmp_path):
    from medseg.cli.main import app

    cases = _write_cases(tmp_path)
    (tmp_path / "names.json").write_text(json.dumps({"1": "liver", "2": "tumour"}))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
        "--label-names", str(tmp_path / "names.json"), "--metrics", "dice,hd95,assd,nsd",
        "--tolerance-mm", "1.0", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    assert "lonely" in result.output  # the unmatched reference is reported
    rows = _read_csv(out / "metrics.csv")
    assert len(rows) == 6 and rows[0].keys() >= {"case", "label", "name", "status", "dice", "hd95", "assd", "nsd"}
    spacing = load(tmp_path / "ref" / "case0.nii.gz").spacing  # float32 in the file: 0.800000011920929
    assert spacing == pytest.approx((0.8, 0.75, 2.5))
    for row in rows:
        pred, ref = cases[row["case"]]
        lab = int(row["label"])
        assert row["name"] == {1: "liver", 2: "tumour"}[lab]
        assert float(row["dice"]) == pytest.approx(dice(pred == lab, ref == lab), rel=1e-12)
        expected = surface_metrics(pred == lab, ref == lab, spacing=spacing, tolerance_mm=1.0)
        for key in ("hd95", "assd", "nsd"):
            assert float(row[key]) == pytest.approx(expected[key], rel=1e-9), (row["case"], lab, key)
    missed = [r for r in rows if r["status"] == "missed"]
    assert [(r["case"], r["label"], r["hd95"], r["nsd"]) for r in missed] == [("case2", "2", "inf", "0.0")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == 3 and summary["unmatched_references"] == ["lonely"]
    tumour = summary["labels"]["2"]
    assert tumour["name"] == "tumour" and tumour["missed"] == 1
    assert tumour["metrics"]["hd95"]["n_inf"] == 1 and tumour["metrics"]["hd95"]["n_finite"] == 2
    dices = [float(r["dice"]) for r in rows if r["label"] == "1"]
    assert summary["labels"]["1"]["metrics"]["dice"]["mean"] == pytest.approx(np.mean(dices))
    assert summary["labels"]["1"]["metrics"]["dice"]["median"] == pytest.approx(np.median(dices))
    for metric in ("dice", "hd95", "assd", "nsd"):
        png = out / f"boxplot_{metric}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000


def test_grid_mismatch_and_resampling(tmp_path):
    ref = _ref()
    save(Volume(ref, AFFINE, is_label=True), tmp_path / "ref.nii.gz")
    # the same structures on a grid twice as fine along i (nearest-neighbour upsampled)
    fine = np.repeat(ref, 2, axis=0)
    fine_affine = AFFINE.copy()
    fine_affine[0, 0] = 0.4
    fine_affine[0, 3] = -0.2  # voxel centres of the fine grid straddle the coarse ones
    save(Volume(fine, fine_affine, is_label=True), tmp_path / "pred.nii.gz")
    with pytest.raises(InputError, match="--resample"):
        evaluate_folder(tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", tmp_path / "out", plots=False)
    result = evaluate_folder(tmp_path / "pred.nii.gz", tmp_path / "ref.nii.gz", tmp_path / "out",
                             resample=True, plots=False, metrics=["dice", "hd"])
    assert [r["dice"] for r in result.rows] == [1.0, 1.0] and [r["hd"] for r in result.rows] == [0.0, 0.0]


def test_default_labels_workers_and_errors(tmp_path):
    _write_cases(tmp_path)
    result = evaluate_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "out", metrics=["dice", "masd"],
                             workers=2, plots=False, surface="surfel")
    assert sorted({r["label"] for r in result.rows}) == [1, 2] and len(result.rows) == 6
    assert result.unmatched_references == ["lonely"]
    assert all(math.isinf(r["masd"]) for r in result.rows if r["status"] == "missed")
    with pytest.raises(InputError, match="unknown metric"):
        evaluate_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "o", metrics=["dice", "hd99"])
    with pytest.raises(InputError, match="no such file"):
        evaluate_folder(tmp_path / "nope", tmp_path / "ref", tmp_path / "o")
    with pytest.raises(InputError, match="both be files or both be folders"):
        evaluate_folder(tmp_path / "pred" / "case0.nii.gz", tmp_path / "ref", tmp_path / "o")


def test_command_line_errors(tmp_path):
    from medseg.cli.main import app

    _write_cases(tmp_path)
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(tmp_path / "o")]
    bad = CliRunner().invoke(app, [*args, "--labels", "1,x"])
    assert bad.exit_code == 2 and "--labels" in bad.output
    bad = CliRunner().invoke(app, [*args, "--missing-distance", "far"])
    assert bad.exit_code == 2 and "--missing-distance" in bad.output
    unknown = CliRunner().invoke(app, [*args, "--surface", "mesh"])
    assert isinstance(unknown.exception, InputError) and "mesh" in str(unknown.exception)
    only_two = CliRunner().invoke(app, [*args, "--labels", "2", "--metrics", "dice", "--no-plots"])
    assert only_two.exit_code == 0, only_two.output
    rows = _read_csv(tmp_path / "o" / "metrics.csv")
    assert {r["label"] for r in rows} == {"2"} and not list((tmp_path / "o").glob("*.png"))
