"""Mask2Former trained on a ``coco_panoptic`` dataset by ``medseg train``: one target per thing instance and one
per stuff class present (crowd in none), validation by PQ (the code of ``evaluate-images --task panoptic``), an
export of task ``panoptic`` that ``predict-images`` runs; and the synthetic COCO panoptic writer."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medseg.errors import ConfigError, InputError

pytest.importorskip("transformers")
from tests.test_mask2former_instances import medseg_train, metrics  # noqa: E402  (the same CLI trip and CSV reader)

SIZE = (64, 64)
PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
NAMES = {1: "disk", 2: "square", 3: "sky", 4: "ground"}


def tiny(**extra) -> dict:
    from medseg.models.mask2former import TINY_CONFIG

    config = {**copy.deepcopy(TINY_CONFIG), "in_channels": 3, **extra}
    config.pop("out_channels")  # from the dataset's category ids
    return config


def config_file(tmp: Path, root: Path, fmt: str | None = None, model: dict | None = None) -> Path:
    """A tiny panoptic-training YAML (40 steps: fewer find no segment at IoU > 0.5, PQ 0)."""
    cfg = {"dataset": {"root": str(root), **({"format": fmt} if fmt else {})},
           "model": {"name": "mask2former", "config": model or tiny()},
           "optimizer": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.0}, "schedule": {"name": "constant"},
           "images": {"crop_size": [64, 64], "scale_range": [0.75, 1.25], "score_threshold": 0.0},
           "train": {"max_epochs": 10, "iterations_per_epoch": 4, "batch_size": 2, "progress_bar": False,
                     "accelerator": "cpu", "seed": 0}}
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def png_ids(path: Path) -> np.ndarray:
    """panopticapi's rgb2id, written out here: R + 256 G + 256^2 B."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


@pytest.fixture(scope="module")
def pan_root(tmp_path_factory):
    """The shapes panoptic set with one thing segment of a training and of a validation image made crowd."""
    from medseg.data.shapes_panoptic import write_shapes_panoptic

    root = write_shapes_panoptic(tmp_path_factory.mktemp("m2f_pan") / "data", n_train=6, n_val=2, size=SIZE,
                                 seed=1, max_objects=2)
    for split in ("train", "val"):
        path = root / "annotations" / f"panoptic_{split}.json"
        data = json.loads(path.read_text())
        segment = next(s for s in data["annotations"][0]["segments_info"] if s["category_id"] in (1, 2))
        segment["iscrowd"] = 1
        path.write_text(json.dumps(data))
    return root


