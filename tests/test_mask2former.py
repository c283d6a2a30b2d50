"""Mask2Former (transformers) behind ``medseg train`` (medseg's image training, its own matching loss) and
``medseg predict-images`` (semantic: the dense path; instance / panoptic: transformers' post-processing)."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.errors import ConfigError

pytest.importorskip("transformers")

SIZE = (48, 64)


def tiny(**overrides) -> dict:
    from medseg.models.mask2former import TINY_CONFIG

    return {**copy.deepcopy(TINY_CONFIG), "in_channels": 3, "out_channels": 3, **overrides}


def m2f_config(root: Path, model_config: dict, **train) -> dict:
    return {"dataset": {"root": str(root)}, "model": {"name": "mask2former", "config": model_config},
            "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0}, "schedule": {"name": "constant"},
            "images": {"crop_size": [32, 32], "scale_range": [0.75, 1.25]},
            "train": {"max_epochs": 4, "iterations_per_epoch": 4, "batch_size": 2, "progress_bar": False,
                      "accelerator": "cpu", "seed": 0, **train}}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from medseg.data.shapes import write_shapes_dataset

    return write_shapes_dataset(tmp_path_factory.mktemp("m2f_data"), n_train=6, n_val=2, size=SIZE, seed=1)


@pytest.fixture(scope="module")
def instance_run(shapes, tmp_path_factory):
    """A 4-epoch run of an instance-task Mask2Former on the shapes image_folder dataset."""
    from medseg.training.engine import train

    return train(m2f_config(shapes, tiny(task="instance")), out_dir=tmp_path_factory.mktemp("m2f") / "run")


def test_semantic_output_is_transformers_post_processing():
    """forward()'s argmax is post_process_semantic_segmentation's on a 384 x 384 input (transformers sums the
    queries at 384 x 384; medseg at the input's size, as the authors' detectron2 code)."""
    from transformers import Mask2FormerImageProcessor

    from medseg.models import create_model

    torch.manual_seed(0)
    net = create_model("mask2former", **tiny()).eval()
    x = torch.randn(2, 3, 384, 384)
    with torch.no_grad():
        logits = net(x)
        out = net.model(pixel_values=x)
    assert logits.shape == (2, 3, 384, 384)
    processor = Mask2FormerImageProcessor(do_resize=False, do_rescale=False, do_normalize=False)
    ref = processor.post_process_semantic_segmentation(out, target_sizes=[(384, 384)] * 2)
    for got, want in zip(logits.argmax(1), ref):
        assert torch.equal(got, want)


def test_local_save_pretrained_folder_as_weights(tmp_path):
    from medseg.models import create_model
    from medseg.models.export import load_state_exactly

    torch.manual_seed(0)
    source = create_model("mask2former", **tiny()).eval()
    source.model.save_pretrained(tmp_path / "m2f")
    loaded = create_model("mask2former", in_channels=3, out_channels=3, weights=str(tmp_path / "m2f")).eval()
    x = torch.randn(1, 3, 64, 64)  # (at 32 x 32 the stride-32 map is 1 x 1: GroupNorm needs 2 values)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))
    # the architecture a weights-folder model records rebuilds it without the folder
    rebuilt = create_model("mask2former", **loaded.export_config())
    load_state_exactly(rebuilt, loaded.state_dict(), where="rebuilt")
    with pytest.raises(ConfigError, match="no config.json"):
        create_model("mask2former", weights=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="task"):
        create_model("mask2former", **tiny(task="depth"))


def test_short_training_lowers_the_loss_and_exports(instance_run):
    run = instance_run
    rows = [r for r in csv.DictReader((run / "metrics.csv").open()) if r.get("train_loss_epoch")]
    losses = [float(r["train_loss_epoch"]) for r in rows]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    info = json.loads((run / "export" / "model.json").read_text())
    assert info["model"]["name"] == "mask2former" and info["model"]["config"]["task"] == "instance"
    assert info["model"]["config"]["backbone"]["embed_dim"] == 16  # the architecture itself is recorded
    assert info["labels"] == {"0": "background", "1": "disk", "2": "square"}


def test_instance_predictions_reload_identically(instance_run, shapes, tmp_path):
    """predict-images on an instance export: full-resolution ids + table + semantic union; the reloaded
    export's segments are the same."""
    from PIL import Image

    from medseg.data.instance_datasets import read_instance_prediction
    from medseg.inference.images import image_route, predict_image_folder
    from medseg.inference.mask2former import predict_mask2former_folder, segments
    from medseg.io.images import read_image
    from medseg.models.apply2d import image_tensor
    from medseg.models.export import load_exported

    run = instance_run
    assert image_route(run) is predict_mask2former_folder  # the registry's image_predictor, by task
    src = tmp_path / "in"
    src.mkdir()
    img = np.asarray(Image.open(shapes / "images" / "shapes_006.png"))
    Image.fromarray(np.kron(img, np.ones((1, 2, 1), np.uint8))[:, :100]).save(src / "wide.png")  # 48 x 100
    records = predict_image_folder(run, src, tmp_path / "out")
    assert [r["status"] for r in records] == ["ok"] and records[0]["shape"] == [48, 100]
    low = predict_mask2former_folder(run, src, tmp_path / "low", threshold=0.0)  # a brief run: keep every query
    ids, table = read_instance_prediction(tmp_path / "low" / "wide_instances.png")
    assert ids.shape == (48, 100) and low[0]["instances"] == len(table) > 0
    semantic = np.asarray(Image.open(tmp_path / "low" / "wide.png"))
    for iid, (cls, score) in table.items():
        assert cls in (1, 2) and 0 <= score <= 1 and np.all(semantic[ids == iid] == cls)
    assert np.all(semantic[ids == 0] == 0)
    scores = [table[i][1] for i in sorted(table)]
    assert scores == sorted(scores, reverse=True)
    net, info = load_exported(run)
    from transformers import Mask2FormerImageProcessor

    processor = Mask2FormerImageProcessor(do_resize=False, do_rescale=False, do_normalize=False, num_labels=3)
    chw = image_tensor(read_image(src / "wide.png"), info["preprocessing"]["normalization"], 3)
    again, again_table = segments(net, processor, chw, task="instance", threshold=0.0)
    np.testing.assert_array_equal(again, ids)
    assert [(e["id"], e["class"]) for e in again_table] == [(i, table[i][0]) for i in sorted(table)]
    panoptic, _ = segments(net, processor, chw, task="panoptic", threshold=0.0)
    assert panoptic.shape == (48, 100)


