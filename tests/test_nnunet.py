"""nnU-Net v2 model folders through medseg, equal to nnU-Net's own runner.

The model folders are made with nnU-Net's own code: the plans are written in its format
and read by its ``PlansManager``, the network is created from the plans by
``get_network_from_plans`` (random He initialisation), and the checkpoint carries the keys
and types ``nnUNetTrainer.save_checkpoint`` writes (numpy scalars in ``logging``, a
``torch.device`` in ``init_args``). nnU-Net's preprocessing (``DefaultPreprocessor``), its
``nnUNetPredictor`` sliding window and its export
(``convert_predicted_logits_to_segmentation_with_correct_shape``) give the reference.
nnU-Net's environment variables are set only inside this test process, for nnU-Net itself.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nnunetv2")
pytest.importorskip("dynamic_network_architectures")

for _var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
    os.environ.setdefault(_var, "/nonexistent/nnunet_" + _var)  # only so that nnU-Net imports quietly

import torch  # noqa: E402

from medseg.volume import Volume  # noqa: E402

ARCH_3D = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 3, "features_per_stage": [4, 8, 16], "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [1, 1, 1], "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}
CT_PROPS = {"0": {"max": 1500.0, "mean": 40.0, "median": 35.0, "min": -1000.0, "percentile_00_5": -200.0,
                  "percentile_99_5": 400.0, "std": 120.0}}


def arch(dims: int, stages: int = 3, features: int = 4) -> dict:
    a = copy.deepcopy(ARCH_3D)
    kw = a["arch_kwargs"]
    kw["n_stages"] = stages
    kw["features_per_stage"] = [features * 2 ** i for i in range(stages)]
    kw["kernel_sizes"] = [[3] * dims] * stages
    kw["strides"] = [[1] * dims] + [[2] * dims] * (stages - 1)
    kw["n_conv_per_stage"] = [1] * stages
    kw["n_conv_per_stage_decoder"] = [1] * (stages - 1)
    if dims == 2:
        kw["conv_op"] = "torch.nn.modules.conv.Conv2d"
        kw["norm_op"] = "torch.nn.modules.instancenorm.InstanceNorm2d"
    return a


def make_plans(configuration: str, *, spacing, patch, schemes=("CTNormalization",), use_mask=(False,),
               transpose=(0, 1, 2), stages: int = 3, features: int = 4) -> dict:
    """A plans.json in nnU-Net v2's format (read back by nnU-Net's PlansManager in the tests)."""
    dims = len(patch)
    cfg = {
        "data_identifier": f"nnUNetPlans_{configuration}", "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2, "patch_size": list(patch), "median_image_size_in_voxels": [32] * dims,
        "spacing": list(spacing), "normalization_schemes": list(schemes), "use_mask_for_norm": list(use_mask),
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": arch(dims, stages, features), "batch_dice": False,
    }
    backward = [int(i) for i in np.argsort(transpose)]
    return {
        "dataset_name": "Dataset999_Tiny", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.0, 1.0], "original_median_shape_after_transp": [32, 32, 32],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": list(transpose), "transpose_backward": backward,
        "configurations": {configuration: cfg}, "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": CT_PROPS,
    }


def make_model_folder(root: Path, plans: dict, dataset_json: dict, configuration: str, *, folds=(0,),
                      mirror_axes=(0, 1, 2), seed: int = 0, checkpoint: str = "checkpoint_final.pth") -> Path:
    """``Dataset999_Tiny/nnUNetTrainer__nnUNetPlans__CONFIG`` with random-weight checkpoints in nnU-Net's format."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = root / "Dataset999_Tiny" / f"nnUNetTrainer__nnUNetPlans__{configuration}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    n_in = determine_num_input_channels(pm, cm, dataset_json)
    n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    for fold in folds:
        torch.manual_seed(seed + int(fold) if str(fold).isdigit() else seed)
        net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                     cm.network_arch_init_kwargs_req_import, n_in, n_out, allow_init=True,
                                     deep_supervision=True)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True)
        ckpt = {
            "network_weights": net.state_dict(), "optimizer_state": optimizer.state_dict(),
            "grad_scaler_state": None,
            "logging": {"mean_fg_dice": [np.float64(0.1), np.float64(0.2)], "ema_fg_dice": [np.float64(0.15)],
                        "dice_per_class_or_region": [[np.float64(0.1)] * max(n_out - 1, 1)],
                        "train_losses": [np.float32(-0.3)], "val_losses": [np.float32(-0.2)], "lrs": [0.01],
                        "epoch_start_timestamps": [1.0], "epoch_end_timestamps": [2.0]},
            "_best_ema": np.float64(0.15), "current_epoch": 2,
            "init_args": {"plans": plans, "configuration": configuration, "fold": fold, "dataset_json": dataset_json,
                          "device": torch.device("cpu")},
            "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": tuple(mirror_axes),
        }
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(ckpt, folder / f"fold_{fold}" / checkpoint)
    return folder


