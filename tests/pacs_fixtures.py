"""Fixtures of the PACS tests: a private Orthanc per session (emptied between tests), credentials
in the environment, a tiny scripted HTTP stub for faults. Import the fixtures into a test module."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED_DATA

TEST_USER = "medseg-test"
TEST_PASSWORD = "Pw-7f3c9e1b-never-logged"
DECUBITUS = SHARED_DATA / "dcm_qa_decubitus" / "In"
TS_SERIES = SHARED_DATA / "dcm_qa_ts" / "In"


@pytest.fixture(scope="session")
def orthanc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from medseg.pacs.orthanc import LocalOrthanc, find_orthanc

    if find_orthanc() is None:
        pytest.skip("Orthanc + DICOMweb plugin not installed (apt-get install orthanc orthanc-dicomweb; "
                    "make apt-deps installs them)")
    server = LocalOrthanc(tmp_path_factory.mktemp("orthanc"), user=TEST_USER, password=TEST_PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def orthanc(orthanc_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The session's Orthanc, empty, with its credentials in MEDSEG_PACS_USER/MEDSEG_PACS_PASSWORD."""
    orthanc_server.clear()
    monkeypatch.setenv("MEDSEG_PACS_USER", TEST_USER)
    monkeypatch.setenv("MEDSEG_PACS_PASSWORD", TEST_PASSWORD)
    monkeypatch.delenv("MEDSEG_PACS_TOKEN", raising=False)
    yield orthanc_server
    orthanc_server.clear()


@pytest.fixture
def client(orthanc: Any) -> Iterator[Any]:
    from medseg.pacs.client import ClientConfig, PacsClient

    with PacsClient(orthanc.dicomweb_url, auth="basic",
                    config=ClientConfig(read_timeout_s=30, max_retries=2, backoff_s=0.05)) as c:
        yield c


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random U-Net export shared by the PACS batch tests (DICOMweb and DIMSE): one sliding
    window covers the 65 x 65 x 34 model grid of the 256 x 256 x 35 decubitus MR series."""
    from medseg.testing import make_random_export

    return make_random_export(tmp_path_factory.mktemp("model") / "export", patch_size=(68, 68, 36), overlap=0.0)


def series_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.dcm") if p.is_file())


# -- a scripted stub server ---------------------------------------------------------------------
Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


class Stub:
    """Answers each request with the next handler of ``script`` (the last one repeats);
    ``requests`` records (method, path, headers)."""

    def __init__(self, script: list[Handler]) -> None:
        self.script = script
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        stub = self

        class _H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                stub.requests.append((self.command, self.path, dict(self.headers)))
                n = len(stub.requests) - 1
                stub.script[min(n, len(stub.script) - 1)](self)

            do_GET = do_POST = _any  # noqa: N815

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "Stub":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def reply(status: int, body: bytes = b"[]", headers: dict[str, str] | None = None,
          content_type: str = "application/dicom+json", send: bytes | None = None,
          stall_s: float = 0.0) -> Handler:
    """A handler: ``status`` with ``body`` (Content-Length of ``body``); ``send`` replaces what is
    actually written (a truncated body); ``stall_s`` waits after the headers and first bytes."""
    def handle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        data = body if send is None else send
        if stall_s:
            h.wfile.write(data[:10])
            h.wfile.flush()
            time.sleep(stall_s)
            return
        h.wfile.write(data)
        h.wfile.flush()
        if send is not None:
            h.close_connection = True
    return handle


__all__ = ["orthanc_server", "orthanc", "client", "model", "Stub", "reply", "series_files", "TEST_USER", "TEST_PASSWORD",
           "DECUBITUS", "TS_SERIES"]
