"""Overlap metrics, confusion matrix, mIoU, label-map evaluation and summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.errors import InputError
from medseg.metrics import (
    confusion,
    dice,
    evaluate_labels,
    iou,
    miou,
    overlap_from_confusion,
    precision,
    recall,
    summarize,
    surface_metrics,
    volume_difference,
)


def test_hand_values_2d_and_3d():
    pred = np.array([[1, 1, 1, 0], [0, 0, 0, 0]])
    ref = np.array([[0, 1, 1, 1], [0, 0, 0, 1]])
    # tp 2, |P| 3, |R| 4
    assert dice(pred, ref) == pytest.approx(4 / 7)
    assert iou(pred, ref) == pytest.approx(2 / 5)
    assert precision(pred, ref) == pytest.approx(2 / 3)
    assert recall(pred, ref) == pytest.approx(2 / 4)
    assert volume_difference(pred, ref) == pytest.approx(-1 / 4)
    assert volume_difference(pred, ref, relative=False, spacing=(0.5, 2.0)) == pytest.approx(-1.0)
    cube = np.zeros((4, 4, 4), bool)
    cube[:2, :2, :2] = True
    shifted = np.roll(cube, 1, axis=0)
    assert dice(cube, shifted) == pytest.approx(0.5)
    assert iou(cube, shifted) == pytest.approx(1 / 3)


def test_empty_mask_matrix():
    a = np.zeros((3, 3), bool)
    a[1, 1] = True
    empty = np.zeros_like(a)
    for func in (dice, iou):
        assert func(empty, a) == 0.0 and func(a, empty) == 0.0
        assert math.isnan(func(empty, empty))
        assert func(empty, empty, empty_score=1.0) == 1.0
    assert math.isnan(precision(empty, a)) and precision(a, empty) == 0.0
    assert recall(empty, a) == 0.0 and math.isnan(recall(a, empty))
    assert volume_difference(empty, a) == -1.0
    assert volume_difference(a, empty) == math.inf
    assert math.isnan(volume_difference(empty, empty))


def test_input_errors():
    with pytest.raises(InputError, match="shape"):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(InputError, match="binary"):
        dice(np.array([0, 2]), np.array([0, 1]))
    with pytest.raises(InputError, match="outside"):
        confusion(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(InputError, match="negative"):
        confusion(np.array([0, -1]), np.array([0, 1]), 3)
    with pytest.raises(InputError, match="non-integer"):
        confusion(np.array([0, 0.5]), np.array([0, 1]), 3)


def test_confusion_matches_per_label_binary_and_is_chunked(monkeypatch):
    import medseg.metrics.overlap as overlap

    rng = np.random.default_rng(0)
    pred = rng.integers(0, 4, size=(17, 13, 5))
    ref = rng.integers(0, 4, size=(17, 13, 5))
    full = confusion(pred, ref, 4)
    monkeypatch.setattr(overlap, "_CHUNK_VOXELS", 100)  # many slabs
    assert np.array_equal(confusion(pred, ref, 4), full)
    assert full.sum() == pred.size and full[2, 1] == np.count_nonzero((ref == 2) & (pred == 1))
    rows = overlap_from_confusion(full)
    assert [r["label"] for r in rows] == [1, 2, 3]
    for row in rows:
        lab = row["label"]
        assert row["dice"] == pytest.approx(dice(pred == lab, ref == lab))
        assert row["iou"] == pytest.approx(iou(pred == lab, ref == lab))
        assert row["precision"] == pytest.approx(precision(pred == lab, ref == lab))
        assert row["recall"] == pytest.approx(recall(pred == lab, ref == lab))


def test_miou_dataset_level_vs_per_image():
    p1, r1 = np.array([0, 1, 1, 1]), np.array([0, 1, 1, 0])
    p2, r2 = np.array([0, 0, 2, 2]), np.array([0, 0, 2, 0])
    # dataset: class 0: I 3 U 5 = 0.6; class 1: I 2 U 3; class 2: I 1 U 2
    out = miou([p1, p2], [r1, r2], num_classes=3)
    assert out["iou_per_class"] == pytest.approx([0.6, 2 / 3, 0.5])
    assert out["miou"] == pytest.approx((0.6 + 2 / 3 + 0.5) / 3)
    # per image: image 1 classes 0 (1/2), 1 (2/3), class 2 absent; image 2 classes 0 (2/3), 2 (1/2)
    per = miou([p1, p2], [r1, r2], num_classes=3, per_image=True)
    assert per["miou"] == pytest.approx(((0.5 + 2 / 3) / 2 + (2 / 3 + 0.5) / 2) / 2)
    # a class absent everywhere is NaN and left out of the mean; ignore_index drops voxels
    # kept voxels: pred [0, 1, 1], ref [0, 1, 0] -> class 0: 1/2, class 1: 1/2
    out = miou([p1], [np.array([0, 1, 255, 0])], num_classes=4, ignore_index=255)
    assert out["iou_per_class"][:2] == pytest.approx([0.5, 0.5]) and math.isnan(out["iou_per_class"][3])
    assert out["miou"] == pytest.approx(0.5)


def test_evaluate_labels_rows():
    ref = np.zeros((20, 20, 10), np.uint8)
    ref[2:8, 2:8, 2:6] = 1
    ref[12:16, 12:16, 2:6] = 2
    pred = np.zeros_like(ref)
    pred[2:8, 3:9, 2:6] = 1
    pred[1:3, 18:20, 8:10] = 3  # spurious label 3
    sp = (0.8, 0.8, 2.5)
    rows = evaluate_labels(pred, ref, labels=[1, 2, 3, 4], spacing=sp,
                           metrics=["dice", "hd95", "assd", "nsd", "iou"], tolerance_mm=1.0)
    assert [r["label"] for r in rows] == [1, 2, 3, 4]
    assert [r["status"] for r in rows] == ["ok", "missed", "spurious", "both_empty"]
    one = surface_metrics(pred == 1, ref == 1, spacing=sp, tolerance_mm=1.0)
    assert rows[0]["dice"] == pytest.approx(dice(pred == 1, ref == 1))
    for key in ("hd95", "assd", "nsd"):
        assert rows[0][key] == pytest.approx(one[key])
    assert rows[0]["ref_volume_mm3"] == pytest.approx(6 * 6 * 4 * 0.8 * 0.8 * 2.5)
    assert rows[1]["dice"] == 0.0 and rows[1]["hd95"] == math.inf and rows[1]["nsd"] == 0.0
    assert rows[2]["assd"] == math.inf
    assert all(math.isnan(rows[3][k]) for k in ("dice", "hd95", "assd", "nsd", "iou"))
    capped = evaluate_labels(pred, ref, labels=[2], spacing=sp, metrics=["hd95"], missing_distance="diagonal")
    assert capped[0]["hd95"] == pytest.approx(math.sqrt(16 * 16 + 16 * 16 + 25 * 25))
    with pytest.raises(InputError, match="unknown metric"):
        evaluate_labels(pred, ref, labels=[1], metrics=["dice", "hd99"])
    with pytest.raises(InputError, match="positive"):
        evaluate_labels(pred, ref, labels=[0, 1])


def test_summarize_counts_nan_and_inf():
    s = summarize([1.0, 2.0, 3.0, 4.0, math.inf, math.nan])
    assert (s["n"], s["n_finite"], s["n_nan"], s["n_inf"]) == (6, 4, 1, 1)
    assert s["mean"] == 2.5 and s["median"] == 2.5 and s["q1"] == 1.75 and s["iqr"] == 1.5
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert 1.0 <= s["ci_low"] < 2.5 < s["ci_high"] <= 4.0
    assert summarize([1.0, 2.0, 3.0, 4.0, math.inf])["ci_low"] == s["ci_low"]  # seeded, reproducible
    capped = summarize([1.0, math.inf], inf_value=9.0)
    assert capped["mean"] == 5.0 and capped["n_inf"] == 1
    none = summarize([math.nan])
    assert none["n_nan"] == 1 and math.isnan(none["mean"])


def test_docstring_examples():
    import doctest

    import medseg.metrics.boundary
    import medseg.metrics.overlap
    import medseg.metrics.surface

    for module in (medseg.metrics.overlap, medseg.metrics.surface, medseg.metrics.boundary):
        result = doctest.testmod(module, raise_on_error=False)
        assert result.attempted > 0 and result.failed == 0, module.__name__
