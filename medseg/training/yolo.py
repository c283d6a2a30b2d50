"""YOLO training (``model.name: yolo_seg`` or ``yolo_sem``): ultralytics' own trainer behind ``medseg train``.

Both families name :func:`train_yolo` as their registry ``trainer``; the family's ``task`` picks
ultralytics' task (``instance``: ``segment``; ``semantic``: ``semantic``), the dataset and the export.
The caller's process never imports ultralytics: the training runs in a child process
(``python -m medseg.training.yolo_worker``), so ultralytics' import-time settings
(``OMP_NUM_THREADS=1``, ``torch.set_num_threads``) never leak into it. The child is offline for
real: ``YOLO_OFFLINE=1``, ``YOLO_AUTOINSTALL=false`` and a private ``YOLO_CONFIG_DIR`` inside the run
holding matplotlib's DejaVuSans as ``Ultralytics/Arial.ttf`` (ultralytics otherwise downloads the
font for its plots).

Datasets, both made inside ``<run>/yolo/dataset`` (ultralytics writes its ``.cache`` files next to
the labels: into the run, not into the dataset):

- ``yolo_seg``: a ``yolo_seg`` folder (``DIR/data.yaml``); the run gets its own data.yaml whose split
  folders hold links to the images and label txt files;
- ``yolo_sem``: an ordinary semantic image dataset (``image_folder``, ``cityscapes``, ... with the
  ``labels:`` block; :mod:`medseg.data.image_datasets`) and medseg's split (``splits.json``): what
  ultralytics' ``SemanticDataset`` reads, ``images/{train,val}/<stem>.<ext>`` (links) and
  ``masks/{train,val}/<stem>.png`` (8-bit train indices, 255 = ignore; written from the masks
  through the label spec) with ``masks_dir: masks`` in the data.yaml.

Settings: ``model.config.model`` (a model YAML ultralytics ships such as ``yolo11n-seg.yaml`` or
``yolo26n-sem.yaml``, random init, or a local ``.pt``), ``model.config.args`` (extra ultralytics train
arguments, ``{mosaic: 0.0, lr0: 0.01}``), ``train.max_epochs``, ``train.batch_size``,
``images.crop_size[0]`` (``imgsz``, pixels), ``train.seed``, ``train.max_minutes`` (a cap: training
stops at the first epoch end past it; ultralytics' own ``time`` would instead stretch the epochs to
fill the time, so it is not used), ``--resume`` from ``<run>/yolo/train/weights/resume.pt`` (the unstripped
checkpoint of the epoch where ``max_minutes`` stopped the run) or ``last.pt`` (an interrupted run).

The run folder: ``yolo/`` (ultralytics' own ``train/`` folder, ``train.log``), ``metrics.csv``
(its ``results.csv`` with medseg's column names: ``epoch``, ``train_loss`` (sum of the training
losses), ``val_map50_mask``, ``val_map_mask`` or ``val_miou``, ...), ``curves.png`` and ``export/``:
the best weights as a plain state_dict with a typed ``model.json`` (``yolo_seg``: labels 0 =
background, YOLO class ``c`` = medseg class ``c + 1``; ``yolo_sem``: the dataset's train indices).
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

from dataclasses import dataclass

from medseg.errors import ConfigError, InputError, ModelError
from medseg.io.atomic import atomic_path, write_text_atomic
from medseg.models.yolo import run_worker
from medseg.training.config import Config
from medseg.training.yolo_worker import RESUME_NAME

log = logging.getLogger(__name__)

YOLO_DIR = "yolo"
WORKER = "medseg.training.yolo_worker"
#: ``model.config`` keys of a YOLO run
MODEL_KEYS = ("model", "args")
#: ultralytics train arguments medseg sets itself (from medseg's own config keys)
OWN_ARGS = ("data", "epochs", "batch", "imgsz", "seed", "time", "resume", "project", "name", "exist_ok", "device")


@dataclass(frozen=True)
class YoloTask:
    """What a registry ``task`` means for an ultralytics run: its ``task=`` name, the default model YAML,
    the ``metrics.csv`` column that picks the best epoch, and the curves' right panel."""

    ultralytics: str
    default_model: str
    monitor: str
    scores: tuple[tuple[str, str], ...]
    score_title: str


#: the YOLO run of each registry task
YOLO_TASKS: dict[str, YoloTask] = {
    "instance": YoloTask("segment", "yolo11n-seg.yaml", "val_map_mask",
                         (("val_map50_mask", "mask mAP50"), ("val_map_mask", "mask mAP50-95")),
                         "validation mask mAP (ultralytics val)"),
    "semantic": YoloTask("semantic", "yolo26n-sem.yaml", "val_miou", (("val_miou", "mIoU"),),
                         "validation mIoU (ultralytics val)"),
}


