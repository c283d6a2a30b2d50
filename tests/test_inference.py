"""Inference: sliding window vs MONAI, Predictor geometry (RAS, LAS, oblique), 2D models,
TTA/ensemble, probabilities, post-processing, back-to-grid mapping and ``medseg predict``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.errors import ConfigError, InputError, ModelError
from medseg.inference import Predictor
from medseg.inference.grid import labels_to_grid
from medseg.inference.postprocess import parse_rules, postprocess_labels
from medseg.inference.sliding_window import (
    argmax_channels,
    as_window_fn,
    gaussian_importance_map,
    iter_slabs,
    scan_starts,
    sliding_window_argmax,
    sliding_window_average,
)
from medseg.models import register_model
from medseg.models.export import save_export
from medseg.volume import Volume

THRESHOLD = 0.25  # normalised intensity above which the threshold network says "1"


# ----------------------------------------------------------------------------- test models
class _Threshold(torch.nn.Module):
    """Logits [0, k * (x - t)] per voxel: label 1 exactly where x > t (a known answer)."""

    def __init__(self, conv: torch.nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@register_model("test_threshold3d", spatial_dims=3, tiny_config={})
def _build_threshold3d(*, in_channels: int = 1, out_channels: int = 2) -> torch.nn.Module:
    return _Threshold(torch.nn.Conv3d(in_channels, out_channels, 1))


@register_model("test_threshold2d", spatial_dims=2, tiny_config={})
def _build_threshold2d(*, in_channels: int = 1, out_channels: int = 2) -> torch.nn.Module:
    return _Threshold(torch.nn.Conv2d(in_channels, out_channels, 1))


def _export(tmp: Path, *, dims: int = 3, spacing=None, patch=(16, 16, 8), post=None, name="m") -> Path:
    model = (_build_threshold3d if dims == 3 else _build_threshold2d)()
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.bias.zero_()
        model.conv.weight[1] = 40.0
        model.conv.bias[1] = -40.0 * THRESHOLD
    info = {
        "model": {"name": f"test_threshold{dims}d", "config": {"in_channels": 1, "out_channels": 2}},
        "spatial_dims": dims,
        "labels": {"0": "background", "1": "liver"},
        "preprocessing": {
            "orientation": "RAS",
            "target_spacing_mm": spacing,
            "normalization": {"kind": "ct", "clip": [-1000.0, 1000.0], "mean": 0.0, "std": 100.0},
        },
        "inference": {"patch_size": list(patch if dims == 3 else patch[:2]), "overlap": 0.5, "batch_size": 2},
        "postprocessing": post or {},
    }
    return save_export(tmp / name, model, info)


def _image(affine: np.ndarray, shape=(30, 26, 14), seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    arr = rng.normal(0, 60, size=shape).astype(np.float32)
    arr[8:20, 6:18, 3:10] += 120.0  # a blob well above the threshold (25 HU after /100 -> 0.25)
    return Volume(arr, affine, {"source": "synthetic"})


def _affine(code: str, spacing=(1.5, 2.0, 3.0), oblique_deg: float = 0.0) -> np.ndarray:
    signs = {"RAS": (1, 1, 1), "LAS": (-1, 1, 1), "LPS": (-1, -1, 1)}[code]
    a = np.diag([signs[0] * spacing[0], signs[1] * spacing[1], signs[2] * spacing[2], 1.0])
    if oblique_deg:
        t = math.radians(oblique_deg)
        rot = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
        rot = rot @ np.array([[1, 0, 0], [0, math.cos(t / 2), -math.sin(t / 2)], [0, math.sin(t / 2), math.cos(t / 2)]])
        a[:3, :3] = rot @ a[:3, :3]
    a[:3, 3] = (-20.0, 12.5, -80.0)
    return a


# ----------------------------------------------------------------------------- sliding window
def test_scan_starts_match_monai_placement() -> None:
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    for size, patch, overlap in [(10, 4, 0.5), (11, 4, 0.5), (96, 32, 0.25), (7, 7, 0.5), (50, 16, 0.8)]:
        interval = _get_scan_interval((size,), (patch,), 1, (overlap,))
        monai_starts = sorted({s[0].start for s in dense_patch_slices((size,), (patch,), interval)})
        assert scan_starts(size, patch, overlap) == monai_starts


def test_gaussian_importance_map_matches_monai() -> None:
    from monai.data.utils import compute_importance_map

    ours = gaussian_importance_map((16, 12, 5))
    ref = compute_importance_map((16, 12, 5), mode="gaussian", sigma_scale=0.125)
    assert torch.allclose(ours, ref, atol=1e-7)


@pytest.mark.parametrize(
    "shape,patch,overlap,batch",
    [((37, 50, 29), (16, 16, 8), 0.5, 3), ((10, 50, 29), (16, 16, 8), 0.5, 4), ((33, 31, 40), (16, 12, 10), 0.25, 1),
     ((24, 24, 24), (24, 24, 24), 0.5, 2)],
)
def test_sliding_window_matches_monai(shape, patch, overlap, batch) -> None:
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 3, padding=1)).eval()
    image = torch.randn(2, *shape)
    window_fn = as_window_fn(net, softmax=True)
    with torch.inference_mode():
        ref = sliding_window_inference(
            image[None], patch, batch, lambda x: torch.softmax(net(x), 1), overlap=overlap, mode="gaussian"
        )[0]
    ours = sliding_window_average(image, window_fn, patch, overlap=overlap, batch_size=batch)
    assert ours.shape == ref.shape
    assert float((ours - ref).abs().max()) < 1e-4
    labels = sliding_window_argmax(image, window_fn, patch, overlap=overlap, batch_size=batch)
    assert labels.dtype == np.uint8 and labels.shape == shape
    np.testing.assert_array_equal(labels, ref.argmax(0).numpy())


@pytest.mark.parametrize("channels", [2, 5, 40, 300])
def test_argmax_channels_matches_torch_including_ties(channels: int) -> None:
    scores = torch.randint(0, 4, (channels, 6, 7, 5)).float()  # many ties: the first maximum wins
    strided = torch.zeros(channels, 6, 7, 9)[..., 2:7]
    strided.copy_(scores)
    out = argmax_channels(strided)
    assert out.dtype == (torch.uint8 if channels <= 256 else torch.int32)
    assert torch.equal(out.long(), scores.argmax(0))


def test_slabs_are_streamed_and_cover_each_slice_once() -> None:
    net = torch.nn.Conv3d(1, 5, 1).eval()
    image = torch.randn(1, 20, 20, 61)
    slabs = list(iter_slabs(image, as_window_fn(net), (8, 8, 8), overlap=0.5, batch_size=4))
    assert slabs[0][0] == 0 and slabs[-1][1] == 61
    assert all(a[1] == b[0] for a, b in zip(slabs, slabs[1:]))
    assert max(z1 - z0 for z0, z1, _ in slabs) <= 8  # never more than one window deep
    assert all(seg.shape == (5, 20, 20, z1 - z0) for z0, z1, seg in slabs)


def test_sliding_window_rejects_bad_settings() -> None:
    net = torch.nn.Conv3d(1, 2, 1)
    with pytest.raises(ConfigError, match="overlap"):
        sliding_window_average(torch.zeros(1, 8, 8, 8), as_window_fn(net), (4, 4, 4), overlap=1.0)
    with pytest.raises(ConfigError, match="patch_size"):
        sliding_window_average(torch.zeros(1, 8, 8, 8), as_window_fn(net), (4, 4))
    with pytest.raises(InputError, match=r"\[C, X, Y, Z\]"):
        sliding_window_average(torch.zeros(8, 8, 8), as_window_fn(net), (4, 4, 4))


# ----------------------------------------------------------------------------- back to the grid
@pytest.mark.parametrize("code,oblique", [("RAS", 0.0), ("LAS", 0.0), ("LPS", 0.0), ("LPS", 20.0)])
def test_labels_to_grid_inverts_canonical_exactly(code: str, oblique: float) -> None:
    from medseg.transforms.preprocess import to_canonical

    rng = np.random.default_rng(1)
    vol = Volume(rng.integers(0, 9, size=(7, 9, 5)).astype(np.uint8), _affine(code, oblique_deg=oblique), is_label=True)
    canon = to_canonical(vol, "RAS")
    back = labels_to_grid(canon.array, canon.affine, vol.spatial_shape, vol.affine)
    np.testing.assert_array_equal(back, vol.array)


def test_labels_to_grid_nearest_neighbour_matches_scipy() -> None:
    from medseg.transforms.preprocess import resample_to_grid, target_grid

    rng = np.random.default_rng(2)
    fine = Volume(np.zeros((40, 30, 20), np.uint8), _affine("RAS", (1.0, 1.0, 1.5)), is_label=True)
    shape, coarse_affine = target_grid(fine, (2.0, 2.5, 3.0))
    coarse = rng.integers(0, 5, size=shape).astype(np.uint8)
    ours = labels_to_grid(coarse, coarse_affine, fine.spatial_shape, fine.affine)
    ref = resample_to_grid(Volume(coarse, coarse_affine, is_label=True), fine.spatial_shape, fine.affine, order=0).array
    assert (ours == ref).mean() > 0.99  # only exact ties at voxel boundaries may round differently


def test_labels_to_grid_strided_crop_and_flip_equal_fancy_indexing() -> None:
    """Destination grids whose source indices are arithmetic progressions (every second voxel, an offset
    crop, a flip) take the slicing path; it selects what indexing by the index vectors selects."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 7, size=(21, 16, 9)).astype(np.uint8)
    src = np.diag([1.0, 1.0, 2.0, 1.0])
    dst = np.diag([2.0, -1.0, 2.0, 1.0])
    dst[:3, 3] = [3.0, 14.0, 4.0]  # i: 3, 5, ..., j: 14, 13, ..., k: 2, 3, ...
    out = labels_to_grid(labels, src, (9, 15, 7), dst)
    np.testing.assert_array_equal(out, labels[np.ix_(np.arange(3, 21, 2), np.arange(14, -1, -1), np.arange(2, 9))])


