"""``medseg.training.train``: config -> plan -> splits -> preprocessed cases -> Lightning -> export.

The run folder (``out_dir``) receives ``config.yaml`` (resolved), ``plan.json``,
``splits.json``, ``checkpoints/{best,last}.ckpt``, ``metrics.csv``, ``curves.png``,
``logs/`` (Lightning CSV, and TensorBoard when installed) and ``export/``
(``model.pt`` + ``model.json``, the folder ``medseg predict`` takes).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.io.atomic import write_text_atomic
from medseg.training.config import Config, load_config, resolve_recipe
from medseg.volume import Volume

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
EXPORT_DIR = "export"


def _is_rank_zero() -> bool:
    """True in the process that writes the run files (global rank 0, or no distributed launcher)."""
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
    return rank == 0 and int(os.environ.get("NODE_RANK", "0") or 0) == 0


# --------------------------------------------------------------------------- plan and data
def get_plan(cfg: Config, dataset: Any, run_dir: Path) -> dict[str, Any]:
    """The plan: ``plan.path``, else the run's ``plan.json`` (resume), else computed; config overrides applied."""
    from medseg.training.planning import load_plan, plan_dataset

    if cfg.plan.path is not None:
        plan = load_plan(cfg.plan.path)
    elif (run_dir / "plan.json").is_file():
        plan = load_plan(run_dir / "plan.json")
    else:
        log.info("computing the dataset plan for %s", dataset.root)
        from medseg.models.registry import get_model_spec

        planned = {f"model_{get_model_spec(cfg.model.name).spatial_dims}d": (cfg.model.name, dict(cfg.model.config))}
        plan = plan_dataset(dataset, memory_budget_mb=cfg.plan.memory_budget_mb, max_patch=cfg.plan.max_patch,
                            **planned)
    pre = plan["preprocessing"]
    if cfg.plan.target_spacing_mm is not None:
        if len(cfg.plan.target_spacing_mm) != 3:
            raise ConfigError(f"plan.target_spacing_mm needs 3 values (mm), got {cfg.plan.target_spacing_mm}")
        pre["target_spacing_mm"] = list(cfg.plan.target_spacing_mm)
    if cfg.plan.normalization is not None:
        from medseg.transforms.preprocess import normalize_intensity

        normalize_intensity(np.zeros(2, np.float32) + 1, cfg.plan.normalization)  # validates the spec
        pre["normalization"] = dict(cfg.plan.normalization)
    return plan


def get_split(cfg: Config, dataset: Any, run_dir: Path) -> dict[str, list[str]]:
    """Fold ``dataset.fold`` of ``dataset.splits``, else of the run's ``splits.json``, else new splits."""
    from medseg.data.splits import get_fold, load_splits, make_splits, save_splits

    ids = [c.case_id for c in dataset.cases]
    if cfg.dataset.splits is not None:
        splits = load_splits(cfg.dataset.splits)
    elif (run_dir / "splits.json").is_file():
        splits = load_splits(run_dir / "splits.json")
    else:
        splits = make_splits(ids, n_folds=cfg.dataset.n_folds, seed=cfg.dataset.split_seed)
    if _is_rank_zero():
        save_splits(splits, run_dir / "splits.json")
    return get_fold(splits, cfg.dataset.fold, known=ids)


def preprocess_cases(dataset: Any, case_ids: list[str], pipeline: Any) -> list[dict[str, Any]]:
    """Load and run the recipe's ``preprocess`` section on each case; returns dicts of
    ``image [C, X, Y, Z]`` float32 and ``label [1, X, Y, Z]`` int16 numpy arrays."""
    from medseg.data.datasets import load_case

    out = []
    for cid in case_ids:
        image, label = load_case(dataset.case(cid))
        if label is None:
            raise InputError(f"case {cid}: no label map; every training case needs one")
        d = pipeline({"image": image, "label": label, "case_id": cid})
        if isinstance(d.get("image"), Volume) or isinstance(d.get("label"), Volume):
            raise ConfigError("transforms.preprocess must end with MedsegToArrayd (Volume -> array)")
        img = np.ascontiguousarray(np.asarray(d["image"]), dtype=np.float32)
        lab = np.ascontiguousarray(np.asarray(d["label"]), dtype=np.int16)
        extra = {k: np.asarray(v) for k, v in d.items() if k.endswith("_indices")}
        out.append({"image": img, "label": lab, "case_id": cid, **extra})
    return out


