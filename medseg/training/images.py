"""Ordinary-image semantic training: ``medseg train`` on an image dataset layout (``image_folder``,
``cityscapes``, ``ade20k``, ``voc``, ``coco_stuff164k``; :mod:`medseg.data.image_datasets`).

The same run folder as the medical side (``config.yaml``, ``splits.json``, ``checkpoints/``,
``metrics.csv``, ``curves.png``, ``logs/``, ``export/``) and the same Lightning setup
(:func:`medseg.training.engine.build_trainer`: time budget, resume, early stopping, mixed
precision on CUDA, DDP). What differs is the data and the scorer:

- training samples: a random image, normalised (``images.normalization``), randomly scaled,
  cropped to ``images.crop_size`` and flipped (:mod:`medseg.transforms.augment2d`); masks are
  train indices with ``labels.ignore_index`` where unlabelled (and on padding);
- loss: cross-entropy with ``ignore_index`` and optional class weights (``images.class_weights``),
  plus a soft Dice over labelled pixels with ``loss.name: dice_ce`` (``ce``: cross-entropy only); a
  network with its own ``training_loss(image, label, ignore_index)`` (Mask2Former's matching loss) uses that;
- validation: every validation image at full resolution through
  :func:`medseg.models.apply2d.image_logits` (the code of ``medseg predict-images``), scored with
  :func:`medseg.evaluation.images.pair_confusion` and :func:`~medseg.evaluation.images.dataset_metrics`
  (the code of ``medseg evaluate-images``): ``val_miou`` in ``metrics.csv`` is what evaluating
  the exported model's predictions gives. The best checkpoint is the one of the highest ``val_miou``.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.io.atomic import write_text_atomic
from medseg.training.config import Config

log = logging.getLogger(__name__)

MONITOR = "val_miou"
#: ``class_weights: auto`` never weights a class more than this many times the median weight
MAX_AUTO_WEIGHT = 10.0


def uses_image_dataset(cfg: Config) -> bool:
    """True when ``cfg`` trains on an ordinary-image layout (``dataset.format`` set, or detected)."""
    from medseg.data.image_datasets import is_image_dataset

    return cfg.dataset.format is not None or (cfg.dataset.root is not None and is_image_dataset(cfg.dataset.root))


# --------------------------------------------------------------------------- data
def image_split(cfg: Config, dataset: Any, run_dir: Path) -> dict[str, list[str]]:
    """Train and val stems: ``dataset.splits``, the run's ``splits.json`` (resume), the layout's own
    split (``splits.json``, ``ImageSets``, ``train``/``val`` folders), else fold ``dataset.fold`` of
    new k-fold splits of every item."""
    stems = [it.stem for it in dataset.items if it.mask is not None]
    own = None
    if dataset.has_splits and dataset.split("val"):
        own = {"train": sorted(it.stem for it in dataset.split("train")),
               "val": sorted(it.stem for it in dataset.split("val"))}
    return choose_split(cfg, run_dir, stems, own)


def choose_split(cfg: Config, run_dir: Path, stems: list[str], own: dict[str, list[str]] | None,
                 ) -> dict[str, list[str]]:
    """Train and val stems of ``stems``: ``dataset.splits``, the run's ``splits.json`` (resume), the dataset's
    ``own`` split, else fold ``dataset.fold`` of new k-fold splits; saved as the run's ``splits.json``."""
    from medseg.data.splits import get_fold, load_splits, make_splits, save_splits

    if cfg.dataset.splits is not None:
        splits = load_splits(cfg.dataset.splits)
    elif (run_dir / "splits.json").is_file():
        splits = load_splits(run_dir / "splits.json")
    elif own is not None:
        splits = [own]
    else:
        splits = make_splits(stems, n_folds=cfg.dataset.n_folds, seed=cfg.dataset.split_seed)
    fold = cfg.dataset.fold if len(splits) > 1 else 0
    save_splits(splits, run_dir / "splits.json")
    return get_fold(splits, fold, known=stems)


def training_images(cfg: Config, run_dir: Path) -> tuple[Any, dict[str, list[str]], list[Any], list[Any]]:
    """``(dataset, split, train items, val items)`` of an ordinary-image run: the dataset of ``cfg`` (its
    ``labels:`` block applied, validated when ``dataset.validate_data``) and :func:`image_split`, the
    validation items cut to ``train.val_max_cases``.

    Raises:
        InputError: a bad dataset, or no training or no validation image.
    """
    from medseg.data.image_datasets import load_image_dataset, validate_image_dataset

    if cfg.dataset.root is None:
        raise ConfigError("dataset.root: required (the image dataset folder); set it with --set dataset.root=DIR")
    dataset = load_image_dataset(cfg.dataset.root, format=cfg.dataset.format,
                                 labels=cfg.labels.model_dump(exclude_none=True))
    if cfg.dataset.validate_data:
        validate_image_dataset(dataset)
    split = image_split(cfg, dataset, run_dir)
    return dataset, split, *split_items(cfg, dataset, split)


