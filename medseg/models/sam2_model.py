"""The ``sam2`` model family: SAM2 (Meta, Apache-2.0) built from the ``sam2`` package configs.

Registered as ``sam2`` (2D, promptable): ``create_model("sam2", config="tiny", image_size=512)``
returns the SAM2 network (a ``SAM2VideoPredictor`` module) used by :mod:`medseg.sam`.
``medseg train`` trains it with :class:`medseg.sam.finetune.Sam2FinetuneModule`.
"""

from __future__ import annotations

from typing import Any

from medseg.errors import ConfigError
from medseg.models.registry import register_model


@register_model(
    "sam2",
    spatial_dims=2,
    training_module="medseg.sam.finetune:Sam2FinetuneModule",
    description="SAM2 promptable segmentation (sam2 package configs tiny..large, SAM 2 / 2.1)",
)
def build_sam2_model(
    *,
    config: str = "sam2.1_hiera_t",
    image_size: int = 1024,
    overrides: list[str] | tuple[str, ...] = (),
    in_channels: int = 1,
    out_channels: int = 2,
    init_checkpoint: str | None = None,
    freeze_image_encoder: bool = True,
    cache_embeddings: bool = True,
    max_cache: int = 4096,
    prompt: dict[str, Any] | None = None,
    loss_weights: dict[str, float] | None = None,
) -> Any:
    """SAM2 network on CPU, randomly initialised (weights are loaded by the caller).

    Args:
        config: ``sam2`` config name or alias (``tiny``, ``small``, ``base_plus``, ``large``,
            ``sam2.1_hiera_t``, ``sam2_hiera_l``, ...).
        image_size: square model input in pixels (1024 as trained; 512 for CPU).
        overrides: hydra overrides ``model.<key>=<value>``.
        in_channels: 1 (grey, replicated to RGB) or 3.
        out_channels: ignored (SAM2 predicts one binary mask per prompt); accepted so that the
            training engine's defaults apply.
        init_checkpoint, freeze_image_encoder, cache_embeddings, max_cache, prompt,
            loss_weights: fine-tuning settings read by the training module; ignored here.
    """
    from medseg.sam.model import build_sam2

    if in_channels not in (1, 3):
        raise ConfigError(f"model 'sam2': in_channels must be 1 or 3 (grey or RGB), got {in_channels}")
    return build_sam2(config, image_size=image_size, overrides=tuple(overrides), device="cpu", train=False)


__all__ = ["build_sam2_model"]
