"""medseg.pacs over DIMSE (pynetdicom) against the session's real Orthanc: its DICOM port, in the
same loopback-only network namespace, knows medseg's calling AE title as a modality."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pydicom
import pytest
from typer.testing import CliRunner

from medseg.pacs.errors import IncompleteSeriesError, PacsError
from medseg.pacs.push import push_seg
from medseg.pacs.query import query_series
from medseg.pacs.retrieve import fetch_series
from tests.pacs_fixtures import (DECUBITUS, TEST_PASSWORD, TS_SERIES, client, model, orthanc,  # noqa: F401
                                 orthanc_server, series_files)

pytest.importorskip("pynetdicom")
pytestmark = [pytest.mark.slow, pytest.mark.apt]

HFS = DECUBITUS / "HFS"


@pytest.fixture
def dimse(orthanc):  # noqa: F811
    from medseg.pacs.dimse import DimseClient

    return DimseClient(orthanc.dicom_url, calling_ae=orthanc.calling_ae)


def _sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_cli_ping_and_query_over_dimse(orthanc) -> None:  # noqa: F811
    from medseg.cli.main import app

    orthanc.upload(*series_files(HFS), *series_files(TS_SERIES))
    runner = CliRunner()
    result = runner.invoke(app, ["pacs", "ping", "--pacs", orthanc.dicom_url])
    assert result.exit_code == 0 and result.output.startswith(f"ok: {orthanc.dicom_url} answered C-ECHO"), result.output
    result = runner.invoke(app, ["pacs", "query", "--pacs", orthanc.dicom_url, "--where", "Modality=MR",
                                 "--where", "StudyDate=20220401-20220430", "--json"])  # 30 C-FINDs on one association
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)
    assert row["n_instances"] == 35 and "crlab" not in result.output
    refused = runner.invoke(app, ["pacs", "ping", "--pacs", orthanc.dicom_url, "--calling-ae", "STRANGER"])
    assert isinstance(refused.exception, PacsError)
    assert "rejected the association (is the calling AE title STRANGER registered" in str(refused.exception)
    wrong = runner.invoke(app, ["pacs", "ping", "--pacs", orthanc.dicom_url, "--auth", "basic"])
    assert isinstance(wrong.exception, PacsError)
    assert "--auth and --auth-file are DICOMweb credentials" in str(wrong.exception)


def test_dimse_urls_are_checked() -> None:
    from medseg.pacs.connect import open_client
    from medseg.pacs.dimse import DimseClient

    assert DimseClient("dicom://PACS@127.0.0.1:104").base_url == "dicom://PACS@127.0.0.1:104"
    for bad, why in [("dicom://127.0.0.1:104", "dicom://AE_TITLE@host:port"),
                     ("dicom://PACS@127.0.0.1", "dicom://AE_TITLE@host:port"),
                     ("dicom://PACS:pw@127.0.0.1:104", "no password"),
                     ("dicom://PACS@127.0.0.1:104/x?PatientID=SECRET-7", "no password, path or query"),
                     ("dicom://PACS@10.1.2.3:104", "refusing unencrypted DIMSE to 10.1.2.3"),
                     ("dicom://A_TITLE_LONGER_THAN_16@127.0.0.1:104", "not a valid DICOM called AE title")]:
        with pytest.raises(PacsError, match=why) as info:
            DimseClient(bad)
        assert "SECRET-7" not in str(info.value)
    assert DimseClient("dicom://PACS@10.1.2.3:104", insecure=True).host == "10.1.2.3"
    with pytest.raises(PacsError, match="--calling-ae names medseg's DICOM AE title"):
        open_client("https://pacs.example.org/dicom-web", calling_ae="MEDSEG")


def test_c_get_brings_nine_transfer_syntaxes_untranscoded(orthanc, dimse, tmp_path: Path) -> None:  # noqa: F811
    source = {_sop(f): f for f in series_files(TS_SERIES)}
    orthanc.upload(*source.values())
    [ref] = query_series(dimse, where=["Modality=MR"])
    assert ref.n_instances == 9
    folder = fetch_series(dimse, ref, tmp_path / "cache")
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{sop}.dcm" for sop in source)
    for sop, path in source.items():  # the stored dataset as sent: same syntax, same elements, same pixel bytes
        got, want = pydicom.dcmread(folder / f"{sop}.dcm"), pydicom.dcmread(path)
        assert got.file_meta.TransferSyntaxUID == want.file_meta.TransferSyntaxUID
        assert got == want and got.PixelData == want.PixelData


def test_c_get_incomplete_series_is_refused(orthanc, dimse, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    import medseg.pacs.retrieve as retrieve

    orthanc.upload(*series_files(TS_SERIES))
    [ref] = query_series(dimse, where=["Modality=MR"])
    real = retrieve.list_instances
    extra = "1.2.826.0.1.3680043.8.498.4243"
    monkeypatch.setattr(retrieve, "list_instances", lambda c, r, **kw: real(c, r, **kw) + [extra])
    with pytest.raises(IncompleteSeriesError, match="server returned 9/10 instances"):
        fetch_series(dimse, ref, tmp_path)


def test_batch_over_dimse_pushes_by_c_store_and_a_repush_is_idempotent(orthanc, dimse, client, model,  # noqa: F811
                                                                        tmp_path: Path, caplog) -> None:
    """``run_pacs_batch`` with a DimseClient: C-FIND, C-GET, segment, C-STORE of the SEG (then listed by
    C-FIND); the SEG is seen over DICOMweb referencing its source; pushing it again adds nothing."""
    from medseg.batch.pacs_source import PUSHED_NAME, run_pacs_batch

    caplog.set_level(logging.DEBUG)
    orthanc.upload(*series_files(HFS))
    out = tmp_path / "out"
    result = run_pacs_batch(model, dimse, out, where=["PatientName=HF*", "Modality=MR"], push=True, report=False)
    assert result.exit_code == 0 and [r["status"] for r in result.records] == ["ok"]
    [push] = [json.loads(line) for line in (out / PUSHED_NAME).read_text().splitlines()]
    assert push["status"] == "ok" and json.loads((out / "run.json").read_text())["pacs"]["pacs"] == orthanc.dicom_url
    seg_series, source = push["seg_series_uid"], result.records[0]["series_uid"]
    assert [s.series_uid for s in query_series(client, where=["Modality=SEG"])] == [seg_series]  # seen over DICOMweb
    [meta] = client.get_json("studies", push["study_uid"], "series", seg_series, "metadata")
    assert meta["00081115"]["Value"][0]["0020000E"]["Value"][0] == source
    assert push_seg(dimse, out / push["seg_path"], push["study_uid"]) == seg_series
    assert [s.n_instances for s in query_series(dimse, where=["Modality=SEG"])] == [1]
    for secret in (TEST_PASSWORD, "crlab", "HF*"):
        assert secret not in caplog.text, secret
