"""DICOM-SEG: written with highdicom from phantom DICOM series (axial, reversed, oblique),
validated by ``dciodvfy`` and read back onto the same voxels in world space."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from medseg.data.dicom_writer import write_dicom_series
from medseg.data.phantom import LABELS, make_phantom
from medseg.errors import InputError
from medseg.io import load
from medseg.io.dicom.seg import read_dicom_seg, write_dicom_seg
from medseg.volume import Volume


def _series(tmp: Path, *, oblique: float = 0.0, orientation: str = "LPS", seed: int = 3, **kw) -> tuple[Volume, Volume]:
    image, labels = make_phantom((48, 40, 12), (4.0, 4.5, 6.0), seed=seed, orientation=orientation, oblique_deg=oblique)
    write_dicom_series(image, tmp / "ct", seed=seed, **kw)
    loaded = load(tmp / "ct")
    assert loaded.same_grid(image)
    return loaded, labels


def dciodvfy_errors(path: Path) -> list[str]:
    """Lines of ``dciodvfy`` output that report an error."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian dicom3tools) is not installed")
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [line for line in lines if line.lstrip().startswith("Error")]


def _world_equal(a: Volume, b: Volume) -> None:
    """Every labelled voxel of ``a`` lies on a voxel of ``b`` with the same label, and the counts agree."""
    idx = np.argwhere(a.array > 0)
    world = a.world_coordinates(idx)
    inv = np.linalg.inv(b.affine)
    bidx = world @ inv[:3, :3].T + inv[:3, 3]
    assert np.abs(bidx - np.rint(bidx)).max() < 1e-3
    bidx = np.rint(bidx).astype(int)
    assert np.all(bidx >= 0) and np.all(bidx < np.array(b.spatial_shape))
    np.testing.assert_array_equal(b.array[tuple(bidx.T)], a.array[tuple(idx.T)])
    assert (a.array > 0).sum() == (b.array > 0).sum()


@pytest.mark.apt
@pytest.mark.parametrize(
    "kw",
    [{}, {"reverse_order": True, "instance_number_shuffle": True}, {"oblique": 20.0}, {"orientation": "RAS"}],
    ids=["axial", "reversed-shuffled", "oblique", "RAS-stack"],
)
def test_dicom_seg_valid_and_reads_back(tmp_path: Path, kw: dict) -> None:
    oblique = kw.pop("oblique", 0.0)
    orientation = kw.pop("orientation", "LPS")
    image, truth = _series(tmp_path, oblique=oblique, orientation=orientation, **kw)
    labels = Volume(truth.array, image.affine, is_label=True)
    out = write_dicom_seg(labels, image.meta["source_files"], tmp_path / "seg.dcm", label_names=LABELS)
    assert dciodvfy_errors(out) == []
    back = read_dicom_seg(out, source_files=image.meta["source_files"])
    assert back.same_grid(image)
    np.testing.assert_array_equal(back.array, truth.array)
    assert back.meta["label_names"]["1"] == "liver"
    own = read_dicom_seg(out)  # the grid highdicom builds from the SEG frames alone
    _world_equal(labels, own)


