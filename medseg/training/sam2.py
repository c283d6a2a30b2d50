"""Fine-tuning SAM2 on medical slices: prompt simulation, Dice + BCE + IoU loss, Lightning module.

Two ways in, one code path (the module below, also used with Meta's weights):

- ``medseg train`` with ``model: {name: sam2, config: {...}}``: the engine's 2D patches
  ``image [B, C, X, Y]`` / ``label [B, 1, X, Y]`` (any label values) feed
  :class:`Sam2FinetuneModule`; each sample gets a random foreground label and a prompt
  simulated from its mask; validation prompts each label of each volume with its box
  on its largest slice and logs ``val_dice``.
- :func:`finetune` (Python / notebooks): a fixed set of key slices from (image, label)
  Volumes, with the image encoder frozen and its embeddings cached (the practical
  setting on CPU), then :func:`medseg.models.sam2.save_checkpoint`.

Training-only keys of ``model.config`` (``init_checkpoint``, ``freeze_image_encoder``,
``cache_embeddings``, ``prompt``, ``loss_weights``) are read here; the model builder
ignores them, so an export rebuilds the same architecture.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError
from medseg.sam.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, scale_volume
from medseg.sam.prompts import box_of, prompts_from_mask, sample_points
from medseg.volume import Volume

log = logging.getLogger(__name__)

try:  # Lightning is a core dependency; the base class must exist when the module is imported
    import lightning as L
    import torch
except ImportError as exc:  # pragma: no cover - core dependencies
    raise ImportError(f"medseg.training.sam2 needs torch and lightning: {exc}") from exc

#: Fine-tuning keys that older configs put in ``model.config``; they now belong to the training
#: config's ``finetune`` section and are moved there (with a warning) when found.
TRAINING_KEYS = ("init_checkpoint", "freeze_image_encoder", "cache_embeddings", "prompt", "loss_weights", "max_cache")


@dataclass
class PromptSimulation:
    """How training prompts are simulated from a reference mask.

    Attributes:
        p_box, p_points, p_box_points: probabilities of a box / points / box+points prompt.
        box_jitter: each box side moves by up to this fraction of the box size (uniform).
        n_positive: inclusive range of positive points.
        n_negative: inclusive range of negative points (in a ring around the object).
    """

    p_box: float = 0.5
    p_points: float = 0.25
    p_box_points: float = 0.25
    box_jitter: float = 0.1
    n_positive: tuple[int, int] = (1, 3)
    n_negative: tuple[int, int] = (0, 2)

    def __post_init__(self) -> None:
        probs = np.array([self.p_box, self.p_points, self.p_box_points], dtype=np.float64)
        if np.any(probs < 0) or probs.sum() <= 0:
            raise ConfigError(f"prompt probabilities must be >= 0 with a positive sum, got {probs.tolist()}")
        if not 0 <= self.box_jitter < 1:
            raise ConfigError(f"prompt.box_jitter must be in [0, 1), got {self.box_jitter}")
        self.n_positive = (int(self.n_positive[0]), int(self.n_positive[1]))
        self.n_negative = (int(self.n_negative[0]), int(self.n_negative[1]))
        if not 1 <= self.n_positive[0] <= self.n_positive[1] or not 0 <= self.n_negative[0] <= self.n_negative[1]:
            raise ConfigError(f"prompt.n_positive / n_negative ranges invalid: {self.n_positive}, {self.n_negative}")

    def simulate(self, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
        """Prompt points for a 2D mask: ``(coords (N, 2) as (row, col), labels (N,), kind)``.

        Box corners carry labels 2 and 3 and come first, as SAM2 expects.
        """
        probs = np.array([self.p_box, self.p_points, self.p_box_points])
        kind = ("box", "points", "box+points")[int(rng.choice(3, p=probs / probs.sum()))]
        coords: list[np.ndarray] = []
        labels: list[int] = []
        if "box" in kind:
            box = box_of(mask)
            size = np.maximum(box[2:] - box[:2] + 1, 1)
            jitter = rng.uniform(-self.box_jitter, self.box_jitter, 4) * np.concatenate([size, size])
            box = np.clip(box + jitter, 0, np.array(mask.shape * 2) - 1)
            coords += [box[:2], box[2:]]
            labels += [2, 3]
        if "points" in kind:
            pts, lab = sample_points(
                mask, rng, n_positive=int(rng.integers(self.n_positive[0], self.n_positive[1] + 1)),
                n_negative=int(rng.integers(self.n_negative[0], self.n_negative[1] + 1)),
            )
            coords += list(pts)
            labels += lab.tolist()
        return np.array(coords, dtype=np.float64).reshape(-1, 2), np.array(labels, dtype=np.int64), kind


@dataclass
class FinetuneConfig:
    """Settings of :func:`finetune` (and the training keys of ``model.config``).

    Attributes:
        freeze_image_encoder: train only the prompt encoder and mask decoder.
        cache_embeddings: keep image embeddings of frozen-encoder inputs (by content hash).
        max_cache: most embeddings kept.
        prompt: prompt simulation settings.
        loss_weights: ``dice``, ``bce`` and ``iou`` (MSE of SAM2's IoU prediction) weights.
        lr, weight_decay: AdamW settings; ``steps``: optimiser steps; ``batch_size``: slices per step.
        seed: prompts, shuffling and initialisation of the run.
    """

    freeze_image_encoder: bool = True
    cache_embeddings: bool = True
    max_cache: int = 4096
    prompt: PromptSimulation = field(default_factory=PromptSimulation)
    loss_weights: dict[str, float] = field(default_factory=lambda: {"dice": 1.0, "bce": 1.0, "iou": 1.0})
    lr: float = 1e-4
    weight_decay: float = 1e-4
    steps: int = 100
    batch_size: int = 4
    seed: int = 0


def sam_loss(
    low_res_logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor, weights: dict[str, float]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Dice + BCE on the mask logits and MSE between predicted and actual IoU.

    Args:
        low_res_logits: ``[B, 1, h, w]`` (SAM2's ``image_size / 4`` output).
        iou_pred: ``[B, 1]`` predicted IoU.
        target: ``[B, 1, H, W]`` binary float reference (resized to ``h, w`` here, area-weighted).
        weights: ``{"dice", "bce", "iou"}``.

    Returns:
        ``(total, parts)`` with ``parts = {"dice", "bce", "iou"}`` (per-batch means).
    """
    import torch.nn.functional as F

    if target.shape[-2:] != low_res_logits.shape[-2:]:
        target = F.interpolate(target, size=low_res_logits.shape[-2:], mode="area")
    target = (target > 0.5).float()
    prob = torch.sigmoid(low_res_logits)
    inter = (prob * target).flatten(1).sum(1)
    dice = 1 - (2 * inter + 1) / (prob.flatten(1).sum(1) + target.flatten(1).sum(1) + 1)
    bce = F.binary_cross_entropy_with_logits(low_res_logits, target, reduction="none").flatten(1).mean(1)
    with torch.no_grad():
        hard = (low_res_logits > 0).float()
        i = (hard * target).flatten(1).sum(1)
        u = ((hard + target) > 0).float().flatten(1).sum(1)
        actual = torch.where(u > 0, i / u.clamp(min=1), torch.ones_like(u))
    iou_loss = (iou_pred[:, 0] - actual) ** 2
    parts = {"dice": dice.mean(), "bce": bce.mean(), "iou": iou_loss.mean()}
    total = sum(float(weights.get(k, 0.0)) * v for k, v in parts.items())
    return total, parts


def _to_sam_batch(images_0_255: torch.Tensor, image_size: int) -> torch.Tensor:
    """``[B, 1 or 3, H, W]`` in [0, 255] -> normalised ``[B, 3, S, S]``."""
    import torch.nn.functional as F

    x = images_0_255.float() / 255.0
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _percentile_scale(x: torch.Tensor) -> torch.Tensor:
    """Each image of ``[B, C, H, W]`` to SAM2's [0, 255] range with the ``percentile_window`` normalisation."""
    from medseg.transforms.intensity import normalize_intensity

    spec = {"kind": "percentile_window", "percentiles": [0.5, 99.5]}
    scaled = [torch.from_numpy(normalize_intensity(img.detach().float().cpu().numpy(), spec)) for img in x]
    return torch.stack(scaled).to(x.device)


class Sam2FinetuneModule(L.LightningModule):
    """LightningModule fine-tuning SAM2 with simulated prompts.

    Accepts the keyword arguments ``medseg.training`` passes to a family's module
    (``model_name``, ``model_config``, ``labels``, ``optimizer``, ``schedule``,
    ``total_steps``, ...); training-only settings come from ``model_config``
    (:data:`TRAINING_KEYS`) or ``finetune``.

    Batches: ``image [B, C, H, W]`` and ``label [B, 1, H, W]``; with ``scaled=True`` in the
    batch (as :class:`SliceDataset` gives) images are already in SAM2's [0, 255] range,
    otherwise each image is percentile-scaled.
    """

    def __init__(
        self,
        *,
        model_name: str = "sam2",
        model_config: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        total_steps: int = 100,
        finetune: dict[str, Any] | None = None,
        **_engine: Any,
    ) -> None:
        super().__init__()
        import medseg.models.sam2  # noqa: F401  (registers "sam2" whatever the registry's built-in list)
        from medseg.models.registry import create_model

        model_config = dict(model_config or {})
        train_keys = {k: model_config.pop(k) for k in TRAINING_KEYS if k in model_config}
        if train_keys:
            log.warning("model.config.%s: fine-tuning settings belong to the config's finetune section; moved there",
                        ", ".join(sorted(train_keys)))
        settings = {**train_keys, **{k: v for k, v in dict(finetune or {}).items() if v is not None}}
        self.save_hyperparameters({"model_name": model_name, "model_config": model_config, "labels": labels,
                                   "optimizer": optimizer, "schedule": schedule, "total_steps": total_steps,
                                   "finetune": settings})
        prompt = settings.pop("prompt", None) or {}
        if isinstance(prompt, dict):
            prompt = PromptSimulation(**prompt)
        self.cfg = FinetuneConfig(prompt=prompt, **{k: v for k, v in settings.items() if k != "init_checkpoint"})
        self.net = create_model(model_name, **model_config)
        if settings.get("init_checkpoint"):
            from medseg.models.sam2 import load_weights, read_checkpoint

            state, _ = read_checkpoint(settings["init_checkpoint"])
            load_weights(self.net, state, source=str(settings["init_checkpoint"]))
        self.net.train()  # the builder returns eval mode; SAM2's training-time decoder behaviour is wanted
        if self.cfg.freeze_image_encoder:
            for p in self.net.image_encoder.parameters():
                p.requires_grad_(False)
            self.net.no_mem_embed.requires_grad_(False)
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._rng = np.random.default_rng(self.cfg.seed)
        self._val: list[float] = []
        self.cache_hits = 0

    # -- features ---------------------------------------------------------------------------
    def _encode(self, images: torch.Tensor) -> dict[str, Any]:
        """Encoder features of ``[B, 3, S, S]``, from the cache when the encoder is frozen."""
        from medseg.sam.segment import encode_images

        if not (self.cfg.freeze_image_encoder and self.cfg.cache_embeddings):
            if self.cfg.freeze_image_encoder:
                with torch.no_grad():
                    return encode_images(self.net, images)
            return encode_images(self.net, images)
        keys = [hashlib.blake2b(img.detach().cpu().numpy().tobytes(), digest_size=16).hexdigest() for img in images]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing:
            with torch.no_grad():
                feats = encode_images(self.net, images[missing])
            for n, i in enumerate(missing):
                self._cache[keys[i]] = {"image_embed": feats["image_embed"][n],
                                        "high_res_feats": [f[n] for f in feats["high_res_feats"]]}
                while len(self._cache) > self.cfg.max_cache:
                    self._cache.popitem(last=False)
        self.cache_hits += len(keys) - len(missing)
        items = [self._cache[k] for k in keys]
        return {"image_embed": torch.stack([it["image_embed"] for it in items]),
                "high_res_feats": [torch.stack([it["high_res_feats"][j] for it in items]) for j in range(2)]}

    # -- training -------------------------------------------------------------------------------
    def _prompts(self, label: np.ndarray) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
        """Pick a foreground label per sample and simulate its prompt; padded to equal length (label -1).

        Returns ``(kept sample indices, masks, coords, labels)``; samples without foreground
        (background patches of the engine's sampler) are left out.
        """
        kept, targets, coords, labels = [], [], [], []
        for n, lab in enumerate(label):
            values = [v for v in np.unique(lab) if v > 0]
            if not values:
                continue
            kept.append(n)
            mask = lab == values[int(self._rng.integers(len(values)))]
            c, pl, _ = self.cfg.prompt.simulate(mask, self._rng)
            targets.append(mask)
            coords.append(c)
            labels.append(pl)
        if not kept:
            return [], np.zeros((0,) + label.shape[1:], bool), np.zeros((0, 0, 2)), np.zeros((0, 0), np.int64)
        n = max(len(c) for c in coords)
        pc = np.zeros((len(coords), n, 2))
        pl = np.full((len(coords), n), -1, dtype=np.int64)
        for i, (c, lab) in enumerate(zip(coords, labels)):
            pc[i, : len(c)], pl[i, : len(c)] = c, lab
        return kept, np.stack(targets), pc, pl

    def _step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        from medseg.sam.segment import decode_masks

        image, label = batch["image"], batch["label"]
        if image.ndim != 4 or label.ndim != 4:
            raise InputError(f"SAM2 fine-tuning takes 2D batches [B, C, H, W], got image {tuple(image.shape)}")
        scaled = bool(batch.get("scaled", torch.zeros(1)).all()) if "scaled" in batch else False
        lab = label[:, 0].detach().cpu().numpy()
        kept, masks, coords, plabels = self._prompts(lab)
        if not kept:
            return None
        x = image[kept, :1]
        x = x if scaled else _percentile_scale(x)
        size = self.net.image_size
        h, w = lab.shape[-2:]
        xy = torch.as_tensor(coords[..., ::-1] * np.array([size / w, size / h]), dtype=torch.float32, device=self.device)
        feats = self._encode(_to_sam_batch(x, size))
        low_res, iou = decode_masks(self.net, feats, coords=xy,
                                    labels=torch.as_tensor(plabels, dtype=torch.int32, device=self.device))
        target = torch.as_tensor(masks[:, None], dtype=torch.float32, device=self.device)
        return sam_loss(low_res, iou, target, self.cfg.loss_weights)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        out = self._step(batch)
        if out is None:  # no foreground in any sample of this batch
            return None
        loss, parts = out
        bs = batch["image"].shape[0]
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        for k, v in parts.items():
            self.log(f"train_{k}", v, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    # -- validation: box prompt on each label's largest slice --------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        from medseg.metrics import dice
        from medseg.sam.prompts import SlicePrompt
        from medseg.sam.segment import EncodedSlice, encode_images

        image = batch["image"][0, 0]  # [X, Y, Z]
        label = batch["label"][0, 0].cpu().numpy()
        vol = Volume(image.cpu().numpy().astype(np.float32))
        scaled = scale_volume(vol, Preprocess(mode="mr"))
        for p in prompts_from_mask(label, axis=2, kind="box"):
            plane = torch.as_tensor(scaled[:, :, p.slice_index], device=self.device)[None, None]
            with torch.no_grad():
                feats = encode_images(self.net, _to_sam_batch(plane, self.net.image_size))
                enc = EncodedSlice(self.net, vol, p.slice_index, 2, feats, 0)
                pred = enc.predict_prompt(SlicePrompt(p.slice_index, 2, p.object_id, box=p.box)).mask
            self._val.append(dice(pred, label[:, :, p.slice_index] == p.object_id, empty_score=1.0))

    def on_validation_epoch_end(self) -> None:
        self.log("val_dice", float(np.mean(self._val)) if self._val else 0.0, prog_bar=True)

    def configure_optimizers(self) -> Any:
        opt = dict(self.hparams.optimizer or {})
        params = [p for p in self.net.parameters() if p.requires_grad]
        lr = float(opt.get("lr", self.cfg.lr))
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=float(opt.get("weight_decay", self.cfg.weight_decay)))
        sched = self.hparams.schedule
        if not sched or sched.get("name", "constant") == "constant" and not sched.get("warmup_steps"):
            return optimizer
        from medseg.training.module import PolyTimeLR  # the engine's schedule (poly / cosine, warm-up)

        factor = PolyTimeLR(int(self.hparams.total_steps), sched.get("exponent", 0.9), None,
                            sched.get("warmup_steps", 0), sched.get("name", "poly"))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


# ----------------------------------------------------------------------------- fixed-slice training
class SliceDataset(torch.utils.data.Dataset):
    """Key slices of (image, label) volumes, scaled once to SAM2's [0, 255] range.

    Args:
        pairs: ``(image, label)`` Volumes on the same grid.
        axis: slice axis.
        key_slices: per label, as in :func:`medseg.sam.prompts.prompts_from_mask`.
        preprocess: the intensity mapping (also used at inference: stored in the checkpoint).
    """

    def __init__(self, pairs: Sequence[tuple[Volume, Volume]], *, axis: int = 2, key_slices: str | int = "largest",
                 preprocess: Preprocess | None = None) -> None:
        self.items: list[tuple[np.ndarray, np.ndarray]] = []
        pre = preprocess or Preprocess()
        for image, label in pairs:
            if not image.same_grid(label):
                raise InputError("image and label volumes are not on the same grid")
            scaled = scale_volume(image, pre)
            seen = set()
            for p in prompts_from_mask(label, axis=axis, kind="box", key_slices=key_slices):
                if p.slice_index in seen:
                    continue
                seen.add(p.slice_index)
                self.items.append((np.take(scaled, p.slice_index, axis).astype(np.float32),
                                   np.take(label.array, p.slice_index, axis).astype(np.int64)))
        if not self.items:
            raise InputError("no labelled slice in the fine-tuning volumes")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        img, lab = self.items[index]
        return {"image": torch.from_numpy(img)[None], "label": torch.from_numpy(lab)[None], "scaled": True}


def finetune(
    net_config: dict[str, Any],
    pairs: Sequence[tuple[Volume, Volume]],
    *,
    config: FinetuneConfig | None = None,
    preprocess: Preprocess | None = None,
    axis: int = 2,
    key_slices: str | int = "all",
    init_checkpoint: str | None = None,
    accelerator: str = "auto",
) -> Sam2FinetuneModule:
    """Fine-tune SAM2 on key slices of ``pairs``; returns the trained module (``.net`` is the model).

    Args:
        net_config: builder config of the ``sam2`` model (``config``, ``image_size``, ``overrides``).
        pairs: ``(image, label)`` training volumes.
        config: training settings (steps, batch size, freezing, caching, prompts, loss).
        preprocess: intensity mapping; saved with the weights by :func:`medseg.models.sam2.save_checkpoint`.
        axis, key_slices: which slices are trained on.
        init_checkpoint: start from these weights (Meta's or a previous fine-tune).
        accelerator: Lightning accelerator (``"auto"``: CUDA when available).
    """
    from medseg.training.engine import make_trainer

    cfg = config or FinetuneConfig()
    L.seed_everything(cfg.seed, verbose=False)  # the dataset's slice sampling and the module's init
    ds = SliceDataset(pairs, axis=axis, key_slices=key_slices, preprocess=preprocess)
    settings = {k: v for k, v in asdict(cfg).items() if k in ("freeze_image_encoder", "cache_embeddings", "max_cache",
                                                             "loss_weights", "prompt", "lr", "weight_decay", "seed")}
    if init_checkpoint:
        settings["init_checkpoint"] = str(init_checkpoint)
    module = Sam2FinetuneModule(model_config=dict(net_config), finetune=settings, total_steps=cfg.steps,
                                optimizer={"lr": cfg.lr, "weight_decay": cfg.weight_decay})
    module.net.medseg_sam2["preprocess"] = (preprocess or Preprocess()).to_dict()
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=min(cfg.batch_size, len(ds)), shuffle=True, generator=gen,
                                         drop_last=True, num_workers=0)
    trainer = make_trainer(seed=cfg.seed, max_steps=cfg.steps, accelerator=accelerator, devices=1, logger=False,
                           enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0,
                           deterministic=False)
    trainer.fit(module, loader)
    module.net.eval()
    log.info("fine-tuned SAM2 for %d steps on %d slices (%d cached embedding hits)", cfg.steps, len(ds), module.cache_hits)
    return module


