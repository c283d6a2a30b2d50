"""Instance and panoptic training on ordinary images: ``medseg train`` on an instance dataset (``instance_masks``
or ``coco_instances``: task ``instance``; ``coco_panoptic``: task ``panoptic``, :mod:`medseg.data.instance_datasets`)
for a family whose network has an ``instance_loss`` (Mask2Former).

The run folder is the image run's (:mod:`medseg.training.images`: ``config.yaml``, ``splits.json``,
``checkpoints/``, ``metrics.csv``, ``curves.png``, ``logs/``, ``export/``) and the Lightning setup the
engine's. What differs is the target and the scorer:

- training samples: a random image, normalised (``images.normalization``) and its instances painted into
  one instance map (ids 1..N, the largest first so that a smaller object overlapping it stays visible;
  crowd regions and the background 0), then randomly scaled, cropped and flipped together
  (:mod:`medseg.transforms.augment2d`: the map nearest-neighbour, padding 0); each sample carries the class
  of every id. The loss gets one target mask and class per instance left in the crop. A panoptic dataset's
  targets are Mask2Former's panoptic ones: one per thing instance and one per stuff class present (its
  segments merged), crowd segments and VOID in none;
- validation: every validation image at full resolution through :func:`medseg.models.mask2former.segments`
  (the code of ``medseg predict-images`` on the export, at ``images.score_threshold``), scored by
  pycocotools' ``COCOeval(segm)`` on the reference of :func:`medseg.evaluation.instances.items_coco` (the
  code of ``medseg evaluate-images --task instance``; crowd objects are COCO's ignore regions): ``val_map``
  (mask AP 0.50:0.95), ``val_map50``, ``val_map75``, ``val_mar100`` and ``val_ap_<class>`` in ``metrics.csv``
  are what evaluating the exported model's predictions of the validation images gives. The best checkpoint
  is the one of the highest ``val_map``. A panoptic run's validation runs the same images through
  ``segments(task="panoptic")`` and scores them as ``medseg evaluate-images --task panoptic``
  (:class:`medseg.training.panoptic.PanopticScorer`: ``val_pq``, the monitor, ``val_sq``, ``val_rq``,
  ``val_pq_things``, ``val_pq_stuff``, ``val_pq_<class>``);
- the export: ``model.json`` with ``inference.task`` (``instance`` or ``panoptic``) and ``inference.threshold``;
  class ids are the dataset's own (COCO's category ids are never remapped; ``out_channels`` is the largest id + 1).
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
from medseg.training.images import ImageTrainSet

log = logging.getLogger(__name__)

#: the instance dataset formats ``medseg train`` reads (``dataset.format``, or detected)
INSTANCE_TRAIN_FORMATS: tuple[str, ...] = ("instance_masks", "coco_instances", "coco_panoptic")
#: the task a dataset format trains (``model.config.task``); the others train ``instance``
FORMAT_TASKS = {"coco_panoptic": "panoptic"}
MONITOR = "val_map"
#: COCO statistic -> ``metrics.csv`` column
LOGGED_STATS = {"AP": "val_map", "AP50": "val_map50", "AP75": "val_map75", "AR100": "val_mar100"}


def uses_instance_dataset(cfg: Config) -> bool:
    """True when ``cfg`` trains on an instance dataset: ``dataset.format`` is one of
    :data:`INSTANCE_TRAIN_FORMATS`, or no format is given and ``dataset.root`` reads as one of them but not as
    an ordinary semantic layout (an ``instance_masks`` folder, ``images/`` + ``masks/``, also reads as
    ``image_folder``: it needs ``dataset.format: instance_masks``). Only folders are detected: a COCO JSON file
    given as ``dataset.root`` needs ``dataset.format: coco_instances`` or ``coco_panoptic`` (a medical manifest is a
    JSON file too)."""
    from medseg.data.image_datasets import is_image_dataset
    from medseg.data.instance_datasets import detect_instance_format

    if cfg.dataset.format is not None:
        return cfg.dataset.format in INSTANCE_TRAIN_FORMATS
    root = cfg.dataset.root
    if root is None or not Path(root).is_dir() or is_image_dataset(root):
        return False
    try:
        return detect_instance_format(root) in INSTANCE_TRAIN_FORMATS
    except InputError:
        return False


# --------------------------------------------------------------------------- data
def instance_map(instances: list[Any], shape: tuple[int, int], stuff: frozenset[int] = frozenset(),
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(ids [H, W] int32, classes [N + 1] int64)`` of an image's :class:`~medseg.data.instance_datasets.Instance`
    list: the non-crowd targets numbered 1..N and painted largest first (a smaller overlapping object stays
    visible), ``classes[i]`` the class of id ``i`` (``classes[0] = 0``). A target is an instance, or for the
    classes in ``stuff`` the union of every segment of that class (one target per stuff class present).
    Crowd objects are in no target."""
    targets = [(int(i.class_id), i.mask) for i in instances if not i.crowd and i.class_id not in stuff]
    merged: dict[int, np.ndarray] = {}
    for inst in instances:
        if not inst.crowd and inst.class_id in stuff:
            merged[inst.class_id] = inst.mask | merged.get(inst.class_id, False)
    targets = sorted(targets + sorted(merged.items()), key=lambda t: -int(t[1].sum()))
    ids = np.zeros(shape, np.int32)
    for n, (_, mask) in enumerate(targets, 1):
        ids[mask] = n
    return ids, np.array([0] + [c for c, _ in targets], np.int64)