@pytest.mark.apt
def test_dicom_seg_content(tmp_path: Path) -> None:
    import pydicom

    image, truth = _series(tmp_path)
    arr = truth.array.copy()
    arr[arr > 2] = 0  # only liver (1) and kidney_left (2) present
    arr[arr == 2] = 7
    out = write_dicom_seg(Volume(arr, image.affine, is_label=True), image.meta["source_files"], tmp_path / "s.dcm",
                          label_names={1: "liver", 7: "kidney_left"}, series_description="test seg")
    ds = pydicom.dcmread(out)
    src = pydicom.dcmread(image.meta["source_files"][0], stop_before_pixels=True)
    assert ds.SegmentationType == "BINARY" and ds.SeriesDescription == "test seg"
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["liver", "kidney_left"]
    assert ds.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SNOMED liver
    assert ds.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "64033007"  # SNOMED kidney
    assert ds.FrameOfReferenceUID == src.FrameOfReferenceUID and ds.StudyInstanceUID == src.StudyInstanceUID
    refs = {r.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert len(refs) == image.spatial_shape[2]
    back = read_dicom_seg(out, source_files=image.meta["source_files"])
    np.testing.assert_array_equal(back.array, arr)  # original label values, not segment numbers


@pytest.mark.apt
def test_empty_prediction_still_writes_a_valid_seg(tmp_path: Path) -> None:
    image, _ = _series(tmp_path)
    empty = Volume(np.zeros(image.spatial_shape, np.uint8), image.affine, is_label=True)
    out = write_dicom_seg(empty, image.meta["source_files"], tmp_path / "empty.dcm", label_names={0: "bg", 1: "liver"})
    assert dciodvfy_errors(out) == []
    back = read_dicom_seg(out, source_files=image.meta["source_files"])
    assert back.array.max() == 0 and back.same_grid(image)


def test_dicom_seg_input_errors(tmp_path: Path) -> None:
    image, truth = _series(tmp_path)
    other, _ = make_phantom((16, 16, 4), (4.0, 4.0, 6.0), seed=9)
    other_files = write_dicom_series(other, tmp_path / "other", seed=9)
    labels = Volume(truth.array, image.affine, is_label=True)
    with pytest.raises(InputError, match="2 series"):
        write_dicom_seg(labels, [*image.meta["source_files"], *other_files], tmp_path / "x.dcm", label_names=LABELS)
    with pytest.raises(InputError, match="integer label map"):
        write_dicom_seg(Volume(truth.array.astype(np.float32), image.affine), image.meta["source_files"],
                        tmp_path / "x.dcm", label_names=LABELS)
    with pytest.raises(InputError, match="not a DICOM Segmentation"):
        read_dicom_seg(image.meta["source_files"][0])
    assert not (tmp_path / "x.dcm").exists()


@pytest.mark.apt
def test_cli_predict_dicom_folder_writes_nifti_and_seg(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medseg.cli.main import app
    from medseg.models.export import save_export
    from tests.test_inference import _build_threshold3d

    image, truth = _series(tmp_path, oblique=15.0)
    model = _build_threshold3d()
    import torch

    with torch.no_grad():  # label 1 where HU > 0: soft tissue/organs/bone
        model.conv.weight.zero_()
        model.conv.bias.zero_()
        model.conv.weight[1] = 10.0
    info = {
        "model": {"name": "test_threshold3d", "config": {"in_channels": 1, "out_channels": 2}},
        "spatial_dims": 3,
        "labels": {"0": "background", "1": "liver"},
        "preprocessing": {"orientation": "RAS", "target_spacing_mm": None,
                          "normalization": {"kind": "ct", "clip": [-1000, 1000], "mean": 0.0, "std": 100.0}},
        "inference": {"patch_size": [32, 32, 8], "overlap": 0.25, "batch_size": 2},
    }
    run = save_export(tmp_path / "run", model, info)
    result = CliRunner().invoke(app, ["predict", "--model", str(run), str(tmp_path / "ct"), str(tmp_path / "out"),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    nifti = load(tmp_path / "out" / "ct_seg.nii.gz")
    assert nifti.spatial_shape == image.spatial_shape
    np.testing.assert_allclose(nifti.affine, image.affine, atol=1e-4)
    np.testing.assert_array_equal(nifti.array, (image.array > 0).astype(np.uint8))
    seg = tmp_path / "out" / "ct_seg.dcm"
    assert dciodvfy_errors(seg) == []
    back = read_dicom_seg(seg, source_files=image.meta["source_files"])
    np.testing.assert_array_equal(back.array, nifti.array)


def test_evaluate_scores_a_dicom_seg_prediction_against_a_nifti_reference(tmp_path: Path) -> None:
    """`medseg evaluate` reads a DICOM-SEG prediction and places it exactly on the reference grid."""
    from medseg.evaluation.volumes import evaluate_folder
    from medseg.io import save

    image, labels = _series(tmp_path, orientation="LPS")
    truth = Volume(labels.array, image.affine, is_label=True)
    save(truth, tmp_path / "refs" / "case.nii.gz")
    pred = truth.array.copy()
    pred[pred == 2] = 0  # one structure missed: Dice 0 there, 1 elsewhere
    write_dicom_seg(Volume(pred, image.affine, is_label=True), image.meta["source_files"],
                    tmp_path / "preds" / "case.dcm", label_names=LABELS)
    result = evaluate_folder(tmp_path / "preds", tmp_path / "refs", tmp_path / "eval", metrics=["dice"], plots=False)
    dice = {row["label"]: row["dice"] for row in result.rows}
    present = {int(v) for v in np.unique(truth.array) if v}
    assert set(dice) == present and 2 in present
    assert dice[2] == 0.0 and all(dice[v] == 1.0 for v in present - {2})
