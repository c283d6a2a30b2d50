"""Hostile DICOM headers (issue 12): claimed counts the pixel data cannot hold, damaged slices,
decoder failures. Each case is a small crafted file; every one must end in an InputError naming it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from medseg.errors import InputError  # noqa: E402
from medseg.io import load  # noqa: E402

CT = "1.2.840.10008.5.1.4.1.1.2"
ENH_CT = "1.2.840.10008.5.1.4.1.1.2.1"
MR = "1.2.840.10008.5.1.4.1.1.4"


def make_ds(*, rows: int = 24, cols: int = 24, frames: int = 1, sop: str = CT, z: float = 0.0,
            series: str = "1.2.3.4", instance: int = 1, data: bytes | None = None,
            ts: str = "1.2.840.10008.1.2.1") -> "pydicom.Dataset":
    from pydicom.dataset import Dataset, FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop
    meta.MediaStorageSOPInstanceUID = f"1.2.3.9.{instance}"
    meta.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = f"1.2.3.9.{instance}"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = series
    ds.FrameOfReferenceUID = "1.2.3.5"
    ds.Modality = "CT"
    ds.PatientName = "Secret^Patient"
    ds.InstanceNumber = instance
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = [0.5, 0.5]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, z]
    ds.SliceThickness = 1
    if frames != 1:
        ds.NumberOfFrames = frames
    ds.PixelData = data if data is not None else np.arange(rows * cols, dtype=np.uint16).tobytes()
    return ds


def write(ds, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _loads_fast_to_error(path: Path, match: str) -> InputError:
    t0 = time.monotonic()
    with pytest.raises(InputError, match=match) as info:
        load(path)
    assert time.monotonic() - t0 < 10
    assert str(path.name) in str(info.value) and "Secret" not in str(info.value)
    assert "\n" not in str(info.value)
    return info.value


def test_huge_number_of_frames_refused_before_frame_headers(tmp_path):
    p = write(make_ds(frames=2**31 - 1), tmp_path / "a.dcm")
    _loads_fast_to_error(p, "NumberOfFrames")


def test_number_of_frames_beyond_native_data_refused(tmp_path):
    # one frame of data, 4096 claimed: the SimpleITK fallback used to pad 4095 zero frames
    p = write(make_ds(frames=4096), tmp_path / "a.dcm")
    _loads_fast_to_error(p, "needs .* bytes of pixel data")


def test_empty_per_frame_groups_with_big_count(tmp_path):
    from pydicom.sequence import Sequence

    ds = make_ds(frames=100000, sop=ENH_CT)
    ds.PerFrameFunctionalGroupsSequence = Sequence([])
    p = write(ds, tmp_path / "a.dcm")
    _loads_fast_to_error(p, "NumberOfFrames")


def test_encapsulated_frames_beyond_fragments(tmp_path):
    from pydicom.encaps import encapsulate

    ds = make_ds(frames=5000, ts="1.2.840.10008.1.2.5", data=encapsulate([b"\x00" * 64]))
    p = write(ds, tmp_path / "a.dcm")
    _loads_fast_to_error(p, "fragment")


def test_mosaic_count_of_a_billion(tmp_path):
    ds = make_ds(rows=0, cols=0, data=b"")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "MOSAIC"]
    ds.add_new((0x0019, 0x0010), "LO", "SIEMENS CSA HEADER")
    ds.add_new((0x0019, 0x100A), "US", 60000)
    p = write(ds, tmp_path / "a.dcm")
    _loads_fast_to_error(p, "Rows and Columns|NumberOfImagesInMosaic")
    ds = make_ds(rows=64, cols=64, data=bytes(64 * 64 * 2))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "MOSAIC"]
    ds.add_new((0x0019, 0x0010), "LO", "SIEMENS CSA HEADER")
    ds.add_new((0x0019, 0x100A), "UL", 10**9)
    p = write(ds, tmp_path / "b.dcm")
    _loads_fast_to_error(p, "NumberOfImagesInMosaic|MOSAIC")


def test_zero_rows_refused(tmp_path):
    p = write(make_ds(rows=0, data=b""), tmp_path / "a.dcm")
    _loads_fast_to_error(p, "Rows and Columns must be positive")


def test_truncated_encapsulated_file_skips_simpleitk_fallback(tmp_path):
    from pydicom.encaps import encapsulate

    ds = make_ds(rows=512, cols=512, ts="1.2.840.10008.1.2.4.50",
                 data=encapsulate([b"\xff\xd8\xff\xc0" + bytes(4000)]))
    p = write(ds, tmp_path / "a.dcm")
    p.write_bytes(p.read_bytes()[:-2000])
    _loads_fast_to_error(p, "cannot decode|truncated")


def test_pixel_spacing_zero_refused(tmp_path):
    ds = make_ds()
    ds.PixelSpacing = [0, 0]
    p = write(ds, tmp_path / "a.dcm")
    _loads_fast_to_error(p, "PixelSpacing")
    ds.PixelSpacing = "0"
    p = write(ds, tmp_path / "b.dcm")
    v = load(p)  # a malformed single value is ignored (1 mm, with a warning), never a zero spacing
    assert min(v.spacing) > 0


def test_decoder_panic_becomes_input_error(tmp_path, monkeypatch):
    from medseg.io.dicom import decode

    class PanicException(BaseException):
        pass

    def panic(ds):
        raise PanicException("rle panicked")

    monkeypatch.setattr(type(make_ds()), "pixel_array", property(panic))
    ds = make_ds(ts="1.2.840.10008.1.2.5", data=pydicom.encaps.encapsulate([bytes(64)]))
    p = write(ds, tmp_path / "a.dcm")
    monkeypatch.setattr(decode, "_decode_with_sitk", lambda path, first: None)
    _loads_fast_to_error(p, "panicked")


def test_gdcm_only_series_decoded_in_one_child_and_equal(tmp_path):
    """JPEG Lossless (GDCM the only decoder) is decoded in a child process; pixels equal the native file."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "dcm_qa_ts" / "In"
    if not (shared / "5.dcm").is_file():
        pytest.skip("shared data missing")
    a, b = load(shared / "1.dcm"), load(shared / "5.dcm")
    assert np.array_equal(a.array, b.array)


@pytest.mark.parametrize("tag", [b"\x08\x00\x3e\x10LO", b"\x28\x00\x30\x00DS", b"\x20\x00\x0e\x00UI",
                                 b"\x28\x00\x10\x00US"])
def test_unknown_vr_loads_or_is_an_input_error_without_the_value(tmp_path, tag):
    from medseg.errors import MedsegError

    ds = make_ds()
    ds.SeriesDescription = "Secret^Patient"
    p = write(ds, tmp_path / "a.dcm")
    raw = bytearray(p.read_bytes())
    at = raw.index(tag)
    raw[at + 4:at + 6] = b"ZZ"
    p.write_bytes(bytes(raw))
    try:
        load(p)
    except MedsegError as exc:
        assert "a.dcm" in str(exc) and "Secret" not in str(exc) and "\n" not in str(exc)
