"""SAM2 models in `medseg predict` and `medseg batch`: prompts from another model or per-study label maps.

The SAM2 model is a randomly initialised, shallow Hiera-tiny at image size 256 (as in
tests/test_sam2.py); the prompt model is a random tiny 3D U-Net. Predictions are
meaningless; grids, prompt placement, records and errors are what is checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from medseg.errors import ConfigError, ModelError  # noqa: E402

SMALL = ["model.image_encoder.trunk.stages=[1,1,2,1]", "model.image_encoder.trunk.global_att_blocks=[3]",
         "model.memory_attention.num_layers=1"]
SHAPE, SPACING = (40, 36, 12), (7.0, 8.0, 20.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from medseg.testing import make_random_export
    from medseg.sam.export import export_sam2
    from medseg.models.sam2 import build_sam2

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    net = build_sam2("tiny", image_size=256, device="cpu", overrides=SMALL)
    sam = export_sam2(net, root / "sam", labels={"1": "liver", "4": "spleen"})
    unet = make_random_export(root / "unet", target_spacing_mm=(8.0, 8.0, 20.0), patch_size=(32, 32, 8))
    return {"sam": sam, "unet": unet}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two NIfTI phantom studies under images/, their liver+spleen label maps under masks/."""
    from medseg.data.phantom import make_phantom
    from medseg.io import save

    root = tmp_path_factory.mktemp("cohort")
    for i in range(2):
        image, labels = make_phantom(SHAPE, SPACING, seed=10 + i)
        save(image, root / "images" / f"ct{i}.nii.gz")
        keep = np.where(np.isin(labels.array, (1, 4)), labels.array, 0).astype(np.uint8)
        save(labels.with_array(keep, is_label=True), root / "masks" / f"ct{i}.nii.gz")
    return root


def test_prompt_sources_are_checked_before_loading(models: dict[str, Path], tmp_path: Path) -> None:
    from medseg.inference import Predictor
    from medseg.inference.factory import PromptSettings, check_prompt_sources, is_prompted_model

    sam, unet = models["sam"], models["unet"]
    assert is_prompted_model(sam) and not is_prompted_model(unet)
    with pytest.raises(ConfigError, match="promptable SAM2 model: give --prompt-model"):
        check_prompt_sources([sam])
    with pytest.raises(ConfigError, match="not a promptable"):
        check_prompt_sources([unet], prompt_model=unet)
    with pytest.raises(ConfigError, match="not both"):
        check_prompt_sources([sam], prompt_model=unet, prompt_labels_given=True)
    with pytest.raises(ConfigError, match="must be a U-Net export"):
        check_prompt_sources([sam], prompt_model=sam)
    with pytest.raises(ConfigError, match="ensemble"):
        check_prompt_sources([sam, unet], prompt_model=unet)
    assert check_prompt_sources([sam], prompt_labels_given=True) is True
    with pytest.raises(ModelError, match="promptable SAM2 model"):
        Predictor.from_run(sam, device="cpu")
    with pytest.raises(ConfigError, match="prompt kind"):
        PromptSettings(kind="scribble")


def test_batch_sam2_prompted_by_label_maps(models: dict[str, Path], cohort: Path, tmp_path: Path) -> None:
    from medseg.batch import run_batch
    from medseg.io import load
    from medseg.sam.prompts import prompts_from_mask

    out = tmp_path / "out"
    result = run_batch(models["sam"], cohort / "images", out, prompt_masks=cohort / "masks", sam_mode="slices",
                       formats=("nifti",), device="cpu", report=False)
    assert result.exit_code == 0, [r["error"] for r in result.records]
    run = json.loads((out / "run.json").read_text())
    assert run["prompt_masks"] == str((cohort / "masks").resolve())
    for record in result.records:
        image = load(record["input"])
        mask = load(cohort / "masks" / Path(record["input"]).name)
        seg = load(out / record["outputs"]["nifti"]["path"])
        assert seg.same_grid(image, atol=1e-3)
        assert set(np.unique(seg.array)) <= {0, 1, 4}
        key = {p.slice_index for p in prompts_from_mask(mask, kind="box")}
        off_key = [k for k in range(SHAPE[2]) if k not in key]
        assert not seg.array[:, :, off_key].any(), "slices mode must only label the prompted key slices"
        assert record["model_sha256"].endswith("+prompt-labels")


