"""YOLO-sem (ultralytics 8.4's semantic task) behind ``medseg train`` and ``medseg predict-images``: a semantic
image_folder dataset converted into the run, ultralytics' trainer in an offline child, a dense state_dict
export that reloads and predicts full-resolution label PNGs."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import ConfigError

if importlib.util.find_spec("ultralytics") is None:  # found without importing it (its import patches PIL)
    pytest.skip("ultralytics (the optional yolo extra) is not installed", allow_module_level=True)

from tests.test_yolo import assert_offline, network_guard  # noqa: E402

SIZE = (48, 64)
#: ultralytics accumulates gradients up to nbs images: nbs = batch steps the optimiser every batch
ARGS = {"mosaic": 0.0, "plots": False, "optimizer": "AdamW", "lr0": 0.003, "warmup_epochs": 0, "nbs": 4}


def sem_config(root: Path, **train) -> dict:
    return {"model": {"name": "yolo_sem", "config": {"model": "yolo26n-sem.yaml", "args": dict(ARGS)}},
            "dataset": {"root": str(root)}, "images": {"crop_size": [64, 64]},
            "train": {"max_epochs": 5, "batch_size": 4, "seed": 0, **train}}


@pytest.fixture(scope="module")
def sem_run(tmp_path_factory):
    """One 5-epoch YOLO-sem run on 6 + 2 shapes images, under a network guard inside the ultralytics child."""
    from medseg.data.shapes import write_shapes_dataset
    from medseg.training.engine import train

    tmp = tmp_path_factory.mktemp("yolo_sem")
    data = write_shapes_dataset(tmp / "data", n_train=6, n_val=2, size=SIZE, seed=1)
    with network_guard(tmp) as netlog:
        run = train(sem_config(data), out_dir=tmp / "run")
    return run, data, netlog


def test_yolo_sem_trains_offline_and_the_loss_falls(sem_run):
    from PIL import Image

    run, data, netlog = sem_run
    assert_offline(netlog)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    for key in ("train_loss", "val_loss", "val_miou", "val_pixel_acc", "train_ce_loss"):
        assert key in rows[0], sorted(rows[0])
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[-1]["val_loss"]) < float(rows[0]["val_loss"])
    assert (run / "curves.png").stat().st_size > 1000
    # the dataset ultralytics read: medseg's split, masks as 8-bit train indices, inside the run
    ds = run / "yolo" / "dataset"
    split = json.loads((run / "splits.json").read_text())
    assert sorted(p.stem for p in (ds / "images" / "val").iterdir()) == sorted(split[0]["val"])
    mask = np.asarray(Image.open(ds / "masks" / "train" / f"{split[0]['train'][0]}.png"))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 2}
    assert not list(data.rglob("*.cache")), "ultralytics wrote its label cache into the dataset"
    info = json.loads((run / "export" / "model.json").read_text())
    assert info["model"]["name"] == "yolo_sem" and info["model"]["config"]["out_channels"] == 3
    assert info["labels"] == {"0": "background", "1": "disk", "2": "square"}
    assert info["inference"]["task"] == "semantic" and info["training"]["epochs"] == 5


def test_yolo_sem_export_reloads_and_predicts_identically(sem_run, tmp_path):
    """predict-images writes the full-resolution label PNG; the reloaded export gives the same labels."""
    import torch
    from PIL import Image

    from medseg.inference.images import predict_image_folder, image_route
    from medseg.io.images import read_image
    from medseg.models.apply2d import image_tensor
    from medseg.models.export import load_exported

    run, data, _ = sem_run
    assert image_route(run) is None  # a semantic export: the dense path, no name check
    state = torch.load(run / "export" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values()) and all(k.startswith("net.") for k in state)
    src = tmp_path / "in"
    src.mkdir()
    img = np.asarray(Image.open(data / "images" / "shapes_006.png"))
    Image.fromarray(np.kron(img, np.ones((2, 3, 1), np.uint8))).save(src / "wide.png")  # 96 x 192
    records = predict_image_folder(run, src, tmp_path / "out")
    assert [r["status"] for r in records] == ["ok"] and records[0]["shape"] == [96, 192]
    written = np.asarray(Image.open(tmp_path / "out" / "wide.png"))
    assert written.shape == (96, 192) and set(np.unique(written)) <= {0, 1, 2}
    net, info = load_exported(run)
    x = torch.from_numpy(image_tensor(read_image(src / "wide.png"), info["preprocessing"]["normalization"], 3,
                                      src / "wide.png"))[None]
    with torch.inference_mode():
        logits = net(x)
    assert logits.shape == (1, 3, 96, 192)
    np.testing.assert_array_equal(logits.argmax(1)[0].numpy(), written)
    again, _ = load_exported(run)
    with torch.inference_mode():
        torch.testing.assert_close(again(x), logits, rtol=0, atol=0)


def test_yolo_sem_refuses_an_instance_yaml_and_own_args(tmp_path):
    from medseg.data.shapes import write_shapes_dataset
    from medseg.models import create_model
    from medseg.training.engine import train

    with pytest.raises(ConfigError, match="not a semantic model YAML"):
        create_model("yolo_sem", model="yolo11n-seg.yaml", out_channels=3)
    data = write_shapes_dataset(tmp_path / "data", n_train=2, n_val=1, size=SIZE, seed=0)
    cfg = sem_config(data)
    cfg["model"]["config"]["args"]["imgsz"] = 128
    with pytest.raises(ConfigError, match="imgsz"):
        train(cfg, out_dir=tmp_path / "run")
    cfg = sem_config(data)
    cfg["model"]["config"]["model"] = "yolo26n-sem.pt"
    with pytest.raises(ConfigError, match="local file"):
        train(cfg, out_dir=tmp_path / "run")


@pytest.mark.parametrize("name", ["yolo_sem_images.yaml", "yolo_sem_images_cpu.yaml"])
def test_yolo_sem_pipelines_load(name):
    from medseg.models.registry import get_model_spec
    from medseg.models.yolo import check_yolo_model
    from medseg.training.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "pipelines" / name, [])
    assert cfg.model.name == "yolo_sem" and cfg.images.crop_size[0] % 32 == 0
    assert check_yolo_model(cfg.model.config["model"]) == "yolo26n-sem.yaml"
    assert get_model_spec(cfg.model.name).trainer == "medseg.training.yolo:train_yolo"