# ----------------------------------------------------------------------------- Predictor
@pytest.mark.parametrize("code,oblique", [("RAS", 0.0), ("LAS", 0.0), ("LPS", 25.0)])
def test_prediction_is_on_the_input_grid(tmp_path: Path, code: str, oblique: float) -> None:
    run = _export(tmp_path)
    predictor = Predictor.from_run(run, device="cpu")
    image = _image(_affine(code, oblique_deg=oblique))
    labels = predictor.predict(image)
    assert labels.spatial_shape == image.spatial_shape
    np.testing.assert_array_equal(labels.affine, image.affine)
    assert labels.is_label and labels.array.dtype == np.uint8
    # without resampling the threshold network gives exactly (HU / 100 > 0.25) on the input voxels
    np.testing.assert_array_equal(labels.array, (image.array / 100.0 > THRESHOLD).astype(np.uint8))
    assert labels.meta["prediction"]["model_sha256"] == predictor.model_sha256
    assert set(predictor.last_timings) >= {"preprocess_s", "network_s", "to_input_grid_s", "postprocess_s", "total_s"}


@pytest.mark.parametrize("code,oblique", [("RAS", 0.0), ("LAS", 0.0), ("LPS", 25.0)])
def test_prediction_with_resampling_returns_input_grid(tmp_path: Path, code: str, oblique: float) -> None:
    run = _export(tmp_path, spacing=[3.0, 3.0, 4.0])
    predictor = Predictor.from_run(run, device="cpu")
    image = _image(_affine(code, oblique_deg=oblique), shape=(40, 36, 18))
    image = image.with_array(np.zeros_like(image.array) - 500.0)
    image.array[10:30, 8:28, 4:14] = 400.0  # a smooth box: resampling keeps it
    labels = predictor.predict(image)
    assert labels.spatial_shape == image.spatial_shape
    np.testing.assert_array_equal(labels.affine, image.affine)
    truth = image.array > 0
    dice = 2 * np.logical_and(labels.array == 1, truth).sum() / ((labels.array == 1).sum() + truth.sum())
    assert dice > 0.9