def yolo_task(name: str) -> YoloTask:
    """The :class:`YoloTask` of registry model ``name`` (its ``task``)."""
    from medseg.models.registry import get_model_spec

    task = get_model_spec(name).task
    if task not in YOLO_TASKS:
        raise ConfigError(f"model {name!r}: ultralytics training has no {task!r} task; known: {', '.join(YOLO_TASKS)}")
    return YOLO_TASKS[task]


# --------------------------------------------------------------------------- dataset
def run_data_yaml(root: Path, yolo_dir: Path) -> tuple[Path, dict[int, str]]:
    """A run-local data.yaml (absolute ``path:``; split folders linked under ``yolo/dataset``) and the
    medseg class names (``{c + 1: name}``) of the ``yolo_seg`` dataset at ``root``."""
    import yaml

    from medseg.data.instance_datasets import label_path, read_yaml, yaml_file, yolo_dirs, yolo_names
    from medseg.io.images import files_by_stem

    source = yaml_file(root) if root.is_dir() else root
    if source is None or not source.is_file():
        raise InputError(f"{root}: model yolo_seg trains on a yolo_seg dataset: expected DIR/data.yaml "
                         "(names:, train:/val: image folders) with labels/ next to images/")
    data = read_yaml(source)
    names = yolo_names(source, data["names"])
    base = yolo_dir / "dataset"
    out: dict[str, Any] = {"path": str(base.resolve()), "names": {c - 1: n for c, n in names.items()}}
    splits: dict[str, list[str]] = {}
    for i, (split, folder) in enumerate(yolo_dirs(source, data, source.parent)):
        name = f"{split}{i}"
        images = [Path(p).resolve() for p in files_by_stem(folder).values()]
        _link_files(images, base / "images" / name)
        _link_files([lb for lb in map(label_path, images) if lb.is_file()], base / "labels" / name)
        splits.setdefault(split, []).append(f"images/{name}")
    if "train" not in splits or "val" not in splits:
        raise InputError(f"{source}: YOLO training needs train: and val: image folders (found {sorted(splits)})")
    out.update({k: v[0] if len(v) == 1 else v for k, v in splits.items()})
    path = yolo_dir / "data.yaml"
    write_text_atomic(path, yaml.safe_dump(out, sort_keys=False))
    return path, names


def _fresh(folder: Path) -> Path:
    """``folder``, emptied (a real folder: ultralytics resolves folder links and writes ``.cache`` files
    next to label folders)."""
    if folder.is_dir():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _link_files(files: list[Path], folder: Path, names: list[str] | None = None) -> None:
    """Link every file into the emptied ``folder`` (as ``names``, else its own name)."""
    _fresh(folder)
    for i, path in enumerate(files):
        (folder / (names[i] if names else path.name)).symlink_to(Path(path).resolve())