class InstanceTrainSet(ImageTrainSet):
    """``length`` augmented training samples drawn from ``items`` (order fixed by ``seed``; the draws of
    :class:`~medseg.training.images.ImageTrainSet`).

    Each sample is ``{"image": float32 [C, h, w], "instances": int64 [h, w], "classes": int64 [N + 1]}``; the
    classes in ``stuff`` (a panoptic dataset's) are one target per class (:func:`instance_map`).
    """

    def __init__(self, items: list[Any], normalization: dict[str, Any], in_channels: int, augment: Any,
                 length: int, seed: int, stuff: frozenset[int] = frozenset()) -> None:
        super().__init__(items, None, normalization, in_channels, augment, length, seed)
        self.stuff = frozenset(stuff)

    def sample(self, item: Any, rng: np.random.Generator) -> dict[str, Any]:
        import torch

        from medseg.io.images import read_image
        from medseg.models.apply2d import image_tensor

        chw = image_tensor(read_image(item.image), self.normalization, self.in_channels, item.image)
        ids, classes = instance_map(item.read(), tuple(chw.shape[1:]), self.stuff)
        img, lab = self.augment(chw, ids, rng)
        return {"image": torch.from_numpy(img), "instances": torch.from_numpy(lab.astype(np.int64)),
                "classes": torch.from_numpy(classes)}


