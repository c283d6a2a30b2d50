"""The synthetic CT phantom, its DICOM series writer and cohort folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medseg.data.cohort import write_cohort
from medseg.data.dicom_writer import SOP_CLASSES, TRANSFER_SYNTAXES, write_dicom_series
from medseg.data.phantom import HU, LABELS, make_phantom
from medseg.errors import ConfigError, InputError
from medseg.volume import Volume

SMALL = dict(shape=(40, 36, 10), spacing=(3.0, 3.5, 4.0))
LPS = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture(scope="module")
def default_phantom() -> tuple[Volume, Volume]:
    return make_phantom((96, 96, 64), (2.0, 2.0, 2.5), seed=0)


def _read_series(folder: Path):
    import pydicom

    return [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]


def _hu(ds) -> np.ndarray:
    """Pixel matrix [row, col] in stored units times slope plus intercept."""
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _stack_by_position(datasets) -> tuple[np.ndarray, list]:
    """Volume array [i, j, k] (i = column, j = row) with slices sorted along the normal."""
    iop = np.array(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    ordered = sorted(datasets, key=lambda d: float(np.array(d.ImagePositionPatient, dtype=float) @ normal))
    return np.stack([_hu(d).T for d in ordered], axis=-1), ordered


# ----------------------------------------------------------------------------- phantom
def test_same_seed_gives_identical_arrays_and_other_seeds_differ():
    a_img, a_lab = make_phantom(**SMALL, seed=5)
    b_img, b_lab = make_phantom(**SMALL, seed=5)
    c_img, c_lab = make_phantom(**SMALL, seed=6)
    assert np.array_equal(a_img.array, b_img.array) and np.array_equal(a_lab.array, b_lab.array)
    assert np.array_equal(a_img.affine, b_img.affine)
    assert not np.array_equal(a_lab.array, c_lab.array)  # anatomy jitters with the seed
    assert not np.array_equal(a_img.array, c_img.array)


def test_types_grid_and_metadata(default_phantom):
    image, labels = default_phantom
    assert image.array.dtype == np.int16 and labels.array.dtype == np.uint8
    assert image.spatial_shape == (96, 96, 64) and labels.is_label and not image.is_label
    assert image.same_grid(labels, atol=0)
    assert image.meta["modality"] == "CT"
    assert image.orientation == "LPS"
    assert np.allclose(image.spacing, (2.0, 2.0, 2.5))
    assert labels.meta["labels"]["1"] == "liver"


def test_every_label_present_with_plausible_volume(default_phantom):
    image, labels = default_phantom
    voxel_ml = float(np.prod(image.spacing)) / 1000.0
    volumes = {name: float((labels.array == value).sum()) * voxel_ml for value, name in LABELS.items()}
    assert set(np.unique(labels.array)) == {0, *LABELS}
    assert LABELS[1] == "liver"
    assert 80 < volumes["liver"] < 400
    assert volumes["liver"] > volumes["spleen"] > 3
    for name in ("kidney_left", "kidney_right"):
        assert 5 < volumes[name] < 60
    assert 50 < volumes["lung_left"] < 500 and 50 < volumes["lung_right"] < 500
    assert 0.3 < volumes["tumour"] < 0.2 * volumes["liver"]
    assert 20 < volumes["spine"] < 200


def test_anatomy_sits_where_it_belongs(default_phantom):
    image, labels = default_phantom
    centre = image.world_coordinates((np.array(image.spatial_shape) - 1) / 2.0)

    def centroid(value: int) -> np.ndarray:  # RAS+ mm relative to the field-of-view centre
        return image.world_coordinates(np.argwhere(labels.array == value).mean(axis=0)) - centre

    assert centroid(1)[0] > 0 and centroid(3)[0] > 0  # liver, right kidney: patient's right (+x in RAS)
    assert centroid(4)[0] < 0 and centroid(2)[0] < 0  # spleen, left kidney: patient's left
    assert centroid(5)[2] > centroid(1)[2] and centroid(6)[2] > centroid(3)[2]  # lungs above abdomen
    assert centroid(7)[1] < centroid(1)[1]  # spine posterior to the liver
    # the tumour lies inside the liver: its neighbours are liver or tumour
    from scipy import ndimage

    tumour = labels.array == 8
    shell = ndimage.binary_dilation(tumour) & ~tumour
    assert np.isin(labels.array[shell], (1, 8)).mean() > 0.9


def test_hounsfield_units(default_phantom):
    image, labels = default_phantom
    a, lab = image.array.astype(np.float64), labels.array
    air = a[:4, :4, :]  # corners of the field of view are outside the body
    assert abs(air.mean() - HU["air"]) < 10 and air.min() >= -1024
    assert -880 < a[np.isin(lab, (5, 6))].mean() < -820
    for value in (1, 2, 3, 4):
        assert 30 <= a[lab == value].mean() <= 80, LABELS[value]
    assert a[lab == 7].mean() > 300
    assert a[lab == 8].mean() < a[lab == 1].mean() - 30  # hypodense tumour
    assert 17 < a[lab == 1].std() < 23  # noise_hu=20
    quiet, _ = make_phantom(**SMALL, noise_hu=0.0)
    assert set(np.unique(quiet.array)) <= set(HU.values())


def test_orientation_and_oblique_keep_the_anatomy_in_world_space():
    def liver_centroid(**kw) -> np.ndarray:
        image, labels = make_phantom((48, 48, 32), (4.0, 4.0, 5.0), seed=2, noise_hu=0.0, **kw)
        return image.world_coordinates(np.argwhere(labels.array == 1).mean(axis=0)), image

    ref, lps = liver_centroid()
    ras_c, ras = liver_centroid(orientation="RAS")
    obl_c, obl = liver_centroid(oblique_deg=15.0)
    assert lps.orientation == "LPS" and ras.orientation == "RAS" and not lps.is_oblique
    assert obl.is_oblique and np.allclose(obl.spacing, (4.0, 4.0, 5.0))
    assert np.allclose(ras_c, ref, atol=1e-6)  # same world grid, flipped axes
    assert np.linalg.norm(obl_c - ref) < 4.0  # rotated grid: within a voxel


def test_speed_default_shape():
    make_phantom((16, 16, 8))  # warm-up
    start = time.perf_counter()
    make_phantom((96, 96, 64), (2.0, 2.0, 2.5), seed=3)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    "kwargs",
    [dict(shape=(10, 10)), dict(shape=(0, 10, 10)), dict(spacing=(1.0, 0.0, 1.0)),
     dict(orientation="LLS"), dict(orientation="XYZ"), dict(noise_hu=-1.0), dict(oblique_deg=float("nan"))],
)
def test_bad_arguments_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        make_phantom(**kwargs)


def test_import_is_light():
    code = (
        "import sys, medseg.data, medseg.data.phantom, medseg.data.dicom_writer, medseg.data.cohort;"
        "print(','.join(m for m in ('torch', 'monai', 'pydicom', 'SimpleITK', 'nibabel') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ----------------------------------------------------------------------------- DICOM writer
def test_dicom_round_trip_geometry_with_pydicom(tmp_path):
    image, _ = make_phantom(**SMALL, seed=1)
    paths = write_dicom_series(image, tmp_path, seed=4, series_number=3)
    assert [p.name for p in paths] == [f"S003_I{n:05d}.dcm" for n in range(1, 11)]
    datasets = _read_series(tmp_path)
    m = LPS @ image.affine[:3, :3]
    origin = LPS @ image.affine[:3, 3]
    for k, ds in enumerate(datasets):
        assert ds.SOPClassUID == SOP_CLASSES["CT"] == ds.file_meta.MediaStorageSOPClassUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert (ds.Rows, ds.Columns) == (36, 40)
        assert np.allclose([float(v) for v in ds.PixelSpacing], (3.5, 3.0))  # row, column spacing
        assert np.allclose([float(v) for v in ds.ImageOrientationPatient], [*(m[:, 0] / 3.0), *(m[:, 1] / 3.5)])
        assert np.allclose([float(v) for v in ds.ImagePositionPatient], origin + k * m[:, 2], atol=1e-6)
        assert float(ds.SliceThickness) == 4.0 and int(ds.InstanceNumber) == k + 1
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
        assert np.array_equal(_hu(ds), image.array[:, :, k].T)
    for tag in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientID"):
        assert len({getattr(d, tag) for d in datasets}) == 1
    assert len({d.SOPInstanceUID for d in datasets}) == len(datasets)
    assert datasets[0].PatientID == "PHANTOM001" and str(datasets[0].PatientName) == "Phantom^Test"
    # deterministic UIDs with a seed
    again = write_dicom_series(image, tmp_path / "again", seed=4, series_number=3)
    import pydicom

    assert pydicom.dcmread(again[0]).SOPInstanceUID == datasets[0].SOPInstanceUID
    other = write_dicom_series(image, tmp_path / "other", series_number=3)
    assert pydicom.dcmread(other[0]).SeriesInstanceUID != datasets[0].SeriesInstanceUID


@pytest.mark.parametrize("orientation,oblique", [("LPS", 0.0), ("RAS", 0.0), ("LPS", 17.0), ("PLI", 8.0)])
def test_simpleitk_reads_the_phantom_grid(tmp_path, orientation, oblique):
    import SimpleITK as sitk

    image, _ = make_phantom(**SMALL, orientation=orientation, oblique_deg=oblique)
    write_dicom_series(image, tmp_path, seed=0)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    itk = reader.Execute()
    array = sitk.GetArrayFromImage(itk).transpose(2, 1, 0)  # ITK [k, j, i] -> [i, j, k]
    shape = np.array(image.spatial_shape)
    corners = np.array([[x, y, z] for x in (0, shape[0] - 1) for y in (0, shape[1] - 1) for z in (0, shape[2] - 1)])
    itk_world = np.array([itk.TransformIndexToPhysicalPoint([int(c) for c in idx]) for idx in corners])
    # ITK sorts slices along the normal: when k runs against it, ITK's k is ours reversed
    normal = np.cross(*(LPS @ image.affine[:3, :2]).T)
    flip_k = float(normal @ (LPS @ image.affine[:3, 2])) < 0
    ours_idx = corners.copy()
    if flip_k:
        ours_idx[:, 2] = shape[2] - 1 - ours_idx[:, 2]
        array = array[:, :, ::-1]
    ours_world = image.world_coordinates(ours_idx) @ LPS.T
    assert np.abs(itk_world - ours_world).max() < 1e-4
    assert np.array_equal(array, image.array)


@pytest.mark.parametrize("syntax", list(TRANSFER_SYNTAXES))
def test_every_transfer_syntax_decodes_to_identical_pixels(tmp_path, syntax):
    import pydicom
    import SimpleITK as sitk

    image, _ = make_phantom((40, 32, 3), (4.0, 4.0, 5.0), seed=2)
    paths = write_dicom_series(image, tmp_path, transfer_syntax=syntax, seed=0)
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES[syntax]
        assert np.array_equal(_hu(ds), image.array[:, :, k].T)
    # an independent decoder (GDCM inside SimpleITK) agrees
    itk = sitk.GetArrayFromImage(sitk.ReadImage(str(paths[1])))[0]
    assert np.array_equal(itk, image.array[:, :, 1].T)
    # signed storage (values below -1024) survives every codec too
    signed = image.with_array(np.random.default_rng(1).integers(-3000, 3000, image.shape).astype(np.int16))
    ds = pydicom.dcmread(write_dicom_series(signed, tmp_path / "signed", transfer_syntax=syntax)[2])
    assert ds.PixelRepresentation == 1 and np.array_equal(_hu(ds), signed.array[:, :, 2].T)


def test_two_series_share_a_folder(tmp_path):
    image, _ = make_phantom((16, 16, 4), (4.0, 4.0, 5.0))
    write_dicom_series(image, tmp_path, series_number=1, seed=0)
    write_dicom_series(image, tmp_path, series_number=2, series_description="second", seed=0)
    datasets = _read_series(tmp_path)
    assert len(datasets) == 8
    assert len({d.SeriesInstanceUID for d in datasets}) == 2 and len({d.StudyInstanceUID for d in datasets}) == 1
    assert len({d.SOPInstanceUID for d in datasets}) == 8


def test_mr_and_float_volumes(tmp_path):
    import pydicom

    rng = np.random.default_rng(0)
    values = rng.uniform(0.0, 3.0, size=(8, 6, 3))
    volume = Volume(values, np.diag([1.5, 1.5, 3.0, 1.0]), {"modality": "MR"})
    paths = write_dicom_series(volume, tmp_path, modality="MR", series_description="phantom MR")
    ds = pydicom.dcmread(paths[0])
    assert ds.SOPClassUID == SOP_CLASSES["MR"] and ds.Modality == "MR"
    assert np.abs(_hu(ds) - values[:, :, 0].T).max() <= 3.0 / 65535  # quantised to 16 bits
    signed = Volume(np.arange(-50, 46, dtype=np.int16).reshape(4, 8, 3), np.eye(4))
    ds = pydicom.dcmread(write_dicom_series(signed, tmp_path / "signed", modality="MR")[2])
    assert ds.PixelRepresentation == 1 and np.array_equal(ds.pixel_array, signed.array[:, :, 2].T)


def test_reversed_order_and_shuffled_instance_numbers(tmp_path):
    image, _ = make_phantom(**SMALL, seed=1)
    rev = write_dicom_series(image, tmp_path / "rev", reverse_order=True, seed=0)
    datasets = [__import__("pydicom").dcmread(p) for p in rev]
    z = [float(d.ImagePositionPatient[2]) for d in datasets]
    assert [int(d.InstanceNumber) for d in datasets] == list(range(1, 11))
    assert np.all(np.diff(z) < 0)  # instance 1 is the most superior slice
    stacked, _ = _stack_by_position(datasets)
    assert np.array_equal(stacked, image.array)
    write_dicom_series(image, tmp_path / "shuf", instance_number_shuffle=True, seed=3)
    shuffled = _read_series(tmp_path / "shuf")
    numbers = [int(d.InstanceNumber) for d in shuffled]
    assert sorted(numbers) == list(range(1, 11)) and numbers != sorted(numbers)
    assert np.array_equal(_stack_by_position(shuffled)[0], image.array)


def test_k_against_the_normal_lpi(tmp_path):
    image, _ = make_phantom(**SMALL, orientation="LPI")
    write_dicom_series(image, tmp_path, seed=0)
    stacked, ordered = _stack_by_position(_read_series(tmp_path))
    assert np.array_equal(stacked[:, :, ::-1], image.array)  # sorted along S = our k reversed
    assert int(ordered[-1].InstanceNumber) == 1


def test_pitfall_series_positions_and_gantry_tilt(tmp_path):
    image, _ = make_phantom(**SMALL, seed=1)
    offsets = [0, 4, 8, 8, 16, 20, 24, 29, 33, 37]  # duplicate, gap, uneven
    write_dicom_series(image, tmp_path / "uneven", slice_positions=offsets, seed=0)
    datasets = _read_series(tmp_path / "uneven")
    z0 = float(datasets[0].ImagePositionPatient[2])
    assert np.allclose([float(d.ImagePositionPatient[2]) - z0 for d in datasets], offsets)
    with pytest.raises(ConfigError):
        write_dicom_series(image, tmp_path / "bad", slice_positions=[0.0, 1.0])
    write_dicom_series(image, tmp_path / "tilt", gantry_tilt_deg=20.0, seed=0)
    tilted = _read_series(tmp_path / "tilt")
    assert float(tilted[0].GantryDetectorTilt) == 20.0
    shift = np.array(tilted[5].ImagePositionPatient, dtype=float) - np.array(tilted[0].ImagePositionPatient, dtype=float)
    col = np.array(tilted[0].ImageOrientationPatient[3:], dtype=float)
    assert shift @ col == pytest.approx(5 * 4.0 * np.tan(np.radians(20.0)), abs=1e-3)
    assert shift[2] == pytest.approx(20.0, abs=1e-6)


def test_writer_rejects_bad_input(tmp_path):
    image, labels = make_phantom((8, 8, 4))
    with pytest.raises(ConfigError, match="transfer_syntax"):
        write_dicom_series(image, tmp_path, transfer_syntax="jpeg-lossy")
    with pytest.raises(ConfigError, match="JPEG 2000"):
        write_dicom_series(image, tmp_path, transfer_syntax="jpeg2000")
    with pytest.raises(ConfigError, match="modality"):
        write_dicom_series(image, tmp_path, modality="PET")
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    with pytest.raises(InputError, match="orthogonal"):
        write_dicom_series(Volume(image.array, sheared), tmp_path)
    with pytest.raises(InputError, match="3D"):
        write_dicom_series(Volume(image.array[:, :, 0]), tmp_path)


@pytest.mark.apt
@pytest.mark.parametrize("modality,syntax", [("CT", "explicit_le"), ("CT", "jpegls"), ("MR", "implicit_le")])
def test_dciodvfy_reports_no_errors(tmp_path, modality, syntax):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed; `make` installs it")
    image, _ = make_phantom((16, 16, 2), (4.0, 4.0, 5.0))
    path = write_dicom_series(image, tmp_path, modality=modality, transfer_syntax=syntax, seed=0)[0]
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    report = out.stdout + out.stderr
    assert ("CTImage" if modality == "CT" else "MRImage") in report
    assert not [line for line in report.splitlines() if "Error" in line], report


@pytest.mark.apt
@pytest.mark.parametrize("orientation,syntax", [("LPS", "jpeg2000"), ("LPI", "rle")])
def test_dcm2niix_reads_the_phantom_grid(tmp_path, orientation, syntax):
    if shutil.which("dcm2niix") is None:
        pytest.skip("dcm2niix (Debian package dcm2niix) is not installed; `make` installs it")
    import nibabel as nib

    image, _ = make_phantom(**SMALL, seed=1, orientation=orientation)
    write_dicom_series(image, tmp_path / "in", seed=0, transfer_syntax=syntax)  # Debian's build lacks JPEG-LS
    (tmp_path / "out").mkdir()
    subprocess.run(["dcm2niix", "-z", "n", "-f", "%s", "-o", str(tmp_path / "out"), str(tmp_path / "in")],
                   capture_output=True, text=True, check=True)
    (converted,) = (tmp_path / "out").glob("*.nii")
    theirs = nib.as_closest_canonical(nib.load(converted))
    ours = nib.as_closest_canonical(nib.Nifti1Image(image.array, image.affine))
    assert np.abs(theirs.affine - ours.affine).max() < 1e-4
    assert np.array_equal(np.asanyarray(theirs.dataobj), np.asanyarray(ours.dataobj))


@pytest.mark.parametrize(
    "phantom_kw,writer_kw",
    [({}, {}), ({"oblique_deg": 12.0}, {}), ({}, {"reverse_order": True, "transfer_syntax": "rle"}),
     ({"orientation": "LPI"}, {"instance_number_shuffle": True}), ({"orientation": "RAS"}, {"modality": "MR"})],
    ids=["axial", "oblique", "reversed-rle", "lpi-shuffled", "ras-mr"],
)
def test_medseg_io_load_equals_the_phantom(tmp_path, phantom_kw, writer_kw):
    if not (Path(__file__).resolve().parents[1] / "medseg" / "io" / "dicom" / "__init__.py").exists():
        pytest.skip("medseg/io/dicom/ (the DICOM reader) is not in this tree yet")
    from medseg.data.dicom_writer import dicom_grid
    from medseg.io import load

    image, _ = make_phantom(**SMALL, seed=7, **phantom_kw)
    write_dicom_series(image, tmp_path, seed=0, **writer_kw)
    loaded = load(tmp_path)
    expected = dicom_grid(image)  # k along the slice normal, same world positions
    assert loaded.spatial_shape == expected.spatial_shape
    assert np.abs(loaded.affine - expected.affine).max() < 1e-4
    assert np.array_equal(np.asarray(loaded.array), expected.array)


# ----------------------------------------------------------------------------- cohorts
def test_nnunet_cohort(tmp_path):
    from medseg.io import load

    out = write_cohort(tmp_path, 2, shape=(24, 24, 8), spacing=(4.0, 4.0, 5.0), seed=10)
    assert out == tmp_path / "Dataset001_Phantom"
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "CT"} and dataset["numTraining"] == 2
    assert dataset["labels"]["background"] == 0 and dataset["labels"]["liver"] == 1
    assert dataset["file_ending"] == ".nii.gz" and len(dataset["labels"]) == len(LABELS) + 1
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["case_000_0000.nii.gz", "case_001_0000.nii.gz"]
    image = load(out / "imagesTr" / "case_001_0000.nii.gz")
    labels = load(out / "labelsTr" / "case_001.nii.gz")
    ref_image, ref_labels = make_phantom((24, 24, 8), (4.0, 4.0, 5.0), seed=11)
    assert np.array_equal(image.array, ref_image.array) and np.array_equal(labels.array, ref_labels.array)
    assert np.allclose(labels.affine, ref_labels.affine)
    with pytest.raises(ConfigError, match="nnU-Net"):
        write_cohort(tmp_path, 1, dataset_name="phantoms")
    with pytest.raises(ConfigError, match="format"):
        write_cohort(tmp_path, 1, fmt="coco")


@pytest.mark.parametrize("orientation", ["LPS", "LPI"])
def test_dicom_cohort_labels_match_the_dicom_grid(tmp_path, orientation):
    import SimpleITK as sitk

    from medseg.io import load

    root = write_cohort(
        tmp_path, 2, shape=(24, 20, 6), spacing=(4.0, 4.5, 5.0), fmt="dicom", seed=3, orientation=orientation
    )
    manifest = json.loads((root / "cohort.json").read_text())
    assert [c["id"] for c in manifest["cases"]] == ["case_000", "case_001"]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(root / "case_001")))
    itk = reader.Execute()
    labels = load(root / manifest["cases"][1]["label"])
    assert labels.spatial_shape == itk.GetSize()
    assert np.allclose(itk.GetOrigin(), LPS @ labels.affine[:3, 3], atol=1e-4)
    assert np.allclose(np.array(itk.GetDirection()).reshape(3, 3), LPS @ labels.direction, atol=1e-6)
    assert np.allclose(itk.GetSpacing(), labels.spacing, atol=1e-6)
    # the label map is the phantom's, seen on the reader's grid: same label at the same world point
    _, ref = make_phantom((24, 20, 6), (4.0, 4.5, 5.0), seed=4, orientation=orientation)
    idx = np.array([[3, 4, 0], [12, 10, 5], [20, 2, 2]])
    world = labels.world_coordinates(idx)
    ref_idx = np.rint((world - ref.affine[:3, 3]) @ np.linalg.inv(ref.affine[:3, :3]).T).astype(int)
    assert [labels.array[tuple(i)] for i in idx] == [ref.array[tuple(i)] for i in ref_idx]
    assert np.array_equal(np.sort(labels.array, axis=None), np.sort(ref.array, axis=None))
    patient_ids = {__import__("pydicom").dcmread(next((root / c["id"]).iterdir())).PatientID for c in manifest["cases"]}
    assert patient_ids == {"PHANTOM000", "PHANTOM001"}


def test_dicom_grid_flips_k_only_when_it_runs_against_the_normal():
    from medseg.data.dicom_writer import dicom_grid

    lps, _ = make_phantom((8, 8, 5), (1.0, 1.0, 2.0), noise_hu=0.0)
    assert dicom_grid(lps) is lps
    lpi, _ = make_phantom((8, 8, 5), (1.0, 1.0, 2.0), noise_hu=0.0, orientation="LPI")
    flipped = dicom_grid(lpi)
    assert flipped.orientation == "LPS"
    assert np.array_equal(flipped.array, lpi.array[:, :, ::-1])
    assert np.allclose(flipped.world_coordinates([2, 3, 0]), lpi.world_coordinates([2, 3, 4]))


def test_cli_phantom_command(tmp_path):
    from typer.testing import CliRunner

    from medseg.cli.main import app

    result = CliRunner().invoke(
        app, ["phantom", str(tmp_path), "--cases", "1", "--shape", "16", "16", "4", "--spacing", "4", "4", "5"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "Dataset001_Phantom" / "labelsTr" / "case_000.nii.gz").is_file()
    bad = CliRunner().invoke(app, ["phantom", str(tmp_path), "--format", "coco"])
    assert bad.exit_code != 0 and isinstance(bad.exception, ConfigError)
