"""2D augmentation of ordinary-image training pairs: random scale, random crop, horizontal flip.

One pair is a normalised image ``[C, H, W]`` float32 and its mask ``[H, W]`` of train indices
(``ignore_index`` where unlabelled). Images are resized bilinearly (half-pixel centres, as
OpenCV's ``INTER_LINEAR`` and mmsegmentation's ``RandomResize``), masks by nearest neighbour,
so no new class value is ever made up. A crop larger than the scaled image is padded: 0 for the
normalised image (the mean), ``ignore_index`` for the mask, so padding never enters the loss.

Example:
    >>> aug = RandomScaleCropFlip(crop_size=(4, 4), scale_range=(1.0, 1.0), hflip=False, ignore_index=255)
    >>> img, mask = aug(np.zeros((3, 2, 2), np.float32), np.ones((2, 2), np.int64), np.random.default_rng(0))
    >>> img.shape, int((mask == 255).sum())
    ((3, 4, 4), 12)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def resize_pair(image: np.ndarray, mask: np.ndarray | None, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize ``image [C, H, W]`` bilinearly and ``mask [H, W]`` by nearest neighbour to ``size (H, W)``."""
    import torch
    import torch.nn.functional as F

    if tuple(image.shape[-2:]) == tuple(size):
        return image, mask
    img = F.interpolate(torch.from_numpy(np.ascontiguousarray(image))[None], size=size, mode="bilinear",
                        align_corners=False)[0].numpy()
    if mask is None:
        return img, None
    m = F.interpolate(torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int32))[None, None].float(), size=size,
                      mode="nearest")[0, 0].numpy().astype(mask.dtype)
    return img, m


@dataclass(frozen=True)
class RandomScaleCropFlip:
    """Random scale (factor uniform in ``scale_range``), random ``crop_size`` window, left-right flip.

    Args:
        crop_size: ``(H, W)`` of every training sample, pixels.
        scale_range: ``(low, high)`` resize factors of the whole image.
        hflip: flip left-right with probability 0.5.
        ignore_index: mask value of padding.
    """

    crop_size: Sequence[int]
    scale_range: Sequence[float] = (0.5, 2.0)
    hflip: bool = True
    ignore_index: int = 255

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One augmented ``(image [C, ch, cw], mask [ch, cw])`` pair, drawn with ``rng``."""
        ch, cw = int(self.crop_size[0]), int(self.crop_size[1])
        lo, hi = float(self.scale_range[0]), float(self.scale_range[1])
        factor = rng.uniform(lo, hi) if hi > lo else lo
        h, w = image.shape[-2:]
        size = (max(1, int(round(h * factor))), max(1, int(round(w * factor))))
        image, scaled = resize_pair(image, mask, size)
        assert scaled is not None
        h, w = size
        top = int(rng.integers(0, h - ch + 1)) if h > ch else 0
        left = int(rng.integers(0, w - cw + 1)) if w > cw else 0
        image = image[:, top:top + ch, left:left + cw]
        scaled = scaled[top:top + ch, left:left + cw]
        ph, pw = ch - image.shape[1], cw - image.shape[2]
        if ph or pw:
            image = np.pad(image, ((0, 0), (0, ph), (0, pw)))
            scaled = np.pad(scaled, ((0, ph), (0, pw)), constant_values=self.ignore_index)
        if self.hflip and rng.random() < 0.5:
            image, scaled = image[:, :, ::-1], scaled[:, ::-1]
        return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(scaled)


__all__ = ["RandomScaleCropFlip", "resize_pair"]
