"""Apply a 2D network to whole ordinary images: the one code path of ``medseg predict-images`` and of
the validation of ordinary-image training, so both give the same labels for the same image.

Images are ``[H, W, C]`` arrays as :func:`medseg.io.images.read_image` returns them; networks take
``[B, C, H, W]`` float tensors (already normalised) and return logits ``[B, K, H, W]``. Three modes
treat images whose size is not the network's input multiple or larger than the training crop:

- ``whole``: zero-pad bottom and right to the input multiple, one forward pass, crop back;
- ``slide``: ``window`` tiles at ``stride`` (the last tile of a row or column ends at the border),
  padded like ``whole`` when the image is smaller than a tile; logits of overlapping tiles are
  averaged (mmsegmentation's ``slide`` inference);
- ``resize``: bilinear resize to ``size`` (half-pixel centres), ``whole`` there, logits resized back
  bilinearly to ``H x W``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError

MODES = ("whole", "slide", "resize")


def fit_channels(image: np.ndarray, in_channels: int, path: str | os.PathLike[str] = "image") -> np.ndarray:
    """``[H, W, C]`` -> ``[H, W, in_channels]``: gray replicated to 3 channels, RGBA loses alpha.

    Raises:
        InputError: any other channel mismatch (the message names ``path``).

    Example:
        >>> fit_channels(np.zeros((2, 2, 1)), 3).shape
        (2, 2, 3)
    """
    c = image.shape[-1]
    if c == in_channels:
        return image
    if c == 1 and in_channels == 3:
        return np.repeat(image, 3, axis=-1)
    if c == 4 and in_channels == 3:
        return image[..., :3]
    raise InputError(f"{path}: image has {c} channel(s), the model takes {in_channels}")


def pad_to_multiple(chw: np.ndarray, multiple: int | Sequence[int]) -> np.ndarray:
    """Zero-pad a ``[C, H, W]`` array at the bottom and right so that H and W are multiples of ``multiple``.

    Example:
        >>> pad_to_multiple(np.ones((1, 3, 5)), (4, 8)).shape
        (1, 4, 8)
    """
    mh, mw = (multiple, multiple) if isinstance(multiple, int) else (int(multiple[0]), int(multiple[1]))
    h, w = chw.shape[-2:]
    ph, pw = -h % mh, -w % mw
    if not ph and not pw:
        return chw
    return np.pad(chw, ((0, 0), (0, ph), (0, pw)))


def check_mode(mode: str, window: Sequence[int] | None, size: Sequence[int] | None,
               multiple: Sequence[int]) -> None:
    """Refuse a mode without the sizes it needs, or sizes that are not multiples of the network's.

    Raises:
        ConfigError: naming the mode and the size.
    """
    if mode not in MODES:
        raise ConfigError(f"inference mode {mode!r} is not known; valid: {', '.join(MODES)}")
    need = {"slide": ("window", window), "resize": ("size", size)}.get(mode)
    if need is None:
        return
    name, value = need
    if value is None or len(value) != 2:
        raise ConfigError(f"inference mode {mode!r} needs a {name} [H, W] in pixels, got {value}")
    if any(int(v) % int(m) for v, m in zip(value, multiple)):
        raise ConfigError(f"inference {name} {list(value)} must be a multiple of the model's input multiple "
                          f"{list(multiple)}")


def _tiles(length: int, window: int, stride: int) -> list[int]:
    """Tile starts along one axis: every ``stride``, the last one ending at ``length``."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


def image_logits(net: Any, x: Any, *, multiple: Sequence[int], mode: str = "whole",
                 window: Sequence[int] | None = None, stride: Sequence[int] | None = None,
                 size: Sequence[int] | None = None) -> Any:
    """Logits ``[B, K, H, W]`` of a normalised batch ``x [B, C, H, W]`` (a torch tensor) in ``mode``.

    Args:
        net: the 2D network (called as ``net(tensor)``, in the caller's grad / inference mode).
        multiple: the network's input multiple ``(H, W)`` (registry contract).
        window, stride: ``slide`` tile size and step, pixels (stride default: 2/3 of the window).
        size: ``resize`` target ``(H, W)``.
    """
    import torch
    import torch.nn.functional as F

    check_mode(mode, window, size, multiple)
    h, w = int(x.shape[-2]), int(x.shape[-1])

    def whole(t: torch.Tensor) -> torch.Tensor:
        th, tw = int(t.shape[-2]), int(t.shape[-1])
        ph, pw = -th % int(multiple[0]), -tw % int(multiple[1])
        padded = F.pad(t, (0, pw, 0, ph)) if ph or pw else t
        return net(padded)[..., :th, :tw]

    if mode == "whole":
        return whole(x)
    if mode == "resize":
        assert size is not None
        small = F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)
        return F.interpolate(whole(small), size=(h, w), mode="bilinear", align_corners=False)
    assert window is not None
    wh, ww = int(window[0]), int(window[1])
    sh, sw = (int(s) for s in (stride or (max(1, wh * 2 // 3), max(1, ww * 2 // 3))))
    total: torch.Tensor | None = None
    count = torch.zeros((1, 1, h, w), dtype=x.dtype, device=x.device)
    for top in _tiles(h, wh, sh):
        for left in _tiles(w, ww, sw):
            tile = x[..., top:top + wh, left:left + ww]
            out = whole(tile)
            if total is None:
                total = torch.zeros((x.shape[0], out.shape[1], h, w), dtype=out.dtype, device=x.device)
            total[..., top:top + wh, left:left + ww] += out
            count[..., top:top + wh, left:left + ww] += 1
    assert total is not None
    return total / count


def image_tensor(image: np.ndarray, normalization: dict[str, Any] | None, in_channels: int,
                 path: str | os.PathLike[str] = "image") -> np.ndarray:
    """An ``[H, W, C]`` image as the network's normalised ``[in_channels, H, W]`` float32 input
    (channels fitted with :func:`fit_channels`, each normalised per the intensity vocabulary)."""
    from medseg.transforms.intensity import normalize_channels

    fitted = fit_channels(image, in_channels, path)
    return np.ascontiguousarray(np.moveaxis(normalize_channels(fitted, normalization, channel_axis=-1), -1, 0),
                                dtype=np.float32)


def ordered_segments(masks: list[np.ndarray], classes: list[int], scores: list[float], shape: tuple[int, int],
                     ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """``(ids [H, W] uint16, table)`` of boolean ``masks`` with their classes and scores: ids 1, 2, ... in
    decreasing score, the higher score winning an overlap; segments left without a pixel are dropped.

    The one ordering of segment predictions (``predict-images`` of instance / panoptic exports and the
    validation of instance training)."""
    order = sorted(range(len(masks)), key=lambda n: -scores[n])
    ids = np.zeros(shape, np.uint16)
    for rank in range(len(order) - 1, -1, -1):  # lowest score first: the higher score wins an overlap
        ids[masks[order[rank]]] = rank + 1
    present = set(np.unique(ids).tolist())
    table = [{"id": rank + 1, "class": int(classes[n]), "score": round(float(scores[n]), 5)}
             for rank, n in enumerate(order) if rank + 1 in present]
    return ids, table


__all__ = ["MODES", "fit_channels", "pad_to_multiple", "check_mode", "image_logits", "image_tensor",
           "ordered_segments"]
