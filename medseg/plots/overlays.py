"""PNG overlays of a label map on its image: three orthogonal slices through each structure.

Both volumes are first put in RAS orientation (exact axis flips/permutations, no
interpolation), then for each label present the axial, coronal and sagittal slices
through the centre of its bounding box are drawn with all labels overlaid. Axial
and coronal views are shown in radiological convention (patient's right on the
left of the image); pixels are drawn with their true aspect ratio (spacing in mm).
Oblique grids are shown along the world axes they are closest to (no resampling).
Drawing is plain numpy + Pillow (matplotlib only supplies the colour table): about
0.3 s per 96x96x64 study with 8 structures, where a matplotlib figure took seconds.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.io.atomic import atomic_path
from medseg.volume import Volume

VIEWS = ("axial", "coronal", "sagittal")


def _colors(n: int) -> np.ndarray:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return np.asarray([cmap(i % cmap.N) for i in range(max(n, 1))])


def _window(image: np.ndarray) -> tuple[float, float]:
    """The 0.5-99.5 percentile window of the finite values (of a regular subsample past 2M values)."""
    step = max(1, math.ceil((image.size / 2_000_000) ** (1 / max(image.ndim, 1))))
    sample = np.asarray(image[(slice(None, None, step),) * image.ndim], dtype=np.float32)
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return 0.0, 1.0
    sample = finite[:: max(1, finite.size // 200_000)]
    lo, hi = np.percentile(sample, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def _slice(array: np.ndarray, view: str, center: tuple[int, int, int]) -> np.ndarray:
    i, j, k = center
    if view == "axial":
        return array[:, :, k].T  # rows: posterior->anterior, columns: left->right (x)
    if view == "coronal":
        return array[:, j, :].T  # rows: inferior->superior
    return array[i, :, :].T  # sagittal, rows: inferior->superior, columns: posterior->anterior


def _centres(labels: np.ndarray, values: list[int]) -> list[tuple[int, tuple[int, int, int]]]:
    from scipy import ndimage

    ints = labels if labels.dtype.kind in "iu" and labels.dtype.itemsize <= 4 else labels.astype(np.int32)
    boxes = ndimage.find_objects(ints, max_label=max(values) if values else 0)
    out = []
    for v in values:
        box = boxes[v - 1] if v - 1 < len(boxes) else None
        if box is not None:
            out.append((v, tuple((s.start + s.stop - 1) // 2 for s in box)))
    return out


def _fit(panel: np.ndarray, row_mm: float, col_mm: float, box: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2D (or 2D+RGB) panel into a ``box`` x ``box`` square, true aspect kept."""
    rows, cols = panel.shape[:2]
    height, width = rows * row_mm, cols * col_mm
    scale = box / max(height, width)
    out_r, out_c = max(1, round(height * scale)), max(1, round(width * scale))
    ri = np.minimum((np.arange(out_r) * rows / out_r).astype(int), rows - 1)
    ci = np.minimum((np.arange(out_c) * cols / out_c).astype(int), cols - 1)
    return panel[ri][:, ci]


def _view(array: np.ndarray, view: str, centre: tuple[int, int, int]) -> np.ndarray:
    """A 2D slice oriented for display: superior/anterior up; axial and coronal radiological (patient right on the left)."""
    plane = np.flipud(_slice(array, view, centre))  # row 0 at the top
    return np.fliplr(plane) if view != "sagittal" else plane


def _view_spacing(view: str, spacing: tuple[float, ...]) -> tuple[float, float]:
    si, sj, sk = spacing
    return {"axial": (sj, si), "coronal": (sk, si), "sagittal": (sk, sj)}[view]


