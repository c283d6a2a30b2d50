"""General-image 2D models: ``deeplabv3plus`` (segmentation-models-pytorch) and ``segformer`` (transformers).

Both take ``[B, in_channels, H, W]`` float images and return logits
``[B, out_channels, H, W]`` at the input size. Nothing is ever downloaded: networks are
built from their config with random weights, and weights come only from a local file
the caller names (``torch.load(..., weights_only=True)``) or, for SegFormer, a local
folder written by ``save_pretrained`` (read with ``local_files_only=True``).

- ``deeplabv3plus``: any smp encoder; H and W must be multiples of ``encoder_output_stride`` (16 by
  default); ``encoder_weights`` may only be ``None`` or a local encoder state_dict file (``"imagenet"``
  would download and is refused); ``weights`` is a local state_dict of the whole model.
- ``segformer``: ``SegformerForSemanticSegmentation`` from a ``SegformerConfig``, variants
  ``b0`` ... ``b5`` with the published encoder sizes, any key overridable; its logits (1/4 of the
  input with the default ``strides``) are upsampled bilinearly to the input size. Built from random
  weights, it gets the MiT init of the SegFormer paper, not transformers' generic one. transformers
  is imported inside the builder only.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, ModelError
from medseg.models.registry import register_model

log = logging.getLogger(__name__)

# Published SegFormer encoders (Xie et al. 2021, MiT-b0..b5); heads and sr_ratios are shared.
SEGFORMER_VARIANTS: dict[str, dict[str, Any]] = {
    "b0": {"hidden_sizes": [32, 64, 160, 256], "depths": [2, 2, 2, 2], "decoder_hidden_size": 256},
    "b1": {"hidden_sizes": [64, 128, 320, 512], "depths": [2, 2, 2, 2], "decoder_hidden_size": 256},
    "b2": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 4, 6, 3], "decoder_hidden_size": 768},
    "b3": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 4, 18, 3], "decoder_hidden_size": 768},
    "b4": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 8, 27, 3], "decoder_hidden_size": 768},
    "b5": {"hidden_sizes": [64, 128, 320, 512], "depths": [3, 6, 40, 3], "decoder_hidden_size": 768},
}
_SEGFORMER_COMMON = {"num_attention_heads": [1, 2, 5, 8], "sr_ratios": [8, 4, 2, 1]}
_SEGFORMER_HEAD = "model.decode_head.classifier."
#: the MiT encoder's patch-embedding strides (SegformerConfig default): logits at 1/4, deepest stage at 1/32
SEGFORMER_STRIDES = (4, 2, 2, 2)
#: total downsampling of the default MiT encoder: H and W must be multiples of it
SEGFORMER_STRIDE = math.prod(SEGFORMER_STRIDES)


def segformer_multiple(config: Mapping[str, Any]) -> list[int]:
    """Per-axis input multiple of a SegFormer builder config: the product of its patch-embedding
    ``strides`` (``strides`` or ``config["strides"]``; default :data:`SEGFORMER_STRIDES`, 32).

    Example:
        >>> segformer_multiple({"strides": [2, 2, 2, 2]})
        [16, 16]
    """
    strides = config.get("strides") or (config.get("config") or {}).get("strides") or SEGFORMER_STRIDES
    return [math.prod(int(s) for s in strides)] * 2


# ---------------------------------------------------------------- deeplabv3plus


@register_model(
    "deeplabv3plus", spatial_dims=2, description="DeepLabV3+ (segmentation-models-pytorch, any encoder)",
    input_multiple=lambda c: [int(c["encoder_output_stride"])] * 2,
    weight_keys=("weights", "encoder_weights"),
    tiny_config={"in_channels": 1, "out_channels": 3, "encoder_name": "resnet18", "decoder_channels": 16},
)
def build_deeplabv3plus(
    *,
    in_channels: int = 3,
    out_channels: int = 2,
    encoder_name: str = "resnet34",
    encoder_depth: int = 5,
    encoder_output_stride: int = 16,
    decoder_channels: int = 256,
    decoder_atrous_rates: Sequence[int] = (12, 24, 36),
    encoder_weights: str | None = None,
    weights: str | None = None,
) -> Any:
    """DeepLabV3+ from smp; ``encoder_weights``/``weights`` are local state_dict files (never downloaded)."""
    import segmentation_models_pytorch as smp

    from medseg.models.unet2d import check_smp_encoder, freeze_unused_encoder, load_encoder

    check_smp_encoder(encoder_name)
    if encoder_output_stride not in (8, 16):
        raise ConfigError(f"model.config.encoder_output_stride must be 8 or 16, got {encoder_output_stride}")
    encoder_file = _local_file(encoder_weights, "encoder_weights") if encoder_weights else None
    model = smp.DeepLabV3Plus(
        encoder_name=encoder_name,
        encoder_depth=encoder_depth,
        encoder_weights=None,
        encoder_output_stride=encoder_output_stride,
        decoder_channels=int(decoder_channels),
        decoder_atrous_rates=tuple(int(r) for r in decoder_atrous_rates),
        in_channels=in_channels,
        classes=out_channels,
    )
    if encoder_file is not None:
        load_encoder(model, encoder_file)
    if weights:
        _load_full_state(model, _local_file(weights, "weights"), prefix="", head="segmentation_head.")
    freeze_unused_encoder(model, in_channels, encoder_depth)
    return model


def _local_file(value: str | os.PathLike[str], key: str) -> Path:
    path = Path(value)
    if not path.is_file():
        hint = " (pretrained weights are never downloaded: give a local file)" if not path.suffix else ""
        raise ModelError(f"{path}: model.config.{key} file not found{hint}")
    return path


def _load_full_state(model: Any, path: Path, *, prefix: str, head: str) -> None:
    """Load a whole-model state_dict strictly; ``prefix`` is added to keys that lack it."""
    from medseg.models.export import read_state_dict

    state = read_state_dict(path)
    if prefix and not any(k.startswith(prefix) for k in state):
        state = {prefix + k: v for k, v in state.items()}
    _load_checked(model, state, str(path), head=head)


def _load_checked(model: Any, state: Mapping[str, Any], where: str, *, head: str) -> None:
    """Strict load that only tolerates a classifier head (keys under ``head``) of another size.

    A head of another class count is left at random init and logged (fine-tuning from, e.g.,
    150 ADE20K classes to your own); every other tensor must be present and fit.
    """
    own = model.state_dict()
    state = dict(state)
    for key in [k for k in state if k in own and k.startswith(head)]:
        if tuple(state[key].shape) != tuple(own[key].shape):
            log.warning("%s: %s has shape %s, model needs %s: classifier head left at random init",
                        where, key, tuple(state[key].shape), tuple(own[key].shape))
            state[key] = own[key]
    from medseg.models.export import load_state_exactly

    load_state_exactly(model, state, where=f"{where}: weights do not fit the model")


# ---------------------------------------------------------------- segformer


@functools.lru_cache(maxsize=1)
def _segformer_class() -> type:
    import torch
    import torch.nn.functional as F

    class SegformerSegmenter(torch.nn.Module):
        """``SegformerForSemanticSegmentation`` returning logits upsampled to the input size."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.model(pixel_values=x).logits  # [B, num_labels, H/strides[0], W/strides[0]]
            return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    SegformerSegmenter.__module__ = __name__
    SegformerSegmenter.__qualname__ = "SegformerSegmenter"
    return SegformerSegmenter


