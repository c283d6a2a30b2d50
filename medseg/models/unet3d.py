"""``unet3d``: MONAI DynUNet (nnU-Net's network, optional deep supervision) or MONAI UNet.

Input ``[B, C, X, Y, Z]`` float, output logits ``[B, out_channels, X, Y, Z]``. Every
spatial size must be divisible by the product of the strides along that axis
(16 for the default 5 levels). With ``deep_supervision`` the DynUNet returns, in
training mode only, a tensor ``[B, 1 + deep_supr_num, out_channels, X, Y, Z]``
(auxiliary heads upsampled); in eval mode it always returns the plain logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medseg.errors import ConfigError
from medseg.models.registry import register_model

ARCHS = ("dynunet", "unet")


def _strides(strides: Sequence[Any] | None, levels: int) -> list[list[int]]:
    if strides is None:
        return [[1, 1, 1]] + [[2, 2, 2]] * (levels - 1)
    out = []
    for s in strides:
        out.append([int(s)] * 3 if isinstance(s, (int, float)) else [int(v) for v in s])
    return out


def _input_multiple(config: dict[str, Any]) -> list[int]:
    return divisor(config)


@register_model(
    "unet3d", spatial_dims=3, description="3D U-Net: MONAI DynUNet (nnU-Net style) or MONAI UNet",
    input_multiple=_input_multiple,
    tiny_config={"in_channels": 1, "out_channels": 3, "filters": [4, 8, 16]},
)
def build_unet3d(
    *,
    in_channels: int = 1,
    out_channels: int = 2,
    arch: str = "dynunet",
    filters: Sequence[int] = (32, 64, 128, 256, 320),
    strides: Sequence[Any] | None = None,
    kernel_sizes: Sequence[Any] | None = None,
    deep_supervision: bool = False,
    deep_supr_num: int = 1,
    norm: str = "instance",
    dropout: float = 0.0,
    num_res_units: int = 2,
) -> Any:
    """3D U-Net. ``filters``: feature channels per level (the first level keeps full resolution).

    ``strides``: per level, an int or ``[sx, sy, sz]`` (default 1 then 2s, nnU-Net style,
    anisotropic ``[2, 2, 1]`` for thick slices); ``kernel_sizes`` likewise (default 3).
    ``arch="unet"`` uses MONAI's residual UNet (``num_res_units``) with the same filters.
    """
    from monai.networks.nets import DynUNet, UNet

    levels = len(filters)
    if levels < 2:
        raise ConfigError(f"model.config.filters needs at least 2 levels, got {list(filters)}")
    if arch not in ARCHS:
        raise ConfigError(f"model.config.arch {arch!r} is not known; valid: {', '.join(ARCHS)}")
    stride_list = _strides(strides, levels)
    if len(stride_list) != levels:
        raise ConfigError(f"model.config.strides needs {levels} entries (one per filter level), got {len(stride_list)}")
    if arch == "unet":
        return UNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=tuple(int(f) for f in filters),
            strides=tuple(tuple(s) for s in stride_list[1:]),
            num_res_units=num_res_units,
            norm=norm,
            dropout=dropout,
        )
    kernels = _strides(kernel_sizes, levels) if kernel_sizes is not None else [[3, 3, 3]] * levels
    if len(kernels) != levels:
        raise ConfigError(f"model.config.kernel_sizes needs {levels} entries, got {len(kernels)}")
    if deep_supervision and not 1 <= deep_supr_num <= levels - 2:
        raise ConfigError(f"model.config.deep_supr_num must be in 1..{levels - 2}, got {deep_supr_num}")
    return DynUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernels,
        strides=stride_list,
        upsample_kernel_size=stride_list[1:],
        filters=[int(f) for f in filters],
        norm_name=norm,
        dropout=dropout or None,
        deep_supervision=deep_supervision,
        deep_supr_num=deep_supr_num,
        res_block=False,
    )


def divisor(config: dict[str, Any]) -> list[int]:
    """Per-axis factor every input size must be a multiple of, for a ``unet3d`` config."""
    filters = config.get("filters", (32, 64, 128, 256, 320))
    stride_list = _strides(config.get("strides"), len(filters))
    out = [1, 1, 1]
    for s in stride_list:
        out = [a * b for a, b in zip(out, s)]
    return out


__all__ = ["build_unet3d", "divisor", "ARCHS"]
