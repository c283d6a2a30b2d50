"""PACS faults against real servers (issue 11): a batch killed with SIGKILL mid-fetch, then
``--resume``; a server that silently truncates query results (Orthanc's ``LimitFindResults``,
and an in-process stub that caps every answer). Loopback only, every wait bounded."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from typer.testing import CliRunner

from medseg.batch.pacs_source import CACHE_NAME
from medseg.io.manifest import latest_records, read_manifest
from medseg.pacs.client import ClientConfig, PacsClient
from medseg.pacs.errors import PacsError
from medseg.pacs.query import query_series
from tests.conftest import REPO_ROOT
from tests.pacs_fixtures import (DECUBITUS, TEST_PASSWORD, TEST_USER, TS_SERIES, Stub, client, orthanc,  # noqa: F401
                                 orthanc_server, series_files)

pytestmark = [pytest.mark.slow, pytest.mark.apt]

HFS = DECUBITUS / "HFS"

# The batch CLI in a child process, each received part slowed down so that a SIGKILL lands
# while instances are being written (the fetch itself is unchanged).
DRIVER = r"""
import sys, time
import medseg.pacs.instances as instances
real = instances.file_uids
def slow(path):
    time.sleep(float(sys.argv[1]))
    return real(path)
instances.file_uids = slow
from medseg.cli.main import app
app(args=sys.argv[2:], prog_name="medseg")
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medseg.testing import make_random_export

    # one sliding window covers the 65 x 65 x 34 model grid of these 256 x 256 x 35 MR series
    return make_random_export(tmp_path_factory.mktemp("model") / "export", patch_size=(68, 68, 36), overlap=0.0)


def _cache_files(out: Path) -> list[Path]:
    cache = out / CACHE_NAME
    try:  # files come and go while the child writes
        return [p for p in cache.rglob("*") if p.is_file()] if cache.is_dir() else []
    except OSError:
        return []


def test_kill_9_mid_fetch_then_resume(orthanc, model, tmp_path: Path) -> None:  # noqa: F811
    """SIGKILL while the series is being written under OUT/pacs_cache, then ``medseg batch --resume``:
    the series completes, its files are the source files byte for byte, no partial file is left,
    and the manifest holds one record, ok."""
    from medseg.cli.main import app

    source = series_files(HFS)
    orthanc.upload(*source)
    header = pydicom.dcmread(source[0], stop_before_pixels=True)
    uid = str(header.SeriesInstanceUID)
    out = tmp_path / "out"
    args = ["batch", "--model", str(model), "--pacs", orthanc.dicomweb_url, "--series", uid, "--output", str(out),
            "--keep-cache", "--formats", "dicomseg"]
    env = {**os.environ, "MEDSEG_PACS_USER": TEST_USER, "MEDSEG_PACS_PASSWORD": TEST_PASSWORD}
    log = tmp_path / "child.log"
    with open(log, "wb") as sink:  # a file, not a pipe: the child never blocks on a full pipe
        child = subprocess.Popen([sys.executable, "-c", DRIVER, "0.1", *args], cwd=REPO_ROOT, env=env,
                                 stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    seen: list[Path] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            seen = [p for p in _cache_files(out) if p.suffix in (".part", ".dcm")]
            if seen:
                break
            time.sleep(0.01)
        killed_mid_fetch = child.poll() is None and bool(seen)
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
    if killed_mid_fetch:
        assert child.returncode == -signal.SIGKILL
        left = _cache_files(out)
        dcm = [p for p in left if p.suffix == ".dcm"]
        assert len(dcm) < len(source), "the kill should have landed before the last instance"
        assert not read_manifest(out / "manifest.jsonl")  # died before segmenting
    else:  # the child finished (or failed) before the first file showed: the resume must still hold
        assert child.returncode == 0, log.read_text(errors="replace")[-3000:]

    result = CliRunner().invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    folder = out / CACHE_NAME / uid
    by_sop = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in source}
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{sop}.dcm" for sop in by_sop)
    for sop, path in by_sop.items():
        assert (folder / f"{sop}.dcm").read_bytes() == path.read_bytes()
    assert [p for p in out.rglob("*") if p.suffix == ".part" or p.name.startswith("tmp")] == []
    assert not (out / CACHE_NAME / ".incomplete").exists()
    entries = read_manifest(out / "manifest.jsonl")
    assert [(e["study_id"], e["status"]) for e in entries] == [(uid, "ok")]
    assert latest_records(entries)[uid]["outputs"]["dicomseg"]["path"]


# -- servers that truncate query answers silently -----------------------------------------------
LIMIT = 2
DAYS = ("20240301", "20240302", "20240303")
#: series per day of :data:`DAYS`: the middle day holds more than Orthanc answers (LIMIT + 1)
PER_DAY = (2, 5, 2)
#: a day whose four series share one StudyTime second: no StudyTime half can cut it under the cap
SAME_SECOND_DAY = "20240310"


