"""Issue 12, defect 8: model.json values out of range and a device that is not there are one-line errors
naming the key or the device, before any allocation or model load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medseg.errors import ConfigError, InputError, ModelError
from medseg.models.export import read_export, resolve_device
from medseg.testing import make_random_export


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return make_random_export(tmp_path_factory.mktemp("model") / "export")


def _edited(export, tmp_path, section: str, key: str, value):
    folder = tmp_path / "edited"
    folder.mkdir()
    info = json.loads((export / "model.json").read_text())
    info[section][key] = value
    (folder / "model.json").write_text(json.dumps(info))
    (folder / "model.pt").write_bytes((export / "model.pt").read_bytes())
    return folder


@pytest.mark.parametrize("section, key, value, message", [
    ("inference", "patch_size", [100000, 100000, 100000], "inference.patch_size"),
    ("inference", "patch_size", [32, 0, 16], "inference.patch_size"),
    ("inference", "overlap", 1.5, "inference.overlap"),
    ("inference", "batch_size", 0, "inference.batch_size"),
    ("preprocessing", "target_spacing_mm", [0.001, 1.0, 1.0], "preprocessing.target_spacing_mm"),
    ("preprocessing", "target_spacing_mm", [1.0, float("nan"), 1.0], "preprocessing.target_spacing_mm"),
])
def test_model_json_values_out_of_range_are_refused(export, tmp_path, section, key, value, message):
    folder = _edited(export, tmp_path, section, key, value)
    with pytest.raises(ModelError, match=message) as info:
        read_export(folder)
    assert "\n" not in str(info.value) and "model.json" in str(info.value)


def test_a_grid_too_large_to_allocate_is_an_input_error():
    from medseg.transforms.preprocess import resample_to_spacing
    from medseg.volume import Volume

    volume = Volume(np.zeros((64, 64, 40), np.int16), np.diag([1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(InputError, match="would make a grid of"):
        resample_to_spacing(volume, [0.01, 0.01, 0.01], order=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_device_cuda_without_a_gpu_is_a_config_error_not_a_model_error(export, tmp_path):
    from typer.testing import CliRunner

    from medseg.cli.main import app
    from medseg.io import save
    from medseg.volume import Volume

    with pytest.raises(ConfigError, match="no CUDA device is available"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="not a torch device"):
        resolve_device("gpu7")
    assert resolve_device("cpu") == "cpu" and resolve_device(None) == "cpu"
    image = save(Volume(np.zeros((16, 16, 8), np.int16), np.eye(4)), tmp_path / "ct.nii.gz")
    result = CliRunner().invoke(app, ["predict", "--model", str(export), "-i", str(image), "-o", str(tmp_path / "o"),
                                      "--device", "cuda"])
    assert isinstance(result.exception, ConfigError) and "model.pt" not in str(result.exception)
