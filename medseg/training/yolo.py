"""YOLO-seg training (``model.name: yolo_seg``): ultralytics' own trainer behind ``medseg train``.

The caller's process never imports ultralytics: the training runs in a child process
(``python -m medseg.training.yolo_worker``), so ultralytics' import-time settings
(``OMP_NUM_THREADS=1``, ``torch.set_num_threads``) never leak into it. The child is offline for
real: ``YOLO_OFFLINE=1``, ``YOLO_AUTOINSTALL=false`` and a private ``YOLO_CONFIG_DIR`` inside the run
holding matplotlib's DejaVuSans as ``Ultralytics/Arial.ttf`` (ultralytics otherwise downloads the
font for its plots). The dataset is a ``yolo_seg`` folder (``DIR/data.yaml``); the run gets its own
copy of data.yaml whose split folders are links under ``<run>/yolo/dataset`` (ultralytics writes its
label ``.cache`` files next to the labels: into the run, not into the dataset).

Settings: ``model.config.model`` (a model YAML ultralytics ships such as ``yolo11n-seg.yaml``,
random init, or a local ``.pt``), ``model.config.args`` (extra ultralytics train arguments,
``{mosaic: 0.0, lr0: 0.01}``), ``train.max_epochs``, ``train.batch_size``, ``images.crop_size[0]``
(``imgsz``, pixels), ``train.seed``, ``train.max_minutes`` (a cap: training stops at the first epoch end
past it; ultralytics' own ``time`` would instead stretch the epochs to fill the time, so it is not
used), resume from ``<run>/yolo/train/weights/last.pt``.

The run folder: ``yolo/`` (ultralytics' own ``train/`` folder, ``train.log``), ``metrics.csv``
(its ``results.csv`` with medseg's column names: ``epoch``, ``train_loss`` (sum of the training
losses), ``val_map50_mask``, ``val_map_mask``, ...), ``curves.png`` and ``export/``: the best
weights as a plain state_dict with a ``model.json`` (labels 0 = background, YOLO class ``c`` =
medseg class ``c + 1``).
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, InputError, ModelError
from medseg.io.atomic import atomic_path, write_text_atomic
from medseg.models.yolo import run_worker
from medseg.training.config import Config

log = logging.getLogger(__name__)

YOLO_DIR = "yolo"
WORKER = "medseg.training.yolo_worker"
#: ``model.config`` keys of a yolo_seg run
MODEL_KEYS = ("model", "args")
#: ultralytics train arguments medseg sets itself (from medseg's own config keys)
OWN_ARGS = ("data", "epochs", "batch", "imgsz", "seed", "time", "resume", "project", "name", "exist_ok", "device")


def uses_yolo(cfg: Config) -> bool:
    """True when ``cfg`` trains ultralytics YOLO-seg."""
    return cfg.model.name == "yolo_seg"


# --------------------------------------------------------------------------- dataset
def run_data_yaml(root: Path, yolo_dir: Path) -> tuple[Path, dict[int, str]]:
    """A run-local data.yaml (absolute ``path:``; split folders linked under ``yolo/dataset``) and the
    medseg class names (``{c + 1: name}``) of the ``yolo_seg`` dataset at ``root``."""
    import yaml

    from medseg.data.instance_datasets import _read_yaml, _yaml_file, _yolo_dirs, yolo_names
    from medseg.io.images import files_by_stem

    source = _yaml_file(root) if root.is_dir() else root
    if source is None or not source.is_file():
        raise InputError(f"{root}: model yolo_seg trains on a yolo_seg dataset: expected DIR/data.yaml "
                         "(names:, train:/val: image folders) with labels/ next to images/")
    data = _read_yaml(source)
    names = yolo_names(source, data["names"])
    base = yolo_dir / "dataset"
    out: dict[str, Any] = {"path": str(base.resolve()), "names": {c - 1: n for c, n in names.items()}}
    splits: dict[str, list[str]] = {}
    for i, (split, folder) in enumerate(_yolo_dirs(source, data, source.parent)):
        name = f"{split}{i}"
        _link_files(files_by_stem(folder).values(), base / "images" / name, base / "labels" / name)
        splits.setdefault(split, []).append(f"images/{name}")
    if "train" not in splits or "val" not in splits:
        raise InputError(f"{source}: YOLO training needs train: and val: image folders (found {sorted(splits)})")
    out.update({k: v[0] if len(v) == 1 else v for k, v in splits.items()})
    path = yolo_dir / "data.yaml"
    write_text_atomic(path, yaml.safe_dump(out, sort_keys=False))
    return path, names


def _link_files(images: Any, image_dir: Path, label_dir: Path) -> None:
    """Link every image and its label txt into ``image_dir``/``label_dir`` (real folders: ultralytics
    resolves folder links, and writes ``label_dir``'s ``.cache`` next to it)."""
    from medseg.data.instance_datasets import label_path

    for folder in (image_dir, label_dir):
        if folder.is_dir():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    for image in images:
        image = Path(image).resolve()
        (image_dir / image.name).symlink_to(image)
        label = label_path(image)
        if label.is_file():
            (label_dir / f"{image.stem}.txt").symlink_to(label)


# --------------------------------------------------------------------------- metrics
def _column(name: str) -> str:
    """ultralytics' ``results.csv`` column -> medseg's (``metrics/mAP50-95(M)`` -> ``val_map_mask``)."""
    name = name.strip()
    m = re.fullmatch(r"metrics/(precision|recall|mAP50|mAP50-95)\((B|M)\)", name)
    if m:
        what = {"precision": "precision", "recall": "recall", "mAP50": "map50", "mAP50-95": "map"}[m.group(1)]
        return f"val_{what}_{'mask' if m.group(2) == 'M' else 'box'}"
    if name == "time":
        return "time_s"
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def write_metrics(results_csv: Path, metrics_csv: Path) -> list[dict[str, float]]:
    """Map ultralytics' ``results.csv`` into ``metrics.csv`` (medseg columns, plus ``train_loss`` and
    ``val_loss``: the sums of its loss terms); returns the rows."""
    rows: list[dict[str, float]] = []
    with open(results_csv, newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            row = {_column(k): float(v) for k, v in raw.items() if k and v not in ("", None)}
            row = {**row, "epoch": int(row.get("epoch", len(rows) + 1))}
            for split in ("train", "val"):
                terms = [v for k, v in row.items() if k.startswith(f"{split}_") and k.endswith("_loss")]
                if terms:
                    row[f"{split}_loss"] = sum(terms)
            rows.append(row)
    if not rows:
        raise ModelError(f"{results_csv}: ultralytics wrote no epoch")
    keys = ["epoch", "train_loss", "val_loss", "val_map50_mask", "val_map_mask"]
    keys = [k for k in keys if k in rows[0]] + sorted(k for k in rows[0] if k not in keys)
    with atomic_path(metrics_csv) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def plot_yolo_curves(rows: list[dict[str, float]], out_png: Path) -> Path:
    """Training loss and validation mask mAP against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("train_loss", "val_loss"):
        if key in rows[0]:
            ax_loss.plot(epochs, [r[key] for r in rows], "o-", label=key, markersize=3)
    for key, label in (("val_map50_mask", "mask mAP50"), ("val_map_mask", "mask mAP50-95")):
        if key in rows[0]:
            ax_map.plot(epochs, [r[key] for r in rows], "o-", label=label, markersize=3)
    ax_loss.set_title("loss (sum of ultralytics' terms)")
    ax_map.set_title("validation mask mAP (ultralytics val)")
    ax_map.set_ylim(0, 1)
    for ax in (ax_loss, ax_map):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return out_png


# --------------------------------------------------------------------------- the run
def _model_settings(cfg: Config) -> tuple[str, dict[str, Any]]:
    from medseg.models.yolo import check_yolo_model

    config = dict(cfg.model.config)
    unknown = sorted(set(config) - set(MODEL_KEYS))
    if unknown:
        raise ConfigError(f"model.config: unknown key(s) {', '.join(unknown)} for yolo_seg; accepted: "
                          f"{', '.join(MODEL_KEYS)} (model: a model YAML or local .pt; args: ultralytics train args)")
    args = dict(config.get("args") or {})
    own = sorted(set(args) & set(OWN_ARGS))
    if own:
        raise ConfigError(f"model.config.args: {', '.join(own)} are set from medseg's config (train.max_epochs, "
                          "train.batch_size, images.crop_size, train.seed, train.max_minutes, --resume, --out)")
    return check_yolo_model(str(config.get("model", "yolo11n-seg.yaml"))), args


def train_yolo(cfg: Config, run_dir: Path, *, resume: bool = False, t0: float | None = None) -> Path:
    """Train YOLO-seg into ``run_dir`` with ultralytics' trainer in a child process; returns ``run_dir``.

    Raises:
        ConfigError: a weights name that is not a local file, a bad ``model.config`` key.
        InputError: not a ``yolo_seg`` dataset; nothing to resume.
        ModelError: the ultralytics child failed (its log's last lines).
    """
    import yaml

    t0 = time.monotonic() if t0 is None else t0
    if cfg.dataset.root is None:
        raise ConfigError("dataset.root: required (a yolo_seg folder with data.yaml); set it with --set dataset.root=DIR")
    model, args = _model_settings(cfg)
    imgsz = int(cfg.images.crop_size[0])
    if imgsz % 32:
        raise ConfigError(f"images.crop_size {cfg.images.crop_size}: YOLO's imgsz (the first value) must be a "
                          "multiple of 32")
    yolo_dir = (run_dir / YOLO_DIR).resolve()
    last = yolo_dir / "train" / "weights" / "last.pt"
    if resume and not last.is_file():
        raise InputError(f"{last}: nothing to resume (no ultralytics last.pt in {run_dir})")
    data_yaml, names = run_data_yaml(Path(cfg.dataset.root), yolo_dir)
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    job = {"model": model, "resume": str(last) if resume else None, "export_state": str(yolo_dir / "best_state.pt"),
           "export_info": str(yolo_dir / "best_model.json"),
           "args": {"data": str(data_yaml), "epochs": cfg.train.max_epochs, "batch": cfg.train.batch_size or 16,
                    "imgsz": imgsz, "seed": cfg.train.seed, "project": str(yolo_dir), "name": "train",
                    "exist_ok": True, **args},
           "budget_s": cfg.train.max_minutes * 60 if cfg.train.max_minutes else None}
    run_worker(WORKER, "train", job, yolo_dir, log_name="train.log")
    rows = write_metrics(yolo_dir / "train" / "results.csv", run_dir / "metrics.csv")
    plot_yolo_curves(rows, run_dir / "curves.png")
    export_yolo(run_dir, yolo_dir, names, imgsz, rows)
    log.info("run finished in %.1f s: %s", time.monotonic() - t0, run_dir)
    return run_dir


def export_yolo(run_dir: Path, yolo_dir: Path, names: dict[int, str], imgsz: int,
                rows: list[dict[str, float]]) -> Path:
    """``<run>/export/``: the child's plain state_dict of the best weights and a typed ``model.json``."""
    from medseg.models.export import read_state_dict, save_export
    from medseg.training.engine import EXPORT_DIR

    state = read_state_dict(yolo_dir / "best_state.pt")
    made = json.loads((yolo_dir / "best_model.json").read_text(encoding="utf-8"))
    best = max(rows, key=lambda r: r.get("val_map_mask", float("-inf")))
    info = {
        "model": {"name": "yolo_seg", "config": {"model": made["yaml"], "nc": len(names), "imgsz": imgsz}},
        "spatial_dims": 2,
        "labels": {"0": "background", **{str(k): v for k, v in sorted(names.items())}},
        "preprocessing": {"image_order": "rgb", "resize": "letterbox", "normalization": {"kind": "scale"}},
        "inference": {"task": "instance", "imgsz": imgsz, "conf": 0.25, "iou": 0.7, "max_det": 300},
        "training": {"trainer": f"ultralytics {made.get('ultralytics', '')}".strip(), "epochs": len(rows),
                     "weights": made.get("source", "best.pt"),  # ultralytics' best fitness (box and mask mAP)
                     "best_val_map_mask_epoch": best["epoch"],
                     **{f"best_{k}": best[k] for k in ("val_map50_mask", "val_map_mask") if k in best}},
    }
    return save_export(run_dir / EXPORT_DIR, state, info)


__all__ = ["uses_yolo", "train_yolo", "export_yolo", "write_metrics", "run_data_yaml"]