def split_items(cfg: Config, dataset: Any, split: dict[str, list[str]]) -> tuple[list[Any], list[Any]]:
    """``(train items, val items)`` of ``dataset`` (items with a ``stem``) by ``split``, the validation items cut
    to ``train.val_max_cases``.

    Raises:
        InputError: no training or no validation image.
    """
    by_stem = {it.stem: it for it in dataset.items}
    train_items, val_items = [by_stem[s] for s in split["train"]], [by_stem[s] for s in split["val"]]
    if cfg.train.val_max_cases:
        val_items = val_items[: cfg.train.val_max_cases]
    if not train_items or not val_items:
        raise InputError(f"{dataset.root}: need training and validation images, got {len(train_items)} and "
                         f"{len(val_items)}")
    return train_items, val_items


class ImageTrainSet:
    """``length`` augmented training samples drawn from ``items`` (order fixed by ``seed``).

    Each sample is ``{"image": float32 [C, h, w], "label": int64 [h, w]}`` with ``(h, w)`` the crop.
    """

    def __init__(self, items: list[Any], labels: Any, normalization: dict[str, Any], in_channels: int,
                 augment: Any, length: int, seed: int) -> None:
        self.items, self.labels, self.normalization = items, labels, normalization
        self.in_channels, self.augment, self.seed = in_channels, augment, seed
        rng = np.random.default_rng(seed)
        reps = -(-length // len(items))
        self.order = np.concatenate([rng.permutation(len(items)) for _ in range(reps)])[:length]
        self.draws = 0

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        item = self.items[int(self.order[index])]
        self.draws += 1
        return self.sample(item, np.random.default_rng([self.seed, index, self.draws, torch.initial_seed() % 2**32]))

    def sample(self, item: Any, rng: np.random.Generator) -> dict[str, Any]:
        """One augmented sample of ``item`` drawn with ``rng``."""
        import torch

        from medseg.data.image_datasets import read_item
        from medseg.models.apply2d import image_tensor

        image, mask = read_item(item, self.labels)
        if mask is None:
            raise InputError(f"{item.image}: no mask; every training image needs one")
        chw = image_tensor(image, self.normalization, self.in_channels, item.image)
        img, lab = self.augment(chw, mask, rng)
        return {"image": torch.from_numpy(img), "label": torch.from_numpy(lab.astype(np.int64))}


class ImageValSet:
    """Whole validation images at full resolution: ``{"image": [C, H, W], "label": [H, W]}``."""

    def __init__(self, items: list[Any], labels: Any, normalization: dict[str, Any], in_channels: int) -> None:
        self.items, self.labels, self.normalization, self.in_channels = items, labels, normalization, in_channels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        from medseg.data.image_datasets import read_item
        from medseg.models.apply2d import image_tensor

        item = self.items[index]
        image, mask = read_item(item, self.labels)
        if mask is None:
            raise InputError(f"{item.image}: no mask; every validation image needs one")
        chw = image_tensor(image, self.normalization, self.in_channels, item.image)
        return {"image": torch.from_numpy(chw), "label": torch.from_numpy(mask.astype(np.int64)), "index": index}


def class_weights(setting: Any, items: list[Any], labels: Any) -> list[float] | None:
    """Per-class loss weights: ``None``, a list (one per class), or ``"auto"``: median-frequency
    balancing ``w_c = median(f) / f_c`` of the pixel frequencies ``f_c`` of the training masks
    (ignored pixels left out; classes absent from every mask get 1; capped at
    :data:`MAX_AUTO_WEIGHT` x the median weight).

    Raises:
        ConfigError: a list of the wrong length or with a negative weight.
    """
    k = labels.num_classes
    if setting is None:
        return None
    if setting != "auto":
        weights = [float(w) for w in setting]
        if len(weights) != k or min(weights) < 0:
            raise ConfigError(f"images.class_weights needs {k} non-negative weights (one per class), got {weights}")
        return weights
    from medseg.data.image_datasets import read_item

    counts = np.zeros(k, dtype=np.int64)
    for item in items:
        _, mask = read_item(item, labels)
        if mask is not None:
            valid = mask[mask != labels.ignore_index]
            counts += np.bincount(valid.ravel(), minlength=k)[:k]
    present = counts > 0
    if not present.any():
        raise InputError("images.class_weights: auto: the training masks hold no labelled pixel")
    freq = counts / counts.sum()
    weights = np.ones(k)
    weights[present] = np.median(freq[present]) / freq[present]
    weights = np.minimum(weights, MAX_AUTO_WEIGHT * float(np.median(weights[present])))
    log.info("class weights (auto, median frequency): %s", ", ".join(f"{w:.3g}" for w in weights))
    return [round(float(w), 6) for w in weights]


# --------------------------------------------------------------------------- the module
@functools.cache
def _image_loss_class() -> type:
    import torch
    import torch.nn.functional as F

    class ImageLoss(torch.nn.Module):
        """Cross-entropy (``ignore_index``, class weights) + ``lambda_dice`` x soft Dice over labelled pixels."""

        def __init__(self, *, ignore_index: int, weights: list[float] | None, lambda_ce: float,
                     lambda_dice: float, include_background: bool) -> None:
            super().__init__()
            self.ignore_index, self.lambda_ce, self.lambda_dice = ignore_index, lambda_ce, lambda_dice
            self.include_background = include_background
            self.register_buffer("weight", torch.tensor(weights, dtype=torch.float32) if weights else None)

        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            loss = logits.new_zeros(())
            valid = target != self.ignore_index
            if self.lambda_ce:
                if valid.any():
                    loss = loss + self.lambda_ce * F.cross_entropy(logits.float(), target, weight=self.weight,
                                                                   ignore_index=self.ignore_index)
                else:  # a crop of padding only: no gradient signal, but keep the graph
                    loss = loss + 0.0 * logits.sum()
            if self.lambda_dice:
                k = logits.shape[1]
                probs = logits.float().softmax(1) * valid[:, None]
                onehot = F.one_hot(torch.where(valid, target, 0), k).permute(0, 3, 1, 2).float() * valid[:, None]
                dims = (0, 2, 3)
                inter, denom = (probs * onehot).sum(dims), (probs + onehot).sum(dims)
                dice = 1 - (2 * inter + 1e-5) / (denom + 1e-5)
                loss = loss + self.lambda_dice * (dice if self.include_background else dice[1:]).mean()
            return loss

    ImageLoss.__module__, ImageLoss.__qualname__ = __name__, "ImageLoss"
    return ImageLoss


@functools.cache
def _module_class() -> type:
    import lightning as L
    import torch

    from medseg.evaluation.images import dataset_metrics, pair_confusion
    from medseg.models.apply2d import image_logits
    from medseg.models.registry import create_model
    from medseg.training.module import gather_per_item, make_optimizers

    class ImageSegmentationModule(L.LightningModule):
        """A registered 2D network trained on ordinary images; validation scored like ``evaluate-images``.

        Args:
            model_name, model_config: registry name and builder config.
            labels: ``{"0": name, ...}`` train indices -> names.
            ignore_index: mask value left out of loss and metrics.
            loss, optimizer, schedule: config dicts (:mod:`medseg.training.config`).
            class_weights: one cross-entropy weight per class, or ``None``.
            inference: ``image_mode``, ``window``, ``stride``, ``size`` (:mod:`medseg.models.apply2d`)
                and the network's input ``multiple``.
            total_steps, budget_s: schedule length and time budget.
        """

        def __init__(self, *, model_name: str, model_config: dict[str, Any], labels: dict[str, str],
                     ignore_index: int, loss: dict[str, Any], optimizer: dict[str, Any], schedule: dict[str, Any],
                     class_weights: list[float] | None, inference: dict[str, Any], total_steps: int,
                     budget_s: float | None = None) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = create_model(model_name, **model_config)
            name = loss.get("name", "dice_ce")
            self.loss_fn = _image_loss_class()(
                ignore_index=ignore_index, weights=class_weights,
                lambda_ce=0.0 if name == "dice" else float(loss.get("lambda_ce", 1.0)),
                lambda_dice=0.0 if name == "ce" else float(loss.get("lambda_dice", 1.0)),
                include_background=bool(loss.get("include_background", False)))
            self.num_classes = len(labels)
            self._cm: dict[int, np.ndarray] | None = None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
            if hasattr(self.net, "training_loss"):  # a network with its own loss (Mask2Former's matching loss)
                loss = self.net.training_loss(batch["image"], batch["label"], self.hparams.ignore_index)
            else:
                loss = self.loss_fn(self.net(batch["image"]), batch["label"])
            self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                     batch_size=batch["image"].shape[0], sync_dist=True)
            return loss

        def on_validation_epoch_start(self) -> None:
            self._cm = {}  # validation image index -> its confusion matrix

        def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
            inf = self.hparams.inference
            logits = image_logits(self.net, batch["image"], multiple=inf["multiple"], mode=inf["image_mode"],
                                  window=inf.get("window"), stride=inf.get("stride"), size=inf.get("size"))
            pred = logits.argmax(1)[0].cpu().numpy()
            ref = batch["label"][0].cpu().numpy()
            if self._cm is None:
                self.on_validation_epoch_start()
            cm, _ = pair_confusion(pred, ref, num_classes=self.num_classes, ignore_index=self.hparams.ignore_index,
                                   pred_name=f"validation image {int(batch['index'][0])}",
                                   ref_name=f"validation mask {int(batch['index'][0])}")
            self._cm[int(batch["index"][0])] = cm

        def on_validation_epoch_end(self) -> None:
            per_image = gather_per_item(self.trainer, self._cm or {})
            cm = sum(per_image.values(), np.zeros((self.num_classes, self.num_classes), dtype=np.int64))
            metrics = dataset_metrics(cm)
            for key in ("miou", "mdice", "macc", "aacc"):
                value = metrics[key]
                self.log(f"val_{key}", float(0.0 if math.isnan(value) else value), prog_bar=key == "miou",
                         sync_dist=False)
            for index, value in enumerate(metrics["iou"]):
                name = self.hparams.labels.get(str(index), f"class_{index}")
                if not math.isnan(value):
                    self.log(f"val_iou_{name}", float(value), sync_dist=False)

        def configure_optimizers(self) -> Any:
            return make_optimizers(self)

    ImageSegmentationModule.__module__ = __name__
    ImageSegmentationModule.__qualname__ = "ImageSegmentationModule"
    return ImageSegmentationModule


