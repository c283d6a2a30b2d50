"""``medseg convert-images``: palette PNGs and RGB colour masks -> index masks, every pixel counted."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medseg.cli.main import app
from medseg.data.image_convert import (
    cityscapes_colour_table, colour_table, convert_masks, read_colour_table, voc_colour_map, voc_colour_table,
)
from medseg.data.image_datasets import load_image_dataset, validate_image_dataset
from medseg.data.image_labels import CITYSCAPES_LABELS, cityscapes_labels
from medseg.errors import ConfigError, InputError
from medseg.io.images import read_mask

H, W = 32, 48
VOC = voc_colour_map()


def _indices(values: list[int]) -> np.ndarray:
    return np.resize(np.asarray(values), H * W).reshape(H, W)


def _rgb(path: Path, rgb: np.ndarray, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(rgb.astype(np.uint8))
    (img.convert("RGBA") if mode == "RGBA" else img).save(path)
    return path


def _palette_png(path: Path, index: np.ndarray, palette: list[tuple[int, int, int]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(index.astype(np.uint8), mode="L").convert("P")
    img.putpalette([v for rgb in palette for v in rgb] + [0] * (768 - 3 * len(palette)))
    img.save(path)
    return path


def test_voc_colour_masks_become_indices_and_unknown_colours_are_counted(tmp_path: Path) -> None:
    index = _indices([0, 1, 15, 20, 255])
    rgb = np.array(VOC)[index]
    _rgb(tmp_path / "in" / "a.png", rgb)
    spoilt = rgb.copy()
    spoilt[0, :5] = (1, 2, 3)  # a colour VOC does not have: 5 pixels
    spoilt[1, :2] = (9, 9, 9)
    _rgb(tmp_path / "in" / "b.png", spoilt)
    result = convert_masks(tmp_path / "in", tmp_path / "out", palette="voc")
    assert np.array_equal(read_mask(tmp_path / "out" / "a.png"), index)
    expected_b = index.copy()
    expected_b[0, :5] = expected_b[1, :2] = 255
    assert np.array_equal(read_mask(tmp_path / "out" / "b.png"), expected_b)
    assert [f.unknown_pixels for f in result.files] == [0, 7] and result.unknown_pixels == 7
    assert result.files[1].unknown_colours == [[1, 2, 3, 5], [9, 9, 9, 2]]
    assert sum(result.pixels_per_class.values()) == 2 * H * W
    assert result.pixels_per_class[255] == int((index == 255).sum() + (expected_b == 255).sum())
    report = json.loads((tmp_path / "out" / "conversion.json").read_text())
    assert report["files"] == 2 and report["unknown_pixels"] == 7 and report["palette"] == "voc"
    assert report["per_file"][1] == {"input": "b.png", "output": "b.png", "mode": "RGB", "pixels": H * W,
                                     "unknown_pixels": 7, "unknown_colours": [[1, 2, 3, 5], [9, 9, 9, 2]]}
    assert report["names"]["15"] == "person"
    assert Image.open(tmp_path / "out" / "a.png").mode == "P"  # viewable in the VOC colours


def test_palette_pngs_keep_indices_or_go_through_the_colour_table(tmp_path: Path) -> None:
    index = _indices([0, 1, 2, 3])
    _palette_png(tmp_path / "voc" / "a.png", index, VOC[:21])
    convert_masks(tmp_path / "voc", tmp_path / "plain")  # no table: the palette indices are the classes
    assert np.array_equal(read_mask(tmp_path / "plain" / "a.png"), index)
    shuffled = [VOC[0], VOC[7], VOC[15], (7, 7, 7)]  # index 1 drawn in VOC's car colour, 3 in an unknown colour
    _palette_png(tmp_path / "odd" / "a.png", index, shuffled)
    result = convert_masks(tmp_path / "odd", tmp_path / "mapped", palette="voc")
    assert np.array_equal(read_mask(tmp_path / "mapped" / "a.png"), np.array([0, 7, 15, 255])[index])
    assert result.files[0].mode == "P" and result.files[0].unknown_pixels == int((index == 3).sum())
    assert result.files[0].unknown_colours == [[7, 7, 7, int((index == 3).sum())]]


def test_cityscapes_colour_masks_become_train_ids(tmp_path: Path) -> None:
    table = cityscapes_colour_table()
    ids = [i for _, i, _, _ in CITYSCAPES_LABELS if i >= 0 and i != 18]  # polegroup shares pole's colour
    label_ids = _indices(ids)
    colour_of = {i: c for _, i, _, c in CITYSCAPES_LABELS}
    rgb = np.array([colour_of[i] for i in range(34)])[label_ids]
    _rgb(tmp_path / "in" / "x_gtFine_color.png", rgb, mode="RGBA")  # Cityscapes colour PNGs carry alpha
    result = convert_masks(tmp_path / "in", tmp_path / "out", palette="cityscapes")
    assert np.array_equal(read_mask(tmp_path / "out" / "x_gtFine_color.png"), cityscapes_labels().apply(label_ids))
    assert result.unknown_pixels == 0 and result.files[0].mode == "RGBA"
    assert table.colours[(153, 153, 153)] == 5 and table.colours[(0, 0, 142)] == 13  # the train class keeps it
    assert table.names[18] == "bicycle"


def test_colour_table_files(tmp_path: Path) -> None:
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"colours": {"0": [0, 0, 0], "1": [[255, 0, 0], "#fe0000"]}, "ignore_index": 99,
                                "names": ["bg", "red"]}))
    table = read_colour_table(path)
    assert table.colours == {(0, 0, 0): 0, (255, 0, 0): 1, (254, 0, 0): 1} and table.ignore_index == 99
    assert table.names == {0: "bg", 1: "red"}
    path.write_text(json.dumps([[0, 0, 0], [0, 255, 0]]))
    assert colour_table(path).colours == {(0, 0, 0): 0, (0, 255, 0): 1}
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, W // 2:] = (0, 255, 0)
    rgb[0, 0] = (0, 0, 1)
    _rgb(tmp_path / "in" / "m.png", rgb)
    result = convert_masks(tmp_path / "in", tmp_path / "out", palette=path)
    assert result.pixels_per_class == {0: H * W // 2 - 1, 1: H * W // 2, 255: 1} and result.unknown_pixels == 1
    for text, message in (([[0, 0, 0], [0, 0, 0]], "colour \\[0, 0, 0\\] is given to indices 0 and 1"),
                          ({"0": [0, 0, 256]}, "index 0: \\[0, 0, 256\\] is not a colour"),
                          ({"x": [0, 0, 0]}, "'x' is not a class index"), ("nope", "expected")):
        path.write_text(json.dumps(text))
        with pytest.raises(InputError, match=f"table.json: {message}"):
            read_colour_table(path)
    path.write_text("{broken")
    with pytest.raises(InputError, match="table.json: cannot read the colour table"):
        read_colour_table(path)
    with pytest.raises(ConfigError, match="--palette: 'nowhere.json' is neither voc nor cityscapes"):
        colour_table("nowhere.json")
    assert voc_colour_table().colours[(224, 224, 192)] == 255


def test_bad_inputs_name_the_file(tmp_path: Path) -> None:
    _rgb(tmp_path / "in" / "colour.png", np.zeros((H, W, 3)))
    with pytest.raises(InputError, match="colour.png: an RGB colour mask; give --palette"):
        convert_masks(tmp_path / "in", tmp_path / "out")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "in" / "lossy.jpg")
    with pytest.raises(InputError, match="JPEG masks lossy.jpg"):
        convert_masks(tmp_path / "in", tmp_path / "out", palette="voc")
    (tmp_path / "in" / "lossy.jpg").unlink()
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="broken.png: cannot read this mask"):
        convert_masks(tmp_path / "in", tmp_path / "out", palette="voc")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: no mask files"):
        convert_masks(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ConfigError, match="--to: unknown target 'yolo'; known: index"):
        convert_masks(tmp_path / "in", tmp_path / "out", to="yolo")


def test_converted_masks_make_a_valid_image_folder(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for i in range(3):
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(root / "images" / f"s{i}.png")
        _rgb(tmp_path / "colour" / f"s{i}.png", np.array(VOC)[_indices([0, i, 255])])
    with pytest.raises(InputError, match="convert-images"):  # the colour masks as they are
        (root / "masks").symlink_to(tmp_path / "colour")
        (root / "classes.json").write_text(json.dumps(["background", "aeroplane", "bicycle"]))
        validate_image_dataset(load_image_dataset(root))
    (root / "masks").unlink()
    convert_masks(tmp_path / "colour", root / "masks", palette="voc")
    validate_image_dataset(load_image_dataset(root))


def test_rgb_lookup_is_vectorised() -> None:
    index = np.random.default_rng(0).integers(0, 21, (1024, 2048))
    rgb = np.array(VOC, np.uint8)[index]
    t0 = time.perf_counter()
    out, unknown = voc_colour_table().lookup(rgb)
    assert time.perf_counter() - t0 < 2.0 and not unknown.any() and np.array_equal(out, index)


def test_cli_counts_and_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    rgb = np.array(VOC)[_indices([0, 1])]
    rgb[0, 0] = (5, 5, 5)
    _rgb(tmp_path / "in" / "a.png", rgb)
    runner = CliRunner()
    ok = runner.invoke(app, ["convert-images", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                             "--palette", "voc"])
    assert ok.exit_code == 0, ok.output
    assert "converted 1 mask(s)" in ok.output and "aeroplane" in ok.output and "ignore" in ok.output
    assert "1 pixel(s) in 1 file(s) have colours not in the table" in ok.output and "(5,5,5) x1" in ok.output
    from medseg.cli.main import main

    for args, message in ((["--palette", "nope"], "--palette: 'nope'"), ([], "a.png: an RGB colour mask"),
                          (["--to", "instances"], "--to: unknown target")):
        monkeypatch.setattr(sys, "argv", ["medseg", "convert-images", "-i", str(tmp_path / "in"),
                                          "-o", str(tmp_path / "out2"), *args])
        with pytest.raises(SystemExit) as exit_:
            main()
        assert exit_.value.code == 2 and message in capsys.readouterr().err