@pytest.fixture(scope="module")
def pan_run(pan_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("m2f_pan_run")
    return medseg_train(config_file(tmp, pan_root), tmp / "run")


# --------------------------------------------------------------------------- the dataset writer
def test_shapes_panoptic_is_a_coco_panoptic_layout(tmp_path):
    from medseg.data.instance_datasets import load_instance_dataset, validate_instance_dataset
    from medseg.data.shapes_panoptic import write_shapes_panoptic

    root = write_shapes_panoptic(tmp_path / "pan", n_train=12, n_val=4, size=(48, 64), seed=3)
    ds = load_instance_dataset(root)
    validate_instance_dataset(ds)
    assert ds.format == "coco_panoptic" and ds.class_names == NAMES and ds.things == {1, 2}
    assert [len(ds.split(s)) for s in ("train", "val")] == [12, 4]
    single_stuff, high_ids = 0, 0
    for split in ("train", "val"):
        data = json.loads((root / "annotations" / f"panoptic_{split}.json").read_text())
        assert [(c["id"], c["isthing"]) for c in data["categories"]] == [(1, 1), (2, 1), (3, 0), (4, 0)]
        for ann in data["annotations"]:
            ids = png_ids(root / "annotations" / f"panoptic_{split}" / ann["file_name"])
            listed = {s["id"]: s for s in ann["segments_info"]}
            assert set(np.unique(ids).tolist()) == set(listed)  # no VOID, every segment in the PNG
            for s in listed.values():
                mask = ids == s["id"]
                x, y, w, h = s["bbox"]
                assert s["area"] == mask.sum() and mask[y:y + h, x:x + w].sum() == s["area"]
            stuff = [s["category_id"] for s in listed.values() if s["category_id"] in (3, 4)]
            assert len(stuff) == len(set(stuff)) >= 1  # one segment per stuff class present
            single_stuff += len(stuff) == 1
            high_ids += any(i >= 256 * 256 for i in listed)
            assert (root / "images" / split / ann["file_name"]).is_file()
    assert single_stuff >= 1 and high_ids >= 1  # an image with one stuff class; the blue channel carries ids
    item = ds.split("val")[0]  # the reader (medseg's rgb_to_id) agrees with the decoding above
    ids = png_ids(item.annotation)
    for inst in item.read():
        np.testing.assert_array_equal(inst.mask, ids == inst.id)


# --------------------------------------------------------------------------- targets
def test_panoptic_targets_one_per_thing_one_per_stuff_class_crowd_in_none():
    from medseg.data.instance_datasets import Instance
    from medseg.training.instances import instance_map

    masks = {k: np.zeros((10, 12), bool) for k in ("sky_a", "sky_b", "ground", "disk1", "disk2", "crowd")}
    masks["sky_a"][0:3], masks["sky_b"][3:4], masks["ground"][4:10] = True, True, True
    masks["disk1"][5:7, 1:3], masks["disk2"][5:7, 6:8], masks["crowd"][8:10, 9:12] = True, True, True
    for k in ("disk1", "disk2", "crowd"):
        masks["ground"] &= ~masks[k]
    instances = [Instance(11, 3, masks["sky_a"]), Instance(12, 3, masks["sky_b"]), Instance(13, 4, masks["ground"]),
                 Instance(21, 1, masks["disk1"]), Instance(22, 1, masks["disk2"]),
                 Instance(23, 2, masks["crowd"], crowd=True)]
    ids, classes = instance_map(instances, (10, 12), frozenset({3, 4}))
    targets = {n: classes[n] for n in np.unique(ids).tolist() if n}
    assert sorted(targets.values()) == [1, 1, 3, 4]  # two disks, one sky (two segments merged), one ground
    sky = next(n for n, c in targets.items() if c == 3)
    np.testing.assert_array_equal(ids == sky, masks["sky_a"] | masks["sky_b"])
    assert np.all(ids[masks["crowd"]] == 0)
    # without stuff classes (an instance dataset) every segment is its own target, as before
    ids, classes = instance_map(instances, (10, 12))
    assert sorted(classes[1:].tolist()) == [1, 1, 3, 3, 4]


def test_routing_and_the_task_of_a_panoptic_dataset(pan_root, tmp_path):
    from medseg.training.config import load_config
    from medseg.training.engine import training_route
    from medseg.training.instances import train_instances

    def route(root, fmt=None):
        return training_route(load_config({"dataset": {"root": str(root), "format": fmt},
                                           "model": {"name": "mask2former", "config": tiny()}}))

    assert route(pan_root) is train_instances  # detected: annotations/panoptic_<split>.json
    assert route(pan_root / "annotations" / "panoptic_train.json", "coco_panoptic") is train_instances
    with pytest.raises(ConfigError) as err:
        medseg_train(config_file(tmp_path, pan_root, model=tiny(task="instance")), tmp_path / "run")
    assert str(err.value).startswith("model.config.task 'instance': a coco_panoptic dataset trains task 'panoptic'")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_segment_missing_from_segments_info_is_one_input_error_naming_the_png(pan_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(pan_root, root)
    png = root / "annotations" / "panoptic_train" / "scene_003.png"
    rgb = np.asarray(Image.open(png).convert("RGB")).copy()
    rgb[0:4, 0:4] = (7, 0, 0)  # segment id 7, in no segments_info
    Image.fromarray(rgb).save(png)
    with pytest.raises(InputError) as err:
        medseg_train(config_file(tmp_path, root), tmp_path / "run")
    message = str(err.value)
    assert message.count(str(png)) == 1 and "segment id(s) [7]" in message and "1 problem(s)" in message
    assert not (tmp_path / "run" / "checkpoints").exists()


# --------------------------------------------------------------------------- medseg train
def test_panoptic_run_trains_validates_by_pq_and_exports(pan_run):
    rows = metrics(pan_run)
    losses = [float(r["train_loss_epoch"]) for r in rows if r.get("train_loss_epoch")]
    assert len(losses) == 10 and losses[-1] < losses[0], losses
    for column in ("val_pq", "val_sq", "val_rq"):
        assert len([r for r in rows if r.get(column)]) == 10, column
    assert any(r.get("val_pq_things") for r in rows) and any(r.get("val_pq_stuff") for r in rows)
    assert any(r.get("val_pq_sky") for r in rows) and not any(r.get("val_map") for r in rows)
    for name in ("curves.png", "checkpoints/best.ckpt", "export/model.pt", "splits.json"):
        assert (pan_run / name).is_file(), name
    info = json.loads((pan_run / "export" / "model.json").read_text())
    assert info["inference"] == {"task": "panoptic", "threshold": 0.0}
    assert info["model"]["config"]["task"] == "panoptic" and info["model"]["config"]["out_channels"] == 5
    assert info["labels"] == {"0": "background", **{str(k): v for k, v in NAMES.items()}}
    assert info["dataset"] == {"format": "coco_panoptic", "things": [1, 2]}
    logged = [float(r["val_pq"]) for r in rows if r.get("val_pq")]
    assert info["training"]["best_val_pq"] == pytest.approx(max(logged), abs=1e-6)


def test_val_pq_is_evaluate_images_of_the_exports_predictions(pan_run, pan_root, tmp_path):
    """predict-images from the run folder on the validation images, then evaluate-images --task panoptic against
    the validation JSON (crowd and all): the best epoch's logged PQ, SQ, RQ, things, stuff and per-class PQ are
    what it gives; the reloaded export segments as the files predict-images wrote."""
    from typer.testing import CliRunner

    from medseg.cli.main import app
    from medseg.data.instance_datasets import read_instance_prediction
    from medseg.io.images import read_image
    from medseg.models.apply2d import image_tensor
    from medseg.models.export import load_exported
    from medseg.models.mask2former import segment_processor, segments

    stems = json.loads((pan_run / "splits.json").read_text())[0]["val"]
    assert stems == ["scene_006", "scene_007"]
    images, pred = pan_root / "images" / "val", tmp_path / "pred"
    result = CliRunner().invoke(app, ["predict-images", "-m", str(pan_run), "-i", str(images), "-o", str(pred)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["evaluate-images", "--task", "panoptic", "--pred", str(pred), "--ref",
                                      str(pan_root / "annotations" / "panoptic_val.json"), "-o", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    info = json.loads((pan_run / "export" / "model.json").read_text())
    best = [r for r in metrics(pan_run) if r.get("val_pq") and float(r["val_pq"]) == info["training"]["best_val_pq"]]
    assert float(best[0]["val_pq"]) > 0  # found segments: the comparison below is not 0 == 0
    expected = {"val_pq": summary["all"]["pq"], "val_sq": summary["all"]["sq"], "val_rq": summary["all"]["rq"],
                "val_pq_things": summary["things"]["pq"], "val_pq_stuff": summary["stuff"]["pq"],
                **{f"val_pq_{c['name']}": c["pq"] for c in summary["classes"].values()}}
    for column, value in expected.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            assert not best[0].get(column), column  # undefined: not logged
        else:
            assert float(best[0][column]) == pytest.approx(value, abs=1e-6), column  # Lightning logs float32
    net, info = load_exported(pan_run)
    for stem in stems:
        chw = image_tensor(read_image(images / f"{stem}.png"), info["preprocessing"]["normalization"], 3)
        ids, table = segments(net, segment_processor(net.num_classes), chw, task="panoptic", threshold=0.0,
                              classes=sorted(NAMES), stuff=sorted(set(NAMES) - {1, 2}))
        written, written_table = read_instance_prediction(pred / f"{stem}_instances.png")
        np.testing.assert_array_equal(ids, written)
        assert {e["id"]: (e["class"], e["score"]) for e in table} == written_table


class _TwoSkiesNet:
    """A stand-in Mask2Former whose 3 queries are certain: sky (3) on the left half, sky on the right half,
    a disk (1) in the top-left corner; masks at a quarter of the 64 x 64 input, as the model gives them."""

    num_classes = 5

    def model(self, pixel_values):
        import types

        import torch

        classes = torch.full((1, 3, 6), -20.0)
        for q, c in enumerate((3, 3, 1)):
            classes[0, q, c] = 20.0
        masks = torch.full((1, 3, 16, 16), -20.0)
        masks[0, 0, :, :8] = 20.0
        masks[0, 1, :, 8:] = 20.0
        masks[0, 2, :4, :4] = 20.0
        masks[0, 0, :4, :4] = masks[0, 1, :4, :4] = -20.0
        return types.SimpleNamespace(class_queries_logits=classes, masks_queries_logits=masks)


def test_stuff_queries_are_fused_into_one_segment_per_class():
    from medseg.models.mask2former import segment_processor, segments

    chw = np.zeros((3, 64, 64), np.float32)
    net = _TwoSkiesNet()
    split_ids, split = segments(net, segment_processor(5), chw, task="panoptic", threshold=0.5)
    fused_ids, fused = segments(net, segment_processor(5), chw, task="panoptic", threshold=0.5, stuff=[3, 4])
    assert sorted(e["class"] for e in split) == [1, 3, 3]  # without stuff classes: each query its own segment
    assert sorted(e["class"] for e in fused) == [1, 3]
    sky = next(e["id"] for e in fused if e["class"] == 3)
    disk = next(e["id"] for e in fused if e["class"] == 1)
    assert fused_ids[40, 10] == fused_ids[40, 50] == sky and (fused_ids[2:14, 2:14] == disk).all()
    assert split_ids[40, 10] != split_ids[40, 50] and set(np.unique(fused_ids).tolist()) == {sky, disk}
    np.testing.assert_array_equal(fused_ids > 0, split_ids > 0)


def test_predict_images_fuses_the_exports_stuff_classes(pan_run, pan_root, tmp_path, monkeypatch):
    """predict-images takes the stuff classes from the export: its labels that are not dataset.things."""
    import medseg.inference.mask2former as m2f_inference

    seen = []
    real = m2f_inference.segments

    def spy(*args, **kwargs):
        seen.append(kwargs.get("stuff"))
        return real(*args, **kwargs)

    monkeypatch.setattr(m2f_inference, "segments", spy)
    records = m2f_inference.predict_mask2former_folder(pan_run / "export", pan_root / "images" / "val",
                                                       tmp_path / "pred")
    assert len(records) == 2 and seen == [[3, 4], [3, 4]]


@pytest.mark.parametrize("name", ["mask2former_panoptic.yaml", "mask2former_panoptic_cpu.yaml"])
def test_panoptic_pipelines_load_and_build(name):
    from medseg.models.registry import get_model_spec
    from medseg.training.config import load_config

    cfg = load_config(PIPELINES / name, [])
    spec = get_model_spec(cfg.model.name)
    assert cfg.model.name == "mask2former" and cfg.model.config["task"] == "panoptic"
    assert cfg.dataset.format == "coco_panoptic"
    spec.check_size(list(cfg.images.crop_size), cfg.model.config, what="images.crop_size")
    assert set(cfg.model.config) <= set(spec.defaults)
