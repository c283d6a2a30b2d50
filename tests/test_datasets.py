"""Dataset formats, validation, splits and the plan."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from medseg.data.cohort import write_cohort
from medseg.data.datasets import load_case, load_dataset, validate_dataset
from medseg.data.splits import get_fold, load_splits, make_splits, save_splits
from medseg.errors import ConfigError, InputError

SHAPE, SPACING = (24, 24, 12), (6.0, 6.0, 8.0)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohort"), 4, shape=SHAPE, spacing=SPACING, seed=0)


def test_nnunet_format_loads(cohort):
    ds = load_dataset(cohort, validate=True)
    assert ds.format == "nnunet" and len(ds.cases) == 4 and ds.modality == "CT"
    assert ds.labels[1] == "liver" and ds.num_classes == 9
    image, label = load_case(ds.cases[0])
    assert image.spatial_shape == SHAPE and label.is_label and label.same_grid(image)


def test_msd_format_loads(cohort, tmp_path):
    meta = json.loads((cohort / "dataset.json").read_text())
    root = tmp_path / "Task01_Phantom"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for f in sorted((cohort / "labelsTr").glob("*.nii.gz")):
        cid = f.name[: -len(".nii.gz")]
        shutil.copy(cohort / "imagesTr" / f"{cid}_0000.nii.gz", root / "imagesTr" / f.name)
        shutil.copy(f, root / "labelsTr" / f.name)
        training.append({"image": f"./imagesTr/{f.name}", "label": f"./labelsTr/{f.name}"})
    msd = {"name": "Phantom", "modality": {"0": "CT"}, "labels": {str(v): k for k, v in meta["labels"].items()},
           "numTraining": len(training), "training": training}
    (root / "dataset.json").write_text(json.dumps(msd))
    ds = load_dataset(root, validate=True)
    assert ds.format == "msd" and len(ds.cases) == 4 and ds.labels[1] == "liver" and ds.modality == "CT"


def test_csv_and_json_manifests(cohort, tmp_path):
    rows = [(f"../{cohort.name}/imagesTr/case_00{i}_0000.nii.gz",
             f"../{cohort.name}/labelsTr/case_00{i}.nii.gz") for i in range(3)]
    man_dir = cohort.parent / "manifests"
    man_dir.mkdir(exist_ok=True)
    csv_path = man_dir / "cases.csv"
    csv_path.write_text("case_id,image,label\n" + "".join(f"c{i},{a},{b}\n" for i, (a, b) in enumerate(rows)))
    ds = load_dataset(csv_path, validate=True)
    assert ds.format == "manifest" and [c.case_id for c in ds.cases] == ["c0", "c1", "c2"]
    assert set(ds.labels) == set(range(9))  # inferred from the data
    js = man_dir / "cases.json"
    js.write_text(json.dumps({"labels": {"background": 0, "liver": 1, "kidney_left": 2, "kidney_right": 3,
                                         "spleen": 4, "lung_left": 5, "lung_right": 6, "spine": 7, "tumour": 8},
                              "channel_names": {"0": "CT"},
                              "cases": [{"image": a, "label": b} for a, b in rows]}))
    ds = load_dataset(js, validate=True)
    assert ds.labels[1] == "liver" and ds.modality == "CT" and len(ds.cases) == 3


def test_manifest_with_dicom_folder_image(tmp_path):
    root = write_cohort(tmp_path / "dcm", 1, shape=(16, 16, 6), spacing=(6.0, 6.0, 8.0), fmt="dicom")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"image,label\n{root.name}/case_000,{root.name}/labels/case_000.nii.gz\n"
                        .replace(root.name, str(root.relative_to(tmp_path))))
    ds = load_dataset(manifest)
    validate_dataset(ds)
    image, label = load_case(ds.cases[0])
    assert image.same_grid(label, atol=1e-3)


def test_every_bad_case_is_listed(cohort, tmp_path):
    import nibabel as nib

    bad = tmp_path / "bad"
    shutil.copytree(cohort, bad)
    (bad / "imagesTr" / "case_000_0000.nii.gz").unlink()  # missing image
    lab = nib.load(bad / "labelsTr" / "case_001.nii.gz")  # label value 42 not in labels
    arr = np.asarray(lab.dataobj).copy()
    arr[0, 0, 0] = 42
    nib.save(nib.Nifti1Image(arr, lab.affine), bad / "labelsTr" / "case_001.nii.gz")
    lab = nib.load(bad / "labelsTr" / "case_002.nii.gz")  # wrong grid
    nib.save(nib.Nifti1Image(np.asarray(lab.dataobj)[:-2], lab.affine), bad / "labelsTr" / "case_002.nii.gz")
    img = nib.load(bad / "imagesTr" / "case_003_0000.nii.gz")  # same shape, shifted origin
    aff = img.affine.copy()
    aff[0, 3] += 5
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), aff), bad / "imagesTr" / "case_003_0000.nii.gz")
    with pytest.raises(InputError) as err:
        load_dataset(bad, validate=True)
    msg = str(err.value)
    assert "4 bad case(s) of 4" in msg
    assert "case_000: missing file(s)" in msg and "case_000_0000.nii.gz" in msg
    assert "case_001: label values [42] are not in labels" in msg
    assert "case_002: case_002.nii.gz has shape (22, 24, 12)" in msg
    assert "case_003" in msg and "not on the image grid" in msg


def test_unknown_layout_and_missing_keys(tmp_path):
    with pytest.raises(InputError, match="no dataset.json"):
        load_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0}}))
    with pytest.raises(InputError, match="missing key 'file_ending'"):
        load_dataset(tmp_path)


def test_splits_deterministic_disjoint_complete(tmp_path):
    ids = [f"case_{i:03d}" for i in range(11)]
    a = make_splits(ids, n_folds=5, seed=3)
    assert a == make_splits(list(reversed(ids)), n_folds=5, seed=3)
    assert a != make_splits(ids, n_folds=5, seed=4)
    assert sorted(c for f in a for c in f["val"]) == ids
    for f in a:
        assert not set(f["train"]) & set(f["val"]) and sorted(f["train"] + f["val"]) == ids
    save_splits(a, tmp_path / "splits.json")
    assert load_splits(tmp_path / "splits.json") == a
    with pytest.raises(ConfigError, match="dataset.fold must be in 0..4"):
        get_fold(a, 7)
    with pytest.raises(ConfigError):
        make_splits(["only"], n_folds=2)


def test_plan_is_readable_and_sensible(cohort, tmp_path):
    from medseg.training.planning import load_plan, plan_dataset, save_plan

    plan = plan_dataset(load_dataset(cohort), memory_budget_mb=200)
    pre = plan["preprocessing"]
    assert pre["target_spacing_mm"] == list(SPACING) and pre["normalization"]["kind"] == "ct"
    lo, hi = pre["normalization"]["clip"]
    assert -1000 <= lo < hi <= 3071
    c3 = plan["configurations"]["3d"]
    assert all(p % 16 == 0 for p in c3["patch_size"]) and c3["estimated_memory_mb"] <= 200
    assert plan["recommended"] == "3d" and 0 < plan["fingerprint"]["class_frequencies"]["1"] < 1
    save_plan(plan, tmp_path / "plan.json")
    assert load_plan(tmp_path / "plan.json") == plan
