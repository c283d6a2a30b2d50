"""DICOM-SEG from real scanner data (issue 10): Siemens mosaics, de-identified copies, enhanced MR
with per-frame groups only, malformed sources. Each SEG reads back (highdicom) to the labels in
world space, passes dciodvfy where installed, or the source is refused with a one-line medseg error."""

from __future__ import annotations

import gzip
import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.errors import InputError, MedsegError
from medseg.io import load
from medseg.io.dicom.seg import SegCheckError, read_dicom_seg, write_dicom_seg
from medseg.volume import Volume
from tests.test_dicomseg import _world_equal, dciodvfy_errors

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
MOSAICS = sorted((SHARED / "dcm_qa_ts" / "In").glob("*.dcm"))
DECUBITUS = SHARED / "dcm_qa_decubitus" / "In" / "HFS" / "3_t1_fl2d_sag"
NAMES = {1: "lung_left", 2: "kidney right", 3: "liver"}


def _labels(volume: Volume) -> Volume:
    """Three labels touching every slice: boxes of different sizes, label 2 on every other slice."""
    lab = np.zeros(volume.spatial_shape, np.uint8)
    ni, nj, _ = volume.spatial_shape
    lab[ni // 8: ni // 2, nj // 8: nj // 2, :] = 1
    lab[ni // 2 + 2: ni - 4, nj // 4: nj // 2, ::2] = 2
    lab[ni // 4: ni // 2, nj // 2 + 2: nj - 3, 1:] = 3
    return volume.with_array(lab, is_label=True)


def _write_and_compare(volume: Volume, out: Path) -> Path:
    labels = _labels(volume)
    path = write_dicom_seg(labels, volume.meta["source_files"], out, label_names=NAMES)
    _world_equal(labels, read_dicom_seg(path))  # highdicom's own grid, world space
    np.testing.assert_array_equal(read_dicom_seg(path, source_files=volume.meta["source_files"]).array,
                                  labels.array)
    return path


def _decoded(path: Path) -> Volume:
    try:
        return load(path)
    except InputError as exc:
        if "cannot decode" in str(exc):
            pytest.skip(f"{path.name}: transfer syntax not decodable here ({exc})")
        raise


# -- 1: Siemens mosaic -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", MOSAICS, ids=[p.name for p in MOSAICS])
def test_mosaic_seg_holds_every_slice(path: Path, tmp_path: Path) -> None:
    volume = _decoded(path)
    assert volume.spatial_shape[2] == 35
    seg_path = _write_and_compare(volume, tmp_path / "seg.dcm")
    ds = pydicom.dcmread(seg_path, stop_before_pixels=True)
    planes = {tuple(g.PlanePositionSequence[0].ImagePositionPatient) for g in ds.PerFrameFunctionalGroupsSequence}
    assert len(planes) == 35
    refs = {g.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for g in ds.PerFrameFunctionalGroupsSequence}
    assert refs == {volume.meta["dicom_frames"]["frames"][0]["sop_instance_uid"]}  # the single mosaic image


@pytest.mark.apt
def test_mosaic_and_decubitus_segs_pass_dciodvfy(tmp_path: Path) -> None:
    for n, source in enumerate([MOSAICS[0], DECUBITUS, *sorted((SHARED / "dcm_qa_decubitus" / "In").glob("*/*"))]):
        seg = _write_and_compare(load(source), tmp_path / f"seg{n}.dcm")
        assert dciodvfy_errors(seg) == [], source


# -- 2: de-identified sources --------------------------------------------------------------------------
DEID = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber",
        "StudyDate", "StudyTime", "SliceThickness"]


def _copy_series(tmp: Path, edit) -> Path:
    out = tmp / "series"
    out.mkdir()
    for f in sorted(DECUBITUS.iterdir()):
        ds = pydicom.dcmread(f)
        edit(ds)
        ds.save_as(out / f.name)
    return out


@pytest.mark.parametrize("how", ["absent", "empty"])
@pytest.mark.parametrize("keyword", DEID)
def test_deidentified_source_still_gives_a_seg(keyword: str, how: str, tmp_path: Path) -> None:
    def edit(ds: pydicom.Dataset) -> None:
        if how == "absent":
            delattr(ds, keyword)
        else:
            ds[keyword].value = ""

    volume = load(_copy_series(tmp_path, edit))
    seg_path = _write_and_compare(volume, tmp_path / "seg.dcm")
    ds = pydicom.dcmread(seg_path, stop_before_pixels=True)
    if keyword == "SliceThickness":
        thickness = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness
        assert float(thickness) == pytest.approx(float(np.linalg.norm(volume.affine[:3, 2])))
    else:
        assert keyword in ds and str(ds[keyword].value) == ""
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(seg_path) == []


def test_malformed_birth_date_is_written_empty_with_a_warning(tmp_path: Path, caplog) -> None:
    volume = load(_copy_series(tmp_path, lambda ds: setattr(ds, "PatientBirthDate", "/0")))
    with caplog.at_level(logging.WARNING):
        seg_path = _write_and_compare(volume, tmp_path / "seg.dcm")
    assert "PatientBirthDate is not a valid date value" in caplog.text  # named, and
    ours = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("medseg"))
    assert "'/0'" not in ours and "date value '" not in ours  # medseg does not echo the value: a real birth date is patient data
    assert pydicom.dcmread(seg_path, stop_before_pixels=True).PatientBirthDate == ""


# -- 4: every SEG is checked before it counts -------------------------------------------------------------
def test_a_seg_failing_its_check_is_not_left_behind(tmp_path: Path, monkeypatch) -> None:
    from medseg.io.dicom import seg as seg_module

    volume = load(DECUBITUS)

    def broken(seg, table, series_uid):  # a writer bug: frames reference nothing
        for group in seg.PerFrameFunctionalGroupsSequence:
            del group.DerivationImageSequence

    monkeypatch.setattr(seg_module, "_reference_sources", broken)
    with pytest.raises(SegCheckError, match=r"seg\.dcm: the DICOM-SEG written fails its read-back check: frame 1"):
        write_dicom_seg(_labels(volume), volume.meta["source_files"], tmp_path / "seg.dcm", label_names=NAMES)
    assert list(tmp_path.iterdir()) == []
    assert issubclass(SegCheckError, MedsegError)


# -- 5: enhanced MR with per-frame functional groups only ---------------------------------------------------
def _nibabel_file(name: str, tmp: Path) -> Path:
    import nibabel

    src = Path(nibabel.__file__).parent / "nicom" / "tests" / "data" / f"{name}.gz"
    if not src.exists():
        pytest.skip(f"nibabel's test file {name} is not in the installed package")
    out = tmp / name
    out.write_bytes(gzip.decompress(src.read_bytes()))
    return out


def test_enhanced_mr_per_frame_groups_only(tmp_path: Path) -> None:
    path = _nibabel_file("philips_mprage.dcm", tmp_path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert "PixelMeasuresSequence" not in ds.SharedFunctionalGroupsSequence[0]
    volume = load(path)
    assert volume.spatial_shape[2] == int(ds.NumberOfFrames)
    seg_path = _write_and_compare(volume, tmp_path / "seg.dcm")
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    numbers = {int(g.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber)
               for g in seg.PerFrameFunctionalGroupsSequence}
    assert numbers <= set(range(1, int(ds.NumberOfFrames) + 1)) and len(numbers) == volume.spatial_shape[2]
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(seg_path) == []


def test_rtdose_without_shared_groups_writes_a_seg(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    volume = load(get_testdata_file("rtdose.dcm"))
    _write_and_compare(volume, tmp_path / "seg.dcm")


# -- 6: malformed sources: medseg errors naming the file ------------------------------------------------------
def _one_slice(tmp: Path, edit) -> tuple[Volume, Path]:
    series = _copy_series(tmp, edit)
    return load(series), series


def test_source_without_sop_instance_uid(tmp_path: Path) -> None:
    volume, series = _one_slice(tmp_path, lambda ds: delattr(ds, "SOPInstanceUID"))
    with pytest.raises(InputError, match=r"series/\d{4}_[0-9.]+\.dcm: no SOPInstanceUID"):
        write_dicom_seg(_labels(volume), volume.meta["source_files"], tmp_path / "seg.dcm", label_names=NAMES)


def test_number_of_frames_1a(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    path = Path(get_testdata_file("badVR.dcm"))
    volume = load(path)
    with pytest.raises(InputError, match=r"badVR\.dcm: NumberOfFrames '1A' is not an integer"):
        write_dicom_seg(_labels(volume), volume.meta["source_files"], tmp_path / "seg.dcm", label_names=NAMES)


def test_pixel_spacing_zero(tmp_path: Path) -> None:
    from medseg.cli.main import app
    from typer.testing import CliRunner

    def edit(ds: pydicom.Dataset) -> None:
        ds.PixelSpacing = [0, 0]

    series = _copy_series(tmp_path, edit)
    with pytest.raises(InputError, match=r"series/\d{4}_[0-9.]+\.dcm: PixelSpacing 0\\0 is not positive"):
        load(series)
    result = CliRunner().invoke(app, ["convert", str(series), str(tmp_path / "out.nii.gz")])
    assert result.exit_code != 0 and isinstance(result.exception, InputError)  # the CLI's one-line error
