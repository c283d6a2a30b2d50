"""``medseg train`` and ``medseg plan``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def train(
    config: Path = typer.Argument(..., help="Training config YAML (e.g. pipelines/unet3d_ct.yaml)."),
    set_: List[str] = typer.Option([], "--set", help="Override a config value: key.sub=value (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: runs/<config name>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN_DIR/checkpoints/last.ckpt."),
    devices: Optional[str] = typer.Option(None, "--devices", help="Devices per node (int or 'auto'); same as --set train.devices=N."),
    num_nodes: Optional[int] = typer.Option(None, "--num-nodes", help="Number of nodes (multi-node via torchrun/SLURM)."),
) -> None:
    """Train a 2D/3D U-Net from one config; writes checkpoints, metrics, curves and an exported model."""
    from medseg.training import train as run_train

    overrides = list(set_)
    if devices is not None:
        overrides.append(f"train.devices={devices}")
    if num_nodes is not None:
        overrides.append(f"train.num_nodes={num_nodes}")
    run_dir = out or Path("runs") / config.stem
    result = run_train(config, out_dir=run_dir, overrides=overrides, resume=resume)
    typer.echo(f"run folder: {result}")
    typer.echo(f"exported model: {result / 'export'}")


def plan(
    dataset: Path = typer.Argument(..., help="Dataset: nnU-Net raw or MSD folder, or a CSV/JSON manifest."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the plan JSON here (default: print it)."),
    memory_budget_mb: float = typer.Option(8000.0, "--memory-mb", help="Memory a training step may use (MB)."),
    max_patch: Optional[int] = typer.Option(None, "--max-patch", help="Cap on every patch axis (voxels)."),
) -> None:
    """Fingerprint a dataset and propose spacing, normalisation, patch and batch size, 2D or 3D."""
    from medseg.data.datasets import load_dataset, validate_dataset
    from medseg.planning import plan_dataset, save_plan

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
