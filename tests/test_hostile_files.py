"""Hostile non-DICOM input (issue 12): detached headers pointing out of their folder, broken
MetaImage/NRRD headers, degenerate volumes, FIFOs and device links. Small crafted files."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import InputError
from medseg.io import load
from medseg.volume import Volume


def _fails_fast(path, match: str) -> str:
    t0 = time.monotonic()
    with pytest.raises(InputError, match=match) as info:
        load(path)
    assert time.monotonic() - t0 < 10
    msg = str(info.value)
    assert Path(path if not isinstance(path, list) else path[0]).name in msg and "\n" not in msg
    return msg


def _mha(path: Path, lines: list[str], data: bytes = b"") -> Path:
    path.write_bytes(("\n".join(lines) + "\n").encode() + data)
    return path


def test_mha_element_data_file_outside_folder_refused(tmp_path):
    secret = tmp_path / "secret.raw"
    secret.write_bytes(bytes(64))
    sub = tmp_path / "case"
    sub.mkdir()
    base = ["ObjectType = Image", "NDims = 3", "DimSize = 4 4 4", "ElementType = MET_UCHAR"]
    _mha(sub / "a.mhd", base + ["ElementDataFile = ../secret.raw"])
    _fails_fast(sub / "a.mhd", "outside the header's folder")
    _mha(sub / "b.mha", base + ["ElementDataFile = /etc/passwd"])
    _fails_fast(sub / "b.mha", "outside the header's folder")
    (sub / "ok.raw").write_bytes(bytes(64))
    _mha(sub / "ok.mhd", base + ["ElementDataFile = ok.raw"])
    assert load(sub / "ok.mhd").shape == (4, 4, 4)


def test_nrrd_data_file_outside_folder_refused(tmp_path):
    (tmp_path / "x.nhdr").write_text(
        "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 4 4 4\nencoding: raw\ndata file: /etc/passwd\n\n")
    _fails_fast(tmp_path / "x.nhdr", "outside the header's folder")


@pytest.mark.parametrize("ndims", ["-1", "0", "7", "x"])
def test_mha_bad_ndims_refused_before_simpleitk(tmp_path, ndims):
    p = _mha(tmp_path / "a.mha", ["ObjectType = Image", f"NDims = {ndims}", "DimSize = 4 4 4",
                                  "ElementType = MET_UCHAR", "ElementDataFile = LOCAL"], bytes(64))
    _fails_fast(p, "NDims")


def test_mha_bad_dimsize_refused(tmp_path):
    for i, size in enumerate(["4 -4 4", "4 4", "100000 100000 100000"]):
        p = _mha(tmp_path / f"a{i}.mha", ["ObjectType = Image", "NDims = 3", f"DimSize = {size}",
                                          "ElementType = MET_UCHAR", "ElementDataFile = LOCAL"], bytes(64))
        _fails_fast(p, "DimSize")


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def test_degenerate_nifti_volumes_refused(tmp_path):
    good = np.zeros((4, 4, 4), np.float32)
    _fails_fast(_nifti(tmp_path / "empty.nii", np.zeros((0, 4, 4), np.float32), np.eye(4)), "no voxels")
    zero = _nifti(tmp_path / "zero.nii", good, np.eye(4))
    raw = bytearray(zero.read_bytes())
    raw[252:256] = np.array([1, 0], "<i2").tobytes()  # qform_code 1, sform_code 0
    raw[84:88] = np.array([0.0], "<f4").tobytes()  # pixdim[2] = 0
    zero.write_bytes(bytes(raw))
    _fails_fast(zero, "voxel size")
    nan = good.copy()
    nan[1, 1, 1] = np.nan
    _fails_fast(_nifti(tmp_path / "nan.nii", nan, np.eye(4)), "NaN or infinite")
    inf = good.copy()
    inf[0, 0, 0] = np.inf
    _fails_fast(_nifti(tmp_path / "inf.nii", inf, np.eye(4)), "NaN or infinite")


def test_nan_affine_names_the_file(tmp_path):
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4))
    img.header["pixdim"][1] = np.nan
    img.header["qform_code"] = 1
    img.header["sform_code"] = 0
    p = tmp_path / "nanaff.nii"
    nib.save(img, str(p))
    raw = bytearray(p.read_bytes())
    raw[280:292] = np.array([np.nan] * 3, "<f4").tobytes()  # srow_x
    p.write_bytes(bytes(raw))
    with pytest.raises(InputError) as info:
        load(p)
    assert "nanaff.nii" in str(info.value)


def test_degenerate_mha_spacing_refused(tmp_path):
    p = _mha(tmp_path / "s.mha", ["ObjectType = Image", "NDims = 3", "DimSize = 2 2 2", "ElementSpacing = 1 0 1",
                                  "ElementType = MET_UCHAR", "ElementDataFile = LOCAL"], bytes(8))
    with pytest.raises(InputError, match="s.mha"):
        load(p)


def test_fifo_and_device_link_are_refused_without_blocking(tmp_path):
    from medseg.io.dicom import list_series
    from medseg.io.dicom.series import iter_files

    fifo = tmp_path / "a.nrrd"
    os.mkfifo(fifo)
    _fails_fast(fifo, "not a regular file")
    os.mkfifo(tmp_path / "b.dcm")
    (tmp_path / "zero.dcm").symlink_to("/dev/zero")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(tmp_path / "c.dcm"))
    _fails_fast(tmp_path / "zero.dcm", "not a regular file")
    _fails_fast([tmp_path / "b.dcm"], "not a regular file")
    assert iter_files(tmp_path) == []
    done = []
    t = threading.Thread(target=lambda: done.append(pytest.raises(InputError, load, tmp_path)), daemon=True)
    t.start()
    t.join(10)
    assert done, "loading a folder of FIFOs blocked"
    with pytest.raises(InputError, match="folder is empty"):
        list_series(tmp_path)
    srv.close()


def test_batch_discovery_skips_fifo(tmp_path):
    from medseg.batch.discover import discover_studies

    os.mkfifo(tmp_path / "a.dcm")
    os.mkfifo(tmp_path / "b.nrrd")
    res: list = []
    t = threading.Thread(target=lambda: res.append(discover_studies(tmp_path)), daemon=True)
    t.start()
    t.join(10)
    assert res == [[]]


def test_volume_nan_affine_message_has_the_file_when_loaded(tmp_path):
    # the bare Volume check has no file name; medseg.io.load adds it
    with pytest.raises(InputError, match="affine contains NaN"):
        Volume(np.zeros((2, 2, 2)), np.full((4, 4), np.nan))


@pytest.mark.parametrize("code", [30, 28])
def test_read_only_or_full_disk_is_one_line_medseg_error_exit_2(tmp_path, monkeypatch, capsys, code):
    import errno
    import sys
    import tempfile

    from medseg.cli.main import main
    from medseg.errors import MedsegError
    from medseg.io import save

    src = _nifti(tmp_path / "in.nii", np.zeros((4, 4, 4), np.int16), np.eye(4))

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(MedsegError, match="out.nii.gz: cannot write") as info:
        save(load(src), tmp_path / "out.nii.gz")
    assert isinstance(info.value, OSError) and info.value.errno in (errno.EROFS, errno.ENOSPC)
    monkeypatch.setattr(sys, "argv", ["medseg", "convert", "-i", str(src), "-o", str(tmp_path / "o.nrrd")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "o.nrrd: cannot write" in err and "\n" not in err and "Traceback" not in err


def test_predict_checks_its_input_before_importing_torch(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from medseg.cli.main import main; sys.argv = ['medseg', 'predict', '-m', sys.argv[1], "
            "'-i', sys.argv[2], '-o', sys.argv[3]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    print('torch' in sys.modules, e.code)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "model"), str(tmp_path / "missing.nii.gz"),
                          str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "2"], out.stdout + out.stderr
    assert "missing.nii.gz: no such file" in out.stderr
