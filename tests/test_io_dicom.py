"""DICOM series loading on synthetic series: sorting, geometry, every pitfall of the issue.

Series are written with the shared writer (medseg.data.dicom_writer) from phantoms,
then edited (files deleted, duplicated, foreign objects added) to build each pitfall.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from medseg.data.dicom_writer import write_dicom_series
from medseg.data.phantom import make_phantom
from medseg.errors import InputError
from medseg.io import list_series, load
from medseg.volume import Volume

SHAPE = (32, 28, 12)
SPACING = (1.5, 1.6, 2.5)


@pytest.fixture(scope="module")
def phantom() -> Volume:
    return make_phantom(SHAPE, SPACING, seed=3)[0]


def _write(volume: Volume, folder: Path, **kwargs) -> list[Path]:
    kwargs.setdefault("seed", 1)
    return write_dicom_series(volume, folder, **kwargs)


def _world_value_volume(shape, affine) -> np.ndarray:
    """A linear function of RAS+ world position sampled on a grid (exact under linear interpolation)."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    return 3.0 * world[..., 0] - 2.0 * world[..., 1] + 5.0 * world[..., 2]


# -- correct geometry ------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["forward", "reversed", "shuffled"])
def test_sorting_ignores_instance_number(phantom: Volume, tmp_path: Path, order: str) -> None:
    _write(phantom, tmp_path, reverse_order=order == "reversed", instance_number_shuffle=order == "shuffled")
    v = load(tmp_path)
    assert np.array_equal(v.array, phantom.array)
    np.testing.assert_allclose(v.affine, phantom.affine, atol=1e-6)
    assert v.array.dtype == np.int16
    assert v.meta["modality"] == "CT" and v.meta["number_of_slices"] == SHAPE[2]
    assert v.meta["rescale"] == {"slope": 1.0, "intercept": -1024.0}
    assert len(v.meta["source_files"]) == SHAPE[2] and v.meta["resampled"] is False
    from_list = load(sorted(tmp_path.iterdir(), reverse=True))  # an explicit list of files
    assert np.array_equal(from_list.array, phantom.array)
    np.testing.assert_allclose(from_list.affine, v.affine, atol=0)


@pytest.mark.parametrize("orientation,oblique", [("RAS", 0.0), ("LPS", 25.0), ("PIR", 0.0)])
def test_orientations_round_trip(tmp_path: Path, orientation: str, oblique: float) -> None:
    image = make_phantom((24, 20, 6), (1.2, 1.4, 3.0), seed=1, orientation=orientation, oblique_deg=oblique)[0]
    _write(image, tmp_path)
    v = load(tmp_path)
    assert np.array_equal(v.array, image.array)
    np.testing.assert_allclose(v.affine, image.affine, atol=1e-5)


def test_matches_simpleitk_world_geometry(phantom: Volume, tmp_path: Path) -> None:
    import SimpleITK as sitk

    _write(phantom, tmp_path, reverse_order=True)
    v = load(tmp_path)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    img = reader.Execute()
    flip = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = flip @ np.array(img.GetDirection()).reshape(3, 3) @ np.diag(img.GetSpacing())
    affine[:3, 3] = flip @ np.array(img.GetOrigin())
    np.testing.assert_allclose(v.affine, affine, atol=1e-5)
    assert np.array_equal(v.array, sitk.GetArrayFromImage(img).transpose(2, 1, 0))


@pytest.mark.parametrize("syntax", ["implicit_le", "deflate", "rle", "jpegls", "jpeg2000"])
def test_transfer_syntaxes_identical(tmp_path: Path, syntax: str) -> None:
    image = make_phantom((32, 32, 4), (1.0, 1.0, 2.0), seed=2)[0]
    _write(image, tmp_path, transfer_syntax=syntax)
    v = load(tmp_path)
    assert np.array_equal(v.array, image.array)
    np.testing.assert_allclose(v.affine, image.affine, atol=1e-6)


def test_rescale_per_slice_float(tmp_path: Path, phantom: Volume) -> None:
    import pydicom

    paths = _write(phantom, tmp_path)
    for n, p in enumerate(paths):  # give every slice its own slope
        ds = pydicom.dcmread(p)
        ds.RescaleSlope = str(1.0 + 0.25 * (n % 3))
        ds.save_as(p)
    v = load(tmp_path)
    assert v.array.dtype == np.float32
    stored = phantom.array.astype(np.float64) + 1024
    for k in range(SHAPE[2]):
        expected = stored[:, :, k] * (1.0 + 0.25 * (k % 3)) - 1024
        np.testing.assert_allclose(v.array[:, :, k], expected, atol=1e-3)
    assert isinstance(v.meta["rescale"]["slope"], list)