def __getattr__(name: str) -> Any:  # PEP 562: the wrapper class exists once torch is imported
    if name == "SegformerSegmenter":
        return _segformer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def segformer_config(
    variant: str | None = "b0",
    *,
    in_channels: int = 3,
    out_channels: int = 2,
    base: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> Any:
    """A ``SegformerConfig``: ``base`` (a config dict) or the ``variant`` sizes, then ``overrides``.

    Raises:
        ConfigError: unknown variant or a key SegformerConfig does not know.
    """
    from transformers import SegformerConfig

    if base is not None:
        values: dict[str, Any] = dict(base)
    elif variant is None:
        values = {}
    else:
        if variant not in SEGFORMER_VARIANTS:
            raise ConfigError(f"model.config.variant {variant!r} is not known; valid: {', '.join(SEGFORMER_VARIANTS)}")
        values = {**_SEGFORMER_COMMON, **SEGFORMER_VARIANTS[variant]}
    known = set(SegformerConfig().to_dict())
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"model.config.config key(s) {', '.join(unknown)} are not SegformerConfig fields")
    values.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in overrides.items()})
    values.update(num_channels=int(in_channels), num_labels=int(out_channels))
    values.pop("id2label", None)
    values.pop("label2id", None)
    return SegformerConfig(**values)