def test_batch_sam2_missing_prompt_mask_fails_that_study_only(models: dict[str, Path], cohort: Path,
                                                              tmp_path: Path) -> None:
    from medseg.batch import run_batch

    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "ct0.nii.gz").write_bytes((cohort / "masks" / "ct0.nii.gz").read_bytes())
    result = run_batch(models["sam"], cohort / "images", tmp_path / "out", prompt_masks=masks, sam_mode="slices",
                       formats=("nifti",), device="cpu", report=False)
    status = {Path(r["input"]).name: r for r in result.records}
    assert status["ct0.nii.gz"]["status"] == "ok"
    assert status["ct1.nii.gz"]["status"] == "failed"
    assert "no prompt label map" in status["ct1.nii.gz"]["error"]["message"]
    assert result.exit_code == 1


def test_predict_cli_sam2_from_prompt_model_and_mask(models: dict[str, Path], cohort: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medseg.cli.main import app
    from medseg.io import load

    image_path = cohort / "images" / "ct0.nii.gz"
    runner = CliRunner()
    res = runner.invoke(app, ["predict", str(image_path), str(tmp_path / "a"), "--model", str(models["sam"]),
                              "--prompt-model", str(models["unet"]), "--sam-mode", "slices", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "a" / "ct0_prediction.json").read_text())
    assert {"prompt_model_s", "sam2_s"} <= set(record["timings_s"])
    assert load(record["outputs"]["nifti"]).same_grid(load(image_path), atol=1e-3)

    res = runner.invoke(app, ["predict", str(image_path), str(tmp_path / "b"), "--model", str(models["sam"]),
                              "--prompt-mask", str(cohort / "masks" / "ct0.nii.gz"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    seg = load(tmp_path / "b" / "ct0_seg.nii.gz")
    assert seg.same_grid(load(image_path), atol=1e-3) and set(np.unique(seg.array)) <= {0, 1, 4}

    res = runner.invoke(app, ["predict", str(image_path), str(tmp_path / "c"), "--model", str(models["sam"])])
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError)


@pytest.mark.slow
def test_predict_takes_a_renamed_bare_checkpoint_with_image_size(cohort: Path, tmp_path: Path) -> None:
    """A Meta-layout checkpoint under any file name: architecture from its tensors, --image-size from the CLI."""
    from typer.testing import CliRunner

    from medseg.cli.main import app
    from medseg.io import load
    from medseg.models.sam2 import build_sam2

    torch.manual_seed(0)
    ckpt = tmp_path / "site_weights.pt"
    torch.save({"model": build_sam2("tiny", image_size=256, device="cpu").state_dict()}, ckpt)
    image_path = cohort / "images" / "ct0.nii.gz"
    res = CliRunner().invoke(app, ["predict", "-i", str(image_path), "-o", str(tmp_path / "out"), "--model", str(ckpt),
                                   "--prompt-mask", str(cohort / "masks" / "ct0.nii.gz"), "--sam-mode", "slices",
                                   "--image-size", "256", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert load(tmp_path / "out" / "ct0_seg.nii.gz").same_grid(load(image_path), atol=1e-3)
    res = CliRunner().invoke(app, ["predict", "-i", str(image_path), "-o", str(tmp_path / "bad"), "--model", str(ckpt),
                                   "--prompt-mask", str(cohort / "masks" / "ct0.nii.gz"), "--config", "large",
                                   "--image-size", "256", "--device", "cpu"])
    assert res.exit_code != 0  # the tensors do not fit the asked architecture
    from medseg.batch import run_batch

    result = run_batch(ckpt, cohort / "images", tmp_path / "batch", prompt_masks=cohort / "masks", sam_mode="slices",
                       image_size=256, device="cpu", report=False)
    assert [r["status"] for r in result.records] == ["ok", "ok"], [r.get("error") for r in result.records]