def test_enhanced_multiframe_ct(tmp_path: Path) -> None:
    import highdicom
    import pydicom
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    image = make_phantom((32, 32, 8), (1.5, 1.6, 2.5), seed=4, oblique_deg=10)[0]
    paths = _write(image, tmp_path / "single", reverse_order=True)
    datasets = [pydicom.dcmread(p) for p in paths]
    mf = LegacyConvertedEnhancedCTImage(
        datasets, series_instance_uid=highdicom.UID(), series_number=7,
        sop_instance_uid=highdicom.UID(), instance_number=1,
    )
    mf.save_as(tmp_path / "enhanced.dcm")
    v = load(tmp_path / "enhanced.dcm")
    assert np.array_equal(v.array, image.array)
    np.testing.assert_allclose(v.affine, image.affine, atol=1e-5)
    assert v.meta["number_of_slices"] == 8


# -- pitfalls ---------------------------------------------------------------------------------
def test_missing_slice_raises_then_resamples(phantom: Volume, tmp_path: Path) -> None:
    paths = _write(phantom, tmp_path)
    paths[5].unlink()
    with pytest.raises(InputError, match=r"1 missing slice: gap of 5 mm .*expected 2\.5 mm") as err:
        load(tmp_path)
    assert paths[4].name in str(err.value) and paths[6].name in str(err.value)
    v = load(tmp_path, resample=True)
    assert v.meta["resampled"] is True and "missing slice" in v.meta["resample_reason"]
    assert v.spatial_shape == SHAPE
    np.testing.assert_allclose(v.affine, phantom.affine, atol=1e-6)
    kept = [k for k in range(SHAPE[2]) if k != 5]
    np.testing.assert_array_equal(v.array[:, :, kept], phantom.array[:, :, kept].astype(np.float32))
    mid = (phantom.array[:, :, 4].astype(np.float32) + phantom.array[:, :, 6]) / 2
    np.testing.assert_allclose(v.array[:, :, 5], mid, atol=1e-3)


def test_duplicate_position_raises(phantom: Volume, tmp_path: Path) -> None:
    import pydicom
    from pydicom.uid import generate_uid

    paths = _write(phantom, tmp_path)
    ds = pydicom.dcmread(paths[3])
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = 99
    ds.save_as(tmp_path / "copy.dcm")
    with pytest.raises(InputError, match=r"duplicate slice position: .* both at .* mm"):
        load(tmp_path)


def test_uneven_spacing_raises_then_resamples_exactly(tmp_path: Path) -> None:
    shape, spacing = (24, 20, 7), (1.5, 1.5, 2.0)
    base = make_phantom(shape, spacing, seed=5)[0]
    offsets = [0.0, 2.0, 4.0, 7.0, 10.0, 12.5, 15.0]
    k_unit = base.affine[:3, 2] / np.linalg.norm(base.affine[:3, 2])
    values = np.empty(shape)
    for k, off in enumerate(offsets):  # a linear function of world position at the real slice places
        aff = base.affine.copy()
        aff[:3, 3] = base.affine[:3, 3] + off * k_unit
        values[:, :, k] = _world_value_volume(shape[:2] + (1,), aff)[:, :, 0]
    volume = base.with_array(values.astype(np.float32))
    _write(volume, tmp_path, modality="MR", slice_positions=offsets)
    with pytest.raises(InputError, match=r"non-uniform slice spacing: steps from 2 to 3 mm"):
        load(tmp_path)
    v = load(tmp_path, resample=True)
    assert v.meta["resampled"] and "non-uniform" in v.meta["resample_reason"]
    assert v.spacing[2] == pytest.approx(2.0)
    assert v.spatial_shape == (24, 20, 8)
    expected = _world_value_volume(v.spatial_shape, v.affine)
    np.testing.assert_allclose(v.array, expected, atol=0.05)  # writer quantisation only


