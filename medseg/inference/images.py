"""Segment a folder of ordinary images with an exported 2D model (``medseg predict-images``).

:func:`predict_image_folder` loads the export once (``model.json`` + ``model.pt``, see
:mod:`medseg.models.export`), then for every image (PNG, JPEG, TIFF, BMP; matched by
file stem) in sorted order:

1. reads it as ``[H, W, C]`` (:func:`medseg.general.read_image`; alpha already dropped)
   and fits the channels to the model: a gray image into a 3-channel model is
   replicated to RGB; any other mismatch is an :class:`~medseg.errors.InputError`;
2. normalises each channel as ``preprocessing.normalization`` of ``model.json`` says, with
   the one vocabulary of :mod:`medseg.transforms.intensity` (``imagenet``, ``scale``,
   ``zscore``, ``ct``, ``none``, ...): the same arithmetic as ``medseg predict`` and training,
   so a ``unet2d`` MRI export is normalised identically by both commands;
3. pads bottom and right with zeros (after normalisation) to the input multiple the model
   family declares in the registry (:meth:`medseg.models.ModelSpec.size_multiple`: U-Net
   depth, DeepLabV3+ output stride, SegFormer's 32), runs the model, crops the logits back
   to ``H x W`` and takes the argmax;
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
    """Normalise an ``[H, W, C]`` image per channel as ``spec`` (``preprocessing.normalization``) says; float32.

    Example:
        >>> normalize_image(np.array([[[0, 255]]], np.uint8), {"kind": "scale"}).tolist()
        [[[0.0, 1.0]]]
    """
    from medseg.transforms.intensity import normalize_channels

    return normalize_channels(image, spec, channel_axis=-1)


def pad_to_multiple(chw: np.ndarray, multiple: int | tuple[int, int]) -> np.ndarray:
    """Zero-pad a ``[C, H, W]`` array at the bottom and right so that H and W are multiples of ``multiple``.

    Example:
        >>> pad_to_multiple(np.ones((1, 3, 5)), (4, 8)).shape
        (1, 4, 8)
    """
    mh, mw = (multiple, multiple) if isinstance(multiple, int) else multiple
    h, w = chw.shape[-2:]
    ph, pw = -h % mh, -w % mw
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


def input_multiple(info: dict[str, Any]) -> tuple[int, int]:
    """The ``(H, W)`` multiple images are padded to: the model family's declared input multiple
    (registry contract), or ``inference.pad_multiple`` of ``model.json`` when the export asks for
    a coarser one (it must be a multiple of the family's).

    Raises:
        ModelError: a ``pad_multiple`` that is not a positive multiple of the family's.
    """
    from medseg.models.registry import get_model_spec

    h, w = get_model_spec(info["model"]["name"]).size_multiple(info["model"].get("config", {}))
    pad = info.get("inference", {}).get("pad_multiple")
    if pad is None:
        return int(h), int(w)
    if not isinstance(pad, int) or pad < 1 or pad % h or pad % w:
        raise ModelError(f"model.json inference.pad_multiple {pad!r} must be a positive multiple of the "
                         f"model's input multiple {[h, w]}")
    return pad, pad


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

    from medseg.io.images import files_by_stem
    from medseg.models.export import load_exported
    from medseg.transforms.intensity import check_normalization

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
    check_normalization(spec)  # an unknown kind fails before any work
    multiple = input_multiple(info)
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

    from medseg.io.images import read_image, save_mask

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


__all__ = ["predict_image_folder", "normalize_image", "fit_channels", "pad_to_multiple", "input_multiple"]
