"""Surface metrics: hand-computed values, agreement with MONAI (voxel) and DeepMind (surfel), empty masks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from medseg.errors import InputError
from medseg.metrics import assd, hd, hd95, masd, nsd, surface_distances, surface_metrics


def _square_pair() -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros((5, 6), bool)
    a[1:4, 1:4] = True
    return a, np.roll(a, 1, axis=1)  # the same 3x3 square, one pixel to the right


def _cube_pair() -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros((5, 5, 7), bool)
    a[1:4, 1:4, 1:4] = True
    return a, np.roll(a, 1, axis=2)  # shifted one voxel along k


def test_2d_squares_hand_values():
    a, b = _square_pair()
    # 8 border pixels each; 4 of each border lie on the other border, 4 are 1 pixel away.
    m = surface_metrics(a, b, tolerance_mm=0.5)
    assert m == {"hd": 1.0, "hd95": 1.0, "assd": 0.5, "masd": 0.5, "nsd": 0.5}
    # with 2 x 3 mm pixels: the three left-column pixels are 3 mm away, pixel (2, 3) is 2 mm
    # from (1, 3) on the other border
    m = surface_metrics(a, b, spacing=(2.0, 3.0), tolerance_mm=2.0)
    assert m["hd"] == 3.0 and m["assd"] == pytest.approx(2 * (3 * 3 + 2) / 16) and m["nsd"] == 10 / 16
    assert nsd(a, b, tolerance_mm=3.0, spacing=(2.0, 3.0)) == 1.0


def test_3d_anisotropic_cube_hand_values():
    a, b = _cube_pair()
    sp = (1.0, 1.0, 2.5)
    # Each 26-voxel border, to the other border: 9 voxels at 2.5 mm (the face that sticks out),
    # 1 voxel (the centre of the overlapping face) at 1 mm, 16 on the other border (0 mm).
    m = surface_metrics(a, b, spacing=sp, tolerance_mm=2.0)
    assert m["hd"] == 2.5
    assert m["assd"] == pytest.approx((9 * 2.5 + 1.0) / 26, abs=1e-12)
    assert m["masd"] == pytest.approx((9 * 2.5 + 1.0) / 26, abs=1e-12)
    assert m["nsd"] == pytest.approx(17 / 26, abs=1e-12)
    assert m["hd95"] == 2.5
    # linear interpolation between order statistics: 0.65 * 25 = 16.25 -> 1.0 + 0.25 * (2.5 - 1.0)
    assert hd95(a, b, spacing=sp, percentile=65) == pytest.approx(1.375, abs=1e-12)
    sd = surface_distances(a, b, spacing=sp)
    assert sorted(sd.pred_to_ref.tolist()) == [0.0] * 16 + [1.0] + [2.5] * 9


def test_directed_hd95_is_the_larger_direction():
    ref = np.zeros((20, 20), bool)
    ref[5:10, 5:10] = True
    pred = ref.copy()
    pred[15:18, 15:18] = True  # a false-positive island: only pred->ref distances grow
    sd = surface_distances(pred, ref)
    expected = max(np.percentile(sd.pred_to_ref, 95), np.percentile(sd.ref_to_pred, 95))
    assert hd95(pred, ref) == pytest.approx(expected)
    assert hd95(pred, ref) > 0 and sd.ref_to_pred.max() == 0.0
    # the island's far corner (17, 17) is nearest to the reference corner (9, 9)
    assert hd(pred, ref) == pytest.approx(math.hypot(8, 8))


def test_surfel_areas_hand_values():
    one = np.zeros((3, 3, 3), bool)
    one[1, 1, 1] = True
    sd = surface_distances(one, one, surface="surfel")
    assert sd.pred_weights.sum() == pytest.approx(8 * math.sqrt(3) / 8)  # octahedron, area sqrt(3)
    sd = surface_distances(one, one, spacing=(1, 1, 2), surface="surfel")
    assert sd.pred_weights.sum() == pytest.approx(3.0)  # octahedron with half-axes 0.5, 0.5, 1
    square = np.zeros((5, 5), bool)
    square[1:4, 1:4] = True
    sd = surface_distances(square, square, surface="surfel")
    assert sd.pred_weights.sum() == pytest.approx(8 + 2 * math.sqrt(2))  # 8 straight + 4 cut corners
    assert surface_metrics(square, square, surface="surfel")["hd"] == 0.0


@pytest.mark.parametrize("surface", ["voxel", "surfel"])
@pytest.mark.parametrize("func", [hd, hd95, assd, masd])
def test_empty_mask_matrix_distances(func, surface):
    a, _ = _cube_pair()
    empty = np.zeros_like(a)
    assert func(a, empty, surface=surface) == math.inf  # structure predicted where there is none
    assert func(empty, a, surface=surface) == math.inf  # missed structure
    assert math.isnan(func(empty, empty, surface=surface))
    assert func(empty, empty, surface=surface, empty_score=0.0) == 0.0
    diagonal = math.sqrt(5**2 + 5**2 + (7 * 2.0) ** 2)
    assert func(empty, a, spacing=(1, 1, 2), surface=surface, missing_distance="diagonal") == pytest.approx(diagonal)
    assert func(empty, a, surface=surface, missing_distance=373.0) == 373.0


@pytest.mark.parametrize("surface", ["voxel", "surfel"])
def test_empty_mask_matrix_nsd(surface):
    a, _ = _square_pair()
    empty = np.zeros_like(a)
    assert nsd(a, empty, tolerance_mm=1, surface=surface) == 0.0
    assert nsd(empty, a, tolerance_mm=1, surface=surface) == 0.0
    assert math.isnan(nsd(empty, empty, tolerance_mm=1, surface=surface))
    assert nsd(empty, empty, tolerance_mm=1, surface=surface, empty_score=1.0) == 1.0


def test_input_errors():
    a, _ = _cube_pair()
    with pytest.raises(InputError, match="shape"):
        hd95(a, a[:, :, :-1])
    with pytest.raises(InputError, match="spacing"):
        hd95(a, a, spacing=(1.0, 1.0))
    with pytest.raises(InputError, match="spacing"):
        hd95(a, a, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(InputError, match="binary"):
        hd95(a.astype(np.uint8) * 2, a)
    with pytest.raises(InputError, match="surface"):
        hd95(a, a, surface="mesh")
    with pytest.raises(InputError, match="2D or 3D"):
        hd95(a[0, 0], a[0, 0])
    with pytest.raises(InputError, match="percentile"):
        hd95(a, a, percentile=101)


def _random_blobs(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.random(shape), 1.5)
    a = field > np.quantile(field, 0.7)
    b = ndimage.binary_dilation(a, iterations=1) ^ (ndimage.gaussian_filter(rng.random(shape), 1.5) > 0.56)
    return a, b


CASES = [((24, 28, 16), (0.8, 0.9, 2.5)), ((40, 36), (0.7, 1.3)), ((20, 20, 20), None), ((30, 1, 25), (1.0, 2.0, 0.5))]


@pytest.mark.slow
@pytest.mark.parametrize("shape,spacing", CASES)
def test_voxel_mode_equals_monai(shape, spacing):
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    for _ in range(2):
        a, b = _random_blobs(rng, shape)
        ours = surface_metrics(a, b, spacing=spacing, tolerance_mm=1.5)
        pa, rb = torch.from_numpy(a)[None, None].float(), torch.from_numpy(b)[None, None].float()
        sp = list(spacing) if spacing is not None else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            monai = {
                "hd": compute_hausdorff_distance(pa, rb, spacing=sp).item(),
                "hd95": compute_hausdorff_distance(pa, rb, percentile=95, spacing=sp).item(),
                "assd": compute_average_surface_distance(pa, rb, symmetric=True, spacing=sp).item(),
                "nsd": compute_surface_dice(pa, rb, class_thresholds=[1.5], spacing=sp).item(),
            }
        for key, value in monai.items():
            assert ours[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key


@pytest.mark.parametrize("shape,spacing", CASES)
def test_surfel_mode_equals_deepmind(shape, spacing):
    sd_ref = pytest.importorskip("surface_distance", reason="DeepMind surface-distance (pip install surface-distance)")
    rng = np.random.default_rng(7 + shape[0])
    spacing_mm = spacing if spacing is not None else (1.0,) * len(shape)
    for _ in range(2):
        a, b = _random_blobs(rng, shape)
        ours = surface_metrics(a, b, spacing=spacing, tolerance_mm=1.5, surface="surfel", percentile=95)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = sd_ref.compute_surface_distances(b, a, spacing_mm)  # (gt, pred)
            gt_to_pred, pred_to_gt = sd_ref.compute_average_surface_distance(d)
            expected = {
                "hd": sd_ref.compute_robust_hausdorff(d, 100),
                "hd95": sd_ref.compute_robust_hausdorff(d, 95),
                "masd": 0.5 * (gt_to_pred + pred_to_gt),
                "nsd": sd_ref.compute_surface_dice_at_tolerance(d, 1.5),
            }
        areas = np.concatenate([d["surfel_areas_gt"], d["surfel_areas_pred"]])
        dists = np.concatenate([d["distances_gt_to_pred"], d["distances_pred_to_gt"]])
        expected["assd"] = float(np.sum(areas * dists) / np.sum(areas))
        for key, value in expected.items():
            assert ours[key] == pytest.approx(float(value), rel=1e-6, abs=1e-9), key
        ours_sd = surface_distances(a, b, spacing=spacing, surface="surfel")
        assert np.sort(ours_sd.ref_to_pred) == pytest.approx(d["distances_gt_to_pred"], abs=1e-9)


@pytest.mark.parametrize("offsets", [1000, 7])
def test_nearest_search_is_exact(monkeypatch, offsets):
    """The neighbourhood search and its KD-tree fallback give brute-force distances."""
    from scipy.spatial.distance import cdist

    import medseg.metrics.surface as surface

    monkeypatch.setattr(surface, "_LATTICE_OFFSETS", offsets)
    rng = np.random.default_rng(5)
    sp = np.array([0.8, 1.1, 2.5])
    target = rng.random((30, 25, 12)) > 0.995
    src = np.argwhere(rng.random((30, 25, 12)) > 0.99)
    ours = surface._nearest(src, target, sp)
    brute = cdist(src * sp, np.argwhere(target) * sp).min(axis=1)
    assert ours == pytest.approx(brute, abs=1e-12)


def test_bounding_box_matches_argwhere():
    from medseg.metrics._checks import bounding_box

    rng = np.random.default_rng(2)
    for shape in ((9,), (7, 11), (6, 5, 8)):
        m = rng.random(shape) > 0.97
        idx = np.argwhere(m)
        expected = tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(idx.min(0), idx.max(0))) if len(idx) else None
        assert bounding_box(m) == expected
        assert bounding_box(np.zeros(shape, bool)) is None
