"""medseg.pacs against a real Orthanc (Debian orthanc + orthanc-dicomweb) started for the session
in a loopback-only network namespace where the machine allows it; skipped when not installed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from medseg.pacs.client import PacsClient
from medseg.pacs.errors import PacsAuthError, PacsError
from medseg.pacs.push import push_seg
from medseg.pacs.query import query_series
from medseg.pacs.retrieve import fetch_series
from tests.pacs_fixtures import (DECUBITUS, TEST_PASSWORD, TS_SERIES, client, orthanc, orthanc_server,  # noqa: F401
                                 series_files)

pytestmark = [pytest.mark.slow, pytest.mark.apt]

HFS = DECUBITUS / "HFS"
HFP = DECUBITUS / "HFP"


def _uids(files: list[Path]) -> tuple[str, str]:
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def _by_sop(files: list[Path]) -> dict[str, Path]:
    return {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in files}


def test_ping_and_byte_identical_fetch_of_a_real_series(orthanc, client, tmp_path: Path) -> None:  # noqa: F811
    source = series_files(HFS)
    orthanc.upload(*source)
    assert client.ping()["ok"]
    study, series = _uids(source)
    [ref] = query_series(client, series=[series])
    assert (ref.study_uid, ref.modality, ref.n_instances) == (study, "MR", 35)
    folder = fetch_series(client, ref, tmp_path / "cache")
    assert folder == tmp_path / "cache" / series
    fetched = sorted(folder.iterdir())
    assert len(fetched) == 35
    for sop, path in _by_sop(source).items():
        assert (folder / f"{sop}.dcm").read_bytes() == path.read_bytes()


def test_nine_transfer_syntaxes_arrive_nine_of_nine(orthanc, client, tmp_path: Path) -> None:  # noqa: F811
    source = series_files(TS_SERIES)
    orthanc.upload(*source)
    [ref] = query_series(client, where=["Modality=MR"])
    folder = fetch_series(client, ref, tmp_path)
    assert len(list(folder.iterdir())) == 9
    for sop, path in _by_sop(source).items():  # stored as sent: no transcoding, none dropped
        assert (folder / f"{sop}.dcm").read_bytes() == path.read_bytes()


def test_cached_series_is_reused_and_partial_files_swept(orthanc, client, tmp_path: Path,  # noqa: F811
                                                          caplog: pytest.LogCaptureFixture) -> None:
    orthanc.upload(*series_files(HFS))
    [ref] = query_series(client, where=["SeriesDescription=*fl2d*"])
    folder = fetch_series(client, ref, tmp_path)
    files = sorted(folder.iterdir())
    files[3].unlink()
    (folder / "tmp1234.part").write_bytes(b"half")
    caplog.set_level(logging.INFO, logger="medseg.pacs")
    assert fetch_series(client, ref, tmp_path) == folder
    assert sorted(folder.iterdir()) == files
    caplog.clear()
    fetch_series(client, ref, tmp_path)
    assert "already complete in the cache" in caplog.text


def test_wildcard_and_date_queries(orthanc, client) -> None:  # noqa: F811
    orthanc.upload(*series_files(HFS), *series_files(HFP), *series_files(TS_SERIES))
    assert len(query_series(client, where=["SeriesDescription=*fl2d*"])) == 2
    assert len(query_series(client, where=["PatientName=stc*"])) == 1
    assert len(query_series(client, where=["PatientName=st?_test"])) == 1
    assert len(query_series(client, where=["StudyDate=20220406-20220408"])) == 2
    assert len(query_series(client, where=["StudyDate=20140301-20140331", "Modality=MR"])) == 1
    assert query_series(client, where=["StudyDate=20250101-20250131"]) == []
    assert len(query_series(client, where=["Modality=MR"], page_size=1)) == 3  # paged one by one
    with pytest.raises(PacsError, match="matched 3 series, more than --max-series 2"):
        query_series(client, where=["Modality=MR"], max_series=2)


def test_cli_ping_and_query(orthanc) -> None:  # noqa: F811
    from medseg.cli.main import app

    orthanc.upload(*series_files(HFS), *series_files(TS_SERIES))
    runner = CliRunner()
    result = runner.invoke(app, ["pacs", "ping", "--pacs", orthanc.dicomweb_url])
    assert result.exit_code == 0 and result.output.startswith("ok: "), result.output
    result = runner.invoke(app, ["pacs", "query", "--pacs", orthanc.dicomweb_url, "--where", "Modality=MR",
                                 "--where", "StudyDate=20220101-20221231", "--json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)
    assert row["n_instances"] == 35 and "crlab" not in result.output and "HFS" not in result.output


def test_wrong_or_missing_credentials(orthanc, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("MEDSEG_PACS_PASSWORD", "wrong-password-9")
    with PacsClient(orthanc.dicomweb_url) as c, pytest.raises(PacsAuthError, match="HTTP 401") as info:
        c.ping()
    assert "wrong-password-9" not in str(info.value)
    monkeypatch.delenv("MEDSEG_PACS_USER")
    monkeypatch.delenv("MEDSEG_PACS_PASSWORD")
    with PacsClient(orthanc.dicomweb_url) as c, pytest.raises(PacsAuthError, match="sent no credentials"):
        c.ping()


def _seg_of(folder: Path, out: Path) -> Path:
    from medseg.io.dicom import load_dicom
    from medseg.io.dicom.seg import write_dicom_seg

    image = load_dicom(folder)
    labels = image.with_array((image.array > np.percentile(image.array, 90)).astype(np.uint8), is_label=True)
    return write_dicom_seg(labels, image.meta["source_files"], out, label_names={1: "brain"})


def test_push_seg_then_found_by_qido_and_repush_is_idempotent(orthanc, client, tmp_path: Path,  # noqa: F811
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    orthanc.upload(*series_files(HFS))
    [ref] = query_series(client, where=["PatientName=HF*", "Modality=MR"])
    folder = fetch_series(client, ref, tmp_path / "cache")
    seg = _seg_of(folder, tmp_path / "seg.dcm")
    seg_series = push_seg(client, seg, ref.study_uid)
    assert push_seg(client, seg, ref.study_uid) == seg_series
    segs = query_series(client, where=["Modality=SEG"])
    assert [s.series_uid for s in segs] == [seg_series] and segs[0].n_instances == 1
    [meta] = client.get_json("studies", ref.study_uid, "series", seg_series, "metadata")
    referenced = meta["00081115"]["Value"][0]["0020000E"]["Value"][0]  # ReferencedSeriesSequence
    assert referenced == ref.series_uid
    with pytest.raises(PacsError, match="is not the target study"):
        push_seg(client, seg, "1.2.3")
    for secret in (TEST_PASSWORD, "crlab", "HF*"):
        assert secret not in caplog.text, secret