def test_two_d_model_runs_slice_by_slice(tmp_path: Path) -> None:
    run = _export(tmp_path, dims=2, patch=(16, 16))
    predictor = Predictor.from_run(run, device="cpu")
    assert predictor.spatial_dims == 2
    image = _image(_affine("LAS"))
    labels = predictor.predict(image)
    np.testing.assert_array_equal(labels.affine, image.affine)
    np.testing.assert_array_equal(labels.array, (image.array / 100.0 > THRESHOLD).astype(np.uint8))


def test_tta_ensemble_and_probabilities(tmp_path: Path) -> None:
    a, b = _export(tmp_path, name="a"), _export(tmp_path, name="b")
    image = _image(_affine("LAS"))
    single = Predictor.from_run(a, device="cpu")
    ref = single.predict(image).array
    tta = Predictor.from_run(a, device="cpu", tta=True)
    np.testing.assert_array_equal(tta.predict(image).array, ref)  # a 1x1x1 conv is mirror-equivariant
    ensemble = Predictor.from_run([a, b], device="cpu")
    labels, probs = ensemble.predict(image, return_probabilities=True)
    np.testing.assert_array_equal(labels.array, ref)
    assert ensemble.model_sha256 != single.model_sha256 and len(ensemble.model_sha256) == 64
    assert probs.channel_first and probs.array.shape == (2, *image.spatial_shape) and probs.array.dtype == np.float32
    np.testing.assert_allclose(probs.array.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.array.argmax(0), ref)
    np.testing.assert_array_equal(probs.affine, image.affine)


