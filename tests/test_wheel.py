"""A wheel install (not the editable one) resolves the shipped config parts and recipes.

The wheel is built from a copy of the package (no network: setuptools and wheel come from the
project's environment), installed with ``pip --target`` into a folder put first on
``PYTHONPATH`` and run from an unrelated folder. The editable install's finder sits at the end
of ``sys.meta_path``, so the wheel's copy wins; the test checks that it did.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(args)}\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    shutil.copytree(ROOT / "medseg", src / "medseg", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    _run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp / "dist"), str(src)], tmp)
    (wheel,) = (tmp / "dist").glob("medseg-*.whl")
    _run(pip + ["install", "--no-deps", "--no-index", "--target", str(tmp / "site"), str(wheel)], tmp)
    return tmp / "site"


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}


def test_wheel_resolves_shipped_configs_from_another_folder(site: Path, tmp_path: Path) -> None:
    code = (
        "import medseg, medseg.configs as c; from medseg.training.config import load_config, resolve_recipe\n"
        "cfg = load_config('job.yaml')\n"
        "print(medseg.__file__); print(resolve_recipe(cfg.transforms.recipe)); print(c.part_names('models'))\n"
    )
    (tmp_path / "job.yaml").write_text("include: [models/unet3d_small, train/adamw]\ntransforms: {recipe: ct_3d}\n")
    lines = _run([sys.executable, "-c", code], tmp_path, _env(site)).splitlines()
    assert Path(lines[0]).is_relative_to(site), f"medseg imported from {lines[0]}, not the wheel install"
    assert Path(lines[1]) == site / "medseg" / "configs" / "transforms" / "ct_3d.yaml"
    assert "unet3d_small" in lines[2]


def test_wheel_cli_prints_config(site: Path, tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(
        "include: [models/unet3d_small, train/adamw]\ntransforms: {recipe: ct_3d}\ntrain: {max_epochs: 3}\n")
    out = _run([sys.executable, "-m", "medseg", "train", "job.yaml", "--print-config", "--set", "train.seed=9"],
               tmp_path, _env(site))
    recipe = site / "medseg" / "configs" / "transforms" / "ct_3d.yaml"
    assert f"# transforms.recipe ct_3d -> {recipe}" in out, out
    assert "seed: 9" in out and "max_epochs: 3" in out and "arch: dynunet" in out, out
    version = _run([sys.executable, "-m", "medseg", "--version"], tmp_path, _env(site))
    assert version.startswith("medseg ")
