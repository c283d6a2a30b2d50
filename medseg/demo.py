"""``medseg demo``: the main job end to end on synthetic data, with no download.

1. write a synthetic CT cohort as DICOM (with its exact label maps) and a separate
   nnU-Net-format training set (different random anatomy);
2. train a small 3D U-Net for a few minutes, or reuse the model a previous demo run
   trained and cached in the output folder;
3. batch-segment the cohort (DICOM-SEG + NIfTI), evaluate against the known labels,
   write the manifest and the HTML report;
4. return where everything is and the mean Dice.

``fast=True`` is a reduced run for tests: 2 tiny cases and a few training steps
(the Dice of such a model is meaningless; the plumbing is what is checked).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.io.atomic import write_text_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo. Shapes in voxels ``(i, j, k)``, spacings in mm."""

    cohort_cases: int = 6
    train_cases: int = 10
    shape: tuple[int, int, int] = (96, 96, 64)
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.5)
    target_spacing: tuple[float, float, float] = (8.0, 8.0, 10.0)
    patch: tuple[int, int, int] = (24, 24, 16)
    filters: tuple[int, ...] = (8, 16, 32, 64)
    train_minutes: float = 5.0
    max_steps: int = -1
    iterations_per_epoch: int = 25
    learning_rate: float = 1e-2
    progress_bar: bool = True


FULL = DemoSettings()
FAST = DemoSettings(cohort_cases=2, train_cases=4, shape=(48, 48, 32), spacing=(4.0, 4.0, 5.0),
                    target_spacing=(8.0, 8.0, 10.0), patch=(24, 24, 16), train_minutes=1.0, max_steps=4,
                    iterations_per_epoch=2, filters=(4, 8, 16), progress_bar=False)


