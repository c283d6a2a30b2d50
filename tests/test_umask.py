"""Outputs honour the umask (issue 10, item 10): every file medseg writes through
``medseg.io.atomic`` gets ``0o666 & ~umask``, like any other tool, so a group can read a
shared project folder. ``tempfile.mkstemp`` alone would leave them ``0600``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from medseg.io import save
from medseg.io.atomic import atomic_path, current_umask, write_text_atomic
from medseg.volume import Volume


@pytest.fixture(params=[0o002, 0o022, 0o077], ids=["umask002", "umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_without_changing_it(umask: int) -> None:
    assert current_umask() == umask
    assert current_umask() == umask  # reading did not reset it


def test_nifti_text_and_metaimage_pair(umask: int, tmp_path: Path) -> None:
    expected = 0o666 & ~umask
    volume = Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.diag([1.0, 2.0, 3.0, 1.0]))
    nifti = save(volume, tmp_path / "img.nii.gz")
    write_text_atomic(tmp_path / "report.json", "{}\n")
    header = save(volume, tmp_path / "img.mhd")  # header + detached data file
    written = [nifti, tmp_path / "report.json", header, *tmp_path.glob("img.*raw")]
    assert len(written) == 4
    for path in written:
        assert _mode(path) == expected, (path.name, oct(_mode(path)))
    assert not list(tmp_path.glob(".*partial*"))


def test_model_export(umask: int, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import torch

    from medseg.models.export import INFO_NAME, WEIGHTS_NAME, save_export

    info = {"model": {"name": "unet3d", "config": {}}, "spatial_dims": 3, "labels": {"0": "background"},
            "preprocessing": {}, "inference": {}}
    out = save_export(tmp_path / "export", {"w": torch.zeros(2)}, info)
    for name in (WEIGHTS_NAME, INFO_NAME):
        assert _mode(out / name) == 0o666 & ~umask, name


def test_explicit_private_mode(umask: int, tmp_path: Path) -> None:
    with atomic_path(tmp_path / "secret.txt", mode=0o600) as tmp:
        tmp.write_text("x")
    assert _mode(tmp_path / "secret.txt") == 0o600


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.nii.gz") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer crashed")
    assert list(tmp_path.iterdir()) == []
