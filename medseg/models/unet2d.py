"""``unet2d``: segmentation-models-pytorch U-Net with any smp encoder, no downloads.

Input ``[B, C, X, Y]`` float, output logits ``[B, out_channels, X, Y]``; X and Y must
be multiples of ``2 ** encoder_depth`` (32 by default). Trained on 2D slices of 3D
volumes (or on 2D images) and applied slice by slice. Encoder weights are never
downloaded: ``encoder_weights_path`` may name a local state_dict file (``.pt``/``.pth``,
loaded with ``weights_only=True``) for the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, ModelError
from medseg.models.registry import register_model


@register_model(
    "unet2d", spatial_dims=2, description="2D U-Net (segmentation-models-pytorch, any encoder)",
    input_multiple=lambda c: [2 ** int(c["encoder_depth"])] * 2,
    weight_keys=("encoder_weights_path",),
    tiny_config={"in_channels": 1, "out_channels": 3, "encoder_name": "resnet18", "encoder_depth": 3,
                 "decoder_channels": [32, 16, 8]},
)
def build_unet2d(
    *,
    in_channels: int = 1,
    out_channels: int = 2,
    encoder_name: str = "resnet18",
    encoder_depth: int = 5,
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
    encoder_weights_path: str | None = None,
) -> Any:
    """2D U-Net from smp; ``encoder_name`` is any smp encoder (``resnet18``, ``efficientnet-b0``, ...)."""
    import segmentation_models_pytorch as smp

    if len(decoder_channels) != encoder_depth:
        raise ConfigError(
            f"model.config.decoder_channels needs encoder_depth={encoder_depth} entries, got {list(decoder_channels)}"
        )
    check_smp_encoder(encoder_name)
    model = smp.Unet(
        encoder_name=encoder_name,
        encoder_weights=None,
        encoder_depth=encoder_depth,
        decoder_channels=tuple(int(c) for c in decoder_channels),
        in_channels=in_channels,
        classes=out_channels,
    )
    if encoder_weights_path:
        load_encoder(model, Path(encoder_weights_path))
    freeze_unused_encoder(model, in_channels, encoder_depth)
    return model


def freeze_unused_encoder(model: Any, in_channels: int, encoder_depth: int) -> None:
    """Stop gradients of the encoder parameters an smp model with ``encoder_depth`` below 5 never uses.

    smp builds every stage of an encoder (a ResNet's ``layer3``/``layer4`` at depth 3) and only runs the
    first ``encoder_depth``; the unused ones stay in the state dict (exports keep their keys) but get no
    gradient, which DDP refuses. A probe of the encoder on a zero image finds them."""
    import torch

    if encoder_depth >= 5:
        return
    side = 2 ** encoder_depth * 2
    probe = torch.zeros(1, in_channels, side, side)
    was_training = model.encoder.training
    model.encoder.eval()  # batch statistics of one zero image would not change anything, but keep them out
    model.encoder.zero_grad(set_to_none=True)
    with torch.enable_grad():
        sum(f.float().sum() for f in model.encoder(probe)).backward()
    for param in model.encoder.parameters():
        if param.grad is None:
            param.requires_grad_(False)
        param.grad = None
    model.encoder.train(was_training)


def check_smp_encoder(encoder_name: str) -> None:
    """Raise :class:`ConfigError` listing some valid names when smp has no encoder ``encoder_name``."""
    import segmentation_models_pytorch as smp

    known = smp.encoders.get_encoder_names()
    if encoder_name not in known:
        raise ConfigError(
            f"model.config.encoder_name {encoder_name!r} is not an smp encoder; e.g. "
            f"{', '.join(sorted(known)[:12])}, ... ({len(known)} in all)"
        )


def load_encoder(model: Any, path: Path) -> None:
    """Load a local encoder state_dict into an smp model's ``encoder`` (at least one tensor must match).

    Raises:
        ModelError: no such file, not a weights-only state_dict, or no tensor fits the encoder.
    """
    import torch

    from medseg.models.export import read_state_dict

    if not path.is_file():
        raise ModelError(f"{path}: encoder weights file not found")
    state = read_state_dict(path)
    # smp encoders override load_state_dict without returning the key report
    result = torch.nn.Module.load_state_dict(model.encoder, state, strict=False)
    loaded = len(state) - len(result.unexpected_keys)
    if loaded == 0:
        raise ModelError(f"{path}: no tensor matches the {type(model.encoder).__name__} encoder")


__all__ = ["build_unet2d", "check_smp_encoder", "load_encoder", "freeze_unused_encoder"]
