"""Real DICOM: ../shared/data (dcm2niix validation sets) and every file pydicom ships."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import InputError
from medseg.io import list_series, load

PYDICOM_FILES = sorted((Path(__import__("pydicom").__file__).parent / "data" / "test_files").glob("*.dcm"))

#: pydicom test files that are not loadable images, and the reason medseg must give.
EXPECTED_ERRORS = {
    "ExplVR_BigEndNoMeta.dcm": "1 RTPLAN",  # RT Ion Plan, now a known non-image class
    "ExplVR_LitEndNoMeta.dcm": "1 RTPLAN",
    "JPEG2000-embedded-sequence-delimiter.dcm": "cannot decode pixel data (JPEG 2000)",
    "MR_truncated.dcm": "truncated file",
    "UN_sequence.dcm": "no DICOM image",
    "empty_charset_LEI.dcm": "no DICOM image",
    "liver_1frame.dcm": "1 SEG",
    "liver_expb_1frame.dcm": "1 SEG",
    "meta_missing_tsyntax.dcm": "no DICOM image",
    "nested_priv_SQ.dcm": "no DICOM image",
    "no_meta.dcm": "no DICOM image",
    "no_meta_group_length.dcm": "no DICOM image",
    "priv_SQ.dcm": "no DICOM image",
    "reportsi.dcm": "1 SR",
    "reportsi_with_empty_number_tags.dcm": "1 SR",
    "rtplan.dcm": "1 RTPLAN",
    "rtplan_truncated.dcm": "1 RTPLAN",
    "rtstruct.dcm": "1 RTSTRUCT",
    "test-SR.dcm": "1 SR",
    "waveform_ecg.dcm": "1 waveform",
}


def world_index_map(src_affine: np.ndarray, dst_affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Index in ``dst`` of every ``src`` voxel centre, ``(n, 3)``; asserts the grids coincide."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    m = np.linalg.inv(dst_affine) @ src_affine
    dst = idx @ m[:3, :3].T + m[:3, 3]
    rounded = np.rint(dst)
    assert np.max(np.abs(dst - rounded)) < 1e-3, "voxel centres do not coincide in world space"
    return rounded.astype(int)


def assert_same_in_world(a_arr, a_aff, b_arr, b_aff) -> None:
    """Both images hold the same value at every world position (any axis order/flip)."""
    a_arr = np.asarray(a_arr)
    b_arr = np.asarray(b_arr)
    if a_arr.ndim == 2:
        a_arr = a_arr[..., None]
    if b_arr.ndim == 2:
        b_arr = b_arr[..., None]
    assert a_arr.size == b_arr.size
    dst = world_index_map(a_aff, b_aff, a_arr.shape)
    assert np.all(dst >= 0) and np.all(dst < np.array(b_arr.shape)), "grids cover different regions"
    np.testing.assert_array_equal(a_arr.reshape(-1), b_arr[dst[:, 0], dst[:, 1], dst[:, 2]])


# -- dcm_qa_ts: nine transfer syntaxes ---------------------------------------------------------------
def test_nine_transfer_syntaxes_identical(shared_data: Path) -> None:
    import nibabel as nib

    files = sorted((shared_data / "dcm_qa_ts" / "In").glob("*.dcm"))
    assert len(files) == 9
    volumes = [load(f) for f in files]
    syntaxes = {v.meta["transfer_syntax"][0] for v in volumes}
    assert len(syntaxes) >= 7
    for f, v in zip(files, volumes):
        assert np.array_equal(v.array, volumes[0].array), f.name
        np.testing.assert_allclose(v.affine, volumes[0].affine, atol=1e-6)
        ref = nib.load(str(shared_data / "dcm_qa_ts" / "Ref" / f"{f.stem}.nii"))
        assert_same_in_world(v.array, v.affine, np.asanyarray(ref.dataobj), ref.affine)


# -- dcm_qa_decubitus: four patient positions -------------------------------------------------------
POSITIONS = ("HFS", "HFP", "HFDR", "HFDL")


def _series_dir(shared_data: Path, position: str) -> Path:
    (folder,) = (shared_data / "dcm_qa_decubitus" / "In" / position).iterdir()
    return folder


@pytest.mark.parametrize("position", POSITIONS)
def test_decubitus_matches_simpleitk(shared_data: Path, position: str) -> None:
    import SimpleITK as sitk

    folder = _series_dir(shared_data, position)
    v = load(folder)
    assert v.spatial_shape == (256, 256, 35) and v.meta["number_of_slices"] == 35
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    flip = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = flip @ np.array(img.GetDirection()).reshape(3, 3) @ np.diag(img.GetSpacing())
    affine[:3, 3] = flip @ np.array(img.GetOrigin())
    np.testing.assert_allclose(v.affine, affine, atol=1e-4)
    assert np.array_equal(v.array, sitk.GetArrayFromImage(img).transpose(2, 1, 0))


@pytest.mark.apt
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix not installed (make apt-deps)")
@pytest.mark.parametrize("position", POSITIONS)
def test_decubitus_matches_dcm2niix_in_world(shared_data: Path, tmp_path: Path, position: str) -> None:
    import nibabel as nib

    folder = _series_dir(shared_data, position)
    subprocess.run(
        ["dcm2niix", "-z", "n", "-b", "n", "-o", str(tmp_path), "-f", "ref", str(folder)],
        check=True, capture_output=True,
    )
    ref = nib.load(str(tmp_path / "ref.nii"))
    v = load(folder)
    assert_same_in_world(v.array, v.affine, np.asanyarray(ref.dataobj), ref.affine)
    np.testing.assert_allclose(sorted(v.spacing), sorted(ref.header.get_zooms()[:3]), atol=1e-4)


def test_decubitus_list_series(shared_data: Path) -> None:
    series = list_series(shared_data / "dcm_qa_decubitus")
    assert len(series) == 4
    assert {s.images for s in series} == {35}
    assert all(s.geometry == "ok" for s in series)
    with pytest.raises(InputError, match="4 image series"):
        load(shared_data / "dcm_qa_decubitus")


# -- every pixel-bearing file pydicom ships ---------------------------------------------------------
@pytest.mark.parametrize("path", PYDICOM_FILES, ids=[p.name for p in PYDICOM_FILES])
def test_pydicom_files_load_or_explain(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the deliberately odd files
        if path.name in EXPECTED_ERRORS:
            with pytest.raises(InputError) as err:
                load(path)
            assert path.name in str(err.value) and EXPECTED_ERRORS[path.name] in str(err.value)
            return
        v = load(path)
    assert v.array.size > 0
    if v.array.dtype.kind == "f":
        assert np.all(np.isfinite(v.array))
    _compare_with_pydicom(path, v)


def _compare_with_pydicom(path: Path, v) -> None:
    """Monochrome images decoded by pydicom itself: same values after rescale."""
    import pydicom

    ds = pydicom.dcmread(path, force=True)
    if ds.get("SamplesPerPixel", 1) != 1 or ds.get("PhotometricInterpretation", "").startswith("PALETTE"):
        assert v.channel_first and v.array.shape[0] == 3
        return
    try:
        raw = ds.pixel_array
    except Exception:
        return  # pydicom alone cannot decode it (medseg used the SimpleITK fallback)
    if raw.ndim == 2:
        raw = raw[None]
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        expected = apply_modality_lut(raw, ds).astype(np.float64)
    else:
        slope = float(ds.get("DoseGridScaling", ds.get("RescaleSlope", 1)) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        expected = raw.astype(np.float64) * slope + intercept
    got = np.asarray(v.array, dtype=np.float64).transpose(2, 1, 0)
    if "GridFrameOffsetVector" in ds and np.any(np.diff([float(x) for x in ds.GridFrameOffsetVector]) < 0):
        expected = expected[::-1]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_fast_header_reader_agrees_with_pydicom(shared_data: Path, tmp_path: Path) -> None:
    """The minimal header reader gives exactly the frames pydicom gives, on every real file."""
    from medseg.data.dicom_writer import write_dicom_series
    from medseg.data.phantom import make_phantom
    from medseg.io.dicom.fasthdr import read_fast_header
    from medseg.io.dicom.series import iter_files, scan

    image = make_phantom((32, 32, 3), (1.0, 1.0, 2.0), seed=1)[0]
    for syntax in ("explicit_le", "implicit_le", "rle", "jpegls"):
        write_dicom_series(image, tmp_path / syntax, seed=1, transfer_syntax=syntax)
    files = [*PYDICOM_FILES, *iter_files(shared_data), *iter_files(tmp_path)]
    used_fast = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            try:
                slow = scan([path], strict=False, use_fast=False)
            except InputError:
                continue  # corrupt files never reach the fast reader's result
            fast = scan([path], strict=False, use_fast=True)
            assert fast.frames == slow.frames, path.name
            assert fast.skipped == slow.skipped, path.name
            used_fast += read_fast_header(path) is not None
    assert used_fast >= 50  # most real files take the fast path


def test_rtdose_grid_matches_simpleitk() -> None:
    """Multi-frame RT dose: frame positions from GridFrameOffsetVector, DoseGridScaling applied."""
    import SimpleITK as sitk
    from pydicom.data import get_testdata_file

    path = get_testdata_file("rtdose.dcm")
    v = load(path)
    img = sitk.ReadImage(path)
    flip = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = flip @ np.array(img.GetDirection()).reshape(3, 3) @ np.diag(img.GetSpacing())
    affine[:3, 3] = flip @ np.array(img.GetOrigin())
    np.testing.assert_allclose(v.affine, affine, atol=1e-4)
    assert v.array.dtype == np.float32 and v.spatial_shape == (10, 10, 15)


# -- issue 10, item 11: geometry-less images, Modality LUT, quiet SimpleITK fallback -----------------
def _medseg(*args: str) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run([sys.executable, "-m", "medseg.cli.main", *args], capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})


def test_geometry_less_image_is_recorded_and_convert_warns_once(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("SC_rgb.dcm")  # secondary capture: no IPP/IOP
    v = load(path)
    assert v.meta["patient_geometry"] is False
    assert any("geometry is made up" in w for w in v.meta["warnings"])
    assert load(PYDICOM_FILES[0].parent / "CT_small.dcm").meta["patient_geometry"] is True
    out = tmp_path / "sc.nii.gz"
    proc = _medseg("convert", "-i", path, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "made up" in line]
    assert len(lines) == 1 and lines[0].startswith("WARNING") and "SC_rgb.dcm" in lines[0], proc.stderr
    assert out.is_file()


def test_modality_lut_sequence_is_applied() -> None:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_modality_lut

    path = get_testdata_file("mlut_18.dcm")
    ds = pydicom.dcmread(path)
    expected = apply_modality_lut(ds.pixel_array, ds)
    assert not np.array_equal(expected, ds.pixel_array)  # the LUT changes the values
    v = load(path)
    assert v.meta["rescale"] == {"applied_by": "Modality LUT Sequence"}
    np.testing.assert_array_equal(v.array[..., 0].T, expected)


def test_simpleitk_fallback_prints_no_pydicom_traceback(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("JPGExtended.dcm")  # 12-bit JPEG Extended: no pydicom plugin decodes it
    v = load(path)
    assert v.meta["rescale"] == {"applied_by": "SimpleITK"}
    proc = _medseg("convert", "-i", path, "-o", str(tmp_path / "x.nii.gz"))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and 'File "' not in proc.stderr, proc.stderr
    assert "decoded with SimpleITK" in proc.stderr  # one INFO line says what happened


NIBABEL_DATA = Path(__import__("nibabel").__file__).parent / "tests" / "data"


@pytest.mark.parametrize("name", ["anatomical.nii", "reoriented_anat_moved.nii", "resampled_anat_moved.nii",
                                  "standard.nii.gz", "functional.nii", "example4d.nii.gz"])
def test_nibabel_test_niftis_load_as_nibabel_reads_them(name: str) -> None:
    """nibabel's own test files (big-endian int16 and float32, gzip, scaled 4D): medseg's reader, which
    keeps the file's layout and reads it without a memory map, gives nibabel's values and affine;
    4D files with more than one volume, and files with NaN voxels, are refused naming the file."""
    import nibabel as nib

    path = NIBABEL_DATA / name
    img = nib.load(str(path))
    if len(img.shape) > 3 or not np.isfinite(img.get_fdata()).all():
        with pytest.raises(InputError, match=name):
            load(path)
        return
    vol = load(path)
    assert vol.shape == img.shape
    np.testing.assert_array_equal(np.asarray(vol.array, dtype=np.float64), img.get_fdata())
    np.testing.assert_allclose(vol.affine, img.affine)
    assert not isinstance(vol.array, np.memmap)
