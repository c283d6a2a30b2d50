"""Ordinary-image training: the shared image path (apply2d), augmentation, loss, config, and
``medseg train`` -> run folder -> ``predict-images`` -> ``evaluate-images`` on each 2D family."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.errors import ConfigError
from medseg.models.apply2d import check_mode, image_logits
from medseg.transforms.augment2d import RandomScaleCropFlip


# --------------------------------------------------------------------------- apply2d
def _pointwise_net(k: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, k, kernel_size=1).eval()


def test_slide_and_whole_agree_on_a_pointwise_network():
    net = _pointwise_net()
    x = torch.randn(2, 3, 50, 70)
    with torch.inference_mode():
        whole = image_logits(net, x, multiple=(16, 16), mode="whole")
        slide = image_logits(net, x, multiple=(16, 16), mode="slide", window=(32, 32), stride=(20, 20))
    assert whole.shape == slide.shape == (2, 3, 50, 70)
    torch.testing.assert_close(slide, whole, rtol=1e-5, atol=1e-5)


def test_slide_covers_every_pixel_and_averages_overlaps():
    calls = []

    class Ones(torch.nn.Module):
        def forward(self, t):
            calls.append(tuple(t.shape[-2:]))
            return torch.ones(t.shape[0], 1, *t.shape[-2:])

    out = image_logits(Ones(), torch.zeros(1, 3, 70, 50), multiple=(1, 1), mode="slide", window=(32, 32),
                       stride=(16, 16))
    assert torch.equal(out, torch.ones_like(out))  # averaged, not summed; nothing left at 0
    assert set(calls) == {(32, 32)} and len(calls) == 4 * 3  # rows 0,16,32,38; columns 0,16,18 (as mmseg counts)


def test_resize_mode_returns_the_input_size():
    net = _pointwise_net(2)
    with torch.inference_mode():
        out = image_logits(net, torch.randn(1, 3, 45, 61), multiple=(32, 32), mode="resize", size=(64, 64))
    assert out.shape == (1, 2, 45, 61)


@pytest.mark.parametrize("mode, window, size, message", [
    ("tiles", None, None, "not known"),
    ("slide", None, None, "needs a window"),
    ("slide", (48, 48), None, "multiple"),
    ("resize", None, None, "needs a size"),
])
def test_bad_inference_modes_are_config_errors(mode, window, size, message):
    with pytest.raises(ConfigError, match=message):
        check_mode(mode, window, size, (32, 32))


# --------------------------------------------------------------------------- augmentation and loss
def test_augmentation_never_makes_up_a_class_and_pads_with_ignore():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 40, 30)).astype(np.float32)
    mask = rng.integers(0, 3, (40, 30))
    aug = RandomScaleCropFlip(crop_size=(64, 48), scale_range=(0.5, 2.0), hflip=True, ignore_index=255)
    seen_pad = False
    for seed in range(12):
        img, lab = aug(image, mask, np.random.default_rng(seed))
        assert img.shape == (3, 64, 48) and lab.shape == (64, 48) and img.dtype == np.float32
        assert set(np.unique(lab).tolist()) <= {0, 1, 2, 255}
        seen_pad |= bool((lab == 255).any())
        assert np.all(img[:, lab == 255] == 0)  # padding: 0 in the normalised image
    assert seen_pad
    a = aug(image, mask, np.random.default_rng(5))
    b = aug(image, mask, np.random.default_rng(5))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_image_loss_ignores_the_ignore_index():
    from medseg.training.images import _image_loss_class

    loss_fn = _image_loss_class()(ignore_index=255, weights=None, lambda_ce=1.0, lambda_dice=1.0,
                                  include_background=False)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    changed = target.clone()
    changed[:, :4] = 255
    other = target.clone()
    other[:, :4] = (target[:, :4] + 1) % 3
    other_ignored = other.clone()
    other_ignored[:, :4] = 255
    # what lies under ignored pixels does not matter
    assert torch.allclose(loss_fn(logits, changed), loss_fn(logits, other_ignored))
    only_ignore = torch.full((2, 8, 8), 255)
    value = loss_fn(logits, only_ignore)
    value.backward()
    assert float(value.detach()) == 0.0  # a crop of padding only: no loss, and a finite (zero) gradient
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_auto_class_weights_are_median_frequency(tmp_path):
    from medseg.data.image_datasets import load_image_dataset
    from medseg.io.images import save_mask
    from medseg.training.images import class_weights

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    from PIL import Image

    mask = np.zeros((10, 10), np.uint8)
    mask[:, :2] = 1  # 20 px
    mask[:, 2:3] = 2  # 10 px ; background 70 px
    mask[0, 0] = 255
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    save_mask(tmp_path / "masks" / "a.png", mask)
    (tmp_path / "classes.json").write_text(json.dumps(["bg", "one", "two"]))
    ds = load_image_dataset(tmp_path)
    weights = class_weights("auto", ds.items, ds.labels)
    counts = np.array([70, 19, 10], float)
    freq = counts / counts.sum()
    assert weights == pytest.approx((np.median(freq) / freq).tolist(), rel=1e-5)
    with pytest.raises(ConfigError, match="3 non-negative weights"):
        class_weights([1.0, 2.0], ds.items, ds.labels)


# --------------------------------------------------------------------------- config
def test_labels_and_images_blocks_are_validated():
    from medseg.training.config import load_config

    cfg = load_config({"labels": {"names": ["a", "b"], "ignore_index": 0}, "images": {"crop_size": [64, 96]}})
    assert cfg.labels.names == ["a", "b"] and cfg.images.crop_size == [64, 96]
    with pytest.raises(ConfigError, match="labels.colour"):
        load_config({"labels": {"colour": 1}})
    with pytest.raises(ConfigError, match="images.crop_size"):
        load_config({"images": {"crop_size": [64]}})
    with pytest.raises(ConfigError, match="dataset.format"):
        load_config({"dataset": {"format": "kitti"}})
    with pytest.raises(ConfigError, match="train.max_minutes"):
        load_config({}, ["train.max_minutes=1e999"])


def test_yaml_alias_bomb_is_refused_at_once(tmp_path):
    from medseg.training.config import load_config

    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 500
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="bomb.yaml: YAML aliases expand"):
        load_config(path)
    assert time.monotonic() - t0 < 5


# --------------------------------------------------------------------------- medseg train on images
def _config(tmp_path: Path, root: Path, family: str, **train) -> dict:
    from medseg.models.registry import get_model_spec

    model_config = {**get_model_spec(family).tiny_config, "in_channels": 3, "out_channels": 3}
    return {
        "dataset": {"root": str(root)},
        "model": {"name": family, "config": model_config},
        "optimizer": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.0},
        "schedule": {"name": "constant"},
        "loss": {"name": "dice_ce"},
        "images": {"crop_size": [32, 32], "scale_range": [0.75, 1.25]},
        "train": {"max_epochs": 2, "iterations_per_epoch": 3, "batch_size": 2, "progress_bar": False,
                  "accelerator": "cpu", **train},
    }


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    from medseg.data.shapes import write_shapes_dataset

    return write_shapes_dataset(tmp_path_factory.mktemp("shapes"), n_train=6, n_val=3, size=(48, 64), seed=1)


@pytest.mark.parametrize("family", ["segformer", "deeplabv3plus", "unet2d"])
def test_train_each_family_then_predict_from_the_run_folder(family, shapes_root, tmp_path):
    from medseg.evaluation.images import evaluate_image_folder
    from medseg.inference.images import predict_image_folder
    from medseg.training import train

    run = train(_config(tmp_path, shapes_root, family), out_dir=tmp_path / "run")
    for name in ("config.yaml", "splits.json", "metrics.csv", "curves.png", "checkpoints/best.ckpt",
                 "checkpoints/last.ckpt", "export/model.json", "export/model.pt"):
        assert (run / name).is_file(), name
    info = json.loads((run / "export" / "model.json").read_text())
    assert info["labels"] == {"0": "background", "1": "disk", "2": "square"}
    assert info["dataset"]["format"] == "image_folder" and info["inference"]["image_mode"] == "whole"
    assert info["preprocessing"]["normalization"] == {"kind": "imagenet"}
    assert info["training"]["weights"] == "best" and info["training"]["global_step"] == 6
    splits = json.loads((run / "splits.json").read_text())
    assert splits[0]["val"] == ["shapes_006", "shapes_007", "shapes_008"]  # the layout's own splits.json
    # predict-images takes the run folder; val images -> masks -> evaluate-images
    val_images = tmp_path / "val_images"
    val_images.mkdir()
    for stem in splits[0]["val"]:
        shutil.copy(shapes_root / "images" / f"{stem}.png", val_images)
    records = predict_image_folder(run, val_images, tmp_path / "pred", progress=False)
    assert [r["status"] for r in records] == ["ok"] * 3
    ref = tmp_path / "ref"
    ref.mkdir()
    for stem in splits[0]["val"]:
        shutil.copy(shapes_root / "masks" / f"{stem}.png", ref)
    result = evaluate_image_folder(tmp_path / "pred", ref, tmp_path / "eval", num_classes=3, boundary=False)
    # the val mIoU of the best epoch (metrics.csv, model.json) is what evaluating the export's predictions gives
    best = info["training"]["best_val_miou"]
    import csv

    with open(run / "metrics.csv", newline="") as fh:
        logged = [float(r["val_miou"]) for r in csv.DictReader(fh) if r.get("val_miou")]
    assert len(logged) == 2 and max(logged) == pytest.approx(best, abs=1e-6)
    assert result.summary["dataset"]["miou"] == pytest.approx(best, abs=1e-6)


def test_train_resume_and_slide_prediction_cli(shapes_root, tmp_path):
    from typer.testing import CliRunner

    from medseg.cli.main import app
    from medseg.training import train

    cfg = _config(tmp_path, shapes_root, "segformer", max_epochs=1)
    cfg["images"]["inference"] = "slide"
    run = train(cfg, out_dir=tmp_path / "run")
    info = json.loads((run / "export" / "model.json").read_text())
    assert info["inference"]["image_mode"] == "slide" and info["inference"]["window"] == [32, 32]
    cfg["train"]["max_epochs"] = 2
    train(cfg, out_dir=run, resume=True)
    info = json.loads((run / "export" / "model.json").read_text())
    assert info["training"]["global_step"] == 6 and info["training"]["epochs"] == 2
    result = CliRunner().invoke(app, ["predict-images", "-m", str(run), "-i", str(shapes_root / "images"),
                                      "-o", str(tmp_path / "pred"), "--mode", "resize", "--size", "64x64"])
    assert result.exit_code == 0, result.output
    assert "9 image(s): 9 segmented" in result.output
    bad = CliRunner().invoke(app, ["predict-images", "-m", str(run), "-i", str(shapes_root / "images"),
                                   "-o", str(tmp_path / "pred2"), "--mode", "slide", "--window", "40x40"])
    assert isinstance(bad.exception, ConfigError) and "multiple" in str(bad.exception)  # main() -> exit 2


@pytest.mark.parametrize("fmt", ["image_folder", "cityscapes", "ade20k", "voc", "coco_stuff164k"])
def test_medseg_train_reads_each_layout(fmt, tmp_path):
    """``medseg train`` (the CLI) on a tiny dataset of each layout: classes from the layout, its own split."""
    from typer.testing import CliRunner

    from medseg.cli.main import app
    from tests.test_image_datasets import BUILDERS, EXPECTED

    root = BUILDERS[fmt](tmp_path / "data")
    classes, (_, n_val, _), _ = EXPECTED[fmt]
    cfg = _config(tmp_path, root, "segformer", max_steps=2, max_epochs=1, iterations_per_epoch=2)
    del cfg["model"]["config"]["out_channels"]  # from the layout's labels
    path = tmp_path / "pipeline.yaml"
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["train", str(path), "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, (result.output, result.exception)
    info = json.loads((tmp_path / "run" / "export" / "model.json").read_text())
    assert len(info["labels"]) == classes and info["model"]["config"]["out_channels"] == classes
    assert info["dataset"]["format"] == fmt and len(info["training"]["val_images"]) == n_val
    assert info["dataset"]["reduce_zero_label"] == (fmt == "ade20k")


def test_train_threads_hold_for_the_run_and_are_restored(shapes_root, tmp_path, monkeypatch):
    import os

    from medseg.training import engine
    from medseg.training.config import load_config

    seen = {}

    def route(cfg, run_dir, *, resume, t0):
        seen.update(threads=torch.get_num_threads(), omp=os.environ.get("OMP_NUM_THREADS"))
        raise RuntimeError("stop inside the run")

    monkeypatch.setattr(engine, "training_route", lambda cfg: route)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    with pytest.raises(RuntimeError, match="stop inside the run"):
        engine.train(_config(tmp_path, shapes_root, "unet2d", threads=1), out_dir=tmp_path / "run")
    assert seen == {"threads": 1, "omp": "1"}
    assert torch.get_num_threads() == 2 and "OMP_NUM_THREADS" not in os.environ  # restored after a failure too
    with pytest.raises(ConfigError, match="train.threads"):
        load_config(_config(tmp_path, shapes_root, "unet2d", threads=0))


@pytest.mark.slow
def test_ddp_two_cpu_processes_validate_like_evaluate_images(shapes_root, tmp_path):
    """Two ddp_spawn ranks each validate part of the images; the logged val mIoU (pixel counts summed over
    the ranks) is what evaluate-images gives on the export's predictions of every validation image."""
    import csv

    from medseg.evaluation.images import evaluate_image_folder
    from medseg.inference.images import predict_image_folder
    from medseg.training import train

    cfg = _config(tmp_path, shapes_root, "unet2d", devices=2, strategy="ddp_spawn", threads=1, max_epochs=1)
    run = train(cfg, out_dir=tmp_path / "run")
    info = json.loads((run / "export" / "model.json").read_text())
    with open(run / "metrics.csv", newline="") as fh:
        logged = [float(r["val_miou"]) for r in csv.DictReader(fh) if r.get("val_miou")]
    assert len(logged) == 1 and info["training"]["best_val_miou"] == pytest.approx(logged[0], abs=1e-6)
    stems = json.loads((run / "splits.json").read_text())[0]["val"]
    images, ref = tmp_path / "val_images", tmp_path / "ref"
    images.mkdir()
    ref.mkdir()
    for stem in stems:
        shutil.copy(shapes_root / "images" / f"{stem}.png", images)
        shutil.copy(shapes_root / "masks" / f"{stem}.png", ref)
    predict_image_folder(run, images, tmp_path / "pred", progress=False)
    result = evaluate_image_folder(tmp_path / "pred", ref, tmp_path / "eval", num_classes=3, boundary=False)
    assert result.summary["dataset"]["miou"] == pytest.approx(logged[0], abs=1e-6)


def test_lazily_built_lightning_classes_pickle_by_name():
    """ddp_spawn pickles the LightningModule (and its loss) to the ranks: the classes built on first use
    must be found again by module and name."""
    import pickle

    from medseg.training import images, instances

    for cls in (images._module_class(), images._image_loss_class(), instances._module_class()):
        assert pickle.loads(pickle.dumps(cls)) is cls
