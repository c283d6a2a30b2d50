"""``medseg batch --pacs`` against the session's real Orthanc: query, fetch, segment with a small
random U-Net, push DICOM-SEG, resume without refetching or pushing twice; no PHI in the outputs."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from medseg.batch.pacs_source import CACHE_NAME, PUSHED_NAME, _result_key, run_pacs_batch
from medseg.io.manifest import latest_records, read_manifest
from medseg.pacs.query import query_series
from tests.pacs_fixtures import (DECUBITUS, TEST_PASSWORD, client, model, orthanc, orthanc_server,  # noqa: F401
                                 series_files)

pytestmark = [pytest.mark.slow, pytest.mark.apt]

HFS, HFP, HFDL = DECUBITUS / "HFS", DECUBITUS / "HFP", DECUBITUS / "HFDL"
MISSING = "1.2.826.0.1.3680043.8.498.999999"
PHI = (TEST_PASSWORD, "crlab", "HFS", "HF*")  # the password, PatientID, PatientName and a query value


def _uid(folder: Path) -> str:
    return str(pydicom.dcmread(series_files(folder)[0], stop_before_pixels=True).SeriesInstanceUID)


def _pushed(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / PUSHED_NAME).read_text().splitlines()]


def _searchable_text(path: Path) -> str:
    """What of ``path`` can carry text: a PNG's text chunks (its compressed pixels would match three
    letters by chance), a gzip file's content (a NIfTI header's descrip/aux_file), else the bytes."""
    if path.suffix == ".png":
        from PIL import Image

        with Image.open(path) as img:
            img.load()
            return " ".join(f"{key} {value}" for key, value in img.info.items() if isinstance(value, str))
    raw = path.read_bytes()
    if path.suffix == ".gz":
        import gzip

        raw = gzip.decompress(raw)
    text = raw.decode("utf-8", "replace")
    return re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "", text)


def _assert_no_phi(out: Path, *texts: str) -> None:
    """No secret in any file under ``out`` but the DICOM (the SEG carries the patient module by
    design), nor in ``texts``; the report's embedded images are left out of the search."""
    for path in (p for p in out.rglob("*") if p.is_file() and p.suffix != ".dcm"):
        text = _searchable_text(path)
        for secret in PHI:
            assert secret not in text, (secret, path)
    for secret in PHI:
        assert not any(secret in t for t in texts), secret


class Crash(BaseException):
    """The batch process dying (not an error a push could catch)."""


def _segs(client) -> list[str]:  # noqa: F811
    return sorted(s.series_uid for s in query_series(client, where=["Modality=SEG"]))


