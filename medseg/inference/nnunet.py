"""nnU-Net v2 inference, reproduced: :class:`NnunetSegmenter` gives nnU-Net's own results.

Array axes: nnU-Net works on SimpleITK's ``[z, y, x]`` order, the reverse of a
:class:`~medseg.Volume`'s ``[i, j, k]``; spacings in mm follow the same order. The steps
are nnU-Net's (``DefaultPreprocessor``, ``nnUNetPredictor``, ``export_prediction``), with
the same dtypes so that probabilities agree to float16 rounding:

1. ``transpose_forward`` of the plans; crop to the nonzero bounding box (holes filled);
2. per-channel normalisation (``CTNormalization`` from the plans' foreground intensity
   properties, ``ZScoreNormalization`` with or without the nonzero mask, ...), then
   resampling to the configuration's spacing: cubic spline, or for anisotropic data
   (max/min spacing > 3) in-plane cubic and nearest along the coarse axis;
3. padding to the patch size, Gaussian-weighted sliding window (``tile_step_size``,
   sigma = patch/8) accumulating logits in float16, mirroring over the allowed axes,
   logits averaged over folds;
4. logits resampled back to the cropped input grid (linear, separate coarse axis as above)
   and reduced to labels: for softmax models by :func:`linear_labels`, which takes the
   model-grid argmax wherever the interpolation's whole 2x2x2 block agrees (exact for linear
   resampling) and interpolates only in the band where it does not: the block's two leading
   channels where a bound shows no other can win, every channel elsewhere; for region
   models the same per region on the sign of its logit, painting ``regions_class_order`` where
   the sigmoid exceeds 0.5; with probabilities asked for, *one channel at a time* in full.
   Then un-cropped and transposed back. All classes at the input's
   resolution are held only when probabilities are asked for.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from medseg.errors import InputError, ModelError
from medseg.volume import Volume

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
ANISO_THRESHOLD = 3.0  # nnU-Net's: spacing max/min above this resamples the coarse axis separately
CHUNK_VOXELS = 1 << 20  # boundary voxels whose every channel is interpolated at once (x channels x 4 bytes)
#: at most this many threads share the export's slabs and band chunks (numpy releases the GIL in them)
EXPORT_THREADS = 4
#: the smallest band chunk made to give every thread some (below it, the per-chunk overhead dominates)
MIN_CHUNK_VOXELS = 1 << 16


def _export_threads() -> int:
    """Threads for the export's independent slabs and chunks: one per available core, at most
    :data:`EXPORT_THREADS`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(EXPORT_THREADS, cores))


def _export_pool() -> Any:
    """A pool of :func:`_export_threads` threads; each job writes its own part of the output."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=_export_threads())


# -- preprocessing -----------------------------------------------------------------------
def nonzero_bbox(data: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    """Half-open bounding box ``[[start, end], ...]`` of the nonzero region of ``data`` ``[C, *spatial]``
    (holes filled, any channel), and that mask. An all-zero image keeps its full extent."""
    from scipy.ndimage import binary_fill_holes

    mask = binary_fill_holes(np.any(data != 0, axis=0))
    bbox = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
        bbox.append([int(hit[0]), int(hit[-1]) + 1] if hit.size else [0, mask.shape[axis]])
    return bbox, mask


def _normalize(image: np.ndarray, scheme: str, *, use_mask: bool, mask: np.ndarray, props: dict[str, Any]) -> np.ndarray:
    """One channel normalised as nnU-Net's scheme ``scheme`` (float32, in place where nnU-Net is)."""
    image = image.astype(np.float32, copy=False)
    eps = 1e-8
    if scheme == "CTNormalization":
        np.clip(image, props["percentile_00_5"], props["percentile_99_5"], out=image)
        image -= props["mean"]
        image /= max(props["std"], eps)
    elif scheme == "ZScoreNormalization":
        if use_mask:
            values = image[mask]
            mean, std = values.mean(), values.std()
            image[mask] = (values - mean) / max(std, eps)
        else:
            mean, std = image.mean(), image.std()
            image -= mean
            image /= max(std, eps)
    elif scheme == "NoNormalization":
        pass
    elif scheme == "RescaleTo01Normalization":
        image -= image.min()
        image /= np.clip(image.max(), a_min=eps, a_max=None)
    elif scheme == "RGBTo01Normalization":
        image /= 255.0
    else:
        raise ModelError(f"plans.json: normalisation scheme {scheme!r} is not supported; known: CTNormalization, "
                         "ZScoreNormalization, NoNormalization, RescaleTo01Normalization, RGBTo01Normalization")
    return image


def separate_axis(current: Sequence[float], new: Sequence[float], force: bool | None = None) -> int | None:
    """The coarse axis nnU-Net resamples separately (nearest) for anisotropic spacings, or ``None``.

    Example:
        >>> separate_axis([5.0, 1.0, 1.0], [2.0, 1.0, 1.0]), separate_axis([1.0, 1.0, 1.0], [1.5, 1.5, 1.5])
        (0, None)
    """
    def lowres(spacing: Sequence[float]) -> np.ndarray:
        s = np.asarray(spacing, dtype=float)
        return np.where(max(s) / s == 1)[0]

    if force is not None:
        axes = lowres(current) if force else None
    elif max(current) / min(current) > ANISO_THRESHOLD:
        axes = lowres(current)
    elif max(new) / min(new) > ANISO_THRESHOLD:
        axes = lowres(new)
    else:
        axes = None
    return int(axes[0]) if axes is not None and len(axes) == 1 else None