def dataset(labels: dict, channels=("CT",), **extra) -> dict:
    return {"channel_names": {str(i): c for i, c in enumerate(channels)}, "labels": labels, "numTraining": 2,
            "file_ending": ".nii.gz", **extra}


def phantom(shape=(36, 30, 28), spacing=(0.8, 0.9, 1.2), *, ct: bool = True, seed: int = 0, zero_border: int = 0,
            oblique: bool = False) -> Volume:
    """A CT-like (HU) or MR-like image ``[i, j, k]`` with an ellipsoid body and two blobs."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    body = (grid ** 2).sum(0) < 0.8
    blob1 = ((grid - np.array([0.3, 0.1, 0.0])[:, None, None, None]) ** 2).sum(0) < 0.08
    blob2 = ((grid + np.array([0.3, 0.2, 0.1])[:, None, None, None]) ** 2).sum(0) < 0.05
    if ct:
        arr = np.where(body, 40.0, -1000.0) + 150 * blob1 - 80 * blob2 + rng.normal(0, 20, shape)
        arr = np.round(arr).astype(np.int16)
    else:
        arr = (np.where(body, 300.0, 0.0) + 200 * blob1 + 120 * blob2) * (1 + 0.05 * rng.normal(size=shape))
        arr = np.where(body | blob1 | blob2, arr, 0).astype(np.float32)
    if zero_border:
        b = zero_border
        arr[:b] = 0
        arr[:, -b:] = 0
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-20.0, 15.0, 7.5]
    if oblique:
        c, s = np.cos(0.3), np.sin(0.3)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        affine[:3, :3] = rot @ affine[:3, :3]
    affine[0] *= -1  # LPS-like storage: i grows to the left
    return Volume(arr, affine, {"modality": "CT" if ct else "MR"})


def reference(folder: Path, image_file: Path, *, folds, tta: bool, checkpoint="checkpoint_final.pth"):
    """nnU-Net's own path: (preprocessed data, probabilities, labels), arrays in nnU-Net's [z, y, x] order."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=tta,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), folds, checkpoint)
    image, props = SimpleITKIO().read_images([str(image_file)])
    data, _, props = DefaultPreprocessor(verbose=False).run_case_npy(
        image, None, props, predictor.plans_manager, predictor.configuration_manager, predictor.dataset_json)
    logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
    seg, probs = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits, predictor.plans_manager, predictor.configuration_manager, predictor.label_manager, props,
        return_probabilities=True)
    return data, probs, seg


def nn_to_ijk(arr: np.ndarray) -> np.ndarray:
    """nnU-Net's ``[..., z, y, x]`` as medseg's ``[..., i, j, k]``."""
    return np.moveaxis(arr, (-3, -2, -1), (-1, -2, -3))


