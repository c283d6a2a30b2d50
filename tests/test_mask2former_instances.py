"""Mask2Former trained on instance datasets (``instance_masks``, ``coco_instances``) by ``medseg train``: one
target mask and class per object, validation by mask AP (pycocotools, the code of ``evaluate-images --task
instance``), an export of task ``instance`` that ``predict-images`` runs."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medseg.errors import InputError

pytest.importorskip("transformers")
pytest.importorskip("pycocotools")

SIZE = (64, 64)  # (at 32 x 32 crops the tiny model finds no object in 16 steps: AP 0)
PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def tiny() -> dict:
    from medseg.models.mask2former import TINY_CONFIG

    config = {**copy.deepcopy(TINY_CONFIG), "in_channels": 3, "task": "instance"}
    config.pop("out_channels")  # from the dataset's class ids
    return config


def config_file(tmp: Path, root: Path, fmt: str | None, **train) -> Path:
    """A tiny instance-training YAML for ``medseg train`` (score threshold 0: every query, AP ranks them)."""
    cfg = {"dataset": {"root": str(root), **({"format": fmt} if fmt else {})},
           "model": {"name": "mask2former", "config": tiny()},
           "optimizer": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.0}, "schedule": {"name": "constant"},
           "images": {"crop_size": [64, 64], "scale_range": [0.75, 1.25], "score_threshold": 0.0},
           "train": {"max_epochs": 4, "iterations_per_epoch": 4, "batch_size": 2, "progress_bar": False,
                     "accelerator": "cpu", "seed": 0, **train}}
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def medseg_train(config: Path, run: Path) -> Path:
    from typer.testing import CliRunner

    from medseg.cli.main import app

    result = CliRunner().invoke(app, ["train", str(config), "-o", str(run)])
    if result.exception is not None:
        raise result.exception
    assert result.exit_code == 0, result.output
    return run


def metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def masks_root(tmp_path_factory):
    from medseg.data.shapes import write_shapes_instances

    return write_shapes_instances(tmp_path_factory.mktemp("m2f_inst") / "data", n_train=6, n_val=2, size=SIZE,
                                  seed=1, max_objects=2)


@pytest.fixture(scope="module")
def masks_run(masks_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("m2f_inst_run")
    return medseg_train(config_file(tmp, masks_root, "instance_masks"), tmp / "run")


@pytest.fixture(scope="module")
def coco_root(masks_root, tmp_path_factory):
    """The shapes set as COCO (compressed RLE), squares renumbered to category 3 (ids are never remapped) and
    one crowd region per split."""
    from medseg.data.instance_convert import convert_instances

    root = tmp_path_factory.mktemp("m2f_coco") / "coco"
    convert_instances(masks_root, root, to="coco")
    for split in ("train", "val"):
        path = root / "annotations" / f"instances_{split}.json"
        data = json.loads(path.read_text())
        for ann in data["annotations"]:
            ann["category_id"] = 3 if ann["category_id"] == 2 else ann["category_id"]
        data["categories"] = [{"id": 1, "name": "disk"}, {"id": 3, "name": "square"}]
        first = data["images"][0]
        data["annotations"].append({"id": 999, "image_id": first["id"], "category_id": 1, "iscrowd": 1,
                                    "segmentation": [[0, 0, 12, 0, 12, 8, 0, 8]], "area": 96.0,
                                    "bbox": [0, 0, 12, 8]})
        path.write_text(json.dumps(data))
    return root


# --------------------------------------------------------------------------- pieces
def test_instance_map_and_augmentation_move_together():
    """The instance map is painted largest first (a smaller overlapping object stays), crowd objects are in
    none, and scale/crop/flip move image and map together (the map nearest: no id is made up)."""
    from medseg.data.instance_datasets import Instance
    from medseg.training.instances import instance_map
    from medseg.transforms.augment2d import RandomScaleCropFlip

    big, small, crowd = (np.zeros((20, 24), bool) for _ in range(3))
    big[2:18, 2:20], small[5:9, 5:9], crowd[0:3, 20:24] = True, True, True
    ids, classes = instance_map([Instance(7, 2, small), Instance(3, 1, big), Instance(9, 1, crowd, crowd=True)],
                                (20, 24))
    assert classes.tolist() == [0, 1, 2] and np.all(ids[small] == 2) and np.all(ids[crowd] == 0)
    assert int((ids == 1).sum()) == int(big.sum() - small.sum())
    image = np.stack([ids.astype(np.float32)] * 3)
    for scale, seed in (((1.0, 1.0), 0), ((1.0, 1.0), 1), ((1.6, 1.6), 2), ((0.5, 0.5), 3)):
        aug = RandomScaleCropFlip(crop_size=(16, 16), scale_range=scale, hflip=True, ignore_index=0)
        img, lab = aug(image, ids, np.random.default_rng(seed))
        assert lab.shape == (16, 16) and set(np.unique(lab)) <= {0, 1, 2}
        if scale == (1.0, 1.0):
            np.testing.assert_array_equal(img[0], lab.astype(np.float32))


def test_instance_loss_takes_one_target_per_object_and_empty_crops():
    from medseg.models import create_model

    torch.manual_seed(0)
    net = create_model("mask2former", **tiny(), out_channels=3)
    x = torch.randn(2, 3, 32, 32)
    ids = torch.zeros(2, 32, 32, dtype=torch.long)
    ids[0, 2:10, 2:10], ids[0, 20:30, 20:30] = 1, 3  # id 2 was cropped away
    loss = net.instance_loss(x, ids, [torch.tensor([0, 1, 2, 2]), torch.tensor([0])])
    loss.backward()
    assert torch.isfinite(loss) and loss > 0


def test_routing_by_dataset_format(masks_root, coco_root, tmp_path):
    from medseg.training.config import load_config
    from medseg.training.engine import train_volumes, training_route
    from medseg.training.images import train_images
    from medseg.training.instances import train_instances

    def route(root, fmt=None):
        return training_route(load_config({"dataset": {"root": str(root), "format": fmt},
                                           "model": {"name": "mask2former", "config": tiny()}}))

    assert route(masks_root, "instance_masks") is train_instances
    assert route(coco_root) is train_instances  # detected: annotations/instances_<split>.json
    assert route(masks_root) is train_images  # images/ + masks/ also reads as a semantic image_folder
    assert route(coco_root / "annotations" / "instances_train.json", "coco_instances") is train_instances
    manifest = tmp_path / "cases.json"  # a JSON file is detected as nothing: it may be a medical manifest
    manifest.write_text(json.dumps({"cases": []}))
    assert route(manifest) is train_volumes


# --------------------------------------------------------------------------- medseg train
def test_instance_masks_run_trains_validates_and_exports(masks_run):
    run = masks_run
    rows = metrics(run)
    losses = [float(r["train_loss_epoch"]) for r in rows if r.get("train_loss_epoch")]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    for column in ("val_map", "val_map50", "val_map75", "val_mar100"):
        assert len([r for r in rows if r.get(column)]) == 4, column
    for name in ("curves.png", "checkpoints/best.ckpt", "export/model.pt", "splits.json"):
        assert (run / name).is_file(), name
    info = json.loads((run / "export" / "model.json").read_text())
    assert info["inference"] == {"task": "instance", "threshold": 0.0}
    assert info["model"]["config"]["task"] == "instance" and info["model"]["config"]["out_channels"] == 3
    assert info["labels"] == {"0": "background", "1": "disk", "2": "square"}
    assert info["dataset"] == {"format": "instance_masks"} and info["training"]["weights"] == "best"
    logged = [float(r["val_map"]) for r in rows if r.get("val_map")]
    assert info["training"]["best_val_map"] == pytest.approx(max(logged), abs=1e-6)


def val_only(root: Path, stems: list[str], out: Path) -> Path:
    """An instance_masks folder of the validation images only (the reference of evaluate-images)."""
    for folder in ("images", "masks", "instance_classes"):
        (out / folder).mkdir(parents=True)
        for stem in stems:
            for f in (root / folder).glob(f"{stem}.*"):
                shutil.copy(f, out / folder)
    shutil.copy(root / "classes.json", out)
    return out


def test_val_map_is_evaluate_images_of_the_exports_predictions(masks_run, masks_root, tmp_path):
    """predict-images from the run folder, then evaluate-images --task instance on the validation images: the
    best val_map / val_map50 logged are what it gives; the reloaded export segments identically."""
    from typer.testing import CliRunner

    from medseg.cli.main import app
    from medseg.data.instance_datasets import read_instance_prediction
    from medseg.io.images import read_image
    from medseg.models.apply2d import image_tensor
    from medseg.models.export import load_exported
    from medseg.models.mask2former import segment_processor, segments

    run = masks_run
    stems = json.loads((run / "splits.json").read_text())[0]["val"]
    assert stems == ["objects_006", "objects_007"]
    ref = val_only(masks_root, stems, tmp_path / "ref")
    result = CliRunner().invoke(app, ["predict-images", "-m", str(run), "-i", str(ref / "images"),
                                      "-o", str(tmp_path / "pred")])
    assert result.exit_code == 0, result.output
    for stem in stems:
        for suffix in ("_instances.png", "_instances.json", ".png"):
            assert (tmp_path / "pred" / f"{stem}{suffix}").is_file()
    result = CliRunner().invoke(app, ["evaluate-images", "--task", "instance", "--pred", str(tmp_path / "pred"),
                                      "--ref", str(ref), "-o", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    coco = json.loads((tmp_path / "eval" / "summary.json").read_text())["coco"]
    info = json.loads((run / "export" / "model.json").read_text())
    best = [r for r in metrics(run) if r.get("val_map") and float(r["val_map"]) == info["training"]["best_val_map"]]
    assert float(best[0]["val_map"]) > 0  # found objects: the comparison below is not 0 == 0
    assert coco["AP"] == pytest.approx(float(best[0]["val_map"]), abs=1e-6)  # Lightning logs float32
    assert coco["AP50"] == pytest.approx(float(best[0]["val_map50"]), abs=1e-6)  # Lightning logs float32
    # the export reloads and gives the same segments as the files predict-images wrote
    net, info = load_exported(run)
    for stem in stems:
        chw = image_tensor(read_image(ref / "images" / f"{stem}.png"), info["preprocessing"]["normalization"], 3)
        ids, table = segments(net, segment_processor(net.num_classes), chw, task="instance", threshold=0.0,
                              classes=[1, 2])
        written, written_table = read_instance_prediction(tmp_path / "pred" / f"{stem}_instances.png")
        np.testing.assert_array_equal(ids, written)
        assert {e["id"]: (e["class"], e["score"]) for e in table} == written_table


def test_coco_instances_run_keeps_category_ids_and_scores_like_evaluate_images(coco_root, tmp_path):
    """A COCO set (detected, no format given) with category ids 1 and 3 and crowd regions: out_channels 4, the
    labels COCO's; the logged AP is evaluate-images' against the val JSON (crowd = ignore)."""
    from medseg.evaluation.instances import evaluate_instances
    from medseg.inference.images import predict_image_folder

    run = medseg_train(config_file(tmp_path, coco_root, None), tmp_path / "run")
    rows = metrics(run)
    assert [c for c in ("val_map", "val_map50", "val_ap_square") if not any(r.get(c) for r in rows)] == []
    assert not any(r.get("val_ap_disk") for r in rows)  # the val images' only disk is a crowd region: no AP
    info = json.loads((run / "export" / "model.json").read_text())
    assert info["labels"] == {"0": "background", "1": "disk", "3": "square"}
    assert info["model"]["config"]["out_channels"] == 4 and info["dataset"]["format"] == "coco_instances"
    val_json = coco_root / "annotations" / "instances_val.json"
    records = predict_image_folder(run, coco_root / "images" / "val", tmp_path / "pred")
    assert [r["status"] for r in records] == ["ok", "ok"]
    for path in (tmp_path / "pred").glob("*_instances.json"):
        assert {e["class"] for e in json.loads(path.read_text())["instances"]} <= {1, 3}
    result = evaluate_instances(tmp_path / "pred", val_json, tmp_path / "eval", boundary=False)
    assert result.summary["overall"]["ref_crowd"] == 1
    assert info["training"]["best_val_map"] > 0  # found objects: the comparison below is not 0 == 0
    assert result.summary["coco"]["AP"] == pytest.approx(info["training"]["best_val_map"], abs=1e-6)  # Lightning logs float32


def test_an_instance_without_a_class_is_one_input_error_naming_the_file(masks_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(masks_root, root)
    table = root / "instance_classes" / "objects_003.json"
    classes = json.loads(table.read_text())
    classes.pop(sorted(classes)[0])
    table.write_text(json.dumps(classes))
    with pytest.raises(InputError) as err:
        medseg_train(config_file(tmp_path, root, "instance_masks"), tmp_path / "run")
    message = str(err.value)
    assert message.count(str(table)) == 1 and "have no class" in message and "1 problem(s)" in message
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("name", ["mask2former_instances.yaml", "mask2former_instances_cpu.yaml"])
def test_instance_pipelines_load_and_build(name):
    from medseg.models.registry import get_model_spec
    from medseg.training.config import load_config

    cfg = load_config(PIPELINES / name, [])
    spec = get_model_spec(cfg.model.name)
    assert cfg.model.name == "mask2former" and cfg.model.config["task"] == "instance"
    assert cfg.dataset.format in ("instance_masks", "coco_instances")
    spec.check_size(list(cfg.images.crop_size), cfg.model.config, what="images.crop_size")
    assert set(cfg.model.config) <= set(spec.defaults)