@dataclass
class DemoResult:
    """Where the demo put everything, and how it went."""

    out_dir: Path
    cohort_dir: Path
    model_dir: Path
    batch_dir: Path
    report: Path | None
    trained: bool
    ok: int = 0
    failed: int = 0
    mean_dice: float | None = None
    dice_per_label: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        """Every study was segmented."""
        return self.ok > 0 and self.failed == 0

    def lines(self) -> list[str]:
        """A plain-text summary for the terminal."""
        model_note = "trained now" if self.trained else "cached from a previous run"
        rows = [
            ("cohort (DICOM + reference labels)", self.cohort_dir),
            (f"model ({model_note})", self.model_dir),
            ("segmentations (NIfTI + DICOM-SEG)", self.batch_dir / "studies"),
            ("manifest", self.batch_dir / "manifest.jsonl"),
            ("report", self.report),
            ("studies ok / failed", f"{self.ok} / {self.failed}"),
        ]
        rows += [(f"  Dice {name}", f"{dice:.3f}") for name, dice in self.dice_per_label.items()]
        rows.append(("mean Dice", f"{self.mean_dice:.3f}" if self.mean_dice is not None else "n/a"))
        out = [f"{k + ':':<38s} {v}" for k, v in rows]
        out.append("time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items()))
        return out


def train_config(dataset_root: Path, s: DemoSettings) -> dict[str, Any]:
    """The demo's embedded training config: a small DynUNet, AdamW, Dice + CE, a time budget."""
    return {
        "description": "medseg demo: small 3D U-Net on a synthetic CT cohort",
        "dataset": {"root": str(dataset_root), "fold": 0, "n_folds": 5},
        "plan": {"memory_budget_mb": 1000, "target_spacing_mm": list(s.target_spacing)},
        "model": {"name": "unet3d", "config": {"arch": "dynunet", "filters": list(s.filters),
                                               "deep_supervision": False, "norm": "instance"}},
        "transforms": {"recipe": "ct_3d"},
        "optimizer": {"name": "adamw", "lr": s.learning_rate, "weight_decay": 1e-5},
        "schedule": {"name": "poly", "exponent": 0.9},
        "loss": {"name": "dice_ce", "include_background": False},
        "train": {"max_minutes": s.train_minutes, "max_steps": s.max_steps, "max_epochs": 1000,
                  "iterations_per_epoch": s.iterations_per_epoch, "batch_size": 2, "patch_size": list(s.patch),
                  "val_every_n_epochs": 2, "val_max_cases": 1, "num_workers": 0, "seed": 0,
                  "progress_bar": s.progress_bar, "accelerator": "auto"},
        "inference": {"overlap": 0.25, "batch_size": 2},
        "postprocessing": {name: {"largest_component": True}
                           for name in ("liver", "kidney_left", "kidney_right", "spleen", "lung_left", "lung_right")},
    }


def _cached_model(model_dir: Path) -> bool:
    return any((d / "model.json").is_file() and (d / "model.pt").is_file() for d in (model_dir, model_dir / "export"))


def run_demo(
    out_dir: str | os.PathLike[str] = "demo_output",
    *,
    fast: bool = False,
    workers: int = 2,
    retrain: bool = False,
    console: Any = None,
    settings: DemoSettings | None = None,
) -> DemoResult:
    """Run the demo into ``out_dir``; returns a :class:`DemoResult`.

    Args:
        out_dir: output folder; ``cohort/``, ``train_data/``, ``model/`` (cached between
            runs; ``model_fast/`` with ``fast``) and ``batch/`` (rewritten each run).
        fast: the reduced test configuration (:data:`FAST`).
        workers: batch worker processes.
        retrain: train even when a cached model exists.
        console: a ``rich.console.Console`` for progress (``None``: log only).
        settings: override the demo sizes.
    """
    from medseg.batch.runner import run_batch
    from medseg.data.cohort import write_cohort
    from medseg.report.html import summarize

    s = settings or (FAST if fast else FULL)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cohort_dir, model_dir, batch_dir = out / "cohort", out / ("model_fast" if fast else "model"), out / "batch"
    seconds: dict[str, float] = {}

    def say(text: str) -> None:
        (console.print if console is not None else log.info)(text)

    t = time.perf_counter()
    say(f"[1/4] writing {s.cohort_cases} synthetic CT studies (DICOM) to {cohort_dir}")
    if cohort_dir.exists():
        shutil.rmtree(cohort_dir)
    write_cohort(cohort_dir, s.cohort_cases, shape=s.shape, spacing=s.spacing, seed=1000, fmt="dicom")
    seconds["cohort"] = time.perf_counter() - t

    t = time.perf_counter()
    trained = retrain or not _cached_model(model_dir)
    if trained:
        from medseg.training import train

        data_root = out / "train_data"
        if data_root.exists():
            shutil.rmtree(data_root)
        say(f"[2/4] training a small 3D U-Net for up to {s.train_minutes:g} min on {s.train_cases} synthetic cases")
        dataset = write_cohort(data_root, s.train_cases, shape=s.shape, spacing=s.spacing, seed=0, fmt="nnunet")
        if model_dir.exists():
            shutil.rmtree(model_dir)
        train(train_config(dataset, s), out_dir=model_dir)
    else:
        say(f"[2/4] using the model cached in {model_dir} (pass --retrain to train again)")
    seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    say(f"[3/4] batch segmentation with {workers} worker(s): NIfTI + DICOM-SEG, evaluated against the known labels")
    if batch_dir.exists():
        shutil.rmtree(batch_dir)
    on_start = on_record = None
    progress = None
    if console is not None:
        from medseg.batch.progress import rich_progress

        progress, on_start, on_record = rich_progress(console)
        progress.start()
    try:
        result = run_batch(model_dir, cohort_dir, batch_dir, workers=workers, formats=("nifti", "dicomseg"),
                           reference_dir=cohort_dir / "labels", on_start=on_start, on_record=on_record)
    finally:
        if progress is not None:
            progress.stop()
    seconds["batch"] = time.perf_counter() - t

    say(f"[4/4] report written to {result.report}")
    summary = summarize(result.records)
    dice = {name: v["dice"] for name, v in summary["metrics_per_label"].items() if "dice" in v}
    demo = DemoResult(out_dir=out, cohort_dir=cohort_dir, model_dir=model_dir, batch_dir=batch_dir,
                      report=result.report, trained=trained, ok=result.count("ok"),
                      failed=result.count("failed") + result.count("lost"), mean_dice=summary["mean_dice"],
                      dice_per_label=dice, seconds=seconds)
    write_text_atomic(out / "demo_summary.json", json.dumps(
        {"ok": demo.ok, "failed": demo.failed, "mean_dice": demo.mean_dice, "dice_per_label": dice,
         "seconds": seconds, "trained": trained, "report": str(demo.report)}, indent=2, default=str))
    return demo


__all__ = ["run_demo", "DemoResult", "DemoSettings", "FULL", "FAST", "train_config"]
