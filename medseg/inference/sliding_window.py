"""Sliding-window inference with Gaussian blending, streamed slab by slab.

The image ``[C, X, Y, Z]`` is covered by overlapping windows (MONAI's window placement:
stride ``int(patch * (1 - overlap))``, the last window flush with the end). Each window's
output is weighted by a Gaussian importance map and accumulated *in place* into a
preallocated buffer that spans only one window depth along ``Z``; windows are visited in
order of their ``Z`` start, and as soon as no later window can touch a range of slices that
range is normalised (divided by the summed weights) and handed to the caller. The full
``[num_classes, X, Y, Z]`` float32 output therefore never exists unless the caller asks
for it (:func:`sliding_window_average`); :func:`sliding_window_argmax` keeps only
``uint8``/``uint16`` labels.

Axis order everywhere: ``[C, X, Y, Z]`` (channel first, then the volume's ``i, j, k``).
A 2D network is run through the same code with a window depth of 1 (one slice per
window), see :func:`as_window_fn`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from medseg.errors import ConfigError, InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

WindowFn = Callable[["torch.Tensor"], "torch.Tensor"]
"""Maps a batch of windows ``[B, C_in, px, py, pz]`` to outputs ``[B, C_out, px, py, pz]``."""


def scan_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Window start indices along one axis (MONAI ``dense_patch_slices`` placement).

    ``size`` and ``patch`` in voxels (``patch <= size``). The stride is
    ``int(patch * (1 - overlap))`` (at least 1; ``patch`` when the window spans the axis);
    the last window is moved back so that it ends at ``size``.

    Example:
        >>> scan_starts(10, 4, 0.5)
        [0, 2, 4, 6]
        >>> scan_starts(11, 4, 0.5)
        [0, 2, 4, 6, 7]
    """
    if patch > size:
        raise InputError(f"window of {patch} voxels is larger than the axis ({size} voxels)")
    if patch == size:
        return [0]
    stride = max(int(patch * (1 - overlap)), 1)
    count = next(d for d in range(math.ceil(size / stride)) if d * stride + patch >= size) + 1
    return [min(d * stride, size - patch) for d in range(count)]


def gaussian_importance_map(
    patch_size: Sequence[int], *, sigma_scale: float = 0.125, device: "torch.device | str" = "cpu"
) -> "torch.Tensor":
    """Separable Gaussian weights of shape ``patch_size`` (float32), peak 1 at the centre.

    ``sigma = sigma_scale * patch`` voxels per axis; values are clamped below at
    ``max(min, 1e-3)`` so that borders keep a small positive weight (as MONAI does).
    """
    import torch

    out: torch.Tensor | None = None
    for size in patch_size:
        sigma = sigma_scale * size
        x = torch.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1, dtype=torch.float32, device=device)
        g = torch.exp(x**2 / (-2 * sigma**2))
        out = g if out is None else out.unsqueeze(-1) * g
    assert out is not None
    floor = max(float(out.min()), 1e-3)
    return out.clamp_(min=floor)


