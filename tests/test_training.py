"""Training engine: config validation, loss goes down, run folder, export, resume, DDP."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.data.cohort import write_cohort
from medseg.errors import ConfigError
from medseg.training.config import load_config

TINY3D = {"in_channels": 1, "out_channels": 9, "filters": [4, 8, 16]}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("cohort"), 4, shape=(24, 24, 16), spacing=(6.0, 6.0, 8.0), seed=0)


def _cfg(root, **train):
    return {
        "dataset": {"root": str(root), "n_folds": 2},
        "model": {"name": "unet3d", "config": {"filters": [4, 8, 16]}},
        "transforms": {"recipe": "ct_3d"},
        "optimizer": {"name": "adamw", "lr": 0.01},
        "train": {"max_steps": 4, "iterations_per_epoch": 2, "patch_size": [16, 16, 8], "batch_size": 2,
                  "progress_bar": False, "accelerator": "cpu", **train},
        "inference": {"overlap": 0.25, "batch_size": 1},
    }


# --------------------------------------------------------------------------- config
def test_bad_config_values_name_key_and_allowed_values(tmp_path):
    with pytest.raises(ConfigError, match=r"optimizer\.name: Input should be 'sgd' or 'adamw' \(got 'adam'\)"):
        load_config({"optimizer": {"name": "adam"}})
    with pytest.raises(ConfigError, match=r"train\.max_epoch: unknown key; valid keys: .*max_epochs"):
        load_config({"train": {"max_epoch": 3}})
    with pytest.raises(ConfigError, match=r"model\.name: .*unknown model 'unet4d'; known: .*unet3d"):
        load_config({}, overrides=["model.name=unet4d"])
    with pytest.raises(ConfigError, match=r"train\.precision: Input should be 'auto', '32', '16-mixed' or 'bf16-mixed'"):
        load_config({}, overrides=["train.precision=64"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config({}, overrides=["train.max_epochs"])


def test_yaml_include_and_overrides(tmp_path):
    (tmp_path / "part.yaml").write_text("model: {name: unet2d, config: {encoder_name: resnet18}}\ntrain: {seed: 5}\n")
    (tmp_path / "job.yaml").write_text("include: [part.yaml]\ntrain: {max_epochs: 7}\n")
    cfg = load_config(tmp_path / "job.yaml", overrides=["train.batch_size=3", "optimizer.lr=1e-3"])
    assert cfg.model.name == "unet2d" and cfg.train.seed == 5 and cfg.train.max_epochs == 7
    assert cfg.train.batch_size == 3 and cfg.optimizer.lr == 1e-3


def test_shipped_pipelines_validate():
    from medseg.training.config import CONFIGS_DIR, resolve_recipe

    for name, model in (("unet3d_ct", "unet3d"), ("unet2d_mri", "unet2d")):
        cfg = load_config(Path(__file__).resolve().parents[1] / "pipelines" / f"{name}.yaml")
        assert cfg.model.name == model
        resolve_recipe(cfg.transforms.recipe)


# --------------------------------------------------------------------------- loss goes down
def _blob_batch(spatial: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in spatial], indexing="ij")
    r = np.sqrt(sum(g**2 for g in grids))
    label = (r < 0.6).astype(np.int64)
    image = label * 2.0 + np.random.default_rng(0).normal(0, 0.3, label.shape)
    x = torch.tensor(np.stack([image, image[::-1].copy()])[:, None], dtype=torch.float32)
    y = torch.tensor(np.stack([label, label[::-1].copy()])[:, None])
    return x, y


@pytest.mark.parametrize("name,config,spatial", [
    ("unet3d", {"in_channels": 1, "out_channels": 2, "filters": [4, 8, 16]}, (16, 16, 16)),
    ("unet2d", {"in_channels": 1, "out_channels": 2, "encoder_depth": 3, "decoder_channels": [32, 16, 8]}, (32, 32)),
])
def test_few_steps_lower_the_loss(name, config, spatial):
    from medseg.training.module import SegmentationModule

    torch.manual_seed(0)
    module = SegmentationModule(
        model_name=name, model_config=config, spatial_dims=len(spatial), patch_size=list(spatial),
        labels={"0": "background", "1": "blob"}, loss={"name": "dice_ce"},
        optimizer={"name": "adamw", "lr": 0.01, "weight_decay": 0.0}, schedule={"name": "constant"},
        inference={}, total_steps=10)
    opt = module.configure_optimizers()["optimizer"]
    x, y = _blob_batch(spatial)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = module.compute_loss(module(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


# --------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_train_run_folder_export_and_resume(cohort, tmp_path):
    from medseg.models import create_model
    from medseg.models.export import load_exported
    from medseg.training import train

    run = train(_cfg(cohort), out_dir=tmp_path / "run")
    for name in ("config.yaml", "plan.json", "splits.json", "metrics.csv", "curves.png",
                 "checkpoints/best.ckpt", "checkpoints/last.ckpt", "export/model.pt", "export/model.json"):
        assert (run / name).is_file(), name
    info = json.loads((run / "export" / "model.json").read_text())
    assert info["model"]["config"]["out_channels"] == 9 and info["spatial_dims"] == 3
    assert info["labels"]["1"] == "liver" and info["preprocessing"]["normalization"]["kind"] == "ct"
    assert info["inference"]["patch_size"] == [16, 16, 8] and info["training"]["global_step"] == 4
    assert set(info["postprocessing"]) == {str(i) for i in range(1, 9)}
    # the export reloads and predicts exactly what the best checkpoint's network predicts
    model, _ = load_exported(run)
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    ref = create_model("unet3d", **info["model"]["config"])
    ref.load_state_dict({k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
    ref.eval()
    x = torch.randn(1, 1, 16, 16, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
    # resume continues from the last step (4) up to the new max_steps (6)
    train(_cfg(cohort, max_steps=6), out_dir=run, resume=True)
    info = json.loads((run / "export" / "model.json").read_text())
    assert info["training"]["global_step"] == 6
    with open(run / "metrics.csv") as fh:
        steps = sorted({int(r["step"]) for r in csv.DictReader(fh) if r.get("train_loss_step")})
    assert min(steps) < 4 and max(steps) >= 4  # the first run's rows are kept


@pytest.mark.slow
def test_train_2d_pipeline_runs(cohort, tmp_path):
    from medseg.models.export import load_exported
    from medseg.training import train

    cfg = _cfg(cohort, patch_size=[32, 32], batch_size=4, max_steps=2)
    cfg["model"] = {"name": "unet2d", "config": {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}}
    cfg["transforms"] = {"recipe": "mri_2d"}
    run = train(cfg, out_dir=tmp_path / "run2d")
    model, info = load_exported(run)
    assert info["spatial_dims"] == 2 and model(torch.randn(1, 1, 32, 32)).shape == (1, 9, 32, 32)


def test_resume_without_checkpoint_and_missing_root(cohort, tmp_path):
    from medseg.errors import InputError
    from medseg.training import train

    with pytest.raises(InputError, match="nothing to resume"):
        train(_cfg(cohort), out_dir=tmp_path / "empty", resume=True)
    with pytest.raises(ConfigError, match="dataset.root"):
        train({"train": {"max_steps": 1}}, out_dir=tmp_path / "x")


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_single_process(cohort, tmp_path):
    """2 gloo processes with batch 1 each == 1 process with batch 2 (same samples, averaged gradients)."""
    from medseg.models.export import load_exported
    from medseg.training import train

    recipe = tmp_path / "det.yaml"  # deterministic sampling: no random crop or augmentation
    recipe.write_text(
        "preprocess: [MedsegOrientd, MedsegSpacingd, MedsegNormalized, MedsegToArrayd]\n"
        "train:\n  - CenterSpatialCropd: {roi_size: '@crop_size'}\n"
    )
    common = {"transforms": {"recipe": str(recipe)}, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.0,
                                                                  "weight_decay": 0.0}}
    opts = {"max_steps": 3, "iterations_per_epoch": 2, "shuffle": False, "val_every_n_epochs": 1,
            "gradient_clip": None}
    single = _cfg(cohort, batch_size=2, **opts)
    ddp = _cfg(cohort, batch_size=1, devices=2, strategy="ddp_spawn", **opts)
    single.update(common)
    ddp.update(common)
    m1, _ = load_exported(train(single, out_dir=tmp_path / "single"))
    m2, _ = load_exported(train(ddp, out_dir=tmp_path / "ddp"))
    s1, s2 = m1.state_dict(), m2.state_dict()
    for key in s1:
        torch.testing.assert_close(s1[key], s2[key], atol=1e-6, rtol=1e-5, msg=key)
    losses = []
    for run in ("single", "ddp"):
        with open(tmp_path / run / "metrics.csv") as fh:
            losses.append([float(r["train_loss_step"]) for r in csv.DictReader(fh) if r.get("train_loss_step")])
    assert len(losses[0]) >= 1 and np.allclose(losses[0], losses[1], rtol=1e-4)
    # without shuffling every rank validates every case (no distributed sampler); the gathered results, keyed
    # by case, score each once: the same val Dice (the padded sampler of shuffled runs: the test below)
    dices = []
    for run in ("single", "ddp"):
        with open(tmp_path / run / "metrics.csv") as fh:
            dices.append([float(r["val_dice"]) for r in csv.DictReader(fh) if r.get("val_dice")])
    assert len(dices[0]) >= 1 and np.allclose(dices[0], dices[1], atol=1e-5)


@pytest.mark.slow
def test_ddp_shuffled_validation_scores_the_padded_case_once(tmp_path):
    """Shuffled DDP: Lightning's distributed sampler splits the 3 validation cases over 2 ranks and pads one
    rank with a repeated case. With a learning rate of 1e-12 the weights stay at their (seeded, equal) init,
    so the val Dice must equal the single process's, which it would not if the repeated case counted twice."""
    from medseg.training import train

    cohort = write_cohort(tmp_path / "cohort", 6, shape=(24, 24, 16), spacing=(6.0, 6.0, 8.0), seed=0)
    opts = {"max_steps": 2, "iterations_per_epoch": 1, "shuffle": True, "val_every_n_epochs": 1}
    dices = []
    for run, extra in (("single", {}), ("ddp", {"devices": 2, "strategy": "ddp_spawn"})):
        cfg = _cfg(cohort, batch_size=1, **opts, **extra)
        cfg["optimizer"] = {"name": "sgd", "lr": 1e-12, "momentum": 0.0, "weight_decay": 0.0}
        train(cfg, out_dir=tmp_path / run)
        assert len(json.loads((tmp_path / run / "splits.json").read_text())[0]["val"]) == 3
        with open(tmp_path / run / "metrics.csv") as fh:
            dices.append([float(r["val_dice"]) for r in csv.DictReader(fh) if r.get("val_dice")])
    assert len(dices[0]) == 2 and np.allclose(dices[0], dices[1], atol=1e-6), dices
