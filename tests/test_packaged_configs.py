"""Config parts and recipes ship in the package (``medseg/configs``) and are found by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from medseg import configs
from medseg.cli.main import app
from medseg.errors import ConfigError
from medseg.training.config import load_config, resolve_recipe

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))
PACKAGE = Path(configs.__file__).parent


def test_parts_are_found_through_importlib_resources() -> None:
    assert configs.part_names("transforms") == ["ct_3d", "mri_2d"]
    assert {"unet3d", "unet3d_small", "unet2d", "sam2_tiny"} <= set(configs.part_names("models"))
    assert {"adamw", "nnunet_sgd"} <= set(configs.part_names("train"))
    assert configs.resolve_part("models/unet3d") == PACKAGE / "models" / "unet3d.yaml"
    assert configs.resolve_part("train/adamw.yaml") == PACKAGE / "train" / "adamw.yaml"
    assert resolve_recipe("ct_3d") == PACKAGE / "transforms" / "ct_3d.yaml"
    assert not (ROOT / "configs").exists(), "config parts live in one place: medseg/configs"


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="known: nnunet_sgd|known: adamw"):
        configs.resolve_part("train/adam")
    with pytest.raises(ConfigError, match="unknown config kind 'model'; known: models, train, transforms"):
        configs.resolve_part("model/unet3d")
    with pytest.raises(ConfigError, match="expected KIND/NAME; known: .*models/unet3d"):
        configs.resolve_part("unet3d")
    with pytest.raises(ConfigError, match="known: ct_3d, mri_2d"):
        resolve_recipe("ct3d")


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.stem)
def test_every_pipeline_resolves_from_the_package(pipeline: Path) -> None:
    cfg = load_config(pipeline)
    assert resolve_recipe(cfg.transforms.recipe).parent == PACKAGE / "transforms"
    text = pipeline.read_text()
    assert "configs/" not in text, f"{pipeline.name}: name shipped parts as KIND/NAME, not by path"


@pytest.mark.parametrize("kind", ["models", "train"])
def test_every_part_is_a_valid_config(kind: str) -> None:
    for name in configs.part_names(kind):
        load_config(configs.part_path(kind, name))


def test_recipes_load_by_name() -> None:
    pytest.importorskip("monai")
    from medseg.transforms.recipes import load_recipe

    for name in configs.part_names("transforms"):
        assert load_recipe(name)["preprocess"], name


def test_include_by_name_and_old_relative_path(tmp_path: Path) -> None:
    (tmp_path / "by_name.yaml").write_text("include: [models/unet3d_small, train/adamw]\ntrain: {seed: 4}\n")
    (tmp_path / "old.yaml").write_text("include: [../configs/models/unet3d_small.yaml]\n")
    named, old = load_config(tmp_path / "by_name.yaml"), load_config(tmp_path / "old.yaml")
    assert named.model.config["filters"] == old.model.config["filters"] == [8, 16, 32, 64]
    assert named.optimizer.name == "adamw" and named.train.seed == 4
    (tmp_path / "missing.yaml").write_text("include: [../elsewhere/part.yaml]\n")
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_print_config_applies_overrides_and_resolves_the_recipe(tmp_path: Path) -> None:
    pipeline = ROOT / "pipelines" / "unet3d_ct_cpu.yaml"
    result = CliRunner().invoke(app, ["train", str(pipeline), "--print-config", "--set", "train.seed=7",
                                      "-o", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert f"# transforms.recipe ct_3d -> {PACKAGE / 'transforms' / 'ct_3d.yaml'}" in result.output
    printed = yaml.safe_load(result.output)
    assert printed["train"]["seed"] == 7 and printed["model"]["name"] == "unet3d"
    assert load_config(printed) == load_config(pipeline, ["train.seed=7"])
    assert not (tmp_path / "run").exists(), "--print-config must not train"
