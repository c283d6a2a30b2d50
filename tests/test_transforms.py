"""Preprocessing (shared with inference) and MONAI recipes."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import ConfigError
from medseg.transforms.preprocess import (
    normalize_intensity,
    preprocess_pair,
    resample_to_grid,
    resample_to_spacing,
    target_grid,
    to_canonical,
)
from medseg.volume import Volume


def _volume(orientation_diag=(-2.0, -1.5, 3.0), shape=(10, 12, 8), seed=0, label=False) -> Volume:
    rng = np.random.default_rng(seed)
    aff = np.diag([*orientation_diag, 1.0])
    aff[:3, 3] = [10.0, -20.0, 30.0]
    arr = rng.integers(0, 4, shape).astype(np.uint8) if label else rng.normal(0, 100, shape).astype(np.float32)
    return Volume(arr, aff, is_label=label)


def test_normalize_ct_exact_values():
    spec = {"kind": "ct", "clip": [-160, 240], "mean": 60, "std": 50}
    out = normalize_intensity(np.array([-1000.0, 60.0, 110.0, 1000.0]), spec)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [-4.4, 0.0, 1.0, 3.6], rtol=1e-6)


def test_normalize_zscore_uses_nonzero_percentiles():
    rng = np.random.default_rng(1)
    arr = np.zeros(10000, np.float32)
    arr[:5000] = rng.normal(100, 10, 5000)
    arr[0] = 1e6  # outlier clipped at the 99.5th percentile
    out = normalize_intensity(arr, {"kind": "zscore", "percentiles": [0.5, 99.5]})
    fg = out[:5000]
    assert abs(float(fg.mean())) < 1e-3 and abs(float(fg.std()) - 1) < 1e-3
    assert out.max() < 4  # the outlier was clipped before the z-score


def test_normalize_bad_spec_names_the_key():
    with pytest.raises(ConfigError, match="ct, zscore, none"):
        normalize_intensity(np.zeros(3), {"kind": "minmax"})
    with pytest.raises(ConfigError, match="normalization.std"):
        normalize_intensity(np.zeros(3), {"kind": "ct", "std": 0})


def test_to_canonical_exact_and_reversible():
    vol = _volume()
    assert vol.orientation == "LPS"
    ras = to_canonical(vol, "RAS")
    assert ras.orientation == "RAS"
    # every voxel keeps its world position and value
    idx = np.array([[1, 2, 3], [9, 0, 7], [0, 11, 0]])
    for i, j, k in idx:
        world = vol.world_coordinates([i, j, k])
        new = np.linalg.solve(ras.affine, np.r_[world, 1.0])[:3]
        np.testing.assert_allclose(new, np.round(new), atol=1e-9)
        assert ras.array[tuple(np.round(new).astype(int))] == vol.array[i, j, k]
    back = to_canonical(ras, "LPS")
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine)


def test_to_canonical_permuted_axes_and_channels():
    aff = np.array([[0, 0, 2.0, 0], [1.5, 0, 0, 0], [0, -3.0, 0, 0], [0, 0, 0, 1]])
    vol = Volume(np.arange(2 * 4 * 5 * 6, dtype=np.float32).reshape(2, 4, 5, 6), aff, channel_first=True)
    ras = to_canonical(vol)
    assert ras.orientation == "RAS" and ras.shape == (2, 6, 4, 5)
    np.testing.assert_allclose(np.linalg.norm(ras.affine[:3, :3], axis=0), [2.0, 1.5, 3.0])


def test_to_canonical_matches_monai_orientationd():
    from monai.data import MetaTensor
    from monai.transforms import Orientationd

    vol = _volume()
    mt = MetaTensor(vol.array[None].copy(), affine=vol.affine.copy())
    ours = to_canonical(vol, "RAS")
    theirs = Orientationd(keys="image", axcodes="RAS")({"image": mt})["image"]
    np.testing.assert_array_equal(np.asarray(theirs[0]), ours.array)
    np.testing.assert_allclose(np.asarray(theirs.affine), ours.affine, atol=1e-6)


def test_resample_labels_nearest_and_grid():
    lab = _volume(label=True)
    out = resample_to_spacing(lab, [1.0, 1.0, 1.0], order=0)
    assert out.is_label and set(np.unique(out.array)) <= set(np.unique(lab.array))
    shape, aff = target_grid(lab, [1.0, 1.0, 1.0])
    assert out.spatial_shape == shape == (20, 18, 24)
    np.testing.assert_allclose(out.spacing, [1.0, 1.0, 1.0])
    # the field of view is centred: first+last voxel centres are symmetric about the old centre
    old_c = lab.world_coordinates((np.array(lab.spatial_shape) - 1) / 2)
    new_c = out.world_coordinates((np.array(out.spatial_shape) - 1) / 2)
    np.testing.assert_allclose(old_c, new_c, atol=1e-9)
    with pytest.raises(ConfigError, match="order=0"):
        resample_to_spacing(lab, [1.0, 1.0, 1.0], order=1)


def test_resample_same_spacing_is_identity_and_back_to_grid():
    img = _volume()
    same = resample_to_spacing(img, img.spacing, order=1)
    np.testing.assert_array_equal(same.array, img.array)
    lin = Volume(np.fromfunction(lambda i, j, k: 2 * i + j - k, (10, 12, 8)).astype(np.float32), img.affine)
    up = resample_to_spacing(lin, [1.0, 0.75, 1.5], order=1)
    back = resample_to_grid(up, lin.spatial_shape, lin.affine, order=1)
    # a linear ramp survives linear resampling exactly away from the clamped border
    np.testing.assert_allclose(back.array[1:-1, 1:-1, 1:-1], lin.array[1:-1, 1:-1, 1:-1], atol=1e-4)


def test_recipe_preprocess_identical_to_preprocess_pair():
    from medseg.transforms.recipes import build_recipe

    img, lab = _volume(), _volume(label=True, seed=3)
    spec = {"orientation": "RAS", "target_spacing_mm": [1.5, 2.0, 2.5],
            "normalization": {"kind": "ct", "clip": [-100, 100], "mean": 0, "std": 50}, "image_order": 1}
    recipe = {"preprocess": ["MedsegOrientd", "MedsegSpacingd", "MedsegNormalized", "MedsegToArrayd"]}
    out = build_recipe(recipe, "preprocess", {"preprocessing": spec})({"image": img, "label": lab})
    ref_img, ref_lab = preprocess_pair(img, lab, spec)
    np.testing.assert_array_equal(out["image"][0], ref_img.array)
    np.testing.assert_array_equal(out["label"][0], ref_lab.array)
    np.testing.assert_allclose(out["image_affine"], ref_img.affine)


def test_recipe_errors_list_valid_names_and_arguments(tmp_path):
    from medseg.transforms.recipes import build_recipe, load_recipe

    with pytest.raises(ConfigError, match="unknown transform 'RandFlip'.*RandFlipd"):
        load_recipe({"train": [{"RandFlip": {"prob": 0.5}}]})
    with pytest.raises(ConfigError, match="unknown argument.*probability.*valid:.*prob"):
        build_recipe({"train": [{"RandFlipd": {"probability": 0.5}}]}, "train", {})
    with pytest.raises(ConfigError, match="@patch_size"):
        build_recipe({"train": [{"RandSpatialCropd": {"roi_size": "@patch"}}]}, "train", {"patch_size": [8, 8, 8]})
    bad = tmp_path / "r.yaml"
    bad.write_text("train:\n  - {importlib.import_module: {name: os}}\n")
    with pytest.raises(ConfigError, match="unknown transform"):
        load_recipe(bad)


def test_shipped_recipes_build_and_sample(tmp_path):
    from medseg.training.config import resolve_recipe
    from medseg.transforms.recipes import build_recipe, load_recipe

    img, lab = _volume(shape=(20, 20, 12)), _volume(shape=(20, 20, 12), label=True)
    spec = {"orientation": "RAS", "target_spacing_mm": [2.0, 2.0, 3.0], "normalization": {"kind": "zscore"}}
    for name, patch, crop in (("ct_3d", [8, 8, 8], [8, 8, 8]), ("mri_2d", [16, 16], [16, 16, 1])):
        recipe = load_recipe(resolve_recipe(name))
        ctx = {"patch_size": patch, "crop_size": crop, "spatial_dims": len(patch), "preprocessing": spec}
        case = build_recipe(recipe, "preprocess", ctx)({"image": img, "label": lab})
        sample = build_recipe(recipe, "train", ctx)(case)
        sample = sample[0] if isinstance(sample, list) else sample
        assert tuple(sample["image"].shape) == (1, *patch), name
        assert tuple(sample["label"].shape) == (1, *patch), name
