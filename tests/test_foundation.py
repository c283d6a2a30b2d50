"""The package itself: light import, fast CLI, network guard, the Volume data model."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys

import numpy as np
import pytest

import medseg
from medseg import InputError, Volume


def test_import_does_not_load_heavy_libraries():
    code = (
        "import sys, medseg, medseg.io, medseg.cli.main;"
        "heavy = [m for m in ('torch', 'monai', 'SimpleITK', 'pydicom', 'nibabel', 'transformers', 'ultralytics')"
        " if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_help_is_fast():
    # CPU time of the child, not wall time: stable on a loaded machine.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, "-m", "medseg", "--help"], capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert out.returncode == 0, out.stderr
    assert "convert" in out.stdout
    assert cpu_seconds < 1.0, f"medseg --help used {cpu_seconds:.2f} s of CPU"


def test_import_medseg_does_not_import_numpy():
    code = "import sys, medseg; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_network_guard_blocks_non_loopback():
    from tests.conftest import NetworkAccessError

    with pytest.raises(NetworkAccessError):
        socket.create_connection(("203.0.113.1", 443), timeout=0.5)


def test_volume_geometry_properties():
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    affine[:3, 3] = [100, 120, -50]
    vol = Volume(np.zeros((4, 5, 6), dtype=np.int16), affine)
    assert vol.spacing == pytest.approx((0.8, 0.8, 2.5))
    assert vol.orientation == "LPS"
    assert vol.origin == (100.0, 120.0, -50.0)
    assert not vol.is_oblique
    np.testing.assert_allclose(vol.world_coordinates([1, 1, 1]), [99.2, 119.2, -47.5])


def test_volume_rejects_bad_shapes():
    with pytest.raises(InputError, match="2D or 3D"):
        Volume(np.zeros((2, 3, 4, 5)))
    with pytest.raises(InputError, match="4x4"):
        Volume(np.zeros((2, 3, 4)), np.eye(3))
    vol = Volume(np.zeros((2, 3, 4)))
    with pytest.raises(InputError, match="spatial shape"):
        vol.with_array(np.zeros((3, 3, 4)))
    assert isinstance(medseg.InputError("x"), ValueError)
