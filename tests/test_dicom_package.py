"""medseg.io.dicom as one package: old import paths, no import circle, the reader's frame table
carried to the SEG writer, and batch discovery using the reader's series scan."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.batch import discover_studies
from medseg.data.dicom_writer import write_dicom_series
from medseg.data.phantom import LABELS, make_phantom
from medseg.io import load

PACKAGE = Path(__file__).resolve().parents[1] / "medseg" / "io" / "dicom"


@pytest.mark.parametrize("old, new", [
    ("medseg.io.dicom_series", "medseg.io.dicom.series"),
    ("medseg.io.dicom_geometry", "medseg.io.dicom.geometry"),
    ("medseg.io.dicom_decode", "medseg.io.dicom.decode"),
    ("medseg.io.dicom_fasthdr", "medseg.io.dicom.fasthdr"),
    ("medseg.io.dicom_mosaic", "medseg.io.dicom.mosaic"),
    ("medseg.io.dicomseg", "medseg.io.dicom.seg"),
])
def test_old_module_paths_reexport_the_package(old: str, new: str) -> None:
    shim, module = importlib.import_module(old), importlib.import_module(new)
    assert module.__all__ and all(getattr(shim, name) is getattr(module, name) for name in module.__all__)


def test_old_public_names_of_medseg_io_dicom() -> None:
    from medseg.io.dicom import SeriesInfo, is_dicom_file, list_series, load_dicom  # noqa: F401
    from medseg.io.dicom_series import FrameHeader, group_series, iter_files, scan  # noqa: F401


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_no_import_circle_inside_the_package() -> None:
    """frames is the floor: geometry and decode import it, never series (which imports geometry)."""
    assert "medseg.io.dicom.series" not in _imports(PACKAGE / "geometry.py")
    assert "medseg.io.dicom.series" not in _imports(PACKAGE / "decode.py")
    assert not {m for m in _imports(PACKAGE / "frames.py") if m.startswith("medseg")}


@pytest.fixture
def series(tmp_path: Path) -> tuple[Path, object, object]:
    image, labels = make_phantom((24, 20, 8), (2.0, 2.0, 3.0), seed=5)
    write_dicom_series(image, tmp_path / "study" / "ct", seed=5, reverse_order=True, instance_number_shuffle=True)
    return tmp_path / "study" / "ct", image, labels


def test_volume_carries_the_frame_table(series) -> None:
    folder, image, _ = series
    v = load(folder)
    table = v.meta["dicom_frames"]
    assert len(table["frames"]) == v.spatial_shape[2] == 8
    assert (table["rows"], table["columns"]) == (20, 24)
    positions = np.array([f["position"] for f in table["frames"]])
    normal = np.cross(table["orientation"][:3], table["orientation"][3:])
    assert np.all(np.diff(positions @ normal) > 0)  # the k axis order of the volume
    lps_k0 = np.diag([-1.0, -1.0, 1.0]) @ v.affine[:3, 3]
    np.testing.assert_allclose(positions[0], lps_k0, atol=1e-4)
    for item in table["frames"]:
        ds = pydicom.dcmread(item["file"], stop_before_pixels=True)
        assert item["sop_instance_uid"] == ds.SOPInstanceUID and item["frame_number"] is None
    import json

    json.dumps(table)  # plain JSON values


def test_seg_writer_opens_one_source_file(series, tmp_path: Path, monkeypatch) -> None:
    from medseg.io.dicom.seg import read_dicom_seg, write_dicom_seg

    folder, _, truth = series
    v = load(folder)
    labels = v.with_array(truth.array[:, :, ::-1].astype(np.uint8), is_label=True)  # reversed-order series
    opened: list[str] = []
    real = pydicom.dcmread

    def counting(fp, *a, **kw):
        opened.append(str(fp))
        return real(fp, *a, **kw)

    monkeypatch.setattr(pydicom, "dcmread", counting)
    out = write_dicom_seg(labels, v.meta["source_files"], tmp_path / "seg.dcm", label_names=LABELS)
    monkeypatch.setattr(pydicom, "dcmread", real)
    sources = [p for p in opened if Path(p).parent == folder]
    assert len(sources) == 1  # patient/study modules only
    back = read_dicom_seg(out, source_files=v.meta["source_files"])
    np.testing.assert_array_equal(back.array, labels.array)


def _non_image(path: Path, sop_class: str, modality: str, study_uid: str, **extra) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = modality, study_uid, generate_uid()
    for k, v in extra.items():
        setattr(ds, k, v)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def test_discovery_skips_rtplan_pdf_sr_in_a_study_folder(series) -> None:
    folder, _, _ = series
    study_uid = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).StudyInstanceUID
    _non_image(folder / "plan.dcm", "1.2.840.10008.5.1.4.1.1.481.5", "RTPLAN", study_uid, RTPlanLabel="plan")
    _non_image(folder / "ionplan", "1.2.840.10008.5.1.4.1.1.481.8", "RTPLAN", study_uid)
    _non_image(folder / "report.dcm", "1.2.840.10008.5.1.4.1.1.104.1", "DOC", study_uid,
               EncapsulatedDocument=b"%PDF-1.4\n%%EOF\n", MIMETypeOfEncapsulatedDocument="application/pdf")
    _non_image(folder / "sr.dcm", "1.2.840.10008.5.1.4.1.1.88.34", "SR", study_uid)
    studies = discover_studies(folder.parent.parent)
    assert [(s.study_id, len(s.files)) for s in studies] == [("study__ct", 8)]
    assert load(studies[0].load_arg).spatial_shape == (24, 20, 8)
