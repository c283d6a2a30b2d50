"""Ordinary-image dataset layouts (image_folder, cityscapes, ade20k, voc, coco_stuff164k): detection,
labels, validation, and equality with torchvision's own readers of the same folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.data.image_datasets import (
    IMAGE_FORMATS, ImageDataset, ImageItem, LabelSpec, detect_image_format, is_image_dataset, label_spec,
    load_image_dataset, read_item, validate_image_dataset,
)
from medseg.data.image_labels import CITYSCAPES_LABELS, COCO_STUFF_CLASSES, cityscapes_labels
from medseg.errors import ConfigError, InputError
from medseg.io.images import save_mask

H, W = 32, 48
RNG = np.random.default_rng(0)


# --------------------------------------------------------------------------- tiny layouts
def _image(path: Path, size: tuple[int, int] = (H, W)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _mask(path: Path, values: list[int], size: tuple[int, int] = (H, W), palette: list[int] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.resize(np.asarray(values, dtype=np.uint16), size[0] * size[1]).reshape(size)
    return save_mask(path, mask, palette=palette)


def make_image_folder(root: Path, n: int = 4, splits: bool = True) -> Path:
    for i in range(n):
        _image(root / "images" / f"img{i}.jpg")
        _mask(root / "masks" / f"img{i}.png", [0, 1, 2, 255])
    (root / "classes.json").write_text(json.dumps(["background", "cat", "dog"]))
    if splits:
        (root / "splits.json").write_text(json.dumps({"train": [f"img{i}" for i in range(n - 1)],
                                                      "val": [f"img{n - 1}"]}))
    return root


def make_cityscapes(root: Path, ids: tuple[int, ...] = (0, 7, 8, 26, 33, 14)) -> Path:
    for split, city, n in (("train", "aachen", 2), ("train", "bremen", 1), ("val", "frankfurt", 1),
                           ("test", "berlin", 1)):
        for i in range(n):
            x = f"{city}_{i:06d}_000019"
            _image(root / "leftImg8bit" / split / city / f"{x}_leftImg8bit.png")
            _mask(root / "gtFine" / split / city / f"{x}_gtFine_labelIds.png", list(ids))
    return root


def make_ade20k(root: Path, names_file: bool = False) -> Path:
    base = root / "ADEChallengeData2016"
    for folder, prefix, n in (("training", "ADE_train", 2), ("validation", "ADE_val", 1)):
        for i in range(1, n + 1):
            _image(base / "images" / folder / f"{prefix}_{i:08d}.jpg")
            _mask(base / "annotations" / folder / f"{prefix}_{i:08d}.png", [0, 1, 150, 3])
    if names_file:
        rows = ["Idx,Ratio,Train,Val,Name"] + [f"{i},0.01,10,2,name{i};synonym{i}" for i in range(1, 151)]
        (base / "objectInfo150.csv").write_text("\n".join(rows) + "\n")
    return root


def voc_palette() -> list[int]:
    from medseg.data.image_convert import voc_colour_map

    return [v for rgb in voc_colour_map() for v in rgb]


def make_voc(root: Path) -> Path:
    base = root / "VOCdevkit" / "VOC2012"
    stems = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"]}
    for split, names in stems.items():
        for s in names:
            _image(base / "JPEGImages" / f"{s}.jpg")
            _mask(base / "SegmentationClass" / f"{s}.png", [0, 1, 15, 20, 255], palette=voc_palette())
    _image(base / "JPEGImages" / "2008_000001.jpg")  # a detection-only image: in no Segmentation list
    sets = base / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    for split, names in stems.items():
        (sets / f"{split}.txt").write_text("\n".join(names) + "\n")
    (sets / "trainval.txt").write_text("\n".join(stems["train"] + stems["val"]) + "\n")
    return root


def make_coco_stuff(root: Path, converted: bool = True) -> Path:
    for folder, first, n in (("train2017", 9, 2), ("val2017", 139, 1)):
        for i in range(n):
            stem = f"{first + i:012d}"
            _image(root / "images" / folder / f"{stem}.jpg")
            _mask(root / "annotations" / folder / f"{stem}.png", [0, 12, 181, 255])
            if converted:
                _mask(root / "annotations" / folder / f"{stem}_labelTrainIds.png", [0, 11, 170, 255])
    return root


BUILDERS = {"image_folder": make_image_folder, "cityscapes": make_cityscapes, "ade20k": make_ade20k,
            "voc": make_voc, "coco_stuff164k": make_coco_stuff}
#: format -> (classes, images per split train/val/test, stem of one item)
EXPECTED = {
    "image_folder": (3, (3, 1, 0), "img0"),
    "cityscapes": (19, (3, 1, 1), "aachen_000000_000019"),
    "ade20k": (150, (2, 1, 0), "ADE_train_00000001"),
    "voc": (21, (2, 1, 0), "2007_000032"),
    "coco_stuff164k": (171, (2, 1, 0), "000000000009"),
}


# --------------------------------------------------------------------------- detection and loading
@pytest.mark.parametrize("fmt", IMAGE_FORMATS)
def test_each_layout_is_detected_loaded_and_valid(tmp_path: Path, fmt: str) -> None:
    root = BUILDERS[fmt](tmp_path / fmt)
    assert detect_image_format(root) == fmt and is_image_dataset(root)
    ds = load_image_dataset(root)
    classes, counts, stem = EXPECTED[fmt]
    assert ds.format == fmt and ds.labels.num_classes == classes and ds.has_splits
    assert tuple(len(ds.split(s)) for s in ("train", "val", "test")) == counts
    assert stem in {it.stem for it in ds.items}
    validate_image_dataset(ds)
    image, mask = read_item(next(it for it in ds.items if it.stem == stem), ds.labels)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert mask is not None and mask.shape == (H, W) and mask.dtype == np.int64
    assert set(np.unique(mask)) <= set(range(classes)) | {255}
    assert load_image_dataset(root, format=fmt).items == ds.items


def test_train_indices_of_each_layout(tmp_path: Path) -> None:
    def first_mask(fmt: str) -> list[int]:
        ds = load_image_dataset(BUILDERS[fmt](tmp_path / fmt))
        return sorted(int(v) for v in np.unique(read_item(ds.items[0], ds.labels)[1]))

    assert first_mask("image_folder") == [0, 1, 2, 255]
    assert first_mask("cityscapes") == [0, 1, 13, 18, 255]  # road, sidewalk, car, bicycle; unlabeled/guard rail
    assert first_mask("ade20k") == [0, 2, 149, 255]  # raw 1, 3, 150 -> 0, 2, 149; raw 0 -> ignore
    assert first_mask("voc") == [0, 1, 15, 20, 255]  # palette indices; 255 = border
    assert first_mask("coco_stuff164k") == [0, 11, 170, 255]


def test_voc_without_image_sets_and_nested_roots(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "voc")
    inner = root / "VOCdevkit" / "VOC2012"
    assert load_image_dataset(inner).root == inner == load_image_dataset(root).root
    for name in ("train", "val", "trainval"):
        (inner / "ImageSets" / "Segmentation" / f"{name}.txt").unlink()
    ds = load_image_dataset(root)
    assert not ds.has_splits and len(ds.items) == 3  # the detection-only JPEG is left out
    assert {it.split for it in ds.items} == {"train"}


def test_image_folder_split_folders_and_no_splits(tmp_path: Path) -> None:
    root = tmp_path / "folders"
    for split, n in (("train", 2), ("val", 1)):
        for i in range(n):
            _image(root / "images" / split / f"{split}{i}.png")
            _mask(root / "masks" / split / f"{split}{i}.png", [0, 1])
    (root / "classes.json").write_text(json.dumps({"0": "bg", "1": "fg"}))
    ds = load_image_dataset(root)
    assert ds.splits_from == "folders" and [len(ds.split(s)) for s in ("train", "val")] == [2, 1]
    flat = load_image_dataset(make_image_folder(tmp_path / "flat", splits=False))
    assert not flat.has_splits and len(flat.split("train")) == 4


def test_no_layout_is_one_line_naming_what_was_found(tmp_path: Path) -> None:
    for i in range(3):
        _image(tmp_path / "images" / f"a{i}.jpg")
        _image(tmp_path / f"loose{i}.jpg")
    with pytest.raises(InputError) as err:
        detect_image_format(tmp_path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{tmp_path}: no image dataset layout recognised")
    assert "images/ without masks/" in message and "3 .jpg files" in message
    assert all(fmt in message for fmt in IMAGE_FORMATS)
    assert not is_image_dataset(tmp_path) and not is_image_dataset(tmp_path / "nowhere")
    with pytest.raises(InputError, match="not a cityscapes layout"):
        load_image_dataset(make_image_folder(tmp_path / "f"), format="cityscapes")


def test_medical_dataset_folders_are_not_image_datasets(tmp_path: Path) -> None:
    nnunet = tmp_path / "Dataset001_Liver"
    for sub in ("imagesTr", "labelsTr"):
        (nnunet / sub).mkdir(parents=True)
    (nnunet / "imagesTr" / "case_000_0000.nii.gz").write_bytes(b"")
    (nnunet / "labelsTr" / "case_000.nii.gz").write_bytes(b"")
    (nnunet / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0},
                                                     "file_ending": ".nii.gz", "numTraining": 1}))
    png_2d = tmp_path / "Dataset002_Cells"  # a 2D nnU-Net set of PNGs (still medical: dataset.json)
    make_image_folder(png_2d)
    (png_2d / "imagesTr").mkdir()
    (png_2d / "dataset.json").write_text("{}")
    msd = tmp_path / "Task01_BrainTumour"
    (msd / "imagesTr").mkdir(parents=True)
    (msd / "dataset.json").write_text(json.dumps({"modality": {"0": "FLAIR"}, "labels": {"0": "background"},
                                                  "training": []}))
    manifest = tmp_path / "cases.csv"
    manifest.write_text("image,label\na.nii.gz,b.nii.gz\n")
    for root in (nnunet, png_2d, msd, manifest):
        assert not is_image_dataset(root), root


# --------------------------------------------------------------------------- bad inputs
def _one_bad(tmp_path: Path, spoil) -> str:  # type: ignore[no-untyped-def]
    root = make_image_folder(tmp_path / "ds")
    name = spoil(root)
    ds = load_image_dataset(root)
    with pytest.raises(InputError) as err:
        validate_image_dataset(ds)
    message = str(err.value)
    assert message.startswith(f"{root}: 1 problem(s)") and name in message
    return message


def test_mask_values_outside_the_labels(tmp_path: Path) -> None:
    message = _one_bad(tmp_path, lambda r: _mask(r / "masks" / "img1.png", [0, 3, 7, 254]).name)
    assert "values 3, 7, 254 are not classes 0..2 nor ignore 255" in message


def test_image_without_a_mask(tmp_path: Path) -> None:
    def spoil(root: Path) -> str:
        (root / "masks" / "img2.png").unlink()
        return "img2.jpg: no mask (expected masks/<stem>.png)"

    _one_bad(tmp_path, spoil)


def test_colour_mask_where_indices_are_expected(tmp_path: Path) -> None:
    def spoil(root: Path) -> str:
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "masks" / "img0.png")
        return "img0.png: a colour (RGB) mask"

    assert "run medseg convert-images" in _one_bad(tmp_path, spoil)


def test_image_and_mask_sizes_differ(tmp_path: Path) -> None:
    def spoil(root: Path) -> str:
        _mask(root / "masks" / "img3.png", [0, 1], size=(H, W + 2))
        return f"img3.png: mask is {W + 2}x{H} px but image img3.jpg is {W}x{H}"

    _one_bad(tmp_path, spoil)
    ds = load_image_dataset(tmp_path / "ds")
    with pytest.raises(InputError, match="img3.png: mask is"):
        read_item(next(it for it in ds.items if it.stem == "img3"), ds.labels)


def test_two_images_with_one_stem(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "ds")
    _image(root / "images" / "img0.png")
    with pytest.raises(InputError, match="two files with the stem 'img0'"):
        load_image_dataset(root)
    item = ImageItem("a", root / "images" / "img1.jpg", root / "masks" / "img1.png", "train")
    twin = ImageItem("a", root / "images" / "img2.jpg", root / "masks" / "img2.png", "val")
    ds = ImageDataset(root, "image_folder", LabelSpec({0: "bg", 1: "cat", 2: "dog"}), [item, twin])
    with pytest.raises(InputError, match="two images with the stem a: .*img1.jpg, .*img2.jpg"):
        validate_image_dataset(ds)


def test_every_problem_in_one_error_capped(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "ds", n=26, splits=False)
    for i in range(25):
        _mask(root / "masks" / f"img{i}.png", [0, 9])
    (root / "masks" / "img25.png").unlink()
    with pytest.raises(InputError) as err:
        validate_image_dataset(load_image_dataset(root), progress=False)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{root}: 26 problem(s) in the image_folder dataset of 26 images:"
    assert len(lines) == 1 + 20 + 1 and lines[-1].strip() == "... and 6 more"


def test_read_item_refuses_bad_values_and_colour_masks(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "ds")
    _mask(root / "masks" / "img0.png", [0, 5])
    Image.fromarray(np.zeros((H, W, 4), np.uint8)).save(root / "masks" / "img1.png")
    ds = load_image_dataset(root)
    by_stem = {it.stem: it for it in ds.items}
    with pytest.raises(InputError, match=r"img0.png: mask values \[5\] are not classes 0..2"):
        read_item(by_stem["img0"], ds.labels)
    with pytest.raises(InputError, match="img1.png: a colour .RGBA. mask .* convert-images"):
        read_item(by_stem["img1"], ds.labels)


def test_image_folder_needs_class_names(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "ds")
    (root / "classes.json").unlink()
    with pytest.raises(InputError, match="no classes.json; .* labels.names"):
        load_image_dataset(root)
    ds = load_image_dataset(root, labels={"names": ["bg", "cat", "dog"]})
    assert ds.labels.names == {0: "bg", 1: "cat", 2: "dog"}


def test_splits_json_errors_name_the_stems(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "ds")
    (root / "splits.json").write_text(json.dumps({"train": ["img0"], "val": ["img1"]}))
    with pytest.raises(InputError, match="2 image.s. are in no split: img2, img3"):
        load_image_dataset(root)
    (root / "splits.json").write_text(json.dumps({"val": ["img1", "nope"]}))
    with pytest.raises(InputError, match="have no image in images/: nope"):
        load_image_dataset(root)
    (root / "splits.json").write_text(json.dumps({"val": ["img1"]}))  # no "train": the rest trains
    assert [it.stem for it in load_image_dataset(root).split("train")] == ["img0", "img2", "img3"]


# --------------------------------------------------------------------------- labels
def test_label_spec_apply_identity_reduce_zero_and_mapping() -> None:
    raw = np.array([[0, 1, 2, 255]], np.uint8)
    assert LabelSpec({0: "a", 1: "b", 2: "c"}).apply(raw).tolist() == [[0, 1, 2, 255]]
    ade = LabelSpec({0: "a", 1: "b"}, reduce_zero_label=True)
    assert ade.apply(raw).tolist() == [[255, 0, 1, 255]] and ade.bad_values(np.array([[3, 2]])) == [3]
    mapped = LabelSpec({0: "a", 1: "b"}, id_mapping={10: 0, 20: 1, 30: 255})
    assert mapped.apply(np.array([[10, 20, 30, 255]], np.uint16)).tolist() == [[0, 1, 255, 255]]
    assert mapped.bad_values(np.array([[10, 11, 40000]], np.uint16)) == [11, 40000]
    with pytest.raises(InputError, match=r"mask values \[0\] are not in labels.id_mapping"):
        mapped.apply(np.array([[0, 10]]))
    assert mapped.apply(np.zeros((0, 0), np.uint8)).shape == (0, 0)
    assert mapped.num_classes == 2


def test_label_spec_is_a_fast_lookup() -> None:
    import time

    raw = np.random.default_rng(0).integers(0, 34, (1024, 2048), dtype=np.uint8)
    spec = cityscapes_labels()
    t0 = time.perf_counter()
    out = spec.apply(raw)
    assert time.perf_counter() - t0 < 1.0  # a Cityscapes frame: a lookup table, not a loop over classes
    expected = np.full(raw.shape, 255)
    for raw_id, train in spec.id_mapping.items():
        expected[raw == raw_id] = train
    assert np.array_equal(out, expected)


def test_ade20k_names_from_the_devkit_text_table(tmp_path: Path) -> None:
    root = make_ade20k(tmp_path / "ade")
    rows = ["Idx\tRatio\tTrain\tVal\tName"] + [f"{i}\t0.01\t10\t2\tname{i}, synonym" for i in range(1, 151)]
    (root / "ADEChallengeData2016" / "objectInfo150.txt").write_text("\n".join(rows) + "\n")
    assert load_image_dataset(root).labels.names[1] == "name2"
    (root / "ADEChallengeData2016" / "objectInfo150.txt").write_text("\n".join(rows[:50]) + "\n")
    with pytest.raises(InputError, match="objectInfo150.txt: expected 150 rows"):
        load_image_dataset(root)


def test_label_block_overrides_the_layout(tmp_path: Path) -> None:
    root = make_ade20k(tmp_path / "ade", names_file=True)
    ds = load_image_dataset(root)
    assert ds.labels.names[0] == "name1" and ds.labels.names[149] == "name150" and ds.labels.reduce_zero_label
    plain = load_image_dataset(root, labels={"reduce_zero_label": False, "names": [f"c{i}" for i in range(151)]})
    assert plain.labels.num_classes == 151 and not plain.labels.reduce_zero_label
    fallback = load_image_dataset(make_ade20k(tmp_path / "ade2"))
    assert fallback.labels.names[0] == "class_1" and fallback.labels.names[149] == "class_150"
    city = load_image_dataset(make_cityscapes(tmp_path / "city"), labels={"id_mapping": {7: 0, 0: 255},
                                                                          "names": ["road"]})
    assert city.labels.num_classes == 1 and city.labels.id_mapping == {7: 0, 0: 255}
    same = load_image_dataset(tmp_path / "city", labels=cityscapes_labels())
    assert same.labels == cityscapes_labels()


@pytest.mark.parametrize("block, key", [
    ({"colour": 1}, "labels.colour: unknown key; known: names, ignore_index"),
    ({"names": "cat"}, "labels.names: expected a list"),
    ({"names": ["a", ""]}, "labels.names: every class name"),
    ({"names": {"0": "a", "2": "b"}}, "labels.names: class indices must be 0..K-1"),
    ({"names": ["a", "b"], "ignore_index": 1}, "labels.ignore_index: 1 is a class index"),
    ({"names": ["a"], "ignore_index": True}, "labels.ignore_index: expected an integer"),
    ({"names": ["a"], "ignore_index": 70000}, "labels.ignore_index: expected an integer 0..65535"),
    ({"names": ["a"], "reduce_zero_label": "yes"}, "labels.reduce_zero_label: expected true or false"),
    ({"names": ["a"], "id_mapping": {"x": 0}}, r"labels.id_mapping\['x'\]: expected an integer"),
    ({"names": ["a"], "id_mapping": {3: 4}}, r"labels.id_mapping: target\(s\) \[4\]"),
    ({"names": ["a"], "id_mapping": []}, "labels.id_mapping: expected"),
    ({"names": ["a"], "id_mapping": {1: 0}, "reduce_zero_label": True}, "labels.reduce_zero_label: cannot"),
    ({}, "labels.names: missing"),
])
def test_label_block_errors_name_the_key(block: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        label_spec(block)


def test_cityscapes_mapping_is_the_official_table() -> None:
    spec = cityscapes_labels()
    documented = {0: 255, 1: 255, 6: 255, 7: 0, 8: 1, 11: 2, 17: 5, 18: 255, 21: 8, 23: 10, 24: 11, 26: 13,
                  29: 255, 31: 16, 33: 18}  # cityscapesScripts labels.py: road 7 -> 0, ..., bicycle 33 -> 18
    assert {k: spec.id_mapping[k] for k in documented} == documented
    assert spec.names[0] == "road" and spec.names[18] == "bicycle" and spec.num_classes == 19
    labels = pytest.importorskip("cityscapesscripts.helpers.labels").labels
    assert spec.id_mapping == {lab.id: lab.trainId for lab in labels if lab.id >= 0}
    assert spec.names == {lab.trainId: lab.name for lab in labels if 0 <= lab.trainId < 255}
    assert [(n, i, t, c) for n, i, t, c in CITYSCAPES_LABELS] == [(x.name, x.id, x.trainId, x.color) for x in labels]


def test_coco_stuff_raw_ids_map_as_mmseg_converts(tmp_path: Path) -> None:
    ds = load_image_dataset(make_coco_stuff(tmp_path / "raw", converted=False))
    assert len(COCO_STUFF_CLASSES) == ds.labels.num_classes == 171 and ds.labels.id_mapping is not None
    mapping = ds.labels.id_mapping
    assert mapping[0] == 0 and mapping[10] == 10 and mapping[12] == 11 and mapping[91] == 80 and mapping[181] == 170
    assert 11 not in mapping and ds.labels.bad_values(np.array([[11, 25, 90, 182]])) == [11, 25, 90, 182]
    validate_image_dataset(ds)
    converted = load_image_dataset(make_coco_stuff(tmp_path / "conv"))
    assert converted.labels.id_mapping is None
    assert all(it.mask is not None and it.mask.name.endswith("_labelTrainIds.png") for it in converted.items)
    for raw_item, conv_item in zip(ds.items, converted.items):  # raw + mapping == mmseg's converted file
        assert np.array_equal(read_item(raw_item, ds.labels)[1], read_item(conv_item, converted.labels)[1])


def test_cityscapes_label_train_ids_masks(tmp_path: Path) -> None:
    root = tmp_path / "city"
    _image(root / "leftImg8bit" / "train" / "ulm" / "ulm_000000_000019_leftImg8bit.png")
    _mask(root / "gtFine" / "train" / "ulm" / "ulm_000000_000019_gtFine_labelTrainIds.png", [0, 18, 255])
    ds = load_image_dataset(root)
    assert ds.labels.id_mapping is None and ds.labels.num_classes == 19
    assert sorted(np.unique(read_item(ds.items[0], ds.labels)[1]).tolist()) == [0, 18, 255]


# --------------------------------------------------------------------------- outside material
def test_torchvision_reads_the_same_voc(tmp_path: Path) -> None:
    from torchvision.datasets import VOCSegmentation

    root = make_voc(tmp_path / "voc")
    ds = load_image_dataset(root)
    for split in ("train", "val"):
        theirs = VOCSegmentation(str(root), year="2012", image_set=split, download=False)
        ours = ds.split(split)
        assert [Path(p) for p in theirs.images] == [it.image for it in ours]
        assert [Path(p) for p in theirs.masks] == [it.mask for it in ours]
        for i, item in enumerate(ours):
            image, target = theirs[i]
            our_image, our_mask = read_item(item, ds.labels)
            assert np.array_equal(np.asarray(image), our_image)
            assert np.array_equal(np.asarray(target).astype(np.int64), our_mask)


def test_torchvision_reads_the_same_cityscapes(tmp_path: Path) -> None:
    from torchvision.datasets import Cityscapes

    root = make_cityscapes(tmp_path / "city")
    ds = load_image_dataset(root)
    for split in ("train", "val", "test"):
        theirs = Cityscapes(str(root), split=split, mode="fine", target_type="semantic")
        order = np.argsort(theirs.images)
        ours = ds.split(split)
        assert [Path(theirs.images[i]) for i in order] == [it.image for it in ours]
        for i, item in zip(order, ours):
            image, target = theirs[int(i)]
            our_image, our_mask = read_item(item, ds.labels)
            assert np.array_equal(np.asarray(image.convert("RGB")), our_image)
            assert np.array_equal(ds.labels.apply(np.asarray(target)), our_mask)  # labelIds -> trainIds


def test_real_sample_images_as_an_image_folder(tmp_path: Path) -> None:
    """Photographs shipped with matplotlib and scikit-image (RGB JPEG, gray PNG, RGBA PNG)."""
    matplotlib = pytest.importorskip("matplotlib")
    skimage_data = pytest.importorskip("skimage.data")
    sources = [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
               Path(skimage_data.__file__).parent / "camera.png", Path(skimage_data.__file__).parent / "logo.png"]
    sources = [p for p in sources if p.is_file()]
    if not sources:
        pytest.skip("no sample images installed")
    root = tmp_path / "real"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for src in sources:
        (root / "images" / src.name).write_bytes(src.read_bytes())
        gray = np.asarray(Image.open(src).convert("L"))
        save_mask(root / "masks" / f"{src.stem}.png", (gray > 127).astype(np.uint8))  # a real, uneven mask
    (root / "classes.json").write_text(json.dumps(["dark", "bright"]))
    ds = load_image_dataset(root)
    validate_image_dataset(ds)
    for item in ds.items:
        image, mask = read_item(item, ds.labels)
        assert image.shape[:2] == mask.shape and image.shape[2] in (1, 3) and set(np.unique(mask)) <= {0, 1}
    Image.open(sources[0]).convert("L").resize((20, 20)).save(root / "masks" / f"{sources[0].stem}.png")
    with pytest.raises(InputError, match=f"{sources[0].stem}.png: .*values .* are not classes 0..1"):
        validate_image_dataset(load_image_dataset(root))
