"""The one trip of ``predict-images`` for segment (instance / panoptic) exports: every image of a folder
through a ``segment(image) -> (ids, table)`` function, its outputs written, one record per image.

For every image (sorted by stem) this writes

- ``<stem>_instances.png``: 16-bit segment ids (0 = none) at the image's own ``H x W``;
- ``<stem>_instances.json``: ``{"instances": [{"id": 1, "class": 1, "score": 0.93}, ...]}``, read back by
  :func:`medseg.data.instance_datasets.read_instance_prediction`;
- ``<stem>.png``: the semantic union (each pixel the class of its segment, 0 elsewhere);

and one line per image in ``predictions.jsonl`` (``input, output, shape, seconds, status, error,
instances``) as :func:`medseg.inference.images.predict_image_folder` does. Used by the YOLO-seg child
(:mod:`medseg.inference.yolo`) and by Mask2Former (:mod:`medseg.inference.mask2former`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.models.apply2d import ordered_segments


def check_folders(input_dir: str | Path, output_dir: str | Path) -> tuple[Path, Path]:
    """``(input, output)`` folders of a segment prediction, the output created.

    Raises:
        InputError: no images in ``input_dir``, or ``output_dir`` equal to it.
    """
    from medseg.io.images import files_by_stem

    src, out = Path(input_dir), Path(output_dir)
    if not files_by_stem(src):
        raise InputError(f"{src}: no images (.png, .jpg, .jpeg, .tif, .tiff, .bmp)")
    if out.resolve() == src.resolve():
        raise InputError(f"{out}: the output folder must differ from the input folder (masks are <stem>.png)")
    out.mkdir(parents=True, exist_ok=True)
    return src, out


def write_segments(out: Path, stem: str, ids: np.ndarray, table: list[dict[str, Any]]) -> Path:
    """Write ``<stem>_instances.png/.json`` and the semantic union ``<stem>.png`` into ``out``; returns the PNG."""
    from medseg.data.instance_convert import write_instance_png
    from medseg.data.instance_datasets import PREDICTION_SUFFIX
    from medseg.io.atomic import write_text_atomic
    from medseg.io.images import save_mask

    target = out / f"{stem}{PREDICTION_SUFFIX}.png"
    classes = np.zeros(int(ids.max(initial=0)) + 1, np.uint16)
    for entry in table:
        classes[entry["id"]] = entry["class"]
    semantic = classes[ids]
    write_instance_png(target, ids)
    write_text_atomic(target.with_suffix(".json"), json.dumps({"instances": table}, indent=1) + "\n")
    save_mask(out / f"{stem}.png", semantic.astype(np.uint8 if semantic.max(initial=0) < 256 else np.uint16))
    return target


def segment_folder(input_dir: Path, output_dir: Path, segment: Callable[[np.ndarray], tuple[np.ndarray, list]],
                   *, overwrite: bool = False, on_image: Callable[[dict[str, Any]], None] | None = None,
                   ) -> list[dict[str, Any]]:
    """Every image of ``input_dir`` through ``segment`` (``[H, W, C]`` image -> ``(ids, table)``), outputs
    written by :func:`write_segments`; images whose outputs exist are skipped unless ``overwrite``, an
    unreadable image or a failing network is a ``failed`` record naming the file. Returns the records."""
    from medseg.data.instance_datasets import PREDICTION_SUFFIX
    from medseg.io.images import files_by_stem, read_image

    from medseg.inference.images import RecordLog

    record_log = RecordLog(output_dir, on_image)
    try:
        for path in files_by_stem(input_dir).values():
            t0 = time.perf_counter()
            target = output_dir / f"{path.stem}{PREDICTION_SUFFIX}.png"
            record: dict[str, Any] = {"input": str(path), "output": str(target), "shape": None, "seconds": 0.0,
                                      "status": "ok", "error": None, "instances": None}
            if target.exists() and (output_dir / f"{path.stem}.png").exists() and not overwrite:
                record["status"] = "skipped"
            else:
                try:
                    ids, table = segment(read_image(path))
                except (InputError, RuntimeError) as exc:
                    record.update(status="failed", output=None, error=f"{path}: {exc}")
                else:
                    write_segments(output_dir, path.stem, ids, table)
                    record.update(shape=list(ids.shape), instances=len(table))
            record["seconds"] = round(time.perf_counter() - t0, 4)
            record_log.emit(record)
    finally:
        record_log.close()
    return record_log.records


__all__ = ["check_folders", "write_segments", "ordered_segments", "segment_folder"]
