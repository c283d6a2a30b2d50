"""MONAI bundles through medseg, equal to the bundle's own runner (MONAI's ConfigWorkflow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from medseg.volume import Volume  # noqa: E402

NETWORK_DEF = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8, 16],
               "strides": [2, 2], "num_res_units": 1, "norm": "@norm_kind"}


def preprocessing() -> dict:
    return {"_target_": "Compose", "transforms": [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": "@pixdim", "mode": "bilinear"},
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -200, "a_max": 300, "b_min": 0.0,
         "b_max": 1.0, "clip": True},
        {"_target_": "EnsureTyped", "keys": "image"},
    ]}


def inference_json(image_file: Path, output_dir: Path) -> dict:
    """An inference.json as real bundles write it: $ expressions everywhere but in the two parts medseg uses."""
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".", "output_dir": str(output_dir), "dataset_dir": str(image_file.parent),
        "datalist": [{"image": str(image_file)}],
        "device": "$torch.device('cpu')",
        "pixdim": [1.0, 1.0, 1.0], "norm_kind": "batch",
        "network_def": NETWORK_DEF,
        "network": "$@network_def.to(@device)",
        "preprocessing": preprocessing(),
        "dataset": {"_target_": "Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [16, 16, 16], "sw_batch_size": 2, "overlap": 0.25},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": True, "to_tensor": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
             "resample": False, "separate_folder": False, "output_dtype": "$numpy.uint8"},
        ]},
        "handlers": [{"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                      "load_dict": {"model": "@network"}}],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers", "amp": False},
        "run": ["$@evaluator.run()"],
    }


def make_bundle(root: Path, config: dict) -> Path:
    from monai.bundle import ConfigParser

    bundle = root / "bundle"
    (bundle / "configs").mkdir(parents=True, exist_ok=True)
    (bundle / "models").mkdir(exist_ok=True)
    config = {**config, "bundle_root": str(bundle)}
    (bundle / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    meta = {"version": "0.1.0", "monai_version": "1.4.0", "pytorch_version": "2.5.0", "numpy_version": "1.26.0",
            "name": "tiny", "task": "segmentation",
            "network_data_format": {
                "inputs": {"image": {"type": "image", "format": "hounsfield", "num_channels": 1,
                                     "spatial_shape": [16, 16, 16], "dtype": "float32"}},
                "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 3,
                                     "spatial_shape": [16, 16, 16], "dtype": "float32",
                                     "channel_def": {"0": "background", "1": "liver", "2": "spleen"}}}}}
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2))
    torch.manual_seed(0)
    parser = ConfigParser({"network_def": NETWORK_DEF, "norm_kind": "batch"})
    net = parser.get_parsed_content("network_def")
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(net.state_dict(), bundle / "models" / "model.pt")
    return bundle


def ct(shape=(22, 20, 18), spacing=(1.2, 1.2, 1.4)) -> Volume:
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    arr = np.where((grid ** 2).sum(0) < 0.7, 40.0, -1000.0) + 120 * ((grid - 0.3) ** 2).sum(0).__lt__(0.1)
    arr = np.round(arr + rng.normal(0, 15, shape)).astype(np.int16)
    affine = np.diag([-spacing[0], spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [10.0, -5.0, 3.0]
    return Volume(arr, affine, {"modality": "CT"})


@pytest.mark.slow
def test_bundle_equals_monai_configworkflow(tmp_path):
    from monai.bundle import ConfigWorkflow

    from medseg.inference.factory import load_segmenter
    from medseg.inference.monai_bundle import BundleSegmenter
    from medseg.io import load, save
    from medseg.models.monai_bundle import import_bundle

    image_file = save(ct(), tmp_path / "data" / "case.nii.gz")
    bundle = make_bundle(tmp_path, inference_json(image_file, tmp_path / "monai_out"))
    workflow = ConfigWorkflow(config_file=str(bundle / "configs" / "inference.json"),
                              meta_file=str(bundle / "configs" / "metadata.json"), workflow_type="infer",
                              logging_file=False)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    ref = load(next((tmp_path / "monai_out").glob("*_seg.nii.gz")))

    export = import_bundle(bundle, tmp_path / "export")
    assert torch.load(export / "model.pt", weights_only=True)
    seg = load_segmenter(export, device="cpu")
    assert isinstance(seg, BundleSegmenter) and seg.label_names == {0: "background", 1: "liver", 2: "spleen"}
    volume = load(image_file)
    labels = seg.predict(volume)
    assert labels.spatial_shape == volume.spatial_shape and np.allclose(labels.affine, volume.affine)
    assert np.allclose(ref.affine, volume.affine, atol=1e-4)
    assert len(np.unique(labels.array)) > 1
    np.testing.assert_array_equal(labels.array, np.asarray(ref.array).reshape(labels.spatial_shape))


def test_import_cli_and_nothing_else_is_evaluated(tmp_path):
    from typer.testing import CliRunner

    from medseg.cli.main import app

    sentinel = tmp_path / "SENTINEL"
    config = inference_json(tmp_path / "x.nii.gz", tmp_path / "out")
    config["device"] = f"$open({str(sentinel)!r}, 'w').write('x')"
    config["run"] = [f"$open({str(sentinel)!r}, 'w').write('x')"]
    bundle = make_bundle(tmp_path, config)
    result = CliRunner().invoke(app, ["import", "monai-bundle", str(bundle), "--output", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert not sentinel.exists()
    from medseg.inference.factory import load_segmenter

    labels = load_segmenter(tmp_path / "e", device="cpu").predict(ct())
    assert labels.spatial_shape == ct().spatial_shape and not sentinel.exists()


@pytest.mark.parametrize("where, value, named", [
    ("network_def", {"_target_": "os.system", "command": "echo pwned"}, "os.system"),
    ("network_def", {**NETWORK_DEF, "act": "$__import__('os').system('echo pwned')"}, "__import__"),
    ("transform", {"_target_": "torch.nn.Identity"}, "torch.nn.Identity"),
    ("transform", {"_target_": "subprocess.Popen", "args": ["ls"]}, "subprocess.Popen"),
    ("transform", {"_target_": "ScaleIntensityd", "keys": "@network"}, "@network"),
    ("transform", {"_target_": "ScaleIntensityd", "keys": "%other.json#keys"}, "%other.json"),
])
def test_unsafe_bundle_is_refused(tmp_path, where, value, named):
    from medseg.errors import ConfigError
    from medseg.models.monai_bundle import import_bundle

    config = inference_json(tmp_path / "x.nii.gz", tmp_path / "out")
    if where == "network_def":
        config["network_def"] = value
    else:
        config["preprocessing"]["transforms"].append(value)
    bundle = tmp_path / "b"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "inference.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace("$", r"\$")):
        import_bundle(bundle, tmp_path / "e")


def test_torchscript_bundle_imports_the_same_weights(tmp_path):
    """A bundle shipping only ``models/model.ts`` imports to the same export weights and labels as its ``.pt``."""
    from medseg.inference.factory import load_segmenter
    from medseg.models.monai_bundle import import_bundle
    from medseg.errors import ModelError

    image_file = tmp_path / "case.nii.gz"
    bundle = make_bundle(tmp_path, inference_json(image_file, tmp_path / "out"))
    from_pt = import_bundle(bundle, tmp_path / "export_pt")
    from monai.bundle import ConfigParser

    net = ConfigParser({"network_def": NETWORK_DEF, "norm_kind": "batch"}).get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    torch.jit.script(net.eval()).save(str(bundle / "models" / "model.ts"))
    (bundle / "models" / "model.pt").unlink()
    from_ts = import_bundle(bundle, tmp_path / "export_ts")
    a = torch.load(from_pt / "model.pt", weights_only=True)
    b = torch.load(from_ts / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    volume = ct()
    np.testing.assert_array_equal(load_segmenter(from_ts, device="cpu").predict(volume).array,
                                  load_segmenter(from_pt, device="cpu").predict(volume).array)
    (bundle / "models" / "model.ts").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="model.ts: not a readable TorchScript archive"):
        import_bundle(bundle, tmp_path / "export_bad")
