"""``mask2former``: transformers' ``Mask2FormerForUniversalSegmentation`` (a Swin backbone, a multi-scale
deformable pixel decoder and a masked-attention transformer decoder over ``num_queries`` mask queries).

The network is built from a ``Mask2FormerConfig`` (``config``: its keys, ``backbone``: the Swin
backbone's keys; random init, nothing downloaded) or read from a local ``save_pretrained`` folder
(``weights``; ``local_files_only``). transformers is imported inside the builder only.

medseg's wrapper (:class:`Mask2FormerNet`, built by :func:`build_mask2former`) makes it a dense family:
``forward(x)`` returns per-class log scores ``[B, K, H, W]`` at the input's size: the mask logits
upsampled bilinearly to the input, then ``softmax(class)[:-1] x sigmoid(mask)`` summed over the queries,
as the Mask2Former authors' semantic inference does (detectron2). transformers'
``post_process_semantic_segmentation`` computes the same sum at a fixed 384 x 384 and resizes the score
map, so the two argmaxes are equal on 384 x 384 inputs (tested) and may differ by a few boundary pixels
elsewhere. The dense predictors and image training's validation take it as they take SegFormer.
``training_loss(x, target, ignore_index)`` is transformers' own loss (Hungarian matching, class
cross-entropy, mask BCE + Dice on sampled points) with mask/class labels built from medseg's masks by
transformers' ``convert_segmentation_map_to_binary_masks(_fast)`` (one binary mask per class present;
ignored pixels are in no mask). The image processor never resizes: medseg's transforms do that.

``instance_loss(x, instances, classes)`` is the same loss with one target per object: an instance map
``[B, H, W]`` (0 = no object: background, crowd regions and padding, which are in no target mask, as
detectron2's Mask2Former drops crowd annotations) and per image the class of each instance id; it trains
the instance task (:mod:`medseg.training.instances`).

``task`` (``semantic``, ``instance``, ``panoptic``) is recorded in the export and picks the
post-processing of ``medseg predict-images`` (:mod:`medseg.inference.mask2former` for the two
segment tasks); :func:`segments` is that post-processing for one image (``post_process_instance_segmentation``
with one binary map per segment, the higher score winning an overlap, or ``post_process_panoptic_segmentation``),
shared by ``predict-images`` and the validation of instance training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError
from medseg.models.registry import register_model

log = logging.getLogger(__name__)

#: the Swin backbone's total stride: input sides must be multiples of it
MASK2FORMER_STRIDE = 32
#: what ``task`` may be (the post-processing of ``predict-images``)
MASK2FORMER_TASKS = ("semantic", "instance", "panoptic")
#: transformers' default score threshold of a kept query
THRESHOLD = 0.5
#: a Mask2Former small enough for tests and CPU minutes (random init)
TINY_CONFIG: dict[str, Any] = {
    "in_channels": 1, "out_channels": 3,
    "config": {"hidden_dim": 32, "num_queries": 8, "encoder_layers": 1, "decoder_layers": 2,
               "encoder_feedforward_dim": 64, "dim_feedforward": 64, "mask_feature_size": 32, "feature_size": 32,
               "num_attention_heads": 2, "train_num_points": 256},
    "backbone": {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "window_size": 4},
}


def _hf_model(*, in_channels: int, out_channels: int, config: dict[str, Any] | None,
              backbone: dict[str, Any] | None, weights: str | None) -> Any:
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    if weights:
        folder = Path(weights).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigError(f"model.config.weights {weights!r}: not a save_pretrained folder (no config.json); "
                             "medseg never downloads weights, give a local folder")
        model = Mask2FormerForUniversalSegmentation.from_pretrained(
            str(folder), local_files_only=True, num_labels=int(out_channels), ignore_mismatched_sizes=True)
    else:
        stages = ["stage1", "stage2", "stage3", "stage4"]
        swin = SwinConfig(**{"out_features": stages, "num_channels": int(in_channels), **dict(backbone or {})})
        cfg = Mask2FormerConfig(**{**dict(config or {}), "backbone_config": swin, "num_labels": int(out_channels),
                                   "use_pretrained_backbone": False})
        model = Mask2FormerForUniversalSegmentation(cfg)
    channels = int(getattr(model.config.backbone_config, "num_channels", in_channels))
    if channels != int(in_channels):
        raise ConfigError(f"model.config.in_channels {in_channels}: the Mask2Former backbone takes {channels} channels")
    return model


def _binary_masks(seg: Any, ignore_index: int) -> tuple[Any, Any]:
    """``(masks [N, H, W], classes [N])`` of a train-index mask ``seg [H, W]`` (a tensor) by transformers' own
    label builder: its torch version (transformers 5) or the numpy one of 4.x."""
    import torch
    from transformers.models.mask2former import image_processing_mask2former as processing

    fast = getattr(processing, "convert_segmentation_map_to_binary_masks_fast", None)
    if fast is not None:
        return fast(seg, ignore_index=ignore_index)
    binary, labels = processing.convert_segmentation_map_to_binary_masks(seg.cpu().numpy(), ignore_index=ignore_index)
    return torch.from_numpy(binary).float(), torch.from_numpy(labels).long()


def _net_class() -> type:
    import torch
    import torch.nn.functional as F

    class Mask2FormerNet(torch.nn.Module):
        """transformers' Mask2Former (``self.model``) as a dense network; see the module docstring."""

        def __init__(self, model: torch.nn.Module, task: str) -> None:
            super().__init__()
            self.model, self.task = model, task

        @property
        def num_classes(self) -> int:
            return int(self.model.config.num_labels)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.model(pixel_values=x)
            return self.semantic_scores(out, tuple(x.shape[2:])).clamp_min(1e-6).log()

        @staticmethod
        def semantic_scores(out: Any, size: tuple[int, int]) -> torch.Tensor:
            """``[B, K, H, W]`` semantic scores at ``size`` (mask logits upsampled to it first)."""
            masks = F.interpolate(out.masks_queries_logits, size=size, mode="bilinear", align_corners=False)
            classes = out.class_queries_logits.softmax(-1)[..., :-1]
            return torch.einsum("bqc,bqhw->bchw", classes, masks.sigmoid())

        def training_loss(self, x: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
            """transformers' Mask2Former loss of images ``x [B, C, H, W]`` and train-index masks ``target [B, H, W]``."""
            masks, classes = [], []
            for seg in target:
                binary, labels = _binary_masks(seg, ignore_index)
                masks.append(binary.to(device=x.device, dtype=x.dtype))
                classes.append(labels.to(device=x.device, dtype=torch.long))
            return self.model(pixel_values=x, mask_labels=masks, class_labels=classes).loss

        def instance_loss(self, x: torch.Tensor, instances: torch.Tensor, classes: list[torch.Tensor]) -> torch.Tensor:
            """transformers' Mask2Former loss with one target mask per object: ``instances [B, H, W]`` integer
            instance ids (0 = no object) and ``classes[b][i]``, the class of id ``i`` of image ``b``
            (index 0 unused). Ids absent from a crop are no target; an image without objects has none."""
            masks, labels = [], []
            for ids, table in zip(instances, classes):
                present = torch.unique(ids)
                present = present[present > 0]
                masks.append((ids[None] == present[:, None, None]).to(x.dtype))
                labels.append(table.to(device=x.device, dtype=torch.long)[present])
            return self.model(pixel_values=x, mask_labels=masks, class_labels=labels).loss

        def export_config(self) -> dict[str, Any]:
            """The builder config that rebuilds this architecture without the ``weights`` folder."""
            cfg = self.model.config.to_diff_dict()
            backbone = self.model.config.backbone_config.to_diff_dict()
            drop = ("backbone_config", "num_labels", "id2label", "label2id", "transformers_version", "architectures",
                    "model_type", "use_pretrained_backbone", "_name_or_path", "dtype", "torch_dtype")
            return {"in_channels": int(backbone.get("num_channels", 3)), "out_channels": self.num_classes,
                    "task": self.task, "config": {k: v for k, v in cfg.items() if k not in drop},
                    "backbone": {k: v for k, v in backbone.items()
                                 if k not in ("transformers_version", "model_type", "out_indices", "stage_names",
                                              "_name_or_path", "dtype", "torch_dtype", "architectures")}}

    Mask2FormerNet.__module__ = __name__
    return Mask2FormerNet


def segment_processor(num_labels: int) -> Any:
    """transformers' ``Mask2FormerImageProcessor`` for post-processing only (no resize, rescale or
    normalisation: medseg's transforms do those)."""
    from transformers import Mask2FormerImageProcessor

    return Mask2FormerImageProcessor(do_resize=False, do_rescale=False, do_normalize=False,
                                     num_labels=int(num_labels))


def segments(net: Any, processor: Any, chw: Any, *, task: str, threshold: float, device: Any = "cpu",
             classes: Any = None, stuff: Any = None) -> tuple[Any, list[dict[str, Any]]]:
    """``(ids [H, W] uint16, table)`` of one normalised ``[C, H, W]`` image through a Mask2Former wrapper and
    transformers' ``task`` post-processing (``instance``, ``panoptic``) at the padded size, cropped back.

    The image is zero-padded at the bottom and right to :data:`MASK2FORMER_STRIDE`. ``instance`` takes one
    binary map per kept query (transformers' ``return_binary_maps``: instances may overlap); ``panoptic``
    its non-overlapping segment map, the queries of a ``stuff`` class fused into one segment (transformers'
    ``label_ids_to_fuse``; COCO panoptic has one segment per stuff class and image). Segments of class 0 (background), and of classes outside ``classes``
    when given (ids that are no class of the training data), are dropped; the rest are ordered by
    :func:`medseg.models.apply2d.ordered_segments` (ids 1, 2, ... in decreasing score, the higher score
    winning an overlap)."""
    import torch

    from medseg.models.apply2d import ordered_segments, pad_to_multiple

    if task not in ("instance", "panoptic"):
        raise ConfigError(f"task {task!r}: segments are made for the instance and panoptic tasks")
    h, w = chw.shape[1:]
    x = torch.from_numpy(pad_to_multiple(chw, MASK2FORMER_STRIDE))[None].to(device)
    with torch.inference_mode():
        out = net.model(pixel_values=x)
        if task == "instance":
            [result] = processor.post_process_instance_segmentation(
                out, threshold=threshold, target_sizes=[tuple(x.shape[2:])], return_binary_maps=True)
        else:
            [result] = processor.post_process_panoptic_segmentation(
                out, threshold=threshold, target_sizes=[tuple(x.shape[2:])],
                label_ids_to_fuse={int(c) for c in stuff or ()})
    info = result["segments_info"]
    seg = result["segmentation"]
    if task == "instance":
        maps = [seg[n, :h, :w].cpu().numpy() > 0 for n in range(len(info))] if info else []
    else:
        maps = [seg[:h, :w].cpu().numpy() == s["id"] for s in info]
    known = None if classes is None else {int(c) for c in classes}
    kept = [n for n, s in enumerate(info) if int(s["label_id"]) != 0 and (known is None or int(s["label_id"]) in known)]
    return ordered_segments([maps[n] for n in kept], [int(info[n]["label_id"]) for n in kept],
                            [float(info[n]["score"]) for n in kept], (h, w))


@register_model(
    "mask2former", spatial_dims=2, task="semantic",
    description="Mask2Former universal segmentation (transformers; semantic, instance or panoptic post-processing)",
    input_multiple=lambda c: [MASK2FORMER_STRIDE] * 2,
    weight_keys=("weights",),
    tiny_config=TINY_CONFIG,
    image_predictor="medseg.inference.mask2former:predict_mask2former_folder",
)
def build_mask2former(*, in_channels: int = 3, out_channels: int = 2, task: str = "semantic",
                      config: dict[str, Any] | None = None, backbone: dict[str, Any] | None = None,
                      weights: str | None = None) -> Any:
    """Mask2Former with ``out_channels`` classes (background included) for ``task`` predictions.

    Args:
        config: ``Mask2FormerConfig`` keys (``hidden_dim``, ``num_queries``, ``decoder_layers``, ...).
        backbone: ``SwinConfig`` keys of the backbone (``embed_dim``, ``depths``, ``num_heads``, ...).
        weights: a local ``save_pretrained`` folder (its config replaces ``config``/``backbone``; the class
            head is re-initialised when its class count differs from ``out_channels``).
    """
    if task not in MASK2FORMER_TASKS:
        raise ConfigError(f"model.config.task {task!r}: expected one of {', '.join(MASK2FORMER_TASKS)}")
    if int(out_channels) < 2:
        raise ConfigError(f"model.config.out_channels must be >= 2 (background and a class), got {out_channels}")
    model = _hf_model(in_channels=in_channels, out_channels=out_channels, config=config, backbone=backbone,
                      weights=weights)
    return _net_class()(model, task)


__all__ = ["MASK2FORMER_STRIDE", "MASK2FORMER_TASKS", "THRESHOLD", "TINY_CONFIG", "build_mask2former",
           "segment_processor", "segments"]