def _resize(image: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """``skimage.transform.resize(image, shape, order, mode="edge", anti_aliasing=False)`` (float64)."""
    from scipy import ndimage

    if tuple(image.shape) == tuple(shape):
        return image.copy()
    zoom = [n / o for n, o in zip(shape, image.shape)]
    out = ndimage.zoom(image, zoom, order=order, mode="nearest", grid_mode=True)
    if order > 0:
        np.clip(out, image.min(), image.max(), out=out)
    return out


def resample_channel(image: np.ndarray, shape: Sequence[int], current: Sequence[float], new: Sequence[float], *,
                     order: int = 3, order_z: int = 0, force_separate_z: bool | None = None) -> np.ndarray:
    """One channel resampled to ``shape`` as nnU-Net's ``resample_data_or_seg`` (float64 result).

    Spacings in mm, in the array's axis order; with a separate axis (:func:`separate_axis`)
    every slice across it is resized with ``order`` and that axis with ``order_z``.
    """
    from scipy.ndimage import map_coordinates

    shape = [int(n) for n in shape]
    if list(image.shape) == shape:
        return image
    image = image.astype(float, copy=False)
    axis = separate_axis(current, new, force_separate_z)
    if axis is None:
        return _resize(image, shape, order)
    plane = [n for a, n in enumerate(shape) if a != axis]
    tmp = list(shape)
    tmp[axis] = image.shape[axis]
    here = np.zeros(tmp)
    for s in range(image.shape[axis]):
        index = tuple(s if a == axis else slice(None) for a in range(3))
        here[index] = _resize(image[index], plane, order)
    if image.shape[axis] == shape[axis]:
        return here
    grids = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(float)
    for a in range(3):
        grids[a] = here.shape[a] / shape[a] * (grids[a] + 0.5) - 0.5
    return map_coordinates(here, grids, order=order_z, mode="nearest")


def _axis_taps(n_in: int, n_out: int, linear: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Input taps ``(low, high, weight of high)`` of each output index along one axis, as
    :func:`_resize` (``ndimage.zoom``, ``grid_mode=True``, ``mode="nearest"``) or, for a nearest
    axis, the order-0 ``map_coordinates`` of :func:`resample_channel` compute them."""
    from scipy.ndimage import map_coordinates

    coords = n_in / n_out * (np.arange(n_out) + 0.5) - 0.5
    if n_in == n_out:
        idx = np.arange(n_out)
        return idx, idx, np.zeros(n_out)
    if not linear:  # the index order-0 interpolation picks, taken from scipy itself (its rounding of ties)
        idx = map_coordinates(np.arange(n_in, dtype=float), coords[None], order=0, mode="nearest").astype(np.int64)
        return idx, idx, np.zeros(n_out)
    low = np.floor(coords)
    weight = coords - low
    low_i = np.clip(low.astype(np.int64), 0, n_in - 1)
    high_i = np.clip(low.astype(np.int64) + 1, 0, n_in - 1)
    return low_i, high_i, weight


def _argmax(values: np.ndarray) -> np.ndarray:
    return values.argmax(0)


def positive(values: np.ndarray) -> np.ndarray:
    """``values[0] > 0`` as 0/1: a region's decision (sigmoid above 0.5) for :func:`linear_labels`."""
    return (values[0] > 0).astype(np.uint8)


#: a model-grid voxel whose decision margin is below this (absolute, plus the same relative to the
#: value) goes to the band: float16 rounding of an interpolated value could turn its decision there
MARGIN_ABS, MARGIN_REL = 1e-2, 4e-3
#: above this share of band voxels, resampling channel by channel is cheaper (noisy label maps)
MAX_BAND_SHARE = 0.3


class _Decisions:
    """Per model-grid voxel of ``[C, *grid]`` logits: the decision (``labels``), whether it is clear,
    and for argmax models the three largest logits (``top``, float32, descending), the channels of the
    two largest (``lead``) and the margin a decision needs there (``need``).

    Margins are float32 differences of the float16 logits; "clear" means above ``need`` =
    :data:`MARGIN_ABS` + :data:`MARGIN_REL` x the voxel's largest absolute logit.
    """

    def __init__(self, logits: np.ndarray, decide: Any) -> None:
        self.top = self.lead = self.need = None
        if decide is not _argmax or logits.shape[0] < 3:
            self.labels = decide(logits)
            if decide is _argmax and logits.shape[0] == 2:
                gap = np.abs(logits[0].astype(np.float32) - logits[1])
                scale = np.abs(logits).max(axis=0).astype(np.float32)
            else:
                gap = scale = np.abs(logits[0].astype(np.float32))
            self.clear = gap > MARGIN_ABS + MARGIN_REL * scale
            return
        self.top = np.empty((3, *logits.shape[1:]), dtype=np.float32)
        self.lead = np.empty((2, *logits.shape[1:]), dtype=np.int16)
        self.need = np.empty(logits.shape[1:], dtype=np.float32)
        step = max(1, CHUNK_VOXELS // 4 // int(np.prod(logits.shape[2:])))

        def slab(z: int) -> None:  # CHUNK_VOXELS / 4 model-grid voxels (cache)
            _top3(logits[:, z:z + step], self.top[:, z:z + step], self.lead[:, z:z + step], self.need[z:z + step])

        with _export_pool() as pool:
            list(pool.map(slab, range(0, logits.shape[1], step)))
        self.labels = self.lead[0]
        self.clear = self.top[0] - self.top[1] > self.need


def _order_key(bits: np.ndarray) -> np.ndarray:
    """Float16 bit patterns (``int16``) to integers in the floats' order, and back (its own inverse):
    negative floats have their magnitude bits flipped."""
    return bits ^ ((bits >> 15) & 0x7FFF)


def _top3(logits: np.ndarray, top: np.ndarray, lead: np.ndarray, need: np.ndarray) -> None:
    """Into ``top [3, ...]``, ``lead [2, ...]`` and ``need``: the three largest of float16 ``logits [C, ...]``
    (as float32, descending), the channels of the two largest (ties in any order: a tie is never clear)
    and :data:`MARGIN_ABS` + :data:`MARGIN_REL` x the largest absolute logit. One channel at a time on
    16-bit order keys, in numpy (``torch.topk`` is several times slower, and its two threads
    stall when another process holds a core)."""
    half = logits.dtype == np.float16  # else (float32 logits) the values are their own keys

    def channel(c: int) -> np.ndarray:
        return _order_key(logits[c].view(np.int16)) if half else logits[c].astype(np.float32)

    def value(key: np.ndarray) -> np.ndarray:
        return _order_key(key).view(np.float16) if half else key

    v0, v1 = channel(0), channel(1)
    second = v1 > v0
    i0, i1 = second.astype(np.int16), (~second).astype(np.int16)
    v0, v1 = np.maximum(v0, v1), np.minimum(v0, v1)
    v2, low = np.full_like(v0, np.iinfo(np.int16).min if half else -np.inf), v1
    for c in range(2, logits.shape[0]):
        x = channel(c)
        low = np.minimum(low, x)
        above0, above1 = x > v0, x > v1
        i1 = np.where(above0, i0, np.where(above1, np.int16(c), i1))
        i0 = np.where(above0, np.int16(c), i0)
        mid = np.minimum(v0, x)
        np.maximum(v0, x, out=v0)
        v2 = np.maximum(v2, np.minimum(v1, mid))
        v1 = np.maximum(v1, mid)
    for k, v in enumerate((v0, v1, v2)):
        top[k] = value(v)
    lead[0], lead[1] = i0, i1
    need[...] = MARGIN_ABS + MARGIN_REL * np.maximum(np.abs(top[0]), np.abs(value(low)))


def _block_reduce(volume: np.ndarray, size: Sequence[int], op: Any) -> np.ndarray:
    """``op`` (``np.minimum``, ``np.maximum``) over each voxel's block: itself and its +1 neighbour along
    each axis where ``size`` is 2, the last voxel of an axis with itself (scipy's size-2 filters with
    ``origin=-1``, ``mode="nearest"``), by shifted slices."""
    out = volume.copy()
    for a, n in enumerate(size):
        if n == 2 and volume.shape[a] > 1:
            low = tuple(slice(0, -1) if b == a else slice(None) for b in range(3))
            high = tuple(slice(1, None) if b == a else slice(None) for b in range(3))
            op(out[low], out[high], out=out[low])
    return out


def _block_tables(taps: list, grid: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per axis: for each model-grid index, the first output index whose low tap it is and how many
    there are (low taps never decrease), and the float32 weight of the high tap (0 where both coincide)."""
    tables = []
    for (low, high, weight), n in zip(taps, grid):
        count = np.bincount(low, minlength=n)
        start = np.cumsum(count) - count
        tables.append((start, count, np.where(low == high, 0, weight).astype(np.float32)))
    return tables


def _block_groups(blocks: np.ndarray, grid: Sequence[int], tables: list,  # noqa: ANN202 - a generator
                  chunk_voxels: int = CHUNK_VOXELS):
    """The band's blocks (flat model-grid indices of their low corners) in chunks of the same output counts
    along each axis, at most ``chunk_voxels`` output voxels a chunk: ``(positions in blocks, per axis
    the output indices [m, n] and high-tap weights [m, n])``, blocks last for long inner loops."""
    at = np.unravel_index(blocks, grid)
    counts = [t[1][g] for t, g in zip(tables, at)]
    key = (counts[0] * (tables[1][1].max() + 1) + counts[1]) * (tables[2][1].max() + 1) + counts[2]
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    for group in np.split(order, bounds) if blocks.size else ():
        m = [int(c[group[0]]) for c in counts]
        if 0 in m:  # downsampling: no output voxel has its low taps here
            continue
        step = max(1, chunk_voxels // (m[0] * m[1] * m[2]))
        for s in range(0, group.size, step):
            rows = group[s:s + step]
            axes = []
            for (start, _, weight), g, n in zip(tables, at, m):
                index = start[g[rows]] + np.arange(n)[:, None]
                axes.append((index, weight[index]))
            yield rows, axes


def _lerp_blocks(corners: np.ndarray, axes: list) -> np.ndarray:
    """Float32 values ``[..., m0, m1, m2, n]`` at a chunk's output voxels (:func:`_block_groups`) from
    block corner values ``[..., 8, n]`` (corner ``4i+2j+k``), interpolating along the last axis first.
    Each step is a convex mix, so the error is below 2^-19 of the largest corner magnitude (a few float32
    roundings a step, and the weights' own)."""
    v = corners.reshape(*corners.shape[:-2], 2, 2, 2, corners.shape[-1])
    wz, wy, wx = (w for _, w in axes)
    low = v[..., 0, :]
    v = low[..., None, :] + wx * (v[..., 1, :] - low)[..., None, :]  # [..., 2, 2, m2, n]
    low = v[..., 0, :, :]
    v = low[..., None, :, :] + wy[:, None] * (v[..., 1, :, :] - low)[..., None, :, :]  # [..., 2, m1, m2, n]
    low = v[..., 0, :, :, :]
    return low[..., None, :, :, :] + wz[:, None, None] * (v[..., 1, :, :, :] - low)[..., None, :, :, :]


def _pair_blocks(flat_logits: np.ndarray, grid: Sequence[int], d: _Decisions, blocks: np.ndarray, lo: np.ndarray,
                 hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For the blocks with low corners ``blocks`` (flat model-grid indices) whose lowest and highest
    label are ``lo``/``hi``: two candidate channels ``first < second`` per block (``lo`` and ``hi``,
    or the label and the runner-up of the low corner where they agree), ``others [8, n]`` (float32),
    the largest logit of every other channel at each of the block's 2x2x2 voxels (corner ``4i+2j+k``
    at offset ``(i, j, k)``, clipped to the model ``grid``), the largest ``need`` among those voxels,
    and the two candidates' logits there, ``pair [2, 8, n]`` (float32)."""
    at = np.unravel_index(blocks, grid)
    lead0, lead1 = d.lead[0].reshape(-1), d.lead[1].reshape(-1)
    runner_up = np.where(lead0[blocks] == lo, lead1[blocks], lead0[blocks])
    hi = np.where(lo == hi, runner_up, hi).astype(np.int64)
    first, second = np.minimum(lo, hi), np.maximum(lo, hi)
    corner = np.repeat(blocks[None], 8, axis=0).reshape(2, 2, 2, -1)  # flat indices of the 8 corners
    for a, stride in enumerate((grid[1] * grid[2], grid[2], 1)):
        corner[tuple(1 if b == a else slice(None) for b in range(3))] += np.where(at[a] < grid[a] - 1, stride, 0)
    corner = corner.reshape(8, -1)
    firsts, seconds = first.astype(np.int16), second.astype(np.int16)
    out0, out1 = ((lead != firsts) & (lead != seconds) for lead in (lead0.take(corner), lead1.take(corner)))
    plane = d.need.size  # top 0, 1 or 2: the largest other channel, at flat offset 0, plane or 2 plane
    others = d.top.reshape(-1).take(np.where(out0, 0, np.where(out1, plane, 2 * plane)) + corner)
    need_max = d.need.reshape(-1).take(corner).max(axis=0)
    values, size = flat_logits.reshape(-1), flat_logits.shape[1]
    pair = np.empty((2, *corner.shape), dtype=np.float32)
    pair[0], pair[1] = values.take(first * size + corner), values.take(second * size + corner)
    return first, second, others, need_max, pair


def _corners(where: tuple[np.ndarray, ...], taps: list, strides: tuple[int, ...]):  # noqa: ANN202 - a generator
    """Per corner of the linear interpolation at output voxels ``where``: ``(weight, flat model-grid
    index, corner number 4i+2j+k of its offset from the low corner)``, weights as :func:`resample_channel`'s."""
    n = where[0].size
    axes = [(taps[a][0][where[a]], taps[a][1][where[a]], taps[a][2][where[a]]) for a in range(3)]
    for corner in itertools.product((0, 1), repeat=3):
        weight = np.ones(n, dtype=np.float64)
        flat = np.zeros(n, dtype=np.int64)
        number = np.zeros(n, dtype=np.int64)
        for a, ((lo, hi, w), bit) in enumerate(zip(axes, corner)):
            weight *= w if bit else 1 - w
            flat += (hi if bit else lo) * strides[a]
            if bit:
                number += (hi - lo) << (2 - a)
        if weight.any():
            yield weight, flat, number


def _interpolate(flat_logits: np.ndarray, where: tuple[np.ndarray, ...], taps: list,
                 strides: tuple[int, ...]) -> np.ndarray:
    """Float64 values ``[C, n]`` of every channel at output voxels ``where``."""
    total = np.zeros((flat_logits.shape[0], where[0].size), dtype=np.float64)
    for weight, flat, _ in _corners(where, taps, strides):
        total += np.take(flat_logits, flat, axis=1) * weight
    return total


def _pair_labels(flat_logits: np.ndarray, where: tuple[np.ndarray, ...], taps: list, strides: tuple[int, ...],
                 first: np.ndarray, second: np.ndarray, others: np.ndarray,
                 need_max: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels at output voxels ``where`` from the two candidate channels of their blocks, and where
    they hold: every other channel's interpolated value (at most ``others`` mixed with the same
    weights) stays below the larger candidate's by the block's ``need_max``, which float16 rounding
    cannot close, so the float16 argmax over all channels is one of the two (``first`` on ties)."""
    n = where[0].size
    a, b, upper = (np.zeros(n, dtype=np.float64) for _ in range(3))
    values, size = flat_logits.reshape(-1), flat_logits.shape[1]
    first_at, second_at, others_at = first * size, second * size, np.arange(n)  # flat offsets
    others = others.reshape(-1)
    for weight, flat, number in _corners(where, taps, strides):
        a += values[first_at + flat] * weight
        b += values[second_at + flat] * weight
        upper += others[others_at + number * n] * weight
    holds = upper < np.maximum(a, b) - need_max
    return np.where(a.astype(np.float16) >= b.astype(np.float16), first, second), holds


def _pair_band(pair: np.ndarray, others: np.ndarray, need_max: np.ndarray,
               axes: list) -> tuple[np.ndarray, np.ndarray]:
    """For a chunk of blocks (:func:`_block_groups`) with their candidates' corner logits ``pair`` and
    the bound ``others`` (:func:`_pair_blocks`): per output voxel ``[m0, m1, m2, n]`` whether ``first``
    wins, and whether that is sure. Mixed in float32 (:func:`_lerp_blocks`) are ``p = a - b`` and
    ``q = a + b - 2 upper`` of the candidates' values ``a``, ``b`` and the bound ``upper``: within
    ``tol`` = 2^-13 of the block's largest corner magnitude ``M`` (over eight times their error) of the
    exact ones. A sure voxel's float16 argmax over all channels is the one :func:`_pair_labels` finds:
    ``first`` where ``p > tol`` (float16 rounding keeps the order), ``second`` where ``-p > tol`` +
    2^-8 ``M`` (two float16 steps: they cannot round to a tie), and the bound holds
    (``q + |p| = 2 max(a, b) - 2 upper > 2 need + 2 tol``). The rest is for :func:`_pair_labels`."""
    diff = pair[0] - pair[1]
    p, q = _lerp_blocks(np.stack((diff, pair[0] + pair[1] - 2 * others)), axes)
    scale = np.maximum(np.abs(pair).max(axis=(0, 1)), np.abs(others).max(axis=0))
    tol = 2.0 ** -13 * scale
    first_wins = p > tol
    sure = first_wins | (-p > tol + 2.0 ** -8 * scale + 2.0 ** -23)
    sure &= q + np.abs(p) > 2 * (need_max + tol)
    return first_wins, sure


def linear_labels(logits: np.ndarray, shape: Sequence[int], current: Sequence[float], new: Sequence[float], *,
                  order: int, order_z: int, force_separate_z: bool | None = None,
                  decide: Any = _argmax, max_band_share: float = MAX_BAND_SHARE,
                  stats: dict[str, int] | None = None) -> np.ndarray | None:
    """The argmax over channels (or another ``decide``) of ``logits [C, *grid]`` resampled to ``shape``
    by :func:`resample_channel` and rounded to float16 (as the channel-by-channel path does), without
    resampling every channel at full size; ``None`` when this does not pay or does not hold: the
    resampling is not piecewise linear (``order`` or ``order_z`` above 1), or more than
    ``max_band_share`` of the output falls in the band (a noisy label map).

    Linear (and nearest) resampling makes each output value a convex combination of a 2x2x2
    block of input values, with the same weights for every channel. Where every voxel of the block
    has the same argmax ``c`` with a margin above :data:`MARGIN_ABS` (+ :data:`MARGIN_REL` x its value),
    ``c`` stays the argmax of any convex combination with at least that margin, which float16 rounding
    cannot close, so those output voxels take it directly. The other output voxels (a band along the
    boundaries and near-ties) are interpolated with the weights of :func:`resample_channel`, rounded to
    float16 and decided as that path does (first channel on ties): first only the block's two
    candidate channels, with a bound on every other (:func:`_pair_labels`; a boundary between two
    classes), and every channel where that bound does not exclude the others. The same holds for
    ``decide=positive`` on one channel (the sign of a convex mix of same-sign values). ``stats``, when
    given, receives the ``band`` and ``pair_band`` voxel counts.
    """
    if order > 1 or order_z > 1:
        return None
    shape = [int(n) for n in shape]
    grid = logits.shape[1:]
    axis = separate_axis(current, new, force_separate_z)
    taps = [_axis_taps(grid[a], shape[a], linear=(order == 1) if a != axis else (order_z == 1)) for a in range(3)]
    # a block is a voxel and its +1 neighbour on each axis where the taps are two apart
    size = [2 if not np.array_equal(t[0], t[1]) else 1 for t in taps]
    d = _Decisions(logits, decide)
    lowest, highest = _block_reduce(d.labels, size, np.minimum), _block_reduce(d.labels, size, np.maximum)
    blocks = np.flatnonzero((lowest != highest) | ~_block_reduce(d.clear, size, np.minimum))
    tables = _block_tables(taps, grid)
    band = int(np.prod([t[1][g] for t, g in zip(tables, np.unravel_index(blocks, grid))], axis=0).sum())
    if band > max_band_share * float(np.prod(shape)):
        return None
    out = np.ascontiguousarray(d.labels.astype(np.uint16 if logits.shape[0] > 255 else np.uint8).T)
    out = out.take(taps[2][0], 0).take(taps[1][0], 1).take(taps[0][0], 2).T  # labels at the low corners, order F
    flat_logits, flat_out = logits.reshape(logits.shape[0], -1), out.T.reshape(-1)
    step = [n // out.itemsize for n in out.strides]  # of flat_out along the output axes
    strides = (grid[1] * grid[2], grid[2], 1)
    lowest, highest = lowest.reshape(-1), highest.reshape(-1)

    def exact(flat: np.ndarray, where: tuple[np.ndarray, ...]) -> None:  # every channel, as resample_channel
        if flat.size:
            flat_out[flat] = decide(_interpolate(flat_logits, where, taps, strides).astype(np.float16))

    def chunk(rows: np.ndarray, axes: list) -> int:  # its output voxels are its blocks' own: no other writes them
        (iz, _), (iy, _), (ix, _) = axes
        index = (iz * step[0])[:, None, None] + (iy * step[1])[:, None] + ix * step[2]  # [m0, m1, m2, n]
        if d.top is None:
            exact(index.reshape(-1), tuple(np.broadcast_to(i, index.shape).reshape(-1) for i in
                                           (iz[:, None, None], iy[:, None], ix)))
            return 0
        at = blocks[rows]  # per block: two candidate channels and the bound on the others
        first, second, others, need_max, pair = _pair_blocks(flat_logits, grid, d, at, lowest[at].astype(np.int64),
                                                             highest[at].astype(np.int64))
        first_wins, sure = _pair_band(pair, others, need_max, axes)
        labels = np.where(first_wins, first.astype(out.dtype), second.astype(out.dtype))
        flat_out[index.reshape(-1)] = labels.reshape(-1)
        i, j, k, n = np.nonzero(~sure)
        where, flat = (iz[i, n], iy[j, n], ix[k, n]), index[i, j, k, n]
        labels, holds = _pair_labels(flat_logits, where, taps, strides, first[n], second[n], others[:, n], need_max[n])
        flat_out[flat[holds]] = labels[holds]
        exact(flat[~holds], tuple(w[~holds] for w in where))
        return int(np.count_nonzero(sure)) + int(np.count_nonzero(holds))

    # bounded memory: CHUNK_VOXELS at a time per thread, chunks small enough for every thread to get some
    chunk_voxels = int(np.clip(band // (4 * _export_threads()), MIN_CHUNK_VOXELS, CHUNK_VOXELS))
    with _export_pool() as pool:
        pairs = sum(pool.map(lambda job: chunk(*job), _block_groups(blocks, grid, tables, chunk_voxels)))
    if stats is not None:
        stats.update(band=band, pair_band=pairs)
    return out


def _fn_kwargs(config: dict[str, Any], key: str) -> dict[str, Any]:
    name = config.get(f"resampling_fn_{key}", "resample_data_or_seg_to_shape")
    if name not in ("resample_data_or_seg_to_shape", "resample_data_or_seg_to_spacing"):
        raise ModelError(f"plans.json: resampling_fn_{key} {name!r} is not supported "
                         "(resample_data_or_seg_to_shape is)")
    kw = dict(config.get(f"resampling_fn_{key}_kwargs", {}))
    return {"order": int(kw.get("order", 3 if key == "data" else 1)), "order_z": int(kw.get("order_z", 0)),
            "force_separate_z": kw.get("force_separate_z")}


class Preprocessed:
    """nnU-Net's preprocessed case: ``data`` ``[C, *model grid]`` float32 and how to undo it."""

    def __init__(self, data: np.ndarray, *, shape_before_cropping: tuple[int, ...], bbox: list[list[int]],
                 cropped_shape: tuple[int, ...], original_spacing: list[float], target_spacing: list[float]) -> None:
        self.data = data
        self.shape_before_cropping = shape_before_cropping
        self.bbox = bbox
        self.cropped_shape = cropped_shape
        self.original_spacing = original_spacing
        self.target_spacing = target_spacing


def to_nnunet_axes(volume: Volume) -> tuple[np.ndarray, list[float]]:
    """``volume`` as nnU-Net reads the same file with SimpleITK: ``[C, z, y, x]`` float32, spacing ``[z, y, x]`` mm."""
    arr = volume.array if volume.channel_first else volume.array[None]
    if arr.ndim != 4:
        raise InputError(f"expected a 3D volume, got spatial shape {volume.spatial_shape}")
    return np.ascontiguousarray(arr.transpose(0, 3, 2, 1)).astype(np.float32), list(volume.spacing)[::-1]


def preprocess(data: np.ndarray, spacing: Sequence[float], plans: dict[str, Any], config: dict[str, Any]) -> Preprocessed:
    """nnU-Net's ``DefaultPreprocessor.run_case_npy`` for an image ``[C, z, y, x]`` with ``spacing`` (mm, same order)."""
    forward = list(plans.get("transpose_forward", [0, 1, 2]))
    data = data.astype(np.float32).transpose([0, *[i + 1 for i in forward]])
    original_spacing = [float(spacing[i]) for i in forward]
    shape_before = tuple(data.shape[1:])
    bbox, mask = nonzero_bbox(data)
    crop = tuple(slice(a, b) for a, b in bbox)
    data = np.ascontiguousarray(data[(slice(None), *crop)])
    mask = mask[crop]
    target = [float(s) for s in config["spacing"]]
    if len(target) < data.ndim - 1:  # 2d: the slice axis keeps its spacing
        target = [original_spacing[0], *target]
    new_shape = [int(round(o / t * n)) for o, t, n in zip(original_spacing, target, data.shape[1:])]
    props = plans.get("foreground_intensity_properties_per_channel", {})
    schemes, use_mask = config["normalization_schemes"], config.get("use_mask_for_norm", [False] * len(data))
    if len(schemes) != data.shape[0]:
        raise InputError(f"the model takes {len(schemes)} channel(s), the image has {data.shape[0]}")
    kw = _fn_kwargs(config, "data")
    out = np.zeros((data.shape[0], *new_shape), dtype=np.float32)
    for c in range(data.shape[0]):
        data[c] = _normalize(data[c], schemes[c], use_mask=bool(use_mask[c]), mask=mask, props=props.get(str(c), {}))
        out[c] = resample_channel(data[c], new_shape, original_spacing, target, **kw)
    return Preprocessed(out, shape_before_cropping=shape_before, bbox=bbox, cropped_shape=tuple(data.shape[1:]),
                        original_spacing=original_spacing, target_spacing=target)


# -- sliding window ------------------------------------------------------------------------
def window_starts(size: int, patch: int, step: float) -> list[int]:
    """nnU-Net's ``compute_steps_for_sliding_window`` along one axis (voxels).

    Example:
        >>> window_starts(110, 64, 0.5)
        [0, 23, 46]
    """
    n = int(np.ceil((size - patch) / (patch * step))) + 1
    if n == 1:
        return [0]
    width = (size - patch) / (n - 1)
    return [int(np.round(width * i)) for i in range(n)]


def gaussian_weights(patch: Sequence[int]) -> Any:
    """nnU-Net's ``compute_gaussian`` (sigma = patch/8, peak 10, float16, no zeros)."""
    import torch
    from scipy.ndimage import gaussian_filter

    tmp = np.zeros(patch)
    tmp[tuple(p // 2 for p in patch)] = 1
    g = gaussian_filter(tmp, [p / 8 for p in patch], 0, mode="constant", cval=0)
    g /= np.max(g) / 10
    t = torch.from_numpy(g).to(dtype=torch.float16)
    t[t == 0] = torch.min(t[t != 0])
    return t


def _pad_to(data: Any, patch: Sequence[int]) -> tuple[Any, tuple[slice, ...]]:
    """Zero-pad the last ``len(patch)`` axes to at least ``patch``, centred as nnU-Net's ``pad_nd_image``."""
    import torch

    shape = list(data.shape)
    lead = len(shape) - len(patch)
    target = shape[:lead] + [max(p, s) for p, s in zip(patch, shape[lead:])]
    below = [(t - s) // 2 for t, s in zip(target, shape)]
    above = [t - s - b for t, s, b in zip(target, shape, below)]
    if any(below) or any(above):
        pads = [v for b, a in zip(reversed(below), reversed(above)) for v in (b, a)]
        data = torch.nn.functional.pad(data, pads, "constant", 0)
    return data, tuple(slice(b, b + s) for b, s in zip(below, shape))


class NnunetSegmenter:
    """An nnU-Net v2 model (one or several folds) as a medseg :class:`~medseg.inference.segmenter.Segmenter`.

    Build it with :meth:`from_path` (a medseg export made by ``medseg import nnunet`` or an
    nnU-Net model folder). ``predict(volume)`` returns labels on ``volume``'s exact grid.

    Attributes:
        tta: mirror over the checkpoint's ``inference_allowed_mirroring_axes`` (nnU-Net's default is on).
        tile_step_size: window step as a fraction of the patch (nnU-Net's default 0.5).
        last_timings: ``preprocess_s``, ``network_s`` (sliding window), ``export_s`` (back to the
            input grid), ``total_s``.
    """

    def __init__(self, model: Any, *, device: str | None = None, tta: bool = True, tile_step_size: float = 0.5,
                 sha256: str = "") -> None:
        import torch

        from medseg.models.nnunet import build_network, label_layout

        self.model = model
        self.config = model.config
        self.layout = label_layout(model.dataset_json)
        from medseg.models.export import resolve_device

        self.device = torch.device(resolve_device(device))
        self.network = build_network(self.config, model.dataset_json).to(self.device)
        self.tta = bool(tta)
        self.tile_step_size = float(tile_step_size)
        self.model_sha256 = sha256
        self.last_timings: dict[str, float] = {}

    @classmethod
    def from_path(cls, path: PathLike, *, device: str | None = None, tta: bool = True,
                  folds: Sequence[int | str] | None = None, checkpoint: str = "final") -> "NnunetSegmenter":
        """Load a medseg nnU-Net export, or an nnU-Net model folder directly (``folds``/``checkpoint`` apply)."""
        import hashlib

        from medseg.models import nnunet as nn_models

        if nn_models.is_model_folder(path):
            model = nn_models.read_model_folder(path, folds=folds, checkpoint=checkpoint)
            files = [f"{path}/fold_{f}/{nn_models.CHECKPOINTS[checkpoint]}" for f in model.folds]
            from medseg.io.atomic import sha256_file

            digest = hashlib.sha256("+".join(sha256_file(f) for f in files).encode()).hexdigest()
            return cls(model, device=device, tta=tta, sha256=digest)
        return cls(nn_models.read_export_model(path), device=device, tta=tta, sha256=nn_models.export_sha256(path))

    @property
    def label_names(self) -> dict[int, str]:
        """``{label value: name}`` from ``dataset.json`` (background 0 included)."""
        return dict(self.layout.names)

    # -- the steps -------------------------------------------------------------------------
    def preprocess(self, volume: Volume) -> Preprocessed:
        """nnU-Net's preprocessing of ``volume`` (see :func:`preprocess`)."""
        data, spacing = to_nnunet_axes(volume)
        return preprocess(data, spacing, self.model.plans, self.config)

    def _mirrored(self, x: Any) -> Any:
        prediction = self.network(x)
        if self.tta and self.model.mirror_axes:
            axes = [a + 2 for a in self.model.mirror_axes]
            combos = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
            for dims in combos:
                prediction += torch_flip(self.network(torch_flip(x, dims)), dims)
            prediction /= len(combos) + 1
        return prediction

    def _sliding_window(self, data: Any) -> Any:
        """Logits ``[heads, *data spatial]`` (float16) of one fold, as ``nnUNetPredictor``."""
        import torch

        patch = [int(p) for p in self.config["patch_size"]]
        data, unpad = _pad_to(data, patch)
        spatial = data.shape[1:]
        logits = torch.zeros((self.layout.num_channels, *spatial), dtype=torch.half, device=self.device)
        counts = torch.zeros(spatial, dtype=torch.half, device=self.device)
        gauss = gaussian_weights(patch).to(self.device)
        if len(patch) < len(spatial):  # 2d: every slice along the first axis
            steps = [window_starts(s, p, self.tile_step_size) for s, p in zip(spatial[1:], patch)]
            slicers = [(slice(None), d, *[slice(a, a + p) for a, p in zip(start, patch)])
                       for d in range(spatial[0]) for start in itertools.product(*steps)]
        else:
            steps = [window_starts(s, p, self.tile_step_size) for s, p in zip(spatial, patch)]
            slicers = [(slice(None), *[slice(a, a + p) for a, p in zip(start, patch)])
                       for start in itertools.product(*steps)]
        for sl in slicers:
            window = torch.clone(data[sl][None], memory_format=torch.contiguous_format)
            prediction = self._mirrored(window)[0]
            prediction *= gauss
            logits[sl] += prediction
            counts[sl[1:]] += gauss
        torch.div(logits, counts, out=logits)
        if torch.any(torch.isinf(logits)):
            raise ModelError("nnU-Net logits overflowed float16 (inf): the network's outputs are too large")
        return logits[(slice(None), *unpad[1:])]

    def network_logits(self, pre: Preprocessed) -> Any:
        """Fold-averaged logits ``[heads, *model grid]`` (float16, CPU) of a preprocessed case."""
        import contextlib

        import torch

        data = torch.from_numpy(pre.data).to(self.device)
        autocast = torch.autocast(self.device.type) if self.device.type == "cuda" else contextlib.nullcontext()
        prediction = None
        with torch.inference_mode(), autocast:
            for state in self.model.states:
                self.network.load_state_dict(state)
                logits = self._sliding_window(data).to("cpu")
                prediction = logits if prediction is None else prediction + logits
            if len(self.model.states) > 1:
                prediction /= len(self.model.states)
        return prediction

    def to_input_grid(self, logits: Any, pre: Preprocessed, *, probabilities: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (and optionally probabilities) on nnU-Net's input array ``[z, y, x]`` from model-grid logits;
        the labels laid out in memory as the Volume's ``[i, j, k]``, so that :meth:`predict` copies nothing."""
        import torch

        kw = _fn_kwargs(self.config, "probabilities")
        current = pre.target_spacing
        crop = tuple(slice(a, b) for a, b in pre.bbox)
        values = np.asarray(self.layout.channel_labels)
        dtype = np.uint8 if values.max() < 256 else np.uint16
        seg = np.zeros(pre.cropped_shape, dtype=dtype)
        best = None
        probs = np.zeros((logits.shape[0], *pre.cropped_shape), dtype=np.float16) if probabilities else None
        logits_np = logits.numpy()
        fast = None
        if probs is None and self.layout.regions is None:  # labels only: boundary voxels get every channel
            fast = linear_labels(logits_np, pre.cropped_shape, current, pre.original_spacing, **kw)
            if fast is not None:
                seg = fast if np.array_equal(values, np.arange(values.size)) else values.astype(dtype)[fast]
        elif probs is None:  # region models: each region's sign, resampled only along its border
            for c in range(logits.shape[0]):
                inside = linear_labels(logits_np[c:c + 1], pre.cropped_shape, current, pre.original_spacing,
                                       decide=positive, **kw)
                if inside is None:
                    break
                seg[inside.astype(bool)] = values[c]
                fast = inside
        for c in range(logits.shape[0] if fast is None else 0):
            channel = logits_np[c]
            if tuple(channel.shape) != tuple(pre.cropped_shape):
                channel = resample_channel(channel, pre.cropped_shape, current, pre.original_spacing, **kw)
            channel = channel.astype(np.float16, copy=False)
            if probs is not None:
                probs[c] = channel
            if self.layout.regions is not None:
                seg[torch.sigmoid(torch.from_numpy(channel).float()).numpy() > 0.5] = values[c]
            elif best is None:
                best = channel.copy()
            else:
                better = channel > best
                seg[better] = values[c]
                np.maximum(best, channel, out=best)
        backward = list(self.model.plans.get("transpose_backward", [0, 1, 2]))
        before = pre.shape_before_cropping
        out = np.zeros([before[a] for a in backward][::-1], dtype=dtype).T  # [z, y, x] of the input, order F
        out = out.transpose(np.argsort(backward))  # so that out.transpose(backward) is that array
        out[crop] = seg
        prob_out = None
        if probs is not None:
            t = torch.from_numpy(probs).float()
            p = (torch.sigmoid(t) if self.layout.regions is not None else torch.softmax(t, 0)).numpy()
            prob_out = np.zeros((p.shape[0], *pre.shape_before_cropping), dtype=np.float32)
            if self.layout.regions is None:
                prob_out[0] = 1
            prob_out[(slice(None), *crop)] = p
        out = out.transpose(backward)
        if prob_out is not None:
            prob_out = prob_out.transpose([0, *[i + 1 for i in backward]])
        return out, prob_out

    def predict(self, volume: Volume, *, return_probabilities: bool = False) -> Any:
        """Segment ``volume`` as nnU-Net would the same image file; labels on ``volume``'s exact grid.

        Returns:
            A label Volume (``uint8``; ``uint16`` beyond 255), with ``return_probabilities`` also
            a float32 ``[C, i, j, k]`` Volume of the softmax (or per-region sigmoid) outputs.
        """
        t0 = time.perf_counter()
        pre = self.preprocess(volume)
        t1 = time.perf_counter()
        logits = self.network_logits(pre)
        t2 = time.perf_counter()
        labels, probs = self.to_input_grid(logits, pre, probabilities=return_probabilities)
        del logits
        labels = np.ascontiguousarray(labels.transpose(2, 1, 0))
        t3 = time.perf_counter()
        self.last_timings = {"preprocess_s": t1 - t0, "network_s": t2 - t1, "export_s": t3 - t2, "total_s": t3 - t0}
        meta = {**{k: v for k, v in volume.meta.items() if k not in ("canonical_from", "resampled_from")},
                "prediction": {"model_sha256": self.model_sha256, "family": "nnunet",
                               "configuration": self.model.configuration, "folds": list(self.model.folds),
                               "label_names": {str(k): v for k, v in self.label_names.items()}, "tta": self.tta,
                               "device": str(self.device),
                               "timings": {k: round(v, 4) for k, v in self.last_timings.items()}}}
        result = Volume(labels, volume.affine.copy(), meta, is_label=True)
        if not return_probabilities:
            return result
        p = np.ascontiguousarray(probs.transpose(0, 3, 2, 1))
        return result, Volume(p, volume.affine.copy(), {"kind": "probabilities"}, channel_first=True)


def torch_flip(x: Any, dims: Sequence[int]) -> Any:
    import torch

    return torch.flip(x, dims)


__all__ = ["NnunetSegmenter", "linear_labels", "positive", "preprocess", "to_nnunet_axes", "resample_channel", "separate_axis", "window_starts",
           "gaussian_weights", "nonzero_bbox"]
