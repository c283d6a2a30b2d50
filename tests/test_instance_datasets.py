"""Instance datasets (instance_masks, coco_instances, coco_panoptic, yolo_seg) and ``convert-images --from``:
detection, decoding checked against pycocotools, round trips, counted losses, one InputError per bad file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from typer.testing import CliRunner

from medseg.cli.main import app
from medseg.data.instance_convert import COCO80_IDS, convert_instances, mask_polygons, write_instance_png
from medseg.data.instance_datasets import (
    INSTANCE_FORMATS,
    detect_instance_format,
    load_instance_dataset,
    polygons_to_mask,
    read_instances,
    validate_instance_dataset,
)
from medseg.errors import ConfigError, InputError
from medseg.io.images import read_mask

H, W = 48, 64
YY, XX = np.mgrid[:H, :W]


def _ids(seed: int) -> np.ndarray:
    """Instance 1 a box, 2 an ellipse with a 4x4 hole, 3 in two parts."""
    ids = np.zeros((H, W), np.int64)
    ids[5:20, 5 + seed: 25 + seed] = 1
    ids[((YY - 30) / 10) ** 2 + ((XX - 40) / 15) ** 2 <= 1] = 2
    ids[29:33, 38:42] = 0
    ids[2:6, 50:60] = 3
    ids[40:46, 2:10] = 3
    return ids


def _instance_masks(root: Path, crowd: bool = False) -> Path:
    for sub in ("images", "masks", "instance_classes"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for n in range(2):
        Image.fromarray(np.full((H, W, 3), 40 * n, np.uint8)).save(root / "images" / f"im{n}.png")
        write_instance_png(root / "masks" / f"im{n}.png", _ids(n))
        third = {"class": 1, "crowd": True} if crowd and n == 1 else 1
        (root / "instance_classes" / f"im{n}.json").write_text(json.dumps({"1": 1, "2": 2, "3": third}))
    (root / "classes.json").write_text(json.dumps({"1": "cat", "2": "dog"}))
    (root / "splits.json").write_text(json.dumps({"train": ["im0"], "val": ["im1"]}))
    return root


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_instance_masks_read_and_detected(tmp_path: Path) -> None:
    root = _instance_masks(tmp_path / "ds", crowd=True)
    assert detect_instance_format(root) == "instance_masks"
    ds = load_instance_dataset(root)
    assert ds.format == "instance_masks" and ds.class_names == {1: "cat", 2: "dog"}
    assert [i.stem for i in ds.split("val")] == ["im1"] and ds.items[0].size == (H, W)
    inst = read_instances(ds.items[1])
    assert [(i.id, i.class_id, i.crowd) for i in inst] == [(1, 1, False), (2, 2, False), (3, 1, True)]
    assert np.array_equal(inst[1].mask, _ids(1) == 2) and inst[0].mask.dtype == bool
    assert set(INSTANCE_FORMATS) == {"instance_masks", "coco_instances", "coco_panoptic", "yolo_seg"}


def test_instance_masks_to_coco_and_back_is_identical(tmp_path: Path) -> None:
    root = _instance_masks(tmp_path / "ds", crowd=True)
    result = convert_instances(root, tmp_path / "coco", source="instance_masks", to="coco")
    assert result.losses == {} and result.written == 6
    assert detect_instance_format(tmp_path / "coco") == "coco_instances"
    # pycocotools reads what we wrote to the same masks
    gt = COCO(str(tmp_path / "coco" / "annotations" / "instances_val.json"))
    masks = [gt.annToMask(a).astype(bool) for a in gt.loadAnns(gt.getAnnIds(imgIds=[1]))]
    assert all(np.array_equal(m, _ids(1) == k) for k, m in enumerate(masks, 1))
    assert [a["iscrowd"] for a in gt.loadAnns(gt.getAnnIds())] == [0, 0, 1]
    convert_instances(tmp_path / "coco", tmp_path / "back", source="coco", to="instance_masks")
    for n in range(2):
        assert np.array_equal(read_mask(tmp_path / "back" / "masks" / f"im{n}.png"), _ids(n))
    back = load_instance_dataset(tmp_path / "back")
    assert [(i.class_id, i.crowd) for i in back.items[1].read()] == [(1, False), (2, False), (1, True)]
    assert back.class_names == {1: "cat", 2: "dog"} and [i.split for i in back.items] == ["train", "val"]


def test_yolo_round_trip_iou_and_counted_losses(tmp_path: Path) -> None:
    root = _instance_masks(tmp_path / "ds", crowd=True)
    result = convert_instances(root, tmp_path / "yolo", to="yolo_seg")
    # 2 holes (one per image); instance 3: in im0 two parts (largest kept), in im1 a crowd (dropped)
    assert result.losses == {"holes_filled": 2, "parts_dropped": 1, "crowd_dropped": 1}
    assert [row["image"] for row in result.per_image] == ["im0", "im1"]
    report = json.loads((tmp_path / "yolo" / "conversion.json").read_text())
    assert report["losses"] == result.losses
    assert detect_instance_format(tmp_path / "yolo") == "yolo_seg"
    line = (tmp_path / "yolo" / "labels" / "train" / "im0.txt").read_text().splitlines()[0].split()
    assert line[0] == "0" and len(line) % 2 == 1
    ds = load_instance_dataset(tmp_path / "yolo")
    assert ds.class_names == {1: "cat", 2: "dog"}
    for item in ds.items:
        ref = _ids(int(item.stem[-1]))
        got = item.read()
        assert [i.class_id for i in got] == [1, 2, 1][: len(got)]
        assert _iou(got[0].mask, ref == 1) == 1.0  # a box: exact
        assert _iou(got[1].mask, ref == 2) >= 0.9  # the ellipse, hole filled (16 px)
        assert _iou(got[1].mask, (ref == 2) | ((YY >= 29) & (YY < 33) & (XX >= 38) & (XX < 42))) == 1.0
    back = convert_instances(tmp_path / "yolo", tmp_path / "back", source="yolo_seg", to="instance_masks")
    assert back.losses == {} and back.instances == 5
    assert np.array_equal(read_mask(tmp_path / "back" / "masks" / "im0.png") == 1, _ids(0) == 1)


def test_mask_polygons_rasterise_back_and_split_parts(tmp_path: Path) -> None:
    for mask in (_ids(0) == 1, ((YY - 20) / 7) ** 2 + ((XX - 30) / 13) ** 2 <= 1):
        polys, holes = mask_polygons(mask)
        assert holes == 0 and _iou(polygons_to_mask(polys, H, W), mask) == 1.0
    polys, _ = mask_polygons(_ids(0) == 3)
    assert len(polys) == 2 and polygons_to_mask(polys[:1], H, W).sum() == 48  # the 6x8 part is the largest
    result = convert_instances(_instance_masks(tmp_path / "ds"), tmp_path / "y", to="yolo_seg", multipart="split")
    assert result.losses["parts_split"] == 2 and result.written == 8


def test_semantic_target_and_crowd_as_ignore(tmp_path: Path) -> None:
    root = _instance_masks(tmp_path / "ds", crowd=True)
    result = convert_instances(root, tmp_path / "sem", to="semantic")
    assert result.losses == {"crowd_pixels_ignored": int((_ids(1) == 3).sum())}
    labels = read_mask(tmp_path / "sem" / "masks" / "im1.png")
    expected = np.select([_ids(1) == 1, _ids(1) == 2, _ids(1) == 3], [1, 2, 255], 0)
    assert np.array_equal(labels, expected)
    from medseg.data.image_datasets import load_image_dataset

    ds = load_image_dataset(tmp_path / "sem")
    assert ds.format == "image_folder" and [i.split for i in ds.items] == ["train", "val"]


def _coco(tmp_path: Path, *, missing: bool = False) -> Path:
    root = tmp_path / "cocods"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "val2017" / "000001.jpg")
    poly = [[10, 10, 30, 10, 30, 25, 10, 25]]
    rle = mask_utils.encode(np.asfortranarray((_ids(0) == 2).astype(np.uint8)))
    anns = [{"id": 7, "image_id": 1, "category_id": 18, "segmentation": poly, "iscrowd": 0, "area": 300.0},
            {"id": 8, "image_id": 1, "category_id": 90, "iscrowd": 0,
             "segmentation": {"size": [H, W], "counts": rle["counts"].decode()}},
            {"id": 9, "image_id": 1, "category_id": 1, "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": [0, 10, H * W - 10]}}]  # uncompressed, as COCO's crowds
    images = [{"id": 1, "file_name": "000001.jpg", "height": H, "width": W}]
    if missing:
        images.append({"id": 2, "file_name": "000002.jpg", "height": H, "width": W})
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps({
        "images": images, "annotations": anns,
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 90, "name": "toothbrush"}]}))
    return root


def test_coco_polygons_rle_and_crowd_decode_as_pycocotools_does(tmp_path: Path) -> None:
    root = _coco(tmp_path)
    assert detect_instance_format(root) == "coco_instances"
    ds = load_instance_dataset(root)
    item = ds.items[0]
    assert item.split == "val" and item.image.name == "000001.jpg" and ds.class_names[90] == "toothbrush"
    gt = COCO(str(root / "annotations" / "instances_val2017.json"))
    got = item.read()
    assert [(i.id, i.class_id, i.crowd) for i in got] == [(7, 18, False), (8, 90, False), (9, 1, True)]
    for inst, ann in zip(got, gt.loadAnns([7, 8, 9])):
        assert np.array_equal(inst.mask, gt.annToMask(ann).astype(bool))
    # ids kept (never 91 -> 80 unless asked); asked: 18 -> 17, 90 -> 80
    kept = convert_instances(root, tmp_path / "kept", to="yolo_seg")
    classes = [line.split()[0] for line in (tmp_path / "kept" / "labels" / "val" / "000001.txt").read_text().split("\n")
               if line]
    assert classes == ["17", "89"] and kept.losses["crowd_dropped"] == 1 and kept.losses["unused_class_ids"] == 87
    remapped = convert_instances(root, tmp_path / "r80", to="instance_masks", coco80=True)
    assert sorted(remapped.class_names) == [1, COCO80_IDS.index(18) + 1, 80]


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"instances_val2017\.json: 1 of 2 image\(s\) missing .*000002\.jpg"):
        load_instance_dataset(_coco(tmp_path, missing=True))
    yolo = tmp_path / "yolo"
    convert_instances(_instance_masks(tmp_path / "ds"), yolo, to="yolo_seg")
    label = yolo / "labels" / "train" / "im0.txt"
    for text, match in (("0 0.1 0.1 0.2 0.2 0.3\n", "5 coordinates, an odd count"),
                        ("0 0.1 0.1 1.2 0.2 0.3 0.3\n", r"outside \[0, 1\]"),
                        ("7 0.1 0.1 0.2 0.2 0.3 0.3\n", "class 7 is outside names")):
        label.write_text(text)
        item = next(i for i in load_instance_dataset(yolo).items if i.stem == "im0")
        with pytest.raises(InputError, match=rf"im0\.txt:1: .*{match}"):
            item.read()
    root = _instance_masks(tmp_path / "ds2")
    (root / "instance_classes" / "im0.json").write_text(json.dumps({"1": 1, "2": 2}))
    with pytest.raises(InputError, match=r"instance_classes/im0\.json: instance id\(s\) \[3\] .* no class"):
        load_instance_dataset(root).items[0].read()
    (root / "instance_classes" / "im1.json").write_text(json.dumps({"1": 1, "2": 5, "3": 1}))
    listed = r"2 problem\(s\)[\s\S]*im0\.json: instance[\s\S]*im1\.png: class id\(s\) \[5\]"
    with pytest.raises(InputError, match=listed):
        validate_instance_dataset(load_instance_dataset(root))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no instance dataset format recognised \(found: nothing\)"):
        detect_instance_format(tmp_path / "empty")
    with pytest.raises(ConfigError, match="unknown target"):
        convert_instances(root, tmp_path / "x", to="voc")


def test_coco_panoptic_reads_segments_and_things(tmp_path: Path) -> None:
    root = tmp_path / "pan"
    (root / "annotations" / "panoptic_val2017").mkdir(parents=True)
    ids = np.zeros((8, 10), np.int64)
    ids[:4] = 1000
    ids[4:, :5] = 70000
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(root / "annotations" / "panoptic_val2017" / "x.png")
    (root / "annotations" / "panoptic_val2017.json").write_text(json.dumps({
        "images": [{"id": 3, "file_name": "x.jpg", "height": 8, "width": 10}],
        "annotations": [{"image_id": 3, "file_name": "x.png", "segments_info": [
            {"id": 1000, "category_id": 184, "iscrowd": 0}, {"id": 70000, "category_id": 1, "iscrowd": 1}]}],
        "categories": [{"id": 1, "name": "person", "isthing": 1}, {"id": 184, "name": "sky", "isthing": 0}]}))
    assert detect_instance_format(root) == "coco_panoptic"
    ds = load_instance_dataset(root, check_images=False)
    assert ds.things == frozenset({1})
    got = ds.items[0].read()
    assert [(i.id, i.class_id, i.crowd, int(i.mask.sum())) for i in got] == [(1000, 184, False, 40),
                                                                             (70000, 1, True, 20)]
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(root / "annotations" / "x.jpg")
    sem = convert_instances(root, tmp_path / "sem", to="semantic", images=root / "annotations")
    assert sem.losses == {"crowd_pixels_ignored": 20, "void_pixels_ignored": 20}  # VOID -> ignore, not background
    assert np.array_equal(read_mask(tmp_path / "sem" / "masks" / "x.png"), np.where(ids == 1000, 184, 255))
    things = convert_instances(root, tmp_path / "things", to="instance_masks", images=root / "annotations")
    assert things.losses == {"stuff_dropped": 1} and things.class_names == {1: "person"}


def test_convert_images_cli_from_and_to(tmp_path: Path) -> None:
    root = _instance_masks(tmp_path / "ds", crowd=True)
    out = CliRunner().invoke(app, ["convert-images", "--from", "instance_masks", "--to", "yolo_seg", "-i", str(root),
                                   "-o", str(tmp_path / "y")])
    assert out.exit_code == 0, out.output
    assert "holes_filled" in out.output and "crowd_dropped" in out.output
    assert (tmp_path / "y" / "data.yaml").is_file()
    bad = CliRunner().invoke(app, ["convert-images", "--from", "voc", "--to", "coco", "-i", str(root), "-o",
                                   str(tmp_path / "z")])
    assert isinstance(bad.exception, ConfigError) and "unknown format 'voc'" in str(bad.exception)


def test_shapes_instances_are_an_instance_masks_dataset(tmp_path):
    """The synthetic instance set reads back through the instance_masks reader: one id per object,
    classes from instance_classes/, the split from splits.json, no two objects touching."""
    from medseg.data.instance_datasets import load_instance_dataset, read_instances, validate_instance_dataset
    from medseg.data.shapes import write_shapes_instances

    root = write_shapes_instances(tmp_path / "objects", n_train=5, n_val=3, size=(48, 64), seed=2)
    ds = load_instance_dataset(root)
    assert ds.format == "instance_masks"
    assert [item.split for item in ds.items].count("val") == 3
    validate_instance_dataset(ds)
    for item in ds.items:
        found = read_instances(item)
        assert found and {inst.class_id for inst in found} <= {1, 2}
        union = np.zeros(found[0].mask.shape, int)
        for inst in found:
            union += inst.mask
        assert union.max() == 1  # separate objects
