"""The generic segmentation LightningModule: a registered network, Dice+CE, sliding-window validation.

Tensors: 3D training batches ``image [B, C, X, Y, Z]`` float32 and ``label [B, 1, X, Y, Z]``
integer; 2D batches drop ``Z``. Validation always receives whole preprocessed 3D volumes
(``[1, C, X, Y, Z]``); a 2D network is applied slice by slice (``Z`` slices batched).
"""

from __future__ import annotations

import math
import time
from typing import Any

import lightning as L
import numpy as np
import torch

from medseg.models.registry import create_model


def build_loss(cfg: dict[str, Any]) -> torch.nn.Module:
    """MONAI ``DiceCELoss`` / ``DiceLoss`` / cross-entropy from a loss config dict."""
    from monai.losses import DiceCELoss, DiceLoss

    name = cfg.get("name", "dice_ce")
    common = {"to_onehot_y": True, "softmax": True, "include_background": cfg.get("include_background", False),
              "batch": cfg.get("batch_dice", False), "smooth_nr": 1e-5, "smooth_dr": 1e-5}
    if name == "dice":
        return DiceLoss(**common)
    if name == "ce":
        return DiceCELoss(**common, lambda_dice=0.0, lambda_ce=1.0)
    return DiceCELoss(**common, lambda_dice=cfg.get("lambda_dice", 1.0), lambda_ce=cfg.get("lambda_ce", 1.0))


class PolyTimeLR:
    """LR factor ``(1 - progress) ** exponent``; progress = max(step / total, elapsed / budget).

    Picklable (used with ``LambdaLR``); warm-up is linear over ``warmup`` steps.
    """

    def __init__(self, total_steps: int, exponent: float = 0.9, budget_s: float | None = None,
                 warmup: int = 0, kind: str = "poly") -> None:
        self.total_steps = max(1, total_steps)
        self.exponent = exponent
        self.budget_s = budget_s
        self.warmup = warmup
        self.kind = kind
        self.start: float | None = None

    def progress(self, step: int) -> float:
        if self.start is None:
            self.start = time.monotonic()
        p = step / self.total_steps
        if self.budget_s:
            p = max(p, (time.monotonic() - self.start) / self.budget_s)
        return min(p, 1.0)

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        p = self.progress(step)
        if self.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * p)) + 1e-3
        return max((1.0 - p) ** self.exponent, 1e-3)


class StepTimer(L.Callback):
    """Records the wall time of every training-step end; gives steady-state steps per second."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.times.append(time.perf_counter())

    def steps_per_second(self) -> float | None:
        """Steps per second between the first and the last step end (None with fewer than 2 steps)."""
        if len(self.times) < 2:
            return None
        return (len(self.times) - 1) / max(self.times[-1] - self.times[0], 1e-9)


def gather_per_item(trainer: Any, per_item: dict[int, Any]) -> dict[int, Any]:
    """Every rank's validation results keyed by item index, each item once: a padded distributed sampler
    gives some items to two ranks, so summing the ranks' totals would count them twice."""
    if trainer.world_size <= 1:
        return per_item
    import torch.distributed as dist

    parts: list[Any] = [None] * trainer.world_size
    dist.all_gather_object(parts, per_item)
    return {k: v for part in parts for k, v in part.items()}


