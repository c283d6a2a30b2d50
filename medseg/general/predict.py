"""Segment a folder of ordinary images with an exported 2D model (``medseg predict-images``).

:func:`predict_image_folder` loads the export once (``model.json`` + ``model.pt``, see
:mod:`medseg.models.export`), then for every image (PNG, JPEG, TIFF, BMP; matched by
file stem) in sorted order:

1. reads it as ``[H, W, C]`` (:func:`medseg.general.read_image`; alpha already dropped)
   and fits the channels to the model: a gray image into a 3-channel model is
   replicated to RGB; any other mismatch is an :class:`~medseg.errors.InputError`;
2. normalises it as ``preprocessing.normalization`` of ``model.json`` says (kinds
   :data:`NORMALIZATION_KINDS`):

   - ``imagenet``: scale to 0-1 (divide by 255, or 65535 for 16-bit images), then
     subtract the ImageNet mean ``(0.485, 0.456, 0.406)`` and divide by the std
     ``(0.229, 0.224, 0.225)`` per channel (a 1-channel model uses their averages
     0.449 / 0.226);
   - ``zscore``: per image and channel, subtract the mean and divide by the std (of
     all pixels);
   - ``scale``: to 0-1 (divide by 255, or 65535 for 16-bit images);
   - ``none`` (also when ``normalization`` is absent): the raw values as float32;

3. pads bottom and right with zeros (after normalisation) to a multiple of
   ``inference.pad_multiple`` (default 32: the largest stride of DeepLabV3+ and
   SegFormer encoders), runs the model, crops the logits back to ``H x W`` and takes
   the argmax;
4. writes ``<stem>.png`` (8-bit, 16-bit past 255 classes) atomically with
   :func:`medseg.general.save_mask` and appends one JSON line to
   ``predictions.jsonl`` (``input, output, shape [H, W], seconds, status, error``).

Images of the same padded size that follow each other are run as one batch. A file
that cannot be read gets ``status: "failed"`` with the reason (naming the file) and
the run goes on; with ``overwrite=False`` images whose mask already exists are
skipped (``status: "skipped"``), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputError, ModelError

log = logging.getLogger(__name__)

NORMALIZATION_KINDS = ("imagenet", "zscore", "scale", "none")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_PAD_MULTIPLE = 32
RECORDS_NAME = "predictions.jsonl"
PROGRESS_MIN_IMAGES = 20  # a progress bar is shown from this many images on (progress=None)


def fit_channels(image: np.ndarray, in_channels: int, path: str | os.PathLike[str] = "image") -> np.ndarray:
    """``[H, W, C]`` -> ``[H, W, in_channels]``: gray replicated to 3 channels, RGBA loses alpha.

    Raises:
        InputError: any other channel mismatch (the message names ``path``).
    """
    c = image.shape[-1]
    if c == in_channels:
        return image
    if c == 1 and in_channels == 3:
        return np.repeat(image, 3, axis=-1)
    if c == 4 and in_channels == 3:
        return image[..., :3]
    raise InputError(f"{path}: image has {c} channel(s), the model takes {in_channels}")


def normalize_image(image: np.ndarray, spec: dict[str, Any] | None) -> np.ndarray:
    """Normalise an ``[H, W, C]`` image as ``spec`` (``preprocessing.normalization``) says; float32.

    Example:
        >>> normalize_image(np.array([[[0, 255]]], np.uint8), {"kind": "scale"}).tolist()
        [[[0.0, 1.0]]]
    """
    kind = str((spec or {}).get("kind", "none")).lower()
    x = np.asarray(image, dtype=np.float32)
    full = 65535.0 if image.dtype == np.uint16 else 255.0
    if kind == "none":
        return x
    if kind == "scale":
        return x / np.float32(full)
    if kind == "imagenet":
        c = x.shape[-1]
        mean = np.array(IMAGENET_MEAN if c == 3 else [np.mean(IMAGENET_MEAN)] * c, np.float32)
        std = np.array(IMAGENET_STD if c == 3 else [np.mean(IMAGENET_STD)] * c, np.float32)
        return (x / np.float32(full) - mean) / std
    if kind == "zscore":
        mean = x.mean(axis=(0, 1), dtype=np.float64)
        std = np.maximum(x.std(axis=(0, 1), dtype=np.float64), 1e-8)
        return ((x - mean) / std).astype(np.float32)
    raise ConfigError(f"preprocessing.normalization.kind {kind!r} is not supported for ordinary images; "
                      f"valid kinds: {', '.join(NORMALIZATION_KINDS)}")


def pad_to_multiple(chw: np.ndarray, multiple: int) -> np.ndarray:
    """Zero-pad a ``[C, H, W]`` array at the bottom and right so that H and W are multiples of ``multiple``."""
    h, w = chw.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return chw
    return np.pad(chw, ((0, 0), (0, ph), (0, pw)))


@dataclass
class _Item:
    path: Path
    output: Path
    tensor: np.ndarray  # [C, Hp, Wp] normalised and padded
    shape: tuple[int, int]
    seconds: float


def _in_channels(model: Any) -> int:
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            return int(module.in_channels)
    raise ModelError("cannot tell the model's input channels: it has no Conv2d layer")


def _record(path: Path, output: Path | None, shape: Any, seconds: float, status: str, error: str | None) -> dict:
    return {"input": str(path), "output": str(output) if output else None,
            "shape": list(shape) if shape else None, "seconds": round(seconds, 4), "status": status, "error": error}


def predict_image_folder(
    model: str | os.PathLike[str],
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    device: str | None = None,
    batch_size: int = 4,
    overwrite: bool = False,
    progress: bool | None = None,
    on_image: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Segment every image of ``input_dir`` with an exported 2D model; write ``<stem>.png`` masks.

    Args:
        model: export folder (``model.json`` + ``model.pt``) of a 2D model (``deeplabv3plus``,
            ``segformer``, ``unet2d``, ...) whose first layer takes 1 or 3 channels.
        input_dir: folder of images (PNG, JPEG, TIFF, BMP); one image per file stem.
        output_dir: folder for the masks and ``predictions.jsonl`` (created; not ``input_dir``).
        device: torch device (``None``: CUDA when available, else CPU).
        batch_size: images per forward pass (consecutive images of the same padded size).
        overwrite: predict again images whose mask exists (``False``: skip them, resume).
        progress: rich progress bar on stderr (``None``: from :data:`PROGRESS_MIN_IMAGES` images).
        on_image: called with each image's record.

    Returns:
        One record per image, in file (stem) order: ``input``, ``output``, ``shape`` ``[H, W]``,
        ``seconds``, ``status`` (``ok``, ``skipped``, ``failed``) and ``error`` (the reason).

    Raises:
        InputError: no such input folder, no images, two images of one stem, or
            ``output_dir`` equal to ``input_dir``.
        ModelError / ConfigError: the export is not a usable 2D model or its
            normalisation is unknown.
    """
    import torch

    from medseg.general.images import files_by_stem
    from medseg.models.export import load_exported

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    src, out = Path(input_dir), Path(output_dir)
    files = list(files_by_stem(src).values())
    if not files:
        raise InputError(f"{src}: no images (.png, .jpg, .jpeg, .tif, .tiff, .bmp)")
    if out.resolve() == src.resolve():
        raise InputError(f"{out}: the output folder must differ from the input folder (masks are <stem>.png)")
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    net, info = load_exported(model, device=dev)
    if info["spatial_dims"] != 2:
        raise ModelError(f"{model}: a {info['spatial_dims']}D model; predict-images needs a 2D model")
    spec = info.get("preprocessing", {}).get("normalization")
    normalize_image(np.zeros((1, 1, 1), np.uint8), spec)  # an unknown kind fails before any work
    multiple = int(info.get("inference", {}).get("pad_multiple", DEFAULT_PAD_MULTIPLE))
    if multiple < 1:
        raise ModelError(f"{model}: inference.pad_multiple must be >= 1, got {multiple}")
    in_channels = _in_channels(net)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    log_file = (out / RECORDS_NAME).open("a", encoding="utf-8")

    def emit(record: dict[str, Any]) -> None:
        records.append(record)
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
        if record["status"] == "failed":
            log.warning("%s: %s", record["input"], record["error"])
        if on_image:
            on_image(record)

    def run(batch: list[_Item]) -> None:
        t0 = time.perf_counter()
        try:
            x = torch.from_numpy(np.stack([it.tensor for it in batch])).to(dev)
            with torch.inference_mode():
                labels = net(x).argmax(dim=1).to("cpu").numpy()
        except RuntimeError as exc:  # e.g. out of memory: these images fail, the run goes on
            for it in batch:
                emit(_record(it.path, None, it.shape, it.seconds, "failed", f"{it.path}: model failed ({exc})"))
            return
        share = (time.perf_counter() - t0) / len(batch)
        for it, lab in zip(batch, labels):
            t1 = time.perf_counter()
            h, w = it.shape
            mask = lab[:h, :w]
            save_mask(it.output, mask.astype(np.uint8 if mask.max(initial=0) < 256 else np.uint16))
            emit(_record(it.path, it.output, it.shape, it.seconds + share + time.perf_counter() - t1, "ok", None))

    from rich.console import Console
    from rich.progress import Progress

    from medseg.general.images import read_image, save_mask

    show = len(files) >= PROGRESS_MIN_IMAGES if progress is None else progress
    pending: list[_Item] = []
    try:
        with Progress(console=Console(stderr=True), transient=True, disable=not show) as bar:
            task = bar.add_task("segmenting images", total=len(files))
            for path in files:
                target = out / f"{path.stem}.png"
                if target.exists() and not overwrite:
                    emit(_record(path, target, None, 0.0, "skipped", None))
                    bar.advance(task)
                    continue
                t0 = time.perf_counter()
                try:
                    image = fit_channels(read_image(path), in_channels, path)
                except InputError as exc:
                    emit(_record(path, None, None, time.perf_counter() - t0, "failed", str(exc)))
                    bar.advance(task)
                    continue
                chw = pad_to_multiple(np.moveaxis(normalize_image(image, spec), -1, 0), multiple)
                item = _Item(path, target, np.ascontiguousarray(chw), image.shape[:2], time.perf_counter() - t0)
                if pending and pending[0].tensor.shape != item.tensor.shape:
                    run(pending)
                    bar.advance(task, len(pending))
                    pending = []
                pending.append(item)
                if len(pending) >= batch_size:
                    run(pending)
                    bar.advance(task, len(pending))
                    pending = []
            if pending:
                run(pending)
                bar.advance(task, len(pending))
    finally:
        log_file.close()
    order = {str(p): i for i, p in enumerate(files)}
    return sorted(records, key=lambda r: order[r["input"]])


__all__ = ["predict_image_folder", "normalize_image", "fit_channels", "pad_to_multiple", "NORMALIZATION_KINDS"]