def test_push_crash_resume_missing_and_incomplete_series(orthanc, client, model, tmp_path: Path,  # noqa: F811
                                                         caplog, capfd, monkeypatch) -> None:
    """One segmenting run, then two resumed runs that segment nothing:

    A (Python, --series, --push): HFS segmented and pushed; HFP never arrives whole (server returned
      35/36): failed, not segmented; HFDL segmented, then the process dies before its push.
    B (CLI, --where, --push --resume): nothing segmented or fetched again but HFP; HFDL's same SEG
      file pushed once; HFS not pushed again.
    C (Python, --series with a UID the PACS lacks, --push --resume): nothing fetched or pushed; the
      missing series is failed; the server holds one SEG per source series.
    """
    from medseg.cli.main import app
    import medseg.pacs.push as push_module
    import medseg.pacs.retrieve as retrieve

    caplog.set_level(logging.DEBUG)
    hfs, hfdl, hfp = _uid(HFS), _uid(HFDL), _uid(HFP)
    orthanc.upload(*series_files(HFS), *series_files(HFDL), *series_files(HFP))
    real_list, real_fetch, real_push = retrieve.list_instances, retrieve.fetch_series, push_module.push_seg
    # HFP: the QIDO list names one instance more than the server returns, so it never arrives whole
    monkeypatch.setattr(retrieve, "list_instances", lambda c, ref, **kw: real_list(c, ref, **kw) + (
        ["1.2.826.0.1.3680043.8.498.4242"] if ref.series_uid == hfp else []))
    fetched: list[str] = []
    monkeypatch.setattr(retrieve, "fetch_series", lambda c, ref, d, **kw: fetched.append(ref.series_uid) or
                        real_fetch(c, ref, d, **kw))

    def push_or_die(c, seg_path, study_uid):
        if pydicom.dcmread(seg_path, stop_before_pixels=True).ReferencedSeriesSequence[0].SeriesInstanceUID == hfdl:
            raise Crash
        return real_push(c, seg_path, study_uid)

    monkeypatch.setattr(push_module, "push_seg", push_or_die)
    out = tmp_path / "out"
    with pytest.raises(Crash):
        run_pacs_batch(model, client, out, series=[hfs, hfp, hfdl], push=True)  # records stream in this order
    records = latest_records(read_manifest(out / "manifest.jsonl"))
    assert (records[hfs]["status"], records[hfdl]["status"], records[hfp]["status"]) == ("ok", "ok", "failed")
    assert "server returned 35/36 instances" in records[hfp]["error"]["message"]
    assert records[hfs]["result_key"] == _result_key(model, out, {})  # resume keys the series as run_batch does
    assert not (out / "studies" / hfp).exists() and (out / CACHE_NAME / ".incomplete" / hfp).is_dir()
    [push] = _pushed(out)
    assert push["status"] == "ok" and push["series_uid"] == hfs and push["error"] is None
    assert _segs(client) == [push["seg_series_uid"]]
    [meta] = client.get_json("studies", push["study_uid"], "series", push["seg_series_uid"], "metadata")
    assert meta["00081115"]["Value"][0]["0020000E"]["Value"][0] == hfs  # ReferencedSeriesSequence
    seg_file = out / records[hfdl]["outputs"]["dicomseg"]["path"]
    seg_bytes = seg_file.read_bytes()

    monkeypatch.setattr(push_module, "push_seg", real_push)
    fetched.clear()
    result = CliRunner().invoke(app, ["batch", "--model", str(model), "--pacs", orthanc.dicomweb_url, "--where",
                                      "Modality=MR", "--where", "PatientName=HF*", "--output", str(out), "--push",
                                      "--resume"])
    assert result.exit_code == 1, result.output  # HFP still incomplete
    assert fetched == [hfp]
    pushes = _pushed(out)
    assert [(p["series_uid"], p["status"]) for p in pushes] == [(hfs, "ok"), (hfdl, "ok")]
    assert seg_file.read_bytes() == seg_bytes
    assert pushes[1]["seg_sha256"] == records[hfdl]["outputs"]["dicomseg"]["sha256"]
    assert pushes[1]["seg_series_uid"] == str(pydicom.dcmread(seg_file).SeriesInstanceUID)
    assert _segs(client) == sorted(p["seg_series_uid"] for p in pushes)
    assert latest_records(read_manifest(out / "manifest.jsonl"))[hfdl] == records[hfdl]

    fetched.clear()
    third = run_pacs_batch(model, client, out, series=[hfs, hfdl, MISSING], push=True, resume=True)
    assert fetched == [] and third.pushes == [] and third.skipped == 2 and len(_pushed(out)) == 2
    [missing] = third.records
    assert (missing["study_id"], missing["status"]) == (MISSING, "failed")
    assert "not found" in missing["error"]["message"]
    assert json.loads((out / "run.json").read_text())["pacs"]["not_found"] == 1
    assert _segs(client) == sorted(p["seg_series_uid"] for p in pushes)
    assert third.exit_code == 1 and not third.cache_removed  # HFP's parked instances stay for the next try
    _assert_no_phi(out, caplog.text, result.output, *capfd.readouterr())


def test_max_series_refuses_before_fetching(orthanc, client, model, tmp_path: Path) -> None:  # noqa: F811
    from medseg.pacs.errors import PacsError

    orthanc.upload(*series_files(HFS), *series_files(HFP))
    with pytest.raises(PacsError, match="matched 2 series, more than --max-series 1"):
        run_pacs_batch(model, client, tmp_path / "out", where=["Modality=MR"], max_series=1)
    assert not (tmp_path / "out").exists()
    from medseg.cli.main import app

    listed = CliRunner().invoke(app, ["batch", "--model", str(model), "--pacs", orthanc.dicomweb_url, "--where",
                                      "Modality=MR", "--output", str(tmp_path / "out"), "--dry-run", "--json"])
    assert listed.exit_code == 0, listed.output
    assert sorted(r["series_uid"] for r in json.loads(listed.output)) == sorted([_uid(HFS), _uid(HFP)])
    assert not (tmp_path / "out").exists() and "crlab" not in listed.output


def test_cli_refuses_pacs_options_without_pacs(tmp_path: Path) -> None:
    from medseg.cli.main import app

    result = CliRunner().invoke(app, ["batch", "--model", str(tmp_path), "--input", str(tmp_path),
                                      "--output", str(tmp_path / "o"), "--push"])
    assert result.exit_code == 2 and "--push need(s) --pacs" in result.output


