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
3. runs the model as :mod:`medseg.models.apply2d` does for training's validation too:
   ``whole`` pads bottom and right with zeros (after normalisation) to the input multiple the
   model family declares in the registry (:meth:`medseg.models.ModelSpec.size_multiple`: U-Net
   depth, DeepLabV3+ output stride, SegFormer's 32) and crops the logits back to ``H x W``;
   ``slide`` averages the logits of overlapping windows; ``resize`` runs at a fixed size and
   resizes the logits back; then the argmax. The mode comes from ``inference.image_mode`` of
   ``model.json`` (``whole`` when absent) or the caller;
4. writes ``<stem>.png`` (8-bit, 16-bit past 255 classes) atomically with
   :func:`medseg.general.save_mask` and appends one JSON line to
   ``predictions.jsonl`` (``input, output, shape [H, W], seconds, status, error``).

Images of the same size that follow each other are run as one batch. A file
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
from medseg.models.apply2d import check_mode, fit_channels, image_logits, image_tensor, pad_to_multiple

log = logging.getLogger(__name__)

RECORDS_NAME = "predictions.jsonl"
PROGRESS_MIN_IMAGES = 20  # a progress bar is shown from this many images on (progress=None)


def normalize_image(image: np.ndarray, spec: dict[str, Any] | None) -> np.ndarray:
    """Normalise an ``[H, W, C]`` image per channel as ``spec`` (``preprocessing.normalization``) says; float32.

    Example:
        >>> normalize_image(np.array([[[0, 255]]], np.uint8), {"kind": "scale"}).tolist()
        [[[0.0, 1.0]]]
    """
    from medseg.transforms.intensity import normalize_channels

    return normalize_channels(image, spec, channel_axis=-1)


@dataclass
class _Item:
    path: Path
    output: Path
    tensor: np.ndarray  # [C, H, W] normalised
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


class RecordLog:
    """``predictions.jsonl`` of a ``predict-images`` run in ``out``: :meth:`emit` keeps a record, appends it
    as one JSON line (flushed, so an interrupted run keeps what it did), warns about a failed one and hands
    it to ``on_image``."""

    def __init__(self, out: Path, on_image: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self.on_image = on_image
        self._file = (out / RECORDS_NAME).open("a", encoding="utf-8")

    def emit(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if record["status"] == "failed":
            log.warning("%s: %s", record["input"], record["error"])
        if self.on_image:
            self.on_image(record)

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class ImageInference:
    """How whole images go through the network (see :mod:`medseg.models.apply2d`): ``mode``
    ``whole``/``slide``/``resize``, ``window`` and ``stride`` of ``slide``, ``size`` of ``resize``
    (``[H, W]`` pixels), and the network's input ``multiple``."""

    mode: str
    multiple: tuple[int, int]
    window: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    size: tuple[int, int] | None = None

    def logits(self, net: Any, x: Any) -> Any:
        """Logits ``[B, K, H, W]`` of the normalised batch ``x [B, C, H, W]``."""
        return image_logits(net, x, multiple=self.multiple, mode=self.mode, window=self.window,
                            stride=self.stride, size=self.size)


def _pair(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return int(value), int(value)
    return int(value[0]), int(value[1])


def image_inference(info: dict[str, Any], *, mode: str | None = None, window: Any = None, stride: Any = None,
                    size: Any = None) -> ImageInference:
    """The :class:`ImageInference` of an export's ``model.json``: its ``inference`` section (``image_mode``,
    ``window``, ``stride``, ``size``; ``whole`` when absent), each value overridable.

    Raises:
        ConfigError: an unknown mode or a size that does not fit the network.
    """
    inf = info.get("inference", {}) or {}
    chosen = ImageInference(
        mode=str(mode or inf.get("image_mode") or "whole"),
        multiple=input_multiple(info),
        window=_pair(window if window is not None else inf.get("window")),
        stride=_pair(stride if stride is not None else inf.get("stride")),
        size=_pair(size if size is not None else inf.get("size")),
    )
    check_mode(chosen.mode, chosen.window, chosen.size, chosen.multiple)
    return chosen


def export_task(info: dict[str, Any]) -> str:
    """The task of an export's predictions: ``inference.task`` of its ``model.json``, else the builder's
    ``task`` option (Mask2Former's), else its family's registry ``task`` (``semantic``, ``instance``, ``panoptic``)."""
    from medseg.models.registry import get_model_spec

    return str((info.get("inference") or {}).get("task") or (info["model"].get("config") or {}).get("task")
               or get_model_spec(info["model"]["name"]).task)


def image_route(model: str | os.PathLike[str]) -> Callable[..., list[dict[str, Any]]] | None:
    """The registry ``image_predictor`` of an export whose task is not ``semantic`` (``None`` for the dense
    path of :func:`predict_image_folder`, and when there is no readable export: its loading reports that).

    Raises:
        ModelError: a non-semantic export whose family declares no ``image_predictor``.
    """
    from medseg.errors import MedsegError
    from medseg.models.export import find_export, read_export
    from medseg.models.registry import get_model_spec, resolve_entry

    try:
        folder = find_export(model)
        info = read_export(folder).to_json()
        task = export_task(info)
    except MedsegError:
        return None
    if task == "semantic":
        return None
    spec = get_model_spec(info["model"]["name"])
    if not spec.image_predictor:
        raise ModelError(f"{folder}: a {task} export of {spec.name!r}, whose family declares no image_predictor")
    return resolve_entry(spec.image_predictor)


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
    mode: str | None = None,
    window: Any = None,
    stride: Any = None,
    size: Any = None,
) -> list[dict[str, Any]]:
    """Segment every image of ``input_dir`` with an exported 2D model; write ``<stem>.png`` masks.

    Args:
        model: export folder (``model.json`` + ``model.pt``) of a 2D model (``deeplabv3plus``,
            ``segformer``, ``unet2d``, ...) whose first layer takes 1 or 3 channels, or the run
            folder of ``medseg train`` (its ``export/``).
        input_dir: folder of images (PNG, JPEG, TIFF, BMP); one image per file stem.
        output_dir: folder for the masks and ``predictions.jsonl`` (created; not ``input_dir``).
        device: torch device (``None``: CUDA when available, else CPU).
        batch_size: images per forward pass (consecutive images of the same size).
        overwrite: predict again images whose mask exists (``False``: skip them, resume).
        progress: rich progress bar on stderr (``None``: from :data:`PROGRESS_MIN_IMAGES` images).
        on_image: called with each image's record.
        mode, window, stride, size: override the export's ``inference`` section (``whole``,
            ``slide`` with ``window``/``stride``, ``resize`` to ``size``; ``[H, W]`` pixels).

    Returns:
        One record per image, in file (stem) order: ``input``, ``output``, ``shape`` ``[H, W]``,
        ``seconds``, ``status`` (``ok``, ``skipped``, ``failed``) and ``error`` (the reason).

    Raises:
        InputError: no such input folder, no images, two images of one stem, or
            ``output_dir`` equal to ``input_dir``.
        ModelError / ConfigError: the export is not a usable 2D model, its
            normalisation is unknown or the inference mode does not fit it.

    An export whose task is not ``semantic`` goes to its family's registry ``image_predictor``
    (:func:`image_route`: ``yolo_seg`` writes instance maps, :mod:`medseg.inference.yolo`).
    """
    route = image_route(model)
    if route is not None:  # instance / panoptic: <stem>_instances.png/.json + <stem>.png
        return route(model, input_dir, output_dir, device=device, overwrite=overwrite, on_image=on_image)
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
    from medseg.models.export import resolve_device

    dev = resolve_device(device)
    net, info = load_exported(model, device=dev)
    if info["spatial_dims"] != 2:
        raise ModelError(f"{model}: a {info['spatial_dims']}D model; predict-images needs a 2D model")
    spec = info.get("preprocessing", {}).get("normalization")
    check_normalization(spec)  # an unknown kind fails before any work
    how = image_inference(info, mode=mode, window=window, stride=stride, size=size)
    in_channels = _in_channels(net)
    out.mkdir(parents=True, exist_ok=True)
    record_log = RecordLog(out, on_image)
    records, emit = record_log.records, record_log.emit

    def run(batch: list[_Item]) -> None:
        t0 = time.perf_counter()
        try:
            x = torch.from_numpy(np.stack([it.tensor for it in batch])).to(dev)
            with torch.inference_mode():
                labels = how.logits(net, x).argmax(dim=1).to("cpu").numpy()
        except RuntimeError as exc:  # e.g. out of memory: these images fail, the run goes on
            for it in batch:
                emit(_record(it.path, None, it.shape, it.seconds, "failed", f"{it.path}: model failed ({exc})"))
            return
        share = (time.perf_counter() - t0) / len(batch)
        for it, mask in zip(batch, labels):
            t1 = time.perf_counter()
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
                    chw = image_tensor(read_image(path), spec, in_channels, path)
                except InputError as exc:
                    emit(_record(path, None, None, time.perf_counter() - t0, "failed", str(exc)))
                    bar.advance(task)
                    continue
                item = _Item(path, target, chw, (chw.shape[1], chw.shape[2]), time.perf_counter() - t0)
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
        record_log.close()
    order = {str(p): i for i, p in enumerate(files)}
    return sorted(records, key=lambda r: order[r["input"]])


__all__ = ["predict_image_folder", "RecordLog", "image_route", "export_task", "normalize_image", "fit_channels", "pad_to_multiple", "input_multiple",
           "image_inference", "ImageInference"]