def compare(tmp_path: Path, folder: Path, volume: Volume, *, folds=(0,), tta=True, regions=False,
            labels_only: bool = False):
    from medseg.inference.nnunet import NnunetSegmenter
    from medseg.io import save

    image_file = save(volume, tmp_path / "case_0000.nii.gz")
    ref_data, ref_probs, ref_seg = reference(folder, image_file, folds=folds, tta=tta)
    from medseg.io import load

    loaded = load(image_file)
    seg = NnunetSegmenter.from_path(folder, device="cpu", tta=tta, folds=folds)
    pre = seg.preprocess(loaded)
    assert pre.data.shape == ref_data.shape
    np.testing.assert_allclose(pre.data, ref_data, atol=1e-4, rtol=0)
    labels, probs = seg.predict(loaded, return_probabilities=True)
    assert labels.spatial_shape == loaded.spatial_shape and np.allclose(labels.affine, loaded.affine)
    np.testing.assert_allclose(probs.array, nn_to_ijk(ref_probs), atol=1e-3, rtol=0)
    ref = nn_to_ijk(np.asarray(ref_seg))
    if regions:
        margin = np.abs(ref_probs - 0.5).min(0)
    else:
        top = np.sort(ref_probs, axis=0)
        margin = top[-1] - top[-2]
    sure = nn_to_ijk(margin) > 1e-3
    assert sure.mean() > 0.9
    np.testing.assert_array_equal(labels.array[sure], ref[sure])
    if labels_only:  # labels without probabilities (the memory-bounded path) are the same
        np.testing.assert_array_equal(seg.predict(loaded).array, labels.array)
    return seg, labels, ref


@pytest.mark.slow
def test_3d_fullres_ct_two_folds_equals_nnunet(tmp_path):
    plans = make_plans("3d_fullres", spacing=[1.0, 1.1, 1.0], patch=[16, 16, 16])
    folder = make_model_folder(tmp_path / "m", plans, dataset({"background": 0, "liver": 1, "tumour": 2}),
                               "3d_fullres", folds=(0, 1))
    compare(tmp_path, folder, phantom(shape=(22, 20, 18)), folds=(0, 1), tta=False, labels_only=True)


@pytest.mark.slow
def test_3d_fullres_zscore_masked_anisotropic_transposed_equals_nnunet(tmp_path):
    # z (nnU-Net axis 0) at 4 mm: resampled with in-plane cubic + nearest along z; transpose_forward moves axes
    plans = make_plans("3d_fullres", spacing=[2.0, 1.0, 1.0], patch=[8, 16, 16], schemes=["ZScoreNormalization"],
                       use_mask=[True], transpose=(0, 2, 1))
    folder = make_model_folder(tmp_path / "m", plans, dataset({"background": 0, "lesion": 1}, channels=("T1",)),
                               "3d_fullres", mirror_axes=(1, 2))
    vol = phantom(shape=(20, 18, 8), spacing=(0.9, 1.0, 4.0), ct=False, zero_border=2)
    compare(tmp_path, folder, vol, tta=True)


@pytest.mark.slow
def test_2d_zscore_no_mask_equals_nnunet(tmp_path):
    plans = make_plans("2d", spacing=[1.0, 1.0], patch=[16, 16], schemes=["ZScoreNormalization"], use_mask=[False])
    folder = make_model_folder(tmp_path / "m", plans, dataset({"background": 0, "a": 1, "b": 2, "c": 3},
                                                              channels=("MR",)), "2d", mirror_axes=(0, 1))
    compare(tmp_path, folder, phantom(shape=(26, 30, 6), spacing=(0.8, 0.9, 2.0), ct=False), tta=True)


@pytest.mark.slow
def test_region_based_model_equals_nnunet(tmp_path):
    labels = {"background": 0, "whole": [1, 2], "core": [2]}
    ds = dataset(labels, channels=("MR",), regions_class_order=[1, 2])
    plans = make_plans("3d_fullres", spacing=[1.2, 1.0, 1.0], patch=[16, 16, 16], schemes=["ZScoreNormalization"])
    folder = make_model_folder(tmp_path / "m", plans, ds, "3d_fullres")
    seg, _, _ = compare(tmp_path, folder, phantom(shape=(20, 18, 17), ct=False, seed=3), tta=False, regions=True)
    assert seg.label_names == {0: "background", 1: "whole", 2: "core"}