# -- fetching overlaps segmenting ----------------------------------------------------------------
FETCH_S, SEGMENT_S = 0.6, 0.8
OVERLAP_UIDS = [f"1.2.826.0.1.3680043.8.498.77.{n}" for n in range(1, 5)]


def slow_segment(study, config) -> dict:
    """A per-study function for the worker process: sleeps, notes when it ran, fails series 3."""
    import time as _time

    start = _time.time()
    _time.sleep(SEGMENT_S)
    with open(Path(config.output_dir) / "segment_times.jsonl", "a") as f:
        f.write(json.dumps({"uid": study.study_id, "start": start, "end": _time.time()}) + "\n")
    failed = study.study_id == OVERLAP_UIDS[2]
    return {"study_id": study.study_id, "input": study.path, "kind": "dicom", "series_uid": study.series_uid,
            "status": "failed" if failed else "ok", "outputs": {}, "metrics": None, "result_key": config.result_key,
            "error": {"type": "InputError", "message": "fake segmentation failure"} if failed else None,
            "timings_s": {"total": SEGMENT_S}}


def test_fetch_of_the_next_series_overlaps_segmenting_and_failures_stay_isolated(model, tmp_path: Path,  # noqa: F811
                                                                                  monkeypatch) -> None:
    """Four series, one worker, prefetch 1; a slow fake fetch (series 2 fails) and a slow fake segment
    (series 3 fails): series 2's fetch starts before series 1's segmentation ends, no fetch runs more
    than workers + prefetch series ahead, and both failures are recorded while the others go on."""
    import time as _time

    import medseg.batch.pacs_source as pacs_source
    from medseg.data.dicom_writer import write_dicom_series
    from medseg.data.phantom import make_phantom
    from medseg.pacs.errors import PacsError
    from medseg.pacs.query import SeriesRef

    image, _ = make_phantom((8, 8, 2), (2.0, 2.0, 2.5), seed=3)
    source = write_dicom_series(image, tmp_path / "source", seed=3)
    fetch_start: dict[str, float] = {}

    def slow_fetch(client, ref, cache):  # noqa: ARG001 - the parent's network thread calls it
        fetch_start[ref.series_uid] = _time.time()
        _time.sleep(FETCH_S)
        if ref.series_uid == OVERLAP_UIDS[1]:
            raise PacsError(f"series {ref.series_uid}: fake fetch failure")
        folder = cache / ref.series_uid
        folder.mkdir(parents=True)
        for f in source:
            (folder / Path(f).name).write_bytes(Path(f).read_bytes())
        return folder

    refs = [SeriesRef(study_uid="1.2.826.0.1.3680043.8.498.76", series_uid=u, modality="CT") for u in OVERLAP_UIDS]
    monkeypatch.setattr(pacs_source, "select_series", lambda client, **kw: (refs, []))
    monkeypatch.setattr(pacs_source, "_fetch", slow_fetch)
    client = type("FakeClient", (), {"base_url": "http://127.0.0.1:1/dicom-web"})()
    out = tmp_path / "out"
    result = run_pacs_batch(model, client, out, series=OVERLAP_UIDS, func=slow_segment, workers=1, prefetch=1,
                            report=False)

    segment = {r["uid"]: r for r in map(json.loads, (out / "segment_times.jsonl").read_text().splitlines())}
    assert sorted(segment) == [OVERLAP_UIDS[0], OVERLAP_UIDS[2], OVERLAP_UIDS[3]]  # series 2 never segmented
    first, _, third, fourth = OVERLAP_UIDS
    assert fetch_start[OVERLAP_UIDS[1]] < segment[first]["end"]  # fetched while series 1 was segmented
    assert fetch_start[fourth] < segment[third]["end"]
    assert fetch_start[third] >= segment[first]["end"]  # bounded: at most 1 + 1 series ahead of the records
    records = latest_records(read_manifest(out / "manifest.jsonl"))
    assert [records[u]["status"] for u in OVERLAP_UIDS] == ["ok", "failed", "failed", "ok"]
    assert "fake fetch failure" in records[OVERLAP_UIDS[1]]["error"]["message"]
    assert records[third]["error"]["message"] == "fake segmentation failure"
    assert records[first]["timings_s"]["fetch"] >= FETCH_S and "fetch_wait" in records[first]["timings_s"]
    assert [r["study_id"] for r in result.records] == OVERLAP_UIDS and result.exit_code == 1
    info = json.loads((out / "run.json").read_text())
    assert (info["ok"], info["failed"], info["pacs"]["fetched"], info["pacs"]["fetch_failed"]) == (2, 2, 3, 1)
    assert not (out / CACHE_NAME / first).exists() and (out / CACHE_NAME / third).is_dir()  # ok ones swept
