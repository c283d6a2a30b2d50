"""Shared test fixtures and the network guard.

Every test runs offline: model hubs and downloads must never be tried. Any attempt
to connect to a non-loopback address fails the test.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

for _var, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "YOLO_OFFLINE": "1",
    "MPLBACKEND": "Agg",
    "NO_ALBUMENTATIONS_UPDATE": "1",
}.items():
    os.environ.setdefault(_var, _value)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


class NetworkAccessError(RuntimeError):
    """Raised when a test tries to reach the network."""


def _is_loopback(address: object) -> bool:
    if isinstance(address, tuple) and address:
        host = address[0]
    elif isinstance(address, (str, bytes)):
        return True  # AF_UNIX socket path
    else:
        return False
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost would need DNS


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _guarded_connect(self: socket.socket, address: object):  # type: ignore[no-untyped-def]
    if not _is_loopback(address):
        raise NetworkAccessError(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object):  # type: ignore[no-untyped-def]
    if not _is_loopback(address):
        raise NetworkAccessError(f"test tried to reach the network: {address!r}")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real DICOM data under ../shared/data (read-only)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared test data missing at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _undo_ultralytics_patches():
    """Tests that import ultralytics in this process (its metrics, its loss) must not change the tests that
    follow: its import replaces ``PIL.Image.open`` (a HEIF hook that tries to install pi-heif on unreadable
    images) and sets ``OMP_NUM_THREADS=1``. medseg's own builder undoes both (tests/test_yolo.py checks it);
    this puts them back after any test that left them changed."""
    from PIL import Image

    yield
    if Image.open is not _PIL_OPEN:
        Image.open = _PIL_OPEN
    if os.environ.get("OMP_NUM_THREADS") != _OMP:
        if _OMP is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = _OMP


def _pristine_pil_open():  # type: ignore[no-untyped-def]
    from PIL import Image

    return Image.open


_PIL_OPEN = _pristine_pil_open()  # before any test module imports ultralytics
_OMP = os.environ.get("OMP_NUM_THREADS")
