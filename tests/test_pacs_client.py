"""medseg.pacs without a PACS: URLs, redaction, credentials, the multipart parser, and faults
from a scripted loopback stub server (503 + Retry-After, a stall, a truncated body, no-retry codes)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from medseg.pacs.auth import load_credentials
from medseg.pacs.client import ClientConfig, PacsClient, query_string
from medseg.pacs.errors import (IncompleteSeriesError, PacsAuthError, PacsError, PacsHTTPError,
                                PacsTimeoutError)
from medseg.pacs.multipart import TruncatedMultipartError, boundary_of, iter_parts
from medseg.pacs.query import SeriesRef, matches, parse_where, split_days
from medseg.pacs.redact import redact
from tests.pacs_fixtures import Stub, reply

FAST = ClientConfig(connect_timeout_s=2, read_timeout_s=0.5, max_retries=3, backoff_s=0.01, backoff_max_s=2)


def test_wildcards_are_not_percent_encoded() -> None:
    assert query_string({"PatientName": "HF*", "SeriesDescription": "t1?fl", "X": "a b&c"}) == \
        "PatientName=HF*&SeriesDescription=t1?fl&X=a%20b%26c"


def test_redact_query_strings_credentials_and_secrets() -> None:
    from medseg.pacs.redact import add_secret

    add_secret("hunter2-secret")
    text = ("HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: "
            "/dicom-web/studies?PatientName=DOE^JOHN (pw hunter2-secret) https://u:p@h/x?PatientID=77")
    out = redact(text)
    assert "DOE" not in out and "hunter2" not in out and "PatientID" not in out and "u:p@" not in out
    assert "/dicom-web/studies?<query>" in out


def test_plain_http_to_a_remote_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDSEG_PACS_USER", raising=False)
    monkeypatch.delenv("MEDSEG_PACS_TOKEN", raising=False)
    with pytest.raises(PacsError, match="refusing plain http:// to pacs.example.org"):
        PacsClient("http://pacs.example.org/dicom-web")
    PacsClient("http://pacs.example.org/dicom-web", insecure_http=True).close()
    PacsClient("http://127.0.0.1:8042/dicom-web").close()
    with pytest.raises(PacsError, match="must not hold credentials"):
        PacsClient("https://u:pw@pacs.example.org/dicom-web")


def test_credentials_from_env_or_a_0600_file(tmp_path: Path) -> None:
    creds = load_credentials("basic", environ={"MEDSEG_PACS_USER": "u", "MEDSEG_PACS_PASSWORD": "pw-123"})
    assert creds.header()["Authorization"].startswith("Basic ") and "pw-123" not in repr(creds)
    assert load_credentials("auto", environ={"MEDSEG_PACS_TOKEN": "tok-xyz"}).header() == \
        {"Authorization": "Bearer tok-xyz"}
    assert load_credentials("auto", environ={}).header() == {}
    with pytest.raises(PacsAuthError, match="set MEDSEG_PACS_USER and MEDSEG_PACS_PASSWORD"):
        load_credentials("basic", environ={})
    f = tmp_path / "cred"
    f.write_text("alice:pw-file-1\n")
    f.chmod(0o644)
    with pytest.raises(PacsAuthError, match="readable by others .* chmod 600"):
        load_credentials("basic", f)
    f.chmod(0o600)
    assert load_credentials("basic", f).user == "alice"
    with pytest.raises(PacsAuthError, match="unknown --auth 'digest'; known: auto, none, basic, bearer"):
        load_credentials("digest")


def test_where_parsing_days_and_client_side_matching() -> None:
    assert parse_where(["Modality=CT"]) == {"Modality": "CT"}
    with pytest.raises(PacsError, match="'Modalty' is not a DICOM keyword"):
        parse_where(["Modalty=CT"])
    assert split_days("StudyDate", "20241231-20250101") == ["20241231", "20250101"]
    assert split_days("StudyDate", "20250101-") == ["20250101-"]
    item = {"00080060": {"vr": "CS", "Value": ["CT"]}, "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]},
            "00080020": {"vr": "DA", "Value": ["20250115"]}}
    assert matches(item, {"Modality": "CT", "PatientName": "doe*", "StudyDate": "20250101-20250131"})
    assert matches(item, {"Modality": "MR\\CT"})
    assert not matches(item, {"Modality": "MR"})
    assert not matches(item, {"StudyDate": "20250201-20250228"})
    assert matches(item, {"SeriesDescription": "x*"})  # not returned: not held against it


@pytest.mark.parametrize("quoted", [True, False])
def test_multipart_parts_found_by_boundary_across_every_chunk_split(tmp_path: Path, quoted: bool) -> None:
    boundary = "b0undary-42"
    ctype = f'multipart/related; type="application/dicom"; boundary={json.dumps(boundary) if quoted else boundary}'
    assert boundary_of(ctype) == boundary
    parts = [b"first\r\n--not-the-boundary\r\n", b"", b"x" * 300 + b"\r\n--b0undary-4"]
    body = b"preamble\r\n" + b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n" for p in parts
    ) + f"--{boundary}--\r\n".encode()
    for size in (1, 2, 3, 7, 16, 64, len(body)):
        chunks = [body[i:i + size] for i in range(0, len(body), size)]
        got = [(p.headers["content-type"], p.path.read_bytes()) for p in iter_parts(chunks, boundary, tmp_path)]
        assert got == [("application/dicom", p) for p in parts], size
        for p in tmp_path.iterdir():
            p.unlink()


def test_truncated_multipart_keeps_complete_parts_and_deletes_the_partial_one(tmp_path: Path) -> None:
    body = b"--B\r\n\r\nONE\r\n--B\r\n\r\nTWO-partial"
    seen = []
    with pytest.raises(TruncatedMultipartError, match="truncated"):
        for part in iter_parts([body[:9], body[9:]], "B", tmp_path):
            seen.append(part.path.read_bytes())
    assert seen == [b"ONE"]
    assert [p.read_bytes() for p in tmp_path.iterdir()] == [b"ONE"]


def test_503_with_retry_after_then_success(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDSEG_PACS_USER", raising=False)
    monkeypatch.delenv("MEDSEG_PACS_TOKEN", raising=False)
    with Stub([reply(503, b"busy", {"Retry-After": "1"}), reply(200, b"[]")]) as stub:
        start = time.monotonic()
        with PacsClient(stub.url, config=FAST) as c:
            assert c.get_json("studies", params={"PatientName": "HF*"}) == []
        assert time.monotonic() - start >= 0.9  # Retry-After honoured
        assert len(stub.requests) == 2 and stub.requests[0][1] == "/dicom-web/studies?PatientName=HF*"


@pytest.mark.parametrize("status", [400, 403, 404, 409, 415])
def test_client_errors_are_never_retried(status: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDSEG_PACS_USER", raising=False)
    monkeypatch.delenv("MEDSEG_PACS_TOKEN", raising=False)
    with Stub([reply(status, b"no")]) as stub, PacsClient(stub.url, config=FAST) as c:
        with pytest.raises((PacsHTTPError, PacsAuthError), match=f"HTTP {status}"):
            c.get_json("studies", params={"PatientID": "SECRET-ID-1"})
        assert len(stub.requests) == 1


def test_retries_are_bounded_and_messages_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDSEG_PACS_USER", raising=False)
    monkeypatch.delenv("MEDSEG_PACS_TOKEN", raising=False)
    with Stub([reply(500, b"err")]) as stub, PacsClient(stub.url, config=FAST) as c:
        with pytest.raises(PacsHTTPError, match=r"gave up after 4 tries") as info:
            c.get_json("studies", params={"PatientName": "DOE^JANE"})
        assert len(stub.requests) == 4 and "DOE" not in str(info.value)


def test_401_rereads_credentials_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSEG_PACS_USER", "u")
    monkeypatch.setenv("MEDSEG_PACS_PASSWORD", "old-password")
    monkeypatch.delenv("MEDSEG_PACS_TOKEN", raising=False)
    with Stub([reply(401, b""), reply(200, b"[]")]) as stub, PacsClient(stub.url, config=FAST) as c:
        monkeypatch.setenv("MEDSEG_PACS_PASSWORD", "new-password")
        assert c.get_json("studies") == []
        assert stub.requests[0][2]["Authorization"] != stub.requests[1][2]["Authorization"]
    with Stub([reply(401, b"")]) as stub, PacsClient(stub.url, config=FAST) as c:
        with pytest.raises(PacsAuthError, match="HTTP 401: the PACS refused the credentials") as info:
            c.get_json("studies")
        assert len(stub.requests) == 2 and "new-password" not in str(info.value)


def test_connection_refused_is_a_redacted_pacs_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.delenv("MEDSEG_PACS_USER", raising=False)
    monkeypatch.delenv("MEDSEG_PACS_TOKEN", raising=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with PacsClient(f"http://127.0.0.1:{port}/dicom-web", config=FAST) as c:
        with pytest.raises(PacsError, match="cannot connect") as info:
            c.get_json("studies", params={"PatientName": "DOE^JANE"})
    assert "DOE" not in str(info.value) and "gave up after 4 tries" in str(info.value)


def _series_stub_script(multipart: list) -> list:
    instances = json.dumps([{"00080018": {"vr": "UI", "Value": ["1.2.3.4"]}}]).encode()
    return [reply(200, instances), reply(200, b"[]"), *multipart]


def test_stall_past_the_idle_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medseg.pacs.retrieve import fetch_series

    monkeypatch.delenv("MEDSEG_PACS_USER", raising=False)
    monkeypatch.delenv("MEDSEG_PACS_TOKEN", raising=False)
    ctype = 'multipart/related; type="application/dicom"; boundary=B'
    body = b"--B\r\nContent-Type: application/dicom\r\n\r\n" + b"\0" * 500 + b"\r\n--B--\r\n"
    script = _series_stub_script([reply(200, body, content_type=ctype, stall_s=2.0)])
    with Stub(script) as stub, PacsClient(stub.url, config=FAST) as c:
        start = time.monotonic()
        with pytest.raises(IncompleteSeriesError, match=r"server returned 0/1 instances.*idle read timeout"):
            fetch_series(c, SeriesRef("1.2.3", "1.2.3.9"), tmp_path, rounds=2)
        assert time.monotonic() - start < 10
    assert list((tmp_path / "1.2.3.9").iterdir()) == []  # no partial file left


def test_truncated_multipart_answer_is_an_incomplete_series(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medseg.pacs.retrieve import fetch_series

    monkeypatch.delenv("MEDSEG_PACS_USER", raising=False)
    monkeypatch.delenv("MEDSEG_PACS_TOKEN", raising=False)
    ctype = "multipart/related; type=application/dicom; boundary=B"
    body = b"--B\r\nContent-Type: application/dicom\r\n\r\n" + b"\0" * 500 + b"\r\n--B--\r\n"
    script = _series_stub_script([reply(200, body, content_type=ctype, send=body[:200])])
    with Stub(script) as stub, PacsClient(stub.url, config=FAST) as c:
        with pytest.raises(IncompleteSeriesError, match="server returned 0/1 instances"):
            fetch_series(c, SeriesRef("1.2.3", "1.2.3.9"), tmp_path, rounds=2)
        assert len(stub.requests) == 4  # instance list (2 pages), then 2 bounded retrieve tries
    assert list((tmp_path / "1.2.3.9").iterdir()) == []


def test_logs_hold_no_query_values(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDSEG_PACS_USER", raising=False)
    monkeypatch.delenv("MEDSEG_PACS_TOKEN", raising=False)
    caplog.set_level(logging.DEBUG)
    with Stub([reply(503, b"", {"Retry-After": "0"}), reply(200, b"[]")]) as stub, PacsClient(stub.url, config=FAST) as c:
        c.get_json("studies", params={"PatientName": "ZEBRA^QUAGGA"})
    assert caplog.records and "ZEBRA" not in caplog.text


def test_import_is_light_and_requests_go_only_to_the_pacs(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    code = ("import sys, medseg, medseg.pacs, medseg.cli.pacs_cmds; "
            "assert not {'requests', 'pydicom'} & set(sys.modules), sorted({'requests', 'pydicom'} & set(sys.modules))")
    subprocess.run([sys.executable, "-c", code], check=True)
    monkeypatch.delenv("MEDSEG_PACS_USER", raising=False)
    monkeypatch.delenv("MEDSEG_PACS_TOKEN", raising=False)
    with PacsClient("http://127.0.0.1:9/dicom-web") as c:
        for url in ("http://127.0.0.1:10/dicom-web/studies", "http://127.0.0.1:9/dicom-webX", "http://evil/x"):
            with pytest.raises(PacsError, match="refusing a request outside --pacs"):
                c.request("GET", url)


class _CappingArchive:
    """A fake transport that answers like Orthanc 1.10 with a cap: at most ``cap`` series per query,
    ``offset`` applied after the cap, StudyTime ranges matching no empty StudyTime."""

    def __init__(self, times: list[str], cap: int) -> None:
        self.cap, self.facts, self.calls = cap, {}, []
        self.config = type("Config", (), {"result_cap": cap})()
        self.items = [{"0020000D": {"vr": "UI", "Value": [f"1.2.826.0.1.3680043.8.498.5{n}"]},
                       "0020000E": {"vr": "UI", "Value": [f"1.2.826.0.1.3680043.8.498.6{n}"]},
                       "00080020": {"vr": "DA", "Value": ["20240302"]},
                       "00080030": {"vr": "TM", **({"Value": [t]} if t else {})}} for n, t in enumerate(times)]

    def find(self, level, params, *, page_size=100, max_pages=1000, **kw):  # noqa: ARG002
        self.calls.append(params.get("StudyTime"))
        low, _, high = (params.get("StudyTime") or "-").partition("-")
        chosen = [i for i in self.items if "StudyTime" not in params or
                  (i["00080030"].get("Value") and low <= i["00080030"]["Value"][0] <= high)]
        return chosen[:self.cap]  # the cap before any offset: paging cannot reach past it


def test_a_capped_day_is_halved_by_study_time_until_each_part_is_under_the_cap() -> None:
    from medseg.pacs.query import query_series

    times = ["000001", "063000.5", "120000", "120000.25", "235959.999"]  # fractions and both ends of the day
    archive = _CappingArchive(times, cap=3)  # two in one second: under the cap, so never cut below it
    refs = query_series(archive, where=["StudyDate=20240302"])
    assert len(refs) == 5
    assert archive.calls == [None, "000000-115959.999999", "120000-235959.999999", "120000-175959.999999",
                             "180000-235959.999999"]
    assert max(len(c or "") for c in archive.calls) <= len("000000-235959.999999")


def test_a_capped_day_with_a_series_without_study_time_fails_rather_than_lose_it() -> None:
    from medseg.pacs.query import query_series

    archive = _CappingArchive(["", "080000", "090000", "100000"], cap=3)  # the first has no StudyTime
    with pytest.raises(PacsError, match=r"the day: 1 series of the PACS's capped answer are in no StudyTime half"):
        query_series(archive, where=["StudyDate=20240302"])
