"""medseg batch: discovery, manifest, failures, kill + resume, worker death, Dask = local."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medseg.batch import discover_studies, run_batch
from medseg.io.manifest import (
    append_record,
    is_complete,
    latest_records,
    plan_resume,
    read_manifest,
    sha256_file,
)
from medseg.batch.worker import WorkerConfig, process_study
from medseg.errors import ConfigError
from medseg.testing import make_random_export

KILL_DIR_ENV = "MEDSEG_TEST_KILL_DIR"
N_GOOD = 4


# ----------------------------------------------------------------------------- helpers and fixtures
def die_once(study, config):  # noqa: ANN001, ANN201 - module level so worker processes can unpickle it
    """Kill the worker process the first time it meets each study (marker files in $MEDSEG_TEST_KILL_DIR)."""
    marker = Path(os.environ[KILL_DIR_ENV]) / study.study_id
    if study.study_id.endswith("case_001") and not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(17)
    record = process_study(study, config)
    record["malloc_trim_threshold"] = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    return record


def always_die(study, config):  # noqa: ANN001, ANN201
    os._exit(9)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_export(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """N_GOOD - 1 DICOM phantom studies, one NIfTI study (LAS) and one corrupt NIfTI file; labels under refs/."""
    from medseg.data.cohort import write_cohort
    from medseg.io import load, save

    root = tmp_path_factory.mktemp("cohort")
    write_cohort(root / "dicom", N_GOOD - 1, shape=(32, 32, 16), spacing=(4.0, 4.0, 5.0), fmt="dicom")
    refs = root / "refs"
    refs.mkdir()
    for lab in sorted((root / "dicom" / "labels").glob("*.nii.gz")):
        (refs / f"dicom__{lab.name}").write_bytes(lab.read_bytes())
    shutil.rmtree(root / "dicom" / "labels")
    # one NIfTI study: the first DICOM case converted, in LAS orientation
    vol = load(root / "dicom" / "case_000")
    flipped = vol.with_array(vol.array[::-1].copy())
    flipped.affine = vol.affine @ np.array([[-1, 0, 0, vol.spatial_shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0],
                                            [0, 0, 0, 1.0]])
    (root / "nifti").mkdir()
    save(flipped, root / "nifti" / "ct_las.nii.gz")
    (root / "nifti" / "broken.nii.gz").write_bytes(b"this is not a NIfTI file" * 10)
    (refs / "nifti__ct_las.nii.gz").write_bytes(b"a corrupt reference")  # evaluation fails, the study does not
    return root


def _ok_ids(records: list[dict]) -> set[str]:
    return {r["study_id"] for r in records if r["status"] == "ok"}


# ----------------------------------------------------------------------------- discovery and manifest
def test_discovery_lists_series_and_files(cohort: Path) -> None:
    studies = discover_studies(cohort, exclude=[cohort / "refs"])
    ids = [s.study_id for s in studies]
    assert ids == sorted(ids)
    assert set(ids) == {"dicom__case_000", "dicom__case_001", "dicom__case_002", "nifti__broken", "nifti__ct_las"}
    dicom = [s for s in studies if s.kind == "dicom"]
    assert all(s.series_uid and len(s.files) == 16 for s in dicom)
    out = subprocess.run([sys.executable, "-m", "medseg", "batch", "--model", "x", "--input", str(cohort),
                          "--output", str(cohort / "refs"), "--dry-run", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {r["study_id"] for r in rows} >= {"dicom__case_000", "nifti__broken"}


def test_manifest_skips_truncated_line_and_checks_checksums(tmp_path: Path) -> None:
    out = tmp_path
    (out / "studies" / "a").mkdir(parents=True)
    seg = out / "studies" / "a" / "seg.nii.gz"
    seg.write_bytes(b"0123456789")
    rec = {"study_id": "a", "status": "ok",
           "outputs": {"nifti": {"path": "studies/a/seg.nii.gz", "sha256": sha256_file(seg), "bytes": 10}}}
    manifest = out / "manifest.jsonl"
    append_record(manifest, {"study_id": "b", "status": "failed", "outputs": {}})
    append_record(manifest, rec)
    with open(manifest, "a") as fh:
        fh.write('{"study_id": "c", "stat')  # a write cut short by a kill
    records = read_manifest(manifest)
    assert [r["study_id"] for r in records] == ["b", "a"]
    assert is_complete(latest_records(records)["a"], out)
    (out / "studies" / "a" / ".seg.nii.gz.x.partial.nii.gz").write_bytes(b"half")
    seg.write_bytes(b"0123456780")  # same size, different bytes
    assert not is_complete(rec, out)
    seg.write_bytes(b"0123456789")
    done, kept = plan_resume(["a", "b", "c"], out)
    assert done == {"a"} and [r["study_id"] for r in kept] == ["a"]
    assert [r["study_id"] for r in read_manifest(manifest)] == ["a"]
    assert not list(out.rglob("*.partial*"))


def test_worker_config_rejects_unknown_format() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        WorkerConfig(model="m", output_dir="o", formats=("nifti", "png"))


# ----------------------------------------------------------------------------- a batch with a corrupt study
@pytest.fixture(scope="module")
def local_run(tiny_model: Path, cohort: Path, tmp_path_factory: pytest.TempPathFactory):
    """The local backend, 2 workers, on every study; the worker holding dicom__case_001 is killed once."""
    out = tmp_path_factory.mktemp("local") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KILL_DIR_ENV, str(out.parent))
        result = run_batch(tiny_model, cohort, out, workers=2, formats=["nifti"], reference_dir=cohort / "refs",
                           func=die_once)
    return out, result


def test_corrupt_study_fails_with_reason_others_succeed(local_run, cohort: Path) -> None:
    from medseg.io import load

    out, result = local_run
    records = {r["study_id"]: r for r in result.records}
    assert result.exit_code == 1
    broken = records.pop("nifti__broken")
    assert broken["status"] == "failed" and broken["outputs"] == {}
    assert broken["error"]["type"] == "InputError" and "broken.nii.gz" in broken["error"]["message"]
    assert not (out / "studies" / "nifti__broken").exists()
    assert all(r["status"] == "ok" for r in records.values()), records
    for sid, r in records.items():
        seg = load(out / r["outputs"]["nifti"]["path"])
        src = load(r["input"] if r["kind"] == "file" else cohort / "dicom" / sid.split("__")[1])
        assert seg.spatial_shape == src.spatial_shape
        np.testing.assert_allclose(seg.affine, src.affine, atol=1e-4)
        assert r["model_sha256"] == json.loads((out / "run.json").read_text())["model_sha256"]
        assert set(r["timings_s"]) >= {"load", "predict", "write_nifti", "total"}
        assert r["outputs"]["nifti"]["sha256"] == sha256_file(out / r["outputs"]["nifti"]["path"])
    # DICOM studies found their reference and were evaluated; a corrupt reference is reported, not fatal
    assert records["dicom__case_001"]["metrics"]["per_label"], records["dicom__case_001"]["metrics"]
    assert "nifti__ct_las.nii.gz" in records["nifti__ct_las"]["metrics"]["error"]
    # one model load per worker process
    loads: dict[int, int] = {}
    for r in records.values():
        loads[r["worker"]["pid"]] = max(loads.get(r["worker"]["pid"], 0), r["worker"]["model_loads"])
    assert set(loads.values()) == {1}
    assert (out / "report.html").is_file()
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == N_GOOD + 1


def test_existing_manifest_needs_resume(local_run, tiny_model: Path, cohort: Path) -> None:
    out, _ = local_run
    with pytest.raises(ConfigError, match="--resume"):
        run_batch(tiny_model, cohort, out)


# ----------------------------------------------------------------------------- kill mid-way, then resume
@pytest.mark.slow
def test_sigkill_then_resume_processes_every_study_once(tiny_model: Path, cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "medseg", "batch", "--model", str(tiny_model), "--input", str(cohort / "dicom"),
           "--output", str(out), "--workers", "1", "--formats", "nifti"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    manifest = out / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists() and read_manifest(manifest):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the batch finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = read_manifest(manifest)
    assert 1 <= len(first) < N_GOOD - 1
    first_done = {r["study_id"]: r["finished"] for r in first}

    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    records = read_manifest(manifest)
    ids = [r["study_id"] for r in records]
    assert sorted(ids) == ["case_000", "case_001", "case_002"]  # each study exactly once
    assert all(r["status"] == "ok" for r in records)
    for sid, finished in first_done.items():  # finished studies were not run again
        assert next(r for r in records if r["study_id"] == sid)["finished"] == finished
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    for r in records:
        assert is_complete(r, out)


# ----------------------------------------------------------------------------- worker death and Dask
def test_local_worker_killed_mid_study_is_retried(local_run) -> None:
    out, result = local_run
    assert (out.parent / "dicom__case_001").exists()  # the worker really died once, mid-study
    record = next(r for r in result.records if r["study_id"] == "dicom__case_001")
    assert record["status"] == "ok" and record["attempts"] == 2
    assert record["worker"]["model_loads"] == 1  # the replacement worker loaded the model once, too


@pytest.mark.slow
def test_local_worker_that_always_dies_is_recorded_lost(tiny_model: Path, cohort: Path, tmp_path: Path) -> None:
    result = run_batch(tiny_model, cohort / "nifti", tmp_path / "out", workers=1, func=always_die, max_retries=1,
                       report=False)
    assert [r["status"] for r in result.records] == ["lost", "lost"]
    assert all(r["attempts"] == 2 and "died" in r["error"]["message"] for r in result.records)
    assert result.exit_code == 1


@pytest.mark.slow
def test_dask_backend_matches_local_and_retries_killed_worker(local_run, tiny_model: Path, cohort: Path,
                                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    from medseg.io import load

    local_out, local_result = local_run
    monkeypatch.setenv(KILL_DIR_ENV, str(tmp_path))
    out = tmp_path / "dask"
    result = run_batch(tiny_model, cohort, out, workers=2, backend="dask", formats=["nifti"],
                       reference_dir=cohort / "refs", func=die_once)
    assert (tmp_path / "dicom__case_001").exists()  # a worker died mid-study and the study was re-run
    assert {r["study_id"]: r["status"] for r in result.records} == {
        r["study_id"]: r["status"] for r in local_result.records}
    for r in result.records:
        if r["status"] != "ok":
            continue
        assert r["malloc_trim_threshold"] is None  # the nanny's MALLOC_TRIM_THRESHOLD_ is unset
        mine = load(out / r["outputs"]["nifti"]["path"])
        ref = load(local_out / r["outputs"]["nifti"]["path"])
        np.testing.assert_array_equal(mine.array, ref.array)
        np.testing.assert_allclose(mine.affine, ref.affine)
    assert len(read_manifest(out / "manifest.jsonl")) == len(local_result.records)