def test_ensemble_members_must_agree(tmp_path: Path) -> None:
    a = _export(tmp_path, name="a")
    b = _export(tmp_path, name="b", spacing=[2.0, 2.0, 2.0])
    with pytest.raises(ModelError, match="preprocessing"):
        Predictor.from_run([a, b], device="cpu")


def test_predictor_applies_postprocessing(tmp_path: Path) -> None:
    run = _export(tmp_path, post={"1": {"largest_component": True}})
    predictor = Predictor.from_run(run, device="cpu")
    arr = np.full((30, 26, 14), -500.0, np.float32)
    arr[2:12, 2:12, 2:12] = 500.0
    arr[20:23, 20:23, 5:8] = 500.0  # a smaller second component: removed
    labels = predictor.predict(Volume(arr, _affine("RAS")))
    assert labels.array.sum() == 1000
    assert predictor.label_names == {0: "background", 1: "liver"}


def test_predictor_rejects_wrong_channel_count_and_missing_run(tmp_path: Path) -> None:
    predictor = Predictor.from_run(_export(tmp_path), device="cpu")
    two = Volume(np.zeros((2, 8, 8, 8), np.float32), np.eye(4), channel_first=True)
    with pytest.raises(InputError, match="channel"):
        predictor.predict(two)
    with pytest.raises(InputError, match="no such model folder"):
        Predictor.from_run(tmp_path / "missing")


def test_predictor_accepts_run_dir_with_export_subfolder(tmp_path: Path) -> None:
    _export(tmp_path / "run", name="export")
    predictor = Predictor.from_run(tmp_path / "run", device="cpu")
    assert predictor.num_classes == 2