def __getattr__(name: str) -> Any:
    """The classes built on first use (torch and Lightning are imported then, not with this module), found
    here by name as pickle looks them up: ``ddp_spawn`` ranks unpickle the module and its loss."""
    if name == "ImageSegmentationModule":
        return _module_class()
    if name == "ImageLoss":
        return _image_loss_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- the run
def _image_inference(cfg: Config, multiple: list[int]) -> dict[str, Any]:
    from medseg.models.apply2d import check_mode

    im = cfg.images
    window = list(im.crop_size) if im.inference == "slide" else None
    stride = list(im.stride) if im.stride else ([max(1, c * 2 // 3) for c in im.crop_size] if window else None)
    size = list(im.resize_to or im.crop_size) if im.inference == "resize" else None
    check_mode(im.inference, window, size, multiple)
    return {"image_mode": im.inference, "window": window, "stride": stride, "size": size, "multiple": multiple}


def train_images(cfg: Config, run_dir: Path, *, resume: bool, t0: float) -> Path:
    """Train an ordinary-image model into ``run_dir`` (see the module docstring); returns it."""
    import yaml

    from medseg.models.registry import get_model_spec, list_models
    from medseg.training.engine import CHECKPOINT_DIR, build_trainer, log_version, make_image_loaders

    spec = get_model_spec(cfg.model.name)
    if spec.spatial_dims != 2 or spec.promptable:
        dense = [n for n in list_models() if (m := get_model_spec(n)).spatial_dims == 2 and not m.promptable
                 and m.trainer is None]
        raise ConfigError(f"model.name {cfg.model.name!r} is not a 2D dense model; ordinary-image training takes "
                          f"{', '.join(dense)}")
    ckpt_last = run_dir / CHECKPOINT_DIR / "last.ckpt"
    if resume and not ckpt_last.is_file():
        raise InputError(f"{ckpt_last}: nothing to resume (no last checkpoint in {run_dir})")
    dataset, split, train_items, val_items = training_images(cfg, run_dir)
    labels = dataset.labels
    model_config = dict(cfg.model.config)
    model_config.setdefault("in_channels", 3)
    model_config.setdefault("out_channels", labels.num_classes)
    if int(model_config["out_channels"]) != labels.num_classes:
        raise ConfigError(f"model.config.out_channels {model_config['out_channels']} differs from the "
                          f"{labels.num_classes} classes of the labels")
    crop = list(cfg.images.crop_size)
    spec.check_size(crop, model_config, what="images.crop_size")
    multiple = [int(m) for m in spec.size_multiple(model_config)]
    inference = _image_inference(cfg, multiple)
    from medseg.transforms.intensity import check_normalization

    check_normalization(cfg.images.normalization)
    weights = class_weights(cfg.images.class_weights, train_items, labels)
    names = {str(k): v for k, v in sorted(labels.names.items())}
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

    trainer = build_trainer(cfg, run_dir, log_version=log_version(run_dir) if resume else "", monitor=MONITOR)
    batch = int(cfg.train.batch_size or 8)
    steps = cfg.train.max_steps if cfg.train.max_steps > 0 else cfg.train.max_epochs * cfg.train.iterations_per_epoch
    module = _module_class()(
        model_name=cfg.model.name, model_config=model_config, labels=names, ignore_index=labels.ignore_index,
        loss=cfg.loss.model_dump(), optimizer=cfg.optimizer.model_dump(), schedule=cfg.schedule.model_dump(),
        class_weights=weights, inference=inference, total_steps=steps,
        budget_s=cfg.train.max_minutes * 60 if cfg.train.max_minutes else None)
    from medseg.transforms.augment2d import RandomScaleCropFlip

    augment = RandomScaleCropFlip(crop_size=crop, scale_range=cfg.images.scale_range, hflip=cfg.images.hflip,
                                  ignore_index=labels.ignore_index)
    in_channels = int(model_config["in_channels"])
    length = cfg.train.iterations_per_epoch * batch * max(1, trainer.world_size)
    train_set = ImageTrainSet(train_items, labels, cfg.images.normalization, in_channels, augment, length,
                              cfg.train.seed)
    val_set = ImageValSet(val_items, labels, cfg.images.normalization, in_channels)
    train_loader, val_loader = make_image_loaders(cfg, train_set, val_set, batch, trainer.world_size)
    log.info("training %s on %d images, validating on %d (%s layout, %d classes)", cfg.model.name,
             len(train_items), len(val_items), dataset.format, labels.num_classes)
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(ckpt_last) if resume else None, weights_only=True)
    if trainer.is_global_zero:
        finish_image_run(run_dir, trainer, module, cfg, model_config, names, inference, split, dataset, weights)
        log.info("run finished in %.1f s: %s", time.monotonic() - t0, run_dir)
    return run_dir


def finish_image_run(run_dir: Path, trainer: Any, module: Any, cfg: Config, model_config: dict[str, Any],
                     names: dict[str, str], inference: dict[str, Any], split: dict[str, list[str]], dataset: Any,
                     weights: list[float] | None) -> Path:
    """``metrics.csv``, ``curves.png`` and the export of the best (highest ``val_miou``) weights."""
    return export_image_run(
        run_dir, trainer, module, cfg, model_config, names, score=MONITOR,
        inference={k: v for k, v in inference.items() if k != "multiple" and v is not None},
        record={"train_images": split["train"], "val_images": split["val"], "class_weights": weights},
        dataset={"format": dataset.format, "ignore_index": dataset.labels.ignore_index,
                 "reduce_zero_label": dataset.labels.reduce_zero_label})


def export_image_run(run_dir: Path, trainer: Any, module: Any, cfg: Config, model_config: dict[str, Any],
                     names: dict[str, str], *, score: str, inference: dict[str, Any], record: dict[str, Any],
                     dataset: dict[str, Any]) -> Path:
    """The tail of an ordinary-image run (semantic or instance): ``metrics.csv``, ``curves.png`` and the export
    of the best weights (by the monitored ``score``, recorded as ``best_<score>``) with ``inference``,
    ``dataset`` and the ``record`` entries in ``model.json``."""
    from medseg.models.export import save_export
    from medseg.training.engine import best_weights, merge_metrics, training_record
    from medseg.training.curves import plot_curves

    if merge_metrics(run_dir / "logs", run_dir / "metrics.csv"):
        plot_curves(run_dir / "metrics.csv", run_dir / "curves.png")
    state = best_weights(run_dir)
    if state:
        module.net.load_state_dict(state)
    training = training_record(run_dir, trainer, state is not None)
    training.update({**record, f"best_{score}": training.pop("best_score")})
    if hasattr(module.net, "export_config"):  # built from a weights folder: record the architecture itself
        model_config = {**module.net.export_config(), **{k: v for k, v in model_config.items() if k == "weights"}}
    info = {
        "model": {"name": cfg.model.name, "config": model_config},
        "spatial_dims": 2,
        "labels": names,
        "preprocessing": {"normalization": dict(cfg.images.normalization)},
        "inference": inference,
        "postprocessing": {},
        "training": training,
        "dataset": dataset,
    }
    return save_export(run_dir / "export", module.net, info)


__all__ = ["train_images", "uses_image_dataset", "image_split", "choose_split", "split_items", "export_image_run", "training_images", "class_weights", "ImageTrainSet", "ImageValSet",
           "MONITOR"]