def collate_instances(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of :class:`InstanceTrainSet` samples: images and instance maps stacked, class tables a list."""
    import torch

    return {"image": torch.stack([s["image"] for s in samples]),
            "instances": torch.stack([s["instances"] for s in samples]),
            "classes": [s["classes"] for s in samples]}


class InstanceValSet:
    """Whole validation images at full resolution: ``{"image": [C, H, W], "index": i}``."""

    def __init__(self, items: list[Any], normalization: dict[str, Any], in_channels: int) -> None:
        self.items, self.normalization, self.in_channels = items, normalization, in_channels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        from medseg.io.images import read_image
        from medseg.models.apply2d import image_tensor

        item = self.items[index]
        chw = image_tensor(read_image(item.image), self.normalization, self.in_channels, item.image)
        return {"image": torch.from_numpy(chw), "index": index}


# --------------------------------------------------------------------------- validation scores
class CocoScorer:
    """Validation mask AP of an instance run, as ``evaluate-images --task instance``: ``score(index, ids, table)``
    gives validation image ``index``'s COCO results (:func:`medseg.evaluation.instances.segment_results`),
    ``metrics(results)`` the logged values of ``{index: results}`` (pycocotools' ``COCOeval(segm)`` on
    ``reference``, :func:`~medseg.evaluation.instances.items_coco`; ``image_ids`` in the validation order).
    :class:`medseg.training.panoptic.PanopticScorer` is the panoptic run's twin of this interface."""

    task = "instance"
    monitor = MONITOR
    headline = tuple(LOGGED_STATS.values())

    def __init__(self, reference: dict[str, Any], image_ids: list[int], labels: dict[str, str]) -> None:
        self.reference, self.image_ids, self.labels = reference, list(image_ids), dict(labels)

    def score(self, index: int, ids: np.ndarray, table: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from medseg.evaluation.instances import segment_results

        image_id = self.image_ids[index]
        info = {e["id"]: (e["class"], e["score"]) for e in table}
        return segment_results(image_id, ids, info, where=f"validation image {image_id}")

    def metrics(self, results: dict[int, list[dict[str, Any]]]) -> dict[str, float]:
        from medseg.evaluation.instances import per_class_ap
        from medseg.metrics.instance import coco_stats, run_cocoeval

        flat = [{k: v for k, v in r.items() if k != "pred_id"} for i in sorted(results) for r in results[i]]
        ev = run_cocoeval(self.reference, flat)
        stats = coco_stats(ev)
        out = {key: stats[stat] for stat, key in LOGGED_STATS.items()}
        for cls, aps in per_class_ap(ev).items():
            out[f"val_ap_{self.labels.get(str(cls), f'class_{cls}')}"] = aps["ap"]
        return out


# --------------------------------------------------------------------------- the module
@functools.cache
def _module_class() -> type:
    import lightning as L
    import torch

    from medseg.models.mask2former import segment_processor, segments
    from medseg.models.registry import create_model
    from medseg.training.module import gather_per_item, make_optimizers

    class InstanceSegmentationModule(L.LightningModule):
        """A registered 2D network with an ``instance_loss``, validated like ``evaluate-images`` by ``scorer``.

        Args:
            model_name, model_config: registry name and builder config.
            labels: ``{"0": "background", "<class id>": name}``.
            optimizer, schedule: config dicts (:mod:`medseg.training.config`).
            threshold: the score a predicted segment needs (``images.score_threshold``).
            total_steps, budget_s: schedule length and time budget.
            scorer: the validation score (:class:`CocoScorer`, :class:`medseg.training.panoptic.PanopticScorer`):
                its ``task`` picks the post-processing of :func:`segments`; the values of its ``headline``
                keys are logged as 0 when undefined (NaN), its other undefined values are not logged.
            stuff: the stuff classes of a panoptic dataset (each predicted as one segment per image).
        """

        def __init__(self, *, model_name: str, model_config: dict[str, Any], labels: dict[str, str],
                     optimizer: dict[str, Any], schedule: dict[str, Any], threshold: float, total_steps: int,
                     budget_s: float | None = None, scorer: Any = None, stuff: list[int] | None = None) -> None:
            super().__init__()
            self.save_hyperparameters(ignore=["scorer"])
            self.net = create_model(model_name, **model_config)
            self.scorer = scorer
            self.classes = sorted(int(k) for k in labels if int(k) != 0)
            self._results: dict[int, Any] = {}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
            loss = self.net.instance_loss(batch["image"], batch["instances"], batch["classes"])
            self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                     batch_size=batch["image"].shape[0], sync_dist=True)
            return loss

        def on_validation_epoch_start(self) -> None:
            self._results = {}
            self._processor = segment_processor(self.net.num_classes)

        def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
            if not hasattr(self, "_processor"):
                self.on_validation_epoch_start()
            for chw, index in zip(batch["image"], batch["index"]):
                ids, table = segments(self.net, self._processor, chw.cpu().numpy(), task=self.scorer.task,
                                      threshold=self.hparams.threshold, device=self.device, classes=self.classes,
                                      stuff=self.hparams.stuff)
                self._results[int(index)] = self.scorer.score(int(index), ids, table)

        def on_validation_epoch_end(self) -> None:
            results = gather_per_item(self.trainer, self._results)
            for key, value in self.scorer.metrics(results).items():
                if key in self.scorer.headline or not math.isnan(value):
                    self.log(key, float(0.0 if math.isnan(value) else value), prog_bar=key == self.scorer.monitor,
                             sync_dist=False)

        def configure_optimizers(self) -> Any:
            return make_optimizers(self)

    InstanceSegmentationModule.__module__ = __name__
    InstanceSegmentationModule.__qualname__ = "InstanceSegmentationModule"
    return InstanceSegmentationModule


def __getattr__(name: str) -> Any:
    """``InstanceSegmentationModule``, built on first use (Lightning is imported then, not with this module),
    found here by name as pickle looks it up: ``ddp_spawn`` ranks unpickle the module."""
    if name == "InstanceSegmentationModule":
        return _module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- the run
def instance_images(cfg: Config, run_dir: Path) -> tuple[Any, dict[str, list[str]], list[Any], list[Any]]:
    """``(dataset, split, train items, val items)`` of an instance run: the dataset (every image's instances
    decoded and checked when ``dataset.validate_data``), the split of :func:`~medseg.training.images.choose_split`
    (the dataset's own ``val`` images when it has them), the validation items cut to ``train.val_max_cases``.

    Raises:
        InputError: a bad dataset (one message naming every bad file), or no training or validation image.
    """
    from medseg.data.instance_datasets import load_instance_dataset, validate_instance_dataset
    from medseg.training.images import choose_split, split_items

    if cfg.dataset.root is None:
        raise ConfigError("dataset.root: required (the instance dataset folder or COCO JSON); set it with "
                          "--set dataset.root=DIR")
    dataset = load_instance_dataset(cfg.dataset.root, format=cfg.dataset.format)
    if dataset.format not in INSTANCE_TRAIN_FORMATS:
        raise InputError(f"{dataset.root}: a {dataset.format} dataset; instance training reads "
                         f"{', '.join(INSTANCE_TRAIN_FORMATS)}")
    if cfg.dataset.validate_data:
        validate_instance_dataset(dataset)
    val = dataset.split("val")
    own = {"train": sorted(i.stem for i in dataset.items if i.split == "train"),
           "val": sorted(i.stem for i in val)} if val else None
    split = choose_split(cfg, run_dir, [i.stem for i in dataset.items], own)
    return dataset, split, *split_items(cfg, dataset, split)


def instance_model_config(cfg: Config, spec: Any, class_names: dict[int, str], task: str = "instance",
                          fmt: str = "instance") -> dict[str, Any]:
    """``model.config`` of an instance or panoptic run: ``in_channels`` 3 and ``out_channels`` (largest class
    id + 1) by default, ``task`` (the one the dataset format ``fmt`` trains) where the builder takes a task.

    Raises:
        ConfigError: too few ``out_channels`` for the class ids, or another ``task``.
    """
    config = dict(cfg.model.config)
    config.setdefault("in_channels", 3)
    needed = max(class_names, default=1) + 1
    config.setdefault("out_channels", needed)
    if int(config["out_channels"]) < needed:
        raise ConfigError(f"model.config.out_channels {config['out_channels']}: the dataset's class ids go up to "
                          f"{needed - 1} (ids are never remapped), so it needs at least {needed}")
    if "task" in spec.defaults:
        config.setdefault("task", task)
        if config["task"] != task:
            raise ConfigError(f"model.config.task {config['task']!r}: a {fmt} dataset trains task {task!r}; set "
                              f"model.config.task: {task} or leave it out")
    return config


def validation_scorer(dataset: Any, val_items: list[Any], names: dict[str, str]) -> Any:
    """The validation score of a run on ``dataset``: :class:`medseg.training.panoptic.PanopticScorer` for a
    panoptic format, else :class:`CocoScorer` on the COCO reference of ``val_items``."""
    from medseg.evaluation.instances import items_coco

    if FORMAT_TASKS.get(dataset.format) == "panoptic":
        from medseg.training.panoptic import PanopticScorer

        return PanopticScorer(dataset.root, [it.stem for it in val_items], names)
    reference, stems = items_coco(val_items, dataset.class_names)
    return CocoScorer(reference, [stems[it.stem] for it in val_items], names)


def train_instances(cfg: Config, run_dir: Path, *, resume: bool, t0: float) -> Path:
    """Train an instance or panoptic model into ``run_dir`` (see the module docstring); returns it."""
    import yaml

    from medseg.models.registry import get_model_spec
    from medseg.training.engine import CHECKPOINT_DIR, build_trainer, log_version, make_image_loaders
    from medseg.training.images import export_image_run
    from medseg.transforms.augment2d import RandomScaleCropFlip
    from medseg.transforms.intensity import check_normalization

    spec = get_model_spec(cfg.model.name)
    if spec.spatial_dims != 2 or spec.promptable:
        raise ConfigError(f"model.name {cfg.model.name!r} is not a 2D model; instance training takes a 2D family "
                          "with an instance loss (mask2former)")
    ckpt_last = run_dir / CHECKPOINT_DIR / "last.ckpt"
    if resume and not ckpt_last.is_file():
        raise InputError(f"{ckpt_last}: nothing to resume (no last checkpoint in {run_dir})")
    dataset, split, train_items, val_items = instance_images(cfg, run_dir)
    task = FORMAT_TASKS.get(dataset.format, "instance")
    model_config = instance_model_config(cfg, spec, dataset.class_names, task, dataset.format)
    crop = list(cfg.images.crop_size)
    spec.check_size(crop, model_config, what="images.crop_size")
    check_normalization(cfg.images.normalization)
    names = {"0": "background", **{str(k): v for k, v in sorted(dataset.class_names.items())}}
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    scorer = validation_scorer(dataset, val_items, names)
    stuff = frozenset(dataset.class_names) - dataset.things if task == "panoptic" else frozenset()

    trainer = build_trainer(cfg, run_dir, log_version=log_version(run_dir) if resume else "", monitor=scorer.monitor)
    batch = int(cfg.train.batch_size or 8)
    steps = cfg.train.max_steps if cfg.train.max_steps > 0 else cfg.train.max_epochs * cfg.train.iterations_per_epoch
    module = _module_class()(
        model_name=cfg.model.name, model_config=model_config, labels=names, optimizer=cfg.optimizer.model_dump(),
        schedule=cfg.schedule.model_dump(), threshold=cfg.images.score_threshold, total_steps=steps,
        budget_s=cfg.train.max_minutes * 60 if cfg.train.max_minutes else None, scorer=scorer,
        stuff=sorted(stuff))
    if not hasattr(module.net, "instance_loss"):
        raise ConfigError(f"model.name {cfg.model.name!r}: its network has no instance loss (instance_loss); "
                          "instance datasets train mask2former (task instance)")
    augment = RandomScaleCropFlip(crop_size=crop, scale_range=cfg.images.scale_range, hflip=cfg.images.hflip,
                                  ignore_index=0)
    in_channels = int(model_config["in_channels"])
    length = cfg.train.iterations_per_epoch * batch * max(1, trainer.world_size)
    train_set = InstanceTrainSet(train_items, cfg.images.normalization, in_channels, augment, length, cfg.train.seed,
                                 stuff)
    val_set = InstanceValSet(val_items, cfg.images.normalization, in_channels)
    train_loader, val_loader = make_image_loaders(cfg, train_set, val_set, batch, trainer.world_size,
                                                  collate_fn=collate_instances)
    log.info("training %s on %d images, validating on %d (%s, %d classes, %s task)", cfg.model.name,
             len(train_items), len(val_items), dataset.format, len(dataset.class_names), task)
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(ckpt_last) if resume else None, weights_only=True)
    if trainer.is_global_zero:
        things = {"things": sorted(dataset.things)} if task == "panoptic" else {}
        export_image_run(run_dir, trainer, module, cfg, model_config, names, score=scorer.monitor,
                         inference={"task": task, "threshold": cfg.images.score_threshold},
                         record={"train_images": split["train"], "val_images": split["val"]},
                         dataset={"format": dataset.format, **things})
        log.info("run finished in %.1f s: %s", time.monotonic() - t0, run_dir)
    return run_dir


__all__ = ["INSTANCE_TRAIN_FORMATS", "FORMAT_TASKS", "MONITOR", "uses_instance_dataset", "instance_map",
           "InstanceTrainSet", "InstanceValSet", "collate_instances", "CocoScorer", "instance_images",
           "instance_model_config", "validation_scorer", "train_instances"]
