"""One intensity vocabulary: an export is normalised identically by `medseg predict` (volumes) and
`medseg predict-images` (ordinary images), by training and by SAM2's windowing (issue 13, point 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.transforms.intensity import NORMALIZATION_KINDS, normalize_intensity


@pytest.fixture()
def mri_unet2d_export(tmp_path: Path) -> Path:
    import torch

    from medseg.models import create_model
    from medseg.models.export import save_export

    torch.manual_seed(0)
    cfg = {"in_channels": 1, "out_channels": 2, "encoder_name": "resnet18", "encoder_depth": 3,
           "decoder_channels": [16, 8, 4]}
    info = {"model": {"name": "unet2d", "config": cfg}, "spatial_dims": 2, "labels": {"0": "bg", "1": "fg"},
            "preprocessing": {"orientation": "RAS", "target_spacing_mm": None,
                              "normalization": {"kind": "zscore", "percentiles": [0.5, 99.5]}},
            "inference": {"patch_size": [32, 32], "overlap": 0.5, "batch_size": 1}}
    return save_export(tmp_path / "export", create_model("unet2d", **cfg).eval(), info)


def test_predict_and_predict_images_normalise_an_mri_export_identically(mri_unet2d_export, tmp_path):
    from medseg.inference import Predictor
    from medseg.inference.images import normalize_image
    from medseg.io.images import read_image
    from medseg.models.export import read_info
    from medseg.volume import Volume

    rng = np.random.default_rng(4)
    slice_ = np.zeros((40, 48), np.uint16)
    slice_[5:35, 6:42] = rng.integers(100, 4000, (30, 36))  # an MRI slice with zero background
    Image.fromarray(slice_).save(tmp_path / "mri.png")
    image = read_image(tmp_path / "mri.png")  # [H, W, 1] as predict-images reads it
    spec = read_info(mri_unet2d_export)["preprocessing"]["normalization"]
    by_images = normalize_image(image, spec)[..., 0]

    volume = Volume(slice_.astype(np.float32)[:, :, None], np.eye(4), meta={"modality": "MR"})
    by_volumes = Predictor.from_run(mri_unet2d_export, device="cpu")._preprocess(volume).array[:, :, 0]
    np.testing.assert_allclose(by_images, by_volumes, rtol=1e-6, atol=1e-6)
    inside = slice_ != 0  # the statistics are those of the nonzero pixels, in both paths
    assert abs(float(by_images[inside].mean())) < 0.05 and by_images[~inside].mean() < -1.0


def test_sam2_windowing_is_the_vocabulary():
    from medseg.sam.preprocess import Preprocess, scale_volume
    from medseg.volume import Volume

    ct = Volume(np.linspace(-1000, 1000, 60, dtype=np.float32).reshape(3, 4, 5), np.eye(4), meta={"modality": "CT"})
    pre = Preprocess(mode="auto", window="liver")
    np.testing.assert_array_equal(scale_volume(ct, pre), normalize_intensity(ct.array, pre.normalization(ct)))
    assert pre.normalization(ct)["kind"] == "window"
    liver = Volume(np.array([-20.0, 60.0, 140.0, 500.0], np.float32).reshape(1, 1, 4), np.eye(4), meta={"modality": "CT"})
    assert scale_volume(liver, pre).ravel().tolist() == [0.0, 127.5, 255.0, 255.0]  # liver window 60 +- 80 HU
    mr = Volume(ct.array + 1000, np.eye(4), meta={"modality": "MR"})
    assert pre.normalization(mr)["kind"] == "percentile_window"
    assert {"ct", "zscore", "none", "scale", "imagenet", "window", "percentile_window"} <= set(NORMALIZATION_KINDS)


def test_one_function_behind_every_caller():
    import medseg.inference.images as images
    import medseg.sam.preprocess as sam
    import medseg.transforms.intensity as intensity
    import medseg.transforms.preprocess as volumes

    assert volumes.normalize_intensity is intensity.normalize_intensity
    assert sam.normalize_intensity is intensity.normalize_intensity
    x = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    np.testing.assert_array_equal(images.normalize_image(x, {"kind": "zscore"}),
                                  intensity.normalize_channels(x, {"kind": "zscore"}, channel_axis=-1))
    # the volume meaning, per channel: channel 0 holds 0, 3, 6, 9 -> stats of 3, 6, 9 (nonzero), clipped at
    # their 0.5/99.5 percentiles (3.03, 8.97): mean 6, std sqrt(((2.97)**2 * 2) / 3)
    z = images.normalize_image(x, {"kind": "zscore"})[..., 0].ravel()
    std = np.sqrt(2 * 2.97 ** 2 / 3)
    np.testing.assert_allclose(z, (np.clip([0, 3, 6, 9], 3.03, 8.97) - 6) / std, rtol=1e-5)


def test_a_real_scanner_mr_slice_is_normalised_identically_by_both_predictors(mri_unet2d_export, tmp_path):
    """The same check on a slice of a real Siemens MR series (../shared/data), not on data this project made."""
    from medseg.inference import Predictor
    from medseg.inference.images import normalize_image
    from medseg.io import load
    from medseg.io.images import read_image
    from medseg.models.export import read_info
    from medseg.volume import Volume

    series = Path(__file__).resolve().parents[2] / "shared" / "data" / "dcm_qa_decubitus" / "In" / "HFS"
    if not series.is_dir():
        pytest.skip(f"{series} is not here")
    mr = load(series)
    slice_ = np.ascontiguousarray(mr.array[:, :, mr.spatial_shape[2] // 2]).astype(np.uint16)
    assert (slice_ == 0).any() and slice_.max() > 100  # real background and anatomy
    Image.fromarray(slice_).save(tmp_path / "mr.png")
    spec = read_info(mri_unet2d_export)["preprocessing"]["normalization"]
    by_images = normalize_image(read_image(tmp_path / "mr.png"), spec)[..., 0]
    volume = Volume(slice_.astype(np.float32)[:, :, None], np.eye(4), meta={"modality": "MR"})
    by_volumes = Predictor.from_run(mri_unet2d_export, device="cpu")._preprocess(volume).array[:, :, 0]
    np.testing.assert_allclose(by_images, by_volumes, rtol=1e-6, atol=1e-6)