def test_semantic_export_takes_the_dense_path(tmp_path, shapes):
    """A semantic export: predict-images writes <stem>.png, transformers' semantic argmax (a 384 x 384 image)."""
    from PIL import Image
    from transformers import Mask2FormerImageProcessor

    from medseg.inference.images import image_route, predict_image_folder
    from medseg.io.images import read_image
    from medseg.models import create_model
    from medseg.models.apply2d import image_tensor, pad_to_multiple
    from medseg.models.export import load_exported, save_export

    torch.manual_seed(1)
    net = create_model("mask2former", **tiny()).eval()
    norm = {"kind": "imagenet"}
    save_export(tmp_path / "export", net, {"model": {"name": "mask2former", "config": tiny()}, "spatial_dims": 2,
                                           "labels": {"0": "background", "1": "disk", "2": "square"},
                                           "preprocessing": {"normalization": norm}, "inference": {}})
    assert image_route(tmp_path / "export") is None
    src = tmp_path / "in"
    src.mkdir()
    img = np.asarray(Image.open(shapes / "images" / "shapes_000.png"))
    Image.fromarray(np.kron(img, np.ones((8, 6, 1), np.uint8))).save(src / "big.png")  # 384 x 384
    [record] = predict_image_folder(tmp_path / "export", src, tmp_path / "out")
    written = np.asarray(Image.open(record["output"]))
    assert written.shape == (384, 384)
    loaded, _ = load_exported(tmp_path / "export")
    chw = pad_to_multiple(image_tensor(read_image(record["input"]), norm, 3), 32)
    with torch.no_grad():
        out = loaded.model(pixel_values=torch.from_numpy(chw)[None])
    processor = Mask2FormerImageProcessor(do_resize=False, do_rescale=False, do_normalize=False)
    [ref] = processor.post_process_semantic_segmentation(out, target_sizes=[chw.shape[1:]])
    np.testing.assert_array_equal(written, ref.numpy())


@pytest.mark.parametrize("name", ["mask2former_images.yaml", "mask2former_images_cpu.yaml"])
def test_mask2former_pipelines_load_and_build(name):
    from medseg.models.registry import get_model_spec
    from medseg.training.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "pipelines" / name, [])
    spec = get_model_spec(cfg.model.name)
    assert cfg.model.name == "mask2former" and cfg.model.config["task"] == "semantic"
    spec.check_size(list(cfg.images.crop_size), cfg.model.config, what="images.crop_size")
    assert set(cfg.model.config) <= set(spec.defaults)