@pytest.mark.slow
def test_dicom_input_equals_nnunet_on_its_nifti(tmp_path):
    from medseg.data.dicom_writer import write_dicom_series
    from medseg.inference.nnunet import NnunetSegmenter
    from medseg.io import load, save

    plans = make_plans("3d_fullres", spacing=[1.0, 1.0, 1.0], patch=[16, 16, 16])
    folder = make_model_folder(tmp_path / "m", plans, dataset({"background": 0, "organ": 1}), "3d_fullres")
    write_dicom_series(phantom(shape=(20, 18, 17), oblique=True), tmp_path / "dicom", seed=1)
    dicom = load(tmp_path / "dicom")
    nifti = save(dicom, tmp_path / "ct_0000.nii.gz")  # the NIfTI conversion nnU-Net reads
    _, ref_probs, ref_seg = reference(folder, nifti, folds=(0,), tta=False)
    labels = NnunetSegmenter.from_path(folder, device="cpu", tta=False).predict(dicom)
    # nnU-Net's result lives on the NIfTI's grid: compare in world space through both affines
    ref_vol = load(nifti)
    assert np.allclose(ref_vol.affine, labels.affine, atol=1e-4)
    top = np.sort(ref_probs, axis=0)
    sure = nn_to_ijk(top[-1] - top[-2]) > 1e-3
    np.testing.assert_array_equal(labels.array[sure], nn_to_ijk(np.asarray(ref_seg))[sure])


def test_import_cli_export_loads_weights_only_and_predicts(tmp_path):
    from typer.testing import CliRunner

    from medseg.cli.main import app
    from medseg.inference.factory import check_prompt_sources, load_segmenter
    from medseg.inference.nnunet import NnunetSegmenter
    from medseg.models.export import read_export

    plans = make_plans("3d_fullres", spacing=[1.0, 1.0, 1.0], patch=[16, 16, 16])
    folder = make_model_folder(tmp_path / "m", plans, dataset({"background": 0, "organ": 1}), "3d_fullres",
                               folds=(0, 1, 2))
    out = tmp_path / "export"
    result = CliRunner().invoke(app, ["import", "nnunet", str(folder), "--output", str(out), "--folds", "0,2"])
    assert result.exit_code == 0, result.output
    state = torch.load(out / "model.pt", weights_only=True)
    assert {k.split(".")[0] for k in state} == {"fold_0", "fold_2"}
    export = read_export(out)
    assert export.name == "nnunet" and export.labels == {0: "background", 1: "organ"}
    assert check_prompt_sources([out]) is False and check_prompt_sources([folder]) is False
    from_export = load_segmenter(out, device="cpu", tta=False)
    from_folder = load_segmenter(folder, device="cpu", tta=False)
    assert isinstance(from_export, NnunetSegmenter) and from_folder.model.folds == ["0", "1", "2"]
    vol = phantom(shape=(20, 18, 17))
    a = from_export.predict(vol)
    b = NnunetSegmenter.from_path(folder, device="cpu", tta=False, folds=(0, 2)).predict(vol)
    np.testing.assert_array_equal(a.array, b.array)
    assert a.spatial_shape == vol.spatial_shape and set(from_export.last_timings) >= {"preprocess_s", "network_s", "export_s"}
    assert len(from_export.model_sha256) == 64


