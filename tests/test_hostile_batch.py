"""Batch runs against hostile studies (issue 12): a study that blocks is stopped at the per-study
timeout and recorded while the others go on; bad retry counts are refused; a failed manifest
append never ends the run."""

from __future__ import annotations

import os
import time

import pytest

from medseg.batch.discover import Study
from medseg.batch.local import run_local


def sleepy(study, config):  # noqa: ANN001, ANN201 - module level: worker processes unpickle it
    if study.study_id == "blocks":
        time.sleep(600)
    return {"study_id": study.study_id, "status": "ok", "pid": os.getpid()}


def test_study_timeout_records_and_goes_on():
    studies = [Study(study_id=s, kind="file", path=f"/nowhere/{s}.nii") for s in ("a", "blocks", "b", "c")]
    t0 = time.monotonic()
    records = list(run_local(studies, config=None, workers=2, func=sleepy, study_timeout=3))
    assert time.monotonic() - t0 < 60
    by_id = {r["study_id"]: r for r in records}
    assert set(by_id) == {"a", "blocks", "b", "c"}
    assert by_id["blocks"]["status"] == "failed"
    assert by_id["blocks"]["error"]["message"] == "timed out after 3 s"
    assert all(by_id[s]["status"] == "ok" for s in "abc")


def test_batch_cli_refuses_negative_retries_and_timeouts(tmp_path):
    from typer.testing import CliRunner

    from medseg.cli.main import app

    for args in (["--max-retries", "-1"], ["--study-timeout", "0"]):
        res = CliRunner().invoke(app, ["batch", "-m", str(tmp_path), "-i", str(tmp_path), "-o", str(tmp_path / "o"),
                                       *args])
        assert res.exit_code == 2, res.output


def test_run_batch_refuses_bad_limits(tmp_path):
    from medseg.batch import run_batch
    from medseg.errors import ConfigError

    with pytest.raises(ConfigError, match="max_retries"):
        run_batch(tmp_path, tmp_path, tmp_path / "o", max_retries=-1)
    with pytest.raises(ConfigError, match="study_timeout"):
        run_batch(tmp_path, tmp_path, tmp_path / "o", study_timeout=float("inf"))


def test_discovery_keeps_damaged_slice_and_records_file_without_series_uid(tmp_path):
    """A damaged end slice goes with its series (loading then names it); a file without
    SeriesInstanceUID becomes a study of its own instead of a log line."""
    from medseg.batch.discover import discover_studies
    from medseg.errors import InputError
    from medseg.io import load
    from tests.test_hostile_dicom import make_ds, write

    series = tmp_path / "s1"
    series.mkdir()
    for k in range(4):
        write(make_ds(z=float(k), instance=k + 1), series / f"{k}.dcm")
    damaged = series / "3.dcm"
    damaged.write_bytes(damaged.read_bytes()[:200])  # the last slice, cut inside its header
    lone = tmp_path / "lone"
    lone.mkdir()
    ds = make_ds(instance=99)
    del ds.SeriesInstanceUID
    write(ds, lone / "x.dcm")
    studies = {s.study_id: s for s in discover_studies(tmp_path)}
    assert set(studies) == {"s1", "lone_x.dcm"} or len(studies) == 2
    s1 = next(s for s in studies.values() if s.path == str(series))
    assert str(damaged) in s1.files
    with pytest.raises(InputError, match="3.dcm"):
        load(s1.load_arg)
    assert any(s.files == (str(lone / "x.dcm"),) for s in studies.values())


def test_damaged_end_slice_of_a_folder_is_an_error_naming_it(tmp_path):
    from medseg.errors import InputError
    from medseg.io import load
    from tests.test_hostile_dicom import make_ds, write

    for k in range(4):
        write(make_ds(z=float(k), instance=k + 1), tmp_path / f"{k}.dcm")
    (tmp_path / "0.dcm").write_bytes((tmp_path / "0.dcm").read_bytes()[:-100])  # pixel data cut short
    with pytest.raises(InputError, match="0.dcm"):
        load(tmp_path)
    write(make_ds(z=0.0, instance=1, rows=20), tmp_path / "0.dcm")  # first slice of another size
    with pytest.raises(InputError, match="0.dcm"):
        load(tmp_path)


def test_odd_sized_slice_of_a_long_series_is_not_dropped(tmp_path):
    from medseg.errors import InputError
    from medseg.io import load
    from tests.test_hostile_dicom import make_ds, write

    for k in range(8):
        write(make_ds(z=float(k), instance=k + 1), tmp_path / f"{k}.dcm")
    assert load(tmp_path).shape == (24, 24, 8)
    write(make_ds(z=7.0, instance=8, rows=20, data=bytes(20 * 24 * 2)), tmp_path / "7.dcm")
    with pytest.raises(InputError, match="7.dcm.*damaged slice"):
        load(tmp_path)


def test_failed_manifest_append_never_ends_the_run(tmp_path, monkeypatch):
    import errno

    import medseg.batch.runner as runner

    def full(path, record):
        raise OSError(errno.ENOSPC, "No space left on device")

    rec = {"study_id": "a", "status": "ok"}
    assert runner.append_or_note(tmp_path / "manifest.jsonl", rec) == rec
    monkeypatch.setattr(runner, "append_record", full)
    noted = runner.append_or_note(tmp_path / "manifest.jsonl", rec)
    assert noted["manifest_error"].endswith("manifest.jsonl: No space left on device")


@pytest.mark.slow
@pytest.mark.parametrize("max_retries", [0, 1])
def test_dask_study_timeout_records_and_goes_on(tmp_path, max_retries):
    """On Dask the blocked study's worker is ended by the watchdog at the limit; the study is recorded
    as timed out (by its next attempt, or by the client when Dask gives up), never run again."""
    pytest.importorskip("distributed")
    from types import SimpleNamespace

    from medseg.batch.dask_backend import run_dask

    studies = [Study(study_id=s, kind="file", path=f"/nowhere/{s}.nii") for s in ("a", "blocks", "b")]
    config = SimpleNamespace(output_dir=str(tmp_path), threads=1)
    t0 = time.monotonic()
    records = list(run_dask(studies, config, workers=1, func=sleepy, study_timeout=4, max_retries=max_retries))
    assert time.monotonic() - t0 < 120
    by_id = {r["study_id"]: r for r in records}
    assert set(by_id) == {"a", "blocks", "b"}
    assert by_id["blocks"]["status"] == "failed"
    assert by_id["blocks"]["error"] == {"type": "StudyTimeout", "message": "timed out after 4 s"}
    assert by_id["a"]["status"] == by_id["b"]["status"] == "ok"
    assert not list(tmp_path.glob(".study-*.deadline"))  # every note is removed