# ----------------------------------------------------------------------------- evaluation
def evaluate_prompted(
    net: Any,
    pairs: Sequence[tuple[Volume, Volume]],
    *,
    kinds: Sequence[str] = ("box", "points", "box+points"),
    axis: int = 2,
    key_slices: str | int = "largest",
    preprocess: Preprocess | None = None,
    nsd_tolerance_mm: float = 2.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Prompted 2D segmentation scored with ``medseg.metrics``, per case, label and prompt type.

    Each label's key slice is prompted with each kind derived from the reference
    (box = tight bounding box; points = innermost point + 1 negative) and the mask on
    that slice is scored against the reference: Dice, NSD at ``nsd_tolerance_mm`` and
    Boundary IoU (2 mm band), with in-plane spacing.

    Returns:
        rows ``{"case", "label", "slice", "kind", "dice", "nsd", "boundary_iou", "score"}``.
    """
    from medseg.metrics import boundary_iou, dice, nsd
    from medseg.sam.prompts import in_plane_axes
    from medseg.sam.segment import SlicePredictor

    rows = []
    a, b = in_plane_axes(axis)
    for case, (image, label) in enumerate(pairs):
        predictor = SlicePredictor(net, image, preprocess=preprocess)
        spacing = (image.spacing[a], image.spacing[b])
        for kind in kinds:
            for p in prompts_from_mask(label, axis=axis, kind=kind, key_slices=key_slices, n_positive=1,
                                       n_negative=1 if "points" in kind else 0, seed=seed):
                res = predictor.encode(p.slice_index, axis).predict_prompt(p)
                ref = np.take(label.array, p.slice_index, axis) == p.object_id
                rows.append({
                    "case": case, "label": p.object_id, "slice": p.slice_index, "kind": kind,
                    "dice": dice(res.mask, ref, empty_score=1.0),
                    "nsd": nsd(res.mask, ref, tolerance_mm=nsd_tolerance_mm, spacing=spacing, empty_score=1.0),
                    "boundary_iou": boundary_iou(res.mask, ref, width_mm=2.0, spacing=spacing, empty_score=1.0),
                    "score": res.score,
                })
    return rows


__all__ = [
    "TRAINING_KEYS",
    "PromptSimulation",
    "FinetuneConfig",
    "sam_loss",
    "Sam2FinetuneModule",
    "SliceDataset",
    "finetune",
    "evaluate_prompted",
]
