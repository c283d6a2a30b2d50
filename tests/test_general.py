"""The general-image track: DeepLabV3+/SegFormer models, Pillow I/O, folder evaluation, ``medseg evaluate-images``."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medseg.errors import ConfigError, InputError, ModelError
from medseg.general import evaluate_image_folder, read_image, read_mask, save_mask
from medseg.metrics import boundary_iou

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_SEGFORMER = {"in_channels": 3, "out_channels": 3, "hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1],
                  "num_attention_heads": [1, 2, 4, 8], "decoder_hidden_size": 16}
TINY_DEEPLAB = {"in_channels": 3, "out_channels": 3, "encoder_name": "resnet18", "decoder_channels": 16}
TINY = {"deeplabv3plus": TINY_DEEPLAB, "segformer": TINY_SEGFORMER}


def _info(name: str, config: dict) -> dict:
    return {"model": {"name": name, "config": config}, "spatial_dims": 2,
            "labels": {"0": "background", "1": "cat", "2": "dog"},
            "preprocessing": {"normalization": {"kind": "zscore"}},
            "inference": {"patch_size": [64, 64], "overlap": 0.25, "batch_size": 2}}


# ------------------------------------------------------------------ models


@pytest.mark.parametrize("name", sorted(TINY))
def test_general_model_trains_exports_reloads(name, tmp_path):
    import torch

    from medseg.models import create_model, get_model_spec
    from medseg.models.export import load_exported, save_export

    torch.manual_seed(0)
    assert get_model_spec(name).spatial_dims == 2
    model = create_model(name, **TINY[name])
    x = torch.randn(2, 3, 64, 48)
    y = torch.zeros(2, 64, 48, dtype=torch.long)
    y[:, 16:48, 8:40] = 1
    y[:, 40:, :12] = 2
    model.train()
    assert model(x).shape == (2, 3, 64, 48)  # logits at the input size (SegFormer upsampled from 1/4)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    model.eval()
    with torch.no_grad():
        ref = model(x)
    save_export(tmp_path / "export", model, _info(name, TINY[name]))
    loaded, info = load_exported(tmp_path)
    assert info["model"]["name"] == name and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref)


def test_segformer_variants_and_config_errors():
    from medseg.models import create_model
    from medseg.models.general2d import SEGFORMER_VARIANTS, segformer_config

    b2 = segformer_config("b2", out_channels=150)
    assert list(b2.hidden_sizes) == [64, 128, 320, 512] and list(b2.depths) == [3, 4, 6, 3]
    assert b2.decoder_hidden_size == 768 and b2.num_labels == 150
    assert list(segformer_config("b5").depths) == [3, 6, 40, 3] and set(SEGFORMER_VARIANTS) == {f"b{i}" for i in range(6)}
    assert segformer_config("b0", drop_path_rate=0.0).drop_path_rate == 0.0
    with pytest.raises(ConfigError, match="variant 'b9' is not known; valid: b0, b1"):
        create_model("segformer", variant="b9")
    with pytest.raises(ConfigError, match="not_a_key"):
        create_model("segformer", config={"not_a_key": 1})
    with pytest.raises(ConfigError, match="imagenet|encoder_name"):
        create_model("deeplabv3plus", encoder_name="resnet999")


def test_local_weights_files_and_folders(tmp_path):
    import torch

    from medseg.models import create_model

    torch.manual_seed(0)
    src = create_model("segformer", **TINY_SEGFORMER)
    x = torch.randn(1, 3, 32, 32)
    src.eval()
    with torch.no_grad():
        expected = src(x)
    # a state dict of the wrapper, of the bare transformers model, and a save_pretrained folder
    torch.save(src.state_dict(), tmp_path / "wrapped.pt")
    torch.save(src.model.state_dict(), tmp_path / "bare.pt")
    src.model.save_pretrained(tmp_path / "hf")
    for weights in (tmp_path / "wrapped.pt", tmp_path / "bare.pt", tmp_path / "hf"):
        dst = create_model("segformer", **TINY_SEGFORMER, weights=str(weights)).eval()
        with torch.no_grad():
            torch.testing.assert_close(dst(x), expected)
    # the folder's own config is used with variant=None; a new head size keeps the encoder
    five = create_model("segformer", variant=None, out_channels=5, weights=str(tmp_path / "hf"))
    assert list(five.model.config.hidden_sizes) == [8, 16, 32, 64]
    for k, v in src.model.segformer.state_dict().items():
        torch.testing.assert_close(five.model.segformer.state_dict()[k], v)
    assert five(x).shape == (1, 5, 32, 32)
    with pytest.raises(ModelError, match="do not fit"):
        create_model("segformer", variant="b0", weights=str(tmp_path / "bare.pt"))
    with pytest.raises(ModelError, match="not found"):
        create_model("segformer", weights=str(tmp_path / "missing.pt"))

    deeplab = create_model("deeplabv3plus", **TINY_DEEPLAB).eval()
    torch.save(deeplab.state_dict(), tmp_path / "dl.pt")
    torch.save(deeplab.encoder.state_dict(), tmp_path / "enc.pt")
    again = create_model("deeplabv3plus", **TINY_DEEPLAB, weights=str(tmp_path / "dl.pt")).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), deeplab(x))
    enc = create_model("deeplabv3plus", **TINY_DEEPLAB, encoder_weights=str(tmp_path / "enc.pt"))
    for k, v in deeplab.encoder.state_dict().items():
        torch.testing.assert_close(enc.encoder.state_dict()[k], v)
    with pytest.raises(ModelError, match="imagenet.*not found.*never downloaded"):
        create_model("deeplabv3plus", **TINY_DEEPLAB, encoder_weights="imagenet")


# ------------------------------------------------------------------ image I/O


def test_read_images_and_masks(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(rgb).save(tmp_path / "a.bmp")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "a.bmp"), rgb)
    assert read_image(tmp_path / "a.jpg").shape == (6, 8, 3)
    np.testing.assert_array_equal(read_image(tmp_path / "g.tif"), rgb[..., :1])
    mask = np.random.default_rng(1).integers(0, 4, (6, 8)).astype(np.uint8)
    mask[0, 0] = 255
    for suffix in ("png", "tif", "bmp"):
        path = save_mask(tmp_path / f"m.{suffix}", mask)
        got = read_mask(path)
        assert got.shape == (6, 8) and got.dtype.kind == "u"
        np.testing.assert_array_equal(got, mask)
    save_mask(tmp_path / "p.png", mask, palette=[0, 0, 0, 128, 0, 0, 0, 128, 0])
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png"), mask)  # palette indices, not colours
    big = (mask.astype(np.uint16) * 1000)
    np.testing.assert_array_equal(read_mask(save_mask(tmp_path / "b.png", big)), big)
    with pytest.raises(InputError, match=r"a\.png: a RGB \(colour\) image is not a label mask"):
        read_mask(tmp_path / "a.png")
    with pytest.raises(InputError, match=r"a\.jpg: JPEG is lossy"):
        read_mask(tmp_path / "a.jpg")
    (tmp_path / "bad.png").write_bytes((tmp_path / "m.png").read_bytes()[:60])
    with pytest.raises(InputError, match=r"bad\.png: cannot read"):
        read_mask(tmp_path / "bad.png")


# ------------------------------------------------------------------ evaluation


def _known_pair(root: Path) -> None:
    """Two images whose dataset confusion is known by hand (see test_known_confusion)."""
    ref_a = np.zeros((4, 4), np.uint8)
    ref_a[2:] = 1
    pred_a = ref_a.copy()
    pred_a[0, :2] = 1                  # 2 px of class 0 predicted as 1
    pred_a[3, 3] = 2                   # 1 px of class 1 predicted as 2
    ref_b = np.full((4, 4), 2, np.uint8)
    ref_b[0] = 255                     # ignored row
    pred_b = np.full((4, 4), 2, np.uint8)
    pred_b[0] = 1                      # predictions under ignored pixels do not count
    pred_b[3, :2] = 0                  # 2 px of class 2 predicted as 0
    save_mask(root / "ref" / "a.png", ref_a)
    save_mask(root / "pred" / "a.png", pred_a)
    save_mask(root / "ref" / "b.tif", ref_b)
    save_mask(root / "pred" / "b.png", pred_b, palette=[0, 0, 0, 255, 0, 0, 0, 255, 0])
    save_mask(root / "ref" / "only_ref.png", ref_a)
    save_mask(root / "pred" / "only_pred.png", pred_a)


def test_known_confusion(tmp_path):
    _known_pair(tmp_path)
    result = evaluate_image_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "out", num_classes=3,
                                   class_names=["background", "cat", "dog"])
    np.testing.assert_array_equal(result.confusion, [[6, 2, 0], [0, 7, 1], [2, 0, 10]])
    data = result.summary["dataset"]
    # by hand: IoU = I / (P + R - I): 6/10, 7/10, 10/13; aAcc = 23/28
    assert data["iou"] == pytest.approx([0.6, 0.7, 10 / 13])
    assert data["miou"] == pytest.approx((0.6 + 0.7 + 10 / 13) / 3)
    assert data["dice"] == pytest.approx([12 / 16, 14 / 17, 20 / 23])
    assert data["acc"] == pytest.approx([6 / 8, 7 / 8, 10 / 12])
    assert data["aacc"] == pytest.approx(23 / 28)
    assert result.unmatched_predictions == ["only_pred.png"]
    assert result.unmatched_references == ["only_ref.png"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["unmatched_references"] == ["only_ref.png"] and summary["images"] == 2
    assert summary["classes"]["1"]["name"] == "cat" and summary["confusion"][2] == [2, 0, 10]
    rows = list(csv.DictReader((tmp_path / "out" / "metrics.csv").open()))
    assert len(rows) == 2 * 3 and rows[0].keys() >= {"image", "class", "name", "dice", "iou", "boundary_iou"}
    b_cat = next(r for r in rows if r["image"] == "b" and r["class"] == "1")
    assert b_cat["status"] == "both_empty" and b_cat["iou"] == "nan"  # class 1 only under the ignored row
    a_dog = next(r for r in rows if r["image"] == "a" and r["class"] == "2")
    assert a_dog["status"] == "spurious" and float(a_dog["dice"]) == 0.0
    png = tmp_path / "out" / "iou_per_class.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_matches_independent_bincount_and_boundary_iou(tmp_path):
    rng = np.random.default_rng(7)
    n = 4
    preds, refs = [], []
    for i in range(6):
        ref = np.zeros((40, 50), np.uint8)
        ref[5:30, 10:35] = 1
        ref[20:38, 25:48] = 2
        ref[30:, :8] = 3
        pred = np.roll(ref, (i % 3, i % 2), axis=(0, 1))
        noise = rng.random(ref.shape) < 0.05
        pred[noise] = rng.integers(0, n, noise.sum())
        if i % 2:
            ref[rng.random(ref.shape) < 0.03] = 255
        save_mask(tmp_path / "pred" / f"img{i}.png", pred)
        save_mask(tmp_path / "ref" / f"img{i}.png", ref)
        preds.append(pred)
        refs.append(ref)
    result = evaluate_image_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "out", num_classes=n,
                                   progress=True)
    # independent: per-class IoU from one numpy bincount over the kept pixels of all images
    p = np.concatenate([a[r != 255] for a, r in zip(preds, refs)]).astype(np.int64)
    r = np.concatenate([r[r != 255] for r in refs]).astype(np.int64)
    cm = np.bincount(r * n + p, minlength=n * n).reshape(n, n)
    np.testing.assert_array_equal(result.confusion, cm)
    inter = np.diag(cm)
    iou = inter / (cm.sum(0) + cm.sum(1) - inter)
    assert result.summary["dataset"]["iou"] == pytest.approx(iou.tolist())
    assert result.summary["dataset"]["miou"] == pytest.approx(iou.mean())
    # per image: Dice from numpy; Boundary IoU equals medseg.metrics.boundary_iou where nothing is ignored
    for i, (pred, ref) in enumerate(zip(preds, refs)):
        keep = ref != 255
        for c in range(n):
            row = next(x for x in result.rows if x["image"] == f"img{i}" and x["class"] == c)
            pc, rc = (pred == c) & keep, ref == c
            assert row["dice"] == pytest.approx(2 * (pc & rc).sum() / (pc.sum() + rc.sum()))
            if i % 2 == 0:
                assert row["boundary_iou"] == pytest.approx(boundary_iou(pred == c, ref == c))
            else:
                assert 0.0 <= row["boundary_iou"] <= 1.0


def test_ignore_index_and_no_boundary(tmp_path):
    ref = np.zeros((8, 8), np.uint8)
    ref[4:] = 1
    pred = ref.copy()
    pred[:2] = 1                       # wrong, but only where the reference is ignored
    ref[:2] = 255
    save_mask(tmp_path / "ref" / "x.png", ref)
    save_mask(tmp_path / "pred" / "x.png", pred)
    result = evaluate_image_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "o", num_classes=2,
                                   boundary=False, plots=False)
    assert result.summary["dataset"]["miou"] == 1.0 and result.confusion.sum() == 48
    assert "boundary_iou" not in result.summary["classes"]["0"]["per_image"]
    assert [f.name for f in result.files] == ["metrics.csv", "summary.json"]
    # without an ignore index, 255 is an out-of-range label: an error naming the file
    with pytest.raises(InputError, match=r"x\.png: reference mask holds label\(s\) \[255\] outside \[0, 2\)"):
        evaluate_image_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "o", num_classes=2, ignore_index=None)


def test_bad_inputs_name_the_file(tmp_path):
    ok = np.zeros((6, 6), np.uint8)
    save_mask(tmp_path / "ref" / "a.png", ok)
    (tmp_path / "pred").mkdir()
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(tmp_path / "pred" / "a.png")  # RGB "mask"
    with pytest.raises(InputError, match=r"pred/a\.png: a RGB \(colour\) image is not a label mask"):
        evaluate_image_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "o", num_classes=2)
    save_mask(tmp_path / "pred" / "a.png", np.zeros((6, 7), np.uint8))
    with pytest.raises(InputError, match=r"pred/a\.png: prediction size 7x6 \(WxH\) differs from reference .*a\.png"):
        evaluate_image_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "o", num_classes=2)
    (tmp_path / "pred" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InputError, match=r"pred/a\.png: cannot read"):
        evaluate_image_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "o", num_classes=2)
    save_mask(tmp_path / "pred" / "a.png", np.full((6, 6), 5, np.uint8))
    with pytest.raises(InputError, match=r"pred/a\.png: prediction mask holds label\(s\) \[5\]"):
        evaluate_image_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "o", num_classes=2)
    save_mask(tmp_path / "other" / "z.png", ok)
    with pytest.raises(InputError, match=r"no image matched.*prediction-only: \['z\.png'\]"):
        evaluate_image_folder(tmp_path / "other", tmp_path / "ref", tmp_path / "o", num_classes=2)
    with pytest.raises(ConfigError, match="2 names for num_classes=3"):
        evaluate_image_folder(tmp_path / "pred", tmp_path / "ref", tmp_path / "o", num_classes=3,
                              class_names=["a", "b"])


# ------------------------------------------------------------------ CLI


def test_cli_evaluate_images(tmp_path):
    from medseg.cli.main import app

    _known_pair(tmp_path)
    (tmp_path / "names.json").write_text(json.dumps({"0": "background", "1": "cat", "2": "dog"}))
    args = ["evaluate-images", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"),
            "--out", str(tmp_path / "out"), "--num-classes", "3"]
    result = CliRunner().invoke(app, [*args, "--class-names", str(tmp_path / "names.json")])
    assert result.exit_code == 0, result.output
    assert "evaluated 2 image(s)" in result.output and "mIoU=0.6897" in result.output
    assert "only_ref.png" in result.output and "dog" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert math.isclose(summary["dataset"]["miou"], (0.6 + 0.7 + 10 / 13) / 3)
    assert (tmp_path / "out" / "iou_per_class.png").is_file()
    fast = CliRunner().invoke(app, [*args, "--no-boundary", "--ignore-index", "255"])
    assert fast.exit_code == 0, fast.output
    assert "boundary_iou" not in json.loads((tmp_path / "out" / "summary.json").read_text())["classes"]["0"]["per_image"]
    bad = CliRunner().invoke(app, [*args[:-1], "0"])
    assert bad.exit_code == 2
    (tmp_path / "pred" / "a.png").write_bytes(b"garbage")
    broken = CliRunner().invoke(app, args)
    assert isinstance(broken.exception, InputError) and "a.png" in str(broken.exception)


def test_export_loads_after_its_initial_weights_file_is_gone(tmp_path):
    import torch

    from medseg.models import create_model
    from medseg.models.export import load_exported, save_export

    torch.manual_seed(0)
    torch.save(create_model("deeplabv3plus", **TINY_DEEPLAB).state_dict(), tmp_path / "init.pt")
    config = {**TINY_DEEPLAB, "weights": str(tmp_path / "init.pt")}
    model = create_model("deeplabv3plus", **config).eval()
    with torch.no_grad():  # the export must carry its own weights, not the initial file's
        for p in model.parameters():
            p.add_(0.01)
    save_export(tmp_path / "export", model, _info("deeplabv3plus", config))
    (tmp_path / "init.pt").unlink()
    loaded, _ = load_exported(tmp_path / "export")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


# ------------------------------------------------------------------ predict-images


def _export_for_prediction(name: str, root: Path) -> Path:
    import torch

    from medseg.models import create_model
    from medseg.models.export import save_export

    torch.manual_seed(0)
    info = _info(name, TINY[name])
    info["preprocessing"] = {"normalization": {"kind": "imagenet"}}
    info["inference"] = {"pad_multiple": 32}
    return save_export(root / f"export_{name}", create_model(name, **TINY[name]).eval(), info)


def _image_folder(root: Path) -> Path:
    """Three images of odd sizes (RGB PNG, gray PNG of the same size: one batch, JPEG) and one corrupt PNG."""
    rng = np.random.default_rng(3)
    folder = root / "images"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (37, 53), dtype=np.uint8)).save(folder / "b.png")  # gray -> RGB
    Image.fromarray(rng.integers(0, 255, (41, 29, 3), dtype=np.uint8)).save(folder / "c.jpg", quality=90)
    (folder / "d.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    return folder


def _expected_mask(export: Path, image_path: Path) -> np.ndarray:
    """Independent reference: ImageNet normalisation by hand, zero padding to 32, one forward, argmax, crop."""
    import torch

    from medseg.models.export import load_exported

    model, _ = load_exported(export)
    img = read_image(image_path)
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    x = (img / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    h, w = img.shape[:2]
    padded = np.zeros((3, -(-h // 32) * 32, -(-w // 32) * 32), np.float32)
    padded[:, :h, :w] = np.moveaxis(x, -1, 0)
    with torch.no_grad():
        return model(torch.from_numpy(padded)[None]).argmax(1)[0, :h, :w].numpy()


@pytest.mark.parametrize("name", sorted(TINY))
def test_predict_image_folder(name, tmp_path):
    from medseg.general import predict_image_folder

    export = _export_for_prediction(name, tmp_path)
    images = _image_folder(tmp_path)
    records = predict_image_folder(export, images, tmp_path / "masks", device="cpu", batch_size=2)
    assert [Path(r["input"]).name for r in records] == ["a.png", "b.png", "c.jpg", "d.png"]
    assert [r["status"] for r in records] == ["ok", "ok", "ok", "failed"]
    assert "d.png" in records[3]["error"] and records[3]["output"] is None
    for r in records[:3]:
        mask = read_mask(r["output"])
        h, w = read_image(r["input"]).shape[:2]
        assert mask.shape == (h, w) == tuple(r["shape"]) and mask.max() < 3
        np.testing.assert_array_equal(mask, _expected_mask(export, Path(r["input"])))
        assert len(np.unique(mask)) > 1  # a random model still gives more than one class
    lines = [json.loads(x) for x in (tmp_path / "masks" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and {x["status"] for x in lines} == {"ok", "failed"}
    # resume: done images are skipped, the corrupt one is tried (and fails) again
    before = (tmp_path / "masks" / "a.png").stat().st_mtime_ns
    again = predict_image_folder(export, images, tmp_path / "masks", device="cpu")
    assert [r["status"] for r in again] == ["skipped", "skipped", "skipped", "failed"]
    assert (tmp_path / "masks" / "a.png").stat().st_mtime_ns == before
    assert len((tmp_path / "masks" / "predictions.jsonl").read_text().splitlines()) == 8
    redo = predict_image_folder(export, images, tmp_path / "masks", device="cpu", overwrite=True)
    assert [r["status"] for r in redo] == ["ok", "ok", "ok", "failed"]


def test_predict_image_folder_normalisation_channels_and_errors(tmp_path):
    from medseg.inference.images import fit_channels, normalize_image, predict_image_folder

    img = np.array([[[0, 128, 255]]], np.uint8)
    np.testing.assert_allclose(normalize_image(img, {"kind": "scale"}), img / 255.0, rtol=1e-6)
    np.testing.assert_allclose(normalize_image(img, {"kind": "imagenet"})[0, 0],
                               (img[0, 0] / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225], rtol=1e-5)
    # one vocabulary: "zscore" means what it means for volumes; its plain mean/std form is explicit
    z = normalize_image(np.random.default_rng(0).integers(0, 255, (9, 7, 3)).astype(np.uint8),
                        {"kind": "zscore", "percentiles": [0, 100], "nonzero": False})
    np.testing.assert_allclose(z.mean(axis=(0, 1)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 1)), 1, atol=1e-4)
    assert fit_channels(np.zeros((2, 2, 1), np.uint8), 3).shape == (2, 2, 3)
    assert fit_channels(np.zeros((2, 2, 4), np.uint8), 3).shape == (2, 2, 3)
    with pytest.raises(InputError, match="x.png: image has 3 channel"):
        fit_channels(np.zeros((2, 2, 3), np.uint8), 1, "x.png")
    with pytest.raises(ConfigError, match="'minmax' is not supported"):
        normalize_image(img, {"kind": "minmax"})
    # an RGB image into a 1-channel model fails with the reason, the gray one is segmented
    import torch

    from medseg.models import create_model
    from medseg.models.export import save_export

    torch.manual_seed(0)
    cfg = {"in_channels": 1, "out_channels": 2, "encoder_name": "resnet18", "encoder_depth": 3,
           "decoder_channels": [16, 8, 4]}
    info = {**_info("unet2d", cfg), "labels": {"0": "bg", "1": "fg"},
            "preprocessing": {"normalization": {"kind": "zscore"}}}
    export = save_export(tmp_path / "unet", create_model("unet2d", **cfg).eval(), info)
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "in" / "rgb.png")
    Image.fromarray(np.arange(120, dtype=np.uint8).reshape(10, 12)).save(tmp_path / "in" / "gray.png")
    records = predict_image_folder(export, tmp_path / "in", tmp_path / "out", device="cpu")
    assert [r["status"] for r in records] == ["ok", "failed"]
    assert "rgb.png: image has 3 channel(s), the model takes 1" in records[1]["error"]
    assert read_mask(tmp_path / "out" / "gray.png").shape == (10, 12)
    with pytest.raises(InputError, match="must differ"):
        predict_image_folder(export, tmp_path / "in", tmp_path / "in")


def test_cli_predict_images(tmp_path):
    from medseg.cli.main import app

    export = _export_for_prediction("segformer", tmp_path)
    images = _image_folder(tmp_path)
    args = ["predict-images", "--model", str(export), "--input", str(images), "--output", str(tmp_path / "out"),
            "--device", "cpu", "--batch-size", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "4 image(s): 3 segmented, 0 skipped (mask exists), 1 failed" in result.output
    assert "d.png" in result.output
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a.png", "b.png", "c.png"]
    (images / "d.png").unlink()
    resumed = CliRunner().invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert "3 image(s): 0 segmented, 3 skipped" in resumed.output