def _dated_series(folder: Path) -> list[tuple[str, list[Path]]]:
    """Small CT series (each its own study): :data:`PER_DAY` on each of :data:`DAYS` at distinct
    StudyTimes, and four at 10:15:00 on :data:`SAME_SECOND_DAY`: (date, files)."""
    from medseg.data.dicom_writer import write_dicom_series
    from medseg.data.phantom import make_phantom

    image, _ = make_phantom((16, 16, 2), (2.0, 2.0, 2.5), seed=1)
    plan = [(day, f"{8 + k:02d}{(17 * k) % 60:02d}{(7 * k) % 60:02d}.{k}") for day, n in zip(DAYS, PER_DAY)
            for k in range(n)] + [(SAME_SECOND_DAY, "101500")] * 4
    out = []
    for n, (day, study_time) in enumerate(plan):
        files = write_dicom_series(image, folder / f"{day}_{n}", seed=n, series_number=n + 1)
        for f in files:
            ds = pydicom.dcmread(f)
            ds.StudyDate = ds.SeriesDate = day
            ds.StudyTime = study_time
            ds.save_as(f)
        out.append((day, files))
    return out


@pytest.fixture(scope="module")
def limited_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A second private Orthanc (same helper as the session's) with ``LimitFindResults`` 2, holding
    one-study CT series (:func:`_dated_series`) and the nine-instance MR series; yields the server
    and ``{day: CT SeriesInstanceUIDs}``."""
    from medseg.pacs.orthanc import LocalOrthanc, find_orthanc

    if find_orthanc() is None:
        pytest.skip("Orthanc + DICOMweb plugin not installed")
    work = tmp_path_factory.mktemp("orthanc_limited")
    series = _dated_series(work / "series")
    server = LocalOrthanc(work / "orthanc", user=TEST_USER, password=TEST_PASSWORD,
                          options={"LimitFindResults": LIMIT})
    server.start()
    try:
        server.upload(*(f for _, files in series for f in files), *series_files(TS_SERIES))
        uids: dict[str, set[str]] = {}
        for day, files in series:
            uids.setdefault(day, set()).add(str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID))
        yield server, uids
    finally:
        if server.process is not None:  # its storage is thrown away: no need for the 3.5 s clean stop
            server.process.kill()
            server.process.wait(timeout=30)
        server.stop()


@pytest.fixture
def limited_client(limited_orthanc, monkeypatch: pytest.MonkeyPatch) -> Iterator[PacsClient]:
    server, _ = limited_orthanc
    monkeypatch.setenv("MEDSEG_PACS_USER", TEST_USER)
    monkeypatch.setenv("MEDSEG_PACS_PASSWORD", TEST_PASSWORD)
    with PacsClient(server.dicomweb_url, auth="basic",
                    config=ClientConfig(read_timeout_s=30, max_retries=2, backoff_s=0.05)) as c:
        yield c


def test_orthanc_cap_beaten_by_per_day_queries_split_by_study_time(limited_orthanc, limited_client,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Orthanc with LimitFindResults 2 answers any series query with at most 3 series (no warning) and
    an empty page at offset 3: paging cannot reach past the cap. medseg measures the cap (3), queries
    a StudyDate range day by day, cuts the day with 5 series by StudyTime until each part is under
    the cap, and finds every series; --max-series still refuses."""
    from medseg.pacs.query import result_cap

    _, by_day = limited_orthanc
    uids = set().union(*(by_day[d] for d in DAYS))
    raw = limited_client.get_json("series", params={"Modality": "CT", "StudyDate": DAYS[1]})
    assert len(raw) == LIMIT + 1 < PER_DAY[1]  # the server really truncates, silently
    assert limited_client.get_json("series", params={"Modality": "CT", "StudyDate": DAYS[1], "offset": LIMIT + 1}) == []
    assert result_cap(limited_client) == LIMIT + 1
    caplog.set_level(logging.INFO, logger="medseg.pacs")
    refs = query_series(limited_client, where=["Modality=CT", f"StudyDate={DAYS[0]}-{DAYS[-1]}"])
    assert {r.series_uid for r in refs} == uids and len(refs) == sum(PER_DAY)
    assert [r.study_date for r in refs] == sorted(r.study_date for r in refs)
    assert "day 2 of 3 reached the PACS's cap (3): split in two by StudyTime" in caplog.text
    assert "day 1 of 3 reached" not in caplog.text  # a day under the cap is one query
    assert DAYS[1] not in caplog.text
    refs = query_series(limited_client, where=[f"StudyDate={DAYS[1]}"], page_size=1)
    assert {r.series_uid for r in refs} == by_day[DAYS[1]]
    with pytest.raises(PacsError, match=f"matched {len(uids)} series, more than --max-series {len(uids) - 1}"):
        query_series(limited_client, where=["Modality=CT", f"StudyDate={DAYS[0]}-{DAYS[-1]}"],
                     max_series=len(uids) - 1)


def test_orthanc_cap_that_cannot_be_split_fails_the_query(limited_orthanc, limited_client) -> None:
    """A day whose series share one StudyTime second, an undated query and a query with the user's own
    StudyTime filter cannot be cut under the cap: the query fails (naming the part, not the values)
    instead of returning 3 of 4, 3 of 13 or 3 of 5 series."""
    with pytest.raises(PacsError, match="the day, StudyTime 101500-101500.999999: the PACS answered 3 series, "
                                        "its cap per query, and the part cannot be split further") as info:
        query_series(limited_client, where=[f"StudyDate={SAME_SECOND_DAY}"])
    assert SAME_SECOND_DAY not in str(info.value)
    with pytest.raises(PacsError, match=r"the query \(no one-day date\): the PACS answered 3 series"):
        query_series(limited_client, where=["Modality=CT"])
    with pytest.raises(PacsError, match="for the day: the PACS answered 3 series") as info:
        query_series(limited_client, where=[f"StudyDate={DAYS[1]}", "StudyTime=000000-235959"])
    assert "000000-235959" not in str(info.value) and DAYS[1] not in str(info.value)


def test_orthanc_cap_over_dimse_is_said_by_status_and_split_the_same_way(limited_orthanc) -> None:
    """Over DIMSE the same Orthanc ends a C-FIND at its cap with status 0xFE00 (2 answers, no probe
    query sent): the busy day is split by StudyTime and found whole; the same-second day fails."""
    pytest.importorskip("pynetdicom")
    from medseg.pacs.dimse import DimseClient

    server, by_day = limited_orthanc
    with DimseClient(server.dicom_url, calling_ae=server.calling_ae) as dimse:
        refs = query_series(dimse, where=["Modality=CT", f"StudyDate={DAYS[0]}-{DAYS[-1]}"])
        assert {r.series_uid for r in refs} == set().union(*(by_day[d] for d in DAYS))
        assert dimse.facts["result_cap"] == LIMIT
        with pytest.raises(PacsError, match="the part cannot be split further"):
            query_series(dimse, where=[f"StudyDate={SAME_SECOND_DAY}"])


def _series_item(n: int) -> dict[str, Any]:
    day = DAYS[n % len(DAYS)]
    return {"0020000D": {"vr": "UI", "Value": [f"1.2.826.0.1.3680043.8.498.1{n}"]},
            "0020000E": {"vr": "UI", "Value": [f"1.2.826.0.1.3680043.8.498.2{n}"]},
            "00080060": {"vr": "CS", "Value": ["CT"]}, "00080020": {"vr": "DA", "Value": [day]},
            "00200011": {"vr": "IS", "Value": [n + 1]}, "00201209": {"vr": "IS", "Value": [3]}}


def capping_stub(items: list[dict[str, Any]], cap: int) -> Stub:
    """A DICOMweb stub that answers at most ``cap`` series (no warning), honours ``limit``/``offset``
    and filters on StudyDate (a single day or none)."""
    def handle(h: Any) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(h.path).query)
        chosen = [i for i in items if "StudyDate" not in query or i["00080020"]["Value"][0] == query["StudyDate"][0]]
        offset = int(query.get("offset", ["0"])[0])
        limit = int(query.get("limit", [str(cap)])[0])
        body = json.dumps(chosen[offset:offset + min(limit, cap)]).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/dicom+json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    return Stub([handle])