# ----------------------------------------------------------------------------- post-processing
def test_postprocess_rules() -> None:
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[1:9, 1:9, 1:9] = 1  # 512 voxels
    lab[12:14, 12:14, 12:14] = 1  # 8 voxels
    lab[15:18, 1:4, 1:4] = 2  # 27 voxels
    lab[15, 10, 10] = 2  # 1 voxel
    lab[4, 4, 4] = 0  # a hole in label 1
    rules = parse_rules({"1": {"largest_component": True, "fill_holes": True}, "2": {"min_size_mm3": 10}})
    out = postprocess_labels(lab.copy(), rules, spacing_mm=(1.0, 1.0, 2.0))  # voxel = 2 mm³
    assert (out == 1).sum() == 512 and out[4, 4, 4] == 1 and out[12, 12, 12] == 0
    assert (out == 2).sum() == 27 and out[15, 10, 10] == 0
    keep_two = postprocess_labels(lab.copy(), {"1": {"largest_component": 2}}, spacing_mm=(1, 1, 1))
    assert (keep_two == 1).sum() == 511 + 8


def test_postprocess_rule_errors() -> None:
    with pytest.raises(ConfigError, match="unknown field"):
        parse_rules({"1": {"largest": True}})
    with pytest.raises(ConfigError, match="label value"):
        parse_rules({"liver": {"fill_holes": True}})
    with pytest.raises(ConfigError, match="min_size_mm3"):
        parse_rules({"1": {"min_size_mm3": -3}})


# ----------------------------------------------------------------------------- CLI
def test_cli_predict_nifti(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medseg.cli.main import app
    from medseg.io import load, save

    run = _export(tmp_path)
    image = _image(_affine("LAS"))
    save(image, tmp_path / "ct.nii.gz")
    result = CliRunner().invoke(
        app, ["predict", "--model", str(run), str(tmp_path / "ct.nii.gz"), str(tmp_path / "out"), "--device", "cpu",
              "--probabilities"]
    )
    assert result.exit_code == 0, result.output
    out = load(tmp_path / "out" / "ct_seg.nii.gz")
    np.testing.assert_allclose(out.affine, load(tmp_path / "ct.nii.gz").affine, atol=1e-5)
    np.testing.assert_array_equal(out.array, (image.array / 100.0 > THRESHOLD).astype(np.uint8))
    assert (tmp_path / "out" / "ct_probabilities.nii.gz").is_file()
    record = json.loads((tmp_path / "out" / "ct_prediction.json").read_text())
    assert record["model_sha256"] == Predictor.from_run(run, device="cpu").model_sha256
    assert not list((tmp_path / "out").glob(".*partial*"))


def test_postprocess_tiny_masks_cc3d_refuses() -> None:
    """cc3d 4.1 raises on some masks of a few voxels (a 16x16x8 study gives a 4x4x2 model grid);
    the components then come from scipy, with the same result."""
    import cc3d

    lab = np.array([[[1, 0, 1]]], dtype=np.uint8)
    with pytest.raises(RuntimeError):  # the library's own failure, which the rules must survive
        cc3d.connected_components(lab == 1, connectivity=26, return_N=True)
    out = postprocess_labels(lab.copy(), {"1": {"largest_component": True}}, spacing_mm=(1, 1, 1))
    assert out.tolist() == [[[1, 0, 0]]]
    rng = np.random.default_rng(3)
    for _ in range(200):  # every tiny random map keeps exactly one component of label 1, its largest
        lab = (rng.random(tuple(rng.integers(1, 5, size=3))) < 0.5).astype(np.uint8)
        out = postprocess_labels(lab.copy(), {"1": {"largest_component": True}}, spacing_mm=(1, 1, 1))
        from scipy import ndimage

        full = np.ones((3, 3, 3), bool)
        _, n_out = ndimage.label(out == 1, structure=full)
        cc, n_in = ndimage.label(lab == 1, structure=full)
        assert n_out == min(n_in, 1)
        if n_in:
            assert (out == 1).sum() == np.bincount(cc.ravel())[1:].max()
