"""A model set of two imported nnU-Net models: merged label map, declared order, overlap rule."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nnunetv2")

from tests.test_nnunet import dataset, make_model_folder, make_plans, phantom  # noqa: E402


def test_model_set_merges_in_declared_order_with_overlap_rule(tmp_path):
    from typer.testing import CliRunner

    from medseg.cli.main import app
    from medseg.inference.factory import load_segmenter
    from medseg.inference.model_set import ModelSet
    from medseg.inference.segmenter import Segmenter

    plans = make_plans("3d_fullres", spacing=[1.0, 1.0, 1.0], patch=[16, 16, 16])
    a = make_model_folder(tmp_path / "a", plans, dataset({"background": 0, "liver": 1, "kidney": 2}), "3d_fullres")
    b = make_model_folder(tmp_path / "b", plans, dataset({"background": 0, "spleen": 1, "liver": 2}), "3d_fullres",
                          seed=5)
    for rule in ("first", "last"):
        out = tmp_path / f"set_{rule}"
        result = CliRunner().invoke(app, ["import", "model-set", str(a), str(b), "--output", str(out),
                                          "--overlap", rule])
        assert result.exit_code == 0, result.output
        model_set = load_segmenter(out, device="cpu")
        assert isinstance(model_set, ModelSet) and isinstance(model_set, Segmenter)
        assert model_set.label_names == {0: "background", 1: "liver", 2: "kidney", 3: "spleen"}
        vol = phantom(shape=(20, 18, 17))
        merged = model_set.predict(vol).array
        la = load_segmenter(a, device="cpu").predict(vol).array
        lb = load_segmenter(b, device="cpu").predict(vol).array
        ma = np.array([0, 1, 2])[la]
        mb = np.array([0, 3, 1])[lb]
        if rule == "first":
            expected = np.where(ma > 0, ma, mb)
        else:
            expected = np.where(mb > 0, mb, ma)
        np.testing.assert_array_equal(merged, expected)
        assert ((ma > 0) & (mb > 0)).any()  # the rule was exercised


def test_batch_runs_a_model_set_loading_it_once_per_worker(tmp_path):
    """``medseg batch`` with a model set: every study segmented with the merged labels, the set (and so each
    member) loaded once per worker process."""
    from medseg.batch.runner import run_batch
    from medseg.inference.factory import load_segmenter
    from medseg.io import load, save

    plans = make_plans("3d_fullres", spacing=[1.0, 1.0, 1.0], patch=[16, 16, 16])
    a = make_model_folder(tmp_path / "a", plans, dataset({"background": 0, "liver": 1}), "3d_fullres")
    b = make_model_folder(tmp_path / "b", plans, dataset({"background": 0, "spleen": 1}), "3d_fullres", seed=5)
    from typer.testing import CliRunner

    from medseg.cli.main import app

    model_set = tmp_path / "set"
    result = CliRunner().invoke(app, ["import", "model-set", str(a), str(b), "--output", str(model_set)])
    assert result.exit_code == 0, result.output
    studies = tmp_path / "studies"
    studies.mkdir()
    volumes = {f"case_{i}": phantom(shape=(20, 18, 17), seed=i) for i in range(2)}
    for name, vol in volumes.items():
        save(vol, studies / f"{name}.nii.gz")
    out = run_batch(model_set, studies, tmp_path / "out", workers=1, formats=("nifti",), report=False,
                    device="cpu")
    assert sorted(r["status"] for r in out.records) == ["ok"] * 2
    assert {r["worker"]["model_loads"] for r in out.records} == {1}
    assert len({r["worker"]["pid"] for r in out.records}) == 1
    direct = load_segmenter(model_set, device="cpu")
    for record in out.records:
        name = record["study_id"]
        written = load(tmp_path / "out" / record["outputs"]["nifti"]["path"]).array
        np.testing.assert_array_equal(written, direct.predict(volumes[name]).array)
