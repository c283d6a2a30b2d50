"""Boundary IoU (official 2D definition and the mm variant), COCO mask AP, panoptic quality."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.errors import InputError
from medseg.metrics import boundary_iou, mask_ap, panoptic_quality
from medseg.metrics.boundary import boundary_band, boundary_band_mm


def _official_band(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """Cheng et al.'s mask_to_boundary, with cv2.erode's d iterations of a 3x3 square on a
    zero-padded image written as one minimum filter of size 2d+1 over a zero padding of d."""
    from scipy import ndimage

    h, w = mask.shape
    d = max(1, int(round(dilation_ratio * np.sqrt(h**2 + w**2))))
    padded = np.pad(mask.astype(np.uint8), d)
    eroded = ndimage.minimum_filter(padded, size=2 * d + 1, mode="constant", cval=0)[d:-d, d:-d]
    return mask.astype(np.uint8) - eroded


def test_boundary_iou_hand_values():
    a = np.zeros((10, 10), bool)
    a[2:8, 2:8] = True
    b = np.roll(a, 1, axis=1)
    # d = round(0.02 * 14.1) -> 1: each band is the 20-pixel ring; 10 pixels shared
    assert boundary_band(a).sum() == 20
    assert boundary_iou(a, b) == pytest.approx(1 / 3)
    assert boundary_iou(a, a) == 1.0
    edge = np.zeros((10, 10), bool)
    edge[:5, :] = True  # touches the image border: those pixels are boundary too (zero padding)
    assert boundary_band(edge).sum() == 50 - 3 * 8
    big = np.zeros((100, 100), bool)
    big[20:60, 20:60] = True  # d = round(2.83) = 3
    assert boundary_band(big).sum() == 40 * 40 - 34 * 34


def test_boundary_iou_equals_official_definition_on_random_masks():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    for shape, ratio in (((64, 80), 0.02), ((120, 90), 0.05), ((33, 47), 0.01)):
        a = ndimage.gaussian_filter(rng.random(shape), 3) > 0.5
        b = ndimage.gaussian_filter(rng.random(shape), 3) > 0.5
        ba, bb = _official_band(a, ratio), _official_band(b, ratio)
        expected = ((ba * bb) > 0).sum() / ((ba + bb) > 0).sum()
        assert np.array_equal(boundary_band(a, dilation_ratio=ratio), ba.astype(bool))
        assert boundary_iou(a, b, dilation_ratio=ratio) == pytest.approx(expected, abs=1e-12)


def test_boundary_iou_empty_masks_and_errors():
    a = np.zeros((8, 8), bool)
    a[2:5, 2:5] = True
    empty = np.zeros_like(a)
    assert boundary_iou(a, empty) == 0.0 and boundary_iou(empty, a) == 0.0
    assert math.isnan(boundary_iou(empty, empty))
    assert boundary_iou(empty, empty, empty_score=1.0) == 1.0
    with pytest.raises(InputError, match="2D"):
        boundary_iou(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)))
    with pytest.raises(InputError, match="shape"):
        boundary_iou(a, a[:, :-1])
    with pytest.raises(InputError, match="spacing"):
        boundary_iou(np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), width_mm=1.0, spacing=(1, 1))


def test_boundary_band_mm_3d_anisotropic():
    box = np.zeros((12, 12, 8), bool)
    box[1:11, 1:11, 1:7] = True  # 10 x 10 x 6 voxels
    band = boundary_band_mm(box, width_mm=2.0, spacing=(1.0, 1.0, 3.0))
    # within 2 mm across i and j: two voxel rings; across k only the one-voxel border (3 mm)
    inner = np.zeros_like(box)
    inner[3:9, 3:9, 2:6] = True
    assert np.array_equal(band, box & ~inner)
    band1 = boundary_band_mm(box[:, :, 3], width_mm=1.0, spacing=(1.0, 1.0))
    ring = box[:, :, 3].copy()
    ring[2:10, 2:10] = False
    assert np.array_equal(band1, ring)
    shifted = np.roll(box, 1, axis=2)
    value = boundary_iou(box, shifted, width_mm=2.0, spacing=(1.0, 1.0, 3.0))
    assert 0.0 < value < 1.0


def test_mask_ap_hand_values():
    ref = np.zeros((40, 40), np.int32)
    ref[0:25, 0:4] = 1  # 100 pixels
    pred = np.zeros_like(ref)
    pred[0:18, 0:4] = 7  # 72 pixels inside: IoU 0.72, matched at thresholds 0.50 .. 0.70
    out = mask_ap([pred], [{7: 0.9}], [ref])
    assert out["AP50"] == pytest.approx(1.0) and out["AP75"] == pytest.approx(0.0)
    assert out["AP"] == pytest.approx(0.5)
    perfect = mask_ap([ref, ref], [{1: 0.5}, {1: 0.5}], [ref, ref])
    assert perfect["AP"] == pytest.approx(1.0)
    fp_first = pred.copy()
    fp_first[30:35, 30:35] = 8  # a confident false positive ranks above the true positive
    out = mask_ap([fp_first], [{7: 0.5, 8: 0.9}], [ref])
    assert out["AP50"] == pytest.approx(0.5, abs=0.01)  # precision 1/2 at recall 1, COCO interpolation
    empty = np.zeros_like(ref)
    assert math.isnan(mask_ap([empty], [{}], [empty])["AP"])  # both empty: nothing to score
    assert mask_ap([empty], [{}], [ref])["AP"] == 0.0  # every instance missed
    assert math.isnan(mask_ap([ref], [{1: 0.5}], [empty])["AP"])  # no reference instance: COCO's -1
    volume = np.zeros((4, 10, 10), np.int32)
    volume[1:3, 2:6, 2:6] = 1
    assert mask_ap([volume], [{1: 1.0}], [volume])["AP"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="score"):
        mask_ap([pred], [{}], [ref])
    two = np.zeros((30, 30), np.int32)
    two[0:10, 0:10] = 1
    two[15:25, 15:25] = 2
    classes = [{1: 1, 2: 2}]
    assert mask_ap([two], [{1: 0.9, 2: 0.8}], [two], pred_classes=classes, ref_classes=classes)["AP"] == pytest.approx(1.0)
    swapped = [{1: 2, 2: 1}]  # right masks, wrong categories: nothing matches
    assert mask_ap([two], [{1: 0.9, 2: 0.8}], [two], pred_classes=swapped, ref_classes=classes)["AP"] == 0.0


def test_panoptic_quality_hand_values_and_empty():
    ref = np.zeros((10, 20), np.int32)
    ref[0:5, 0:5] = 1  # 25 pixels
    ref[6:9, 10:13] = 2  # missed
    pred = np.zeros_like(ref)
    pred[0:5, 0:4] = 5  # 20 pixels inside instance 1: IoU 0.8
    pred[8:10, 16:20] = 6  # false positive
    out = panoptic_quality(pred, ref)
    assert (out["tp"], out["fp"], out["fn"]) == (1, 1, 1)
    assert out["sq"] == pytest.approx(0.8) and out["rq"] == pytest.approx(0.5) and out["pq"] == pytest.approx(0.4)
    empty = np.zeros_like(ref)
    assert math.isnan(panoptic_quality(empty, empty)["pq"])
    missed = panoptic_quality(empty, ref)
    assert missed["pq"] == 0.0 and missed["fn"] == 2 and math.isnan(missed["sq"])
    assert panoptic_quality(pred, empty)["fp"] == 2
    with pytest.raises(InputError, match="iou_threshold"):
        panoptic_quality(pred, ref, iou_threshold=0.3)