def semantic_data_yaml(cfg: Config, run_dir: Path, yolo_dir: Path) -> tuple[Path, Any, dict[str, list[str]], Any]:
    """What ultralytics' ``SemanticDataset`` reads, made from the ordinary image dataset of ``cfg`` (see the
    module docstring); returns ``(data.yaml, LabelSpec, split, dataset)``.

    Raises:
        InputError: no training or validation image, an unreadable image or mask (names the file).
        ConfigError: more than 255 classes (ultralytics' masks are 8-bit with 255 = ignore).
    """
    import numpy as np
    import yaml

    from medseg.data.image_datasets import read_item
    from medseg.io.images import save_mask
    from medseg.training.images import training_images

    dataset, split, train_items, val_items = training_images(cfg, run_dir)
    labels = dataset.labels
    if labels.num_classes > 255:
        raise ConfigError(f"{dataset.root}: {labels.num_classes} classes; ultralytics' semantic masks are 8-bit "
                          "(255 = ignore), so yolo_sem takes at most 255 classes")
    base = yolo_dir / "dataset"
    for name, items in (("train", train_items), ("val", val_items)):
        _link_files([it.image for it in items], base / "images" / name,
                    [f"{it.stem}{it.image.suffix.lower()}" for it in items])
        masks = _fresh(base / "masks" / name)
        for item in items:
            _, mask = read_item(item, labels)
            if mask is None:
                raise InputError(f"{item.image}: no mask; every yolo_sem training and validation image needs one")
            save_mask(masks / f"{item.stem}.png", np.where(mask == labels.ignore_index, 255, mask).astype(np.uint8))
    out = {"path": str(base.resolve()), "train": "images/train", "val": "images/val", "masks_dir": "masks",
           "names": dict(sorted(labels.names.items()))}
    path = yolo_dir / "data.yaml"
    write_text_atomic(path, yaml.safe_dump(out, sort_keys=False))
    return path, labels, split, dataset


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
    if name.startswith("metrics/"):  # the semantic validator's metrics/mIoU, metrics/pixel_acc, ...
        return "val_" + re.sub(r"[^0-9a-zA-Z]+", "_", name[len("metrics/"):]).strip("_").lower()
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
    keys = ["epoch", "train_loss", "val_loss", "val_map50_mask", "val_map_mask", "val_miou"]
    keys = [k for k in keys if k in rows[0]] + sorted(k for k in rows[0] if k not in keys)
    with atomic_path(metrics_csv) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def plot_yolo_curves(rows: list[dict[str, float]], out_png: Path, task: YoloTask) -> Path:
    """Training loss and the validation score of ``task`` (mask mAP or mIoU) against the epoch."""
    from medseg.training.curves import loss_and_score_panels, save_panels

    epochs = [r["epoch"] for r in rows]
    fig, ax_loss, ax_score = loss_and_score_panels()
    for key in ("train_loss", "val_loss"):
        if key in rows[0]:
            ax_loss.plot(epochs, [r[key] for r in rows], "o-", label=key, markersize=3)
    for key, label in task.scores:
        if key in rows[0]:
            ax_score.plot(epochs, [r[key] for r in rows], "o-", label=label, markersize=3)
    ax_loss.set_title("loss (sum of ultralytics' terms)")
    ax_score.set_title(task.score_title)
    ax_score.set_ylim(0, 1)
    for ax in (ax_loss, ax_score):
        ax.set_xlabel("epoch")
    return save_panels(fig, (ax_loss, ax_score), out_png)


# --------------------------------------------------------------------------- the run
def _model_settings(cfg: Config, task: YoloTask) -> tuple[str, dict[str, Any]]:
    from medseg.models.yolo import check_yolo_model

    config = dict(cfg.model.config)
    unknown = sorted(set(config) - set(MODEL_KEYS))
    if unknown:
        raise ConfigError(f"model.config: unknown key(s) {', '.join(unknown)} for {cfg.model.name}; accepted: "
                          f"{', '.join(MODEL_KEYS)} (model: a model YAML or local .pt; args: ultralytics train args)")
    args = dict(config.get("args") or {})
    own = sorted(set(args) & set(OWN_ARGS))
    if own:
        raise ConfigError(f"model.config.args: {', '.join(own)} are set from medseg's config (train.max_epochs, "
                          "train.batch_size, images.crop_size, train.seed, train.max_minutes, --resume, --out)")
    return check_yolo_model(str(config.get("model", task.default_model))), args