def _mit_init(net: Any) -> None:
    """The SegFormer paper's own random init (MiT, mmsegmentation's ``mix_transformer.py``), in place.

    transformers initialises every convolution like a linear layer (normal, std ``initializer_range``
    0.02), which leaves the Mix-FFN's 3x3 depthwise convolutions (9 weights each) and the
    patch-embedding and key/value-reduction convolutions with outputs near 0: a network built from
    random weights then learns very slowly. MiT draws conv weights from ``N(0, sqrt(2 / fan_out))``,
    ``fan_out = kh * kw * out_channels / groups``, with zero bias; linear layers keep the truncated
    normal std 0.02, norms weight 1 and bias 0; the classifier is drawn with std 0.01
    (mmsegmentation's ``conv_seg``).
    """
    import torch

    classifier = net.decode_head.classifier
    for module in net.modules():
        if module is classifier:
            torch.nn.init.normal_(module.weight, 0.0, 0.01)
            torch.nn.init.zeros_(module.bias)
        elif isinstance(module, torch.nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            torch.nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, torch.nn.Linear):
            torch.nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)


@register_model(
    "segformer", spatial_dims=2, description="SegFormer b0-b5 (transformers), logits at input size",
    input_multiple=segformer_multiple,
    weight_keys=("weights",),
    tiny_config={"in_channels": 1, "out_channels": 3, "hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1],
                 "num_attention_heads": [1, 2, 4, 8], "decoder_hidden_size": 16},
)
def build_segformer(
    *,
    in_channels: int = 3,
    out_channels: int = 2,
    variant: str | None = "b0",
    hidden_sizes: Sequence[int] | None = None,
    depths: Sequence[int] | None = None,
    num_attention_heads: Sequence[int] | None = None,
    sr_ratios: Sequence[int] | None = None,
    decoder_hidden_size: int | None = None,
    strides: Sequence[int] | None = None,
    patch_sizes: Sequence[int] | None = None,
    config: Mapping[str, Any] | None = None,
    weights: str | None = None,
) -> Any:
    """SegFormer from a ``SegformerConfig`` (variant b0..b5 or explicit keys), random init or local weights.

    Args:
        in_channels, out_channels: image channels and classes (``num_channels``, ``num_labels``).
        variant: ``b0`` ... ``b5`` (published encoder sizes); ``None``: SegformerConfig defaults,
            or the config of a ``weights`` folder.
        hidden_sizes, depths, num_attention_heads, sr_ratios, decoder_hidden_size: override the variant.
        strides, patch_sizes: the four patch embeddings' conv strides and kernel sizes (default
            ``[4, 2, 2, 2]`` and ``[7, 3, 3, 3]``); logits come at ``1 / strides[0]`` of the input before
            the upsampling, and H and W must be multiples of ``prod(strides)`` (the registry's input multiple).
        config: any other ``SegformerConfig`` keys (``drop_path_rate``, ``classifier_dropout_prob``, ...).
        weights: a local state_dict file (of this model, keys ``model.*``, or of the bare
            ``SegformerForSemanticSegmentation``) or a local ``save_pretrained`` folder. A classifier
            head of another class count is left at random init (logged); anything else must fit.
    """
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    overrides = {k: v for k, v in {
        "hidden_sizes": hidden_sizes, "depths": depths, "num_attention_heads": num_attention_heads,
        "sr_ratios": sr_ratios, "decoder_hidden_size": decoder_hidden_size, "strides": strides,
        "patch_sizes": patch_sizes}.items() if v is not None}
    overrides.update(dict(config or {}))
    folder = Path(weights) if weights and Path(weights).is_dir() else None
    base = None
    if folder is not None and variant is None:
        try:
            base = SegformerConfig.from_pretrained(folder, local_files_only=True).to_dict()
        except (OSError, ValueError) as exc:
            raise ModelError(f"{folder}: no readable SegFormer config.json ({exc})") from exc
    cfg = segformer_config(variant, in_channels=in_channels, out_channels=out_channels, base=base, **overrides)
    try:
        net = SegformerForSemanticSegmentation(cfg)
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"SegFormer config is inconsistent: {exc}") from exc
    _mit_init(net)  # loaded weights below replace it
    model = _segformer_class()(net)
    if folder is not None:
        try:
            pretrained = SegformerForSemanticSegmentation.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{folder}: cannot load a SegFormer saved with save_pretrained ({exc})") from exc
        state = {"model." + k: v for k, v in pretrained.state_dict().items()}
        _load_checked(model, state, str(folder), head=_SEGFORMER_HEAD)
    elif weights:
        _load_full_state(model, _local_file(weights, "weights"), prefix="model.", head=_SEGFORMER_HEAD)
    return model


__all__ = ["build_deeplabv3plus", "build_segformer", "segformer_config", "SEGFORMER_VARIANTS"]