class PatchDataset:
    """``length`` training samples drawn from ``cases`` (case order fixed by ``seed``), each
    passed through the random ``transform`` (patch sampling and augmentation)."""

    def __init__(self, cases: list[dict[str, Any]], transform: Any, length: int, seed: int) -> None:
        self.cases = cases
        self.transform = transform
        rng = np.random.default_rng(seed)
        reps = -(-length // len(cases))
        self.order = np.concatenate([rng.permutation(len(cases)) for _ in range(reps)])[:length]

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from monai.utils import convert_to_tensor

        case = self.cases[int(self.order[index])]
        out = self.transform({k: v for k, v in case.items() if k != "case_id"})
        if isinstance(out, list):
            out = out[0]
        return {"image": convert_to_tensor(out["image"], track_meta=False, dtype=None).float(),
                "label": convert_to_tensor(out["label"], track_meta=False).long()}


class RankSampler:
    """Sequential sampler for distributed runs without shuffling: rank ``r`` of ``w`` takes indices
    ``r, r + w, r + 2w, ...`` (Lightning's own distributed sampler always shuffles training data)."""

    def __init__(self, length: int, world_size: int) -> None:
        self.length = length
        self.world_size = max(1, world_size)

    def _rank(self) -> int:
        import torch.distributed as dist

        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def __iter__(self) -> Any:
        per_rank = self.length // self.world_size
        return iter(range(self._rank(), per_rank * self.world_size, self.world_size))

    def __len__(self) -> int:
        return self.length // self.world_size


class VolumeDataset:
    """Whole preprocessed volumes for validation: ``{"image", "label", "index"}`` (the case's position)."""

    def __init__(self, cases: list[dict[str, Any]]) -> None:
        self.cases = cases

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        c = self.cases[index]
        return {"image": torch.from_numpy(c["image"]), "label": torch.from_numpy(c["label"].astype(np.int64)),
                "index": index}


# --------------------------------------------------------------------------- model settings
def resolve_model(cfg: Config, dataset: Any, plan: dict[str, Any]) -> tuple[dict[str, Any], int, list[int], int, type]:
    """(model config, spatial dims, patch size, batch size, LightningModule class)."""
    from medseg.models.registry import get_model_spec

    spec = get_model_spec(cfg.model.name)
    model_config = dict(cfg.model.config)
    model_config.setdefault("in_channels", len(dataset.channel_names))
    model_config.setdefault("out_channels", dataset.num_classes)
    sd = spec.spatial_dims
    conf = plan["configurations"][f"{sd}d"]
    patch = list(cfg.train.patch_size or conf["patch_size"])
    batch = int(cfg.train.batch_size or conf["batch_size"])
    if len(patch) != sd:
        raise ConfigError(f"train.patch_size needs {sd} values for model {cfg.model.name!r}, got {patch}")
    spec.check_size(patch, model_config, what="train.patch_size")
    module_cls: type
    if spec.training_module:
        mod_name, _, cls_name = spec.training_module.partition(":")
        module_cls = getattr(importlib.import_module(mod_name), cls_name)
    else:
        from medseg.training.module import SegmentationModule

        module_cls = SegmentationModule
    return model_config, sd, patch, batch, module_cls


def _postprocessing(cfg: Config, labels: dict[int, str]) -> dict[str, dict[str, Any]]:
    by_name = {v: k for k, v in labels.items()}
    out = {str(k): {"largest_component": False, "min_size_mm3": 0.0, "fill_holes": False}
           for k in sorted(labels) if k != 0}
    for key, value in cfg.postprocessing.items():
        lab = by_name.get(key, int(key) if key.isdigit() else None)
        if lab is None or lab not in labels or lab == 0:
            raise ConfigError(f"postprocessing.{key}: not a foreground label; valid: "
                              f"{', '.join(v for k, v in sorted(labels.items()) if k)}")
        out[str(lab)] = value.model_dump()
    return out


# --------------------------------------------------------------------------- the run
def train(
    config: str | os.PathLike[str] | dict[str, Any] | Config,
    *,
    out_dir: str | os.PathLike[str],
    overrides: list[str] | tuple[str, ...] = (),
    resume: bool = False,
) -> Path:
    """Train a model as described by ``config`` and write the run folder; returns it.

    Args:
        config: YAML path, dict or :class:`~medseg.training.config.Config`.
        out_dir: the run folder (created).
        overrides: ``key.sub=value`` strings applied after the file (``--set``).
        resume: continue from ``out_dir/checkpoints/last.ckpt`` (its step, optimiser and
            schedule state); the run's ``plan.json`` and ``splits.json`` are reused.

    Raises:
        ConfigError: a bad config value (names the key and the allowed values).
        InputError: bad dataset (lists every bad case).

    The family's route is :func:`training_route`'s (the registry decides, not the model name).
    """
    t0 = time.monotonic()
    cfg = load_config(config, overrides)
    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    route = training_route(cfg)
    with torch_threads(cfg.train.threads):
        return route(cfg, run_dir, resume=resume, t0=t0)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op CPU threads (``train.threads``), then restore the
    caller's count; ``None`` leaves torch's setting alone. ``OMP_NUM_THREADS`` is set alongside for the
    block, so processes it starts (``ddp_spawn`` ranks, loader workers) begin with the same count."""
    if threads is None:
        yield
        return
    import torch

    before, env_before = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(int(threads))
    os.environ["OMP_NUM_THREADS"] = str(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if env_before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_before


def training_route(cfg: Config) -> Any:
    """The one dispatch of ``medseg train``: the family's registry ``trainer`` (ultralytics' own trainer for
    ``yolo_seg``/``yolo_sem``), else instance training for an instance dataset
    (:func:`medseg.training.instances.train_instances`: ``instance_masks``, ``coco_instances``), else
    ordinary-image training for an image dataset (:func:`medseg.training.images.train_images`), else the
    volume engine (:func:`train_volumes`).
    Each is called as ``route(cfg, run_dir, resume=, t0=)``."""
    from medseg.models.registry import get_model_spec, resolve_entry

    spec = get_model_spec(cfg.model.name)
    if spec.trainer:
        return resolve_entry(spec.trainer)
    from medseg.training.images import train_images, uses_image_dataset
    from medseg.training.instances import train_instances, uses_instance_dataset

    if uses_instance_dataset(cfg):
        return train_instances
    return train_images if uses_image_dataset(cfg) else train_volumes


def train_volumes(cfg: Config, run_dir: Path, *, resume: bool, t0: float) -> Path:
    """Train on a medical dataset (nnU-Net/MSD folder or manifest) with the Lightning engine; returns ``run_dir``."""
    import yaml

    ckpt_last = run_dir / CHECKPOINT_DIR / "last.ckpt"
    if resume and not ckpt_last.is_file():
        raise InputError(f"{ckpt_last}: nothing to resume (no last checkpoint in {run_dir})")
    if cfg.dataset.root is None:
        raise ConfigError("dataset.root: required (the dataset folder or manifest); set it with --set dataset.root=DIR")

    from medseg.data.datasets import load_dataset, validate_dataset
    from medseg.training.planning import save_plan
    from medseg.transforms.recipes import build_recipe, load_recipe

    dataset = load_dataset(cfg.dataset.root)
    if cfg.dataset.validate_data:
        validate_dataset(dataset)
    plan = get_plan(cfg, dataset, run_dir)
    split = get_split(cfg, dataset, run_dir)
    model_config, sd, patch, batch, module_cls = resolve_model(cfg, dataset, plan)
    _postprocessing(cfg, dataset.labels)  # fail before training, not after
    if _is_rank_zero():
        resolved = cfg.model_dump(mode="json")
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
        save_plan(plan, run_dir / "plan.json")

    recipe = load_recipe(resolve_recipe(cfg.transforms.recipe))
    context = {"patch_size": patch, "crop_size": patch if sd == 3 else patch + [1], "spatial_dims": sd,
               "preprocessing": plan["preprocessing"], "num_classes": dataset.num_classes}
    pre = build_recipe(recipe, "preprocess", context)
    val_ids = split["val"][: cfg.train.val_max_cases] if cfg.train.val_max_cases else split["val"]
    t_pre = time.monotonic()
    train_cases = preprocess_cases(dataset, split["train"], pre)
    val_cases = preprocess_cases(dataset, val_ids, pre)
    log.info("preprocessed %d training and %d validation cases in %.1f s",
             len(train_cases), len(val_cases), time.monotonic() - t_pre)

    trainer = build_trainer(cfg, run_dir, log_version=log_version(run_dir) if resume else "")
    steps = cfg.train.max_steps if cfg.train.max_steps > 0 else cfg.train.max_epochs * cfg.train.iterations_per_epoch
    labels = {str(k): v for k, v in sorted(dataset.labels.items())}
    module = module_cls(
        model_name=cfg.model.name, model_config=model_config, spatial_dims=sd, patch_size=patch, labels=labels,
        loss=cfg.loss.model_dump(), optimizer=cfg.optimizer.model_dump(), schedule=cfg.schedule.model_dump(),
        inference=cfg.inference.model_dump(), total_steps=steps,
        budget_s=cfg.train.max_minutes * 60 if cfg.train.max_minutes else None,
        finetune=cfg.finetune.model_dump(mode="json"),
    )
    train_loader, val_loader = make_loaders(cfg, recipe, context, train_cases, val_cases, batch, trainer.world_size)
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(ckpt_last) if resume else None, weights_only=True)

    if trainer.is_global_zero:
        finish_run(run_dir, trainer, module, cfg, plan, dataset, sd, patch, model_config, split, labels)
        log.info("run finished in %.1f s: %s", time.monotonic() - t0, run_dir)
    return run_dir


def make_loaders(cfg: Config, recipe: dict[str, Any], context: dict[str, Any], train_cases: list[dict[str, Any]],
                 val_cases: list[dict[str, Any]], batch: int, world_size: int) -> tuple[Any, Any]:
    """Training loader (``iterations_per_epoch`` batches per rank) and validation loader."""
    from monai.data import DataLoader
    from monai.transforms import Compose

    from medseg.transforms.recipes import build_recipe

    train_tf: Compose = build_recipe(recipe, "train", context)
    train_tf.set_random_state(seed=cfg.train.seed)
    length = cfg.train.iterations_per_epoch * batch * max(1, world_size)
    ds = PatchDataset(train_cases, train_tf, length, cfg.train.seed)
    sampler = RankSampler(len(ds), world_size) if (world_size > 1 and not cfg.train.shuffle) else None
    train_loader = DataLoader(ds, batch_size=batch, shuffle=cfg.train.shuffle and sampler is None, sampler=sampler,
                              num_workers=cfg.train.num_workers, drop_last=True,
                              persistent_workers=cfg.train.num_workers > 0)
    val_loader = DataLoader(VolumeDataset(val_cases), batch_size=1, shuffle=False, num_workers=0)
    return train_loader, val_loader


def make_image_loaders(cfg: Config, train_set: Any, val_set: Any, batch: int, world_size: int, *,
                       collate_fn: Any = None) -> tuple[Any, Any]:
    """Loaders of ordinary-image training: shuffled augmented crops (batched by ``collate_fn``, default
    torch's), and whole validation images one by one."""
    from torch.utils.data import DataLoader

    sampler = RankSampler(len(train_set), world_size) if (world_size > 1 and not cfg.train.shuffle) else None
    train_loader = DataLoader(train_set, batch_size=batch, shuffle=cfg.train.shuffle and sampler is None,
                              sampler=sampler, num_workers=cfg.train.num_workers, drop_last=True,
                              persistent_workers=cfg.train.num_workers > 0, collate_fn=collate_fn)
    val_loader = DataLoader(val_set, batch_size=1, shuffle=False, num_workers=0)
    return train_loader, val_loader


class _NoAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


def _quiet_lightning() -> None:
    """Drop Lightning's product tips (offline tool, nothing to install from there)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, _NoAdverts) for f in lg.filters):
            lg.addFilter(_NoAdverts())


def log_version(run_dir: Path) -> str:
    """The CSV log version of a resumed run: ``resume1``, ``resume2``, ..."""
    n = 1
    while (run_dir / "logs" / f"resume{n}").exists():
        n += 1
    return f"resume{n}"


def build_trainer(cfg: Config, run_dir: Path, log_version: str = "", monitor: str = "val_dice") -> Any:
    """The Lightning ``Trainer`` for ``cfg`` (checkpoints, CSV/TensorBoard logs, time budget); the best
    checkpoint and early stopping follow the validation metric ``monitor`` (higher is better)."""
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from medseg.training.module import StepTimer

    t = cfg.train
    precision = {"auto": "16-mixed" if torch.cuda.is_available() else "32-true", "32": "32-true"}.get(
        t.precision, t.precision)
    loggers: list[Any] = [CSVLogger(save_dir=str(run_dir), name="logs", version=log_version)]
    if importlib.util.find_spec("tensorboard") is not None:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="logs", version="tb"))
    callbacks: list[Any] = [
        ModelCheckpoint(dirpath=str(run_dir / CHECKPOINT_DIR), filename="best", monitor=monitor, mode="max",
                        save_last=True, save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False,
                        save_on_train_epoch_end=False),
        LearningRateMonitor(logging_interval="epoch"),
        StepTimer(),
    ]
    if t.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode="max", patience=t.early_stopping_patience))
    if t.progress_bar and importlib.util.find_spec("rich") is not None:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar())
    strategy = t.strategy
    if strategy == "auto" and t.devices not in (1, "auto") and t.accelerator == "cpu":
        strategy = "ddp_spawn"
    return make_trainer(
        seed=t.seed,
        default_root_dir=str(run_dir),
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=precision,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        max_time=datetime.timedelta(minutes=t.max_minutes) if t.max_minutes else None,
        check_val_every_n_epoch=t.val_every_n_epochs,
        gradient_clip_val=t.gradient_clip,
        logger=loggers,
        callbacks=callbacks,
        enable_progress_bar=t.progress_bar,
        log_every_n_steps=max(1, min(10, t.iterations_per_epoch)),
        deterministic=t.deterministic,
        use_distributed_sampler=t.shuffle,  # without shuffling, RankSampler splits the training samples
    )


def make_trainer(*, seed: int, **settings: Any) -> Any:
    """The one Lightning ``Trainer`` setup of medseg (the engine's runs and SAM2's :func:`finetune`).

    Seeds everything with ``seed``, silences Lightning's adverts, and applies medseg's fixed
    choices (no sanity validation, no model summary, cuDNN benchmark off) under ``settings``,
    which are ``lightning.Trainer`` keyword arguments.
    """
    import lightning as L

    _quiet_lightning()
    L.seed_everything(seed, workers=True, verbose=False)
    fixed = {"num_sanity_val_steps": 0, "enable_model_summary": False, "benchmark": False}
    return L.Trainer(**{**fixed, **settings})


def merge_metrics(log_dir: Path, out_csv: Path) -> bool:
    """Concatenate ``logs/metrics.csv`` and every ``logs/resumeN/metrics.csv`` (in order) into ``out_csv``."""
    import csv
    import io

    parts = [log_dir / "metrics.csv"] + sorted(log_dir.glob("resume*/metrics.csv"),
                                               key=lambda p: int(p.parent.name[len("resume"):] or 0))
    rows: list[dict[str, str]] = []
    fields: list[str] = []
    for part in parts:
        if not part.is_file():
            continue
        with part.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields += [f for f in reader.fieldnames or [] if f not in fields]
            rows.extend(reader)
    if not rows:
        return False
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out_csv, buf.getvalue())
    return True


def best_weights(run_dir: Path) -> dict[str, Any] | None:
    """The network weights (``net.*`` keys, prefix dropped) of ``checkpoints/best.ckpt``, or ``None``."""
    import torch

    best = run_dir / CHECKPOINT_DIR / "best.ckpt"
    if not best.is_file():
        return None
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    return {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")} or None


def training_record(run_dir: Path, trainer: Any, best: bool) -> dict[str, Any]:
    """``global_step``, ``epochs``, ``best_score`` (of the monitored metric), ``weights`` (``best`` or
    ``last``) and ``steps_per_second`` of a finished fit, for the export's ``training`` record."""
    import torch

    global_step, epochs = int(trainer.global_step), int(trainer.current_epoch)
    last = run_dir / CHECKPOINT_DIR / "last.ckpt"
    score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    if global_step == 0 and last.is_file():  # ddp_spawn: the loop and callback state stay in the worker processes
        meta = torch.load(last, map_location="cpu", weights_only=True)
        global_step, epochs = int(meta.get("global_step", 0)), int(meta.get("epoch", 0)) + 1
        if score is None:  # the checkpoint callback's own state, saved with the last checkpoint
            states = [v for k, v in meta.get("callbacks", {}).items() if k.startswith("ModelCheckpoint")]
            score = states[0].get("best_model_score") if states else None
    timers = [c for c in trainer.callbacks if type(c).__name__ == "StepTimer"]
    speed = timers[0].steps_per_second() if timers else None
    return {"global_step": global_step, "epochs": epochs, "best_score": None if score is None else float(score),
            "weights": "best" if best else "last", "steps_per_second": None if speed is None else round(speed, 4)}


def finish_run(run_dir: Path, trainer: Any, module: Any, cfg: Config, plan: dict[str, Any], dataset: Any,
               sd: int, patch: list[int], model_config: dict[str, Any], split: dict[str, list[str]],
               labels: dict[str, str]) -> Path:
    """Copy ``metrics.csv``, draw ``curves.png`` and export the best weights to ``export/``."""
    from medseg.models.export import save_export
    from medseg.training.curves import plot_curves

    if merge_metrics(run_dir / "logs", run_dir / "metrics.csv"):
        plot_curves(run_dir / "metrics.csv", run_dir / "curves.png")
    state = best_weights(run_dir)
    net = module.net
    if state:
        net.load_state_dict(state)
    record = training_record(run_dir, trainer, state is not None)
    record["best_val_dice"] = record.pop("best_score")
    info = {
        "model": {"name": cfg.model.name, "config": model_config},
        "spatial_dims": sd,
        "labels": labels,
        "preprocessing": dict(plan["preprocessing"]),
        "inference": {"patch_size": patch, "overlap": cfg.inference.overlap, "batch_size": cfg.inference.batch_size,
                      "mode": cfg.inference.mode},
        "postprocessing": _postprocessing(cfg, dataset.labels),
        "plan": plan,
        "training": {"fold": cfg.dataset.fold, "train_cases": split["train"], "val_cases": split["val"], **record},
    }
    return save_export(run_dir / EXPORT_DIR, net, info)


__all__ = ["train", "training_route", "torch_threads", "train_volumes", "build_trainer", "get_plan", "get_split", "preprocess_cases", "PatchDataset", "VolumeDataset",
           "make_image_loaders", "best_weights", "training_record", "log_version", "CHECKPOINT_DIR", "EXPORT_DIR"]