def train_yolo(cfg: Config, run_dir: Path, *, resume: bool = False, t0: float | None = None) -> Path:
    """Train ``yolo_seg`` or ``yolo_sem`` into ``run_dir`` with ultralytics' trainer in a child process;
    returns ``run_dir`` (the registry ``trainer`` of both families).

    Raises:
        ConfigError: a weights name that is not a local file, a bad ``model.config`` key.
        InputError: not a ``yolo_seg`` dataset (``yolo_seg``) or not an image dataset (``yolo_sem``);
            nothing to resume.
        ModelError: the ultralytics child failed (its log's last lines).
    """
    import yaml

    t0 = time.monotonic() if t0 is None else t0
    task = yolo_task(cfg.model.name)
    if cfg.dataset.root is None:
        raise ConfigError(f"dataset.root: required (model {cfg.model.name}: "
                          f"{'a yolo_seg folder with data.yaml' if task.ultralytics == 'segment' else 'an image dataset'}); "
                          "set it with --set dataset.root=DIR")
    model, args = _model_settings(cfg, task)
    imgsz = int(cfg.images.crop_size[0])
    if imgsz % 32:
        raise ConfigError(f"images.crop_size {cfg.images.crop_size}: YOLO's imgsz (the first value) must be a "
                          "multiple of 32")
    yolo_dir = (run_dir / YOLO_DIR).resolve()
    weights = yolo_dir / "train" / "weights"
    last = weights / RESUME_NAME if (weights / RESUME_NAME).is_file() else weights / "last.pt"
    if resume and not last.is_file():
        raise InputError(f"{last}: nothing to resume (no ultralytics last.pt in {run_dir})")
    if task.ultralytics == "semantic":
        data_yaml, spec, split, dataset = semantic_data_yaml(cfg, run_dir, yolo_dir)
        labels = {str(k): v for k, v in sorted(spec.names.items())}
        extra = {"dataset": {"format": dataset.format, "ignore_index": spec.ignore_index,
                             "reduce_zero_label": spec.reduce_zero_label},
                 "split": {"train_images": split["train"], "val_images": split["val"]}}
    else:
        data_yaml, names = run_data_yaml(Path(cfg.dataset.root), yolo_dir)
        labels = {"0": "background", **{str(k): v for k, v in sorted(names.items())}}
        extra = {}
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    job = {"model": model, "task": task.ultralytics, "resume": str(last) if resume else None,
           "export_state": str(yolo_dir / "best_state.pt"), "export_info": str(yolo_dir / "best_model.json"),
           "args": {"data": str(data_yaml), "epochs": cfg.train.max_epochs, "batch": cfg.train.batch_size or 16,
                    "imgsz": imgsz, "seed": cfg.train.seed, "project": str(yolo_dir), "name": "train",
                    "exist_ok": True, **args},
           "budget_s": cfg.train.max_minutes * 60 if cfg.train.max_minutes else None,
           "threads": cfg.train.threads}
    run_worker(WORKER, "train", job, yolo_dir, log_name="train.log")
    rows = write_metrics(yolo_dir / "train" / "results.csv", run_dir / "metrics.csv")
    plot_yolo_curves(rows, run_dir / "curves.png", task)
    export_yolo(run_dir, yolo_dir, cfg.model.name, labels, imgsz, rows, extra)
    log.info("run finished in %.1f s: %s", time.monotonic() - t0, run_dir)
    return run_dir


def export_yolo(run_dir: Path, yolo_dir: Path, name: str, labels: dict[str, str], imgsz: int,
                rows: list[dict[str, float]], extra: dict[str, Any] | None = None) -> Path:
    """``<run>/export/``: the child's plain state_dict of the best weights and a typed ``model.json``.

    ``yolo_seg``: ultralytics' ``SegmentationModel`` keys, run by :mod:`medseg.inference.yolo`; ``yolo_sem``:
    the keys of medseg's wrapper (``net.`` + ultralytics' keys, without the training-only auxiliary head),
    a dense 2D export for ``predict-images``.
    """
    from medseg.models.export import read_state_dict, save_export
    from medseg.training.engine import EXPORT_DIR

    task = yolo_task(name)
    state = read_state_dict(yolo_dir / "best_state.pt")
    made = json.loads((yolo_dir / "best_model.json").read_text(encoding="utf-8"))
    best = max(rows, key=lambda r: r.get(task.monitor, float("-inf")))
    training = {"trainer": f"ultralytics {made.get('ultralytics', '')}".strip(), "epochs": len(rows),
                "weights": made.get("source", "best.pt"),  # ultralytics' best fitness
                f"best_{task.monitor}_epoch": best["epoch"],
                **{f"best_{k}": best[k] for k, _ in task.scores if k in best}, **(extra or {}).get("split", {})}
    if task.ultralytics == "semantic":
        # medseg's wrapper keys; the P4 auxiliary head is a training-only loss term, left out of the network
        state = {f"net.{k}": v for k, v in state.items() if ".aux_head." not in k}
        info: dict[str, Any] = {
            "model": {"name": name, "config": {"model": made["yaml"], "in_channels": int(made.get("ch", 3)),
                                               "out_channels": len(labels)}},
            "preprocessing": {"image_order": "rgb", "normalization": {"kind": "scale"}},
            "inference": {"task": "semantic", "image_mode": "whole", "imgsz": imgsz},
            "postprocessing": {},
            "dataset": (extra or {}).get("dataset", {}),
        }
    else:
        info = {
            "model": {"name": name, "config": {"model": made["yaml"], "nc": len(labels) - 1, "imgsz": imgsz}},
            "preprocessing": {"image_order": "rgb", "resize": "letterbox", "normalization": {"kind": "scale"}},
            "inference": {"task": "instance", "imgsz": imgsz, "conf": 0.25, "iou": 0.7, "max_det": 300},
        }
    info.update({"spatial_dims": 2, "labels": labels, "training": training})
    return save_export(run_dir / EXPORT_DIR, state, info)


__all__ = ["YOLO_TASKS", "YoloTask", "yolo_task", "train_yolo", "export_yolo", "write_metrics", "run_data_yaml",
           "semantic_data_yaml"]