def test_predict_cli_takes_an_nnunet_folder(tmp_path):
    from typer.testing import CliRunner

    from medseg.cli.main import app
    from medseg.io import load, save

    plans = make_plans("3d_fullres", spacing=[1.0, 1.0, 1.0], patch=[16, 16, 16])
    folder = make_model_folder(tmp_path / "m", plans, dataset({"background": 0, "organ": 1}), "3d_fullres")
    image = save(phantom(shape=(20, 18, 17)), tmp_path / "ct.nii.gz")
    result = CliRunner().invoke(app, ["predict", str(image), str(tmp_path / "out"), "--model", str(folder),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    seg = load(tmp_path / "out" / "ct_seg.nii.gz")
    assert seg.spatial_shape == (20, 18, 17)


def test_checkpoint_with_foreign_class_is_refused(tmp_path):
    from medseg.errors import ModelError
    from medseg.models.nnunet import load_checkpoint

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {}, "x": Evil()}, path)
    with pytest.raises(ModelError, match="weights-only"):
        load_checkpoint(path)


def test_plans_naming_a_foreign_class_are_refused():
    from medseg.errors import ModelError
    from medseg.models.nnunet import build_network, resolve_configuration

    plans = make_plans("3d_fullres", spacing=[1.0, 1.0, 1.0], patch=[16, 16, 16])
    cfg = resolve_configuration(plans, "3d_fullres")
    cfg["architecture"]["network_class_name"] = "os.system"
    with pytest.raises(ModelError, match="os.system"):
        build_network(cfg, dataset({"background": 0, "a": 1}))
    cfg = resolve_configuration(plans, "3d_fullres")
    cfg["architecture"]["arch_kwargs"]["nonlin"] = "subprocess.Popen"
    with pytest.raises(ModelError, match="subprocess.Popen"):
        build_network(cfg, dataset({"background": 0, "a": 1}))


@pytest.mark.parametrize("grid, shape, current, new", [
    ((10, 12, 9), (23, 30, 17), (1.0, 1.0, 1.0), (0.45, 0.4, 0.5)),   # upsampling
    ((20, 16, 16), (9, 40, 33), (1.0, 1.0, 1.0), (2.1, 0.4, 0.5)),    # mixed
    ((8, 20, 20), (30, 50, 45), (5.0, 1.0, 1.0), (1.3, 0.4, 0.45)),   # anisotropic: nearest along z
    ((12, 20, 20), (24, 20, 40), (2.0, 1.0, 1.0), (1.0, 1.0, 0.5)),   # exact halves: order-0 ties
])
def test_linear_labels_equal_the_channel_by_channel_argmax(grid, shape, current, new):
    """The band-only export (linear_labels) gives the argmax of every channel resampled in full."""
    from scipy import ndimage

    from medseg.inference.nnunet import linear_labels, resample_channel

    rng = np.random.default_rng(0)
    blocks = ndimage.zoom(rng.integers(0, 5, (4, 4, 4)), [g / 4 for g in grid], order=0)
    logits = rng.normal(0, 0.5, (6, *grid)).astype(np.float32)
    for c in range(6):
        logits[c] += 2.5 * (blocks == c)
    logits = logits.astype(np.float16)  # as the sliding window accumulates them
    full = np.stack([resample_channel(logits[c], shape, current, new, order=1, order_z=0) for c in range(6)])
    fast = linear_labels(logits, shape, current, new, order=1, order_z=0, max_band_share=1.0)
    assert fast.shape == tuple(shape)
    np.testing.assert_array_equal(fast, full.astype(np.float16).argmax(0))  # the channel path rounds to float16
    assert linear_labels(logits, shape, current, new, order=1, order_z=0, max_band_share=0.0) is None
    assert linear_labels(logits, shape, current, new, order=3, order_z=0) is None  # cubic: not a convex mix
    from medseg.inference.nnunet import positive

    region = (logits[2:3].astype(np.float32) - 1.0).astype(np.float16)  # a region's decision: its logit's sign
    inside = linear_labels(region, shape, current, new, order=1, order_z=0, decide=positive, max_band_share=1.0)
    expected = resample_channel(region[0], shape, current, new, order=1, order_z=0).astype(np.float16) > 0
    np.testing.assert_array_equal(inside, expected)