def test_gantry_tilt_raises_then_resamples_exactly(tmp_path: Path) -> None:
    shape, spacing, tilt = (24, 20, 8), (1.5, 1.5, 2.5), 12.0
    base = make_phantom(shape, spacing, seed=6)[0]
    col = base.affine[:3, 1] / np.linalg.norm(base.affine[:3, 1])
    values = np.empty(shape)
    for k in range(shape[2]):
        aff = base.affine.copy()
        aff[:3, 3] = base.affine[:3, 3] + k * base.affine[:3, 2] + k * spacing[2] * math.tan(math.radians(tilt)) * col
        values[:, :, k] = _world_value_volume(shape[:2] + (1,), aff)[:, :, 0]
    _write(base.with_array(values.astype(np.float32)), tmp_path, modality="MR", gantry_tilt_deg=tilt)
    with pytest.raises(InputError, match=r"gantry tilt: .*about 12\.00 degrees"):
        load(tmp_path)
    (series,) = list_series(tmp_path)
    assert series.geometry.startswith("gantry tilt")
    v = load(tmp_path, resample=True)
    assert v.meta["resampled"] and "gantry tilt" in v.meta["resample_reason"]
    assert not v.is_oblique and v.orientation == base.orientation
    direction = v.direction
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-9)  # orthogonal grid
    expected = _world_value_volume(v.spatial_shape, v.affine)
    # voxels inside every source slice's footprint: compare exactly (linear function)
    shift = spacing[2] * math.tan(math.radians(tilt)) * (shape[2] - 1)
    inside = np.s_[:, int(math.ceil(shift / spacing[1])) : shape[1], :]
    np.testing.assert_allclose(v.array[inside], expected[inside], atol=0.05)


def test_two_series_in_one_folder(phantom: Volume, tmp_path: Path) -> None:
    _write(phantom, tmp_path, series_number=1, seed=1)
    other = make_phantom((20, 20, 5), (2.0, 2.0, 3.0), seed=9)[0]
    _write(other, tmp_path, series_number=2, seed=2, series_description="second")
    series = list_series(tmp_path)
    assert [s.images for s in series] == [SHAPE[2], 5]
    with pytest.raises(InputError, match=r"2 image series; choose one with series_uid") as err:
        load(tmp_path)
    for s in series:
        assert s.series_uid in str(err.value)
    v = load(tmp_path, series_uid=series[1].series_uid)
    assert np.array_equal(v.array, other.array)
    with pytest.raises(InputError, match="no image series with SeriesInstanceUID 1.2.3"):
        load(tmp_path, series_uid="1.2.3")
    d = series[0].to_dict()
    for key in ("series_uid", "modality", "description", "images", "size", "orientation", "geometry"):
        assert key in d
    assert d["size"] == [SHAPE[0], SHAPE[1]] and d["orientation"] == "LPS" and d["geometry"] == "ok"


def test_localizer_and_non_image_objects_are_ignored(phantom: Volume, tmp_path: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    paths = _write(phantom, tmp_path)
    # a localizer inside the same series: one coronal image
    ds = pydicom.dcmread(paths[0])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "localizer.dcm")
    # a separate localizer series
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "localizer_series.dcm")
    for name in ("rtstruct.dcm", "test-SR.dcm", "liver_1frame.dcm"):  # RTSTRUCT, SR, SEG
        shutil.copy(get_testdata_file(name), tmp_path / name)
    (tmp_path / "notes.txt").write_text("not dicom")
    v = load(tmp_path)
    assert np.array_equal(v.array, phantom.array)
    assert any("ignored 4 file(s)" in w for w in v.meta["warnings"])
    series = list_series(tmp_path)
    assert [s.localizer for s in series] == [False, True, True]


# -- bad input --------------------------------------------------------------------------------
def test_bad_inputs_raise_input_error(phantom: Volume, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="folder is empty"):
        load(empty)
    text_only = tmp_path / "text"
    text_only.mkdir()
    (text_only / "a.txt").write_text("hello")
    with pytest.raises(InputError, match=r"no DICOM image found in 1 file\(s\) \(1 not DICOM\)"):
        load(text_only)
    paths = _write(phantom, tmp_path / "series")
    junk = tmp_path / "series" / "junk.dcm"
    junk.write_bytes(b"\x00" * 64 + b"definitely not dicom")
    from medseg.io.dicom import is_dicom_file

    assert not is_dicom_file(junk) and is_dicom_file(paths[0])
    with pytest.raises(InputError, match=r"junk\.dcm: .*not a DICOM file|junk\.dcm: no DICOM image"):
        load([*paths, junk])
    with pytest.raises(InputError, match=r"junk\.dcm: .*not a DICOM file|junk\.dcm: no DICOM image"):
        load(tmp_path / "series")  # a .dcm file that is not DICOM, inside a folder
    junk.unlink()
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 500])  # truncated pixel data
    with pytest.raises(InputError, match=rf"{paths[2].name}: truncated file"):
        load(tmp_path / "series")
    paths[3].write_bytes(paths[3].read_bytes()[:200])  # truncated header
    with pytest.raises(InputError, match=rf"{paths[3].name}: no DICOM image: .*truncated header"):
        load(tmp_path / "series")
    with pytest.raises(InputError, match="no such file"):
        load(tmp_path / "missing")
