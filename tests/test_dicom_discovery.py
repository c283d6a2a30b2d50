"""Issue 10, items 7, 8, 11: DICOMDIR folders, studies as a user means them, SEG codes and logs."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.batch import discover_studies
from medseg.data.dicom_writer import write_dicom_series
from medseg.data.phantom import LABELS, make_phantom
from medseg.io import list_series, load
from medseg.io.dicom.seg import write_dicom_seg


def _series(folder: Path, seed: int = 1, **kw) -> list[Path]:
    image, _ = make_phantom((20, 16, 6), (2.0, 2.0, 3.0), seed=seed)
    return write_dicom_series(image, folder, seed=seed, **kw)


# -- 7: DICOMDIR ------------------------------------------------------------------------------------------
def _dicomdir_export(root: Path) -> Path:
    """A CD/PACS-style export: DICOMDIR at the top, files renamed by pydicom's FileSet."""
    from pydicom.fileset import FileSet

    src = root.parent / "src"
    fs = FileSet()
    for path in _series(src):
        fs.add(pydicom.dcmread(path))
    fs.write(root)
    return root


def test_dicomdir_folder_loads_lists_and_discovers(tmp_path: Path) -> None:
    root = _dicomdir_export(tmp_path / "cd")
    assert (root / "DICOMDIR").is_file()
    assert load(root).spatial_shape == (20, 16, 6)
    assert [s.images for s in list_series(root)] == [6]
    studies = discover_studies(root)
    assert len(studies) == 1 and len(studies[0].files) == 6
    assert not any(Path(f).name == "DICOMDIR" for f in studies[0].files)


def test_dicomdir_alone_is_not_an_image(tmp_path: Path) -> None:
    from medseg.errors import InputError

    root = _dicomdir_export(tmp_path / "cd")
    with pytest.raises(InputError, match="DICOMDIR"):
        load([root / "DICOMDIR"])


# -- 8: discovery ---------------------------------------------------------------------------------------------
def _localizer(path: Path, like: Path, iop: list[float], series_uid: str | None = None) -> None:
    ds = pydicom.dcmread(like)
    ds.ImageOrientationPatient = iop
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    if series_uid:
        ds.SeriesInstanceUID = series_uid
    ds.save_as(path)


def test_localizer_series_never_becomes_a_study(tmp_path: Path) -> None:
    files = _series(tmp_path / "study" / "ct")
    scout = tmp_path / "study" / "scout"
    scout.mkdir()
    uid = pydicom.uid.generate_uid()
    _localizer(scout / "ap.dcm", files[0], [1, 0, 0, 0, 0, -1], uid)
    _localizer(scout / "lat.dcm", files[1], [0, 1, 0, 0, 0, -1], uid)
    assert [s.study_id for s in discover_studies(tmp_path)] == ["study__ct"]


def test_two_image_scout_without_localizer_type_is_skipped(tmp_path: Path) -> None:
    files = _series(tmp_path / "study" / "ct")
    scout = tmp_path / "study" / "scout"
    scout.mkdir()
    uid = pydicom.uid.generate_uid()
    for name, src, iop in (("ap.dcm", files[0], [1, 0, 0, 0, 0, -1]), ("lat.dcm", files[1], [0, 1, 0, 0, 0, -1])):
        ds = pydicom.dcmread(src)
        ds.ImageOrientationPatient, ds.SeriesInstanceUID = iop, uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(scout / name)
    assert [s.study_id for s in discover_studies(tmp_path)] == ["study__ct"]


def test_same_series_in_two_folders_is_two_studies(tmp_path: Path) -> None:
    _series(tmp_path / "export" / "orig")
    shutil.copytree(tmp_path / "export" / "orig", tmp_path / "export" / "copy")
    studies = discover_studies(tmp_path)
    assert [s.study_id for s in studies] == ["export__copy", "export__orig"]
    for s in studies:
        assert load(s.load_arg).spatial_shape == (20, 16, 6)


