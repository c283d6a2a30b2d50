"""One CLI vocabulary: every command reads ``--input/-i`` and writes ``--output/-o``
(``evaluate`` keeps ``--pred``/``--ref``); the older spellings still work, hidden from ``--help``."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

import medseg
from medseg.cli.main import COMMAND_MODULES, app

A, B, M, R, P = "in_x", "out_y", "model_m", "ref_r", "pipe.yaml"

# command -> (arguments in the new spelling, the same in the old spelling, values the command must receive)
COMMANDS: dict[str, tuple[list[str], list[str], set[str]]] = {
    "info": (["-i", A], [A], {A}),
    "convert": (["--input", A, "--output", B], [A, B], {A, B}),
    "predict": (["-m", M, "-i", A, "-o", B], ["-m", M, A, B], {A, B}),
    "train": ([P, "-o", B], [P, "--out", B], {B}),
    "plan": (["-i", A, "-o", B], [A, "--out", B], {A, B}),
    "batch": (["-m", M, "-i", A, "-o", B], ["--model", M, "--input", A, "--output", B], {A, B}),
    "report": (["-i", A, "-o", B], [A, "--out", B], {A, B}),
    "demo": (["-o", B], ["--out", B], {B}),
    "phantom": (["-o", B], [B], {B}),
    "evaluate": (["--pred", A, "--ref", R, "-o", B], ["--pred", A, "--ref", R, "--out", B], {B}),
    "evaluate-images": (["--pred", A, "--ref", R, "-o", B, "--num-classes", "2"],
                        ["--pred", A, "--ref", R, "--out", B, "--num-classes", "2"], {B}),
    "predict-images": (["-m", M, "-i", A, "-o", B], ["--model", M, "--input", A, "--output", B], {A, B}),
    "sam2 segment": (["--model", M, "-i", A, "-o", B], ["--model", M, "--input", A, "--out", B], {A, B}),
    "sam2 prompts": (["-i", A, "-o", B], ["--mask", A, "--out", B], {A, B}),
    "import nnunet": (["-i", A, "-o", B], [A, "--out", B], {A, B}),
    "import monai-bundle": (["-i", A, "-o", B], [A, "--out", B], {A, B}),
    "import model-set": ([A, R, "-o", B], [A, R, "--out", B], {B}),
    "convert-images": (["-i", A, "-o", B], ["--input", A, "--output", B], {A, B}),
}
WITHOUT_FILES = {"sam2 configs", "pacs ping", "pacs query"}  # no file input or output
HIDDEN = {"--out", "--mask"}


class _Received(Exception):
    """Raised once a command body has received every expected value (so nothing runs)."""


def _leaf_commands(group: Any, prefix: str = "") -> list[str]:
    names = []
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            names += _leaf_commands(cmd, f"{prefix}{name} ")
        else:
            names.append(prefix + name)
    return names


def _stop_when_received(monkeypatch: pytest.MonkeyPatch, expected: set[str]) -> list[str]:
    """Wrap ``pick`` in every command module: record what each body received, stop at the last."""
    from medseg.cli import vocabulary

    received: list[str] = []

    def pick(*args, **kwargs):
        value = vocabulary.pick(*args, **kwargs)
        received.append(str(value))
        if expected <= set(received):
            raise _Received
        return value

    for name in COMMAND_MODULES:
        module = importlib.import_module(f"medseg.cli.{name}")
        if hasattr(module, "pick"):
            monkeypatch.setattr(module, "pick", pick)
    return received


def test_every_command_is_covered() -> None:
    assert set(_leaf_commands(typer.main.get_command(app))) == set(COMMANDS) | WITHOUT_FILES


@pytest.mark.parametrize("spelling", ["new", "old"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_accepts_spelling(command: str, spelling: str, monkeypatch: pytest.MonkeyPatch) -> None:
    new, old, expected = COMMANDS[command]
    received = _stop_when_received(monkeypatch, expected)
    result = CliRunner().invoke(app, command.split() + (new if spelling == "new" else old))
    assert isinstance(result.exception, _Received), (result.output, result.exception)
    assert expected <= set(received)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_the_new_spelling_only(command: str) -> None:
    result = CliRunner().invoke(app, command.split() + ["--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    new = COMMANDS[command][0]
    for option in ("--input", "--output"):
        if option in new or option[1:3] in new:
            assert re.search(rf"{option}\b", result.output), result.output
    for old in HIDDEN:
        assert not re.search(rf"(?<![\w-]){old}\b", result.output), f"{command} --help shows {old}"


def test_conflicting_and_missing_spellings_are_usage_errors(tmp_path: Path) -> None:
    twice = CliRunner().invoke(app, ["convert", "a.nii", "b.nii", "-i", "c.nii", "-o", "b.nii"])
    assert twice.exit_code == 2 and "given twice" in twice.output
    missing = CliRunner().invoke(app, ["convert", "-i", "a.nii"])
    assert missing.exit_code == 2 and "--output" in missing.output


def test_new_spelling_end_to_end(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["phantom", "-o", str(tmp_path / "data"), "-n", "1", "--shape", "16", "16", "8"])
    assert result.exit_code == 0, result.output
    image = next((tmp_path / "data").rglob("*_0000.nii.gz"))
    result = runner.invoke(app, ["convert", "-i", str(image), "-o", str(tmp_path / "ct.nrrd")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["info", "-i", str(tmp_path / "ct.nrrd"), "--json"])
    assert result.exit_code == 0 and '"shape"' in result.output, result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"medseg {medseg.__version__}"
