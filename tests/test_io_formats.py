"""NIfTI / NRRD / MetaImage round trips and bad-input handling across formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.data.dicom_writer import write_dicom_series
from medseg.data.phantom import make_phantom
from medseg.errors import InputError
from medseg.io import load, save
from medseg.volume import Volume

FORMATS = ("nii", "nii.gz", "nrrd", "nhdr", "mha", "mhd")


def _oblique_affine() -> np.ndarray:
    a, b = 0.3, -0.2
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.7, 0.8123456789, 2.5])
    affine[:3, 3] = [-10.123456789, 20.5, 33.3333333333]
    return affine


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("kind", ["int16", "label", "float32"])
def test_format_round_trip_exact(tmp_path: Path, ext: str, kind: str) -> None:
    rng = np.random.default_rng(0)
    if kind == "int16":
        array = rng.integers(-1024, 3000, (9, 7, 5)).astype(np.int16)
    elif kind == "label":
        array = rng.integers(0, 4, (9, 7, 5)).astype(np.uint8)
    else:
        array = rng.normal(size=(9, 7, 5)).astype(np.float32)
    volume = Volume(array, _oblique_affine(), {}, is_label=kind == "label")
    path = save(volume, tmp_path / f"x.{ext}")
    back = load(path)
    assert back.array.dtype == array.dtype
    assert np.array_equal(back.array, array)
    # NIfTI stores the affine as float32 (sform): ~1e-6 mm; NRRD/MHA keep float64 text
    atol = 1e-5 if ext.startswith("nii") else 1e-9
    np.testing.assert_allclose(back.affine, volume.affine, atol=atol)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "temporary files left behind"


def test_channel_first_itk_round_trip(tmp_path: Path) -> None:
    rgb = Volume(np.arange(3 * 4 * 5 * 2, dtype=np.uint8).reshape(3, 4, 5, 2), _oblique_affine(), channel_first=True)
    for ext in ("nrrd", "mha"):
        back = load(save(rgb, tmp_path / f"rgb.{ext}"))
        assert back.channel_first and np.array_equal(back.array, rgb.array)
        np.testing.assert_allclose(back.affine, rgb.affine, atol=1e-9)


def test_dicom_to_nifti_to_load(tmp_path: Path) -> None:
    image = make_phantom((24, 20, 6), (1.3, 1.1, 3.0), seed=2, oblique_deg=15)[0]
    write_dicom_series(image, tmp_path / "dcm", seed=1, reverse_order=True)
    dicom = load(tmp_path / "dcm")
    back = load(save(dicom, tmp_path / "ct.nii.gz"))
    assert back.array.dtype == np.int16
    assert np.array_equal(back.array, image.array)
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-5)
    import nibabel as nib

    header = nib.load(str(tmp_path / "ct.nii.gz")).header
    assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 1
    np.testing.assert_allclose(header.get_qform(), header.get_sform(), atol=1e-5)


def test_nifti_nrrd_mha_chain(tmp_path: Path) -> None:
    labels = make_phantom((20, 18, 6), (1.5, 1.5, 2.0), seed=3, orientation="RAS")[1]
    first = save(labels, tmp_path / "a.nii.gz")
    nrrd = save(load(first), tmp_path / "b.nrrd")
    mha = save(load(nrrd), tmp_path / "c.mha")
    back = load(mha)
    assert back.array.dtype == np.uint8
    assert np.array_equal(back.array, labels.array)
    np.testing.assert_allclose(back.affine, labels.affine, atol=1e-5)


def test_sheared_affine_is_never_written(tmp_path: Path) -> None:
    affine = np.eye(4)
    affine[1, 2] = 0.4  # k axis tilted toward j
    volume = Volume(np.zeros((4, 4, 4), np.int16), affine)
    for ext in ("nii.gz", "nrrd", "mha"):
        with pytest.raises(InputError, match="sheared"):
            save(volume, tmp_path / f"s.{ext}")
    assert not list(tmp_path.iterdir())


def test_bad_format_inputs(tmp_path: Path) -> None:
    import nibabel as nib

    four_d = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), str(four_d))
    with pytest.raises(InputError, match=r"4d\.nii\.gz: expected a 2D or 3D image, got a 4D NIfTI"):
        load(four_d)
    bad_files = [
        ("broken.nii.gz", b"\x1f\x8b not really gzip", r"broken\.nii\.gz: not a readable NIfTI"),
        ("bad.nrrd", b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4\n\n", r"bad\.nrrd: not a readable NRRD/MetaImage"),
        ("image.png", b"\x89PNG\r\n", r"unknown image format '\.png'"),
    ]
    for name, content, message in bad_files:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match=message):
            load(tmp_path / name)
    with pytest.raises(InputError, match="cannot write format"):
        save(Volume(np.zeros((2, 2, 2))), tmp_path / "x.png")