def test_stub_that_caps_each_answer_is_paged_to_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that truncates every answer to 2 but honours limit/offset: paging finds all 7 series
    (plain and per day), and --max-series refuses 7 > 6 after paging them all."""
    monkeypatch.setenv("MEDSEG_PACS_USER", TEST_USER)
    monkeypatch.setenv("MEDSEG_PACS_PASSWORD", TEST_PASSWORD)
    items = [_series_item(n) for n in range(7)]
    wanted = {i["0020000E"]["Value"][0] for i in items}
    with capping_stub(items, cap=2) as stub, PacsClient(stub.url, auth="basic",
                                                        config=ClientConfig(read_timeout_s=10, max_retries=0)) as c:
        assert {r.series_uid for r in query_series(c, where=["Modality=CT"])} == wanted
        queries = [urllib.parse.parse_qs(urllib.parse.urlsplit(p).query) for _, p, _ in stub.requests]
        # the cap probe (series, studies, instances of limit 10000) sees nothing past its answer: no cap
        assert [q["limit"] for q in queries if "offset" not in q] == [["10000"]] * 3 and c.facts["result_cap"] is None
        offsets = [q["offset"][0] for q in queries if "offset" in q]
        assert offsets == ["0", "2", "4", "6", "7"]  # pages of 2, 2, 2, 1, then the empty page
        refs = query_series(c, where=[f"StudyDate={DAYS[0]}-{DAYS[-1]}"])
        assert {r.series_uid for r in refs} == wanted
        with pytest.raises(PacsError, match="matched 7 series, more than --max-series 6"):
            query_series(c, where=["Modality=CT"], max_series=6)