@pytest.mark.parametrize("grid, shape, current, new", [
    ((14, 18, 16), (31, 40, 35), (1.0, 1.0, 1.0), (0.45, 0.45, 0.45)),  # upsampling, edges clipped
    ((10, 24, 24), (37, 30, 50), (4.0, 1.0, 1.0), (1.1, 0.8, 0.48)),    # anisotropic: nearest along z
])
@pytest.mark.parametrize("threads, chunk", [(None, None), (1, None), (3, 64)])
def test_linear_labels_two_channel_band_equals_every_channel(grid, shape, current, new, threads, chunk, monkeypatch):
    """Smooth logits as a trained model gives (each class falls off with the distance to its centre):
    along two-class boundaries only the two leading channels are interpolated, at junctions and
    near-ties every channel, and the labels equal the argmax of every channel resampled in full;
    also on one thread, and on three threads sharing chunks of at most 64 output voxels."""
    import medseg.inference.nnunet as nnunet_inference
    from medseg.inference.nnunet import linear_labels, resample_channel

    if threads is not None:
        monkeypatch.setattr(nnunet_inference, "_export_threads", lambda: threads)
    if chunk is not None:
        monkeypatch.setattr(nnunet_inference, "MIN_CHUNK_VOXELS", chunk)
        monkeypatch.setattr(nnunet_inference, "CHUNK_VOXELS", chunk)

    rng = np.random.default_rng(1)
    axes = np.meshgrid(*[np.linspace(0, 1, g) for g in grid], indexing="ij")
    centres = rng.random((7, 3))
    logits = np.stack([-12 * sum((ax - c) ** 2 for ax, c in zip(axes, centre)) for centre in centres])
    logits[3] = logits[2] + rng.normal(0, 2e-3, grid)  # a near-tie of two channels across the whole volume
    logits += rng.normal(0, 0.05, logits.shape)
    logits = logits.astype(np.float16)
    full = np.stack([resample_channel(logits[c], shape, current, new, order=1, order_z=0) for c in range(7)])
    stats: dict[str, int] = {}
    fast = linear_labels(logits, shape, current, new, order=1, order_z=0, max_band_share=1.0, stats=stats)
    np.testing.assert_array_equal(fast, full.astype(np.float16).argmax(0))
    assert 0 < stats["pair_band"] < stats["band"]  # both the two-channel and the every-channel path ran


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_linear_labels_near_ties_of_two_channels_equal_every_channel(dtype, monkeypatch):
    """Two channels crossing with a slope of float16 steps: the float32 pass of the band leaves the
    near-ties to the float64 pair path (which must see some), and the labels still equal the argmax
    of every channel resampled in full; float32 logits take the same paths. The labels come in
    Fortran order (the Volume's [i, j, k] memory order)."""
    from medseg.inference import nnunet
    from medseg.inference.nnunet import linear_labels, resample_channel

    grid, shape, current, new = (9, 12, 14), (17, 25, 31), (1.0, 1.0, 1.0), (0.5, 0.45, 0.43)
    rng = np.random.default_rng(3)
    ramp = np.broadcast_to(np.linspace(-0.02, 0.02, grid[2]), grid)
    logits = np.full((4, *grid), -3.0)
    logits[1] = 2.0 + ramp + rng.normal(0, 2e-3, grid)
    logits[2] = 2.0 - ramp + rng.normal(0, 2e-3, grid)
    logits[3] = rng.normal(-1, 0.3, grid)
    logits = logits.astype(dtype)
    seen = []

    def pair_labels(*args):  # noqa: ANN002, ANN202
        seen.append(args[1][0].size)
        return exact_pair(*args)

    exact_pair = nnunet._pair_labels
    monkeypatch.setattr(nnunet, "_pair_labels", pair_labels)
    full = np.stack([resample_channel(logits[c], shape, current, new, order=1, order_z=0) for c in range(4)])
    fast = linear_labels(logits, shape, current, new, order=1, order_z=0, max_band_share=1.0)
    np.testing.assert_array_equal(fast, full.astype(np.float16).argmax(0))
    assert sum(seen) > 0 and fast.flags.f_contiguous
