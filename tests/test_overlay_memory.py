"""Overlays draw from views of the volumes: no full-size copy or int64 cast of the label map (issue 12, defect 11)."""

from __future__ import annotations

import tracemalloc

import numpy as np

from medseg.plots.overlays import render_overlay
from medseg.transforms.preprocess import to_canonical
from medseg.volume import Volume


def _study(shape=(128, 112, 160), classes: int = 20) -> tuple[Volume, Volume]:
    rng = np.random.default_rng(0)
    image = rng.integers(-1000, 1000, shape, dtype=np.int16)
    labels = np.zeros(shape, np.uint8)
    for value in range(1, classes + 1):
        c = rng.integers(10, min(shape) - 10, 3)
        labels[c[0] - 8:c[0] + 8, c[1] - 8:c[1] + 8, c[2] - 8:c[2] + 8] = value
    affine = np.diag([-0.8, -0.9, 1.5, 1.0])  # LPS-like axes: the RAS views flip two of them
    affine[:3, 3] = [20.0, 10.0, -30.0]
    return Volume(image, affine, {}), Volume(labels, affine, {})


def test_overlay_peak_memory_is_a_fraction_of_the_inputs():
    image, labels = _study()
    render_overlay(image, labels)  # imports and caches outside the measurement
    tracemalloc.start()
    render_overlay(image, labels, max_structures=8)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    inputs = image.array.nbytes + labels.array.nbytes
    # before: a float32 copy of the image and an int64 copy of the labels (8x the label bytes)
    assert peak < 0.5 * inputs, (peak, inputs)


def test_overlay_from_views_equals_the_canonical_copy():
    image, labels = _study(shape=(64, 56, 48), classes=6)
    oblique = image.affine.copy()
    oblique[:3, :3] = oblique[:3, :3] @ np.array([[1, 0.05, 0], [-0.05, 1, 0], [0, 0, 1]])
    for affine in (image.affine, oblique):
        img, lab = Volume(image.array, affine, {}), Volume(labels.array, affine, {})
        assert render_overlay(img, lab) == render_overlay(to_canonical(img), to_canonical(lab))