class SegmentationModule(L.LightningModule):
    """Train any registered segmentation network (2D or 3D) with Dice+CE.

    Args:
        model_name, model_config: registry name and builder config.
        spatial_dims: 2 or 3 (the network's input).
        patch_size: training/inference patch (voxels, network axes).
        labels: label value -> name (``0`` background).
        loss, optimizer, schedule, inference: config dicts (see :mod:`medseg.training.config`).
        total_steps: planned optimizer steps (for the schedule); ``budget_s``: time budget.
        finetune: the config's ``finetune`` section (read by promptable families' modules;
            unused by dense segmentation).
    """

    def __init__(self, *, model_name: str, model_config: dict[str, Any], spatial_dims: int,
                 patch_size: list[int], labels: dict[str, str], loss: dict[str, Any],
                 optimizer: dict[str, Any], schedule: dict[str, Any], inference: dict[str, Any],
                 total_steps: int, budget_s: float | None = None, finetune: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["finetune"])
        self.net = create_model(model_name, **model_config)
        self.loss_fn = build_loss(loss)
        self.spatial_dims = spatial_dims
        self.num_classes = int(max(int(k) for k in labels)) + 1
        self._val_cm: dict[int, np.ndarray] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # -- training ------------------------------------------------------------------------
    def compute_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of the logits (or, with deep supervision, the stacked heads ``[B, H, K, ...]``)."""
        if output.ndim == target.ndim + 1:  # DynUNet deep supervision: heads on axis 1
            heads = torch.unbind(output, dim=1)
            weights = torch.tensor([0.5**i for i in range(len(heads))])
            weights = weights / weights.sum()
            return sum(w * self.loss_fn(h, target) for w, h in zip(weights.tolist(), heads))
        return self.loss_fn(output, target)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        image, label = batch["image"], batch["label"]
        loss = self.compute_loss(self.net(image), label.long())
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=image.shape[0],
                 sync_dist=True)
        return loss

    # -- validation -----------------------------------------------------------------------
    def predict_volume(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``[1, K, X, Y, Z]`` of a whole preprocessed volume ``[1, C, X, Y, Z]`` (sliding window)."""
        from monai.inferers import sliding_window_inference

        inf = self.hparams.inference
        patch = list(self.hparams.patch_size)
        kwargs = {"sw_batch_size": inf.get("batch_size", 2), "overlap": inf.get("overlap", 0.5),
                  "mode": inf.get("mode", "gaussian"), "padding_mode": "constant"}
        if self.spatial_dims == 3:
            return sliding_window_inference(image, patch, predictor=self.net, **kwargs)
        slices = image[0].permute(3, 0, 1, 2)  # [Z, C, X, Y]
        outs = [sliding_window_inference(slices[i:i + 16], patch, predictor=self.net, **kwargs)
                for i in range(0, slices.shape[0], 16)]
        return torch.cat(outs).permute(1, 2, 3, 0)[None]

    def on_validation_epoch_start(self) -> None:
        self._val_cm = {}  # validation case index -> its confusion matrix

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        from medseg.metrics.overlap import confusion

        logits = self.predict_volume(batch["image"])
        pred = logits.argmax(1)[0].cpu().numpy().astype(np.int16)
        ref = batch["label"][0, 0].cpu().numpy().astype(np.int16)
        ref = np.clip(ref, 0, self.num_classes - 1)
        if self._val_cm is None:
            self.on_validation_epoch_start()
        self._val_cm[int(batch["index"][0])] = confusion(pred, ref, self.num_classes)

    def on_validation_epoch_end(self) -> None:
        from medseg.metrics.overlap import overlap_from_confusion

        per_case = gather_per_item(self.trainer, self._val_cm or {})
        cm = sum(per_case.values(), np.zeros((self.num_classes, self.num_classes), dtype=np.int64))
        rows = overlap_from_confusion(cm, empty_score=float("nan"))
        names = self.hparams.labels
        dices = []
        for row in rows:
            value = row["dice"]
            if not math.isnan(value):
                dices.append(value)
            name = names.get(str(row["label"]), f"label_{row['label']}")
            self.log(f"val_dice_{name}", float(0.0 if math.isnan(value) else value), sync_dist=False)
        mean = float(np.mean(dices)) if dices else 0.0
        self.log("val_dice", mean, prog_bar=True, sync_dist=False)

    # -- optimisation ---------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        return make_optimizers(self)


def make_optimizers(module: L.LightningModule) -> dict[str, Any]:
    """SGD (Nesterov) or AdamW and the per-step LR schedule of ``module.hparams`` (``optimizer``,
    ``schedule``, ``total_steps``, ``budget_s``): the one optimiser setup of medseg's modules."""
    hp = module.hparams
    opt = hp.optimizer
    if opt.get("name", "sgd") == "adamw":
        optimizer = torch.optim.AdamW(module.parameters(), lr=opt["lr"], weight_decay=opt.get("weight_decay", 0.0))
    else:
        optimizer = torch.optim.SGD(module.parameters(), lr=opt["lr"], momentum=opt.get("momentum", 0.99),
                                    nesterov=opt.get("nesterov", True) and opt.get("momentum", 0.99) > 0,
                                    weight_decay=opt.get("weight_decay", 0.0))
    sched = hp.schedule
    factor = PolyTimeLR(hp.total_steps, sched.get("exponent", 0.9), hp.budget_s,
                        sched.get("warmup_steps", 0), sched.get("name", "poly"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


__all__ = ["SegmentationModule", "gather_per_item", "build_loss", "make_optimizers", "PolyTimeLR", "StepTimer"]