def test_identical_instances_in_one_folder_are_dropped_with_a_warning(tmp_path: Path, caplog) -> None:
    files = _series(tmp_path / "study")
    for f in files[:2]:
        shutil.copy(f, tmp_path / "study" / f"{f.stem}_copy.dcm")
    with caplog.at_level(logging.WARNING):
        studies = discover_studies(tmp_path)
        volume = load(tmp_path / "study")
    assert len(studies) == 1 and len(studies[0].files) == 6  # the copies are not part of the study
    assert volume.spatial_shape == (20, 16, 6)
    assert "duplicate file(s)" in caplog.text
    assert any("duplicate file(s)" in w for w in volume.meta["warnings"])


def test_study_ids_come_from_paths_never_uids(tmp_path: Path) -> None:
    _series(tmp_path / "pt1", seed=1, series_number=1)
    _series(tmp_path / "pt1", seed=2, series_number=2, series_description="second")
    studies = discover_studies(tmp_path)
    assert len(studies) == 2
    for s in studies:
        assert s.study_id.startswith("pt1__") and len(s.study_id) == len("pt1__") + 8
        assert s.series_uid not in s.study_id
        assert not any(part in s.study_id for part in s.series_uid.split(".") if len(part) > 4)
    assert discover_studies(tmp_path) == studies  # stable


def test_series_with_several_orientations_uses_the_main_stack(tmp_path: Path, caplog) -> None:
    files = _series(tmp_path / "study")
    uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    for n in range(4):  # a second, smaller stack (4 sagittal images) under the same UID
        ds = pydicom.dcmread(files[n])
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [float(n * 3), 0.0, 0.0]
        ds.SOPInstanceUID, ds.SeriesInstanceUID = pydicom.uid.generate_uid(), uid
        ds.save_as(tmp_path / "study" / f"sag{n}.dcm")
    with caplog.at_level(logging.INFO):
        studies = discover_studies(tmp_path)
        volume = load(tmp_path / "study")
    assert len(studies) == 1 and len(studies[0].files) == 6
    assert "using the main one (6 images" in caplog.text
    assert volume.spatial_shape == (20, 16, 6)


def test_phantom_dicom_cohort_labels_are_not_studies(tmp_path: Path) -> None:
    from medseg.data.cohort import write_cohort

    root = write_cohort(tmp_path / "cohort", n_cases=2, shape=(20, 16, 6), spacing=(2.0, 2.0, 3.0), fmt="dicom")
    assert (root / "labels").is_dir()
    studies = discover_studies(root)
    assert [s.kind for s in studies] == ["dicom", "dicom"]


def test_nifti_beside_dicom_is_a_label_map(tmp_path: Path) -> None:
    from medseg.io import save

    _series(tmp_path / "case")
    volume = load(tmp_path / "case")
    save(volume.with_array(np.zeros(volume.spatial_shape, np.uint8), is_label=True), tmp_path / "case" / "seg.nii.gz")
    assert [s.kind for s in discover_studies(tmp_path)] == ["dicom"]


# -- 11: SEG laterality and highdicom's log -------------------------------------------------------------------
def test_seg_laterality_and_quiet_highdicom(tmp_path: Path, caplog) -> None:
    _series(tmp_path / "ct")
    volume = load(tmp_path / "ct")
    lab = np.zeros(volume.spatial_shape, np.uint8)
    lab[2:6, 2:6, :] = 1
    lab[8:12, 2:6, :] = 2
    lab[14:18, 2:6, :] = 3
    names = {1: "lung_left", 2: "lung_right", 3: "liver"}
    with caplog.at_level(logging.INFO):
        out = write_dicom_seg(volume.with_array(lab, is_label=True), volume.meta["source_files"],
                              tmp_path / "seg.dcm", label_names=names)
    assert not [r for r in caplog.records if r.name.startswith("highdicom") and r.levelno < logging.WARNING]
    ds = pydicom.dcmread(out, stop_before_pixels=True)
    types = {}
    for item in ds.SegmentSequence:
        prop = item.SegmentedPropertyTypeCodeSequence[0]
        mods = [m.CodeMeaning for m in prop.get("SegmentedPropertyTypeModifierCodeSequence", [])]
        types[str(item.SegmentLabel)] = (prop.CodeMeaning, mods)
    assert types == {"lung_left": ("Lung", ["Left"]), "lung_right": ("Lung", ["Right"]), "liver": ("Liver", [])}
    assert LABELS  # the phantom's names go through the same coding
