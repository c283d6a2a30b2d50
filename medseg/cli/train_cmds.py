"""``medseg train`` and ``medseg plan``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from medseg.cli.vocabulary import (
    INPUT_NAMES, OUTPUT_NAMES, hidden_argument, hidden_option, input_option, output_option, pick,
)


def train(
    config: Path = typer.Argument(..., metavar="PIPELINE", help="Training config YAML (e.g. pipelines/unet3d_ct.yaml)."),
    set_: List[str] = typer.Option([], "--set", help="Override a config value: key.sub=value (repeatable)."),
    output: Optional[Path] = output_option("Run folder (default: runs/<config name>)."),
    out: Optional[Path] = hidden_option("--out"),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN_DIR/checkpoints/last.ckpt."),
    devices: Optional[str] = typer.Option(None, "--devices", help="Devices per node (int or 'auto'); same as --set train.devices=N."),
    num_nodes: Optional[int] = typer.Option(None, "--num-nodes", help="Number of nodes (multi-node via torchrun/SLURM)."),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the resolved config (YAML, --set applied) and exit without training."),
) -> None:
    """Train a 2D/3D U-Net from one config; writes checkpoints, metrics, curves and an exported model."""
    out = pick(OUTPUT_NAMES, output, ("--out", out), required=False)
    overrides = list(set_)
    if devices is not None:
        overrides.append(f"train.devices={devices}")
    if num_nodes is not None:
        overrides.append(f"train.num_nodes={num_nodes}")
    if print_config:
        _print_config(config, overrides)
        return
    from medseg.training import train as run_train

    run_dir = out or Path("runs") / config.stem
    result = run_train(config, out_dir=run_dir, overrides=overrides, resume=resume)
    typer.echo(f"run folder: {result}")
    typer.echo(f"exported model: {result / 'export'}")


def _print_config(config: Path, overrides: list[str]) -> None:
    """The validated config as YAML, headed by where its transform recipe resolved."""
    from medseg.training.config import dump_config, load_config, resolve_recipe

    cfg = load_config(config, overrides)
    recipe = resolve_recipe(cfg.transforms.recipe)
    typer.echo(f"# config: {config}")
    typer.echo(f"# transforms.recipe {cfg.transforms.recipe} -> {recipe}")
    typer.echo(dump_config(cfg), nl=False)


def plan(
    input: Optional[Path] = input_option("Dataset: nnU-Net raw or MSD folder, or a CSV/JSON manifest."),
    output: Optional[Path] = output_option("Write the plan JSON here (default: print it)."),
    input_arg: Optional[Path] = hidden_argument("DATASET"),
    out: Optional[Path] = hidden_option("--out"),
    memory_budget_mb: float = typer.Option(8000.0, "--memory-mb", help="Memory a training step may use (MB)."),
    max_patch: Optional[int] = typer.Option(None, "--max-patch", help="Cap on every patch axis (voxels)."),
) -> None:
    """Fingerprint a dataset and propose spacing, normalisation, patch and batch size, 2D or 3D."""
    dataset = pick(INPUT_NAMES, input, ("DATASET", input_arg))
    out = pick(OUTPUT_NAMES, output, ("--out", out), required=False)
    from medseg.data.datasets import load_dataset, validate_dataset
    from medseg.training.planning import plan_dataset, save_plan

    ds = load_dataset(dataset)
    validate_dataset(ds)
    result = plan_dataset(ds, memory_budget_mb=memory_budget_mb, max_patch=max_patch)
    if out is None:
        typer.echo(json.dumps(result, indent=2))
        return
    save_plan(result, out)
    pre, conf = result["preprocessing"], result["configurations"]
    typer.echo(
        f"wrote {out}: spacing {pre['target_spacing_mm']} mm, normalization {pre['normalization']['kind']}, "
        f"3d patch {conf['3d']['patch_size']} x{conf['3d']['batch_size']}, "
        f"2d patch {conf['2d']['patch_size']} x{conf['2d']['batch_size']}, recommended {result['recommended']}"
    )


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(plan)