def _canonical_view(array: np.ndarray, volume: Volume) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``array`` (a ``[i, j, k]`` array on ``volume``'s grid) as a RAS-ordered view, and the voxel
    spacing (mm) along the view's axes: the axis flips and permutations of
    :func:`medseg.transforms.preprocess.to_canonical`, without copying."""
    import nibabel.orientations as nio

    transform = nio.ornt_transform(nio.io_orientation(volume.affine), nio.axcodes2ornt(("R", "A", "S")))
    view = nio.apply_orientation(array, transform)
    spacing = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(transform):
        spacing[int(target)] = float(volume.spacing[axis])
    return view, (spacing[0], spacing[1], spacing[2])


def _present_values(labels: np.ndarray) -> list[int]:
    """Nonzero label values present, counted slab by slab (no full-size temporary)."""
    if labels.dtype.kind not in "iu" or labels.size == 0 or labels.min() < 0:
        return [int(v) for v in np.unique(labels) if v > 0]
    top = int(labels.max())
    counts = np.zeros(top + 1, dtype=np.int64)
    for slab in labels:  # along the first axis
        counts += np.bincount(np.ravel(slab), minlength=top + 1)
    return [int(v) for v in np.flatnonzero(counts) if v > 0]


def render_overlay(
    image: Volume,
    labels: Volume,
    *,
    label_names: dict[int, str] | None = None,
    title: str = "",
    max_structures: int = 8,
    panel_px: int = 200,
    alpha: float = 0.45,
) -> bytes:
    """PNG bytes of the overlay: one row per structure (at most ``max_structures``), three views each.

    Each row shows the axial, coronal and sagittal slices through the centre of the
    structure's bounding box, with every label blended in its colour (``alpha``).
    Panels are ``panel_px`` pixels on their long side, with the true mm aspect.

    Args:
        image: the image (``[i, j, k]``; a channel-first image shows channel 0).
        labels: integer label map on the same grid as ``image``.
        label_names: ``{value: name}`` for the titles; missing names show the value.
        title: a line of text above the panels (e.g. the study ID).

    Raises:
        InputError: the two volumes are not on the same 3D grid.
    """
    import io

    from PIL import Image, ImageDraw, ImageFont

    from medseg.transforms.preprocess import to_canonical

    if image.ndim != 3 or not image.same_grid(labels, atol=1e-3):
        raise InputError(
            f"overlay needs a 3D image and label map on the same grid, got {image.spatial_shape} and {labels.spatial_shape}"
        )
    # views in RAS order (flips and transposes, no copy): only the drawn slices are ever converted
    arr, spacing = _canonical_view(image.array[0] if image.channel_first else image.array, image)
    lab_arr, _ = _canonical_view(np.asarray(labels.array), labels)
    names = dict(label_names or {})
    present = _present_values(lab_arr)
    rows = _centres(lab_arr, present)[:max_structures]
    if not rows:
        rows = [(0, tuple(s // 2 for s in lab_arr.shape))]
    lo, hi = _window(arr)
    values = sorted(set(present) | set(names))
    palette = np.zeros((max(values, default=0) + 1, 3), dtype=np.float32)
    for v, c in zip(values, _colors(len(values))):
        palette[v] = np.asarray(c[:3]) * 255

    title_h, pad = 16, 6
    header = 20 if title else 0
    width = 3 * (panel_px + pad) + pad
    canvas = Image.new("RGB", (width, header + len(rows) * (panel_px + title_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if title:
        draw.text((pad, 4), title, fill="black", font=font)
    for r, (value, centre) in enumerate(rows):
        top = header + r * (panel_px + title_h + pad) + pad
        for c, view in enumerate(VIEWS):
            grey = np.clip((_view(arr, view, centre).astype(np.float32) - lo) / (hi - lo), 0, 1) * 255
            lab2 = _view(lab_arr, view, centre).astype(np.int64)
            rgb = np.repeat(grey[..., None], 3, axis=2)
            mask = lab2 > 0
            rgb[mask] = (1 - alpha) * rgb[mask] + alpha * palette[np.clip(lab2[mask], 0, len(palette) - 1)]
            rgb = _fit(rgb, *_view_spacing(view, spacing), panel_px)
            left = pad + c * (panel_px + pad)
            canvas.paste(Image.fromarray(rgb.astype(np.uint8)), (left + (panel_px - rgb.shape[1]) // 2, top + title_h))
            name = names.get(value, str(value)) if value else "no structure"
            draw.text((left, top + 2), f"{name} - {view}", fill="black", font=font)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def write_overlay(
    image: Volume,
    labels: Volume,
    path: str | os.PathLike[str],
    *,
    label_names: dict[int, str] | None = None,
    title: str = "",
) -> Path:
    """Render :func:`render_overlay` and write it to ``path`` atomically; returns the path."""
    data = render_overlay(image, labels, label_names=label_names, title=title)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def blend_image_labels(image: np.ndarray, labels: np.ndarray, *, alpha: float = 0.45,
                       num_classes: int | None = None) -> np.ndarray:
    """An ordinary image ``[H, W]`` or ``[H, W, C]`` with its label map ``[H, W]`` blended in: RGB ``uint8``.

    Label 0 (background) is left as it is; label ``v`` gets colour ``v`` of matplotlib's tab10
    table (tab20 past 10 classes), so a class keeps its colour across images.
    Values at or above ``num_classes`` (e.g. an ignore index 255) are drawn white. Gray and 16-bit
    images are windowed to their 0.5-99.5 percentiles.

    Raises:
        InputError: image and labels differ in height or width.
    """
    img = np.asarray(image)
    lab = np.asarray(labels)
    if img.shape[:2] != lab.shape[:2] or lab.ndim != 2:
        raise InputError(f"overlay needs an image and a 2D label map of one size, got {img.shape} and {lab.shape}")
    if img.ndim == 2:
        img = img[..., None]
    if img.dtype == np.uint8:
        rgb = img[..., :3].astype(np.float32)
    else:
        lo, hi = _window(img.astype(np.float32))
        rgb = np.clip((img[..., :3].astype(np.float32) - lo) / (hi - lo), 0, 1) * 255
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    n = int(num_classes if num_classes is not None else int(lab.max(initial=0)) + 1)
    palette = np.vstack([np.asarray(_colors(max(n, 2)))[:, :3] * 255, [[255.0, 255.0, 255.0]]]).astype(np.float32)
    index = np.where(lab < n, lab, len(palette) - 1)
    mask = lab > 0
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * palette[index[mask]]
    return np.clip(rgb, 0, 255).astype(np.uint8)


__all__ = ["blend_image_labels", "render_overlay", "write_overlay", "VIEWS"]