def _check(
    image: "torch.Tensor", patch_size: Sequence[int], overlap: float | Sequence[float], batch_size: int
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    if image.ndim != 4:
        raise InputError(f"sliding window expects an image [C, X, Y, Z], got shape {tuple(image.shape)}")
    patch = tuple(int(p) for p in patch_size)
    if len(patch) != 3 or any(p < 1 for p in patch):
        raise ConfigError(f"inference.patch_size must be 3 positive integers [X, Y, Z], got {list(patch_size)}")
    overlaps = tuple(float(o) for o in (overlap if isinstance(overlap, Sequence) else (overlap,) * 3))
    if len(overlaps) != 3 or not all(0.0 <= o < 1.0 for o in overlaps):
        raise ConfigError(f"inference.overlap must be in [0, 1) (one value or one per axis), got {overlap}")
    if int(batch_size) < 1:
        raise ConfigError(f"inference.batch_size must be >= 1, got {batch_size}")
    return patch, overlaps


def _pad_to_patch(image: "torch.Tensor", patch: tuple[int, ...]) -> tuple["torch.Tensor", list[tuple[int, int]]]:
    """Zero-pad axes smaller than the window (half before, rest after, like MONAI)."""
    import torch.nn.functional as F

    pads = []
    for size, p in zip(image.shape[1:], patch):
        diff = max(p - size, 0)
        pads.append((diff // 2, diff - diff // 2))
    if not any(a or b for a, b in pads):
        return image, pads
    flat = [v for pair in reversed(pads) for v in pair]  # F.pad wants the last axis first
    return F.pad(image, flat, mode="constant", value=0.0), pads


def iter_slabs(
    image: "torch.Tensor",
    window_fn: WindowFn,
    patch_size: Sequence[int],
    *,
    overlap: float | Sequence[float] = 0.5,
    batch_size: int = 1,
    sigma_scale: float = 0.125,
    mode: str = "gaussian",
    device: "torch.device | str | None" = None,
    normalize: bool = True,
) -> Iterator[tuple[int, int, "torch.Tensor"]]:
    """Run ``window_fn`` over ``image`` and yield finished slabs ``(z0, z1, out)``.

    Args:
        image: ``[C_in, X, Y, Z]`` float tensor (on any device).
        window_fn: batch of windows ``[B, C_in, px, py, pz]`` -> ``[B, C_out, px, py, pz]``.
        patch_size: window size ``(px, py, pz)`` in voxels; axes of the image smaller than
            the window are zero-padded (and cropped again).
        overlap: fraction of a window shared with its neighbour, in ``[0, 1)``; one value
            or one per axis.
        batch_size: windows per call of ``window_fn``.
        sigma_scale: Gaussian sigma as a fraction of the window size.
        mode: ``"gaussian"`` or ``"constant"`` blending.
        device: where windows are computed and accumulated (default: the image's device).
        normalize: divide by the summed weights. Without it the slabs hold weighted sums,
            which have the same argmax over channels (the weights are positive and shared by
            all channels) and save one pass.

    Yields:
        ``(z0, z1, out)`` with ``out`` of shape ``[C_out, X, Y, z1 - z0]`` (float32, on
        ``device``): the weighted average of every window output over slices
        ``z0 <= z < z1``. Slabs come in increasing order and cover ``[0, Z)`` exactly once.
        ``out`` is a view into a reused buffer: copy it if you keep it.
    """
    import torch

    patch, overlaps = _check(image, patch_size, overlap, batch_size)
    device = torch.device(device) if device is not None else image.device
    size = tuple(int(s) for s in image.shape[1:])
    padded, pads = _pad_to_patch(image, patch)
    psize = tuple(int(s) for s in padded.shape[1:])
    if mode == "gaussian":
        weight = gaussian_importance_map(patch, sigma_scale=sigma_scale, device=device)
    elif mode == "constant":
        weight = torch.ones(patch, dtype=torch.float32, device=device)
    else:
        raise ConfigError(f"blending mode {mode!r} is not known; use 'gaussian' or 'constant'")
    xs, ys, zs = (scan_starts(psize[a], patch[a], overlaps[a]) for a in range(3))
    # windows ordered by z start; one buffer one window deep (z from zs[g] to zs[g] + pz)
    out_buf: torch.Tensor | None = None
    wsum = torch.zeros((psize[0], psize[1], patch[2]), dtype=torch.float32, device=device)
    done = 0  # padded slices [0, done) have been yielded
    crop_x = slice(pads[0][0], pads[0][0] + size[0])
    crop_y = slice(pads[1][0], pads[1][0] + size[1])
    z_lo_pad, z_hi = pads[2][0], pads[2][0] + size[2]
    xy = list(itertools.product(xs, ys))
    # the weights one z-group of windows adds are the same for every group: sum them once
    group_weight = torch.zeros_like(wsum)
    for x, y in xy:
        group_weight[x : x + patch[0], y : y + patch[1], :] += weight
    base = zs[0]
    for g, z0 in enumerate(zs):
        if z0 != base:  # shift the buffers so that they start at z0
            shift = z0 - base
            keep = patch[2] - shift
            assert out_buf is not None
            out_buf[..., :keep] = out_buf[..., shift:].clone()
            out_buf[..., keep:] = 0
            if normalize:
                wsum[..., :keep] = wsum[..., shift:].clone()
                wsum[..., keep:] = 0
            base = z0
        for start in range(0, len(xy), batch_size):
            chunk = xy[start : start + batch_size]
            windows = torch.stack(
                [padded[:, x : x + patch[0], y : y + patch[1], z0 : z0 + patch[2]] for x, y in chunk]
            ).to(device=device, dtype=torch.float32)
            pred = window_fn(windows)
            if pred.ndim != 5 or pred.shape[0] != len(chunk) or tuple(pred.shape[2:]) != patch:
                raise InputError(
                    f"window function returned shape {tuple(pred.shape)} for windows {tuple(windows.shape)}; "
                    "expected [B, C_out, *patch_size]"
                )
            if out_buf is None:
                out_buf = torch.zeros((pred.shape[1], psize[0], psize[1], patch[2]), dtype=torch.float32, device=device)
            pred = pred.to(torch.float32)
            for (x, y), p in zip(chunk, pred):
                out_buf[:, x : x + patch[0], y : y + patch[1], :].addcmul_(p, weight)
        if normalize:
            wsum += group_weight
        # slices before the next window start are final
        final_end = zs[g + 1] if g + 1 < len(zs) else base + patch[2]
        assert out_buf is not None
        lo, hi = max(done, z_lo_pad), min(final_end, z_hi)
        if hi > lo:
            seg = out_buf[:, crop_x, crop_y, lo - base : hi - base]
            if normalize:
                seg /= wsum[crop_x, crop_y, lo - base : hi - base]
            yield lo - z_lo_pad, hi - z_lo_pad, seg
        done = final_end


def sliding_window_average(
    image: "torch.Tensor",
    window_fn: WindowFn,
    patch_size: Sequence[int],
    *,
    overlap: float | Sequence[float] = 0.5,
    batch_size: int = 1,
    sigma_scale: float = 0.125,
    mode: str = "gaussian",
    device: "torch.device | str | None" = None,
    out_device: "torch.device | str | None" = None,
) -> "torch.Tensor":
    """The blended window outputs for the whole image, ``[C_out, X, Y, Z]`` float32.

    Holds every output channel at full size: use it when probabilities are wanted.
    Arguments as in :func:`iter_slabs`; ``out_device`` is where the result lives
    (default: the image's device).
    """
    import torch

    result: torch.Tensor | None = None
    out_device = torch.device(out_device) if out_device is not None else image.device
    for z0, z1, seg in iter_slabs(
        image, window_fn, patch_size, overlap=overlap, batch_size=batch_size,
        sigma_scale=sigma_scale, mode=mode, device=device,
    ):
        if result is None:
            result = torch.empty((seg.shape[0], *image.shape[1:]), dtype=torch.float32, device=out_device)
        result[..., z0:z1] = seg
    assert result is not None
    return result


def sliding_window_argmax(
    image: "torch.Tensor",
    window_fn: WindowFn,
    patch_size: Sequence[int],
    *,
    overlap: float | Sequence[float] = 0.5,
    batch_size: int = 1,
    sigma_scale: float = 0.125,
    mode: str = "gaussian",
    device: "torch.device | str | None" = None,
) -> np.ndarray:
    """Labels ``[X, Y, Z]`` (uint8, uint16 beyond 255 classes): argmax over channels, per slab.

    Only one window-deep slab of class scores exists at a time. Arguments as in
    :func:`iter_slabs`.
    """
    labels: np.ndarray | None = None
    for z0, z1, seg in iter_slabs(
        image, window_fn, patch_size, overlap=overlap, batch_size=batch_size,
        sigma_scale=sigma_scale, mode=mode, device=device, normalize=False,
    ):
        if labels is None:
            dtype = np.uint8 if seg.shape[0] <= 256 else np.uint16
            labels = np.empty(tuple(image.shape[1:]), dtype=dtype)
        labels[..., z0:z1] = argmax_channels(seg).cpu().numpy()
    assert labels is not None
    return labels


def argmax_channels(scores: "torch.Tensor") -> "torch.Tensor":
    """Index of the largest channel of ``[C, ...]`` scores (first one on ties): uint8, int32 beyond 256 channels.

    For up to 32 channels a running maximum (C elementwise passes) is used: several times
    faster than ``torch.argmax(0)`` on the strided slabs of :func:`iter_slabs`.
    """
    import torch

    n = scores.shape[0]
    dtype = torch.uint8 if n <= 256 else torch.int32
    if n > 32:
        out = scores.argmax(0).to(dtype)
    else:
        best = scores[0].clone()
        out = torch.zeros(scores.shape[1:], dtype=dtype, device=scores.device)
        for c in range(1, n):
            better = scores[c] > best
            out.masked_fill_(better, c)
            torch.maximum(best, scores[c], out=best)
    return out


def as_window_fn(
    model: "torch.nn.Module | Sequence[torch.nn.Module]",
    *,
    spatial_dims: int = 3,
    softmax: bool = True,
    tta_flips: bool = False,
) -> WindowFn:
    """Wrap one model (or an ensemble) as a window function.

    Args:
        model: network(s) in eval mode returning logits; several models are averaged
            (after softmax when ``softmax`` is set).
        spatial_dims: 3 for networks on ``[B, C, X, Y, Z]``; 2 for networks on
            ``[B, C, X, Y]``, run on windows of depth 1 (the depth axis is folded into the batch).
        softmax: convert logits to probabilities before averaging.
        tta_flips: mirror test-time augmentation: average over every combination of flips
            of the in-plane axes (and ``Z`` for 3D models): 8 passes in 3D, 4 in 2D.
    """
    import torch

    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    axes = (2, 3, 4) if spatial_dims == 3 else (2, 3)
    flip_sets: list[tuple[int, ...]] = [()]
    if tta_flips:
        flip_sets = [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]

    def run(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if spatial_dims == 3:
            y = net(x)
        else:  # [B, C, X, Y, Z] -> [B*Z, C, X, Y] -> back
            b, c, px, py, pz = x.shape
            y = net(x.permute(0, 4, 1, 2, 3).reshape(b * pz, c, px, py))
            y = y.reshape(b, pz, y.shape[1], px, py).permute(0, 2, 3, 4, 1)
        if isinstance(y, (list, tuple)):
            y = y[0]
        y = y.float()
        return torch.softmax(y, dim=1) if softmax else y

    def window_fn(windows: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        with torch.inference_mode():
            for net in models:
                for flips in flip_sets:
                    x = windows.flip(flips) if flips else windows
                    y = run(net, x)
                    if flips:
                        y = y.flip(flips)
                    total = y if total is None else total.add_(y)
            assert total is not None
            n = len(models) * len(flip_sets)
            return total.div_(n) if n > 1 else total

    return window_fn


__all__ = [
    "WindowFn",
    "scan_starts",
    "gaussian_importance_map",
    "iter_slabs",
    "sliding_window_average",
    "sliding_window_argmax",
    "argmax_channels",
    "as_window_fn",
]
