"""Issue 10, items 3 and 9: a failing output format keeps the others (with a per-format record),
and ``--resume`` keeps only results of the same model and settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medseg.batch import run_batch
from medseg.batch.discover import discover_studies
from medseg.batch.worker import WorkerConfig, process_study, result_key
from medseg.errors import InputError, OutputError
from medseg.io.manifest import read_manifest
from medseg.testing import make_random_export


@pytest.fixture(scope="module")
def dicom_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medseg.data.cohort import write_cohort

    root = tmp_path_factory.mktemp("studies")
    write_cohort(root, 2, shape=(32, 32, 12), spacing=(4.0, 4.0, 5.0), fmt="dicom")
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_export(tmp_path_factory.mktemp("model"))


def _broken_seg_writer(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
    raise InputError("source.dcm: PatientBirthDate '/0' cannot be written")


def test_batch_keeps_the_nifti_when_the_seg_fails(dicom_study, model, tmp_path, monkeypatch):
    import medseg.io.dicom.seg as seg

    monkeypatch.setattr(seg, "write_dicom_seg", _broken_seg_writer)
    study = discover_studies(dicom_study)[0]
    config = WorkerConfig(model=str(model), output_dir=str(tmp_path), formats=("nifti", "dicomseg"), overlays=False)
    record = process_study(study, config)
    assert record["status"] == "failed" and record["error"]["type"] == "OutputError"
    assert record["format_errors"] == {"dicomseg": "source.dcm: PatientBirthDate '/0' cannot be written"}
    assert set(record["outputs"]) == {"nifti"}
    assert (tmp_path / record["outputs"]["nifti"]["path"]).is_file()
    assert "kept: nifti" in record["error"]["message"]


def test_predict_writes_its_record_and_the_nifti_before_the_seg_error(dicom_study, model, tmp_path, monkeypatch):
    import medseg.io.dicom.seg as seg
    from medseg.inference import Predictor
    from medseg.inference.outputs import predict_to_files

    monkeypatch.setattr(seg, "write_dicom_seg", _broken_seg_writer)
    study = discover_studies(dicom_study)[0]
    with pytest.raises(OutputError, match="dicomseg: source.dcm: PatientBirthDate"):
        predict_to_files(Predictor.from_run(model, device="cpu"), study.path, tmp_path, stem="s")
    record = json.loads((tmp_path / "s_prediction.json").read_text())
    assert record["status"] == "failed" and set(record["errors"]) == {"dicomseg"}
    assert set(record["outputs"]) == {"nifti"} and (tmp_path / "s_seg.nii.gz").is_file()


def test_resume_reruns_results_of_another_model(dicom_study, tmp_path):
    model = make_random_export(tmp_path / "model", seed=0)
    out = tmp_path / "out"
    first = run_batch(model, dicom_study, out)
    assert [r["status"] for r in first.records] == ["ok", "ok"]
    again = run_batch(model, dicom_study, out, resume=True)
    assert again.skipped == 2 and again.records == []
    make_random_export(tmp_path / "model", seed=1)  # retrained: other weights, same folder
    retrained = run_batch(model, dicom_study, out, resume=True)
    assert retrained.skipped == 0 and [r["status"] for r in retrained.records] == ["ok", "ok"]
    keys = {r["result_key"] for r in read_manifest(out / "manifest.jsonl")}
    assert len(keys) == 1 and keys != {first.records[0]["result_key"]}


def test_result_key_follows_weights_and_settings(model, tmp_path):
    base = WorkerConfig(model=str(model), output_dir=str(tmp_path))
    assert result_key(base) == result_key(WorkerConfig(model=str(model), output_dir=str(tmp_path / "other")))
    assert result_key(base) != result_key(WorkerConfig(model=str(model), output_dir=str(tmp_path), tta=True))
    assert result_key(base) != result_key(WorkerConfig(model=str(model), output_dir=str(tmp_path),
                                                       formats=("nifti", "dicomseg")))


def test_evaluate_reads_a_batch_output_folder_and_its_label_names(dicom_study, model, tmp_path):
    from medseg.evaluation.volumes import evaluate_folder

    out = tmp_path / "batch"
    run_batch(model, dicom_study, out)
    for pred in (out, out / "studies"):
        result = evaluate_folder(pred, dicom_study / "labels", tmp_path / f"eval_{pred.name}", plots=False)
        assert sorted({row["case"] for row in result.rows}) == ["case_000", "case_001"]
        assert "liver" in {row["name"] for row in result.rows}
        assert result.unmatched_references == []
