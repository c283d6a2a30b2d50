"""Boundary IoU against the official algorithm of Cheng et al. 2021 (boundary_iou_api),
run with OpenCV exactly as the official ``mask_to_boundary`` does."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.metrics import boundary_iou

cv2 = pytest.importorskip("cv2")


def _official_mask_to_boundary(mask: np.ndarray, dilation_ratio: float) -> np.ndarray:
    h, w = mask.shape
    dilation = max(1, int(round(dilation_ratio * np.sqrt(h**2 + w**2))))
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), dtype=np.uint8), iterations=dilation)
    return mask - eroded[1 : h + 1, 1 : w + 1]


def _official_boundary_iou(gt: np.ndarray, dt: np.ndarray, dilation_ratio: float) -> float:
    gt_b = _official_mask_to_boundary(gt, dilation_ratio)
    dt_b = _official_mask_to_boundary(dt, dilation_ratio)
    inter = ((gt_b * dt_b) > 0).sum()
    union = ((gt_b + dt_b) > 0).sum()
    return float(inter / union)


def _random_blob(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, dtype=np.uint8)
    for _ in range(rng.integers(1, 4)):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        ry, rx = rng.integers(3, shape[0] // 2), rng.integers(3, shape[1] // 2)
        mask |= (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)
    return mask


@pytest.mark.parametrize("ratio", [0.02, 0.05, 0.1])
def test_boundary_iou_equals_official_code_on_random_masks(ratio):
    rng = np.random.default_rng(7)
    for _ in range(10):
        shape = (int(rng.integers(40, 120)), int(rng.integers(40, 120)))
        gt, dt = _random_blob(rng, shape), _random_blob(rng, shape)
        if not gt.any() or not dt.any():
            continue
        expected = _official_boundary_iou(gt, dt, ratio)
        got = boundary_iou(dt.astype(bool), gt.astype(bool), dilation_ratio=ratio)
        assert got == pytest.approx(expected, abs=1e-12)
