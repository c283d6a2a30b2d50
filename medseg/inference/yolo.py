"""``medseg predict-images`` for a ``yolo_seg`` export (its registry ``image_predictor``): instance maps at full image resolution.

For every image (sorted by stem) of the input folder this writes

- ``<stem>_instances.png``: 16-bit instance ids (0 = background) at the image's own ``H x W``; the
  masks are built from the prototypes upsampled to the original image (ultralytics'
  ``retina_masks`` path, ``process_mask_native``), never its quarter-size masks; where two
  instances overlap the higher score wins; ids are 1, 2, ... in decreasing score;
- ``<stem>_instances.json``: ``{"instances": [{"id": 1, "class": 1, "score": 0.93}, ...]}`` (medseg
  class ids: YOLO class ``c`` is ``c + 1``), read back by
  :func:`medseg.data.instance_datasets.read_instance_prediction`;
- ``<stem>.png``: the semantic union (each pixel the class of its instance);

and one line per image in ``predictions.jsonl`` as :func:`medseg.inference.images.predict_image_folder`
does. The network runs in a child process (``python -m medseg.inference.yolo predict JOB.json``, the
offline environment of :func:`medseg.models.yolo.yolo_environment`), so ultralytics' thread settings
never reach the caller. Images are letterboxed to the export's ``imgsz`` (grey 114 padding, RGB / 255)
as ultralytics' predictor does.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ModelError

log = logging.getLogger(__name__)

def predict_yolo_folder(model: str | os.PathLike[str], input_dir: str | os.PathLike[str],
                        output_dir: str | os.PathLike[str], *, device: str | None = None, overwrite: bool = False,
                        on_image: Callable[[dict[str, Any]], None] | None = None,
                        conf: float | None = None, iou: float | None = None) -> list[dict[str, Any]]:
    """Segment every image of ``input_dir`` with a ``yolo_seg`` export (see the module docstring).

    Returns:
        One record per image in stem order: ``input``, ``output`` (the ``_instances.png``), ``shape``
        ``[H, W]``, ``seconds``, ``status`` (``ok``, ``skipped``, ``failed``), ``error``, ``instances``.

    Raises:
        InputError: no such input folder or no images, ``output_dir`` equal to ``input_dir``.
        ModelError: not a ``yolo_seg`` export, or the child failed (its log's last lines).
    """
    from medseg.inference.instances import check_folders
    from medseg.models.export import find_export, read_export
    from medseg.models.yolo import run_worker

    src, out = check_folders(input_dir, output_dir)
    folder = find_export(model)
    export = read_export(folder)
    if export.inference.get("task", "instance") != "instance" or "imgsz" not in export.config:
        raise ModelError(f"{folder}: a {export.name!r} export, not a YOLO instance (yolo_seg) export")
    with tempfile.TemporaryDirectory(prefix="medseg-yolo-") as tmp:
        records_path = Path(tmp) / "records.json"
        job = {"export": str(folder.resolve()), "input": str(src.resolve()), "output": str(out.resolve()),
               "device": device, "overwrite": overwrite, "conf": conf, "iou": iou, "records": str(records_path)}
        run_worker("medseg.inference.yolo", "predict", job, Path(tmp), log_name="predict.log")
        records = json.loads(records_path.read_text(encoding="utf-8"))
    for record in records:
        if record["status"] == "failed":
            log.warning("%s: %s", record["input"], record["error"])
        if on_image:
            on_image(record)
    return records


# --------------------------------------------------------------------------- the child
def _rgb_uint8(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 of a :func:`medseg.io.images.read_image` array (grey replicated, deeper grey scaled)."""
    if image.dtype != np.uint8:
        lo, hi = float(image.min()), float(image.max())
        image = ((image.astype(np.float64) - lo) / (hi - lo if hi > lo else 1.0) * 255).round().astype(np.uint8)
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def instance_maps(net: Any, image: np.ndarray, *, imgsz: int, conf: float, iou: float, max_det: int,
                  device: str) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """``(ids [H, W] uint16, [{"id", "class", "score"}])`` of one ``[H, W, C]`` image (needs ultralytics)."""
    import torch
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils import ops
    from ultralytics.utils.nms import non_max_suppression

    from medseg.inference.instances import ordered_segments

    rgb = _rgb_uint8(image)
    h, w = rgb.shape[:2]
    boxed = LetterBox((imgsz, imgsz), auto=False, stride=32)(image=rgb)
    x = torch.from_numpy(np.ascontiguousarray(boxed.transpose(2, 0, 1))).float().div(255).unsqueeze(0).to(device)
    nc = int(net.yaml["nc"])
    with torch.inference_mode():
        pred, protos = net(x)[0]
        det = non_max_suppression(pred, conf, iou, max_det=max_det, nc=nc)[0]
        if not len(det):
            return np.zeros((h, w), np.uint16), []
        boxes = ops.scale_boxes(x.shape[2:], det[:, :4].clone(), (h, w))
        masks = ops.process_mask_native(protos[0], det[:, 6:], boxes, (h, w)).bool().cpu().numpy()
    return ordered_segments(list(masks), [int(c) + 1 for c in det[:, 5].tolist()], det[:, 4].tolist(), (h, w))


def predict_job(job: dict[str, Any]) -> None:
    """The child's work: every image of ``job["input"]`` through the export, outputs and records written."""
    from medseg.inference.instances import segment_folder
    from medseg.models.export import load_exported, resolve_device

    device = resolve_device(job.get("device"))
    net, info = load_exported(job["export"], device=device)
    settings = info["inference"]
    conf = job.get("conf") if job.get("conf") is not None else settings.get("conf", 0.25)
    iou = job.get("iou") if job.get("iou") is not None else settings.get("iou", 0.7)
    imgsz = int(settings.get("imgsz", info["model"]["config"].get("imgsz", 640)))

    def segment(image: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
        return instance_maps(net, image, imgsz=imgsz, conf=conf, iou=iou, max_det=int(settings.get("max_det", 300)),
                             device=device)

    records = segment_folder(Path(job["input"]), Path(job["output"]), segment, overwrite=bool(job.get("overwrite")))
    Path(job["records"]).write_text(json.dumps(records), encoding="utf-8")


if __name__ == "__main__":
    from medseg.models.yolo import worker_main

    sys.exit(worker_main(sys.argv[1:], "medseg.inference.yolo", {"predict": predict_job}))


__all__ = ["predict_yolo_folder", "instance_maps", "predict_job"]
